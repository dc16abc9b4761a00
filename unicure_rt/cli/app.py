"""The `unicure-rt` command: one Typer app, one module per command group."""

from __future__ import annotations

import typer

from unicure_rt.cli import (
    drugs,
    embed,
    export,
    finetune,
    info,
    kit,
    predict,
    score,
    stratify,
    triton,
    validate,
)

app = typer.Typer(
    name="unicure-rt",
    help="Offline UniCure inference: rank drugs for patients, export models, build drug libraries.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("score")(score.score)
app.command("embed")(embed.embed)
app.command("predict")(predict.predict)
app.command("stratify")(stratify.stratify_command)
app.command("finetune")(finetune.finetune_command)
app.command("validate")(validate.validate)
app.command("info")(info.info)
app.command("export")(export.export)
app.command("export-triton")(triton.export_triton_command)
app.add_typer(drugs.app, name="drugs")
app.add_typer(kit.app, name="kit")


def main() -> None:
    app()
