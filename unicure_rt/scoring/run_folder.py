"""The output folder of a scoring run: rankings, predictions, pairs, run.json and the report,
written all at once or not at all, and the run record's identity part.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import unicure_rt
from unicure_rt.bundle.load import Bundle
from unicure_rt.drugs.library import DrugLibrary
from unicure_rt.outputs import staged_output_dir
from unicure_rt.provenance import recorded, sha256_file
from unicure_rt.scoring.options import ScoreOptions
from unicure_rt.scoring.results import ScoreResult

if TYPE_CHECKING:
    pass


RECORDED_PACKAGES = ("numpy", "pandas", "anndata", "onnxruntime-gpu", "onnxruntime", "rdkit")


def versions(packages: tuple[str, ...] = RECORDED_PACKAGES) -> dict:
    """Versions of Python and of the installed `packages`, as run.json records them."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def run_identity(
    bundle: Bundle, library: DrugLibrary, options: ScoreOptions, packages=RECORDED_PACKAGES
) -> dict:
    """The part of run.json that says what ran: versions, bundle, library, seed, draws, doses."""
    return {
        "unicure_rt": unicure_rt.__version__,
        "versions": versions(packages),
        "bundle": {
            "path": str(bundle.path),
            "manifest_sha256": bundle.sha256,
            "precision": bundle.manifest.get("precision"),
            "trained_by": (bundle.manifest.get("provenance") or {}).get("trained_by"),
        },
        "library": {
            "path": str(library.path),
            "content_sha256": library.content_sha256,
            "encoder_id": library.encoder_id,
            "n_drugs": len(library),
        },
        "seed": options.seed,
        "draws": options.draws,
        "doses_uM": list(options.doses),
        "effect": options.effect,
        "rank_by": options.rank_by,
        "null": {
            "kind": "gene-permuted signature" if options.permutations else None,
            "permutations": options.permutations,
        },
    }


def write_score_outputs(
    result: ScoreResult,
    out: Path,
    *,
    force: bool,
    input_files: list[Path],
    started: float,
    report_top: int | None = None,
    protect: Sequence[Path | None] = (),
    record_paths: bool = False,
) -> Path:
    """Write ranking.csv/.parquet, predictions.parquet and combinations.csv/.parquet (if
    any), run.json and, with `report_top`, report.html and its figures; all appear at once or
    not at all. `out` may not be, hold or lie inside an input file, nor any path of `protect`
    (bundle, library). The records name files without their folders unless `record_paths`
    (see `provenance`)."""
    inputs = [*input_files, *protect]
    with staged_output_dir(out, force=force, inputs=inputs, kind="score") as staging:
        t0 = time.perf_counter()
        result.ranking.to_parquet(staging / "ranking.parquet", index=False)
        result.ranking.to_csv(staging / "ranking.csv", index=False)
        if result.predictions is not None:
            result.predictions.to_parquet(staging / "predictions.parquet", index=False)
        if result.combinations is not None:
            from unicure_rt.scoring.combinations import write_pair_tables

            write_pair_tables(result.combinations, staging)
        run = dict(result.run)
        run["inputs"] = [{"path": str(p), "sha256": sha256_file(p)} for p in input_files]
        run = recorded(run, record_paths=record_paths)
        if report_top:
            from unicure_rt.scoring.report import write_report

            write_report(
                ScoreResult(result.ranking, result.predictions, run, result.combinations),
                staging,
                top=report_top,
            )
        run["timings_s"] = {
            **run["timings_s"],
            "writing_s": time.perf_counter() - t0,
            "total_s": time.perf_counter() - started,
        }
        (staging / "run.json").write_text(json.dumps(run, indent=1, default=str) + "\n")
    return out
