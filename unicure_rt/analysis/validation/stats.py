"""Per-unit figures, their mean with a bootstrap interval, and permutation p-values.

Every figure is oriented so that higher is better: Spearman(score, measured AUC) (a lower
score, a stronger predicted reversal, should go with a lower AUC, a more sensitive line), the
AUROC of a drug class ranked by score (lower score first), a cosine. The null of a unit's figure
shuffles the drug labels within that unit (`scipy.stats.permutation_test`, pairings); the null
of the mean draws one permutation per unit and averages, so the p-value of the mean is
(1 + #null means >= observed) / (1 + n_permutations), one-sided. Everything is seeded by
`rng_for`, from the run's seed and the figure's name, so that numbers do not depend on which
other figures ran.
"""

from __future__ import annotations

import zlib

import numpy as np

N_PERMUTATIONS = 1000
N_BOOTSTRAP = 2000
CONFIDENCE = 0.95
MIN_DRUGS = 8  # a unit needs at least 8 scored drugs: 8! > N_PERMUTATIONS distinct orders
MIN_CLASS = 3  # and, for an AUROC, at least 3 drugs in the class and 3 outside it


def rng_for(seed: int, *names: str) -> np.random.Generator:
    """A generator for one named figure: the same for the same seed and names."""
    return np.random.default_rng([seed, *(zlib.crc32(name.encode()) for name in names)])


def spearman_statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along `axis`: Pearson of the average ranks (scipy's definition)."""
    from scipy.stats import rankdata  # lazy: scipy.stats costs ~0.3 s of CLI start-up

    rx = rankdata(x, axis=axis)
    ry = rankdata(y, axis=axis)
    rx = rx - rx.mean(axis=axis, keepdims=True)
    ry = ry - ry.mean(axis=axis, keepdims=True)
    return np.sum(rx * ry, axis=axis) / np.sqrt(
        np.sum(rx * rx, axis=axis) * np.sum(ry * ry, axis=axis)
    )


def auroc_statistic(score: np.ndarray, member: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUROC of `member` (bool) when drugs are ordered by `score`, lowest first (Mann-Whitney
    U of the class's ranks over n_in * n_out; ties count one half)."""
    from scipy.stats import rankdata

    ranks = rankdata(-score, axis=axis)
    member = member.astype(bool)
    n_in = member.sum(axis=axis)
    n_out = member.shape[axis] - n_in
    rank_sum = np.sum(np.where(member, ranks, 0.0), axis=axis)
    return (rank_sum - n_in * (n_in + 1) / 2) / (n_in * n_out)


STATISTICS = {"spearman": spearman_statistic, "auroc": auroc_statistic}


def unit_figure(
    kind: str, score: np.ndarray, reference: np.ndarray, rng: np.random.Generator
) -> tuple[float, float, np.ndarray | None]:
    """One unit's figure, its one-sided permutation p and null (`N_PERMUTATIONS` values), over
    the drugs where both `score` and `reference` are known (not NaN); NaN and None when too
    few are. For an AUROC `reference` is 1.0 (in the class), 0.0 (not) or NaN (unknown)."""
    score = np.asarray(score, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    known = ~np.isnan(score) & ~np.isnan(reference)
    score, reference = score[known], reference[known]
    if kind == "auroc":
        reference = reference > 0.5
        if reference.sum() < MIN_CLASS or (~reference).sum() < MIN_CLASS:
            return float("nan"), float("nan"), None
    elif known.sum() < MIN_DRUGS or np.ptp(score) == 0 or np.ptp(reference) == 0:
        return float("nan"), float("nan"), None
    from scipy.stats import permutation_test

    result = permutation_test(
        (score, reference),
        STATISTICS[kind],
        permutation_type="pairings",
        vectorized=True,
        n_resamples=N_PERMUTATIONS,
        alternative="greater",
        rng=rng,
    )
    return float(result.statistic), float(result.pvalue), result.null_distribution


def summary(values: np.ndarray, null_means: np.ndarray | None, rng: np.random.Generator) -> dict:
    """Mean of the units' figures with a percentile bootstrap interval, and its one-sided
    p-value against `null_means` (the mean figure under shuffled drug labels)."""
    values = np.asarray(values, dtype=np.float64)
    kept = ~np.isnan(values)
    n = int(kept.sum())
    record = {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    record.update({"median": float("nan"), "p_value": float("nan"), "n_units": n})
    if n == 0:
        return record
    mean = float(values[kept].mean())
    record.update(mean=mean, median=float(np.median(values[kept])))
    if n >= 3 and np.ptp(values[kept]) > 0:
        from scipy.stats import bootstrap

        interval = bootstrap(
            (values[kept],),
            np.mean,
            n_resamples=N_BOOTSTRAP,
            confidence_level=CONFIDENCE,
            method="percentile",
            rng=rng,
        ).confidence_interval
        record.update(ci_low=float(interval.low), ci_high=float(interval.high))
    if null_means is not None:
        record["p_value"] = float((1 + np.sum(null_means >= mean - 1e-12)) / (1 + len(null_means)))
    return record


def mean_of_nulls(values: np.ndarray, nulls: list[np.ndarray | None]) -> np.ndarray | None:
    """The null of the mean: one permutation per unit, averaged over the units with a figure."""
    usable = [null for null, v in zip(nulls, values, strict=True) if not np.isnan(v)]
    if not usable or any(null is None for null in usable):
        return None
    return np.mean(np.stack(usable), axis=0)


def evaluate(
    methods: dict[str, np.ndarray],
    reference: np.ndarray,
    units: list[str],
    *,
    kind: str,
    suite: str,
    metric: str,
    seed: int,
) -> tuple[list[dict], list[dict]]:
    """Score every method (`[n_units, n_drugs]`, NaN = not scored) against `reference` unit by
    unit; returns the summary rows (one per method) and the per-unit records."""
    rows, per_unit = [], []
    for method, scores in methods.items():
        values, nulls = [], []
        for i, unit in enumerate(units):
            rng = rng_for(seed, suite, metric, method, unit)
            value, p_value, null = unit_figure(kind, scores[i], reference[i], rng)
            n_drugs = int(np.sum(~np.isnan(scores[i]) & ~np.isnan(reference[i])))
            values.append(value)
            nulls.append(null)
            per_unit.append(
                {
                    "unit": unit,
                    "method": method,
                    "metric": metric,
                    "value": value,
                    "p_value": p_value,
                    "n_drugs": n_drugs,
                }
            )
        values = np.array(values)
        record = summary(
            values, mean_of_nulls(values, nulls), rng_for(seed, suite, metric, method, "ci")
        )
        rows.append({"method": method, "metric": metric, **record})
    return rows, per_unit
