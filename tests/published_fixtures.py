"""Builders of published-layout UniCure checkpoints and UCE files with random weights, for tests.

The published weights are not reachable, so tests use state dicts with exactly the key layout
of section 6 of the reference (random values; LoRA weights non-zero) and small UCE files
(`species_chrom.csv`, a protein-embedding dict) shaped like UCE's.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PUBLISHED_VOCAB_ROWS = 145_469

UCE = "uce_lora.module."


def uce_positions(max_len: int, d_model: int) -> torch.Tensor:
    """UCE's `PositionalEncoding.pe` buffer, `[max_len, 1, d_model]`, computed as UCE does."""
    position = torch.arange(max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, 1, d_model)
    pe[:, 0, 0::2] = torch.sin(position * div_term)
    pe[:, 0, 1::2] = torch.cos(position * div_term)
    return pe


def make_published_state_dict(
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    d_ff: int = 128,
    token_dim: int = 16,
    lora_layers: tuple[int, ...] = (1,),
    lora_rank: int = 4,
    vocab_rows: int = PUBLISHED_VOCAB_ROWS,
    pad_length: int = 1536,
    head_hidden: int = 1024,
    cell_dim: int = 1280,
    window: int = 32,
    stride: int = 16,
    attn_dim: int | None = None,
    decoder_hidden: int | None = None,
    n_genes: int = 978,
    seed: int = 0,
    full_flexpert: bool = True,
) -> dict[str, torch.Tensor]:
    """A state dict in the published key layout with random float32 weights.

    `full_flexpert` gives the published FlexPert (attention 64 wide -> fusion 5056, decoder
    hidden 2048); `False` shrinks it (attention 8, hidden 64) but keeps the 1280-d cell
    embedding, the 528/1056-d drug interface and 978 output genes. `n_heads` is not stored in a
    state dict; it is only checked here.
    """
    assert d_model % n_heads == 0
    attn_dim = attn_dim or (64 if full_flexpert else 8)
    decoder_hidden = decoder_hidden or (2048 if full_flexpert else 64)
    fusion = ((cell_dim - window) // stride + 1) * attn_dim
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    state: dict[str, torch.Tensor] = {}

    def linear(prefix: str, n_in: int, n_out: int, bias: bool = True, gain: float = 1.0) -> None:
        state[prefix + "weight"] = randn(n_out, n_in, scale=gain / math.sqrt(n_in))
        if bias:
            state[prefix + "bias"] = randn(n_out, scale=0.1)

    def layer_norm(prefix: str, n: int) -> None:
        state[prefix + "weight"] = 1.0 + randn(n, scale=0.1)
        state[prefix + "bias"] = randn(n, scale=0.1)

    # FlexPert and decoder
    linear("query_map.", window, attn_dim)
    linear("key_map.", window, attn_dim)
    linear("value_map.", window, attn_dim)
    linear("fusion_decoder.0.", fusion, fusion, gain=1.4)
    linear("fusion_decoder.3.", fusion, fusion)
    linear("decoder.0.", fusion, decoder_hidden, gain=1.4)
    linear("decoder.3.", decoder_hidden, n_genes)
    # UCE backbone
    state[UCE + "pe_embedding.weight"] = randn(vocab_rows, token_dim)
    state[UCE + "pos_encoder.pe"] = uce_positions(pad_length, d_model)
    linear(UCE + "encoder.0.", token_dim, d_model)
    layer_norm(UCE + "encoder.2.", d_model)
    for n in range(n_layers):
        prefix = f"{UCE}transformer_encoder.layers.{n}."
        attn = prefix + ("self_attn.module." if n in lora_layers else "self_attn.")
        state[attn + "in_proj_weight"] = randn(3 * d_model, d_model, scale=0.5 / math.sqrt(d_model))
        state[attn + "in_proj_bias"] = randn(3 * d_model, scale=0.1)
        linear(attn + "out_proj.", d_model, d_model)
        if n in lora_layers:
            lora = prefix + "self_attn.lora_module."
            for name in "qkvo":
                state[f"{lora}{name}_in.weight"] = randn(
                    lora_rank, d_model, scale=1 / math.sqrt(d_model)
                )
                state[f"{lora}{name}_out.weight"] = randn(
                    d_model, lora_rank, scale=0.5 / math.sqrt(lora_rank)
                )
        linear(prefix + "linear1.", d_model, d_ff)
        linear(prefix + "linear2.", d_ff, d_model)
        layer_norm(prefix + "norm1.", d_model)
        layer_norm(prefix + "norm2.", d_model)
    sizes = [d_model, head_hidden, cell_dim, cell_dim]
    for i in range(3):
        linear(f"{UCE}decoder.{i}.0.", sizes[i], sizes[i + 1])
        layer_norm(f"{UCE}decoder.{i}.1.", sizes[i + 1])
    linear(f"{UCE}decoder.3.", cell_dim, cell_dim)
    # Unused at inference: small dummies with UCE's module structure.
    binary = [cell_dim + d_model, 32, 16, 8]
    for i in range(3):
        linear(f"{UCE}binary_decoder.{i}.0.", binary[i], binary[i + 1])
        layer_norm(f"{UCE}binary_decoder.{i}.1.", binary[i + 1])
    linear(f"{UCE}binary_decoder.3.", binary[3], 1)
    linear(f"{UCE}gene_embedding_layer.0.", token_dim, d_model)
    layer_norm(f"{UCE}gene_embedding_layer.2.", d_model)
    return state


# ----------------------------------------------------------------------------- UCE files

HUMAN_CHROMOSOMES = [str(i) for i in range(1, 23)] + ["X", "Y", "MT"]
OTHER_SPECIES = {
    "frog": ["Chr1", "Chr2", "Chr3", "scaffold_12"],
    "chicken": ["1", "2", "Z"],
    "mouse": ["1", "2", "X", "MT"],
    "macaca_mulatta": ["1", "10", "X"],
}


@dataclass(frozen=True)
class UceFiles:
    species_chrom: Path  # species_chrom.csv
    protein_embeddings: Path  # torch.save'd {symbol: tensor}, in gene-index order
    rows: list[tuple[str, str, int, str]]  # (species, chromosome, start, gene_symbol) as written
    protein_genes: list[str]  # keys of the protein-embedding dict, in order (case as written)


# Special cases written into the files (see make_uce_files).
RENAME_CASES = {
    # species_chrom symbol(s) (human)      protein-list symbol(s)
    "old name in species_chrom": (["AARS"], ["AARS1"]),
    "same new name in both": (["EPRS1"], ["EPRS1"]),
    "old and new name in species_chrom": (["TSTA3", "GFUS"], ["GFUS"]),
    "rename source in protein list": (["RIGI", "DDX58"], ["RIGI", "DDX58"]),
    "rename target missing from protein list": (["KIF1BP"], []),
}


def make_uce_files(tmp_path: Path, genes: list[str] | None = None, *, seed: int = 0) -> UceFiles:
    """Write a small `species_chrom.csv` and a protein-embedding dict under `tmp_path`.

    Human genes: `genes` (default 280 `GENExxx` symbols) spread over chromosomes 1-22, X, Y,
    MT, plus the `RENAME_CASES`, a gene with lower-case symbol in each file (`gene005` in the
    protein list), a gene without a chromosome (`NOCHROM1`), a gene missing from the protein
    list (`NOPROT1`) and protein-list genes missing from species_chrom (`ORPHAN1`, `ORPHAN2`).
    Rows of other species (whose labels sort before and after `human_*`) are mixed in, and the
    rows and the protein list are shuffled, so codes and indices are not trivially ordered.
    """
    rng = np.random.default_rng(seed)
    genes = list(genes) if genes is not None else [f"GENE{i:03d}" for i in range(280)]
    rows: list[tuple[str, str, int, str]] = []

    def start() -> int:
        return int(rng.integers(1_000, 250_000_000))

    for i, gene in enumerate(genes):
        symbol = gene.lower() if gene == "GENE007" else gene
        rows.append(("human", HUMAN_CHROMOSOMES[i % len(HUMAN_CHROMOSOMES)], start(), symbol))
    protein = [g.lower() if g == "GENE005" else g for g in genes]
    for chrom_symbols, protein_symbols in RENAME_CASES.values():
        for symbol in chrom_symbols:
            rows.append(("human", str(rng.choice(HUMAN_CHROMOSOMES)), start(), symbol))
        protein += protein_symbols
    rows.append(("human", "", start(), "NOCHROM1"))
    rows.append(("human", "7", start(), "NOPROT1"))
    protein += ["NOCHROM1", "ORPHAN1", "ORPHAN2"]
    for species, chroms in OTHER_SPECIES.items():
        for j in range(12):
            rows.append((species, chroms[j % len(chroms)], start(), f"{species.upper()}G{j}"))
        rows.append((species, chroms[0], start(), genes[0]))  # same symbol as a human gene
    rows = [rows[i] for i in rng.permutation(len(rows))]
    protein = [protein[i] for i in rng.permutation(len(protein))]

    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    species_chrom = tmp_path / "species_chrom.csv"
    with open(species_chrom, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["species", "chromosome", "start", "gene_symbol"])
        writer.writerows(rows)
    embeddings = tmp_path / "protein_embeddings.pt"
    torch.save({g: torch.randn(4) for g in protein}, embeddings)
    return UceFiles(species_chrom, embeddings, rows, protein)
