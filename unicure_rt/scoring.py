"""Reversal scores and rankings (section 8 of the reference), vectorised over drugs.

For a tumour profile `u` and its normal reference `n`, the disease signature is `s = u - n`; a
drug's predicted change is `d = pred - u`; its score is Pearson(d, s) over the output genes the
input measured. Rank 1 = the most negative score = the strongest predicted reversal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def reversal_scores(predicted: np.ndarray, tumour: np.ndarray, signature: np.ndarray) -> np.ndarray:
    """Pearson(pred_i - tumour, signature) for every row i of `predicted[n_drugs, n_genes]`.

    Computed in float64; a drug whose predicted change is constant over the genes scores NaN.
    """
    d = np.asarray(predicted, dtype=np.float64) - np.asarray(tumour, dtype=np.float64)
    d -= d.mean(axis=1, keepdims=True)
    s = np.asarray(signature, dtype=np.float64)
    s = s - s.mean()
    s_norm = np.sqrt(s @ s)
    d_norm = np.sqrt(np.einsum("ij,ij->i", d, d))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (d @ s) / (d_norm * s_norm)


def drug_labels(rows: pd.DataFrame) -> list[str]:
    """Labels for people to read: each row's drug name, else its id.

    Reads `drug_id` and, when present, `drug_name`. A name that `rows` show for two different
    ids (LINCS lists some compounds under several ids) gets its id appended, so that two
    lines never look the same.
    """
    ids = rows["drug_id"].astype(str).tolist()
    if "drug_name" not in rows:
        return ids
    names = [n if isinstance(n, str) and n else None for n in rows["drug_name"]]
    ids_of: dict[str, set[str]] = {}
    for name, drug_id in zip(names, ids, strict=True):
        if name is not None:
            ids_of.setdefault(name, set()).add(drug_id)
    return [
        drug_id if name is None else name if len(ids_of[name]) == 1 else f"{name} [{drug_id}]"
        for name, drug_id in zip(names, ids, strict=True)
    ]


def ascending_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks, most negative first; ties keep library order; NaN ranks last."""
    order = np.argsort(np.where(np.isnan(scores), np.inf, scores), kind="stable")
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks
