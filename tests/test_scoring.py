import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import pearsonr

from unicure_rt.scoring import ascending_ranks, drug_labels, reversal_scores


def test_scores_match_scipy_pearson():
    rng = np.random.default_rng(0)
    predicted = rng.normal(size=(20, 50))
    tumour, signature = rng.normal(size=50), rng.normal(size=50)
    scores = reversal_scores(predicted, tumour, signature)
    expected = [pearsonr(p - tumour, signature).statistic for p in predicted]
    np.testing.assert_allclose(scores, expected, atol=1e-12)


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
    assert ascending_ranks(scores).tolist() == [2, 1]


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(-5, 5)))
def test_ranks_are_a_permutation_most_negative_first(scores):
    ranks = ascending_ranks(scores)
    assert sorted(ranks.tolist()) == list(range(1, len(scores) + 1))
    assert scores[ranks == 1][0] == scores.min()
    order = np.argsort(ranks)
    assert np.all(np.diff(scores[order]) >= 0)


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
