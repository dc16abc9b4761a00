"""Validation step (the parity gate): ONNX Runtime on the exported graphs vs PyTorch outputs.

The export process writes the validation inputs and the PyTorch outputs to a `.npz` file; this
module runs in a separate process (`python -m unicure_rt.train.export.validate BUNDLE CASES`) so
that the export process never holds the PyTorch model and the ONNX session at the same time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from unicure_rt.errors import UserError

EXPECTED = "expected"


@dataclass
class ParityResult:
    """How far one output of one graph is from PyTorch over one set of cases."""

    graph: str
    case: str
    output: str
    max_abs: float
    max_rel: float
    atol: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= self.atol


class ParityError(UserError):
    """An exported graph differs from PyTorch by more than its tolerance."""


def save_cases(path: Path, cases: dict[str, dict[str, dict[str, np.ndarray]]]) -> None:
    """`cases[graph][case]` maps input names and `expected/<output>` to arrays."""
    flat = {
        f"{graph}/{case}/{name}": array
        for graph, by_case in cases.items()
        for case, arrays in by_case.items()
        for name, array in arrays.items()
    }
    np.savez(path, **flat)


def load_cases(path: Path) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    cases: dict = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            graph, case, name = key.split("/", 2)
            cases.setdefault(graph, {}).setdefault(case, {})[name] = data[key]
    return cases


def compare(bundle_dir: Path, cases_path: Path, atol: dict[str, float]) -> list[ParityResult]:
    """Run every case through ONNX Runtime (CPU) and measure each output's error."""
    import onnxruntime as ort

    manifest = json.loads((Path(bundle_dir) / "manifest.json").read_text())
    results = []
    for graph, by_case in load_cases(cases_path).items():
        session = ort.InferenceSession(
            str(Path(bundle_dir) / manifest["graphs"][graph]["path"]),
            providers=["CPUExecutionProvider"],
        )
        output_names = [o.name for o in session.get_outputs()]
        for case, arrays in by_case.items():
            feeds = {k: v for k, v in arrays.items() if not k.startswith(EXPECTED + "/")}
            for name, got in zip(output_names, session.run(output_names, feeds), strict=True):
                want = arrays[f"{EXPECTED}/{name}"]
                diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
                max_abs = float(diff.max()) if diff.size else 0.0
                scale = float(np.abs(want).max()) if want.size else 0.0
                results.append(
                    ParityResult(
                        graph, case, name, max_abs, max_abs / scale if scale else 0.0, atol[graph]
                    )
                )
    return results


def run_parity_gate(
    bundle_dir: Path, cases_path: Path, atol: dict[str, float]
) -> list[ParityResult]:
    """Run `compare` in a fresh process; raise `ParityError` naming every output over tolerance."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "unicure_rt.train.export.validate",
            str(bundle_dir),
            str(cases_path),
            json.dumps(atol),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the parity-gate process failed:\n{completed.stderr[-4000:]}")
    results = [ParityResult(**row) for row in json.loads(completed.stdout)]
    failed = [r for r in results if not r.passed]
    if failed:
        detail = "; ".join(
            f"{r.graph}.{r.output} on '{r.case}': max abs error {r.max_abs:.3g} > atol {r.atol:g}"
            for r in failed
        )
        raise ParityError(
            f"The exported graphs do not match PyTorch ({detail}). The bundle was not written. "
            "This points to an export problem (an unsupported operator or a precision loss); "
            "re-run with a looser --atol only if the difference is understood and acceptable."
        )
    return results


def main(argv: list[str]) -> None:
    bundle_dir, cases_path, atol = Path(argv[0]), Path(argv[1]), json.loads(argv[2])
    print(json.dumps([asdict(r) for r in compare(bundle_dir, cases_path, atol)]))


if __name__ == "__main__":
    main(sys.argv[1:])
