"""Baselines of the held-out consensus evaluation: leader clusters, the structure ridge and the
constant directions (`unicure_rt.train.evaluate`, no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from unicure_rt.train import evaluate as E
from unicure_rt.train.data import Condition


def _tanimoto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tanimoto of binary fingerprints, rows of `a` against rows of `b`."""
    both = a.astype(np.float64) @ b.T.astype(np.float64)
    return both / (a.sum(1)[:, None] + b.sum(1)[None, :] - both)


def _structured(n: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Binary fingerprints in families (shared core bits) and signatures that follow the bits:
    a shared direction plus a linear function of the fingerprint, plus noise."""
    rng = np.random.default_rng(seed)
    cores = rng.random((n // 10, 256)) < 0.08
    fps = cores[np.arange(n) % len(cores)] | (rng.random((n, 256)) < 0.03)
    weights = rng.normal(size=(256, 50))
    shared = rng.normal(size=50) * 3
    z = shared + fps @ weights + noise * rng.normal(size=(n, 50))
    return fps, z


def test_leader_clusters_join_a_close_leader_and_leaders_stay_apart():
    fps, _ = _structured(120, seed=0, noise=1.0)
    sim = _tanimoto(fps, fps)
    cluster_of, leaders = E.leader_clusters(
        sim, list(range(len(fps))), 0.4, np.random.default_rng(3)
    )
    assert sorted(cluster_of) == list(range(len(fps)))
    assert leaders == [k for k, lead in cluster_of.items() if k == lead]
    for k, lead in cluster_of.items():
        assert sim[k, lead] >= 0.4 or k == lead
    pairs = sim[np.ix_(leaders, leaders)][~np.eye(len(leaders), dtype=bool)]
    assert (pairs < 0.4).all()
    again = E.leader_clusters(sim, list(range(len(fps))), 0.4, np.random.default_rng(3))
    assert again == (cluster_of, leaders)


def test_structure_ridge_with_nothing_similar_predicts_the_shared_direction():
    fps, z = _structured(80, seed=1, noise=1.0)
    pred, info = E.structure_ridge(_tanimoto(fps, fps), z, np.zeros((3, len(z))), seed=0)
    shared = np.broadcast_to(E.shared_direction(z), pred.shape)
    np.testing.assert_allclose(E.unit_rows(pred), shared, atol=1e-12)
    assert info["chosen"] in E.RIDGE_PENALTIES and set(info["cv_mean_cosine"]) == set(
        E.RIDGE_PENALTIES
    )


def test_structure_ridge_learns_signatures_that_follow_structure():
    fps, z = _structured(300, seed=2, noise=1.0)
    train, test = np.arange(240), np.arange(240, 300)  # same families: structure carries signal
    sim = _tanimoto(fps, fps)
    pred, info = E.structure_ridge(sim[np.ix_(train, train)], z[train], sim[np.ix_(test, train)], 0)
    cosine = np.sum(E.unit_rows(pred) * E.unit_rows(z[test]), axis=1).mean()
    shared_only = (E.unit_rows(z[test]) @ E.shared_direction(z[train])).mean()
    assert cosine > shared_only + 0.1
    again, _ = E.structure_ridge(sim[np.ix_(train, train)], z[train], sim[np.ix_(test, train)], 0)
    np.testing.assert_array_equal(pred, again)
    # with signatures unrelated to structure, cross-validation prefers the largest penalty's
    # shrinkage over fitting noise: the chosen penalty grows
    noise = np.random.default_rng(5).normal(size=z.shape) + z.mean(0)
    _, pure_noise = E.structure_ridge(sim[np.ix_(train, train)], noise[train], sim[:0, train], 0)
    assert pure_noise["chosen"] > info["chosen"]


def _conditions(fps: np.ndarray, z: np.ndarray) -> list[Condition]:
    return [
        Condition(
            key=f"consensus:c{i}",
            source="consensus",
            cell_line="average",
            drug=f"c{i}",
            smiles=f"s{i}",
            dose_um=10.0,
            control="average",
            treated=z[i][None, :],
            pert_type="consensus",
            kind="signature",
        )
        for i in range(len(z))
    ]


def _problem(seed: int):
    fps, z = _structured(200, seed=seed, noise=8.0)
    conditions = _conditions(fps, z)
    index = {c.smiles: i for i, c in enumerate(conditions)}

    def similarity(a, b):
        return _tanimoto(fps[[index[s] for s in a]], fps[[index[s] for s in b]])

    return z, conditions, similarity, list(range(160)), list(range(160, 200))


def _mean_cosine(direction: np.ndarray, rows: np.ndarray) -> float:
    return float(
        np.mean(rows @ direction / np.linalg.norm(rows, axis=1)) / np.linalg.norm(direction)
    )


def test_signature_evaluation_scores_each_baseline_by_its_own_definition():
    z, conditions, similarity, train, test = _problem(seed=4)
    perfect = {i: z[i] * 2.0 for i in test}
    result = E.signature_evaluation(conditions, train, test, perfect, similarity, seed=0)
    m = result["metrics"]
    assert m["model"]["mean_cosine"] > 0.999
    assert m["no_change"]["mean_cosine"] == 0.0
    assert result["n_train_consensus"] == 160 and result["n_test_compounds"] == 40
    assert result["structure_ridge"]["chosen"] in E.RIDGE_PENALTIES
    held = z[test]
    unit_mean = (z[train] / np.linalg.norm(z[train], axis=1, keepdims=True)).mean(0)
    assert abs(m["mean_unit_signature"]["mean_cosine"] - _mean_cosine(unit_mean, held)) < 1e-12
    assert abs(m["mean_signature"]["mean_cosine"] - _mean_cosine(z[train].mean(0), held)) < 1e-12
    # the shared direction has the best mean cosine over the training compounds of any
    # direction: here the mean signature and random ones
    shared = E.shared_direction(z[train])
    others = [z[train].mean(0), *np.random.default_rng(0).normal(size=(20, z.shape[1]))]
    for other in others:
        assert _mean_cosine(shared, z[train]) >= _mean_cosine(other, z[train])


def test_signature_evaluation_splits_predictions_into_shared_and_compound_specific_parts():
    z, conditions, similarity, train, test = _problem(seed=6)
    shared = E.shared_direction(z[train])
    only_shared = E.signature_evaluation(
        conditions, train, test, {i: 3.0 * shared for i in test}, similarity, seed=0
    )["metrics"]
    assert abs(only_shared["model"]["mean_cosine_with_shared_direction"] - 1.0) < 1e-12
    assert only_shared["model"]["specific_part_mean_cosine"] == 0.0
    model = only_shared["model"]["mean_cosine"]
    assert abs(model - only_shared["mean_unit_signature"]["mean_cosine"]) < 1e-12
    # a perfect model: its parts computed here by hand from the measured signatures
    perfect = E.signature_evaluation(
        conditions, train, test, {i: z[i] for i in test}, similarity, seed=0
    )["metrics"]["model"]
    units = z[test] / np.linalg.norm(z[test], axis=1, keepdims=True)
    along = units @ shared
    rest = units - np.outer(along, shared)
    rest_cosine = np.sum(rest * units, axis=1) / np.linalg.norm(rest, axis=1)
    assert abs(perfect["mean_cosine_with_shared_direction"] - along.mean()) < 1e-12
    assert abs(perfect["specific_part_mean_cosine"] - rest_cosine.mean()) < 1e-12


def test_structure_ridge_refuses_a_single_cluster_and_unparsed_structures():
    fps, z = _structured(30, seed=7, noise=1.0)
    one_family = np.ones((30, 30))
    with pytest.raises(ValueError, match="two clusters"):
        E.structure_ridge(one_family, z, one_family[:2], seed=0)
    sim = _tanimoto(fps, fps)
    sim[3, 5] = np.nan
    with pytest.raises(ValueError, match="finite"):
        E.structure_ridge(sim, z, sim[:2], seed=0)
