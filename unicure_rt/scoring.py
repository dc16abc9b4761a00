"""Reversal scores and rankings (section 8 of the reference), vectorised over drugs.

For a tumour profile `u` and its normal reference `n`, the disease signature is `s = u - n`; a
drug's predicted change is `d = pred - u`; its score is Pearson(d, s) over the output genes the
input measured. Rank 1 = the most negative score = the strongest predicted reversal.
"""

from __future__ import annotations

import numpy as np


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


def drug_label(row) -> str:
    """A ranking row's drug name when the library has one, else its id (for people to read)."""
    name = getattr(row, "drug_name", None)
    return name if isinstance(name, str) and name else str(row.drug_id)


def ascending_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks, most negative first; ties keep library order; NaN ranks last."""
    order = np.argsort(np.where(np.isnan(scores), np.inf, scores), kind="stable")
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[order] = np.arange(1, len(scores) + 1)
    return ranks
