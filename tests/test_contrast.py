"""Scoring effects, ties, unscorable drugs and the per-drug null, on the bundled model and the
TCGA breast example (both in the repository)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kstest, pearsonr

from unicure_rt.bundle.load import load_bundle
from unicure_rt.drugs.vectors import drug_vectors
from unicure_rt.patients.load import load_patient
from unicure_rt.runtime.sessions import RuntimeOptions, create_session
from unicure_rt.scoring.null import permuted_signatures, within_profile_fdr
from unicure_rt.scoring.options import ScoreOptions, resolve_library
from unicure_rt.scoring.pipeline import _profile_ranking, score_patient
from unicure_rt.scoring.runner import FlexPertRunner

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tcga_brca.h5ad"


@pytest.fixture(scope="module")
def bundle():
    return load_bundle()


@pytest.fixture(scope="module")
def patient():
    return load_patient(EXAMPLE, normal_where="condition=normal")


def sub_library(library, rows, embeddings=None):
    """The library restricted to `rows` (optionally with other embeddings), kept in memory."""
    rows = list(rows)
    emb = library.embeddings[rows] if embeddings is None else embeddings
    return dataclasses.replace(
        library,
        ids=[f"{library.ids[r]}#{k}" for k, r in enumerate(rows)],
        names=[library.names[r] for r in rows],
        metadata=library.metadata.iloc[rows].reset_index(drop=True),
        _embeddings=np.ascontiguousarray(emb, dtype=np.float32),
        _lookup=None,
    )


def test_control_vector_is_unscorable_under_contrast_and_scored_when_published(bundle, patient):
    library = resolve_library(bundle, None)
    emb = library.embeddings[:6].copy()
    emb[2] = 0.0  # with dose 0 this row's drug vector is the control: 528 zeros
    small = sub_library(library, range(6), emb)
    options = ScoreOptions(doses=(0.0,), draws=1, effect="contrast", permutations=99)
    ranking = score_patient(bundle, patient, library=small, options=options).ranking
    control = ranking[ranking["drug_id"] == small.ids[2]]
    assert control["score"].isna().all() and control["rank"].isna().all()
    assert control["p_value"].isna().all() and control["fdr"].isna().all()
    assert control["best_dose_uM"].isna().all()
    others = ranking[ranking["drug_id"] != small.ids[2]]
    assert others["rank"].notna().all()
    for _, rows in ranking.groupby("profile", sort=False):
        assert rows["rank"].isna().tolist()[-1]  # unranked rows come last
    published = score_patient(
        bundle, patient, library=small, options=dataclasses.replace(options, effect="published")
    ).ranking
    assert published["rank"].notna().all()


def test_contrast_is_prediction_minus_no_drug_prediction(bundle, patient):
    library = resolve_library(bundle, None)
    small = sub_library(library, range(0, 400, 40))
    session, _ = create_session(bundle.graph_path("flexpert"), RuntimeOptions(device="cpu"))
    options = ScoreOptions(doses=(1.0,), draws=1, effect="contrast", permutations=0)
    runner = FlexPertRunner(session, small, options)
    cell = np.random.default_rng(0).normal(size=(1, bundle.manifest["model"]["cell_dim"]))
    cell = cell.astype(np.float32)
    genes = np.arange(len(bundle.genes))
    tumour = patient.tumour[bundle.genes].to_numpy(np.float64)[0]
    signature = tumour - patient.normal[bundle.genes].to_numpy(np.float64)[0]
    table, _ = _profile_ranking(runner, cell[0], cell, genes, tumour, tumour - signature, options)
    no_drug = session.run(
        ["expression"], {"cell_embedding": cell, "drug": np.zeros((1, 528), np.float32)}
    )[0][0]
    predicted = session.run(
        ["expression"],
        {
            "cell_embedding": np.repeat(cell, len(small), 0),
            "drug": drug_vectors(small.embeddings, 1),
        },
    )[0]
    expected = [pearsonr(p - no_drug, signature).statistic for p in predicted]
    np.testing.assert_allclose(table["score"], expected, atol=1e-6)
    expected_ranks = pd.Series(expected).rank(method="min").to_numpy()
    np.testing.assert_array_equal(table["rank"].to_numpy(dtype=float), expected_ranks)


def test_identical_embeddings_share_one_score_and_one_rank(bundle, patient):
    library = resolve_library(bundle, None)
    rows = [5, 17, 5, 99, 17, 5]
    small = sub_library(library, rows)
    options = ScoreOptions(doses=(0.12, 3.33), draws=1, effect="contrast", permutations=99)
    ranking = score_patient(bundle, patient, library=small, options=options).ranking
    for _, profile in ranking.groupby("profile"):
        by_row = profile.set_index(profile["drug_id"].str.split("#").str[1].astype(int))
        for copies in ([0, 2, 5], [1, 4]):
            first = by_row.loc[copies[0]]
            for other in copies[1:]:
                for column in ("rank", "score", "z", "p_value", "fdr"):
                    assert by_row.loc[other, column] == first[column], column
        assert profile["rank"].nunique() == 3  # three distinct compounds


def test_p_values_are_uniform_on_gene_shuffled_signatures(bundle, patient):
    """A query signature whose genes are shuffled has no relation to any drug: each drug's
    empirical p-value against its gene-permutation null must then be uniform."""
    library = resolve_library(bundle, None)
    small = sub_library(library, range(0, 4000, 100))  # 40 drugs
    session, _ = create_session(bundle.graph_path("flexpert"), RuntimeOptions(device="cpu"))
    options = ScoreOptions(doses=(1.0,), draws=1, effect="contrast", permutations=199, seed=7)
    runner = FlexPertRunner(session, small, options)
    cell = np.random.default_rng(1).normal(size=bundle.manifest["model"]["cell_dim"])
    cell = cell.astype(np.float32)
    genes = np.arange(len(bundle.genes))
    tumour = patient.tumour[bundle.genes].to_numpy(np.float64)[0]
    signature = tumour - patient.normal[bundle.genes].to_numpy(np.float64)[0]
    rng = np.random.default_rng(11)
    p_values = []
    for query in range(300):
        shuffled = rng.permutation(signature)
        table, _ = _profile_ranking(
            runner, cell, cell[None], genes, tumour, tumour - shuffled, options
        )
        p_values.append(table["p_value"].to_numpy()[query % len(small)])  # one drug per query
    result = kstest(p_values, "uniform")
    assert result.pvalue > 0.01, result
    assert 0.35 < np.mean(p_values) < 0.65


def test_planted_reversal_gets_a_small_p_value():
    """A drug whose effect is exactly the reversed signature sits below every permutation."""
    rng = np.random.default_rng(2)
    signature = rng.normal(size=978)
    null = permuted_signatures(signature, 999, 0)
    effect = -(signature - signature.mean()) / np.linalg.norm(signature - signature.mean())
    observed = (
        effect @ (signature - signature.mean()) / np.linalg.norm(signature - signature.mean())
    )
    assert np.isclose(observed, -1.0)
    assert np.sum((effect @ null.T) <= observed) == 0


def test_fdr_is_benjamini_hochberg_and_monotone_in_p():
    rng = np.random.default_rng(4)
    p = np.concatenate([rng.uniform(size=200), rng.uniform(0, 0.001, size=20), [np.nan, np.nan]])
    fdr = within_profile_fdr(p)
    assert np.isnan(fdr[-2:]).all()
    order = np.argsort(p[:-2])
    assert np.all(np.diff(fdr[:-2][order]) >= -1e-15)
    assert np.all(fdr[:-2] >= p[:-2])
    n = 220
    ranks = pd.Series(p[:-2]).rank(method="max").to_numpy()
    raw = np.minimum(1, p[:-2] * n / ranks)
    # BH step-up: the adjusted value is the running minimum of p*n/rank from the largest p down
    stepped = np.minimum.accumulate(raw[order][::-1])[::-1]
    np.testing.assert_allclose(fdr[:-2][order], stepped, rtol=1e-12)


def test_null_columns_follow_rank_by(bundle, patient):
    library = resolve_library(bundle, None)
    small = sub_library(library, range(0, 3000, 60))
    by_z = ScoreOptions(doses=(1.0,), draws=1, effect="contrast", rank_by="z", permutations=199)
    ranking = score_patient(bundle, patient, library=small, options=by_z).ranking
    for _, rows in ranking.groupby("profile"):
        expected = rows["z"].rank(method="min").astype("Int64")
        assert rows["rank"].equals(expected.rename("rank"))
    none = dataclasses.replace(by_z, rank_by="score", permutations=0)
    plain = score_patient(bundle, patient, library=small, options=none).ranking
    assert not {"z", "p_value", "fdr"} & set(plain.columns)
    with pytest.raises(Exception, match="--rank-by z needs the null"):
        dataclasses.replace(by_z, permutations=0)


def test_terminal_lists_a_compound_under_several_ids_once():
    from unicure_rt.scoring.effects import compound_labels
    from unicure_rt.scoring.results import l01_mark, top_compounds

    ranked = pd.DataFrame(
        {
            "drug_id": ["BRD-1", "BRD-2", "BRD-3", "BRD-4", "BRD-5", "BRD-6"],
            "drug_name": ["retinol", "retinol", "tretinoin", "tretinoin", None, "x"],
            "same_structure_ids": [
                "BRD-1|BRD-2",
                "BRD-1|BRD-2",
                "BRD-3",
                "BRD-4",
                "BRD-5",
                "BRD-6",
            ],
            "rank": pd.array([1, 1, 1, 4, 5, None], dtype="Int64"),
        }
    )
    shown = top_compounds(ranked, 10)
    assert shown["drug_id"].tolist() == ["BRD-1", "BRD-3", "BRD-4", "BRD-5"]
    assert shown["copies"].tolist() == [2, 1, 1, 1]
    assert compound_labels(shown) == [
        "retinol x2",
        "tretinoin [BRD-3]",
        "tretinoin [BRD-4]",
        "BRD-5",
    ]
    assert top_compounds(ranked, 2)["drug_id"].tolist() == ["BRD-1", "BRD-3"]
    flags = ranked.assign(antineoplastic=[None, True, None, False, None, None])
    shown = top_compounds(flags, 10)  # a compound is flagged when one of its ids is
    assert [l01_mark(f) for f in shown["antineoplastic"]] == ["yes", "", "", ""]


def test_scores_and_null_do_not_depend_on_the_drug_batch(bundle, patient):
    """Every drug's prediction is computed alone, so batch sizes (here 7 and `score`'s default)
    give the same predictions to the last bit, and the same scores and null up to float64
    rounding (BLAS's products block rows by the batch), also over a subset of the output genes."""
    library = resolve_library(bundle, None)
    small = sub_library(library, range(0, 2000, 50))  # 40 drugs
    session, _ = create_session(bundle.graph_path("flexpert"), RuntimeOptions(device="cpu"))
    cell = np.random.default_rng(2).normal(size=(1, bundle.manifest["model"]["cell_dim"]))
    cell = cell.astype(np.float32)
    genes = np.arange(0, len(bundle.genes), 3)
    tumour = patient.tumour[bundle.genes].to_numpy(np.float64)[0, genes]
    signature = tumour - patient.normal[bundle.genes].to_numpy(np.float64)[0, genes]
    null = permuted_signatures(signature, 50, seed=3)
    passes = []
    for batch in (7, ScoreOptions().drug_batch):
        options = ScoreOptions(doses=(0.5, 5.0), draws=1, effect="contrast", drug_batch=batch)
        runner = FlexPertRunner(session, small, options)
        baseline = runner.no_drug(cell)[:, genes]
        passes.append(runner.scores(cell, genes, baseline, signature, null=null, keep_top=40))
    small_batches, default_batches = passes
    assert small_batches.kept.keys() == default_batches.kept.keys() == set(range(40))
    for row, predictions in small_batches.kept.items():
        np.testing.assert_array_equal(predictions, default_batches.kept[row])
    np.testing.assert_allclose(small_batches.scores, default_batches.scores, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(small_batches.null.at_or_below, default_batches.null.at_or_below)
    for field in ("mean", "sd"):
        np.testing.assert_allclose(
            getattr(small_batches.null, field),
            getattr(default_batches.null, field),
            rtol=0,
            atol=1e-15,
        )
