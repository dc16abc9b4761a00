"""Held-out evaluation of the demo model: splits, published metrics and simple baselines.

Metrics (section 8 of the reference), per held-out condition and then averaged over conditions:
Pearson, Spearman and R² of the predicted vs the observed treated profile (978 genes), and the
delta Pearson, Pearson(pred - ctrl, real - ctrl), on all genes and on the top 10% of genes
ranked by |real - ctrl|.

Longer than 400 lines because the splits, the metrics and the baselines are evaluated together:
a baseline must see exactly the split and the metric the model sees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from unicure_rt.train.data import Condition

METRICS = ("pearson", "spearman", "r2", "delta_pearson_top10", "delta_pearson_all")
# Tanimoto at which two structures share a cluster: held-out splits and the ridge's CV folds
CLUSTER_THRESHOLD = 0.4
# the structure ridge's penalties, one chosen by cross-validation over training clusters
RIDGE_PENALTIES = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
RIDGE_FOLDS = 5


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def condition_metrics(
    pred: np.ndarray, real: np.ndarray, ctrl: np.ndarray, top: float = 0.1
) -> dict:
    """Metrics of one predicted profile against the observed mean treated profile."""
    pred, real, ctrl = (np.asarray(x, dtype=np.float64) for x in (pred, real, ctrl))
    ss_res = float(((real - pred) ** 2).sum())
    ss_tot = float(((real - real.mean()) ** 2).sum())
    d_real, d_pred = real - ctrl, pred - ctrl
    k = max(2, int(round(top * len(real))))
    idx = np.argsort(-np.abs(d_real), kind="stable")[:k]
    return {
        "pearson": _pearson(pred, real),
        "spearman": float(stats.spearmanr(pred, real).statistic)
        if np.std(pred) > 0
        else float("nan"),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "delta_pearson_top10": _pearson(d_pred[idx], d_real[idx]),
        "delta_pearson_all": _pearson(d_pred, d_real),
    }


def summarise(rows: Sequence[dict]) -> dict:
    """Mean of each metric over conditions (NaN where undefined for every condition)."""
    out = {}
    for m in METRICS:
        values = np.array([r[m] for r in rows], dtype=np.float64)
        out[m] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    out["n_conditions"] = len(rows)
    return out


def max_tanimoto_to(sim: np.ndarray, rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
    sub = sim[np.ix_(list(rows), list(cols))]
    return np.nanmax(sub, axis=1) if len(cols) else np.zeros(len(rows))


def dose_split(conditions: Sequence[Condition], seed: int) -> tuple[list[int], list[int]]:
    """Unseen (drug, dose): for every plate drug with >= 3 doses, one random dose is held out."""
    rng = np.random.default_rng(seed)
    by_drug: dict[str, list[int]] = {}
    for i, c in enumerate(conditions):
        if c.source == "plate":
            by_drug.setdefault(c.drug, []).append(i)
    held = set()
    for drug in sorted(by_drug):
        rows = by_drug[drug]
        if len(rows) >= 3:
            held.add(int(rng.choice(rows)))
    train = [i for i in range(len(conditions)) if i not in held]
    return train, sorted(held)


def drug_split(
    conditions: Sequence[Condition],
    similarity: Callable[[list[str], list[str]], np.ndarray],
    n_held: int,
    eligible: Callable[[Condition], bool] = lambda c: (
        c.source == "plate" and c.pert_type == "trt_cp"
    ),
) -> tuple[list[int], list[int], dict]:
    """Unseen drugs by structure: hold out the `n_held` eligible drugs least similar (max
    Tanimoto) to every other drug, with all their doses; every condition of any drug whose
    structure is identical to a held-out one is dropped from training too."""
    smiles = {}
    for c in conditions:
        smiles.setdefault(c.drug, c.smiles)
    drugs = sorted(smiles)
    sim = similarity([smiles[d] for d in drugs], [smiles[d] for d in drugs])
    np.fill_diagonal(sim, np.nan)
    candidates = sorted({c.drug for c in conditions if eligible(c)})
    order = sorted(candidates, key=lambda d: (float(np.nanmax(sim[drugs.index(d)])), d))
    held = set(order[:n_held])
    held_idx = [drugs.index(d) for d in held]
    same = {drugs[j] for j in range(len(drugs)) for i in held_idx if sim[i, j] >= 0.999}
    train_drugs = [d for d in drugs if d not in held and d not in same]
    train_idx = [drugs.index(d) for d in train_drugs]
    held_sorted = sorted(held)
    max_sim = max_tanimoto_to(sim, [drugs.index(d) for d in held_sorted], train_idx)
    info = {d: float(s) for d, s in zip(held_sorted, max_sim, strict=True)}
    train = [i for i, c in enumerate(conditions) if c.drug in set(train_drugs)]
    test = [i for i, c in enumerate(conditions) if c.drug in held]
    return train, test, info


def baselines(
    conditions: Sequence[Condition],
    train: Sequence[int],
    test: Sequence[int],
    ctrl_means: dict[str, np.ndarray],
    similarity: Callable[[list[str], list[str]], np.ndarray],
) -> dict[str, dict[int, np.ndarray]]:
    """Predictions of the baselines for every test condition.

    - no_change: the control profile;
    - mean_response: control + mean delta of the training conditions of the same cell line;
    - nearest_drug: control + observed delta of the most Tanimoto-similar *other* training drug
      at the same dose and cell line (falls back to mean_response where none exists);
    - same_drug_nearest_dose: control + the drug's own observed delta at the nearest training
      dose on the log scale (only where the drug has training doses; else mean_response).
    """

    def delta(c: Condition) -> np.ndarray:
        return c.treated.mean(0) - ctrl_means[c.control]

    train_c = [conditions[i] for i in train if conditions[i].kind == "expression"]
    out: dict[str, dict[int, np.ndarray]] = {
        "no_change": {},
        "mean_response": {},
        "nearest_drug": {},
        "same_drug_nearest_dose": {},
    }
    train_smiles = sorted({c.smiles for c in train_c})
    test_smiles = sorted({conditions[i].smiles for i in test})
    sim = similarity(test_smiles, train_smiles) if train_smiles and test_smiles else None
    for i in test:
        c = conditions[i]
        ctrl = ctrl_means[c.control]
        same_line = [t for t in train_c if t.cell_line == c.cell_line] or train_c
        mean_delta = np.mean([delta(t) for t in same_line], axis=0)
        out["no_change"][i] = ctrl
        out["mean_response"][i] = ctrl + mean_delta
        candidates = [
            t
            for t in same_line
            if t.drug != c.drug and np.isclose(t.dose_um, c.dose_um) and t.smiles != c.smiles
        ]
        if candidates and sim is not None:
            row = test_smiles.index(c.smiles)
            scores = [sim[row, train_smiles.index(t.smiles)] for t in candidates]
            best = candidates[int(np.nanargmax(scores))]
            out["nearest_drug"][i] = ctrl + delta(best)
        else:
            out["nearest_drug"][i] = ctrl + mean_delta
        own = [t for t in same_line if t.drug == c.drug]
        if own:
            dist = [abs(np.log10(t.dose_um) - np.log10(c.dose_um)) for t in own]
            out["same_drug_nearest_dose"][i] = ctrl + delta(own[int(np.argmin(dist))])
        else:
            out["same_drug_nearest_dose"][i] = ctrl + mean_delta
    return out


def evaluate_predictions(
    conditions: Sequence[Condition],
    test: Sequence[int],
    predictions: dict[str, dict[int, np.ndarray]],
    ctrl_means: dict[str, np.ndarray],
) -> dict[str, dict]:
    table = {}
    for name, preds in predictions.items():
        rows = [
            condition_metrics(
                preds[i], conditions[i].treated.mean(0), ctrl_means[conditions[i].control]
            )
            for i in test
        ]
        table[name] = summarise(rows)
    return table


def dose_response(
    conditions: Sequence[Condition],
    test: Sequence[int],
    predictions: dict[int, np.ndarray],
    ctrl_means: dict[str, np.ndarray],
) -> dict:
    """Per held-out drug: Spearman of effect size ||x - ctrl|| vs dose, predicted and observed."""
    by_drug: dict[str, list[int]] = {}
    for i in test:
        by_drug.setdefault(conditions[i].drug, []).append(i)
    per_drug = {}
    for drug, rows in sorted(by_drug.items()):
        if len(rows) < 3:
            continue
        doses = [conditions[i].dose_um for i in rows]
        ctrl = [ctrl_means[conditions[i].control] for i in rows]
        pred_size = [
            float(np.linalg.norm(predictions[i] - c)) for i, c in zip(rows, ctrl, strict=True)
        ]
        obs_size = [
            float(np.linalg.norm(conditions[i].treated.mean(0) - c))
            for i, c in zip(rows, ctrl, strict=True)
        ]
        per_drug[drug] = {
            "doses": doses,
            "predicted_effect": pred_size,
            "observed_effect": obs_size,
            "spearman_predicted": float(stats.spearmanr(doses, pred_size).statistic),
            "spearman_observed": float(stats.spearmanr(doses, obs_size).statistic),
        }
    pred_rho = [v["spearman_predicted"] for v in per_drug.values()]
    obs_rho = [v["spearman_observed"] for v in per_drug.values()]
    return {
        "n_drugs": len(per_drug),
        "mean_spearman_predicted": float(np.nanmean(pred_rho)) if pred_rho else float("nan"),
        "mean_spearman_observed": float(np.nanmean(obs_rho)) if obs_rho else float("nan"),
        "per_drug": per_drug,
    }


def leader_clusters(
    sim: np.ndarray, members: Sequence[int], threshold: float, rng: np.random.Generator
) -> tuple[dict[int, int], list[int]]:
    """Leader clustering of the structures `members` (indices into `sim`) in a seeded order: a
    structure joins the first leader with Tanimoto >= `threshold`, else leads a new cluster.
    Returns ({structure: its leader}, the leaders in the order created)."""
    leaders: list[int] = []
    cluster_of: dict[int, int] = {}
    for k in rng.permutation(members):
        joined = next((lead for lead in leaders if sim[k, lead] >= threshold), None)
        if joined is None:
            leaders.append(int(k))
            joined = int(k)
        cluster_of[int(k)] = joined
    return cluster_of, leaders


def cluster_split(
    conditions: Sequence[Condition],
    similarity: Callable[[list[str], list[str]], np.ndarray],
    seed: int,
    fraction: float = 0.1,
    threshold: float = CLUSTER_THRESHOLD,
) -> tuple[list[int], list[int], dict]:
    """Unseen consensus compounds by Tanimoto cluster, fixed by `seed`.

    Leader clustering in a seeded order (a compound joins the first leader with Tanimoto >=
    `threshold`), then whole clusters in a seeded order are held out until `fraction` of the
    consensus compounds are. Training drops every condition (any source) whose structure is in a
    held-out cluster or has Tanimoto >= `threshold` to a held-out compound.
    Returns (train, test, {held-out drug: max Tanimoto to the training structures}).
    """
    rng = np.random.default_rng(seed + 77)
    consensus = [i for i, c in enumerate(conditions) if c.source == "consensus"]
    smiles = sorted({c.smiles for c in conditions})
    sim = similarity(smiles, smiles)
    index = {s: k for k, s in enumerate(smiles)}
    members = [index[conditions[i].smiles] for i in consensus]
    cluster_of, leaders = leader_clusters(sim, members, threshold, rng)
    held_structures: set[int] = set()
    for lead in rng.permutation(leaders):
        if len(held_structures) >= fraction * len(set(members)):
            break
        held_structures |= {k for k, c in cluster_of.items() if c == lead}
    held = sorted(held_structures)
    near = np.nanmax(sim[:, held], axis=1) >= threshold
    test = [i for i in consensus if index[conditions[i].smiles] in held_structures]
    train = [i for i, c in enumerate(conditions) if not near[index[c.smiles]]]
    train_structures = sorted({index[conditions[i].smiles] for i in train})
    info = {
        conditions[i].drug: float(np.nanmax(sim[index[conditions[i].smiles], train_structures]))
        for i in test
    }
    return train, test, info


def joint_split(
    conditions: Sequence[Condition],
    similarity: Callable[[list[str], list[str]], np.ndarray],
    seed: int,
    n_held_drugs: int,
) -> tuple[list[int], dict[str, tuple[list[int], dict]]]:
    """The three held-out evaluations from one retrain: the consensus compounds of
    `cluster_split`, the plate drugs of `drug_split` and the plate doses of `dose_split`, all
    left out of one training set.

    A held-out dose counts only where every other condition of its drug stays in training (an
    unseen dose of a seen drug); each held-out compound's max Tanimoto is to the structures
    of the joint training set. One retrain instead of three keeps the training command within
    its time budget; each model sees a little less training data than its split alone leaves.
    Returns (train, {split name: (test, {held-out drug: max Tanimoto to training})}).
    """
    cluster_train, cluster_test = list(range(len(conditions))), []
    if any(c.source == "consensus" for c in conditions):
        cluster_train, cluster_test, _ = cluster_split(conditions, similarity, seed)
    drug_train, drug_test, _ = drug_split(conditions, similarity, n_held_drugs)
    kept = set(cluster_train) & set(drug_train)
    dropped_drugs = {c.drug for i, c in enumerate(conditions) if i not in kept}
    _, dose_test = dose_split(conditions, seed)
    dose_test = [i for i in dose_test if conditions[i].drug not in dropped_drugs]
    train = sorted(kept - set(dose_test))
    smiles = sorted({c.smiles for c in conditions})
    index = {s: k for k, s in enumerate(smiles)}
    sim = similarity(smiles, smiles)
    train_structures = sorted({index[conditions[i].smiles] for i in train})

    def nearest(test: list[int]) -> dict:
        rows = {conditions[i].drug: index[conditions[i].smiles] for i in test}
        return {
            drug: float(s)
            for drug, s in zip(
                rows, max_tanimoto_to(sim, list(rows.values()), train_structures), strict=True
            )
        }

    splits = {"unseen_drug_dose": (dose_test, {}), "unseen_drug": (drug_test, nearest(drug_test))}
    if cluster_test:
        splits["unseen_consensus_cluster"] = (cluster_test, nearest(cluster_test))
    return train, splits


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norm) if norm > 0 else 0.0


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of `x` (float64) divided by their norm, zero rows left zero: a signature is a
    direction, so cosines and their means are taken between unit vectors."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def shared_direction(signatures: np.ndarray) -> np.ndarray:
    """Unit vector along the mean of the unit-length `signatures`: of all directions, the one
    with the best mean cosine over them (the direction every compound shares)."""
    mean = unit_rows(signatures).mean(0)
    return mean / np.linalg.norm(mean)


def _ridge_fit_predict(
    kernel: np.ndarray, z: np.ndarray, cross: np.ndarray, penalty: float
) -> np.ndarray:
    """Kernel ridge of `z` around its mean: mean + cross @ (kernel + penalty I)^-1 (z - mean)."""
    mean = z.mean(0)
    weights = np.linalg.solve(kernel + penalty * np.eye(len(kernel)), z - mean)
    return mean + cross @ weights


def structure_ridge(
    train_sim: np.ndarray,
    train_z: np.ndarray,
    test_sim: np.ndarray,
    seed: int,
    penalties: Sequence[float] = RIDGE_PENALTIES,
    folds: int = RIDGE_FOLDS,
) -> tuple[np.ndarray, dict]:
    """Signature directions predicted from structure alone: Tanimoto-kernel ridge regression
    of the unit-length training signatures, around their mean (the shared direction).

    How much a compound's structure says about its signature beyond the direction every
    compound shares, with no expression model at all. The penalty is the one with the best
    mean cosine in a cross-validation over the training compounds built like the held-out
    split: each fold is whole Tanimoto clusters (`CLUSTER_THRESHOLD`, seeded), and its fit
    drops every compound within the threshold of a fold compound. Ties go to the larger
    penalty. `train_sim[n, n]`, `train_z[n, genes]`, `test_sim[m, n]`; returns the test
    predictions `[m, genes]` and {"cv_mean_cosine": {penalty: cosine}, "chosen", "folds"}.
    """
    kernel = np.asarray(train_sim, dtype=np.float64)
    cross = np.asarray(test_sim, dtype=np.float64)
    if not (np.isfinite(kernel).all() and np.isfinite(cross).all()):
        raise ValueError("the structure ridge needs finite similarities (unparsed SMILES?)")
    z = unit_rows(train_z)
    # its own stream (cluster_split draws from seed + 77): the folds do not move the split
    rng = np.random.default_rng(seed + 91)
    cluster_of, leaders = leader_clusters(kernel, list(range(len(z))), CLUSTER_THRESHOLD, rng)
    if len(leaders) < 2:
        raise ValueError("the structure ridge's cross-validation needs two clusters or more")
    n_folds = min(folds, len(leaders))
    fold_of_leader = {lead: j % n_folds for j, lead in enumerate(rng.permutation(leaders))}
    fold = np.array([fold_of_leader[cluster_of[k]] for k in range(len(z))])
    cv = {}
    for penalty in penalties:
        cosines = []
        for f in range(n_folds):
            held = np.flatnonzero(fold == f)
            fit = np.flatnonzero((fold != f) & (kernel[:, held].max(1) < CLUSTER_THRESHOLD))
            pred = _ridge_fit_predict(
                kernel[np.ix_(fit, fit)], z[fit], kernel[np.ix_(held, fit)], penalty
            )
            cosines.append(np.sum(unit_rows(pred) * z[held], axis=1))
        cv[float(penalty)] = float(np.mean(np.concatenate(cosines)))
    chosen = max(cv, key=lambda p: (cv[p], p))
    pred = _ridge_fit_predict(kernel, z, cross, chosen)
    return pred, {"cv_mean_cosine": cv, "chosen": chosen, "folds": n_folds}


@dataclass
class SignatureBaselines:
    """`signature_baselines`' answer."""

    cosines: dict[str, list[float]]  # baseline -> cosine with each held-out signature
    shared: np.ndarray  # `shared_direction` of the training consensus signatures
    record: dict  # {"n_train_consensus", "structure_ridge": its cross-validation}


def signature_baselines(
    conditions: Sequence[Condition],
    train: Sequence[int],
    test: Sequence[int],
    similarity: Callable[[list[str], list[str]], np.ndarray],
    seed: int,
) -> SignatureBaselines:
    """Per held-out consensus compound, the cosine of each baseline's signature with the
    measured one.

    Baselines: no change (effect 0, cosine 0); the mean signature of the training consensus
    compounds; the mean of their unit-length signatures (`shared_direction`: what a model that
    learned nothing compound-specific would at best give on the training compounds); the
    signature of the training compound nearest by Tanimoto; and the structure ridge
    (`structure_ridge`: directions regressed on structure, no expression model).
    """
    train_c = [conditions[i] for i in train if conditions[i].source == "consensus"]
    train_z = np.stack([c.treated[0] for c in train_c])
    train_smiles = [c.smiles for c in train_c]
    sim = similarity([conditions[i].smiles for i in test], train_smiles)
    ridge, ridge_record = structure_ridge(
        similarity(train_smiles, train_smiles), train_z, sim, seed
    )
    shared = shared_direction(train_z)
    constant = {"mean_signature": train_z.mean(0), "mean_unit_signature": shared}
    rows: dict[str, list[float]] = {
        name: [] for name in (*constant, "nearest_by_tanimoto", "structure_ridge", "no_change")
    }
    for j, i in enumerate(test):
        real = conditions[i].treated[0]
        for name, value in constant.items():
            rows[name].append(_cosine(value, real))
        rows["nearest_by_tanimoto"].append(_cosine(train_z[int(np.nanargmax(sim[j]))], real))
        rows["structure_ridge"].append(_cosine(ridge[j], real))
        rows["no_change"].append(0.0)
    record = {"n_train_consensus": len(train_c), "structure_ridge": ridge_record}
    return SignatureBaselines(rows, shared, record)


def signature_evaluation(
    conditions: Sequence[Condition],
    train: Sequence[int],
    test: Sequence[int],
    model_effects: dict[int, np.ndarray],
    similarity: Callable[[list[str], list[str]], np.ndarray],
    seed: int,
) -> dict:
    """Cosine of predicted effect vs measured z-signature on held-out consensus compounds,
    beside `signature_baselines`; and how far the predictions lean on the shared direction
    (their mean cosine with it) and what the rest of them, their compound-specific part,
    carries (its mean cosine with the measured signatures)."""
    baselines = signature_baselines(conditions, train, test, similarity, seed)
    measured = [conditions[i].treated[0] for i in test]
    model = np.array([_cosine(model_effects[i], m) for i, m in zip(test, measured, strict=True)])
    rows = {"model": model, **baselines.cosines}
    table = {
        name: {"mean_cosine": float(np.mean(v)), "median_cosine": float(np.median(v))}
        for name, v in rows.items()
    }
    for name, cosines in baselines.cosines.items():
        if name != "no_change":
            table["model"][f"fraction_better_than_{name}"] = float(np.mean(model > cosines))
    predicted = unit_rows(np.stack([model_effects[i] for i in test]))
    along = predicted @ baselines.shared
    specific = predicted - along[:, None] * baselines.shared
    specific[np.linalg.norm(specific, axis=1) < 1e-9] = 0.0  # rounding of "no specific part"
    table["model"]["mean_cosine_with_shared_direction"] = float(np.mean(along))
    table["model"]["specific_part_mean_cosine"] = float(
        np.mean([_cosine(v, m) for v, m in zip(specific, measured, strict=True)])
    )
    return {"n_test_compounds": len(test), **baselines.record, "metrics": table}


def _auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """AUROC of `positive` for a reversal score (lower = stronger reversal; NaN ranks last)."""
    key = -np.where(np.isnan(scores), np.inf, scores)
    pos, neg = key[positive], key[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


# near-empty fingerprints: a model that ranks them high scores noise, not chemistry
NEAR_EMPTY_COMPOUNDS = ("glycerol", "mannitol", "lithium chloride")


def tcga_ranking_evaluation(
    bundle_dir, data, example, *, seed: int = 0, draws: int = 3, normal_where="condition=normal"
) -> dict:
    """L01 AUROC of the bundle's rankings on a patient example, next to classic connectivity.

    Reads the bundle (graphs + library), the example file (tumours; normals by `normal_where`),
    `l1000/consensi_drugbank.parquet` and `drugs/drugbank.tsv` (ATC codes: evaluation labels,
    never model inputs). Scores every library drug at the reference doses as the clinic side
    does (Pearson of the effect with tumour - normal, mean over doses) with two effects:
    `delta` (pred - tumour) and `contrast` (pred - pred(no drug), the 528-zero vector). Classic
    connectivity: Pearson of each measured consensus signature with tumour - normal.
    Returns per-effect mean AUROC over patients (all flagged library drugs, and the drugs both
    methods score), the no-drug control's and the near-empty compounds' rank percentiles.
    """
    from pathlib import Path

    import pandas as pd

    from unicure_rt.bundle.load import load_bundle
    from unicure_rt.defaults import REFERENCE_DOSES_UM
    from unicure_rt.drugs.fingerprints import inchikeys
    from unicure_rt.drugs.vectors import control_vectors, drug_vectors
    from unicure_rt.patients.load import load_patient
    from unicure_rt.runtime.embed import embed_profiles, mean_embedding
    from unicure_rt.runtime.sessions import RuntimeOptions, create_session
    from unicure_rt.runtime.tokenizer import Tokenizer
    from unicure_rt.scoring.effects import reversal_scores
    from unicure_rt.scoring.options import resolve_library

    data = Path(data)
    bundle = load_bundle(bundle_dir)
    library = resolve_library(bundle, None)
    patient = load_patient(example, normal_where=normal_where)
    tokenizer = Tokenizer.from_spec(bundle.tokenizer)
    backbone, _ = create_session(bundle.graph_path("backbone"), RuntimeOptions())
    flexpert, _ = create_session(bundle.graph_path("flexpert"), RuntimeOptions())
    present = [g for g in bundle.genes if g in set(patient.genes)]
    genes = np.array([bundle.genes.index(g) for g in present])
    tumour = patient.tumour[present].to_numpy(np.float64)
    signature = tumour - patient.normal[present].to_numpy(np.float64)
    emb, _ = mean_embedding(
        embed_profiles(backbone, tokenizer, patient.tumour, seed=seed, draws=draws)
    )

    def run(cells, drug):
        return flexpert.run(["expression"], {"cell_embedding": cells, "drug": drug})[0][:, genes]

    embeddings = library.embeddings
    flags = library.metadata["antineoplastic"]
    known = flags.notna().to_numpy()
    positive = flags[known].astype(bool).to_numpy()
    names = pd.Series(library.names).str.lower()
    consensus = pd.read_parquet(data / "l1000/consensi_drugbank.parquet")
    bank = pd.read_csv(
        data / "drugs/drugbank.tsv", sep="\t", usecols=["drugbank_id", "inchikey", "atc_codes"]
    ).set_index("drugbank_id")
    bank = bank.reindex(consensus.index)
    has_atc = bank["atc_codes"].notna().to_numpy()
    classic_l01 = (
        bank["atc_codes"]
        .fillna("")
        .map(lambda c: any(x.strip().startswith("L01") for x in c.split("|")))
        .to_numpy()
    )
    z = consensus[present].to_numpy(np.float64)
    lib_keys = inchikeys(
        library.metadata.get("inchi_key", pd.Series([None] * len(library)))
    ).fillna("")
    row_of = {k: i for i, k in reversed(list(enumerate(lib_keys))) if k}
    shared = [
        (j, row_of[k])
        for j, k in enumerate(inchikeys(bank["inchikey"]).fillna(""))
        if k in row_of and has_atc[j]
    ]
    per_patient = []
    for i in range(len(tumour)):
        cells = np.repeat(emb[i][None], len(library), axis=0)
        base = run(emb[i][None], control_vectors(1))[0].astype(np.float64)
        scores = {"delta": [], "contrast": []}
        for dose in REFERENCE_DOSES_UM:
            pred = run(cells, drug_vectors(embeddings, dose))
            scores["delta"].append(reversal_scores(pred, tumour[i], signature[i]))
            scores["contrast"].append(reversal_scores(pred, base, signature[i]))
        classic = np.array([np.corrcoef(v, signature[i])[0, 1] for v in z])
        entry = {
            "profile": str(patient.tumour.index[i]),
            "classic_auroc": _auroc(classic[has_atc], classic_l01[has_atc]),
        }
        cj = np.array([j for j, _ in shared])
        lr = np.array([r for _, r in shared])
        entry["classic_auroc_shared"] = _auroc(classic[cj], classic_l01[cj])
        no_drug = float(reversal_scores(base[None], tumour[i], signature[i])[0])
        for effect, values in scores.items():
            mean = np.mean(values, axis=0)
            key = np.where(np.isnan(mean), np.inf, mean)
            entry[f"{effect}_auroc"] = _auroc(mean[known], positive)
            entry[f"{effect}_auroc_shared"] = _auroc(mean[lr], classic_l01[cj])
            # share of library drugs ranked above the no-drug control (0 = control ranks first)
            control = 0.0 if effect == "contrast" else no_drug
            entry[f"{effect}_no_drug_percentile"] = (
                1.0 if effect == "contrast" else float(np.mean(key < control))
            )
            for compound in NEAR_EMPTY_COMPOUNDS:
                rows = np.flatnonzero(names == compound)
                if len(rows):
                    entry[f"{effect}_percentile_{compound}"] = float(np.mean(key < key[rows[0]]))
        per_patient.append(entry)
    frame = pd.DataFrame(per_patient).set_index("profile")
    return {
        "example": str(example),
        "n_patients": len(frame),
        "n_library_drugs_flagged": int(known.sum()),
        "n_library_l01": int(positive.sum()),
        "n_consensus_with_atc": int(has_atc.sum()),
        "n_shared_drugs": len(shared),
        "mean": frame.mean().to_dict(),
        "per_patient": frame.to_dict(orient="index"),
        "note": "contrast: the no-drug control's effect is zero, so its score is undefined "
        "(NaN) and it ranks last (percentile 1.0)",
    }
