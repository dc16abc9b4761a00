"""`unicure-rt score`: rank drugs for a patient file (the logic lives in `unicure_rt.scoring`).

Longer than 400 lines because it declares the command's options (local and Ray engines) and
prints its two result views (table and --json); the work is done by `unicure_rt.scoring` (local)
and `unicure_rt.engines.ray_engine` (Ray): this module only turns options into their calls.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from unicure_rt.bundle.load import DEFAULT_BUNDLE, load_bundle
from unicure_rt.bundle.pin import BundlePin
from unicure_rt.cli.combinations import (
    CombinationDosesOpt,
    CombinationsOpt,
    CombinationTopOpt,
    CombineWithOpt,
    pair_options,
    print_pairs,
)
from unicure_rt.cli.common import (
    console,
    parse_doses,
    print_demo_notice,
    report_errors,
    stage_progress,
)
from unicure_rt.cli.options import (
    BundleOpt,
    BundleSha256Opt,
    BundleSignatureOpt,
    DeviceOpt,
    DosesOpt,
    DrawsOpt,
    DrugsOpt,
    EffectOpt,
    ForceOpt,
    Fp16Opt,
    GeneKeyOpt,
    GroupKeyOpt,
    LayerOpt,
    MinCellsOpt,
    NormalOpt,
    NormalWhereOpt,
    PermutationsOpt,
    RankByOpt,
    RecordPathsOpt,
    SampleKeyOpt,
    SeedOpt,
    ThreadsOpt,
    TrustedKeyOpt,
)
from unicure_rt.defaults import DEFAULT_PERMUTATIONS, REFERENCE_DOSES_UM
from unicure_rt.errors import UserError
from unicure_rt.outputs import refuse_existing

if TYPE_CHECKING:
    from unicure_rt.patients.load import LoadOptions
    from unicure_rt.scoring.results import ScoreResult

InputsArg = Annotated[
    list[Path],
    typer.Argument(
        metavar="INPUT",
        help="Patient file: .h5ad, or a CSV/TSV/Parquet table. With --engine ray: any number of "
        "files and folders (a cohort).",
        show_default=False,
    ),
]
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="local (this process) or ray (a cohort on a Ray cluster, with the optional ray "
        "extra installed; writes ranking.parquet as a Parquet dataset folder and run.json).",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="--engine ray: address of a running Ray cluster (e.g. 10.0.0.5:6379 or "
        "ray://head:10001); default: start a local one on this machine.",
    ),
]
WorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers",
        min=0,
        metavar="N",
        help="--engine ray: scoring actors, each with its own ONNX Runtime sessions "
        "(0 = one per GPU of the cluster, else one per CPU).",
    ),
]
ENGINES = ("local", "ray")


@report_errors
def score(
    input: InputsArg,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (ranking.csv/.parquet, run.json)."),
    ] = None,
    bundle: BundleOpt = None,
    drugs: DrugsOpt = None,
    normal: NormalOpt = None,
    normal_where: NormalWhereOpt = None,
    layer: LayerOpt = None,
    gene_key: GeneKeyOpt = None,
    sample_key: SampleKeyOpt = None,
    group_key: GroupKeyOpt = None,
    min_cells: MinCellsOpt = 10,
    doses: DosesOpt = None,
    draws: DrawsOpt = 3,
    seed: SeedOpt = 0,
    effect: EffectOpt = None,
    rank_by: RankByOpt = None,
    permutations: PermutationsOpt = DEFAULT_PERMUTATIONS,
    device: DeviceOpt = "auto",
    fp16: Fp16Opt = False,
    threads: ThreadsOpt = 0,
    top: Annotated[
        int, typer.Option("--top", min=1, metavar="N", help="Drugs shown per profile.")
    ] = 10,
    predictions: Annotated[
        bool,
        typer.Option("--predictions", help="Also write predicted expression of the --top drugs."),
    ] = False,
    report: Annotated[
        bool,
        typer.Option("--report", help="Also write report.html (self-contained) and PNG figures."),
    ] = False,
    force: ForceOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the top drugs as JSON on stdout.")
    ] = False,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    workers: WorkersOpt = 0,
    bundle_sha256: BundleSha256Opt = None,
    bundle_signature: BundleSignatureOpt = None,
    trusted_key: TrustedKeyOpt = None,
    record_paths: RecordPathsOpt = False,
    combinations: CombinationsOpt = False,
    combination_top: CombinationTopOpt = None,
    combine_with: CombineWithOpt = None,
    combination_doses: CombinationDosesOpt = None,
) -> None:
    """Rank the drugs of a library by how strongly each is predicted to reverse the tumour
    signature (tumour - normal) of every sample in INPUT."""
    # the scoring modules load numpy, pandas and ONNX Runtime: imported here, not with the
    # module, so that `--help` and the other commands do not wait for them
    from unicure_rt.patients.load import LoadOptions, load_patient
    from unicure_rt.patients.normals import normal_file
    from unicure_rt.runtime.sessions import RuntimeOptions
    from unicure_rt.scoring.combinations import top_pairs_json
    from unicure_rt.scoring.options import ScoreOptions, resolve_library, scoring_choice
    from unicure_rt.scoring.pipeline import score_patient
    from unicure_rt.scoring.run_folder import write_score_outputs

    started = time.perf_counter()
    if engine not in ENGINES:
        raise UserError(f"Unknown --engine '{engine}'. Choose local or ray.")
    load = LoadOptions(
        layer=layer,
        gene_key=gene_key,
        sample_key=sample_key,
        group_key=group_key,
        min_cells=min_cells,
        normal=normal,
        normal_where=normal_where,
    )
    pin = BundlePin(bundle_sha256, bundle_signature, trusted_key)
    if engine == "ray":
        _score_on_ray(
            input=input,
            out=out,
            bundle=bundle,
            drugs=drugs,
            load=load,
            doses=doses,
            draws=draws,
            seed=seed,
            effect=effect,
            rank_by=rank_by,
            permutations=permutations,
            device=device,
            fp16=fp16,
            threads=threads,
            predictions=predictions,
            report=report,
            force=force,
            quiet=quiet,
            as_json=as_json,
            address=address,
            workers=workers,
            pin=pin,
            record_paths=record_paths,
            combinations=combinations
            or any(v is not None for v in (combination_top, combine_with, combination_doses)),
        )
        return
    if address is not None or workers:
        raise UserError(
            "--address and --workers choose the Ray cluster and its workers: add --engine ray, "
            "or leave them out to score on this machine."
        )
    if len(input) > 1 or input[0].is_dir():
        raise UserError(
            f"--engine local scores one patient file at a time (got {len(input)} paths"
            f"{', including a folder' if any(p.is_dir() for p in input) else ''}). For a cohort "
            "of files or a folder use --engine ray (pip install '.[ray]' in a unicure-rt clone), "
            "which also runs on this machine alone; or score the files one by one."
        )
    input = input[0]
    if report and out is None:
        raise UserError("--report writes report.html into the output folder: give --out DIR too.")
    protect = [input, normal_file(normal), drugs, bundle or DEFAULT_BUNDLE]
    if out is not None:
        refuse_existing(out, force, protect)
    parsed_doses = parse_doses(doses) or REFERENCE_DOSES_UM
    loaded = load_bundle(bundle, pin)
    effect, rank_by = scoring_choice(loaded, effect, rank_by)
    options = ScoreOptions(
        doses=parsed_doses,
        draws=draws,
        seed=seed,
        prediction_top=top if predictions else 0,
        effect=effect,
        rank_by=rank_by,
        permutations=permutations,
        runtime=RuntimeOptions(device=device, fp16=fp16, threads=threads),
    )
    library = resolve_library(loaded, drugs)
    pairs = pair_options(combinations, combination_top, combine_with, combination_doses, library)
    patient = load_patient(input, **load.kwargs())
    with stage_progress(quiet or as_json) as on_progress:
        result = score_patient(
            loaded, patient, library=library, options=options, progress=on_progress, pairs=pairs
        )
    if out is not None:
        inputs = [input] + ([normal_file(normal)] if normal_file(normal) else [])
        write_score_outputs(
            result,
            out,
            force=force,
            input_files=inputs,
            started=started,
            report_top=top if report else None,
            protect=protect,
            record_paths=record_paths,
        )
    if as_json:
        payload = top_drugs_json(result, top)
        if result.combinations is not None:
            payload["combinations"] = top_pairs_json(result.combinations, top)
        print(json.dumps(payload, indent=1))
    elif not quiet:
        print_ranking(result, top, out, report=report)
        print_pairs(result, top, out)


def _score_on_ray(
    *,
    input: list[Path],
    out: Path | None,
    bundle: Path | None,
    drugs: Path | None,
    load: LoadOptions,
    doses: str | None,
    draws: int,
    seed: int,
    effect: str | None,
    rank_by: str | None,
    permutations: int,
    device: str,
    fp16: bool,
    threads: int,
    predictions: bool,
    report: bool,
    force: bool,
    quiet: bool,
    as_json: bool,
    address: str | None,
    workers: int,
    pin: BundlePin,
    record_paths: bool,
    combinations: bool,
) -> None:
    """`score --engine ray`: the cohort engine (`unicure_rt.engines.ray_engine`)."""
    flags = {
        "--predictions": predictions,
        "--report": report,
        "--json": as_json,
        "--combinations": combinations,
    }
    unsupported = [flag for flag, used in flags.items() if used]
    if unsupported:
        raise UserError(
            f"{', '.join(unsupported)} is not available with --engine ray: a cohort's output is "
            "ranking.parquet (a Parquet dataset) and run.json. Score single patients with "
            "--engine local for those outputs."
        )
    if out is None:
        raise UserError(
            "--engine ray writes its results to a folder: give --out DIR (the ranking of a "
            "cohort is too large to print)."
        )
    from unicure_rt.engines.ray_engine import score_cohort
    from unicure_rt.runtime.sessions import RuntimeOptions
    from unicure_rt.scoring.options import ScoreOptions, scoring_choice

    effect, rank_by = scoring_choice(load_bundle(bundle, pin), effect, rank_by)
    options = ScoreOptions(
        doses=parse_doses(doses) or REFERENCE_DOSES_UM,
        draws=draws,
        seed=seed,
        effect=effect,
        rank_by=rank_by,
        permutations=permutations,
        runtime=RuntimeOptions(device=device, fp16=fp16, threads=threads),
    )

    def started(engine: dict) -> None:
        if not quiet:
            console.print(
                f"[dim]Ray ({escape(str(engine['address']))}): {engine['workers']} scoring "
                "worker(s), "
                f"{engine['worker_resources']['num_gpus']:g} GPU each, blocks of "
                f"{engine['block_size']} profiles[/dim]"
            )

    run = score_cohort(
        input,
        out,
        bundle=bundle,
        drugs=drugs,
        load=load,
        options=options,
        address=address,
        workers=workers,
        force=force,
        quiet=quiet,
        pin=pin,
        record_paths=record_paths,
        on_start=started,
    )
    if not quiet:
        console.print(
            f"[bold]unicure-rt score[/bold] (ray, {run['engine']['workers']} workers): "
            f"{len(run['profiles'])} profile(s) from {len(run['inputs'])} file(s) x "
            f"{run['library']['n_drugs']} drugs x {len(run['doses_uM'])} doses on "
            f"{run['providers'].get('flexpert')} in {run['timings_s']['total_s']:.1f} s"
        )
        console.print(f"[dim]bundle manifest sha256 {run['bundle']['manifest_sha256']}[/dim]")
        console.print(
            f"Wrote {escape(str(out))}/ranking.parquet (Parquet dataset: "
            f"{run['ranking']['files']} files, "
            f"{run['ranking']['rows']} rows) and run.json"
        )


EFFECT_MEANING = {
    "published": "pred - tumour, the paper's formula",
    "contrast": "pred - pred(no drug)",
}


def gpu_note(notes: list[str]) -> str:
    """The header line on the providers: no GPU at all, or why each GPU provider did not run."""
    from unicure_rt.runtime.sessions import NO_GPU

    if NO_GPU in notes:
        return "CPU only: no NVIDIA GPU found"
    return f"GPU not used ({'; '.join(notes)})"


def top_drugs_json(result: ScoreResult, top: int) -> dict:
    ranking = result.ranking
    best = ranking[ranking["rank"].le(top).fillna(False)]
    columns = [
        c
        for c in (
            "rank",
            "drug_id",
            "drug_name",
            "same_structure_ids",
            "score",
            "z",
            "p_value",
            "fdr",
            "best_dose_uM",
            "score_sd_across_draws",
        )
        if c in ranking
    ]
    return {
        "profiles": {
            profile: [
                {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                for row in rows[columns].to_dict(orient="records")
            ]
            for profile, rows in best.groupby("profile", sort=False)
        },
        "run": {
            k: result.run[k]
            for k in (
                "seed",
                "draws",
                "doses_uM",
                "effect",
                "rank_by",
                "null",
                "providers",
                "gene_coverage",
                "input_qc",
            )
        },
    }


def print_ranking(result: ScoreResult, top: int, out: Path | None, *, report: bool = False) -> None:
    import pandas as pd

    from unicure_rt.scoring.effects import compound_labels
    from unicure_rt.scoring.results import l01_mark, top_compounds

    run = result.run
    coverage = run["gene_coverage"]
    null = run["null"]
    console.print(
        f"[bold]unicure-rt score[/bold]: {len(run['profiles'])} profile(s) x "
        f"{run['library']['n_drugs']} drugs x {len(run['doses_uM'])} doses on "
        f"{run['providers']['flexpert']}; output genes measured: "
        f"{coverage['output_genes_present']}/{coverage['output_genes_total']}"
    )
    console.print(f"[dim]bundle manifest sha256 {run['bundle']['manifest_sha256']}[/dim]")
    console.print(
        f"effect: {run['effect']} ({EFFECT_MEANING[run['effect']]}); ranked by "
        f"{run['rank_by']}"
        + (
            f"; p-values against {null['permutations']} gene-shuffled signatures, "
            "FDR by Benjamini-Hochberg within each profile"
            if null["permutations"]
            else "; no null (--permutations 0)"
        )
    )
    if run["provider_notes"]:
        console.print(f"[dim]{escape(gpu_note(run['provider_notes']))}[/dim]")
    print_demo_notice(run["bundle"].get("trained_by"))
    has_null = "p_value" in result.ranking
    for profile, rows in result.ranking.groupby("profile", sort=False):
        info = next(p for p in run["profiles"] if p["profile"] == profile)
        title = escape(f"{profile}  (normal: {info['normal_source']})")
        table = Table(title=title, title_justify="left")
        has_flag = "antineoplastic" in rows
        columns = ["rank", "drug", "score"]
        columns += ["z", "p", "FDR"] if has_null else []
        columns += ["best dose µM", "sd across draws"] + (["L01"] if has_flag else [])
        for column in columns:
            table.add_column(column, justify="right" if column != "drug" else "left")
        best = top_compounds(rows, top)
        unranked = int(rows["rank"].isna().sum())
        for label, row in zip(compound_labels(best), best.itertuples(), strict=True):
            sd = "" if pd.isna(row.score_sd_across_draws) else f"{row.score_sd_across_draws:.2g}"
            cells = [str(row.rank), escape(label), f"{row.score:+.3f}"]
            if has_null:
                cells += [f"{row.z:+.2f}", f"{row.p_value:.2g}", f"{row.fdr:.2g}"]
            cells += [f"{row.best_dose_uM:g}", sd]
            if has_flag:
                cells.append(l01_mark(row.antineoplastic))
            table.add_row(*cells)
        console.print(table)
        if unranked:
            console.print(
                f"[dim]{unranked} drug(s) unranked: their predicted effect is no change "
                "(e.g. the control itself), so no score can be computed[/dim]"
            )
    if out is not None:
        tables = "ranking.csv, ranking.parquet" + (
            ", predictions.parquet" if result.predictions is not None else ""
        )
        console.print(f"Wrote {escape(str(out))}/{tables} and run.json")
        if report:
            console.print(f"Report: {escape(str((out / 'report.html').resolve()))}", soft_wrap=True)
