"""`unicure-rt stratify`: patient strata from a `score` ranking and, with --clinical, their
outcome (logic in `unicure_rt.analysis`: `stratify`, `outcome`, `stratify_report`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

import unicure_rt
from unicure_rt.cli.common import console, error_console, report_errors, stage_progress
from unicure_rt.cli.options import ForceOpt
from unicure_rt.errors import UserError
from unicure_rt.outputs import refuse_existing, staged_output_dir
from unicure_rt.provenance import sha256_file

if TYPE_CHECKING:
    from unicure_rt.analysis.outcome import Outcome
    from unicure_rt.analysis.stratify import Strata

RECORDED_PACKAGES = ("numpy", "pandas", "scipy", "scikit-learn", "matplotlib", "lifelines")
TABLES = ("clusters.csv", "k_selection.csv", "differential_drugs.csv")
CLINICAL_ONLY = ("--id-column", "--time", "--event", "--adjust", "--associate")


@report_errors
def stratify_command(
    ranking: Annotated[
        Path,
        typer.Argument(
            metavar="RANKING", help="A `score --out` folder, or its ranking.parquet / ranking.csv."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    k: Annotated[
        int | None, typer.Option("--k", help="Number of clusters (default: best silhouette).")
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", min=0, max=2**32 - 1, metavar="N", help="k-means and PCA seed.")
    ] = 0,
    top: Annotated[
        int, typer.Option("--top", min=1, metavar="N", help="Drugs shown and plotted.")
    ] = 15,
    clinical: Annotated[
        Path | None,
        typer.Option(
            "--clinical",
            help="Clinical table (CSV/TSV/Parquet, one row per sample) for survival of the "
            "strata: Kaplan-Meier, log-rank, Cox (needs pip install '.[survival]' in a "
            "unicure-rt clone).",
        ),
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option(
            "--id-column",
            help="Clinical column with the ranking's sample ids (default: sample, sample_id, "
            "profile, id or patient; a named Parquet index counts as a column).",
        ),
    ] = None,
    time: Annotated[
        str | None,
        typer.Option(
            "--time",
            help="Follow-up time column (default: time, os_time, os_days, "
            "overall_survival_days or survival_time).",
        ),
    ] = None,
    event: Annotated[
        str | None,
        typer.Option(
            "--event",
            help="Event column, 1 = event, 0 = censored (default: event, status, os_event, "
            "overall_survival_event or os_status).",
        ),
    ] = None,
    adjust: Annotated[
        str | None,
        typer.Option(
            "--adjust", help="Comma-separated covariates of the Cox model, e.g. age,grade."
        ),
    ] = None,
    associate: Annotated[
        str | None,
        typer.Option(
            "--associate",
            help="Comma-separated categorical columns tested against the strata (default: "
            "every column with 2-10 levels).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run summary as JSON on stdout.")
    ] = False,
    force: ForceOpt = False,
) -> None:
    """Cluster samples by their drug ranks and test which drugs differ between clusters; with
    --clinical, compare the survival of the clusters."""
    from unicure_rt.analysis.outcome import (
        ClinicalOptions,
        analyse_outcome,
        load_clinical,
        parse_columns,
        write_outcome,
    )
    from unicure_rt.analysis.stratify import plot_strata, read_ranking, strata_warnings, stratify
    from unicure_rt.analysis.stratify_report import write_stratify_report
    from unicure_rt.scoring.run_folder import versions

    given = dict(zip(CLINICAL_ONLY, (id_column, time, event, adjust, associate), strict=True))
    if clinical is None and any(value is not None for value in given.values()):
        named = ", ".join(name for name, value in given.items() if value is not None)
        raise UserError(
            f"{named} only apply with --clinical; pass the clinical table with --clinical FILE, "
            "or leave them out."
        )
    refuse_existing(out, force, [ranking, clinical])
    options = table = outcome = None
    if clinical is not None:
        options = ClinicalOptions(
            clinical,
            id_column,
            time,
            event,
            parse_columns(adjust, "--adjust") or (),
            parse_columns(associate, "--associate"),
        )
        table = load_clinical(options)
    with stage_progress(as_json) as on_progress:
        strata = stratify(read_ranking(ranking), k=k, seed=seed, progress=on_progress)
    warnings = strata_warnings(strata)
    if options is not None:
        outcome = analyse_outcome(strata.clusters, table, options)
    inputs = [ranking, clinical]
    with staged_output_dir(out, force=force, inputs=inputs, kind="stratify") as staging:
        strata.clusters.to_csv(staging / "clusters.csv", index=False)
        strata.k_selection.to_csv(staging / "k_selection.csv", index=False)
        strata.differential.to_csv(staging / "differential_drugs.csv", index=False)
        figures = [path.name for path in plot_strata(strata, staging, top=top)]
        record = {
            "unicure_rt": unicure_rt.__version__,
            "command": "stratify",
            "versions": versions(RECORDED_PACKAGES),
            "ranking": _ranking_record(ranking),
            "options": {"k": k, "seed": seed, "top": top},
            "k": strata.k,
            "cluster_sizes": _sizes(strata),
            "warnings": warnings,
        }
        files = [*TABLES, *figures]
        if outcome is not None:
            record["options"].update(
                {
                    "id_column": id_column,
                    "time": time,
                    "event": event,
                    "adjust": list(options.adjust),
                    "associate": None if options.associate is None else list(options.associate),
                }
            )
            survival = write_outcome(outcome, staging)
            files += survival.pop("files")
            record.update(survival)
        write_stratify_report(strata, staging, top=top, outcome=outcome)
        record["files"] = [*files, "report.html", "run.json"]
        (staging / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    for note in warnings:
        error_console.print(f"[yellow]Warning: {escape(note)}[/yellow]", soft_wrap=True)
    if as_json:
        print(json.dumps(record, indent=1))
        return
    _print_strata(strata, top)
    if outcome is not None:
        _print_outcome(outcome)
    console.print(f"Wrote {escape(str(out))}/: {', '.join(record['files'])}.", soft_wrap=True)


def _ranking_record(ranking: Path) -> dict:
    """Path and sha256 of the ranking file read (a folder stands for its ranking.parquet)."""
    path = ranking / "ranking.parquet" if ranking.is_dir() else ranking
    return {"path": str(ranking), "file": str(path), "sha256": sha256_file(path)}


def _sizes(strata: Strata) -> dict[str, int]:
    counts = strata.clusters["cluster"].value_counts().sort_index()
    return {str(cluster): int(n) for cluster, n in counts.items()}


def _print_strata(strata: Strata, top: int) -> None:
    from unicure_rt.scoring.effects import drug_labels

    table = Table(title=f"k selection (chosen k = {strata.k})")
    for column in ("k", "inertia", "silhouette"):
        table.add_column(column, justify="right")
    for row in strata.k_selection.itertuples():
        table.add_row(str(row.k), f"{row.inertia:.1f}", f"{row.silhouette:.3f}")
    console.print(table)
    best = strata.differential.nsmallest(top, "p_value")
    table = Table(title="Most differential drugs")
    for column in ("cluster", "drug", "log2 FC", "p", "FDR"):
        table.add_column(column, justify="right" if column != "drug" else "left")
    for label, row in zip(drug_labels(best), best.itertuples(), strict=True):
        table.add_row(
            str(row.cluster),
            escape(label),
            f"{row.log2_fold_change:+.2f}",
            f"{row.p_value:.2g}",
            f"{row.fdr:.2g}",
        )
    console.print(table)


def _print_outcome(outcome: Outcome) -> None:
    join, result = outcome.join, outcome.survival
    console.print(
        f"Clinical: {join['matched']} of {join['ranked']} ranked samples matched, "
        f"{join['analysed']} analysed with {join['events']} events.",
        soft_wrap=True,
    )
    table = Table(title=f"Survival by stratum (log-rank p = {result.logrank_p:.3g})")
    for column in ("stratum", "n", "events", "median (95% CI)", "HR (95% CI)", "Cox p", "PH p"):
        table.add_column(column, justify="right")
    for row in result.per_stratum.itertuples():
        table.add_row(
            str(row.stratum),
            str(row.n),
            str(row.events),
            _with_ci(row.median_time, row.median_ci_lower, row.median_ci_upper, "{:.3g}"),
            _with_ci(row.cox_hazard_ratio, row.cox_ci_lower, row.cox_ci_upper, "{:.2f}"),
            _number(row.cox_p_value),
            _number(row.ph_p_value),
        )
    console.print(table)
    for note in result.warnings:
        error_console.print(f"[yellow]Note: {escape(note)}[/yellow]", soft_wrap=True)


def _with_ci(value: float, lower: float, upper: float, form: str) -> str:
    """'12 (8-20)'; 'not reached' for a NaN value; NaN bounds print as '?'."""
    if value != value:
        return "not reached"
    if lower != lower and upper != upper:
        return form.format(value)
    bound = [form.format(b) if b == b else "?" for b in (lower, upper)]
    return f"{form.format(value)} ({bound[0]}-{bound[1]})"


def _number(value: float) -> str:
    return "" if value != value else f"{value:.2g}"
