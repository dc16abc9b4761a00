"""Reduced-precision bundles: fp16 and int8 variants, their fidelity record and its floors."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the export tests need the [export] extra (torch)")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from test_export import OUT_GENES, VOCAB, lora_model, sentences  # noqa: E402

from unicure_rt.bundle.load import load_bundle  # noqa: E402
from unicure_rt.errors import UserError  # noqa: E402
from unicure_rt.train.export import precision  # noqa: E402
from unicure_rt.train.export.bundle_writer import ExportOptions, export_bundle  # noqa: E402
from unicure_rt.train.models import merge_lora  # noqa: E402

CONTRACT = {
    "backbone": ([("tokens", "tensor(int64)"), ("mask", "tensor(int64)")],
                 [("cell_embedding", "tensor(float)")]),
    "flexpert": ([("cell_embedding", "tensor(float)"), ("drug", "tensor(float)")],
                 [("expression", "tensor(float)")]),
}  # fmt: skip


def export(out, precision_name, padding="masked"):
    return export_bundle(
        lora_model(padding), VOCAB, out, ExportOptions(genes=OUT_GENES, precision=precision_name)
    )


@pytest.fixture(scope="module")
def fp16_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "bundle"
    manifest, _ = export(out, "fp16", "masked")
    return out, manifest


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "bundle"
    manifest, _ = export(out, "int8", "reference")
    return out, manifest


@pytest.fixture(params=["fp16", "int8"])
def variant(request, fp16_bundle, int8_bundle):
    return request.param, *(fp16_bundle if request.param == "fp16" else int8_bundle)


def test_variant_loads_and_keeps_the_io_contract(variant):
    name, out, manifest = variant
    bundle = load_bundle(out)
    assert bundle.manifest == manifest
    assert manifest["precision"] == name
    assert set(manifest["files"]) == {"backbone.onnx", "flexpert.onnx"}
    for graph, (inputs, outputs) in CONTRACT.items():
        session = ort.InferenceSession(
            str(bundle.graph_path(graph)), providers=["CPUExecutionProvider"]
        )
        assert [(i.name, i.type) for i in session.get_inputs()] == inputs
        assert [(o.name, o.type) for o in session.get_outputs()] == outputs
        entry = manifest["graphs"][graph]
        assert [(i["name"], i["dtype"]) for i in entry["inputs"]] == [
            (n, t[7:-1].replace("float", "float32")) for n, t in inputs
        ]


def test_variant_records_fidelity_over_the_floor(variant):
    name, _out, manifest = variant
    fidelity = manifest["fidelity"]
    assert fidelity["reference"] == "fp32"
    assert fidelity["spearman_min"] >= precision.SPEARMAN_FLOOR
    assert fidelity["spearman_mean"] >= fidelity["spearman_min"]
    assert fidelity["top20_overlap_min"] >= precision.TOP_K_FLOOR
    assert 0 < fidelity["max_abs_expression"] < 0.05
    assert 0 < fidelity["max_abs_cell_embedding"] < 0.05
    assert fidelity["n_profiles"] == precision.N_PROFILES
    assert fidelity["n_drugs"] == precision.N_DRUGS
    assert fidelity["floors"] == {"spearman_min": 0.99, "top20_overlap_min": 18}
    settings = fidelity["settings"]
    assert settings["onnxruntime"] == ort.__version__
    if name == "int8":
        assert settings["tool"] == "onnxruntime.quantization.quantize_dynamic"
        assert settings["weight_type"] == "QUInt8" and settings["per_channel"] is True
    else:
        assert settings["keep_io_types"] is True


def test_variant_graphs_are_reduced(variant):
    name, out, manifest = variant
    model = onnx.load(str(out / "flexpert.onnx"))
    types = {t.data_type for t in model.graph.initializer if len(t.dims) == 2}
    ops = {n.op_type for n in model.graph.node}
    if name == "fp16":
        assert onnx.TensorProto.FLOAT16 in types and onnx.TensorProto.FLOAT not in types
    else:
        assert onnx.TensorProto.UINT8 in types and "MatMulInteger" in ops and "Gemm" not in ops
    sizes = manifest["fidelity"]["graph_bytes"]
    for graph in ("backbone", "flexpert"):
        assert sizes[graph]["variant"] == (out / f"{graph}.onnx").stat().st_size
        assert sizes[graph]["variant"] < sizes[graph]["fp32"] * (0.3 if name == "int8" else 0.55)


def test_variant_predictions_stay_close_to_pytorch(variant):
    name, out, manifest = variant
    padding = manifest["tokenizer"]["padding"]
    with torch.no_grad():
        reference = merge_lora(lora_model(padding))
        tokens, mask = sentences(padding, n=2)
        want_cells = reference.backbone(tokens, mask).numpy()
    backbone = ort.InferenceSession(str(out / "backbone.onnx"), providers=["CPUExecutionProvider"])
    cells = backbone.run(None, {"tokens": tokens.numpy(), "mask": mask.numpy()})[0]
    assert cells.dtype == np.float32
    np.testing.assert_allclose(cells, want_cells, atol=0.02 if name == "int8" else 2e-3)
    drugs = np.random.default_rng(0).normal(size=(2, 528)).astype(np.float32)
    flexpert = ort.InferenceSession(str(out / "flexpert.onnx"), providers=["CPUExecutionProvider"])
    got = flexpert.run(None, {"cell_embedding": want_cells, "drug": drugs})[0]
    with torch.no_grad():
        want = reference.predict(torch.from_numpy(want_cells), torch.from_numpy(drugs)).numpy()
    np.testing.assert_allclose(got, want, atol=0.02 if name == "int8" else 2e-3)


def test_int8_keeps_the_layer_of_the_broadcast_cell_row_in_float32(int8_bundle):
    """The folded query map reads only the cell row, which the graph computes once per cell:
    it stays a float32 MatMul; every layer that reads the drugs is quantized."""
    out, _ = int8_bundle
    model = onnx.load(str(out / "flexpert.onnx"))
    weights = {t.name: t.data_type for t in model.graph.initializer}
    float_matmuls = [
        n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights
    ]
    assert float_matmuls == precision.per_cell_nodes(model)
    assert len(float_matmuls) == 1
    assert sum(n.op_type == "MatMulInteger" for n in model.graph.node) >= 2


def test_measure_fidelity_of_a_bundle_against_itself(int8_bundle):
    out, _ = int8_bundle
    fidelity = precision.measure_fidelity(out, out, n_profiles=2, n_drugs=60)
    assert fidelity["spearman_min"] == pytest.approx(1.0)
    assert fidelity["top20_overlap_min"] == 20
    assert fidelity["max_abs_expression"] == 0 and fidelity["max_abs_cell_embedding"] == 0


def test_check_fidelity_names_the_measured_numbers():
    fidelity = {
        "spearman_min": 0.96,
        "top20_overlap_min": 12,
        "max_abs_expression": 0.3,
        "n_profiles": 4,
        "n_drugs": 500,
    }
    with pytest.raises(precision.FidelityError, match=r"0\.9600 \(floor 0\.99\).*12/20"):
        precision.check_fidelity(fidelity, "int8")
    precision.check_fidelity({**fidelity, "spearman_min": 0.995, "top20_overlap_min": 18}, "int8")
    with pytest.raises(precision.FidelityError):
        precision.check_fidelity({**fidelity, "spearman_min": float("nan")}, "int8")
    assert issubclass(precision.FidelityError, UserError)


def test_variant_under_the_floor_is_refused_and_nothing_written(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "SPEARMAN_FLOOR", 1.01)
    out = tmp_path / "bundle"
    with pytest.raises(precision.FidelityError, match=r"int8 variant .*\(floor 1\.01\)"):
        export(out, "int8")
    assert not out.exists()
    assert not list(tmp_path.iterdir()), "no partial bundle may be left behind"


def test_unknown_precision_is_refused_before_exporting(tmp_path):
    with pytest.raises(UserError, match="Unknown precision 'bf16'"):
        export(tmp_path / "bundle", "bf16")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_external_data_graphs_keep_their_layout(tmp_path, monkeypatch):
    """Graphs over 2 GB keep their weights in external data; the variant does the same."""
    import unicure_rt.train.export.onnx_export as onnx_export

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", 0)
    out = tmp_path / "bundle"
    manifest, _ = export(out, "int8")
    assert set(manifest["files"]) == {
        "backbone.onnx",
        "backbone.onnx.data",
        "flexpert.onnx",
        "flexpert.onnx.data",
    }
    assert manifest["fidelity"]["top20_overlap_min"] >= precision.TOP_K_FLOOR
    assert load_bundle(out).manifest["precision"] == "int8"
    assert json.loads((out / "manifest.json").read_text())["files"] == manifest["files"]


@pytest.mark.slow
def test_cli_export_precision(tmp_path):
    from typer.testing import CliRunner

    from unicure_rt.cli.app import app
    from unicure_rt.train.models.unicure import save_native

    checkpoint = tmp_path / "checkpoint"
    save_native(lora_model(), checkpoint, vocabulary=VOCAB, genes=OUT_GENES)
    out = tmp_path / "bundle"
    result = CliRunner().invoke(
        app, ["export", str(checkpoint), "--out", str(out), "--precision", "fp16"]
    )
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())
    assert "fp16 graphs (" in printed and "vs the fp32 graphs above" in printed
    assert "top-20 overlap min 20/20" in printed
    assert load_bundle(out).manifest["precision"] == "fp16"
