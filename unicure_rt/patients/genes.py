"""Gene identifiers: map the labels of a patient file to canonical upper-case gene symbols.

The canonical symbols are those of `unicure_rt/data/gene_table.tsv.gz` (built by
`scripts/build_gene_table.py`): one row per human gene with an Entrez id, where the 978 L1000
landmark genes carry their L1000 symbol. Labels are resolved by id, not by name, whenever the
label carries an id, so a file written with older or newer symbols still lands on the landmark
symbol. A bare symbol that is no gene's own symbol is looked up among the aliases and previous
symbols the table carries (NCBI Entrez Gene 2022, e.g. today's AARS1 -> landmark AARS); an
alias shared by several genes is ambiguous: it stays unresolved and is reported, never guessed.
Aliases shorter than `MIN_ALIAS_LENGTH`, without a letter, or spelling a missing value (`NA`,
`NAN`, ...) are never used: NCBI lists `S1`, `T`, `ID` or `NAN` as aliases, which would turn
sample ids and empty cells into genes.

Recognised labels (the id type of each label is detected separately):

- `ensembl`: `ENSG00000113552` or `ENSG00000113552.4` (the version is stripped);
- `symbol|entrez`: `GNPDA1|10007` as in TCGA; the symbol may be `?`. The Entrez id is tried
  first, then the symbol;
- `symbol`: anything else, matched case-insensitively.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

GENE_TABLE = Path(__file__).parents[1] / "data" / "gene_table.tsv.gz"
ENSEMBL_RE = re.compile(r"^(ENSG\d{11})(?:\.\d+)?$")
SYMBOL_ENTREZ_RE = re.compile(r"^([^|]*)\|(\d+)$")
N_EXAMPLES = 5
MIN_ALIAS_LENGTH = 3
MISSING_SPELLINGS = {"NA", "NAN", "NONE", "NULL", "N/A"}


@dataclass(frozen=True)
class _Lookup:
    by_symbol: dict[str, str]
    by_entrez: dict[int, str]
    by_ensembl: dict[str, str]
    by_alias: dict[str, str]
    ambiguous: dict[str, list[str]]  # alias -> the genes that share it


def gene_table() -> pd.DataFrame:
    """Read the packaged gene table.

    Returns
    -------
    A frame with columns `symbol` (upper case, unique), `entrez_id`, `ensembl_id`,
    `chromosome` (text: `1`..`22`, `X`, `Y`), `start` (GRCh38) and `aliases` (`|`-separated
    NCBI symbol and aliases other than `symbol`, empty when none).
    """
    table = pd.read_csv(GENE_TABLE, sep="\t", dtype={"chromosome": str, "aliases": str})
    return table.fillna({"aliases": ""})


@lru_cache(maxsize=1)
def _lookup() -> _Lookup:
    table = gene_table()
    symbols = table["symbol"].tolist()
    owners: dict[str, set[str]] = {}
    for symbol, aliases in zip(symbols, table["aliases"], strict=True):
        for alias in filter(None, aliases.split("|")):
            owners.setdefault(alias, set()).add(symbol)
    own = set(symbols)
    owners = {alias: genes for alias, genes in owners.items() if _usable_alias(alias, own)}
    return _Lookup(
        by_symbol=dict(zip(symbols, symbols, strict=True)),
        by_entrez=dict(zip(table["entrez_id"].tolist(), symbols, strict=True)),
        by_ensembl=dict(zip(table["ensembl_id"].tolist(), symbols, strict=True)),
        by_alias={alias: next(iter(g)) for alias, g in owners.items() if len(g) == 1},
        ambiguous={alias: sorted(g) for alias, g in owners.items() if len(g) > 1},
    )


def _usable_alias(alias: str, own: set[str]) -> bool:
    """An alias is looked up unless it is a gene's own symbol or too generic (module doc)."""
    generic = len(alias) < MIN_ALIAS_LENGTH or not any(c.isalpha() for c in alias)
    return alias not in own and not generic and alias not in MISSING_SPELLINGS


def _by_name(name: str, lookup: _Lookup, aliases: bool) -> tuple[str | None, str | None]:
    """(symbol, how) of a bare symbol: its own symbol first, else (with `aliases`) an
    unambiguous alias."""
    if name in lookup.by_symbol:
        return lookup.by_symbol[name], "symbol"
    if not aliases:
        return None, None
    if name in lookup.by_alias:
        return lookup.by_alias[name], "alias"
    return None, "ambiguous alias" if name in lookup.ambiguous else None


def _resolve_one(label: str, lookup: _Lookup, aliases: bool) -> tuple[str, str | None, str | None]:
    """Return (id type, canonical symbol or None, how it matched) of one label; `how` is
    `symbol`, `alias`, `ensembl`, `entrez`, `ambiguous alias` (unresolved) or None."""
    text = label.strip().upper()
    ensembl = ENSEMBL_RE.match(text)
    if ensembl:
        symbol = lookup.by_ensembl.get(ensembl.group(1))
        return "ensembl", symbol, "ensembl" if symbol else None
    pair = SYMBOL_ENTREZ_RE.match(text)
    if pair:
        name, entrez = pair.groups()
        if int(entrez) in lookup.by_entrez:
            return "symbol|entrez", lookup.by_entrez[int(entrez)], "entrez"
        return "symbol|entrez", *_by_name(name, lookup, aliases)
    return "symbol", *_by_name(text, lookup, aliases)


def resolve_gene_ids(
    labels: Sequence[str], *, aliases: bool = True
) -> tuple[list[str | None], dict]:
    """Map gene labels (symbols, Ensembl ids, `SYMBOL|ENTREZ`, or a mix) to canonical symbols.

    Parameters
    ----------
    labels
        Gene labels as they appear in a file (var names, a var column, or a table axis);
        non-text labels are converted with `str`.
    aliases
        Also look bare symbols up among the aliases (False: own symbols and ids only, as when
        deciding which axis of a table holds the genes).

    Returns
    -------
    symbols
        For each label, its canonical upper-case symbol, or None when it does not resolve.
        Several labels may map to the same symbol (the caller decides how to merge them).
    report
        JSON-serialisable: `id_type` (`symbol`, `ensembl`, `symbol|entrez`, `mixed`, or `none`
        when there is no label), `id_type_counts`, `n_labels`, `n_resolved`, `n_unresolved`,
        `unresolved_examples`, `matched_by` (labels resolved by `symbol`, `alias`, `ensembl`
        and `entrez` id), `alias_examples` (label -> symbol) and `ambiguous_aliases` (count
        and examples, label -> the genes sharing it; left unresolved).
    """
    lookup = _lookup()
    labels = [str(label) for label in labels]
    types, symbols, hows = [], [], []
    for label in labels:
        id_type, symbol, how = _resolve_one(label, lookup, aliases)
        types.append(id_type)
        symbols.append(symbol)
        hows.append(how)
    counts = Counter(types)
    matched = Counter(how for how in hows if how and how != "ambiguous alias")
    rows = list(zip(labels, symbols, hows, strict=True))
    aliased = [(label, symbol) for label, symbol, how in rows if how == "alias"]
    ambiguous = [label for label, _symbol, how in rows if how == "ambiguous alias"]
    ambiguous_of = {
        label: lookup.ambiguous[label.strip().upper().split("|")[0]]
        for label in ambiguous[:N_EXAMPLES]
    }
    unresolved = [label for label, symbol in zip(labels, symbols, strict=True) if symbol is None]
    report = {
        "id_type": next(iter(counts)) if len(counts) == 1 else ("mixed" if counts else "none"),
        "id_type_counts": dict(counts),
        "n_labels": len(symbols),
        "n_resolved": len(symbols) - len(unresolved),
        "n_unresolved": len(unresolved),
        "unresolved_examples": unresolved[:N_EXAMPLES],
        "matched_by": {
            key: matched.get(key, 0) for key in ("symbol", "alias", "ensembl", "entrez")
        },
        "alias_examples": dict(aliased[:N_EXAMPLES]),
        "ambiguous_aliases": {"n": len(ambiguous), "examples": ambiguous_of},
    }
    return symbols, report
