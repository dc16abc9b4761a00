"""`unicure-rt kit`: build an offline clinic deployment kit, and `kit verify` it (the logic lives
in `unicure_rt.kit.build` and `unicure_rt.kit.verify`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unicure_rt.cli.common import console, report_errors
from unicure_rt.cli.options import ForceOpt
from unicure_rt.errors import UserError
from unicure_rt.kit.build import PLATFORMS, SUPPORTED_PYTHONS, KitOptions, build_kit
from unicure_rt.kit.verify import verify_kit

app = typer.Typer(
    rich_markup_mode=None,  # plain help, as the main app (cli/app.py)
    help=(
        "Offline deployment. On a connected machine `kit --out KIT` writes a folder with the "
        "wheels, bundles, install script, SBOM and MANIFEST; on the clinic machine `sh "
        "KIT/install.sh` (or `kit verify KIT`) checks every file's sha256 before installing."
    ),
    invoke_without_command=True,
)


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@app.callback()
@report_errors
def kit_command(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Kit folder to write.")] = None,
    platforms: Annotated[
        str,
        typer.Option(
            "--platform", help=f"Comma-separated target platforms: {', '.join(PLATFORMS)}."
        ),
    ] = "linux-x86_64",
    pythons: Annotated[
        str,
        typer.Option("--python", help="Comma-separated target Python versions."),
    ] = ",".join(SUPPORTED_PYTHONS),
    bundles: Annotated[
        list[Path] | None,
        typer.Option(
            "--bundle", metavar="DIR", help="Bundle to ship (repeat; default: the bundled model)."
        ),
    ] = None,
    force: ForceOpt = False,
) -> None:
    """Build an offline kit into --out (needs the package index: run on a connected machine)."""
    if ctx.invoked_subcommand is not None:
        return
    if out is None:
        raise UserError(
            "`unicure-rt kit` needs --out KIT (the folder to write), e.g. `unicure-rt kit --out "
            "kit/`; to check an existing kit run `unicure-rt kit verify KIT`."
        )
    options = KitOptions(
        platforms=_split(platforms), pythons=_split(pythons), bundles=tuple(bundles or ())
    )
    record = build_kit(out, options, force=force)
    console.print(
        f"Wrote kit {out}: {len(record['wheels'])} wheels for {', '.join(record['platforms'])} "
        f"(Python {', '.join(record['pythons'])}), bundles "
        f"{', '.join(b['name'] for b in record['bundles'])}; {record['size_bytes'] / 1e6:.0f} MB "
        f"in {record['build_seconds']:.0f} s. MANIFEST sha256 {record['manifest_sha256']} "
        "(send it separately; `kit verify --manifest-sha256` checks it).",
        soft_wrap=True,
    )


@app.command("verify")
@report_errors
def verify_command(
    kit: Annotated[
        Path, typer.Argument(metavar="KIT", help="Kit folder written by `unicure-rt kit`.")
    ],
    manifest_sha256: Annotated[
        str | None,
        typer.Option(
            "--manifest-sha256", help="The MANIFEST digest printed when the kit was built."
        ),
    ] = None,
) -> None:
    """Check every file of KIT against its MANIFEST (exit 2 on any changed, missing or extra)."""
    digest = verify_kit(kit, manifest_sha256)
    console.print(
        f"Kit {kit}: every file matches its MANIFEST (MANIFEST sha256 {digest}).", soft_wrap=True
    )
