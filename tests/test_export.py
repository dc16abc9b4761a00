"""Export: LoRA merge, the two graphs, the parity gate, and the bundle contract."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="the export tests need the [export] extra (torch)")
ort = pytest.importorskip("onnxruntime")

from unicure_rt.bundle.load import load_bundle  # noqa: E402
from unicure_rt.errors import UserError  # noqa: E402
from unicure_rt.runtime.tokenizer import Tokenizer  # noqa: E402
from unicure_rt.train.export.bundle_writer import ExportOptions, export_bundle  # noqa: E402
from unicure_rt.train.export.validate import ParityError  # noqa: E402
from unicure_rt.train.models import UniCure, UniCureConfig, add_lora, merge_lora  # noqa: E402

GENES = [f"G{i}" for i in range(30)]
VOCAB = {
    "tokens": ["<pad>", "<cls>", "<chrom_close>", "chrom:1", "chrom:2", "chrom:X"]
    + [f"gene:{g}" for g in GENES],
    "gene_loci": {g: [["1", "2", "X"][i % 3], 1000 * i] for i, g in enumerate(GENES)},
}
OUT_GENES = [f"O{i}" for i in range(978)]


def config(padding="masked", **kw):
    base = dict(
        vocab_size=len(VOCAB["tokens"]),
        token_dim=16,
        d_model=32,
        n_heads=4,
        d_ff=64,
        n_layers=2,
        head_hidden=64,
        pad_length=96,
        sample_size=64,
        lora_layers=(1,),
        lora_rank=4,
        padding=padding,
        attn_dim=16,
        decoder_hidden=128,
        dropout=0.0,
    )
    base.update(kw)
    return UniCureConfig(**base)


def model(padding="masked", seed=0, **kw):
    torch.manual_seed(seed)
    return UniCure(config(padding, **kw)).eval()


def lora_model(padding="masked"):
    peft_model = add_lora(model(padding))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.3)
    return peft_model.eval()


def sentences(padding="masked", n=3, seed=0):
    spec = {**VOCAB, "pad_length": 96, "sample_size": 64, "padding": padding, "weighting": "linear"}
    profiles = np.random.default_rng(seed).lognormal(1.0, 0.5, size=(n, len(GENES)))
    tokens, mask = Tokenizer.from_spec(spec).encode(
        profiles, [f"p{i}" for i in range(n)], seed=seed
    )
    return torch.from_numpy(tokens), torch.from_numpy(mask)


def test_peft_merged_and_unmerged_agree():
    peft_model = lora_model()
    tokens, mask = sentences()
    drug = torch.randn(3, 528)
    with torch.no_grad():
        base = model()(tokens, mask, drug)
        unmerged = peft_model(tokens, mask, drug)
        merged = merge_lora(peft_model)(tokens, mask, drug)
    assert (unmerged - base).abs().max() > 1e-4, (
        "LoRA must change the output for this test to mean anything"
    )
    torch.testing.assert_close(merged, unmerged, atol=1e-6, rtol=0)


def test_reference_padding_depends_on_padding_masked_does_not():
    tokens, mask = sentences(n=1)
    longer_t = torch.cat([tokens, torch.zeros(1, 20, dtype=torch.long)], dim=1)
    longer_m = torch.cat([mask, torch.zeros(1, 20, dtype=torch.long)], dim=1)
    with torch.no_grad():
        masked = model("masked").backbone
        torch.testing.assert_close(
            masked(tokens, mask), masked(longer_t, longer_m), atol=1e-6, rtol=0
        )
        reference = model("reference").backbone
        assert (reference(tokens, mask) - reference(longer_t, longer_m)).abs().max() > 1e-5


@pytest.fixture(scope="module", params=["masked", "reference"])
def exported(request, tmp_path_factory):
    padding = request.param
    peft_model = lora_model(padding)
    out = tmp_path_factory.mktemp(padding) / "bundle"
    with torch.no_grad():
        reference_model = merge_lora(peft_model)
    manifest, results = export_bundle(peft_model, VOCAB, out, ExportOptions(genes=OUT_GENES))
    return padding, reference_model, out, manifest, results


def test_parity_results_are_recorded(exported):
    _padding, _model, out, manifest, results = exported
    assert {(r.graph, r.output) for r in results} == {
        ("backbone", "cell_embedding"),
        ("flexpert", "expression"),
    }
    assert all(r.max_abs < 1e-5 for r in results)
    assert {r.case for r in results if r.graph == "flexpert"} == {
        "single_drugs",
        "combinations",
        "one_cell_single_drugs",
        "one_cell_combinations",
    }
    assert load_bundle(out).manifest["parity"] == manifest["parity"]


def test_graphs_carry_no_exporter_debug_metadata(exported):
    """No source paths or stack traces: the same weights give the same bytes from any checkout."""
    _padding, _model, out, _manifest, _results = exported
    checkout = str(Path(__file__).resolve().parents[1]).encode()
    for name in ("backbone.onnx", "flexpert.onnx"):
        assert checkout not in (out / name).read_bytes()
        graph = onnx.load(out / name).graph
        assert not any(node.metadata_props for node in graph.node)


def test_manifest_contract(exported):
    padding, _model, out, manifest, _ = exported
    assert set(manifest["files"]) == {"backbone.onnx", "flexpert.onnx"}
    backbone = manifest["graphs"]["backbone"]
    assert [i["name"] for i in backbone["inputs"]] == ["tokens", "mask"]
    assert backbone["outputs"] == [
        {"name": "cell_embedding", "dtype": "float32", "shape": ["batch", 1280]}
    ]
    flexpert = manifest["graphs"]["flexpert"]
    assert [i["name"] for i in flexpert["inputs"]] == ["cell_embedding", "drug"]
    assert flexpert["inputs"][0]["shape"] == ["cells", 1280]
    assert flexpert["outputs"][0]["shape"] == ["batch", 978]
    tok = manifest["tokenizer"]
    assert tok["tokens"][:3] == ["<pad>", "<cls>", "<chrom_close>"]
    assert tok["padding"] == padding and tok["pad_length"] == 96 and tok["sample_size"] == 64
    assert manifest["genes"] == OUT_GENES
    session = ort.InferenceSession(str(out / "backbone.onnx"), providers=["CPUExecutionProvider"])
    seq = session.get_inputs()[0].shape[1]
    assert seq == ("seq" if padding == "masked" else 96)


@pytest.mark.parametrize("batch", [1, 7, 5000])
def test_flexpert_graph_matches_pytorch_at_any_batch(exported, batch):
    _padding, reference_model, out, _, _ = exported
    rng = np.random.default_rng(batch)
    cells = rng.normal(size=(batch, 1280)).astype(np.float32)
    cells /= np.linalg.norm(cells, axis=1, keepdims=True)
    session = ort.InferenceSession(str(out / "flexpert.onnx"), providers=["CPUExecutionProvider"])
    for length in (528, 1056):
        drugs = rng.normal(size=(batch, length)).astype(np.float32)
        got = session.run(None, {"cell_embedding": cells, "drug": drugs})[0]
        with torch.no_grad():
            want = reference_model.predict(torch.from_numpy(cells), torch.from_numpy(drugs)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("batch", [1, 7, 5000])
def test_flexpert_graph_broadcasts_one_cell_row_over_the_drugs(exported, batch):
    """One `cell_embedding` row for a whole drug batch gives the rows of that cell repeated,
    and `cell_feed` gives such a graph one row, an older graph (`batch` rows) one per drug."""
    from types import SimpleNamespace

    from fake_bundles import per_drug_flexpert_inputs

    from unicure_rt.runtime.sessions import cell_feed

    _padding, reference_model, out, _, _ = exported
    rng = np.random.default_rng(batch)
    cell = rng.normal(size=1280).astype(np.float32)
    cell /= np.linalg.norm(cell)
    session = ort.InferenceSession(str(out / "flexpert.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["cells", 1280]
    assert cell_feed(session, cell, batch).shape == (1, 1280)
    repeated = np.repeat(cell[None, :], batch, axis=0)
    for length in (528, 1056):
        drugs = rng.normal(size=(batch, length)).astype(np.float32)
        one = session.run(None, {"cell_embedding": cell[None, :], "drug": drugs})[0]
        per_drug = session.run(None, {"cell_embedding": repeated, "drug": drugs})[0]
        assert one.shape == (batch, 978)
        np.testing.assert_allclose(one, per_drug, atol=1e-6, rtol=0)
        with torch.no_grad():
            want = reference_model.predict(torch.from_numpy(repeated), torch.from_numpy(drugs))
        np.testing.assert_allclose(one, want.numpy(), atol=1e-4, rtol=0)
    older = SimpleNamespace(get_inputs=per_drug_flexpert_inputs)
    np.testing.assert_array_equal(cell_feed(older, cell, batch), repeated)


@pytest.mark.parametrize("batch", [1, 7])
def test_backbone_graph_matches_pytorch(exported, batch):
    padding, reference_model, out, _, _ = exported
    tokens, mask = sentences(padding, n=batch, seed=batch)
    session = ort.InferenceSession(str(out / "backbone.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"tokens": tokens.numpy(), "mask": mask.numpy()})[0]
    with torch.no_grad():
        want = reference_model.backbone(tokens, mask).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_tampered_bundle_refused(exported, tmp_path):
    import shutil

    _p, _m, out, _, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = bytearray((copy / "flexpert.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "flexpert.onnx").write_bytes(bytes(data))
    with pytest.raises(UserError, match="flexpert.onnx"):
        load_bundle(copy)


def test_existing_output_is_not_overwritten(exported):
    _p, _m, out, _, _ = exported
    before = (out / "manifest.json").read_text()
    with pytest.raises(UserError, match="already exists"):
        export_bundle(model(), VOCAB, out, ExportOptions(genes=OUT_GENES))
    assert (out / "manifest.json").read_text() == before


def test_parity_gate_fails_loudly_and_writes_nothing(tmp_path, monkeypatch):
    import unicure_rt.train.export.bundle_writer as writer

    original = writer._build_cases

    def corrupted(model, tokenizer, options):
        cases = original(model, tokenizer, options)
        cases["flexpert"]["single_drugs"]["expected/expression"] += 0.01
        return cases

    monkeypatch.setattr(writer, "_build_cases", corrupted)
    out = tmp_path / "bundle"
    with pytest.raises(
        ParityError, match=r"flexpert\.expression on 'single_drugs': max abs error 0\.01"
    ):
        export_bundle(model(), VOCAB, out, ExportOptions(genes=OUT_GENES))
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir()], "no partial bundle may be left behind"


def test_manifest_is_json_with_hashes(exported):
    _p, _m, out, _, _ = exported
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(len(h) == 64 for h in manifest["files"].values())


@pytest.mark.parametrize("attn_dim", [8, 32, 64])
def test_flexpert_graph_folds_are_exact(attn_dim):
    """value_map folds only when attention is as wide as a window; both paths are exact."""
    from unicure_rt.train.export.graphs import FlexPertGraph

    flexpert = model(attn_dim=attn_dim, decoder_hidden=256).flexpert.eval()
    graph = FlexPertGraph(flexpert).eval()
    assert graph.fold_values == (attn_dim >= 32)
    cells = torch.nn.functional.normalize(torch.randn(5, 1280), dim=-1)
    for length in (528, 1056):
        drugs = torch.randn(5, length)
        with torch.no_grad():
            torch.testing.assert_close(
                graph(cells, drugs), flexpert(cells, drugs), atol=2e-5, rtol=0
            )


def test_flexpert_ensemble_is_the_mean_of_its_heads_in_torch_and_in_the_graph(tmp_path):
    """flexpert_heads=2: two independently initialised heads, averaged; export keeps the mean."""
    from unicure_rt.train.export.graphs import FlexPertEnsembleGraph, flexpert_graph
    from unicure_rt.train.models.unicure import load_native, save_native

    ensemble_model = model(flexpert_heads=2)
    heads = ensemble_model.flexpert.heads
    assert len(heads) == 2
    assert not torch.equal(heads[0].fusion_decoder[0].weight, heads[1].fusion_decoder[0].weight)
    cells = torch.nn.functional.normalize(torch.randn(5, 1280), dim=-1)
    drugs = torch.randn(5, 528)
    with torch.no_grad():
        mean = (heads[0](cells, drugs) + heads[1](cells, drugs)) / 2
        torch.testing.assert_close(ensemble_model.flexpert(cells, drugs), mean)
        graph = flexpert_graph(ensemble_model.flexpert).eval()
        assert isinstance(graph, FlexPertEnsembleGraph)
        torch.testing.assert_close(graph(cells, drugs), mean, atol=2e-5, rtol=0)

    save_native(ensemble_model, tmp_path / "ckpt", vocabulary=VOCAB, genes=OUT_GENES)
    reloaded, _ = load_native(tmp_path / "ckpt")
    assert reloaded.config.flexpert_heads == 2
    with torch.no_grad():
        torch.testing.assert_close(reloaded.flexpert(cells, drugs), mean)

    manifest, results = export_bundle(
        ensemble_model, VOCAB, tmp_path / "bundle", ExportOptions(genes=OUT_GENES)
    )
    assert all(r.passed for r in results if r.graph == "flexpert")
    session = ort.InferenceSession(str(tmp_path / "bundle" / "flexpert.onnx"))
    got = session.run(["expression"], {"cell_embedding": cells.numpy(), "drug": drugs.numpy()})[0]
    np.testing.assert_allclose(got, mean.numpy(), atol=1e-4, rtol=0)


def test_flexpert_heads_must_be_positive():
    with pytest.raises(ValueError, match="flexpert_heads"):
        config(flexpert_heads=0)
