"""`unicure-rt export`: checkpoint -> verified bundle (training side; imports torch lazily)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from unicure_rt.cli.common import console, report_errors, stage_progress
from unicure_rt.errors import UserError


class Layout(str, Enum):
    reference = "reference"
    native = "native"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


@report_errors
def export(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            metavar="CHECKPOINT",
            help="Published .pth state dict, or a native checkpoint directory.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to write.")],
    layout: Annotated[
        Layout, typer.Option("--from", help="Checkpoint layout: reference (published) or native.")
    ] = Layout.native,
    species_chrom: Annotated[
        Path | None,
        typer.Option("--species-chrom", help="UCE species_chrom.csv (reference layout only)."),
    ] = None,
    protein_embeddings: Annotated[
        Path | None,
        typer.Option(
            "--protein-embeddings",
            help="UCE human protein-embedding file (.pt dict) or a list of its gene symbols.",
        ),
    ] = None,
    genes: Annotated[
        Path | None,
        typer.Option("--genes", help="Output gene symbols, one per line (reference layout)."),
    ] = None,
    n_heads: Annotated[
        int | None,
        typer.Option(
            "--n-heads",
            metavar="N",
            help="Attention heads (reference layout): 20 for the published width (d_model "
            "1280); required for any other width, which a checkpoint does not record.",
        ),
    ] = None,
    precision: Annotated[
        Precision,
        typer.Option(
            "--precision",
            help="Numeric precision of the bundle's graphs. fp16/int8 are made from the "
            "parity-checked fp32 graphs; export refuses them if their drug ranking strays from "
            "fp32's (Spearman < 0.99 or top-20 overlap < 18/20).",
        ),
    ] = Precision.fp32,
    atol: Annotated[
        float, typer.Option("--atol", help="Parity-gate tolerance (max abs error).")
    ] = 1e-4,
    validation_data: Annotated[
        Path | None,
        typer.Option(
            "--validation-data",
            help="A patient file (.h5ad or table) whose real profiles join the parity check.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Export a UniCure checkpoint to a bundle: LoRA merged, two ONNX graphs, parity-checked."""
    try:
        from unicure_rt.train.export.pipeline import export_checkpoint
    except ImportError as exc:
        raise UserError(
            f"Exporting needs the training side ({exc.name} is not installed). Install it with "
            "`pip install '.[export]'` in your unicure-rt clone (on CPU-only machines: "
            "`pip install torch==2.13.0` first, to get the CPU wheel)."
        ) from None
    with stage_progress(False) as on_progress:
        steps: list[str] = []

        def step(name: str) -> None:
            """Export reports named steps, not counts: each step is one unit of work."""
            if steps:
                on_progress(steps[-1], 1, 1)
            steps.append(name)
            on_progress(name, 0, 1)

        manifest, results = export_checkpoint(
            checkpoint,
            out,
            layout=layout.value,
            species_chrom=species_chrom,
            protein_embeddings=protein_embeddings,
            genes_file=genes,
            n_heads=n_heads,
            atol=atol,
            force=force,
            validation_data=validation_data,
            precision=precision.value,
            progress=step,
        )
        if steps:
            on_progress(steps[-1], 1, 1)
    table = Table(title=f"Parity with PyTorch ({out})")
    for column in ("graph", "case", "output", "max abs error", "max rel error", "atol"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.graph, r.case, r.output, f"{r.max_abs:.2e}", f"{r.max_rel:.2e}", f"{r.atol:g}"
        )
    console.print(table)
    fidelity = manifest.get("fidelity")
    if fidelity:
        graph_bytes = fidelity["graph_bytes"].values()
        sizes = [sum(g[key] for g in graph_bytes) / 1e6 for key in ("variant", "fp32")]
        console.print(
            f"{manifest['precision']} graphs ({sizes[0]:.1f} MB; fp32 {sizes[1]:.1f} MB) vs the "
            f"fp32 graphs above, {fidelity['n_profiles']} profiles x {fidelity['n_drugs']} "
            f"drugs: Spearman min {fidelity['spearman_min']:.4f} (mean "
            f"{fidelity['spearman_mean']:.4f}), top-20 overlap min "
            f"{fidelity['top20_overlap_min']}/20, max abs error: expression "
            f"{fidelity['max_abs_expression']:.2e}, cell embedding "
            f"{fidelity['max_abs_cell_embedding']:.2e}."
        )
    console.print(f"Wrote bundle {out} ({len(manifest['files'])} files, all sha256-recorded).")
