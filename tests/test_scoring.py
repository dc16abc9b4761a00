import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import pearsonr

from unicure_rt.scoring import ascending_ranks, reversal_scores


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
