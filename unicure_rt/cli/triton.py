"""`unicure-rt export-triton`: a bundle as a Triton Inference Server model repository (the logic
lives in `unicure_rt.engines.triton_repository`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unicure_rt.bundle.pin import BundlePin
from unicure_rt.cli.common import bundle_line, console, report_errors
from unicure_rt.cli.options import BundleSha256Opt, BundleSignatureOpt, ForceOpt, TrustedKeyOpt
from unicure_rt.engines.triton_repository import (
    CLIENT,
    DEFAULT_MAX_BATCH_SIZE,
    GRAPHS,
    TritonOptions,
    export_triton,
)


@report_errors
def export_triton_command(
    bundle: Annotated[
        Path | None,
        typer.Argument(
            metavar="BUNDLE", help="Bundle directory (default: the bundled demo model)."
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Model repository folder to write."),
    ] = ...,  # type: ignore[assignment]
    max_batch_size: Annotated[
        int,
        typer.Option(
            "--max-batch-size",
            help="Largest batch each model accepts (Triton's max_batch_size; dynamic batching "
            "up to it). 0 = no server-side batching.",
        ),
    ] = DEFAULT_MAX_BATCH_SIZE,
    tensorrt: Annotated[
        bool,
        typer.Option("--tensorrt", help="Run the graphs through TensorRT inside Triton (GPU)."),
    ] = False,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="TensorRT in half precision (with --tensorrt).")
    ] = False,
    force: ForceOpt = False,
    bundle_sha256: BundleSha256Opt = None,
    bundle_signature: BundleSignatureOpt = None,
    trusted_key: TrustedKeyOpt = None,
) -> None:
    """Write a Triton model repository (backbone and flexpert on the ONNX Runtime backend, the
    bundle manifest and a client example) from BUNDLE."""
    options = TritonOptions(max_batch_size=max_batch_size, tensorrt=tensorrt, fp16=fp16)
    pin = BundlePin(bundle_sha256, bundle_signature, trusted_key)
    loaded = export_triton(bundle, out, options, force=force, pin=pin)
    console.print(bundle_line(loaded))
    accelerator = f", TensorRT {'FP16' if fp16 else 'FP32'}" if tensorrt else ""
    batching = f"max_batch_size {max_batch_size}" if max_batch_size else "no batching"
    console.print(
        f"Wrote Triton model repository {out}: {', '.join(GRAPHS)} ({batching}{accelerator}), "
        f"manifest.json, {CLIENT}, README.md"
    )
