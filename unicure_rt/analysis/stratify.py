"""Patient strata from drug-rank profiles (section 8 of the reference).

The drugs x samples rank matrix of a `score` run -> log10(rank + 1) -> standardised per drug
across samples -> k-means for k = 2..10 (inertia and silhouette) -> chosen k -> per drug and
cluster, a two-sided Mann-Whitney U test of the cluster's ranks against the other samples'
ranks, Benjamini-Hochberg FDR over drugs, and the log2 fold change of mean ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from unicure_rt.errors import UserError
from unicure_rt.progress import Progress, no_progress
from unicure_rt.scoring.effects import drug_labels

K_RANGE = range(2, 11)
# Below 3 profiles a stratum is one or two patients, outliers rather than a group, and its
# rank tests have little power: the smallest two-sided Mann-Whitney p of 1 profile against m
# others is 2/(m+1), of 2 profiles 4/((m+1)(m+2)) (not below 0.05 for m <= 7).
SMALLEST_STRATUM = 3
SIGNIFICANT_FDR = 0.25  # the usual screening threshold for the differential drugs


@dataclass
class Strata:
    clusters: pd.DataFrame  # profile, cluster, pc1, pc2
    k_selection: pd.DataFrame  # k, inertia, silhouette, chosen
    differential: pd.DataFrame  # cluster, drug_id, drug_name, u, p, fdr, log2fc, mean ranks
    k: int


def read_ranking(path: Path) -> pd.DataFrame:
    """A `score` ranking: `ranking.parquet`/`.csv` or the output folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / "ranking.parquet"
    if not path.is_file():
        raise UserError(
            f"No ranking at '{path}'. Pass the output folder of `unicure-rt score --out` or its "
            "ranking.parquet / ranking.csv."
        )
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a damaged file for the user
        raise UserError(f"Cannot read ranking '{path}' ({exc}); is it a `score` output?") from None
    missing = {"profile", "drug_id", "rank"} - set(table.columns)
    if missing:
        raise UserError(
            f"'{path}' lacks the column(s) {', '.join(sorted(missing))}; it is not a ranking "
            "written by `unicure-rt score`."
        )
    ranks = pd.to_numeric(table["rank"], errors="coerce")
    empty = table["rank"].isna() | table["rank"].astype(str).str.strip().eq("")
    values = ranks.to_numpy(dtype=float, na_value=np.nan)
    bad = table["rank"][(ranks.isna() & ~empty) | np.isinf(values)]
    if len(bad):
        raise UserError(
            f"'{path}' has {len(bad)} rank(s) that are not finite numbers (e.g. "
            f"{str(bad.iloc[0])[:40]!r}); a `unicure-rt score` ranking holds whole-number ranks. "
            "Re-run `unicure-rt score`, or fix the rank column (empty = unranked)."
        )
    table["rank"] = ranks
    return table


def rank_matrix(ranking: pd.DataFrame) -> pd.DataFrame:
    """Profiles x drugs matrix of ranks; every profile must have scored the same drugs.

    A drug left unranked (empty rank: no predicted effect) in any profile is dropped, since
    it has no place in that profile's order.
    """
    drugs = ranking.groupby("profile", sort=False)["drug_id"].agg(frozenset)
    if drugs.nunique() > 1:
        raise UserError(
            "The ranking's profiles were not scored against the same drugs; stratify one "
            "`score` run (one library) at a time."
        )
    first = ranking.drop_duplicates(["profile", "drug_id"])
    matrix = first.pivot(index="profile", columns="drug_id", values="rank")
    return matrix.loc[:, matrix.notna().all()]


def standardised_log_ranks(matrix: pd.DataFrame) -> np.ndarray:
    """log10(rank + 1), standardised per drug across samples (constant drugs become 0)."""
    logged = np.log10(matrix.to_numpy(dtype=np.float64) + 1.0)
    sd = logged.std(axis=0)
    varies = sd > 1e-12 * np.maximum(np.abs(logged).max(axis=0), 1.0)
    return np.where(varies, (logged - logged.mean(axis=0)) / np.where(varies, sd, 1.0), 0.0)


def stratify(
    ranking: pd.DataFrame, *, k: int | None = None, seed: int = 0, progress: Progress = no_progress
) -> Strata:
    """Cluster the profiles of a ranking and find the drugs whose ranks differ between clusters.

    Reports ("clustering", values of k done, values of k) to `progress`.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    matrix = rank_matrix(ranking)
    n = len(matrix)
    if n < 3:
        raise UserError(
            f"Stratification needs at least 3 profiles; the ranking has {n}. Score a cohort "
            "(several samples, or --group-key) first."
        )
    features = standardised_log_ranks(matrix)
    candidates = [c for c in K_RANGE if c < n]
    if k is not None and k not in candidates:
        raise UserError(f"--k must be between 2 and {min(10, n - 1)} for {n} profiles (got {k}).")
    rows, labels = [], {}
    progress("clustering", 0, len(candidates))
    for done, c in enumerate(candidates, 1):
        model = KMeans(n_clusters=c, n_init=10, random_state=seed).fit(features)
        labels[c] = model.labels_
        distinct = len(set(model.labels_))
        silhouette = silhouette_score(features, model.labels_) if 1 < distinct < n else np.nan
        rows.append({"k": c, "inertia": float(model.inertia_), "silhouette": float(silhouette)})
        progress("clustering", done, len(candidates))
    selection = pd.DataFrame(rows)
    chosen = k if k is not None else int(selection.loc[selection["silhouette"].idxmax(), "k"])
    selection["chosen"] = selection["k"] == chosen
    coordinates = PCA(n_components=min(2, n, features.shape[1]), random_state=seed).fit_transform(
        features
    )
    clusters = pd.DataFrame(
        {"profile": matrix.index, "cluster": labels[chosen] + 1, "pc1": coordinates[:, 0]}
    )
    clusters["pc2"] = coordinates[:, 1] if coordinates.shape[1] > 1 else 0.0
    names = ranking.drop_duplicates("drug_id").set_index("drug_id")
    differential = differential_drugs(matrix, labels[chosen] + 1, names.get("drug_name"))
    return Strata(clusters, selection, differential, chosen)


def strata_warnings(strata: Strata) -> list[str]:
    """What a reader of the strata must know before trusting them: strata smaller than
    `SMALLEST_STRATUM` profiles, and no differential drug below `SIGNIFICANT_FDR`."""
    sizes = strata.clusters["cluster"].value_counts().sort_index()
    small = sizes[sizes < SMALLEST_STRATUM]
    notes = []
    if len(small):
        listed = ", ".join(
            f"{cluster} ({n} profile{'s' * (n > 1)})" for cluster, n in small.items()
        )
        several = len(small) > 1
        notes.append(
            f"{'Strata' if several else 'Stratum'} {listed} {'have' if several else 'has'} "
            f"fewer than {SMALLEST_STRATUM} profiles at k = {strata.k}: one or two patients "
            "are outliers rather than a group, and their rank tests have little power. Score "
            "more samples, or choose a smaller --k."
        )
    if not (strata.differential["fdr"] < SIGNIFICANT_FDR).any():
        notes.append(
            f"No drug differs between the strata at FDR < {SIGNIFICANT_FDR:g} (smallest FDR "
            f"{strata.differential['fdr'].min():.2g}): the strata are not separated by any "
            "drug's rank, so read them as a partition of the samples, not as drug-response "
            "groups."
        )
    return notes


def differential_drugs(
    matrix: pd.DataFrame, labels: np.ndarray, names: pd.Series | None
) -> pd.DataFrame:
    """Per cluster and drug: Mann-Whitney U of the cluster's ranks vs the rest, BH FDR, log2 FC."""
    from scipy.stats import false_discovery_control, mannwhitneyu

    ranks = matrix.to_numpy(dtype=np.float64)
    frames = []
    for cluster in np.unique(labels):
        inside, outside = ranks[labels == cluster], ranks[labels != cluster]
        test = mannwhitneyu(inside, outside, alternative="two-sided", axis=0)
        mean_in, mean_out = inside.mean(axis=0), outside.mean(axis=0)
        frame = pd.DataFrame(
            {
                "cluster": int(cluster),
                "drug_id": matrix.columns,
                "mean_rank_cluster": mean_in,
                "mean_rank_rest": mean_out,
                "log2_fold_change": np.log2(mean_in / mean_out),
                "u_statistic": test.statistic,
                "p_value": test.pvalue,
            }
        )
        frame["fdr"] = false_discovery_control(np.nan_to_num(test.pvalue, nan=1.0))
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    if names is not None:
        table.insert(2, "drug_name", names.reindex(table["drug_id"]).to_numpy())
    return table.sort_values(["cluster", "p_value", "drug_id"], kind="stable", ignore_index=True)


def plot_strata(strata: Strata, out: Path, top: int = 15) -> list[Path]:
    """Elbow + silhouette, PCA of samples by cluster, and the top differential drugs (PNG);
    mathtext is off, so a '$' in a drug name prints as itself."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.parse_math": False}):
        return _draw_strata(plt, strata, out, top)


def _draw_strata(plt, strata: Strata, out: Path, top: int) -> list[Path]:
    paths = []
    fig, left = plt.subplots(figsize=(6, 4))
    sel = strata.k_selection
    left.plot(sel["k"], sel["inertia"], "o-", color="tab:blue")
    left.set_xticks(sel["k"])
    left.set_xlabel("k")
    left.set_ylabel("inertia", color="tab:blue")
    right = left.twinx()
    right.plot(sel["k"], sel["silhouette"], "s--", color="tab:orange")
    right.set_ylabel("silhouette", color="tab:orange")
    left.axvline(strata.k, color="grey", lw=0.8)
    left.set_title(f"k-means on standardised log10 drug ranks (chosen k = {strata.k})")
    paths.append(_save(fig, out / "k_selection.png"))

    fig, ax = plt.subplots(figsize=(5, 4))
    for cluster, rows in strata.clusters.groupby("cluster"):
        ax.scatter(rows["pc1"], rows["pc2"], label=f"cluster {cluster}", s=30)
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    ax.legend(frameon=False)
    ax.set_title("Samples by drug-rank profile")
    paths.append(_save(fig, out / "pca_clusters.png"))

    best = strata.differential.nsmallest(top, "p_value")
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(best) + 1.2))
    labels = [
        f"{label} (c{cluster})"
        for label, cluster in zip(drug_labels(best), best["cluster"], strict=True)
    ]
    ax.barh(labels[::-1], best["log2_fold_change"].to_numpy()[::-1], color="tab:purple")
    ax.set_xlabel("log2 fold change of mean rank (cluster / rest)")
    ax.set_title(f"Top {len(best)} differential drugs by Mann-Whitney p")
    paths.append(_save(fig, out / "differential_drugs.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
