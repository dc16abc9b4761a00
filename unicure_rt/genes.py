"""Gene identifiers: map the labels of a patient file to canonical upper-case gene symbols.

The canonical symbols are those of `unicure_rt/data/gene_table.tsv.gz` (built by
`scripts/build_gene_table.py`): one row per human gene with an Entrez id, where the 978 L1000
landmark genes carry their L1000 symbol. Labels are resolved by id, not by name, whenever the
label carries an id, so a file written with older or newer symbols still lands on the landmark
symbol.

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

GENE_TABLE = Path(__file__).parent / "data" / "gene_table.tsv.gz"
ENSEMBL_RE = re.compile(r"^(ENSG\d{11})(?:\.\d+)?$")
SYMBOL_ENTREZ_RE = re.compile(r"^([^|]*)\|(\d+)$")
N_EXAMPLES = 5


@dataclass(frozen=True)
class _Lookup:
    by_symbol: dict[str, str]
    by_entrez: dict[int, str]
    by_ensembl: dict[str, str]


def gene_table() -> pd.DataFrame:
    """Read the packaged gene table.

    Returns
    -------
    A frame with columns `symbol` (upper case, unique), `entrez_id`, `ensembl_id`,
    `chromosome` (text: `1`..`22`, `X`, `Y`) and `start` (GRCh38).
    """
    return pd.read_csv(GENE_TABLE, sep="\t", dtype={"chromosome": str})


@lru_cache(maxsize=1)
def _lookup() -> _Lookup:
    table = gene_table()
    symbols = table["symbol"].tolist()
    return _Lookup(
        by_symbol=dict(zip(symbols, symbols, strict=True)),
        by_entrez=dict(zip(table["entrez_id"].tolist(), symbols, strict=True)),
        by_ensembl=dict(zip(table["ensembl_id"].tolist(), symbols, strict=True)),
    )


def _resolve_one(label: str, lookup: _Lookup) -> tuple[str, str | None]:
    """Return (id type, canonical symbol or None) of one label."""
    text = label.strip().upper()
    ensembl = ENSEMBL_RE.match(text)
    if ensembl:
        return "ensembl", lookup.by_ensembl.get(ensembl.group(1))
    pair = SYMBOL_ENTREZ_RE.match(text)
    if pair:
        symbol, entrez = pair.groups()
        return "symbol|entrez", lookup.by_entrez.get(int(entrez)) or lookup.by_symbol.get(symbol)
    return "symbol", lookup.by_symbol.get(text)


def resolve_gene_ids(labels: Sequence[str]) -> tuple[list[str | None], dict]:
    """Map gene labels (symbols, Ensembl ids, `SYMBOL|ENTREZ`, or a mix) to canonical symbols.

    Parameters
    ----------
    labels
        Gene labels as they appear in a file (var names, a var column, or a table axis);
        non-text labels are converted with `str`.

    Returns
    -------
    symbols
        For each label, its canonical upper-case symbol, or None when it does not resolve.
        Several labels may map to the same symbol (the caller decides how to merge them).
    report
        JSON-serialisable: `id_type` (`symbol`, `ensembl`, `symbol|entrez`, `mixed`, or `none`
        when there is no label), `id_type_counts`, `n_labels`, `n_resolved`, `n_unresolved`,
        `unresolved_examples`.
    """
    lookup = _lookup()
    labels = [str(label) for label in labels]
    types, symbols = [], []
    for label in labels:
        id_type, symbol = _resolve_one(label, lookup)
        types.append(id_type)
        symbols.append(symbol)
    counts = Counter(types)
    unresolved = [label for label, symbol in zip(labels, symbols, strict=True) if symbol is None]
    report = {
        "id_type": next(iter(counts)) if len(counts) == 1 else ("mixed" if counts else "none"),
        "id_type_counts": dict(counts),
        "n_labels": len(symbols),
        "n_resolved": len(symbols) - len(unresolved),
        "n_unresolved": len(unresolved),
        "unresolved_examples": unresolved[:N_EXAMPLES],
    }
    return symbols, report
