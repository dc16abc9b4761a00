"""`unicure-rt stratify`: patient strata from a `score` ranking (logic in `unicure_rt.stratify`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from unicure_rt.cli.common import console, report_errors
from unicure_rt.cli.options import ForceOpt
from unicure_rt.outputs import refuse_existing, staged_output_dir
from unicure_rt.scoring import drug_labels
from unicure_rt.stratify import plot_strata, read_ranking, stratify


@report_errors
def stratify_command(
    ranking: Annotated[
        Path, typer.Argument(help="A `score --out` folder, or its ranking.parquet / ranking.csv.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    k: Annotated[
        int | None, typer.Option("--k", help="Number of clusters (default: best silhouette).")
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", min=0, max=2**32 - 1, help="k-means and PCA seed.")
    ] = 0,
    top: Annotated[int, typer.Option("--top", min=1, help="Drugs shown and plotted.")] = 15,
    force: ForceOpt = False,
) -> None:
    """Cluster samples by their drug ranks and test which drugs differ between clusters."""
    refuse_existing(out, force, [ranking])
    strata = stratify(read_ranking(ranking), k=k, seed=seed)
    with staged_output_dir(out, force=force, inputs=[ranking], kind="stratify") as staging:
        strata.clusters.to_csv(staging / "clusters.csv", index=False)
        strata.k_selection.to_csv(staging / "k_selection.csv", index=False)
        strata.differential.to_csv(staging / "differential_drugs.csv", index=False)
        plot_strata(strata, staging, top=top)
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
    console.print(
        f"Wrote {escape(str(out))}/clusters.csv, k_selection.csv, differential_drugs.csv and plots."
    )
