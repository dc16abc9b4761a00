"""The inputs and outputs a manifest declares, checked against the ONNX graphs themselves.

`contract_problems(directory, manifest)` opens every graph of `manifest["graphs"]` (and an
RDKit drug encoder's projection graph) from the bundle `directory` with ONNX Runtime on the
CPU, without graph optimisation (only the graph's declared signature is read), and returns one
line per difference: a tensor the graph lacks or has in addition, another dtype, rank, fixed
size, or a dynamic axis where the manifest promises a fixed one (and the reverse). It also
checks the numbers that tie the graphs together: the flexpert output has one value per
manifest gene, and the drug encoder takes `n_bits` and returns `dim` values. Run by
`load_bundle`, so `export-triton` never writes a false `dims` into a Triton config and a run
never discovers a wrong shape halfway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}
RDKIT_KIND = "rdkit-morgan-counts"  # the drug encoder kinds with a graph in the bundle
ENCODER_INPUT, ENCODER_OUTPUT = "fingerprint", "drug_embedding"
ENCODER_GRAPH = "drug_encoder.onnx"  # `drug_encoder.graph` when the manifest names none


def _signature(path: Path) -> tuple[list[Any], list[Any]]:
    # imported here, not with the module: every command imports `unicure_rt.bundle.load` at start-up
    # (`--help` included), and only the ones that load a bundle need ONNX Runtime
    from unicure_rt.onnx_runtime import ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.get_inputs(), session.get_outputs()


def _axis_problem(declared: Any, actual: Any) -> str | None:
    dynamic = not isinstance(actual, int)
    if isinstance(declared, str) and not dynamic:
        return f"dynamic axis '{declared}' is fixed at {actual} in the graph"
    if isinstance(declared, int) and dynamic:
        return f"size {declared} is a dynamic axis in the graph"
    if isinstance(declared, int) and declared != actual:
        return f"size {declared} is {actual} in the graph"
    return None


def _compare(where: str, declared: list[dict], actual: list[Any]) -> list[str]:
    problems = []
    found = {arg.name: arg for arg in actual}
    wanted = {spec["name"] for spec in declared}
    extra = sorted(set(found) - wanted)
    if extra:
        problems.append(f"{where}: the graph also has {', '.join(extra)}")
    for spec in declared:
        arg = found.get(spec["name"])
        at = f"{where} '{spec['name']}'"
        if arg is None:
            problems.append(f"{at}: not in the graph (it has {', '.join(sorted(found))})")
            continue
        dtype = ORT_DTYPES.get(arg.type, arg.type)
        if dtype != spec["dtype"]:
            problems.append(f"{at}: dtype {spec['dtype']}, the graph has {dtype}")
        shape = list(arg.shape)
        if len(shape) != len(spec["shape"]):
            problems.append(f"{at}: shape {spec['shape']}, the graph has {shape}")
            continue
        for axis, (want, have) in enumerate(zip(spec["shape"], shape, strict=True)):
            problem = _axis_problem(want, have)
            if problem:
                problems.append(f"{at} axis {axis}: {problem}")
    return problems


def _open(directory: Path, rel: str, problems: list[str]) -> tuple[list[Any], list[Any]] | None:
    try:
        return _signature(directory / rel)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped load errors
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        problems.append(f"{rel}: ONNX Runtime cannot read the graph ({first[:200]})")
        return None


def contract_problems(directory: Path, manifest: dict) -> list[str]:
    """Differences between the manifest's declared I/O and the graphs (see the docstring)."""
    problems: list[str] = []
    for name, entry in manifest["graphs"].items():
        signature = _open(directory, entry["path"], problems)
        if signature is None:
            continue
        problems += _compare(f"graphs.{name} input", entry["inputs"], signature[0])
        problems += _compare(f"graphs.{name} output", entry["outputs"], signature[1])
    outputs = manifest["graphs"]["flexpert"]["outputs"]
    width = outputs[0]["shape"][-1]
    if len(outputs) == 1 and isinstance(width, int) and width != len(manifest["genes"]):
        problems.append(
            f"graphs.flexpert output: {width} values per profile, but genes lists "
            f"{len(manifest['genes'])}"
        )
    encoder = manifest["drug_encoder"]
    if encoder["kind"] == RDKIT_KIND:
        problems += _encoder_problems(directory, encoder)
    return problems


def _encoder_problems(directory: Path, encoder: dict) -> list[str]:
    problems: list[str] = []
    rel = encoder.get("graph", ENCODER_GRAPH)
    signature = _open(directory, rel, problems)
    if signature is None:
        return problems
    declared = [
        {"name": ENCODER_INPUT, "dtype": "float32", "shape": ["batch", encoder.get("n_bits", 2048)]}
    ]
    problems += _compare("drug_encoder input", declared, signature[0])
    declared = [{"name": ENCODER_OUTPUT, "dtype": "float32", "shape": ["batch", encoder["dim"]]}]
    problems += _compare("drug_encoder output", declared, signature[1])
    return problems
