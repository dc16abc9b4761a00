"""`unicure-rt embed`: cell embeddings of a patient file (logic in `unicure_rt.runtime.embed`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from unicure_rt import __version__
from unicure_rt.bundle.load import DEFAULT_BUNDLE, load_bundle
from unicure_rt.bundle.pin import BundlePin
from unicure_rt.cli.common import bundle_line, console, report_errors, stage_progress
from unicure_rt.cli.options import (
    BundleOpt,
    BundleSha256Opt,
    BundleSignatureOpt,
    DeviceOpt,
    DrawsOpt,
    ForceOpt,
    GeneKeyOpt,
    GroupKeyOpt,
    InputArg,
    LayerOpt,
    MinCellsOpt,
    SampleKeyOpt,
    SeedOpt,
    ThreadsOpt,
    TrustedKeyOpt,
)
from unicure_rt.errors import UserError
from unicure_rt.outputs import refuse_existing, staged_output_file, write_marked_parquet

OBSM_KEY = "X_unicure"


@report_errors
def embed(
    input: InputArg,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="A .parquet file (one row per profile), or an .h5ad copy of an .h5ad INPUT with "
            f"one embedding per observation in obsm['{OBSM_KEY}'].",
        ),
    ],
    bundle: BundleOpt = None,
    layer: LayerOpt = None,
    gene_key: GeneKeyOpt = None,
    sample_key: SampleKeyOpt = None,
    group_key: GroupKeyOpt = None,
    min_cells: MinCellsOpt = 10,
    draws: DrawsOpt = 3,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 0,
    force: ForceOpt = False,
    bundle_sha256: BundleSha256Opt = None,
    bundle_signature: BundleSignatureOpt = None,
    trusted_key: TrustedKeyOpt = None,
) -> None:
    """Write the 1280-d cell embedding of every profile (sample or sample/group) of INPUT."""
    from unicure_rt.patients.load import load_profiles
    from unicure_rt.runtime.embed import embedding_table
    from unicure_rt.runtime.sessions import RuntimeOptions

    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".h5ad"):
        raise UserError(f"--out must end in .parquet or .h5ad (got '{out.name}').")
    per_observation = suffix == ".h5ad"
    if per_observation and not input.name.lower().endswith(".h5ad"):
        raise UserError(
            "An .h5ad --out is a copy of the input, so INPUT must be an .h5ad file too."
        )
    if per_observation and (sample_key or group_key):
        raise UserError(
            "With an .h5ad --out every observation is embedded on its own; leave out "
            "--sample-key and --group-key (or write a .parquet file of profiles instead)."
        )
    protect = [input, bundle or DEFAULT_BUNDLE]
    refuse_existing(out, force, protect)
    loaded = load_bundle(bundle, BundlePin(bundle_sha256, bundle_signature, trusted_key))
    profiles = load_profiles(
        input,
        layer=layer,
        gene_key=gene_key,
        sample_key="obs_names" if per_observation else sample_key,
        group_key=group_key,
        min_cells=1 if per_observation else min_cells,
    )
    runtime = RuntimeOptions(device=device, threads=threads)
    with stage_progress(False) as on_progress:
        table = embedding_table(
            loaded, profiles, seed=seed, draws=draws, runtime=runtime, progress=on_progress
        )
    with staged_output_file(out, force=force, inputs=protect) as target:
        if per_observation:
            import anndata

            adata = anndata.read_h5ad(input)
            columns = [c for c in table.columns if c.startswith("emb_")]
            embeddings = table.set_index("profile").loc[adata.obs_names.astype(str), columns]
            adata.obsm[OBSM_KEY] = embeddings.to_numpy()
            adata.uns["unicure_rt"] = {"kind": "embed", "version": __version__}
            adata.write_h5ad(target)
        else:
            write_marked_parquet(table, target, "embed")
    console.print(bundle_line(loaded))
    console.print(
        f"Wrote {len(table)} embeddings to {escape(str(out))} ({table.attrs['provider']})."
    )
