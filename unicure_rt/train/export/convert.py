"""Checkpoints in the published UniCure layout -> a native `UniCure` model and its vocabulary.

Longer than 400 lines because the published checkpoint's layout, its vocabulary files and the
mapping of its keys to the native model are one specification, used only here.

The published checkpoint (section 6 of the reference) is a PyTorch `state_dict` whose token
table has 145,469 rows addressed by UCE's token ids; sentences are built from UCE's
`species_chrom.csv` and the ESM2 protein-embedding gene list (section 2). Conversion:

1. `published_vocabulary` builds our compact vocabulary from those two files and, for each of
   our tokens, the published id it stands for (`published_ids`).
2. `convert_published` loads the state dict without unpickling objects, infers the sizes from
   the tensor shapes, keeps only the token-table rows in `published_ids`, merges the
   `lora_pytorch` LoRA by the reference's own formula (transpose quirk included) and returns
   the native model with `padding="reference"`.

Vocabulary order (deterministic): `<pad>`, `<cls>`, `<chrom_close>`; then one `chrom:<c>` per
chromosome that a vocabulary gene lies on, sorted by its categorical code; then one
`gene:<SYMBOL>` per gene, sorted by its index in the protein-embedding gene list.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from unicure_rt.bundle.schema import CHROM_CLOSE, CHROM_PREFIX, CLS, GENE_PREFIX, PAD
from unicure_rt.errors import UserError
from unicure_rt.train.models.config import UniCureConfig
from unicure_rt.train.models.unicure import UniCure

# Published token ids (section 2 of the reference).
PUBLISHED_PAD, PUBLISHED_CHROM_CLOSE, PUBLISHED_CLS = 0, 2, 3
PUBLISHED_GENE_OFFSET = 13_466
PUBLISHED_CHROM_OFFSET = 143_574
PUBLISHED_VOCAB_ROWS = 145_469
PUBLISHED_N_HEADS = 20  # for d_model 1280; not recoverable from tensor shapes

# The reference renames these input symbols before looking them up (input -> lookup symbol):
# the renames listed in section 2 of the reference document (which lists them as examples).
REFERENCE_RENAMES: dict[str, str] = {
    "AARS": "AARS1",
    "EPRS": "EPRS1",
    "KIF1BP": "KIFBP",
    "TSTA3": "GFUS",
    "WRB": "GET1",
    "FAM57A": "TLCD3A",
    "HIST2H2BE": "H2BC21",
    "HIST1H2BK": "H2BC12",
    "H2AFV": "H2AZ2",
    "KIAA0355": "GARRE1",
    "FAM155A": "NALF1",
    "TMEM159": "LDAF1",
    "BLTP2": "KIAA0100",
    "SKIC8": "WDR61",
    "H2AC25": "H2AW",
    "RIGI": "DDX58",
    "BMAL2": "ARNTL2",
    "MYL11": "MYLPF",
}

SPECIES_CHROM_COLUMNS = ("species", "chromosome", "start", "gene_symbol")

# Published key layout.
UCE = "uce_lora.module."
LAYERS = UCE + "transformer_encoder.layers."
TOKEN_TABLE = UCE + "pe_embedding.weight"
POSITIONS = UCE + "pos_encoder.pe"
IGNORED_PREFIXES = (UCE + "binary_decoder.", UCE + "gene_embedding_layer.")
_WB = ("weight", "bias")
_ATTN = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
_LORA = tuple(f"{p}_{io}" for p in "qkvo" for io in ("in", "out"))
_LAYER_REST = tuple(f"{m}.{p}" for m in ("linear1", "linear2", "norm1", "norm2") for p in _WB)
_FLEXPERT = tuple(
    f"{m}.{p}"
    for m in (
        "query_map",
        "key_map",
        "value_map",
        "fusion_decoder.0",
        "fusion_decoder.3",
        "decoder.0",
        "decoder.3",
    )
    for p in _WB
)
_HEAD = tuple(f"decoder.{i}.{j}.{p}" for i in range(3) for j in range(2) for p in _WB) + tuple(
    f"decoder.3.{p}" for p in _WB
)
_LAYER_INDEX = re.compile(re.escape(LAYERS) + r"(\d+)\.")
# Fields of UniCureConfig fixed by the checkpoint's tensors.
SHAPE_FIELDS = (
    "vocab_size",
    "token_dim",
    "d_model",
    "d_ff",
    "n_layers",
    "head_hidden",
    "cell_dim",
    "pad_length",
    "lora_layers",
    "lora_rank",
    "window",
    "stride",
    "attn_dim",
    "decoder_hidden",
    "n_genes",
    "adaptor_hidden",
)


def _listing(keys: Iterable[str], limit: int = 10) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown} ... ({len(keys)} in all)"


# ----------------------------------------------------------------------------- UCE files


def read_species_chrom(path: Path | str) -> pd.DataFrame:
    """UCE's `species_chrom.csv`: one row per gene and species, with its chromosome and start.

    Returns all rows (all species: chromosome codes are computed over the whole file) with
    `species`, `chromosome` as strings, `start` as int64 and `gene_symbol` upper-cased; other
    columns are kept as they are.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"species_chrom file '{path}' does not exist. Pass UCE's species_chrom.csv."
        )
    try:
        frame = pd.read_csv(
            path, dtype={"species": str, "chromosome": str, "gene_symbol": str}, low_memory=False
        )
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise UserError(
            f"Cannot read '{path}' as a CSV file ({exc}). Pass UCE's species_chrom.csv."
        ) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in SPECIES_CHROM_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(
            f"'{path}' lacks the column(s) {', '.join(missing)} (it has: "
            f"{_listing(map(str, frame.columns))}). UCE's species_chrom.csv has the columns "
            f"{', '.join(SPECIES_CHROM_COLUMNS)}; pass that file, unfiltered."
        )
    start = pd.to_numeric(frame["start"], errors="coerce")
    bad = frame.index[start.isna()]
    if len(bad):
        raise UserError(
            f"'{path}' has {len(bad)} row(s) whose 'start' is not a number (first data rows: "
            f"{_listing((str(i + 2) for i in bad), 5)}). Fix or restore the file."
        )
    frame["start"] = start.astype(np.int64)
    frame["gene_symbol"] = frame["gene_symbol"].str.strip().str.upper()
    return frame


def read_protein_gene_list(path: Path | str) -> list[str]:
    """Gene symbols of the protein-embedding table, in gene-index order, upper-cased.

    Accepts the ESM2 embedding file (a `torch.save`d dict keyed by gene symbol; loaded with
    `weights_only=True`, never unpickling arbitrary objects; its key order is the gene index),
    a JSON list of symbols, or a text file with one symbol per line (blank lines and lines
    starting with `#` are skipped).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Protein-embedding gene list '{path}' does not exist.")
    with open(path, "rb") as handle:
        head = handle.read(2)
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":
        try:
            data = torch.load(path, weights_only=True, map_location="cpu", mmap=False)
        except Exception as exc:  # torch raises several types for unsafe or damaged files
            raise UserError(
                f"Cannot load '{path}' as a torch file with weights_only=True ({exc}). It must "
                "hold a dict keyed by gene symbol (tensors as values) or a list of symbols; "
                "files with other Python objects are refused rather than unpickled."
            ) from None
        if isinstance(data, Mapping):
            symbols = list(data.keys())
        elif isinstance(data, list | tuple):
            symbols = list(data)
        else:
            raise UserError(
                f"'{path}' holds a {type(data).__name__}, not a dict keyed by gene symbol. Pass "
                "UCE's protein-embedding file for the species (symbol -> ESM2 embedding)."
            )
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserError(
                f"'{path}' is neither a torch file nor UTF-8 text. Pass the protein-embedding "
                "dict (.pt) or a text file with one gene symbol per line."
            ) from None
        if text.lstrip().startswith("["):
            try:
                symbols = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UserError(f"'{path}' looks like JSON but does not parse ({exc}).") from None
            if not isinstance(symbols, list):
                raise UserError(f"'{path}' must hold a JSON list of gene symbols.")
        else:
            lines = (line.strip() for line in text.splitlines())
            symbols = [line for line in lines if line and not line.startswith("#")]
    bad = [repr(s) for s in symbols if not isinstance(s, str) or not s.strip()]
    if bad:
        raise UserError(
            f"'{path}' has gene symbols that are not non-empty strings: {_listing(bad, 5)}."
        )
    if not symbols:
        raise UserError(f"'{path}' lists no gene symbols.")
    return [s.strip().upper() for s in symbols]


def published_vocabulary(
    species_chrom: pd.DataFrame | Path | str,
    protein_genes: list[str] | Path | str,
    species: str = "human",
) -> tuple[dict[str, Any], np.ndarray]:
    """Our compact vocabulary and, for each of its tokens, the published token id.

    `species_chrom` must hold every row of UCE's file (all species): the chromosome code of a
    chromosome is the pandas categorical code of `"<species>_<chromosome>"` over all rows.
    A vocabulary gene is a protein-list symbol that some input symbol is looked up as
    (`REFERENCE_RENAMES.get(s, s)`), with a locus in `species_chrom` for `species`, found under
    the symbol itself or under an input symbol renamed to it (the exact symbol wins; then the
    first row). Rename sources (e.g. `RIGI`) are never looked up by the reference, so they are
    not vocabulary genes even when the protein list has them; `aliases` maps each rename whose
    target is in the vocabulary. For duplicated symbols in the protein list the first index is
    used.

    Returns `({"tokens", "gene_loci", "aliases"}, published_ids int64[len(tokens)])`.
    """
    frame = (
        species_chrom
        if isinstance(species_chrom, pd.DataFrame)
        else read_species_chrom(species_chrom)
    )
    genes = (
        protein_genes if isinstance(protein_genes, list) else read_protein_gene_list(protein_genes)
    )
    missing = [c for c in SPECIES_CHROM_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"The species_chrom table lacks the column(s) {', '.join(missing)}.")
    valid = frame["species"].notna() & frame["chromosome"].notna()
    labels = frame["species"].astype(str) + "_" + frame["chromosome"].astype(str)
    codes = pd.Categorical(labels.where(valid, None)).codes
    rows = frame.assign(_code=codes)
    rows = rows[(rows["species"] == species) & (rows["_code"] >= 0) & rows["gene_symbol"].notna()]
    if rows.empty:
        known = sorted(frame["species"].dropna().astype(str).unique())
        raise UserError(
            f"species_chrom has no rows for species '{species}' (it has: {_listing(known)}). "
            "Pass the species name exactly as the file spells it."
        )
    gene_index: dict[str, int] = {}
    for i, symbol in enumerate(genes):
        gene_index.setdefault(symbol.upper(), i)

    # symbol -> (is exact match, row order, chromosome, start, code); exact beats renamed.
    loci: dict[str, tuple[bool, int, str, int, int]] = {}
    for order, (symbol, chrom, start, code) in enumerate(
        zip(rows["gene_symbol"], rows["chromosome"], rows["start"], rows["_code"], strict=True)
    ):
        target = REFERENCE_RENAMES.get(symbol, symbol)
        if target not in gene_index or target in REFERENCE_RENAMES:
            continue
        candidate = (symbol == target, -order, str(chrom), int(start), int(code))
        if target not in loci or candidate[:2] > loci[target][:2]:
            loci[target] = candidate
    if not loci:
        raise UserError(
            f"No gene of species '{species}' in species_chrom is in the protein-embedding gene "
            "list, so the vocabulary would be empty. Check that both files belong to the same "
            "species and UCE release."
        )
    vocab_genes = sorted(loci, key=gene_index.__getitem__)
    chrom_codes = sorted({loci[g][4]: loci[g][2] for g in vocab_genes}.items())
    tokens = [PAD, CLS, CHROM_CLOSE]
    ids = [PUBLISHED_PAD, PUBLISHED_CLS, PUBLISHED_CHROM_CLOSE]
    for code, chrom in chrom_codes:
        tokens.append(CHROM_PREFIX + chrom)
        ids.append(PUBLISHED_CHROM_OFFSET + code)
    for gene in vocab_genes:
        tokens.append(GENE_PREFIX + gene)
        ids.append(PUBLISHED_GENE_OFFSET + gene_index[gene])
    vocabulary = {
        "tokens": tokens,
        "gene_loci": {g: [loci[g][2], loci[g][3]] for g in vocab_genes},
        "aliases": {s: t for s, t in REFERENCE_RENAMES.items() if t in loci},
    }
    return vocabulary, np.asarray(ids, dtype=np.int64)


# ----------------------------------------------------------------------------- checkpoint


def load_published_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Read a published `.pth` with `weights_only=True` (memory-mapped where the format allows)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"Checkpoint '{path}' does not exist. Pass the published UniCure .pth file."
        )
    try:
        try:
            data = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            data = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # unpickling errors, damaged archives, foreign files
        raise UserError(
            f"Cannot load '{path}' as a PyTorch state dict with weights_only=True ({exc}). "
            "Pass the published UniCure .pth file; checkpoints holding arbitrary Python objects "
            "are refused rather than unpickled."
        ) from None
    return _unwrap(data, f"Checkpoint '{path}'")


def _unwrap(data: Any, source: str) -> dict[str, torch.Tensor]:
    for wrapper in ("state_dict", "model_state_dict", "model"):
        wrapped = isinstance(data, Mapping) and isinstance(data.get(wrapper), Mapping)
        if wrapped and not any(isinstance(v, torch.Tensor) for v in data.values()):
            data = data[wrapper]
            break
    if not isinstance(data, Mapping):
        raise UserError(f"{source} holds a {type(data).__name__}, not a state dict of tensors.")
    data = dict(data)
    if data and all(isinstance(k, str) and k.startswith("module.") for k in data):
        data = {k[len("module.") :]: v for k, v in data.items()}
    not_tensors = [str(k) for k, v in data.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise UserError(
            f"{source} has entries that are not tensors: {_listing(not_tensors)}. Pass the "
            "model's state dict."
        )
    if not any(k.startswith(UCE) for k in data):
        hint = (
            " It looks like a native unicure-rt checkpoint: load it with `load_native`."
            if any(k.startswith("backbone.") for k in data)
            else ""
        )
        raise UserError(
            f"{source} is not in the published UniCure layout: none of its keys "
            f"({_listing(sorted(data))}) starts with '{UCE}'.{hint}"
        )
    return data


def _layer_structure(state: Mapping[str, torch.Tensor]) -> tuple[int, tuple[int, ...]]:
    indices, lora = set(), set()
    for key in state:
        match = _LAYER_INDEX.match(key)
        if match:
            index = int(match.group(1))
            indices.add(index)
            rest = key[match.end() :]
            if rest.startswith(("self_attn.lora_module.", "self_attn.module.")):
                lora.add(index)
    if not indices:
        raise UserError(
            f"The checkpoint has no transformer layers ('{LAYERS}N.*' keys); it is not a "
            "published UniCure checkpoint."
        )
    return max(indices) + 1, tuple(sorted(lora))


def _expected_keys(n_layers: int, lora_layers: Iterable[int]) -> list[str]:
    lora_layers = set(lora_layers)
    keys = [TOKEN_TABLE, POSITIONS]
    keys += [f"{UCE}encoder.{i}.{p}" for i in (0, 2) for p in _WB]
    for n in range(n_layers):
        prefix = f"{LAYERS}{n}."
        if n in lora_layers:
            keys += [f"{prefix}self_attn.module.{k}" for k in _ATTN]
            keys += [f"{prefix}self_attn.lora_module.{k}.weight" for k in _LORA]
        else:
            keys += [f"{prefix}self_attn.{k}" for k in _ATTN]
        keys += [prefix + k for k in _LAYER_REST]
    keys += [UCE + k for k in _HEAD]
    keys += list(_FLEXPERT)
    return keys


def _shape(state: Mapping[str, torch.Tensor], key: str, ndim: int) -> tuple[int, ...]:
    shape = tuple(state[key].shape)
    if len(shape) != ndim:
        raise UserError(
            f"Checkpoint tensor {key} has shape {shape}; a {ndim}-d tensor was expected. The "
            "file is not a published UniCure checkpoint or it is damaged."
        )
    return shape


def infer_config(
    state: Mapping[str, torch.Tensor],
    vocab_size: int,
    *,
    config: UniCureConfig | Mapping[str, Any] | None = None,
    n_heads: int | None = None,
) -> UniCureConfig:
    """The model configuration of a published-layout state dict (all keys present).

    Sizes come from the tensor shapes. `n_heads` cannot: it is `n_heads` if given, else the
    template `config`'s, else 20 for d_model 1280 (the published model); otherwise it must be
    given. A `UniCureConfig` template supplies the fields that shapes do not fix (n_heads,
    sample_size, weighting, padding, dropout, drug sizes); a mapping overrides those fields and
    may restate shape fields, which must then agree with the checkpoint.
    """
    n_layers, lora_layers = _layer_structure(state)
    d_model, token_dim = _shape(state, f"{UCE}encoder.0.weight", 2)
    pad_length = _shape(state, POSITIONS, 3)[0]
    attn_dim, window = _shape(state, "query_map.weight", 2)
    cell_dim = _shape(state, f"{UCE}decoder.3.weight", 2)[0]
    fusion_dim = _shape(state, "fusion_decoder.0.weight", 2)[1]
    inferred: dict[str, Any] = {
        "vocab_size": int(vocab_size),
        "token_dim": token_dim,
        "d_model": d_model,
        "d_ff": _shape(state, f"{LAYERS}0.linear1.weight", 2)[0],
        "n_layers": n_layers,
        "head_hidden": _shape(state, f"{UCE}decoder.0.0.weight", 2)[0],
        "cell_dim": cell_dim,
        "pad_length": pad_length,
        "lora_layers": lora_layers,
        "attn_dim": attn_dim,
        "window": window,
        "decoder_hidden": _shape(state, "decoder.0.weight", 2)[0],
        "n_genes": _shape(state, "decoder.3.weight", 2)[0],
        "adaptor_hidden": None,
    }
    if lora_layers:
        key = f"{LAYERS}{lora_layers[0]}.self_attn.lora_module.q_in.weight"
        inferred["lora_rank"] = _shape(state, key, 2)[0]
    n_windows, leftover = divmod(fusion_dim, attn_dim) if attn_dim else (0, 1)
    if leftover or n_windows < 1:
        raise UserError(
            f"fusion_decoder.0.weight has {fusion_dim} inputs, not a multiple of the attention "
            f"width {attn_dim} (query_map.weight): the FlexPert layout is not the published one."
        )
    if n_windows > 1:
        stride, leftover = divmod(cell_dim - window, n_windows - 1)
        if leftover or stride < 1:
            raise UserError(
                f"A cell embedding of {cell_dim} values cannot be cut into {n_windows} windows of "
                f"{window} (fusion_decoder.0.weight / query_map.weight): unknown FlexPert layout."
            )
        inferred["stride"] = stride

    if isinstance(config, UniCureConfig):
        values = config.to_dict()
        values.update(inferred)
    else:
        overrides = dict(config or {})
        known = {f.name for f in fields(UniCureConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UserError(f"Unknown UniCure config field(s): {', '.join(unknown)}.")
        clashes = [
            f"{k}={overrides[k]!r} (checkpoint: {inferred[k]!r})"
            for k in SHAPE_FIELDS
            if k in overrides and k in inferred and _normal(overrides[k]) != _normal(inferred[k])
        ]
        if clashes:
            raise UserError(
                f"The given config disagrees with the checkpoint's shapes: {'; '.join(clashes)}. "
                "Leave those fields out: they are read from the checkpoint."
            )
        values = {**overrides, **inferred}
        if "n_heads" not in values and n_heads is None:
            if d_model != 1280:
                raise UserError(
                    f"The number of attention heads cannot be read from a checkpoint; d_model is "
                    f"{d_model}, not the published 1280 (20 heads). Pass it: `unicure-rt export "
                    "--n-heads N` (n_heads in Python)."
                )
            values["n_heads"] = PUBLISHED_N_HEADS
    if n_heads is not None:
        values["n_heads"] = int(n_heads)
    try:
        return UniCureConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"The checkpoint's sizes do not form a valid UniCure config: {exc}."
        ) from None


def _normal(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def _native_names(model: UniCure) -> dict[str, str]:
    """Prefixes of the native modules the published tensors load into (found, not hard-coded)."""
    backbone = model.backbone

    def one(kind: str, names: list[str]) -> str:
        if len(names) != 1:
            raise RuntimeError(f"UniCure backbone: expected one {kind}, found {names}")
        return "backbone." + names[0]

    embedding = one(
        "token embedding", [n for n, m in backbone.named_modules() if isinstance(m, nn.Embedding)]
    )
    return {
        "table": embedding + ".weight",
        "tokens": embedding.rsplit(".", 1)[0] + ".encoder.",
        "pe": one(
            "'pe' buffer", [n for n, _ in backbone.named_buffers() if n.split(".")[-1] == "pe"]
        ),
        "layers": one(
            "transformer",
            [n for n, m in backbone.named_modules() if isinstance(m, nn.TransformerEncoder)],
        )
        + ".layers.",
        "head": one(
            "cell head", [n for n, _ in backbone.named_modules() if n.split(".")[-1] == "head"]
        )
        + ".",
    }


@torch.no_grad()
def _merged_attention(
    state: Mapping[str, torch.Tensor], prefix: str, d_model: int
) -> dict[str, torch.Tensor]:
    """A LoRA layer's attention weights merged as the reference's `lora_pytorch` merges them.

    quirk: `in_proj_weight[q] += (q_out @ q_in).T` (likewise k, v), but
    `out_proj.weight += o_out @ o_in` (no transpose); no bias change, no scale factor.
    """

    def lora(name: str) -> torch.Tensor:
        out = state[f"{prefix}lora_module.{name}_out.weight"].double()
        return out @ state[f"{prefix}lora_module.{name}_in.weight"].double()

    base = {k: state[f"{prefix}module.{k}"] for k in _ATTN}
    in_proj = base["in_proj_weight"].double().clone()
    for part, name in enumerate("qkv"):
        in_proj[part * d_model : (part + 1) * d_model] += lora(name).T
    out_proj = base["out_proj.weight"].double() + lora("o")
    return {
        "in_proj_weight": in_proj.float(),
        "in_proj_bias": base["in_proj_bias"],
        "out_proj.weight": out_proj.float(),
        "out_proj.bias": base["out_proj.bias"],
    }


def convert_published(
    checkpoint: Path | str | Mapping[str, torch.Tensor],
    vocabulary: Mapping[str, Any],
    published_ids: np.ndarray | list[int],
    *,
    config: UniCureConfig | Mapping[str, Any] | None = None,
    n_heads: int | None = None,
) -> UniCure:
    """A published-layout checkpoint as a native `UniCure` model (eval mode) for `vocabulary`.

    `checkpoint` is a `.pth` path (loaded with `weights_only=True`) or a state dict.
    `published_ids[i]` is the published token id of our token `i` (see `published_vocabulary`);
    the model's token table holds those rows only. Sizes are inferred from the tensor shapes
    (`infer_config`); `padding` stays `"reference"` unless a template config says otherwise.
    `binary_decoder.*` and `gene_embedding_layer.*` are not used at inference and are dropped.
    Missing, unexpected or wrongly shaped tensors raise `UserError` naming them.
    """
    source = (
        f"Checkpoint '{checkpoint}'" if isinstance(checkpoint, str | Path) else "The state dict"
    )
    state = (
        load_published_state_dict(checkpoint)
        if isinstance(checkpoint, str | Path)
        else _unwrap(checkpoint, source)
    )
    ids = np.asarray(published_ids)
    tokens = list(vocabulary.get("tokens", ())) if isinstance(vocabulary, Mapping) else []
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or len(ids) == 0:
        raise UserError("published_ids must be a non-empty 1-d array of integer token ids.")
    if len(tokens) != len(ids):
        raise UserError(
            f"The vocabulary has {len(tokens)} tokens but published_ids has {len(ids)} ids; build "
            "both with `published_vocabulary` from the same files."
        )
    specials = {PAD: PUBLISHED_PAD, CLS: PUBLISHED_CLS, CHROM_CLOSE: PUBLISHED_CHROM_CLOSE}
    wrong = [
        f"{t} -> {ids[tokens.index(t)]}"
        for t, i in specials.items()
        if t in tokens and ids[tokens.index(t)] != i
    ]
    if wrong or any(t not in tokens for t in specials):
        raise UserError(
            f"The vocabulary's special tokens do not map to the published ids (pad 0, CLS 3, "
            f"chromosome close 2): {', '.join(wrong) or 'some are missing'}."
        )

    n_layers, lora_layers = _layer_structure(state)
    expected = _expected_keys(n_layers, lora_layers)
    present = {k for k in state if not k.startswith(IGNORED_PREFIXES)}
    missing = [k for k in expected if k not in present]
    unexpected = sorted(present - set(expected))
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_listing(unexpected)}")
        raise UserError(
            f"{source} does not have the published UniCure key layout ({'; '.join(problems)}). "
            f"It was read as {n_layers} transformer layers with LoRA on layers "
            f"{list(lora_layers) or 'none'}. Pass the unmodified published .pth file (a state dict "
            "saved from the reference model); checkpoints of other models cannot be converted."
        )
    table_rows = _shape(state, TOKEN_TABLE, 2)[0]
    if ids.min() < 0 or ids.max() >= table_rows:
        raise UserError(
            f"The vocabulary uses published token ids up to {int(ids.max())}, but the checkpoint's "
            f"token table has {table_rows} rows. The species_chrom.csv or protein gene list does "
            "not belong to this checkpoint."
        )
    cfg = infer_config(state, len(ids), config=config, n_heads=n_heads)
    n_chrom = sum(t.startswith(CHROM_PREFIX) for t in tokens)
    longest = 1 + cfg.sample_size + 2 * min(n_chrom, cfg.sample_size)
    if longest > cfg.pad_length:
        warnings.warn(
            f"Sentences of {cfg.sample_size} genes over {n_chrom} chromosomes can reach {longest} "
            f"tokens, more than the checkpoint's pad length {cfg.pad_length}; such sentences are "
            "refused at tokenisation. Lower sample_size.",
            stacklevel=2,
        )

    with torch.device("meta"):
        model = UniCure(cfg)
    names = _native_names(model)
    native: dict[str, tuple[str, torch.Tensor]] = {}  # native key -> (published key, tensor)
    table = state[TOKEN_TABLE]
    native[names["table"]] = (TOKEN_TABLE, table[torch.as_tensor(ids, dtype=torch.long)])
    native[names["pe"]] = (POSITIONS, state[POSITIONS])
    for i in (0, 2):
        for p in _WB:
            native[f"{names['tokens']}{i}.{p}"] = (
                f"{UCE}encoder.{i}.{p}",
                state[f"{UCE}encoder.{i}.{p}"],
            )
    for key in _HEAD:
        native[names["head"] + key] = (UCE + key, state[UCE + key])
    for key in _FLEXPERT:
        native["flexpert." + key] = (key, state[key])
    lora_shapes = {"in": (cfg.lora_rank, cfg.d_model), "out": (cfg.d_model, cfg.lora_rank)}
    bad_shapes = []
    for n in range(n_layers):
        prefix, target = f"{LAYERS}{n}.", f"{names['layers']}{n}."
        for key in _LAYER_REST:
            native[target + key] = (prefix + key, state[prefix + key])
        if n in lora_layers:
            for name in _LORA:
                key = f"{prefix}self_attn.lora_module.{name}.weight"
                want = lora_shapes[name.split("_")[1]]
                if tuple(state[key].shape) != want:
                    bad_shapes.append(f"{key} {tuple(state[key].shape)} (expected {want})")
            for key in _ATTN:
                native[f"{target}self_attn.{key}"] = (
                    f"{prefix}self_attn.module.{key}",
                    state[f"{prefix}self_attn.module.{key}"],
                )
        else:
            for key in _ATTN:
                native[f"{target}self_attn.{key}"] = (
                    f"{prefix}self_attn.{key}",
                    state[f"{prefix}self_attn.{key}"],
                )

    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wanted[names["pe"]] = (cfg.pad_length, 1, cfg.d_model)
    wanted[names["table"]] = (len(ids), cfg.token_dim)
    for key, (published, tensor) in native.items():
        got = tuple(tensor.shape)
        if got != wanted[key]:
            want = wanted[key] if published != TOKEN_TABLE else ("rows", cfg.token_dim)
            bad_shapes.append(f"{published} {tuple(state[published].shape)} (expected {want})")
    if bad_shapes:
        raise UserError(
            f"{source} has tensors of the wrong shape for a UniCure model of its inferred size "
            f"(d_model {cfg.d_model}, {cfg.n_layers} layers, token_dim {cfg.token_dim}): "
            f"{_listing(bad_shapes)}. The checkpoint is damaged or from a different model."
        )

    for n in lora_layers:
        merged = _merged_attention(state, f"{LAYERS}{n}.self_attn.", cfg.d_model)
        for key, tensor in merged.items():
            native[f"{names['layers']}{n}.self_attn.{key}"] = ("", tensor)
    weights = {k: t.detach().to(torch.float32, copy=True) for k, (_, t) in native.items()}
    positions = weights.pop(names["pe"])
    persistent = model.state_dict()
    if names["pe"] in persistent:
        weights[names["pe"]] = positions
    model.load_state_dict(weights, strict=True, assign=True)
    if names["pe"] not in persistent:  # a non-persistent buffer: set it directly
        owner, _, attr = names["pe"].rpartition(".")
        model.get_submodule(owner).register_buffer(attr, positions, persistent=False)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"convert_published left tensors uninitialised: {leftover}")
    return model.eval()


def convert_checkpoint(
    checkpoint: Path | str | Mapping[str, torch.Tensor],
    species_chrom: Path | str | pd.DataFrame,
    protein_genes: Path | str | list[str],
    *,
    species: str = "human",
    config: UniCureConfig | Mapping[str, Any] | None = None,
    n_heads: int | None = None,
) -> tuple[UniCure, dict[str, Any]]:
    """`published_vocabulary` + `convert_published` in one call: (model, vocabulary)."""
    vocabulary, ids = published_vocabulary(species_chrom, protein_genes, species)
    return convert_published(
        checkpoint, vocabulary, ids, config=config, n_heads=n_heads
    ), vocabulary
