"""`unicure-rt export`: read a checkpoint of either layout and write a verified bundle."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from unicure_rt.errors import UserError
from unicure_rt.provenance import sha256_file
from unicure_rt.train.export.bundle_writer import ExportOptions, export_bundle, tokenizer_spec
from unicure_rt.train.export.validate import ParityResult
from unicure_rt.train.models.unicure import CONFIG, GENES, WEIGHTS, UniCure, load_native

DRUG_ENCODER_GRAPH, DRUG_ENCODER_SPEC = "drug_encoder.onnx", "drug_encoder.json"
PEFT_ADAPTER_CONFIG = "adapter_config.json"


def read_gene_list(path: Path) -> list[str]:
    """Output gene symbols: a JSON list, or one symbol per line."""
    text = Path(path).read_text()
    try:
        genes = json.loads(text)
    except json.JSONDecodeError:
        genes = [line.strip() for line in text.splitlines() if line.strip()]
    return [str(g).upper() for g in genes]


def default_output_genes() -> list[str]:
    """The 978 L1000 landmark genes in the published output order (shipped with the package)."""
    path = Path(__file__).resolve().parents[2] / "data" / "landmark_genes.txt"
    return read_gene_list(path)


def load_native_checkpoint(directory: Path) -> tuple[UniCure, dict, list[str], ExportOptions]:
    """Model, vocabulary, output genes and bundle extras of a native checkpoint directory.

    Unmerged peft adapters saved beside the base weights (`adapter_config.json`) are loaded and
    merged.
    """
    directory = Path(directory)
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise UserError(
            f"'{directory}' is not a native unicure-rt checkpoint (it needs {CONFIG} and "
            f"{WEIGHTS}). For a published .pth state dict use --from reference."
        )
    model, vocabulary = load_native(directory)
    if vocabulary is None:
        raise UserError(
            f"Native checkpoint '{directory}' has no vocabulary.json; re-save it with save_native."
        )
    if (directory / PEFT_ADAPTER_CONFIG).is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(directory)).merge_and_unload()
    genes_path = directory / GENES
    genes = read_gene_list(genes_path) if genes_path.is_file() else default_output_genes()
    options = ExportOptions(
        genes=genes, provenance={"source_checkpoint_sha256": sha256_file(directory / WEIGHTS)}
    )
    if (directory / DRUG_ENCODER_GRAPH).is_file():
        options.drug_encoder = json.loads((directory / DRUG_ENCODER_SPEC).read_text())
        options.extra_files[DRUG_ENCODER_GRAPH] = directory / DRUG_ENCODER_GRAPH
    return model.eval(), vocabulary, genes, options


def load_reference_checkpoint(
    path: Path, species_chrom: Path | None, protein_embeddings: Path | None, n_heads: int | None
) -> tuple[UniCure, dict]:
    """Convert a published-layout state dict (see `convert.py`)."""
    from unicure_rt.train.export.convert import (
        convert_published,
        published_vocabulary,
        read_protein_gene_list,
        read_species_chrom,
    )

    if species_chrom is None or protein_embeddings is None:
        raise UserError(
            "Converting a published checkpoint needs UCE's gene files: pass --species-chrom "
            "species_chrom.csv and --protein-embeddings (the human protein-embedding .pt file or a "
            "list of its gene symbols). They define the token ids the checkpoint was trained with."
        )
    vocabulary, published_ids = published_vocabulary(
        read_species_chrom(species_chrom), read_protein_gene_list(protein_embeddings)
    )
    model = convert_published(path, vocabulary, published_ids, n_heads=n_heads)
    return model, vocabulary


def real_validation_profiles(path: Path, model: UniCure, vocabulary: dict) -> np.ndarray:
    """Profiles of a patient file laid out over the model's vocabulary, for the parity gate."""
    from unicure_rt.patients.load import load_profiles
    from unicure_rt.runtime.embed import vocabulary_profiles
    from unicure_rt.runtime.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_spec(tokenizer_spec(model, vocabulary))
    return vocabulary_profiles(tokenizer, load_profiles(path, min_cells=1).tumour)


def export_checkpoint(
    checkpoint: Path,
    out: Path,
    *,
    layout: str = "native",
    species_chrom: Path | None = None,
    protein_embeddings: Path | None = None,
    genes_file: Path | None = None,
    n_heads: int | None = None,
    atol: float = 1e-4,
    force: bool = False,
    precision: str = "fp32",
    validation_data: Path | None = None,
    progress: Callable[[str], None] = lambda step: None,
) -> tuple[dict, list[ParityResult]]:
    """Checkpoint (published `.pth` or native directory) -> verified bundle at `out`."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise UserError(f"Checkpoint '{checkpoint}' does not exist. Check the path.")
    progress("loading checkpoint")
    if layout == "reference":
        model, vocabulary = load_reference_checkpoint(
            checkpoint, species_chrom, protein_embeddings, n_heads
        )
        genes = read_gene_list(genes_file) if genes_file else default_output_genes()
        options = ExportOptions(
            genes=genes, provenance={"source_checkpoint_sha256": sha256_file(checkpoint)}
        )
    elif layout == "native":
        model, vocabulary, genes, options = load_native_checkpoint(checkpoint)
        if genes_file:
            options.genes = read_gene_list(genes_file)
    else:
        raise UserError(f"Unknown checkpoint layout '{layout}': use reference or native.")
    if len(options.genes) != model.config.n_genes:
        raise UserError(
            f"The checkpoint predicts {model.config.n_genes} genes but the gene list has "
            f"{len(options.genes)}. Pass the model's output genes with --genes."
        )
    options.atol, options.force = atol, force
    given = [checkpoint, species_chrom, protein_embeddings, genes_file, validation_data]
    options.inputs = [Path(p) for p in given if p is not None]
    if validation_data is not None:
        options.validation_profiles = real_validation_profiles(validation_data, model, vocabulary)
    options.provenance["source_layout"] = layout
    options.precision = precision
    return export_bundle(model, vocabulary, out, options, progress=progress)
