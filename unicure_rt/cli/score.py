"""`unicure-rt score`: rank drugs for a patient file (the logic lives in `unicure_rt.score`)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from unicure_rt.bundle import load_bundle
from unicure_rt.cli.common import console, parse_doses, report_errors
from unicure_rt.cli.options import (
    BundleOpt,
    DeviceOpt,
    DosesOpt,
    DrawsOpt,
    DrugsOpt,
    ForceOpt,
    Fp16Opt,
    GeneKeyOpt,
    GroupKeyOpt,
    InputArg,
    LayerOpt,
    MinCellsOpt,
    NormalOpt,
    NormalWhereOpt,
    SampleKeyOpt,
    SeedOpt,
    ThreadsOpt,
)
from unicure_rt.drugs import REFERENCE_DOSES_UM
from unicure_rt.errors import UserError
from unicure_rt.inputs import load_patient
from unicure_rt.outputs import refuse_existing
from unicure_rt.runtime import RuntimeOptions
from unicure_rt.score import (
    ScoreOptions,
    ScoreResult,
    resolve_library,
    score_patient,
    write_score_outputs,
)


@report_errors
def score(
    input: InputArg,
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
    device: DeviceOpt = "auto",
    fp16: Fp16Opt = False,
    threads: ThreadsOpt = 0,
    top: Annotated[int, typer.Option("--top", min=1, help="Drugs shown per profile.")] = 10,
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
) -> None:
    """Rank the drugs of a library by how strongly each is predicted to reverse the tumour
    signature (tumour - normal) of every sample in INPUT."""
    started = time.perf_counter()
    if report and out is None:
        raise UserError("--report writes report.html into the output folder: give --out DIR too.")
    if out is not None:
        refuse_existing(out, force)
    options = ScoreOptions(
        doses=parse_doses(doses) or REFERENCE_DOSES_UM,
        draws=draws,
        seed=seed,
        prediction_top=top if predictions else 0,
        runtime=RuntimeOptions(device=device, fp16=fp16, threads=threads),
    )
    loaded = load_bundle(bundle)
    library = resolve_library(loaded, drugs)
    patient = load_patient(
        input,
        layer=layer,
        gene_key=gene_key,
        sample_key=sample_key,
        group_key=group_key,
        min_cells=min_cells,
        normal=normal,
        normal_where=normal_where,
    )
    with _progress(quiet or as_json) as progress:
        tasks: dict[str, int] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done)

        result = score_patient(
            loaded, patient, library=library, options=options, progress=on_progress
        )
    if out is not None:
        inputs = [input] + ([normal] if normal else [])
        write_score_outputs(
            result,
            out,
            force=force,
            input_files=inputs,
            started=started,
            report_top=top if report else None,
        )
    if as_json:
        print(json.dumps(top_drugs_json(result, top), indent=1))
    elif not quiet:
        print_ranking(result, top, out)


def _progress(disabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=disabled,
    )


def top_drugs_json(result: ScoreResult, top: int) -> dict:
    ranking = result.ranking
    best = ranking[ranking["rank"] <= top]
    columns = ["rank", "drug_id", "drug_name", "score", "best_dose_uM", "score_sd_across_draws"]
    return {
        "profiles": {
            profile: [
                {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                for row in rows[columns].to_dict(orient="records")
            ]
            for profile, rows in best.groupby("profile", sort=False)
        },
        "run": {
            k: result.run[k] for k in ("seed", "draws", "doses_uM", "providers", "gene_coverage")
        },
    }


def print_ranking(result: ScoreResult, top: int, out: Path | None) -> None:
    run = result.run
    coverage = run["gene_coverage"]
    console.print(
        f"[bold]unicure-rt score[/bold]: {len(run['profiles'])} profile(s) x "
        f"{run['library']['n_drugs']} drugs x {len(run['doses_uM'])} doses on "
        f"{run['providers']['flexpert']}; output genes measured: "
        f"{coverage['output_genes_present']}/{coverage['output_genes_total']}"
    )
    if run["provider_notes"]:
        console.print(f"[dim]GPU not used ({'; '.join(run['provider_notes'])})[/dim]")
    for profile, rows in result.ranking.groupby("profile", sort=False):
        info = next(p for p in run["profiles"] if p["profile"] == profile)
        table = Table(title=f"{profile}  (normal: {info['normal_source']})", title_justify="left")
        for column in ("rank", "drug", "score", "best dose µM", "sd across draws"):
            table.add_column(column, justify="right" if column != "drug" else "left")
        for row in rows.nsmallest(top, "rank").itertuples():
            name = (
                row.drug_name if isinstance(row.drug_name, str) and row.drug_name else row.drug_id
            )
            sd = "" if pd.isna(row.score_sd_across_draws) else f"{row.score_sd_across_draws:.3f}"
            table.add_row(
                str(row.rank), str(name), f"{row.score:+.3f}", f"{row.best_dose_uM:g}", sd
            )
        console.print(table)
    if out is not None:
        console.print(f"Wrote {out}/ranking.csv, ranking.parquet and run.json")
