"""The `unicure-rt` command: one Typer app, one module per command group."""

from __future__ import annotations

from typing import Annotated

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
    verify,
)
from unicure_rt.outputs import use_shared_permissions

app = typer.Typer(
    name="unicure-rt",
    help="Offline UniCure inference: rank drugs for patients, export models, build drug libraries.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help (click's layout): rich panels print `<bool>` on flags, cut long values with
    # '…' in narrow terminals and read '[extra]' as markup.
    rich_markup_mode=None,
)


@app.callback()
def options(
    shared_permissions: Annotated[
        bool,
        typer.Option(
            "--shared-permissions",
            help="Give outputs the permissions of the umask (typically readable by the group "
            "and others). Default: owner only, folders 0700 and files 0600, since outputs hold "
            "patient data.",
        ),
    ] = False,
) -> None:
    """Options of every command (given before the command name)."""
    use_shared_permissions(shared_permissions)


app.command("score")(score.score)
app.command("embed")(embed.embed)
app.command("predict")(predict.predict)
app.command("stratify")(stratify.stratify_command)
app.command("finetune")(finetune.finetune_command)
app.command("validate")(validate.validate)
app.command("info")(info.info)
app.command("verify")(verify.verify)
app.command("export")(export.export)
app.command("export-triton")(triton.export_triton_command)
app.add_typer(drugs.app, name="drugs")
app.add_typer(kit.app, name="kit")


def main() -> None:
    app()
