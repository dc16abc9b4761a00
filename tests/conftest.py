"""Shared fixtures: the real data in ../shared (skipped when absent) and a tiny exported bundle."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SHARED_DATA = Path(
    os.environ.get("UNICURE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(
            f"../shared/data not found at {SHARED_DATA}: set UNICURE_SHARED_DATA to the real data"
        )
    return SHARED_DATA


def landmark_vocabulary() -> tuple[dict, list[str]]:
    """A native vocabulary over the 978 landmark genes (loci from the packaged gene table)."""
    from unicure_rt.patients.genes import gene_table
    from unicure_rt.train.export.pipeline import default_output_genes

    genes = default_output_genes()
    loci = gene_table().set_index("symbol").loc[genes, ["chromosome", "start"]]
    chroms = sorted(loci["chromosome"].unique(), key=lambda c: (len(c), c))
    vocabulary = {
        "tokens": ["<pad>", "<cls>", "<chrom_close>"]
        + [f"chrom:{c}" for c in chroms]
        + [f"gene:{g}" for g in genes],
        "gene_loci": {g: [str(row.chromosome), int(row.start)] for g, row in loci.iterrows()},
    }
    return vocabulary, genes


def tiny_config(vocab_size: int, padding: str = "masked"):
    from unicure_rt.train.models import UniCureConfig

    return UniCureConfig(
        vocab_size=vocab_size,
        token_dim=16,
        d_model=32,
        n_heads=4,
        d_ff=64,
        n_layers=2,
        head_hidden=64,
        pad_length=160,
        sample_size=96,
        padding=padding,
        lora_layers=(1,),
        lora_rank=4,
        attn_dim=8,
        decoder_hidden=64,
    )


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A random-weight model over the landmark genes, exported with a 50-drug library."""
    torch = pytest.importorskip("torch", reason="the export tests need the [export] extra (torch)")
    from unicure_rt.drugs.build import import_library
    from unicure_rt.train.export.bundle_writer import ExportOptions, export_bundle
    from unicure_rt.train.models import UniCure

    vocabulary, genes = landmark_vocabulary()
    torch.manual_seed(0)
    model = UniCure(tiny_config(len(vocabulary["tokens"]))).eval()
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(50, 512)), index=[f"drug{i:02d}" for i in range(50)])
    table.index.name = "name"
    table.to_parquet(root / "unimol.parquet")
    import_library(root / "unimol.parquet", encoder_id="unimol-512", out=root / "drugs.parquet")
    out = root / "bundle"
    export_bundle(
        model,
        vocabulary,
        out,
        ExportOptions(
            genes=genes,
            extra_files={"drugs.parquet": root / "drugs.parquet"},
            library="drugs.parquet",
        ),
    )
    return out
