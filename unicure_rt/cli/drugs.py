"""`unicure-rt drugs`: make drug libraries (the logic lives in `unicure_rt.drugs.library`)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from unicure_rt.cli.common import report_errors

if TYPE_CHECKING:
    from unicure_rt.drugs.library import LibrarySummary

app = typer.Typer(
    rich_markup_mode=None,  # plain help, as the main app (cli/app.py)
    help=(
        "Make drug libraries: embed SMILES with a bundle's drug encoder (build) or import "
        "precomputed embeddings such as the published Uni-Mol table (import)."
    ),
    no_args_is_help=True,
)


class StorageDtype(str, Enum):
    float32 = "float32"
    float16 = "float16"


OutOption = Annotated[
    Path, typer.Option("--out", "-o", help="Library file to write (Parquet), e.g. drugs.parquet.")
]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace --out if it already exists.")]
IdOption = Annotated[
    str | None,
    typer.Option(
        "--id-column",
        help="Column with unique drug ids (default: drug_id, pert_id, drugbank_id, id, else the "
        "name column).",
    ),
]
NameOption = Annotated[
    str | None,
    typer.Option(
        "--name-column", help="Column with drug names (default: name, pert_iname, drug_name, ...)."
    ),
]
SmilesOption = Annotated[
    str | None,
    typer.Option(
        "--smiles-column", help="Column with SMILES (default: smiles or canonical_smiles)."
    ),
]
SourceOption = Annotated[
    str, typer.Option("--source", help="Where the drugs come from (stored in the library).")
]
LicenseOption = Annotated[
    str, typer.Option("--license", help="License of the source table (stored in the library).")
]
DtypeOption = Annotated[
    StorageDtype,
    typer.Option(
        "--dtype",
        help="How embeddings are stored: float32 (exact) or float16 (half the size; upcast to "
        "float32 on load).",
        case_sensitive=False,
    ),
]


def _report(summary: LibrarySummary, title: str) -> None:
    from unicure_rt.drugs.fingerprints import MAX_ATOMS

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("library", str(summary.path))
    table.add_row("drugs", f"{summary.n_drugs:,}")
    table.add_row("invalid SMILES skipped", f"{summary.n_invalid:,}")
    table.add_row("stored as", summary.embedding_dtype)
    if summary.float16_max_abs_change is not None:
        table.add_row("float16 max abs change", f"{summary.float16_max_abs_change:.3g}")
    table.add_row("size", f"{summary.size_bytes / 1e6:.1f} MB")
    console = Console()
    console.print(table)
    # long ids on their own lines, never wrapped, so they can be copied whole
    console.print(f"[bold]encoder id[/bold] {summary.encoder_id}", soft_wrap=True)
    console.print(f"[bold]sha256[/bold]     {summary.content_sha256}", soft_wrap=True)
    if summary.invalid:
        shown = ", ".join(summary.invalid[:10])
        more = f" and {summary.n_invalid - 10} more" if summary.n_invalid > 10 else ""
        console.print(
            f"[yellow]Skipped (SMILES RDKit cannot parse, or over "
            f"{MAX_ATOMS:,} atoms): {shown}{more}[/yellow]"
        )


@app.command("build")
@report_errors
def build(
    smiles_table: Annotated[
        Path,
        typer.Argument(
            metavar="SMILES_TABLE",
            help="CSV/TSV (.gz allowed) or Parquet table with one drug per row and a SMILES "
            "column.",
            show_default=False,
        ),
    ],
    out: OutOption,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle", "-b", help="Bundle whose drug encoder embeds the SMILES (default: bundled)."
        ),
    ] = None,
    force: ForceOption = False,
    id_column: IdOption = None,
    name_column: NameOption = None,
    smiles_column: SmilesOption = None,
    source: SourceOption = "",
    license: LicenseOption = "",
    dtype: DtypeOption = StorageDtype.float32,
) -> None:
    """Embed the SMILES of a table with a bundle's drug encoder and write a drug library."""
    from unicure_rt.bundle.load import load_bundle
    from unicure_rt.drugs.build import build_library

    summary = build_library(
        smiles_table,
        load_bundle(bundle),
        out,
        id_column=id_column,
        name_column=name_column,
        smiles_column=smiles_column,
        force=force,
        source=source,
        license=license,
        dtype=dtype.value,
    )
    _report(summary, "Drug library built")


@app.command("import")
@report_errors
def import_(
    table: Annotated[
        Path,
        typer.Argument(
            metavar="TABLE",
            help="CSV/TSV (.gz allowed) or Parquet table: one row per drug, an id column (or "
            "index) and the embedding as numeric columns.",
            show_default=False,
        ),
    ],
    encoder_id: Annotated[
        str,
        typer.Option(
            "--encoder-id",
            help="Id of the encoder that made the embeddings; must equal the bundle's "
            "drug_encoder.id (e.g. unimol-512).",
            show_default=False,
        ),
    ],
    out: OutOption,
    dim: Annotated[
        int | None,
        typer.Option("--dim", help="Expected embedding size (e.g. 512); checked when given."),
    ] = None,
    force: ForceOption = False,
    id_column: IdOption = None,
    name_column: NameOption = None,
    smiles_column: SmilesOption = None,
    source: SourceOption = "",
    license: LicenseOption = "",
    dtype: DtypeOption = StorageDtype.float32,
) -> None:
    """Write a drug library from precomputed embeddings (e.g. the published Uni-Mol table)."""
    from unicure_rt.drugs.build import import_library

    summary = import_library(
        table,
        encoder_id=encoder_id,
        out=out,
        id_column=id_column,
        name_column=name_column,
        smiles_column=smiles_column,
        dim=dim,
        force=force,
        source=source,
        license=license,
        dtype=dtype.value,
    )
    _report(summary, "Drug library imported")
