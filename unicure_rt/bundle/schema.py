"""The shape of a bundle manifest, checked before anything reads it.

`manifest_problems(manifest)` reads the parsed `manifest.json` and returns one line per
violation (`where: what`), empty when the manifest has every key the clinic side uses, with
the types it uses them as: `load_bundle` refuses a manifest with problems in one message
instead of failing later with a KeyError or TypeError deep inside a run. Hand-written rather
than a JSON Schema so the clinic side needs no extra package; the rules are the schema:

- `format_version` int; `files` {relative path: 64 lower-case hex digits};
- `graphs.backbone` and `graphs.flexpert` (other graphs may follow): {`path`: str,
  `inputs`/`outputs`: non-empty lists of {`name`: str, `dtype`: one of `DTYPES`, `shape`:
  non-empty list of positive int or non-empty str (a dynamic axis)}} with unique names;
- `genes`: non-empty list of unique non-empty str;
- `tokenizer`: `tokens` (unique str, holding the special tokens), `gene_loci` {gene:
  [chromosome, start]} for every `gene:` token, whose chromosome has a `chrom:` token,
  `pad_length` and `sample_size` positive int, `padding` and `weighting` str, optional
  `aliases` {str: str};
- `drug_encoder`: `id` and `kind` non-empty str, `dim` positive int, optional `graph` str,
  `radius`/`n_bits` positive int, `transform` str;
- `model`: `n_layers`, `d_model`, `n_heads`, `cell_dim` positive int, `padding` str;
- optional `library` (str or null) and `precision` (str or null);
- optional `scoring`: `effect` one of `EFFECTS`, `rank_by` one of `RANK_BY`
  (the bundle's default of `score --effect` / `--rank-by`), optional `evidence` str.
"""

from __future__ import annotations

import re
from typing import Any

from unicure_rt.defaults import EFFECTS, RANK_BY

DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")
REQUIRED_GRAPHS = ("backbone", "flexpert")
SHA256 = re.compile(r"[0-9a-f]{64}")
# `graphs.flexpert`'s cell-row axis where the graph broadcasts one cell over its drug batch
# (`runtime.sessions.cell_feed`); graphs exported before it existed name it `batch`
CELL_ROWS = "cells"
PAD, CLS, CHROM_CLOSE = "<pad>", "<cls>", "<chrom_close>"  # the special tokens
CHROM_PREFIX, GENE_PREFIX = "chrom:", "gene:"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: Any) -> bool:
    return _is_int(value) and value > 0


def _text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


class _Problems(list):
    """Collects `where: what` lines."""

    def need(self, ok: bool, where: str, what: str) -> bool:
        if not ok:
            self.append(f"{where}: {what}")
        return ok

    def object(self, parent: dict, key: str, where: str, *, optional: bool = False) -> dict | None:
        """`parent[key]` if it is a JSON object; records a problem if it is missing or not."""
        if key not in parent:
            if not optional:
                self.append(f"{where}: missing")
            return None
        value = parent[key]
        return value if self.need(isinstance(value, dict), where, "must be an object") else None

    def fields(self, entry: dict, where: str, rules: dict[str, tuple[Any, str]]) -> None:
        """Required fields of `entry`, each checked by `(predicate, description)`."""
        for key, (check, description) in rules.items():
            if self.need(key in entry, f"{where}.{key}", "missing"):
                self.need(check(entry[key]), f"{where}.{key}", f"must be {description}")

    def optional(self, entry: dict, where: str, rules: dict[str, tuple[Any, str]]) -> None:
        for key, (check, description) in rules.items():
            if key in entry:
                self.need(check(entry[key]), f"{where}.{key}", f"must be {description}")


def _tensors(problems: _Problems, specs: Any, where: str) -> None:
    if not problems.need(
        isinstance(specs, list) and len(specs) > 0, where, "must be a non-empty list"
    ):
        return
    names = []
    for i, spec in enumerate(specs):
        at = f"{where}[{i}]"
        if not problems.need(isinstance(spec, dict), at, "must be an object"):
            continue
        problems.fields(
            spec,
            at,
            {
                "name": (_text, "a non-empty string"),
                "dtype": (lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}"),
                "shape": (
                    lambda v: (
                        isinstance(v, list)
                        and len(v) > 0
                        and all(_positive_int(d) or _text(d) for d in v)
                    ),
                    "a non-empty list of positive integers and axis names",
                ),
            },
        )
        names.append(spec.get("name"))
    problems.need(len(set(map(str, names))) == len(names), where, "repeats a tensor name")


def _graphs(problems: _Problems, manifest: dict) -> None:
    graphs = problems.object(manifest, "graphs", "graphs")
    if graphs is None:
        return
    for name in REQUIRED_GRAPHS:
        problems.need(name in graphs, f"graphs.{name}", "missing")
    for name, entry in graphs.items():
        where = f"graphs.{name}"
        if not problems.need(isinstance(entry, dict), where, "must be an object"):
            continue
        problems.fields(entry, where, {"path": (_text, "a non-empty string")})
        for side in ("inputs", "outputs"):
            if problems.need(side in entry, f"{where}.{side}", "missing"):
                _tensors(problems, entry[side], f"{where}.{side}")


def _genes(problems: _Problems, manifest: dict) -> None:
    if not problems.need("genes" in manifest, "genes", "missing"):
        return
    genes = manifest["genes"]
    if problems.need(
        isinstance(genes, list) and len(genes) > 0 and all(_text(g) for g in genes),
        "genes",
        "must be a non-empty list of gene symbols",
    ):
        problems.need(len(set(genes)) == len(genes), "genes", "repeats a gene symbol")


def _tokenizer(problems: _Problems, manifest: dict) -> None:
    spec = problems.object(manifest, "tokenizer", "tokenizer")
    if spec is None:
        return
    problems.fields(
        spec,
        "tokenizer",
        {
            "tokens": (
                lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v),
                "a list of strings",
            ),
            "gene_loci": (lambda v: isinstance(v, dict), "an object"),
            "pad_length": (_positive_int, "a positive integer"),
            "sample_size": (_positive_int, "a positive integer"),
            "padding": (_text, "a non-empty string"),
            "weighting": (_text, "a non-empty string"),
        },
    )
    problems.optional(
        spec,
        "tokenizer",
        {
            "aliases": (
                lambda v: (
                    isinstance(v, dict)
                    and all(isinstance(k, str) and isinstance(a, str) for k, a in v.items())
                ),
                "an object of gene symbols",
            )
        },
    )
    tokens, loci = spec.get("tokens"), spec.get("gene_loci")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        return
    problems.need(len(set(tokens)) == len(tokens), "tokenizer.tokens", "repeats a token")
    absent = [t for t in (PAD, CLS, CHROM_CLOSE) if t not in tokens]
    problems.need(not absent, "tokenizer.tokens", f"lacks {', '.join(absent)}")
    if not isinstance(loci, dict):
        return
    known = set(tokens)
    for token in tokens:
        if not token.startswith(GENE_PREFIX):
            continue
        gene = token[len(GENE_PREFIX) :]
        locus = loci.get(gene)
        where = f"tokenizer.gene_loci.{gene}"
        if not problems.need(
            isinstance(locus, list) and len(locus) == 2 and _is_int(locus[1]),
            where,
            "must be [chromosome, start] for every gene token",
        ):
            break  # one line is enough: every other gene is likely the same
        if not problems.need(
            f"{CHROM_PREFIX}{locus[0]}" in known, where, f"chromosome {locus[0]!r} has no token"
        ):
            break


def _drug_encoder(problems: _Problems, manifest: dict) -> None:
    spec = problems.object(manifest, "drug_encoder", "drug_encoder")
    if spec is None:
        return
    problems.fields(
        spec,
        "drug_encoder",
        {
            "id": (_text, "a non-empty string"),
            "kind": (_text, "a non-empty string"),
            "dim": (_positive_int, "a positive integer"),
        },
    )
    problems.optional(
        spec,
        "drug_encoder",
        {
            "graph": (_text, "a non-empty string"),
            "radius": (_positive_int, "a positive integer"),
            "n_bits": (_positive_int, "a positive integer"),
            "transform": (_text, "a non-empty string"),
        },
    )


def manifest_problems(manifest: Any) -> list[str]:
    """Every way `manifest` (parsed JSON) breaks the rules in this module's docstring."""
    problems = _Problems()
    if not problems.need(isinstance(manifest, dict), "manifest", "must be a JSON object"):
        return problems
    problems.fields(
        manifest,
        "manifest",
        {
            "format_version": (_is_int, "an integer"),
            "files": (
                lambda v: isinstance(v, dict)
                and all(isinstance(k, str) and isinstance(h, str) and SHA256.fullmatch(h)
                        for k, h in v.items()),
                "an object of file paths and their sha256 (64 hex digits)",
            ),
        },
    )  # fmt: skip
    _graphs(problems, manifest)
    _genes(problems, manifest)
    _tokenizer(problems, manifest)
    _drug_encoder(problems, manifest)
    model = problems.object(manifest, "model", "model")
    if model is not None:
        rules = {k: (_positive_int, "a positive integer") for k in ("n_layers", "d_model")}
        rules |= {k: (_positive_int, "a positive integer") for k in ("n_heads", "cell_dim")}
        problems.fields(model, "model", {**rules, "padding": (_text, "a non-empty string")})
    problems.optional(
        manifest,
        "manifest",
        {
            "library": (lambda v: v is None or _text(v), "a file name or null"),
            "precision": (lambda v: v is None or _text(v), "a string or null"),
        },
    )
    scoring = problems.object(manifest, "scoring", "scoring", optional=True)
    if scoring is not None:
        problems.fields(
            scoring,
            "scoring",
            {
                "effect": (lambda v: v in EFFECTS, f"one of {EFFECTS}"),
                "rank_by": (lambda v: v in RANK_BY, f"one of {RANK_BY}"),
            },
        )
        problems.optional(scoring, "scoring", {"evidence": (_text, "a string")})
    return problems
