"""`unicure-rt finetune`: adapt a bundle to paired data from patient-derived models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from unicure_rt.bundle import DEFAULT_BUNDLE, load_bundle
from unicure_rt.cli.common import console, report_errors
from unicure_rt.cli.options import BundleOpt, ForceOpt, SeedOpt
from unicure_rt.errors import UserError
from unicure_rt.outputs import refuse_existing, staged_output_dir


@report_errors
def finetune_command(
    paired: Annotated[
        Path,
        typer.Argument(
            help="Baseline and treated profiles (log2): a table or .h5ad with group, condition "
            "(control/treated), drug (library name/id or SMILES) and dose_uM columns."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder (checkpoint, evaluation).")
    ],
    bundle: BundleOpt = None,
    export: Annotated[
        Path | None,
        typer.Option("--export", help="Also write a verified bundle with the adaptor folded in."),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Most epochs to train.")] = 200,
    patience: Annotated[
        int,
        typer.Option("--patience", min=1, help="Epochs without validation gain before stopping."),
    ] = 20,
    group_key: Annotated[
        str, typer.Option("--group-key", help="Column pairing treated with baselines.")
    ] = "group",
    condition_key: Annotated[
        str, typer.Option("--condition-key", help="Column: control or treated.")
    ] = "condition",
    drug_key: Annotated[
        str, typer.Option("--drug-key", help="Column with drug names/ids or SMILES.")
    ] = "drug",
    dose_key: Annotated[
        str, typer.Option("--dose-key", help="Column with doses in µM.")
    ] = "dose_uM",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
) -> None:
    """Train the adaptor on the frozen model's output (published loss, early stopping) and
    compare base and fine-tuned predictions on held-out conditions."""
    try:
        from unicure_rt import finetune as ft
    except ImportError as exc:
        raise UserError(
            f"Fine-tuning needs the training side ({exc.name} is not installed): "
            "`pip install 'unicure-rt[export]'`."
        ) from None
    protect = [paired, bundle or DEFAULT_BUNDLE]
    refuse_existing(out, force, protect)
    if export is not None:
        refuse_existing(export, force, [*protect, out])
    base = load_bundle(bundle)
    data = ft.read_paired(
        paired,
        base.genes,
        group_key=group_key,
        condition_key=condition_key,
        drug_key=drug_key,
        dose_key=dose_key,
    )
    options = ft.FinetuneOptions(epochs=epochs, patience=patience, seed=seed)
    columns = (
        TextColumn("fine-tuning"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} validation loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("fine-tuning", total=epochs, loss=float("nan"))
        result = ft.finetune(
            base,
            data,
            options,
            progress=lambda e, total, loss: bar.update(task, completed=e, loss=loss),
        )
    with staged_output_dir(out, force=force, inputs=protect, kind="finetune") as staging:
        ft.save_adaptor(result, staging / "checkpoint", base)
        result.evaluation.to_csv(staging / "evaluation.csv", index=False)
    if export is not None:
        ft.export_finetuned(base, result, export, force=force)
    n_test = int(result.evaluation["n_conditions"].iloc[0])
    table = Table(title=f"Held-out conditions ({n_test}), mean over conditions")
    metrics = ("pearson", "spearman", "r2", "delta_pearson_top10", "delta_pearson_all")
    table.add_column("model")
    for metric in metrics:
        table.add_column(metric, justify="right")
    for row in result.evaluation.itertuples():
        table.add_row(row.model, *(f"{getattr(row, m):.3f}" for m in metrics))
    console.print(table)
    console.print(
        f"Stopped after {result.record['epochs_run']} epochs; wrote {out}/checkpoint and "
        f"evaluation.csv" + (f"; bundle {export}" if export else "") + "."
    )
