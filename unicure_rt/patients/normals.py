"""Shipped normal-tissue references: `--normal tissue:NAME` and `--normal auto`.

Reads `unicure_rt/data/normal_tissues.parquet` (built by `scripts/build_normal_reference.py`:
the Human Protein Atlas tissue consensus, nTPM, and GTEx tissue medians, TPM, over the 978
landmark genes, with their source, release and license in the file metadata) and turns it into
one normal profile per tumour profile. The normal only enters the disease signature
`tumour - normal`, which is taken over the model's output (landmark) genes, so landmark genes
are all the table holds; the tumour keeps every gene it measured for the embedding.

Names
    `tissue:NAME` is an HPA tissue or blood cell type (`tissue:breast`, `tissue:urinary_bladder`,
    `tissue:total_PBMC`); `tissue:gtex:NAME` a GTEx tissue and `tissue:hpa:NAME` says HPA
    explicitly. NAME is case- and separator-insensitive (`Urinary Bladder`, `urinary-bladder`).

`auto` (one choice per tumour profile)
    Candidates: the 54 HPA tissues (blood cell types are left out: a biopsy is not a sorted
    cell population; name one with `tissue:` if that is what the sample is). Genes: the
    `AUTO_GENES` landmark genes, among those the profile measures and every candidate has,
    whose log2(nTPM + 1) varies most across the candidates (the tissue-specific ones; OCTAD
    also correlates on the most variable genes). Score: Spearman correlation between the
    profile and each candidate over those genes (rank-based, so the platform and the log
    transform do not matter). The highest wins; the runner-up, its margin and the best
    candidate of another organ are recorded.

Platform and units (every shipped reference)
    The references are RNA-seq nTPM/TPM; a tumour profile may come from counts (log2 CPM), TPM,
    FPKM, a microarray or L1000, each with its own scale and offset. The chosen reference,
    log2(x + 1), is therefore quantile-mapped onto the tumour profile's own distribution over
    the signature genes (the landmark genes the profile measures and the reference has): the
    gene of rank k in the reference gets the k-th smallest tumour value (ties share the mean
    rank). The signature `tumour - normal` then compares ranks on the tumour's own scale and
    carries no platform offset; the tumour profile itself is never changed.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unicure_rt.errors import UserError

NORMAL_TABLE = Path(__file__).parents[1] / "data" / "normal_tissues.parquet"
METADATA_KEY = b"unicure_rt.normal_reference"
AUTO = "auto"
TISSUE_PREFIX = "tissue:"
DEFAULT_SOURCE = "hpa"
AUTO_SOURCE = "hpa"
AUTO_GENES = 100
"""Genes `auto` correlates on; chosen on real data, see README "Normal references"."""

PLATFORM_ADJUSTMENT = (
    "reference log2(x + 1) quantile-mapped onto each tumour profile's distribution over the "
    "signature genes"
)


@dataclass(frozen=True)
class References:
    """The shipped table: `values` genes x references (linear), and its metadata."""

    values: pd.DataFrame
    sources: dict[str, dict]
    references: dict[str, dict]
    sha256: str


@lru_cache(maxsize=1)
def load_references() -> References:
    """Read the shipped table and its metadata (source, release, license per source)."""
    import hashlib

    import pyarrow.parquet as pq

    metadata = json.loads(pq.read_schema(NORMAL_TABLE).metadata[METADATA_KEY])
    values = pd.read_parquet(NORMAL_TABLE)
    sha256 = hashlib.sha256(NORMAL_TABLE.read_bytes()).hexdigest()
    return References(values, metadata["sources"], metadata["references"], sha256)


def reference_summary() -> dict:
    """What `unicure-rt info` shows: file, sources (release, license) and names per source."""
    refs = load_references()
    names: dict[str, list[str]] = {}
    for info in refs.references.values():
        names.setdefault(info["source"], []).append(info["tissue"])
    return {
        "path": str(NORMAL_TABLE),
        "sha256": refs.sha256,
        "n_genes": len(refs.values),
        "sources": {
            key: {**source, "n_references": len(names.get(key, [])), "names": names.get(key, [])}
            for key, source in refs.sources.items()
        },
        "license_files": ["normal_tissues_LICENSE.md", "normal_tissues_CC-BY-SA-3.0.txt"],
    }


def is_reference_spec(normal: Any) -> bool:
    """True for `auto` and `tissue:...` (a shipped reference), False for a file path or None."""
    if normal is None:
        return False
    text = str(normal).strip()
    return text.lower() == AUTO or text.lower().startswith(TISSUE_PREFIX)


def normal_file(normal: Any) -> Path | None:
    """The file of `--normal`, or None when it is absent or names a shipped reference."""
    return None if normal is None or is_reference_spec(normal) else Path(normal)


def _key(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def resolve_tissue(spec: str) -> str:
    """The column of the table named by `tissue:[SOURCE:]NAME`; UserError listing the names."""
    refs = load_references()
    body = spec.strip()[len(TISSUE_PREFIX) :].strip()
    source, _, name = body.partition(":") if ":" in body else (DEFAULT_SOURCE, "", body)
    source = source.strip().lower()
    if source not in refs.sources:
        raise UserError(
            f"--normal {spec}: unknown source '{source}'. Use tissue:NAME (Human Protein Atlas), "
            f"tissue:hpa:NAME or tissue:gtex:NAME."
        )
    column = f"{source}:{_key(name)}"
    if column in refs.references:
        return column
    known = {info["tissue"]: info for info in refs.references.values() if info["source"] == source}
    close = difflib.get_close_matches(_key(name), list(known), n=3, cutoff=0.6)
    organ = [tissue for tissue, info in known.items() if info["organ"] == _key(name)]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    if organ:
        hint = f" '{name}' is an organ made of several references: {', '.join(organ)}."
    other = "gtex" if source == "hpa" else "hpa"
    raise UserError(
        f"--normal {spec}: no {source.upper()} reference named '{name}'.{hint} {source.upper()} "
        f"references: {', '.join(known)}. Names ignore case and separators; tissue:{other}:NAME "
        f"uses the {other.upper()} references, and --normal auto picks one per profile."
    )


def quantile_map(reference: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`reference` with its values replaced by those of `target` of the same rank.

    The gene of rank k in `reference` gets the k-th smallest value of `target`; tied genes share
    their mean rank (interpolated). Both are 1-d over the same genes.
    """
    from scipy.stats import rankdata  # scipy.stats takes ~0.5 s to import: only when used

    ranks = rankdata(reference, method="average")
    return np.interp(ranks, np.arange(1, len(target) + 1), np.sort(target))


def _log_reference(column: str) -> pd.Series:
    return np.log2(load_references().values[column].astype(np.float64) + 1.0)


def choose_tissue(profile: pd.Series, n_genes: int = AUTO_GENES) -> dict:
    """The `auto` choice for one tumour profile (log2 values indexed by gene), correlating on
    its `n_genes` most variable landmark genes; see the module docstring."""
    from scipy.stats import spearmanr  # as `quantile_map`: only when used

    refs = load_references()
    candidates = [
        column
        for column, info in refs.references.items()
        if info["source"] == AUTO_SOURCE and info["kind"] == "tissue"
    ]
    table = np.log2(refs.values[candidates].astype(np.float64) + 1.0)
    table = table.loc[table.index.isin(profile.index)].dropna()
    if len(table) < n_genes:
        raise UserError(
            f"--normal auto needs at least {n_genes} landmark genes measured in every profile; "
            f"this input has {len(table)}. Name a reference with --normal tissue:NAME."
        )
    genes = table.var(axis=1).sort_values(ascending=False, kind="stable").index[:n_genes]
    columns = np.column_stack([profile.loc[genes].to_numpy(np.float64), table.loc[genes]])
    correlation = spearmanr(columns).statistic  # (1 + candidates) x (1 + candidates)
    scores = pd.Series(correlation[0, 1:], index=candidates).sort_values(
        ascending=False, kind="stable"
    )
    best, runner_up = scores.index[0], scores.index[1]
    organ = refs.references[best]["organ"]
    other = next(c for c in scores.index if refs.references[c]["organ"] != organ)
    return {
        "reference": best,
        "spearman": float(scores.iloc[0]),
        "runner_up": runner_up,
        "runner_up_spearman": float(scores.iloc[1]),
        "margin": float(scores.iloc[0] - scores.iloc[1]),
        "organ": organ,
        "best_other_organ": other,
        "best_other_organ_spearman": float(scores[other]),
        "n_genes": n_genes,
    }


def _source_label(choice: dict) -> str:
    if "spearman" not in choice:
        return f"{choice['reference']} (shipped, quantile-mapped)"
    return (
        f"auto: {choice['reference']} (Spearman {choice['spearman']:.3f}; runner-up "
        f"{choice['runner_up']} {choice['runner_up_spearman']:.3f}, margin "
        f"{choice['margin']:.3f}; quantile-mapped)"
    )


def shipped_normals(tumour: pd.DataFrame, spec: str) -> tuple[pd.DataFrame, list[str], dict]:
    """Normal profiles from the shipped table for every tumour profile.

    Parameters
    ----------
    tumour
        Tumour profiles x genes, log2 (as `inputs` makes them).
    spec
        `auto` or `tissue:[SOURCE:]NAME`.

    Returns
    -------
    normal
        Profiles x signature genes (landmark genes every profile measures and every chosen
        reference has), quantile-mapped onto each profile (see the module docstring).
    sources
        Per profile, the text shown as its normal source.
    qc
        JSON-serialisable: the spec, the table's sha256, the sources used (release, license),
        the rule and, per profile, the choice (with the `auto` scores and runner-up).
    """
    refs = load_references()
    auto = spec.strip().lower() == AUTO
    fixed = None if auto else resolve_tissue(spec)
    choices = {
        str(profile): choose_tissue(row) if auto else {"reference": fixed}
        for profile, row in tumour.iterrows()
    }
    used = sorted({choice["reference"] for choice in choices.values()})
    logged = {column: _log_reference(column) for column in used}
    genes = [g for g in refs.values.index if g in tumour.columns]
    genes = [g for g in genes if all(pd.notna(logged[c][g]) for c in used)]
    if not genes:
        raise UserError(
            f"--normal {spec}: the input measures none of the landmark genes the reference has, "
            "so no signature can be formed. Check the gene labels."
        )
    rows = [
        quantile_map(logged[choices[str(p)]["reference"]][genes].to_numpy(), row[genes].to_numpy())
        for p, row in tumour.iterrows()
    ]
    normal = pd.DataFrame(rows, index=tumour.index, columns=genes)
    sources = [_source_label(choices[str(p)]) for p in tumour.index]
    qc = {
        "shipped_reference": spec,
        "table": {"path": NORMAL_TABLE.name, "sha256": refs.sha256},
        "sources": {
            key: refs.sources[key] for key in sorted({refs.references[c]["source"] for c in used})
        },
        "rule": (
            f"auto: highest Spearman over the {AUTO_GENES} landmark genes most variable across "
            f"the {AUTO_SOURCE.upper()} tissues"
            if auto
            else "named tissue"
        ),
        "platform_adjustment": PLATFORM_ADJUSTMENT,
        "n_signature_genes": len(genes),
        "choices": choices,
    }
    return normal, sources, qc
