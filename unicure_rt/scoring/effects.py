"""Reversal scores and rankings (section 8 of the reference), vectorised over drugs.

For a tumour profile `u` and its normal reference `n`, the disease signature is `s = u - n`; a
drug's predicted change is `d = pred - baseline` and its score is Pearson(d, s) over the output
genes the input measured. Rank 1 = the most negative score = the strongest predicted reversal.

Two effects (`EFFECTS`) choose the baseline:
- `published`: `baseline = u`, the published formula. `pred` lives on the L1000 training scale
  and `u` on the patient's, so `d` carries `pred(no drug) - u`, an offset shared by every drug.
- `contrast`: `baseline = pred(no drug)`, FlexPert on the control vector (528 zeros) for the
  same cell embedding, which removes that offset: `d` is what the drug itself changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from unicure_rt.defaults import EFFECTS

if TYPE_CHECKING:
    import pandas as pd

# A predicted change whose root-mean-square over the genes, after removing its mean, is at most
# this is float32 rounding of "no change" (a contrast of the control with itself, or a constant
# shift): its correlation with anything is noise, so the drug is reported unscorable (NaN).
UNSCORABLE_RMS = 1e-5


def unit_centred(x: np.ndarray) -> np.ndarray:
    """Rows of `x` (float64) minus their mean, divided by their norm (NaN rows where it is 0)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=-1, keepdims=True)
    norm = np.sqrt(np.einsum("...i,...i->...", x, x))[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return x / norm


def drug_effects(
    predicted: np.ndarray,
    baseline: np.ndarray,
    *,
    genes: np.ndarray | None = None,
    min_rms: float = 0.0,
) -> np.ndarray:
    """Centred, unit-norm predicted changes `predicted[i, genes] - baseline` (float64 rows).

    `genes` picks the output columns the input measured (all of them when None; `np.take`, an
    order of magnitude faster than fancy indexing on a batch of predictions). A row whose
    centred RMS is at most `min_rms` (or exactly 0) is NaN: unscorable.
    """
    predicted = np.asarray(predicted)
    if genes is not None:
        predicted = np.take(predicted, genes, axis=1)
    d = np.subtract(predicted, baseline, dtype=np.float64)
    d -= d.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", d, d))
    flat = norm <= min_rms * np.sqrt(d.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        d /= norm[:, None]
    d[flat] = np.nan
    return d


def reversal_scores(
    predicted: np.ndarray,
    baseline: np.ndarray,
    signature: np.ndarray,
    *,
    genes: np.ndarray | None = None,
    min_rms: float = 0.0,
) -> np.ndarray:
    """Pearson(predicted_i - baseline, signature) for every row i of `predicted[n_drugs, n_genes]`
    (over the columns `genes`, all when None).

    `baseline` is the tumour profile `u` (published effect) or the no-drug prediction
    (contrast). Computed in float64; a predicted change that is constant over the genes, or
    whose centred RMS is at most `min_rms`, scores NaN.
    """
    effects = drug_effects(predicted, baseline, genes=genes, min_rms=min_rms)
    return effects @ unit_centred(signature)


def effect_baseline(effect: str, tumour: np.ndarray, no_drug: np.ndarray) -> np.ndarray:
    """The baseline that `effect` subtracts from a prediction: the tumour or the no-drug one."""
    if effect == "published":
        return tumour
    if effect == "contrast":
        return no_drug
    raise ValueError(f"unknown effect {effect!r}; expected one of {EFFECTS}")


def effect_min_rms(effect: str) -> float:
    """Published scores stay exactly the reference's; a contrast drops float32 noise."""
    return UNSCORABLE_RMS if effect == "contrast" else 0.0


def dose_mean(per_dose: np.ndarray) -> np.ndarray:
    """Mean over the doses axis (0) skipping NaN doses; NaN where every dose is NaN."""
    per_dose = np.asarray(per_dose, dtype=np.float64)
    counts = np.sum(~np.isnan(per_dose), axis=0)
    sums = np.nansum(per_dose, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


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


def compound_labels(rows: pd.DataFrame) -> list[str]:
    """`drug_labels` of one row per compound (`score.top_compounds`), with ' xN' where the
    library lists the compound under N ids."""
    return [
        label + (f" x{copies}" if copies > 1 else "")
        for label, copies in zip(drug_labels(rows), rows["copies"], strict=True)
    ]


def ascending_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks, most negative first, as the reference ranks (`rank(method='min')`):
    ties share the lower rank; NaN stays unranked (NaN in the float64 result)."""
    from scipy.stats import rankdata  # lazy: scipy.stats costs ~0.3 s of start-up

    scores = np.asarray(scores, dtype=np.float64)
    ranks = np.full(len(scores), np.nan)
    finite = ~np.isnan(scores)
    ranks[finite] = rankdata(scores[finite], method="min")
    return ranks
