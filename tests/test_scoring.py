import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import pearsonr

from unicure_rt.scoring.effects import (
    UNSCORABLE_RMS,
    ascending_ranks,
    dose_mean,
    drug_effects,
    drug_labels,
    reversal_scores,
)


def test_scores_match_scipy_pearson():
    rng = np.random.default_rng(0)
    predicted = rng.normal(size=(20, 50))
    tumour, signature = rng.normal(size=50), rng.normal(size=50)
    scores = reversal_scores(predicted, tumour, signature)
    expected = [pearsonr(p - tumour, signature).statistic for p in predicted]
    np.testing.assert_allclose(scores, expected, atol=1e-12)


def test_effects_over_a_subset_of_genes_equal_those_of_the_subset():
    rng = np.random.default_rng(1)
    predicted = rng.normal(size=(30, 40)).astype(np.float32)
    genes = np.array([3, 0, 7, 21, 22, 39, 5])
    tumour, signature = rng.normal(size=len(genes)), rng.normal(size=len(genes))
    subset = np.ascontiguousarray(predicted[:, genes])
    np.testing.assert_array_equal(
        drug_effects(predicted, tumour, genes=genes), drug_effects(subset, tumour)
    )
    np.testing.assert_array_equal(
        reversal_scores(predicted, tumour, signature, genes=genes),
        reversal_scores(subset, tumour, signature),
    )


def test_reversal_scores_minus_one():
    tumour = np.array([5.0, 6.0, 7.0, 8.0])
    signature = np.array([1.0, -1.0, 2.0, 0.0])
    predicted = tumour - 3.0 * signature
    assert np.isclose(reversal_scores(predicted[None], tumour, signature)[0], -1.0)


def test_constant_change_scores_nan_and_ranks_last():
    tumour = np.arange(5.0)
    scores = reversal_scores(
        np.stack([tumour + 1.0, tumour - np.arange(5.0)]), tumour, np.arange(5.0)
    )
    assert np.isnan(scores[0]) and np.isclose(scores[1], -1.0)
    ranks = ascending_ranks(scores)
    assert np.isnan(ranks[0]) and ranks[1] == 1  # unscorable: left unranked


def test_ties_share_the_lower_rank_as_pandas_min():
    scores = np.array([0.3, -0.2, 0.3, np.nan, -0.2, -0.5])
    expected = pd.Series(scores).rank(method="min").to_numpy()
    np.testing.assert_array_equal(ascending_ranks(scores), expected)
    assert ascending_ranks(scores).tolist()[:3] == [4.0, 2.0, 4.0]


def test_dose_mean_skips_nan_doses():
    per_dose = np.array([[0.2, np.nan, np.nan], [0.4, -0.1, np.nan]])
    np.testing.assert_allclose(dose_mean(per_dose), [0.3, -0.1, np.nan])


def test_contrast_of_a_constant_shift_is_unscorable():
    rng = np.random.default_rng(3)
    no_drug = rng.normal(size=978).astype(np.float32)
    predicted = np.stack([no_drug, no_drug + np.float32(0.7), no_drug + rng.normal(size=978)])
    scores = reversal_scores(
        predicted.astype(np.float32), no_drug, rng.normal(size=978), min_rms=UNSCORABLE_RMS
    )
    assert np.isnan(scores[0]) and np.isnan(scores[1]) and np.isfinite(scores[2])


@settings(max_examples=200, deadline=None)
@given(
    arrays(
        np.float64,
        st.integers(1, 40),
        elements=st.one_of(st.floats(-5, 5), st.just(np.nan), st.sampled_from([-1.0, 0.5])),
    )
)
def test_ranks_are_min_ranks_most_negative_first(scores):
    ranks = ascending_ranks(scores)
    np.testing.assert_array_equal(ranks, pd.Series(scores).rank(method="min").to_numpy())
    scored = ~np.isnan(scores)
    assert np.array_equal(np.isnan(ranks), ~scored)
    if scored.any():
        assert ranks[scored].min() == 1 and scores[ranks == 1][0] == np.nanmin(scores)
        order = np.argsort(ranks[scored])
        assert np.all(np.diff(scores[scored][order]) >= 0)


def test_drug_labels_tell_apart_one_name_under_two_ids():
    rows = pd.DataFrame(
        {
            "drug_id": ["BRD-1", "BRD-2", "BRD-3", "BRD-4", "BRD-1"],
            "drug_name": ["PD-0325901", "PD-0325901", "imatinib", None, "PD-0325901"],
        }
    )
    assert drug_labels(rows) == [
        "PD-0325901 [BRD-1]",
        "PD-0325901 [BRD-2]",
        "imatinib",
        "BRD-4",
        "PD-0325901 [BRD-1]",  # the same drug again (e.g. another cluster) keeps its label
    ]
    assert drug_labels(rows.drop(columns="drug_name")) == rows["drug_id"].tolist()
