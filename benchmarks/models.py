"""Random-weight models and bundles for the benchmarks, built once and cached in the work folder.

- `w1_bundle`: the published FlexPert + decoder at full size (random weights in the published
  checkpoint layout from `tests/published_fixtures.py`, tiny backbone), converted with
  `unicure_rt.train.export.convert` and exported with `export_bundle` (fp32), plus the int8
  variant of its `flexpert.onnx` made by `unicure_rt.train.export.precision.make_variant` (the
  export path's own int8 settings).
- `w2_bundle(n_layers)`: the published backbone sizes (d_model 1280, 20 heads, d_ff 5120,
  `reference` padding, 1536 positions, token_dim 5120) with `n_layers` layers, a synthetic
  vocabulary of `N_VOCAB_GENES` genes, and the published FlexPert.
- `w4p_bundles`: the same published FlexPert + decoder, exported as a fp32 and an int8 bundle
  (`export_bundle`, `precision="int8"`) whose tiny backbone's vocabulary is the 978 landmark
  genes, so that `score_patient` accepts a real patient (W1's vocabulary is synthetic symbols).
- `small_bundle`: a small random model over the 978 landmark genes with a random drug library,
  the stand-in when the bundled default model is absent.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import REPO, add_paths

add_paths()

N_VOCAB_GENES = 19_000  # the "~19k genes" of a human UCE vocabulary (assumed round figure)
HUMAN_CHROMOSOMES = [str(i) for i in range(1, 23)] + ["X", "Y", "MT"]
W1_TAG = "w1-published-flexpert-v3"  # v3: one cell row per batch, its layer float32 in int8
W4P_TAG = "w4p-published-flexpert-landmarks-v3"


def output_genes() -> list[str]:
    from unicure_rt.train.export.pipeline import default_output_genes

    return list(default_output_genes())


def _done(path: Path, tag: str) -> bool:
    stamp = path / ".bench-tag"
    return stamp.exists() and stamp.read_text() == tag


def _stamp(path: Path, tag: str) -> None:
    (path / ".bench-tag").write_text(tag)


def published_flexpert_model(genes: list[str] | None = None):
    """UniCure with the published FlexPert/decoder (random, published layout) and a tiny backbone.

    `genes`: the human genes of the backbone's vocabulary (default: the fixture's synthetic
    symbols). Returns (model, vocabulary). Deterministic (seed 0).
    """
    import tempfile

    from published_fixtures import make_published_state_dict, make_uce_files

    from unicure_rt.train.export.convert import convert_checkpoint

    state = make_published_state_dict(full_flexpert=True, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        files = make_uce_files(Path(tmp), genes, seed=0)
        model, vocabulary = convert_checkpoint(
            state, files.species_chrom, files.protein_embeddings, n_heads=4
        )
    return model.eval(), vocabulary


def w1_bundle(work: Path, log=print) -> dict:
    """fp32 bundle, int8 flexpert graph and the native PyTorch checkpoint of the W1 model."""
    from unicure_rt.train.export.bundle_writer import ExportOptions, export_bundle
    from unicure_rt.train.export.precision import make_variant
    from unicure_rt.train.models.unicure import save_native

    root = work / "w1"
    paths = {
        "bundle": root / "bundle_fp32",
        "int8_dir": root / "int8",
        "native": root / "native",
        "root": root,
    }
    if root.exists() and _done(root, W1_TAG):
        return paths
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    model, vocabulary = published_flexpert_model()
    log(f"[bench] W1 model built ({time.perf_counter() - t0:.1f} s); exporting fp32 bundle")
    save_native(model, paths["native"], vocabulary=vocabulary)
    manifest, _ = export_bundle(
        model, vocabulary, paths["bundle"], ExportOptions(genes=output_genes())
    )
    log(f"[bench] W1 bundle exported ({time.perf_counter() - t0:.1f} s); making int8 variant")
    settings = make_variant(paths["bundle"], paths["int8_dir"], manifest, "int8")
    (paths["int8_dir"] / "settings.json").write_text(json.dumps(settings, indent=1))
    log(f"[bench] W1 int8 variant done ({time.perf_counter() - t0:.1f} s)")
    _stamp(root, W1_TAG)
    return paths


def w4p_bundles(work: Path, log=print) -> dict:
    """fp32 and int8 bundles of W1's published FlexPert over a landmark-gene vocabulary."""
    from unicure_rt.train.export.bundle_writer import ExportOptions, export_bundle

    root = work / "w4p"
    paths = {"fp32": root / "bundle_fp32", "int8": root / "bundle_int8"}
    if root.exists() and _done(root, W4P_TAG):
        return paths
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    genes = output_genes()
    t0 = time.perf_counter()
    model, vocabulary = published_flexpert_model(genes)
    for precision, path in paths.items():
        log(f"[bench] W4P: exporting the {precision} bundle ({time.perf_counter() - t0:.0f} s)")
        export_bundle(model, vocabulary, path, ExportOptions(genes=genes, precision=precision))
    log(f"[bench] W4P bundles done ({time.perf_counter() - t0:.0f} s)")
    _stamp(root, W4P_TAG)
    return paths


def load_w1_torch(paths: dict):
    from unicure_rt.train.models.unicure import load_native

    model, _ = load_native(paths["native"])
    return model.eval()


# ----------------------------------------------------------------------------- W2


def synthetic_vocabulary(n_genes: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    genes = [f"G{i:05d}" for i in range(n_genes)]
    chroms = [HUMAN_CHROMOSOMES[i % len(HUMAN_CHROMOSOMES)] for i in range(n_genes)]
    starts = rng.integers(1_000, 250_000_000, size=n_genes)
    return {
        "tokens": ["<pad>", "<cls>", "<chrom_close>"]
        + [f"chrom:{c}" for c in HUMAN_CHROMOSOMES]
        + [f"gene:{g}" for g in genes],
        "gene_loci": {g: [c, int(s)] for g, c, s in zip(genes, chroms, starts, strict=True)},
    }


def w2_config(n_layers: int, vocab_size: int):
    from unicure_rt.train.models import UniCureConfig

    return UniCureConfig(
        vocab_size=vocab_size, n_layers=n_layers, lora_layers=(), padding="reference"
    )


def w2_bundle(work: Path, n_layers: int, log=print) -> dict:
    """Bundle (fp32 + int8 graphs) and native checkpoint of the published sizes at `n_layers`."""
    import resource

    import torch

    from unicure_rt.train.export.bundle_writer import ExportOptions, export_bundle
    from unicure_rt.train.export.precision import make_variant
    from unicure_rt.train.models import UniCure
    from unicure_rt.train.models.unicure import save_native

    tag = f"w2-L{n_layers}-V{N_VOCAB_GENES}-v1"
    root = work / f"w2_L{n_layers}"
    paths = {
        "bundle": root / "bundle_fp32",
        "int8_dir": root / "int8",
        "native": root / "native",
        "export": root / "export.json",
    }
    if root.exists() and _done(root, tag):
        return paths
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    vocabulary = synthetic_vocabulary(N_VOCAB_GENES)
    torch.manual_seed(0)
    model = UniCure(w2_config(n_layers, len(vocabulary["tokens"]))).eval()
    save_native(model, paths["native"], vocabulary=vocabulary)
    t0 = time.perf_counter()
    log(f"[bench] W2: exporting the {n_layers}-layer bundle")
    manifest, _ = export_bundle(
        model, vocabulary, paths["bundle"], ExportOptions(genes=output_genes())
    )
    export_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    make_variant(paths["bundle"], paths["int8_dir"], manifest, "int8")
    int8_s = time.perf_counter() - t0
    paths["export"].write_text(
        json.dumps(
            {
                "export_s": export_s,
                "int8_s": int8_s,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )
    _stamp(root, tag)
    return paths


# ----------------------------------------------------------------------------- small model


def small_bundle(work: Path, n_drugs: int = 5000, log=print) -> dict:
    """A small random model over the landmark genes with an `n_drugs` random library."""
    import torch

    from unicure_rt.drugs.build import import_library
    from unicure_rt.train.export.bundle_writer import ExportOptions, export_bundle
    from unicure_rt.train.models import UniCure, UniCureConfig

    tag = f"small-{n_drugs}-v1"
    root = work / "small"
    paths = {"bundle": root / "bundle", "library": root / "bundle" / "drugs.parquet"}
    if root.exists() and _done(root, tag):
        return paths
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    from conftest import landmark_vocabulary

    vocabulary, genes = landmark_vocabulary()
    torch.manual_seed(0)
    config = UniCureConfig(
        vocab_size=len(vocabulary["tokens"]),
        token_dim=64,
        d_model=128,
        n_heads=4,
        d_ff=256,
        n_layers=4,
        head_hidden=256,
        pad_length=1536,
        sample_size=1024,
        padding="masked",
        lora_layers=(),
        attn_dim=16,
        decoder_hidden=512,
    )
    model = UniCure(config).eval()
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        rng.normal(size=(n_drugs, 512)), index=[f"drug{i:05d}" for i in range(n_drugs)]
    )
    table.index.name = "name"
    import_library(table, encoder_id="unimol-512", out=root / "drugs.parquet", dtype="float16")
    log("[bench] exporting the small stand-in bundle")
    export_bundle(
        model,
        vocabulary,
        paths["bundle"],
        ExportOptions(
            genes=genes,
            extra_files={"drugs.parquet": root / "drugs.parquet"},
            library="drugs.parquet",
            provenance={"note": "random weights: unicure-rt benchmark stand-in"},
        ),
    )
    _stamp(root, tag)
    return paths


def default_bundle_or_small(work: Path, log=print) -> tuple[Path, str]:
    """The bundled default model if present and valid, else the small stand-in; and its label."""
    from unicure_rt.bundle.load import DEFAULT_BUNDLE, load_bundle
    from unicure_rt.errors import UserError

    if (DEFAULT_BUNDLE / "manifest.json").exists():
        try:
            load_bundle(DEFAULT_BUNDLE)
            return DEFAULT_BUNDLE, "bundled default model (unicure_rt/data/default_bundle)"
        except UserError as exc:
            log(f"[bench] the bundled default model does not load ({exc}); using the stand-in")
    paths = small_bundle(work, log=log)
    return paths["bundle"], (
        "small random stand-in model (the bundled default model was absent when this ran)"
    )


def relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)
