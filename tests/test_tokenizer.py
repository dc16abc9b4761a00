import numpy as np
import pytest

from unicure_rt.errors import UserError
from unicure_rt.runtime.tokenizer import Tokenizer

GENES = ["A", "B", "C", "D", "E", "F"]
LOCI = {
    "A": ["1", 300],
    "B": ["1", 100],
    "C": ["2", 50],
    "D": ["X", 10],
    "E": ["2", 20],
    "F": ["X", 5],
}


def make(padding="masked", weighting="linear", sample_size=64, pad_length=80, aliases=None):
    spec = {
        "tokens": ["<pad>", "<cls>", "<chrom_close>", "chrom:1", "chrom:2", "chrom:X"]
        + [f"gene:{g}" for g in GENES],
        "gene_loci": LOCI,
        "pad_length": pad_length,
        "sample_size": sample_size,
        "padding": padding,
        "weighting": weighting,
        "aliases": aliases or {},
    }
    return Tokenizer.from_spec(spec)


def test_sentence_structure_follows_uce():
    tok = make()
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    sentence = tok.sentence(values, np.random.default_rng(0))
    assert sentence[0] == tok.cls_token
    assert len(sentence) == 1 + 64 + 2 * 3
    chrom_of = dict(zip(tok.gene_tokens.tolist(), tok.gene_chrom_tokens.tolist(), strict=True))
    start_of = dict(zip(tok.gene_tokens.tolist(), tok.gene_starts.tolist(), strict=True))
    i, seen = 1, []
    while i < len(sentence):
        open_token = sentence[i]
        assert open_token in {3, 4, 5}
        seen.append(open_token)
        j = i + 1
        while sentence[j] != tok.chrom_close_token:
            assert chrom_of[sentence[j]] == open_token
            j += 1
        starts = [start_of[t] for t in sentence[i + 1 : j]]
        assert starts == sorted(starts)
        i = j + 1
    assert sorted(seen) == [3, 4, 5]


def test_draws_follow_weights():
    tok = make(sample_size=20000, pad_length=20100)
    values = np.array([0.0, 1.0, 3.0, 0.0, 0.0, 0.0])
    sentence = tok.sentence(values, np.random.default_rng(1))
    genes = sentence[np.isin(sentence, tok.gene_tokens)]
    assert set(genes.tolist()) == {tok.gene_tokens[1], tok.gene_tokens[2]}
    share = np.mean(genes == tok.gene_tokens[2])
    assert abs(share - 0.75) < 0.02


def test_log1p_weighting_uses_counts():
    tok = make(weighting="log1p")
    values = np.log2(np.array([0.0, 1.0, 3.0, 0, 0, 0]) + 1)
    weights = tok.weights(values)
    expected = np.log1p([0, 1.0, 3.0, 0, 0, 0])
    np.testing.assert_allclose(weights, expected / expected.sum())


def test_seeded_and_independent_of_other_profiles():
    tok = make()
    profiles = np.abs(np.random.default_rng(2).normal(size=(3, 6))) + 0.1
    a_tokens, a_mask = tok.encode(profiles, ["p0", "p1", "p2"], seed=7, draws=2)
    b_tokens, _ = tok.encode(profiles[1:2], ["p1"], seed=7, draws=2)
    length = b_tokens.shape[1]
    np.testing.assert_array_equal(a_tokens[2:4, :length], b_tokens)
    c_tokens, _ = tok.encode(profiles, ["p0", "p1", "p2"], seed=8, draws=2)
    assert not np.array_equal(a_tokens, c_tokens)
    assert a_mask.dtype == np.int64 and set(np.unique(a_mask)) <= {0, 1}
    assert not np.array_equal(a_tokens[0], a_tokens[1])


def test_reference_padding_pads_to_fixed_length():
    tok = make(padding="reference", pad_length=100)
    tokens, mask = tok.encode(np.ones((2, 6)), ["a", "b"], seed=0)
    assert tokens.shape == (2, 100)
    assert (tokens[mask == 0] == tok.pad_token).all()
    assert mask.sum(axis=1).tolist() == [1 + 64 + 6, 1 + 64 + 6]


def test_empty_profile_is_a_user_error():
    tok = make()
    with pytest.raises(UserError, match="no positive expression"):
        tok.encode(np.zeros((1, 6)), ["empty"], seed=0)
    with pytest.raises(UserError, match="NaN"):
        tok.encode(np.full((1, 6), np.nan), ["nan"], seed=0)


def test_align_uses_aliases_and_refuses_no_overlap():
    tok = make(aliases={"OLD_A": "A"})
    cols, vocab = tok.align(["Z", "OLD_A", "C"])
    assert cols.tolist() == [1, 2] and vocab.tolist() == [0, 2]
    with pytest.raises(UserError, match="vocabulary"):
        tok.align(["Z", "Y"])


def test_unlogged_weighting_uses_linear_scale_expression():
    tok = make(weighting="unlogged")
    values = np.array([1.0, 2.0, 3.0, 0.0, 0.0, 0.0])
    expected = 2.0**values - 1.0
    np.testing.assert_allclose(tok.weights(values), expected / expected.sum())
