"""The per-drug null of a ranking: gene-permuted signatures, empirical p-values, z-scores and
the within-profile FDR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from unicure_rt.runtime.sessions import one_blas_thread
from unicure_rt.scoring.effects import (
    unit_centred,
)

if TYPE_CHECKING:
    pass


def permuted_signatures(signature: np.ndarray, permutations: int, seed: int) -> np.ndarray:
    """`float64[permutations, n_genes]`: unit-centred copies of `signature` with its values
    shuffled over the genes (seeded), the background each drug's score is compared with."""
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(signature) for _ in range(permutations)])
    return unit_centred(shuffled)


def null_scores(effects: np.ndarray, null: np.ndarray) -> np.ndarray:
    """`effects[n, genes] @ null[k, genes].T` on one BLAS thread: a multi-threaded product
    rounds differently with the thread count, and a Ray worker (1 thread) must give the same
    p-values, to the last bit, as this machine's `score` (all cores)."""
    with one_blas_thread():
        return effects @ null.T


@dataclass
class NullSummary:
    """Per drug: how its dose-mean score compares with its scores under the permuted
    signatures (the same permutations at every dose)."""

    at_or_below: np.ndarray  # int64[n_drugs]: null scores <= the observed score
    mean: np.ndarray  # float64[n_drugs]
    sd: np.ndarray  # float64[n_drugs]
    permutations: int

    def z(self, observed: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (observed - self.mean) / self.sd

    def p_values(self, observed: np.ndarray) -> np.ndarray:
        """One-sided empirical p of reversal, (1 + #null <= observed) / (K + 1); NaN unscored."""
        p = (1.0 + self.at_or_below) / (self.permutations + 1.0)
        return np.where(np.isnan(observed), np.nan, p)


def null_summary(mean_effects: np.ndarray, observed: np.ndarray, null: np.ndarray) -> NullSummary:
    """Each drug's null from its dose-mean unit effect `mean_effects[n_drugs, n_genes]` (the
    mean over the scored doses of `drug_effects`) and the permuted signatures `null`.

    The dose-mean score is linear in the unit effects, mean_j(e_j . s) = mean_j(e_j) . s, so
    one product with the permuted signatures serves every dose. `observed` is the drug's
    dose-mean score.
    """
    null_means = null_scores(mean_effects, null)
    return NullSummary(
        at_or_below=np.sum(null_means <= observed[:, None], axis=1),
        mean=null_means.mean(axis=1),
        sd=null_means.std(axis=1, ddof=1),
        permutations=len(null),
    )


def within_profile_fdr(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values over the scored drugs of one profile."""
    from scipy.stats import false_discovery_control  # lazy, as in `scoring.ascending_ranks`

    fdr = np.full(len(p_values), np.nan)
    scored = ~np.isnan(p_values)
    if scored.any():
        fdr[scored] = false_discovery_control(p_values[scored], method="bh")
    return fdr
