"""Converting published-layout checkpoints (random weights) against an independent reference."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from fake_bundles import per_drug_flexpert_inputs
from published_fixtures import RENAME_CASES, make_published_state_dict, make_uce_files
from reference_impl import reference_cell_embedding, reference_expression, reference_forward

from unicure_rt.bundle.schema import CHROM_PREFIX, GENE_PREFIX
from unicure_rt.errors import UserError
from unicure_rt.runtime.tokenizer import Tokenizer
from unicure_rt.train.export.convert import (
    PUBLISHED_CHROM_OFFSET,
    PUBLISHED_GENE_OFFSET,
    REFERENCE_RENAMES,
    convert_checkpoint,
    convert_published,
    infer_config,
    published_vocabulary,
    read_protein_gene_list,
    read_species_chrom,
)
from unicure_rt.train.models import UniCureConfig

PAD_LENGTH, SAMPLE_SIZE, N_HEADS = 320, 256, 4
TOLERANCE = 1e-5
LAYERS = "uce_lora.module.transformer_encoder.layers."


@pytest.fixture(scope="module")
def uce(tmp_path_factory):
    return make_uce_files(tmp_path_factory.mktemp("uce"))


@pytest.fixture(scope="module")
def vocab(uce):
    return published_vocabulary(uce.species_chrom, uce.protein_embeddings)


@pytest.fixture(scope="module")
def state():
    return make_published_state_dict(pad_length=PAD_LENGTH, lora_layers=(1,), seed=1)


@pytest.fixture(scope="module")
def model(state, vocab):
    vocabulary, ids = vocab
    return convert_published(
        state, vocabulary, ids, config={"n_heads": N_HEADS, "sample_size": SAMPLE_SIZE}
    )


def tokenizer_for(vocabulary, pad_length=PAD_LENGTH, sample_size=SAMPLE_SIZE, padding="reference"):
    spec = {
        **vocabulary,
        "pad_length": pad_length,
        "sample_size": sample_size,
        "padding": padding,
        "weighting": "linear",
    }
    return Tokenizer.from_spec(spec)


def sentences(vocabulary, n, seed=0, **kwargs):
    tokenizer = tokenizer_for(vocabulary, **kwargs)
    rng = np.random.default_rng(seed)
    profiles = rng.lognormal(1.0, 1.0, size=(n, len(tokenizer.genes)))
    profiles[:, rng.random(len(tokenizer.genes)) < 0.3] = 0.0  # unexpressed genes
    return tokenizer.encode(profiles, [f"sample{i}" for i in range(n)], seed=seed)


def drug_vectors(n, combination=False, seed=0):
    rng = np.random.default_rng(seed)
    arms = []
    for _ in range(2 if combination else 1):
        dose = np.log10(rng.choice([0.04, 0.12, 0.37, 1.11, 3.33, 10.0], size=(n, 1)) + 1.0)
        arms.append(np.hstack([rng.normal(0, 1, (n, 512)), np.repeat(dose, 16, axis=1)]))
    vectors = np.hstack(arms).astype(np.float32)
    if combination:
        vectors[0, 528:] = 0.0  # a control arm
    return torch.from_numpy(vectors)


@torch.no_grad()
def run_model(model, tokens, mask, drug):
    cell = model.backbone(torch.as_tensor(tokens), torch.as_tensor(mask))
    return cell, model.predict(cell, drug)


def max_error(got, want):
    return (got.double() - want.double()).abs().max().item()


# ----------------------------------------------------------------------------- (a) parity


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("combination", [False, True], ids=["528", "1056"])
def test_converted_model_matches_reference(model, state, vocab, batch, combination):
    vocabulary, ids = vocab
    tokens, mask = sentences(vocabulary, batch, seed=batch)
    assert tokens.shape == (batch, PAD_LENGTH) and (mask.sum(1) < PAD_LENGTH).all()
    drug = drug_vectors(batch, combination, seed=batch)
    assert drug.shape[1] == (1056 if combination else 528)
    cell, expression = run_model(model, tokens, mask, drug)
    want_cell, want_expression = reference_forward(state, ids[tokens], mask, drug, N_HEADS)
    assert cell.shape == (batch, 1280) and expression.shape == (batch, 978)
    cell_error = max_error(cell, want_cell)
    expression_error = max_error(expression, want_expression)
    print(
        f"batch {batch}, drug {drug.shape[1]}: cell {cell_error:.2e}, expr {expression_error:.2e}"
    )
    assert cell_error <= TOLERANCE
    assert expression_error <= TOLERANCE
    # the production FlexPert on the reference's own cell embedding as well
    with torch.no_grad():
        expression_from_reference = model.predict(want_cell.float(), drug)
    assert max_error(expression_from_reference, want_expression) <= TOLERANCE


def test_full_length_sentences_from_a_pth_file(tmp_path, vocab):
    """Published sentence sizes (1024 draws, padded to 1536), loaded from a .pth on disk."""
    vocabulary, ids = vocab
    state = make_published_state_dict(
        pad_length=1536, lora_layers=(0, 1), seed=2, full_flexpert=False
    )
    path = tmp_path / "unicure.pth"
    torch.save(state, path)
    model = convert_published(path, vocabulary, ids, n_heads=N_HEADS)
    assert model.config.pad_length == 1536 and model.config.sample_size == 1024
    assert not model.training
    tokens, mask = sentences(vocabulary, 2, seed=5, pad_length=1536, sample_size=1024)
    drug = drug_vectors(2, seed=5)
    cell, expression = run_model(model, tokens, mask, drug)
    want_cell, want_expression = reference_forward(state, ids[tokens], mask, drug, N_HEADS)
    cell_error, expression_error = (
        max_error(cell, want_cell),
        max_error(expression, want_expression),
    )
    print(f"1536: cell {cell_error:.2e}, expr {expression_error:.2e}")
    assert cell_error <= TOLERANCE
    assert expression_error <= TOLERANCE


def test_lora_merge_uses_the_reference_formula(model, state):
    d = model.config.d_model
    lora = LAYERS + "1.self_attn.lora_module."
    base = LAYERS + "1.self_attn.module."
    attention = model.backbone.encoder.transformer_encoder.layers[1].self_attn
    want = state[base + "in_proj_weight"].clone()
    for part, name in enumerate("qkv"):
        delta = state[f"{lora}{name}_out.weight"] @ state[f"{lora}{name}_in.weight"]
        want[part * d : (part + 1) * d] += delta.T
    assert torch.allclose(attention.in_proj_weight, want, atol=1e-6)
    want_out = (
        state[base + "out_proj.weight"] + state[lora + "o_out.weight"] @ state[lora + "o_in.weight"]
    )
    assert torch.allclose(attention.out_proj.weight, want_out, atol=1e-6)
    assert torch.equal(attention.in_proj_bias, state[base + "in_proj_bias"])
    assert torch.equal(attention.out_proj.bias, state[base + "out_proj.bias"])
    plain = model.backbone.encoder.transformer_encoder.layers[0].self_attn
    assert torch.equal(plain.in_proj_weight, state[LAYERS + "0.self_attn.in_proj_weight"])


def test_parity_test_detects_a_standard_lora_merge(state, vocab):
    """Sanity of the parity test: merging without the transpose quirk is visibly wrong."""
    vocabulary, ids = vocab
    swapped = dict(state)
    lora = LAYERS + "1.self_attn.lora_module."
    for name in "qkv":  # (q_out' @ q_in').T == q_out @ q_in: the standard, untransposed delta
        swapped[f"{lora}{name}_in.weight"] = state[f"{lora}{name}_out.weight"].T.contiguous()
        swapped[f"{lora}{name}_out.weight"] = state[f"{lora}{name}_in.weight"].T.contiguous()
    wrong = convert_published(
        swapped, vocabulary, ids, n_heads=N_HEADS, config={"sample_size": SAMPLE_SIZE}
    )
    tokens, mask = sentences(vocabulary, 3)
    cell, _ = run_model(wrong, tokens, mask, drug_vectors(3))
    want = reference_cell_embedding(state, ids[tokens], mask, N_HEADS)
    assert max_error(cell, want) > 100 * TOLERANCE


# ----------------------------------------------------------------------------- (b) padding


def test_reference_padding_changes_the_embedding(model, state, vocab):
    vocabulary, ids = vocab
    tokens, mask = sentences(vocabulary, 1, seed=3)
    length = int(mask.sum())
    trimmed_tokens, trimmed_mask = tokens[:, :length], mask[:, :length]
    padded, _ = run_model(model, tokens, mask, drug_vectors(1))
    trimmed, _ = run_model(model, trimmed_tokens, trimmed_mask, drug_vectors(1))
    difference = max_error(padded, trimmed)
    print(f"padded vs trimmed (reference padding): {difference:.3g}")
    assert difference > 1e-4
    # the reference implementation agrees on both
    want = reference_cell_embedding(state, ids[trimmed_tokens], trimmed_mask, N_HEADS)
    assert max_error(trimmed, want) <= TOLERANCE


def test_masked_padding_does_not_depend_on_padding(state, vocab):
    vocabulary, ids = vocab
    masked = convert_published(
        state,
        vocabulary,
        ids,
        config={"n_heads": N_HEADS, "sample_size": SAMPLE_SIZE, "padding": "masked"},
    )
    assert masked.config.padding == "masked"
    tokens, mask = sentences(vocabulary, 2, seed=4)
    length = int(mask.sum(1).max())
    padded, _ = run_model(masked, tokens, mask, drug_vectors(2))
    trimmed, _ = run_model(masked, tokens[:, :length], mask[:, :length], drug_vectors(2))
    assert max_error(padded, trimmed) <= TOLERANCE


# ----------------------------------------------------------------------------- config


def test_config_is_inferred_from_shapes(model, vocab):
    _, ids = vocab
    c = model.config
    assert (c.n_layers, c.d_model, c.d_ff, c.token_dim, c.n_heads) == (2, 64, 128, 16, N_HEADS)
    assert (c.lora_layers, c.lora_rank, c.pad_length, c.vocab_size) == (
        (1,),
        4,
        PAD_LENGTH,
        len(ids),
    )
    assert (c.head_hidden, c.cell_dim, c.attn_dim, c.window, c.stride) == (1024, 1280, 64, 32, 16)
    assert (c.decoder_hidden, c.n_genes, c.fusion_dim, c.padding) == (2048, 978, 5056, "reference")
    assert c.sample_size == SAMPLE_SIZE and c.adaptor_hidden is None
    table = model.backbone.tokens.pe_embedding.weight
    assert table.shape == (len(ids), 16)


def test_config_inference_small_flexpert_no_lora_and_published_heads():
    state = make_published_state_dict(
        n_layers=1,
        d_model=1280,
        n_heads=20,
        d_ff=32,
        token_dim=8,
        lora_layers=(),
        vocab_rows=10,
        pad_length=16,
        head_hidden=32,
        full_flexpert=False,
    )
    config = infer_config(state, 10)
    assert config.n_heads == 20 and config.lora_layers == () and config.d_model == 1280
    assert (config.attn_dim, config.decoder_hidden, config.stride) == (8, 64, 16)
    template = UniCureConfig(n_heads=10, sample_size=8, weighting="log1p")
    config = infer_config(state, 10, config=template)
    assert (config.n_heads, config.sample_size, config.weighting, config.d_ff) == (
        10,
        8,
        "log1p",
        32,
    )
    assert infer_config(state, 10, n_heads=16).n_heads == 16


def test_sentences_longer_than_the_pad_length_are_warned_about(state, vocab):
    vocabulary, ids = vocab
    with pytest.warns(UserWarning, match="pad length 320"):
        convert_published(state, vocabulary, ids, n_heads=N_HEADS)  # sample_size 1024 > 320


def test_n_heads_is_required_off_the_published_width(state):
    with pytest.raises(UserError, match="n_heads"):
        infer_config(state, 100)
    with pytest.raises(UserError, match="d_model=32"):
        infer_config(state, 100, config={"d_model": 32, "n_heads": 4})
    with pytest.raises(UserError, match="bogus"):
        infer_config(state, 100, config={"bogus": 1, "n_heads": 4})


def test_converted_token_rows_are_the_published_ids(model, state, vocab):
    _, ids = vocab
    table = model.backbone.tokens.pe_embedding.weight
    assert torch.equal(table, state["uce_lora.module.pe_embedding.weight"][torch.as_tensor(ids)])


# ----------------------------------------------------------------------------- (c) bad files


def convert(state, vocab):
    vocabulary, ids = vocab
    return convert_published(
        state, vocabulary, ids, n_heads=N_HEADS, config={"sample_size": SAMPLE_SIZE}
    )


def test_missing_key_is_named(state, vocab):
    broken = dict(state)
    del broken[LAYERS + "0.linear1.bias"]
    with pytest.raises(UserError, match=r"missing keys: .*layers\.0\.linear1\.bias"):
        convert(broken, vocab)


def test_missing_lora_weights_are_named(state, vocab):
    broken = {k: v for k, v in state.items() if "lora_module.v_" not in k}
    with pytest.raises(UserError, match=r"lora_module\.v_in\.weight") as info:
        convert(broken, vocab)
    assert "lora_module.v_out.weight" in str(info.value)


def test_unexpected_key_is_named(state, vocab):
    broken = dict(state)
    broken["uce_lora.module.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(UserError, match=r"unexpected keys: uce_lora\.module\.extra_head\.weight"):
        convert(broken, vocab)


def test_many_missing_keys_are_counted(state, vocab):
    broken = {k: v for k, v in state.items() if ".layers.1." not in k}
    broken[LAYERS + "1.norm1.weight"] = state[LAYERS + "1.norm1.weight"]
    with pytest.raises(UserError, match=r"missing keys: .* \(\d+ in all\)"):
        convert(broken, vocab)


def test_wrong_shape_is_named(state, vocab):
    broken = dict(state)
    broken[LAYERS + "1.linear2.weight"] = torch.zeros(64, 100)
    with pytest.raises(
        UserError, match=r"layers\.1\.linear2\.weight \(64, 100\) \(expected \(64, 128\)\)"
    ):
        convert(broken, vocab)


def test_wrong_lora_and_token_table_shapes_are_named(state, vocab):
    broken = dict(state)
    broken[LAYERS + "1.self_attn.lora_module.k_out.weight"] = torch.zeros(64, 5)
    broken["uce_lora.module.pe_embedding.weight"] = torch.zeros(145_469, 17)
    with pytest.raises(UserError, match=r"k_out\.weight \(64, 5\)") as info:
        convert(broken, vocab)
    assert "pe_embedding.weight (145469, 17)" in str(info.value)


def test_other_layouts_are_refused(model, state, vocab):
    with pytest.raises(UserError, match="load_native"):
        convert(model.state_dict(), vocab)
    with pytest.raises(UserError, match="not in the published UniCure layout"):
        convert({"weight": torch.zeros(2)}, vocab)
    # common wrappers are unwrapped
    wrapped = {"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}
    assert convert(wrapped, vocab).config.n_layers == 2


def test_token_ids_beyond_the_table_are_refused(state, vocab):
    vocabulary, ids = vocab
    small = dict(state)
    small["uce_lora.module.pe_embedding.weight"] = state["uce_lora.module.pe_embedding.weight"][
        :1000
    ]
    with pytest.raises(UserError, match="1000 rows"):
        convert_published(small, vocabulary, ids, n_heads=N_HEADS)
    with pytest.raises(UserError, match="published_ids"):
        convert_published(state, vocabulary, ids[:-1], n_heads=N_HEADS)


def test_pickled_objects_are_not_unpickled(tmp_path, vocab):
    path = tmp_path / "evil.pth"
    torch.save({"query_map.weight": torch.zeros(2), "note": pathlib.PurePosixPath("x")}, path)
    vocabulary, ids = vocab
    with pytest.raises(UserError, match="weights_only"):
        convert_published(path, vocabulary, ids, n_heads=N_HEADS)
    with pytest.raises(UserError, match="does not exist"):
        convert_published(tmp_path / "absent.pth", vocabulary, ids, n_heads=N_HEADS)


# ----------------------------------------------------------------------------- (d) vocabulary


def test_chromosome_codes_follow_the_categorical_over_all_rows(uce, vocab):
    vocabulary, ids = vocab
    labels = sorted({f"{sp}_{ch}" for sp, ch, _, _ in uce.rows if ch})
    chrom_positions = [i for i, t in enumerate(vocabulary["tokens"]) if t.startswith(CHROM_PREFIX)]
    codes = [int(ids[i]) - PUBLISHED_CHROM_OFFSET for i in chrom_positions]
    assert codes == sorted(codes) and min(codes) > 0  # frog_/chicken_ rows sort first
    for i, code in zip(chrom_positions, codes, strict=True):
        assert labels[code] == "human_" + vocabulary["tokens"][i][len(CHROM_PREFIX) :]
    assert {vocabulary["tokens"][i][len(CHROM_PREFIX) :] for i in chrom_positions} == {
        str(c) for c in range(1, 23)
    } | {"X", "Y", "MT"}
    assert vocabulary["tokens"][:3] == ["<pad>", "<cls>", "<chrom_close>"]
    assert ids[:3].tolist() == [0, 3, 2]


def test_gene_ids_and_order(uce, vocab):
    vocabulary, ids = vocab
    index = {}
    for i, g in enumerate(uce.protein_genes):
        index.setdefault(g.upper(), i)
    genes = [
        (i, t[len(GENE_PREFIX) :])
        for i, t in enumerate(vocabulary["tokens"])
        if t.startswith(GENE_PREFIX)
    ]
    assert [int(ids[i]) - PUBLISHED_GENE_OFFSET for i, g in genes] == [index[g] for _, g in genes]
    assert [index[g] for _, g in genes] == sorted(index[g] for _, g in genes)
    assert genes[0][0] > max(
        i for i, t in enumerate(vocabulary["tokens"]) if t.startswith(CHROM_PREFIX)
    )
    symbols = {g for _, g in genes}
    assert set(vocabulary["gene_loci"]) == symbols
    human = {s.upper() for sp, ch, _, s in uce.rows if sp == "human" and ch}
    plain = {g for g in human if g in index and g not in REFERENCE_RENAMES}
    assert plain <= symbols
    assert {"GENE005", "GENE007"} <= symbols  # lower case in one file
    assert not {"NOCHROM1", "NOPROT1", "ORPHAN1", "ORPHAN2", "FROGG1"} & symbols
    loci = {(s.upper(), sp): (ch, st) for sp, ch, st, s in uce.rows}
    for gene in plain:
        assert vocabulary["gene_loci"][gene] == list(loci[(gene, "human")])


def test_renamed_genes_resolve(uce, vocab):
    vocabulary, _ = vocab
    loci = {s: [ch, st] for sp, ch, st, s in uce.rows if sp == "human"}
    genes = vocabulary["gene_loci"]
    assert RENAME_CASES  # the cases below are the ones written by make_uce_files
    assert genes["AARS1"] == loci["AARS"]  # old name in species_chrom, new in the protein list
    assert genes["EPRS1"] == loci["EPRS1"]
    assert genes["GFUS"] == loci["GFUS"]  # the exact symbol wins over the renamed TSTA3
    assert "DDX58" in genes and "RIGI" not in genes  # RIGI is always looked up as DDX58
    assert "KIFBP" not in genes and "KIF1BP" not in genes
    assert vocabulary["aliases"] == {
        "AARS": "AARS1",
        "EPRS": "EPRS1",
        "TSTA3": "GFUS",
        "RIGI": "DDX58",
    }
    tokenizer = tokenizer_for(vocabulary)
    cols, vocab_index = tokenizer.align(["AARS", "RIGI", "KIF1BP", "GENE001"])
    assert [tokenizer.genes[i] for i in vocab_index] == ["AARS1", "DDX58", "GENE001"]
    assert cols.tolist() == [0, 1, 3]


def test_vocabulary_errors(tmp_path, uce):
    with pytest.raises(UserError, match="no rows for species 'zebrafish'"):
        published_vocabulary(uce.species_chrom, uce.protein_embeddings, species="zebrafish")
    bad = tmp_path / "species_chrom.csv"
    bad.write_text("species,chromosome,gene_symbol\nhuman,1,A\n")
    with pytest.raises(UserError, match="start"):
        read_species_chrom(bad)
    with pytest.raises(UserError, match="empty"):
        published_vocabulary(uce.species_chrom, ["NOTAGENE"])


def test_read_species_chrom(uce):
    frame = read_species_chrom(uce.species_chrom)
    assert len(frame) == len(uce.rows)
    assert frame["start"].dtype == np.int64
    assert "GENE007" in set(frame["gene_symbol"])
    assert frame["chromosome"].isna().sum() == 1


def test_convert_checkpoint_in_one_call(uce, state, vocab):
    model, vocabulary = convert_checkpoint(
        state,
        uce.species_chrom,
        uce.protein_embeddings,
        n_heads=N_HEADS,
        config={"sample_size": 16},
    )
    assert vocabulary == vocab[0] and model.config.vocab_size == len(vocabulary["tokens"])


# ----------------------------------------------------------------------------- (e) gene lists


def test_protein_gene_list_formats(tmp_path, uce):
    from_torch = read_protein_gene_list(uce.protein_embeddings)
    assert from_torch == [g.upper() for g in uce.protein_genes]
    text = tmp_path / "genes.txt"
    text.write_text("# ESM2 genes\n" + "\n".join(uce.protein_genes) + "\n\n")
    assert read_protein_gene_list(text) == from_torch
    as_json = tmp_path / "genes.json"
    as_json.write_text(json.dumps(uce.protein_genes))
    assert read_protein_gene_list(as_json) == from_torch
    a, _ = published_vocabulary(uce.species_chrom, text)
    b, _ = published_vocabulary(uce.species_chrom, uce.protein_embeddings)
    assert a == b


def test_protein_gene_list_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"AARS1": pathlib.PurePosixPath("x")}, path)
    with pytest.raises(UserError, match="weights_only"):
        read_protein_gene_list(path)
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(UserError, match="not a dict"):
        read_protein_gene_list(tensor)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(UserError, match="no gene symbols"):
        read_protein_gene_list(empty)


# ----------------------------------------------------------------------------- (c) ranking


class _ReferenceSession:
    """An ONNX-Runtime-like `run` over the independent reference FlexPert (float64 -> float32)."""

    def __init__(self, state):
        self.state = state

    def get_inputs(self):
        return per_drug_flexpert_inputs()

    def run(self, _outputs, feeds):
        expression = reference_expression(self.state, feeds["cell_embedding"], feeds["drug"])
        return [expression.float().numpy()]


class _MemoryLibrary:
    def __init__(self, embeddings):
        self.embeddings = embeddings

    def __len__(self):
        return len(self.embeddings)

    def iter_batches(self, batch_size):
        for start in range(0, len(self), batch_size):
            yield start, self.embeddings[start : start + batch_size]


def test_published_formula_reproduces_the_reference_workflow_ranks_with_ties(model, state):
    """Section 8 on the published-layout fixture: Pearson(pred - u, u - n) per dose, the mean
    over the six doses, pandas `rank(method='min')`; two copies of one drug tie."""
    import pandas as pd
    from scipy.stats import pearsonr

    from unicure_rt.defaults import REFERENCE_DOSES_UM
    from unicure_rt.drugs.vectors import drug_vectors as unicure_drug_vectors
    from unicure_rt.scoring.options import ScoreOptions
    from unicure_rt.scoring.pipeline import _profile_ranking
    from unicure_rt.scoring.runner import FlexPertRunner

    rng = np.random.default_rng(5)
    embeddings = rng.normal(size=(24, 512)).astype(np.float32)
    embeddings[[9, 17]] = embeddings[4]
    cell = rng.normal(size=model.config.cell_dim).astype(np.float32)
    n_genes = state["decoder.3.weight"].shape[0]
    tumour = rng.normal(5, 2, size=n_genes)
    normal = tumour + rng.normal(0, 1, size=n_genes)
    options = ScoreOptions(draws=1, drug_batch=10, permutations=0, effect="published")
    runner = FlexPertRunner(_ReferenceSession(state), _MemoryLibrary(embeddings), options)
    genes = np.arange(n_genes)
    table, _ = _profile_ranking(runner, cell, cell[None], genes, tumour, normal, options)

    per_dose = []
    for dose in REFERENCE_DOSES_UM:
        drugs = torch.from_numpy(unicure_drug_vectors(embeddings, dose))
        cells = torch.from_numpy(np.repeat(cell[None], len(embeddings), axis=0))
        predicted = reference_expression(state, cells, drugs).numpy()
        per_dose.append([pearsonr(p - tumour, tumour - normal).statistic for p in predicted])
    reference = pd.Series(np.nanmean(per_dose, axis=0)).rank(method="min")
    assert table["rank"].to_numpy(dtype=float).tolist() == reference.tolist()
    assert table["rank"][4] == table["rank"][9] == table["rank"][17]
    np.testing.assert_allclose(table["score"], np.nanmean(per_dose, axis=0), atol=1e-6)
