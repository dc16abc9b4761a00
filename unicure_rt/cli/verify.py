"""`unicure-rt verify`: a bundle's integrity, manifest digest and signature, checked and shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from unicure_rt.bundle.load import load_bundle
from unicure_rt.bundle.pin import BundlePin
from unicure_rt.cli.common import console, report_errors
from unicure_rt.cli.options import BundleSha256Opt, BundleSignatureOpt, TrustedKeyOpt


@report_errors
def verify(
    bundle: Annotated[
        Path | None,
        typer.Argument(
            metavar="BUNDLE", help="Bundle directory (default: the bundled demo model)."
        ),
    ] = None,
    bundle_sha256: BundleSha256Opt = None,
    bundle_signature: BundleSignatureOpt = None,
    trusted_key: TrustedKeyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check BUNDLE as every command loads it (schema, files and their sha256, graph inputs and
    outputs) and, when given, its pinned digest and signature; print its manifest sha256.
    Exit code 2, with the reason, if any check fails."""
    pin = BundlePin(bundle_sha256, bundle_signature, trusted_key)
    loaded = load_bundle(bundle, pin)
    result = {
        "bundle": str(loaded.path),
        "manifest_sha256": loaded.sha256,
        "files": len(loaded.manifest["files"]),
        "integrity": "ok",
        "pinned_sha256": "ok" if pin.expected_sha256 else "not pinned",
        "signature": "verified with the trusted key" if pin.signature else "not checked",
    }
    if as_json:
        print(json.dumps(result, indent=1))
        return
    console.print(
        f"Bundle {escape(result['bundle'])}: integrity ok ({result['files']} files with their "
        "sha256, manifest schema, graph inputs and outputs)"
    )
    console.print(f"manifest sha256 {result['manifest_sha256']} ({result['pinned_sha256']})")
    console.print(f"signature: {result['signature']}")
