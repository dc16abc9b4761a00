"""`unicure-rt finetune`: adapt a bundle to paired data from patient-derived models."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from unicure_rt.bundle.load import DEFAULT_BUNDLE, load_bundle
from unicure_rt.cli.common import console, error_console, report_errors, stage_progress
from unicure_rt.cli.options import BundleOpt, SeedOpt
from unicure_rt.errors import UserError
from unicure_rt.outputs import refuse_existing, staged_output_dir


@report_errors
def finetune_command(
    paired: Annotated[
        Path,
        typer.Argument(
            metavar="PAIRED",
            help="Baseline and treated profiles (log2): a table or .h5ad with group, condition "
            "(control/treated), drug (library name/id or SMILES) and dose_uM columns.",
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
    epochs: Annotated[
        int, typer.Option("--epochs", min=1, metavar="N", help="Most epochs to train.")
    ] = 200,
    patience: Annotated[
        int,
        typer.Option(
            "--patience", min=1, metavar="N", help="Epochs without validation gain before stopping."
        ),
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
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace --out and --export if they exist, and export the bundle even when it "
            "is worse than its base on the held-out conditions.",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the evaluation and the run summary as JSON on stdout."),
    ] = False,
) -> None:
    """Train the adaptor on the frozen model's output (published loss, early stopping) and
    compare base and fine-tuned predictions on held-out conditions. A bundle worse than its base
    there is exported only with --force."""
    try:
        from unicure_rt.train import finetune as ft
    except ImportError as exc:
        raise UserError(
            f"Fine-tuning needs the training side ({exc.name} is not installed): "
            "`pip install '.[export]'` in your unicure-rt clone."
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
    with stage_progress(as_json) as on_progress:
        result = ft.finetune(base, data, options, progress=on_progress)
    worse = ft.worse_than_base(result.evaluation)
    if worse and export is not None and not force:
        if not as_json:
            _print_evaluation(result)
        raise UserError(
            f"{worse} No bundle was exported and nothing was written. Fine-tune on more paired "
            "data or with other --epochs/--patience; leave out --export to keep the checkpoint "
            "and evaluation only; or add --force to export it anyway (its MODEL_CARD.md then "
            "says that it is worse)."
        )
    with staged_output_dir(out, force=force, inputs=protect, kind="finetune") as staging:
        ft.save_adaptor(result, staging / "checkpoint", base)
        result.evaluation.to_csv(staging / "evaluation.csv", index=False)
    if export is not None:
        ft.export_finetuned(base, result, export, force=force)
    if worse:
        error_console.print(f"[yellow]Warning: {escape(worse)}[/yellow]", soft_wrap=True)
    if as_json:
        print(json.dumps(finetune_json(result, worse, out, export), indent=1))
        return
    _print_evaluation(result)
    console.print(
        f"Stopped after {result.record['epochs_run']} epochs; wrote {escape(str(out))}/checkpoint "
        "and evaluation.csv"
        + (f"; bundle {escape(str(export))} with its MODEL_CARD.md" if export else "")
        + "."
    )


def _print_evaluation(result) -> None:
    from unicure_rt.train.finetune import METRICS

    n_test = int(result.evaluation["n_conditions"].iloc[0])
    table = Table(title=f"Held-out conditions ({n_test}), mean over conditions")
    table.add_column("model")
    for metric in METRICS:
        table.add_column(metric, justify="right")
    for row in result.evaluation.itertuples():
        table.add_row(row.model, *(f"{getattr(row, m):.3f}" for m in METRICS))
    console.print(table)


def finetune_json(result, worse: str | None, out: Path, export: Path | None) -> dict:
    """`finetune --json`: the evaluation of base and fine-tuned models on the held-out
    conditions, the verdict (`worse`: `worse_than_base`'s message, or None), the training
    summary and what was written (NaN as null)."""
    from unicure_rt.train.finetune import DECIDING_METRIC

    evaluation = [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in result.evaluation.to_dict(orient="records")
    ]
    record = result.record
    return {
        "evaluation": evaluation,
        "deciding_metric": DECIDING_METRIC,
        "worse_than_base": worse is not None,
        "epochs_run": record["epochs_run"],
        "best_validation_loss": record["best_validation_loss"],
        "split_sizes": record["split_sizes"],
        "base_bundle_sha256": record["base_bundle_sha256"],
        "out": str(out),
        "export": None
        if export is None
        else {"path": str(export), "manifest_sha256": load_bundle(export).sha256},
    }
