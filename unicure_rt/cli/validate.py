"""`unicure-rt validate`: a bundle's rankings against measured data, beside the classic
connectivity method (the logic lives in `unicure_rt.analysis.validation`)."""

from __future__ import annotations

import math
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from unicure_rt.bundle.load import DEFAULT_BUNDLE, load_bundle
from unicure_rt.bundle.pin import BundlePin
from unicure_rt.cli.common import bundle_line, console, parse_doses, report_errors, stage_progress
from unicure_rt.cli.options import (
    BundleOpt,
    BundleSha256Opt,
    BundleSignatureOpt,
    DeviceOpt,
    DosesOpt,
    DrawsOpt,
    DrugsOpt,
    ForceOpt,
    GeneKeyOpt,
    LayerOpt,
    MinCellsOpt,
    NormalOpt,
    NormalWhereOpt,
    RecordPathsOpt,
    SampleKeyOpt,
    SeedOpt,
    ThreadsOpt,
    TrustedKeyOpt,
)
from unicure_rt.defaults import EFFECTS, REFERENCE_DOSES_UM, SUITES
from unicure_rt.outputs import refuse_existing
from unicure_rt.provenance import recorded, sha256_file

if TYPE_CHECKING:
    from unicure_rt.analysis.validation.run import ValidateOptions

# what the terminal shows per suite (validation.json and summary.md hold every figure)
SHOWN = {
    "sensitivity": ("AUC", "Z_SCORE"),
    "signatures": ("cosine", "agreement with classic (Spearman)"),
    "classes": ("L01 AUROC",),
}


@report_errors
def validate(
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="Folder laid out like the shared data (sensitivity/, l1000/, normal/, drugs/); "
            "nothing is downloaded.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Output folder (validation.json, summary.md/.html, plots)."
        ),
    ] = None,
    bundle: BundleOpt = None,
    bundle_sha256: BundleSha256Opt = None,
    bundle_signature: BundleSignatureOpt = None,
    trusted_key: TrustedKeyOpt = None,
    drugs: DrugsOpt = None,
    patients: Annotated[
        Path | None,
        typer.Option(
            "--patients",
            help="Patient file for the drug-classes suite and the ranking agreement, read as "
            "`score` reads it (e.g. examples/tcga_brca.h5ad --normal-where condition=normal).",
        ),
    ] = None,
    normal: NormalOpt = None,
    normal_where: NormalWhereOpt = None,
    layer: LayerOpt = None,
    gene_key: GeneKeyOpt = None,
    sample_key: SampleKeyOpt = None,
    min_cells: MinCellsOpt = 10,
    suites: Annotated[
        str | None,
        typer.Option(
            "--suites",
            help=f"Comma-separated suites from {','.join(SUITES)} (default: all; without "
            "--patients: sensitivity,signatures).",
            show_default=False,
        ),
    ] = None,
    effect: Annotated[
        str | None,
        typer.Option(
            "--effect",
            help=f"Comma-separated effects from {','.join(EFFECTS)}, each run side by side "
            "(default: the bundle's choice, else published).",
            show_default=False,
        ),
    ] = None,
    rank_by: Annotated[
        str,
        typer.Option(
            "--rank-by",
            help="Comma-separated rankings from score,z (z: the score against the drug's own "
            "gene-permutation null, as `score --rank-by z`), each run side by side.",
        ),
    ] = "score",
    normals: Annotated[
        str,
        typer.Option(
            "--normals", help="Normal tissue atlas for the cell lines' signatures: hpa or gtex."
        ),
    ] = "hpa",
    shuffle_genes: Annotated[
        bool,
        typer.Option(
            "--shuffle-genes",
            help="Negative control: shuffle the genes of every signature first; the bundle's "
            "and the classic method's figures should then be null.",
        ),
    ] = False,
    doses: DosesOpt = None,
    draws: DrawsOpt = 3,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 0,
    force: ForceOpt = False,
    record_paths: RecordPathsOpt = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print nothing but errors and the table.")
    ] = False,
) -> None:
    """Check a bundle's rankings against measured drug sensitivity (GDSC2), measured L1000
    signatures and known drug classes, side by side with the classic connectivity method."""
    from unicure_rt.analysis.validation.data import DataFolder
    from unicure_rt.analysis.validation.model import BundleModel
    from unicure_rt.analysis.validation.report import write_outputs
    from unicure_rt.analysis.validation.run import ValidateOptions, comma_list, run_validation
    from unicure_rt.patients.load import load_patient
    from unicure_rt.patients.normals import normal_file
    from unicure_rt.runtime.sessions import RuntimeOptions
    from unicure_rt.scoring.options import resolve_library, scoring_choice
    from unicure_rt.scoring.run_folder import run_identity

    started = time.perf_counter()
    protect = [data_dir, patients, normal_file(normal), drugs, bundle or DEFAULT_BUNDLE]
    if out is not None:
        refuse_existing(out, force, protect)
    data = DataFolder(data_dir)
    loaded = load_bundle(bundle, BundlePin(bundle_sha256, bundle_signature, trusted_key))
    default_suites = SUITES if patients is not None else ("sensitivity", "signatures")
    options = ValidateOptions(
        suites=comma_list(suites, "--suites") if suites is not None else default_suites,
        effects=comma_list(effect, "--effect")
        if effect is not None
        else (scoring_choice(loaded, None, None)[0],),
        rank_by=comma_list(rank_by, "--rank-by"),
        doses=parse_doses(doses) or REFERENCE_DOSES_UM,
        draws=draws,
        seed=seed,
        normal_atlas=normals,
        shuffle_genes=shuffle_genes,
    )
    library = resolve_library(loaded, drugs)
    patient = None
    if patients is not None:
        patient = load_patient(
            patients,
            layer=layer,
            gene_key=gene_key,
            sample_key=sample_key,
            min_cells=min_cells,
            normal=normal,
            normal_where=normal_where,
        )
    runtime = RuntimeOptions(device=device, threads=threads)
    model = BundleModel(loaded, library, seed=seed, draws=draws, runtime=runtime)
    with stage_progress(quiet, label_width=12) as on_progress:
        result = run_validation(model, data, library, patient, options, on_progress)
    identity = run_identity(loaded, library, _score_like(options))
    inputs = [p for p in (patients, normal_file(normal)) if p is not None]
    record = {
        **{k: v for k, v in result.items() if k != "timings_s"},
        "bundle": {"manifest_sha256": loaded.sha256, "precision": loaded.manifest.get("precision")},
        "library": {k: identity["library"][k] for k in ("content_sha256", "encoder_id", "n_drugs")},
        "data": {name: entry["sha256"] for name, entry in data.hashes().items()},
        "patients": [{"file": p.name, "sha256": sha256_file(p)} for p in inputs],
    }
    run = {
        **identity,
        "command": shlex.join(["unicure-rt", *sys.argv[1:]]),
        "data_files": data.hashes(),
        "inputs": [{"path": str(p), "sha256": sha256_file(p)} for p in inputs],
        "providers": model.providers,
        "timings_s": {**result["timings_s"], "total_s": time.perf_counter() - started},
    }
    if out is not None:
        run = recorded(run, record_paths=record_paths)
        write_outputs(record, run, out, force=force, protect=protect)
    if not quiet:
        console.print(bundle_line(loaded))
    print_summary(record, time.perf_counter() - started, out)


def _score_like(options: ValidateOptions):
    """The ScoreOptions that `run_identity` records (seed, draws, doses, first effect; no
    per-drug null: validate's p-values are its own)."""
    from unicure_rt.scoring.options import ScoreOptions

    return ScoreOptions(
        doses=options.doses,
        draws=options.draws,
        seed=options.seed,
        effect=options.effects[0],
        permutations=0,
    )


def _cell(row: dict | None) -> str:
    if row is None or row["mean"] is None or not math.isfinite(row["mean"]):
        return ""
    p = row["p_value"]
    shown = "" if p is None or not math.isfinite(p) else f" p {p:.2g}"
    return f"{row['mean']:+.3f}{shown}"


def print_summary(record: dict, seconds: float, out: Path | None) -> None:
    """One table per suite: rows = methods, columns = its headline figures (mean and p)."""
    options = record["options"]
    console.print(
        f"[bold]unicure-rt validate[/bold]: effects {', '.join(options['effects'])}, seed "
        f"{options['seed']}, {seconds:.0f} s"
        + (
            " [yellow](negative control: genes shuffled)[/yellow]"
            if options["shuffle_genes"]
            else ""
        )
    )
    for name, suite in record["suites"].items():
        metrics = [m for m in SHOWN[name] if any(r["metric"] == m for r in suite["summary"])]
        table = Table(
            title=f"{name}: {suite['n_units']} {suite['unit']}s (mean over units, p vs shuffled "
            "drug labels; higher is better)",
            title_justify="left",
        )
        table.add_column("method")
        for metric in metrics:
            table.add_column(metric, justify="right")
        methods = list(dict.fromkeys(r["method"] for r in suite["summary"]))
        for method in methods:
            found = {r["metric"]: r for r in suite["summary"] if r["method"] == method}
            if not any(m in found for m in metrics):
                continue
            table.add_row(escape(method), *(_cell(found.get(m)) for m in metrics))
        console.print(table)
    if out is not None:
        console.print(
            f"Wrote {escape(str(out))}/validation.json, summary.md, summary.html and plots"
        )
