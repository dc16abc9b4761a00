"""`unicure-rt info`: what a bundle holds, and which execution providers this machine has."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from unicure_rt.bundle.load import load_bundle
from unicure_rt.cli.common import console, report_errors


def bundle_summary(path: Path | None) -> dict:
    """The manifest of a verified bundle, with this machine's providers and the shipped normal
    references (`--normal tissue:NAME` / `auto`: source, release, license) added."""
    from unicure_rt.onnx_runtime import ort
    from unicure_rt.patients.normals import reference_summary
    from unicure_rt.runtime.sessions import runnable_providers

    bundle = load_bundle(path)
    return {
        "path": str(bundle.path),
        "manifest_sha256": bundle.sha256,
        "manifest": bundle.manifest,
        "available_providers": runnable_providers(),
        "providers_in_onnxruntime_build": ort.get_available_providers(),
        "normal_references": reference_summary(),
    }


@report_errors
def info(
    bundle: Annotated[
        Path | None,
        typer.Argument(
            metavar="BUNDLE", help="Bundle directory (default: the bundled demo model)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Show a bundle's model, I/O contract, tokenizer, drug encoder and files (verified)."""
    summary = bundle_summary(bundle)
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    m = summary["manifest"]
    table = Table(title=f"Bundle {summary['path']}", show_header=False)
    model = m["model"]
    table.add_row("format version", str(m["format_version"]))
    table.add_row(
        "backbone",
        f"{model['n_layers']} layers, d_model {model['d_model']}, {model['n_heads']} heads, "
        f"padding {model['padding']}",
    )
    table.add_row("cell embedding", str(model["cell_dim"]))
    table.add_row("output genes", f"{len(m['genes'])} ({', '.join(m['genes'][:4])}, ...)")
    table.add_row("vocabulary", f"{len(m['tokenizer']['tokens'])} tokens")
    table.add_row(
        "drug encoder", f"{m['drug_encoder'].get('kind')} ({m['drug_encoder'].get('id')})"
    )
    table.add_row("precision", str(m.get("precision")))
    table.add_row("drug library", str(m.get("library") or "none"))
    for name, graph in m["graphs"].items():
        io = lambda specs: ", ".join(f"{s['name']} {s['dtype']}{s['shape']}" for s in specs)  # noqa: E731
        table.add_row(f"{name}.onnx", f"{io(graph['inputs'])} -> {io(graph['outputs'])}")
    for rel in m["files"]:
        size = (Path(summary["path"]) / rel).stat().st_size
        table.add_row(f"file {rel}", f"{size / 1e6:.1f} MB  sha256 {m['files'][rel][:12]}…")
    table.add_row("providers here", ", ".join(summary["available_providers"]))
    console.print(table)
    console.print(normal_reference_table(summary["normal_references"]))


def normal_reference_table(normals: dict) -> Table:
    """The shipped normal references of `reference_summary`, one row per source."""
    table = Table(title=f"Normal references ({normals['path']})", show_header=False)
    for key, source in normals["sources"].items():
        table.add_row(
            f"{key} ({source['n_references']})",
            f"{source['name']}; {source['release']}; {source['units']}",
        )
        table.add_row("", f"license: {source['license']}; {source['attribution']}")
    table.add_row("use", "--normal tissue:NAME (HPA), tissue:gtex:NAME, or --normal auto")
    table.add_row("license files", ", ".join(normals["license_files"]))
    return table
