import json
import shutil

import pytest
from fake_bundles import write_fake_bundle

from unicure_rt.bundle.load import FORMAT_VERSION, load_bundle
from unicure_rt.errors import UserError


@pytest.fixture
def bundle_dir(tmp_path):
    return write_fake_bundle(tmp_path)


def test_round_trip_records_every_file(bundle_dir):
    bundle = load_bundle(bundle_dir)
    assert set(bundle.manifest["files"]) == {"backbone.onnx", "flexpert.onnx"}
    assert bundle.manifest["format_version"] == FORMAT_VERSION


@pytest.mark.parametrize(
    "tamper, message",
    [
        (
            lambda d: (d / "flexpert.onnx").write_bytes(b"evil"),
            "changed since export: flexpert.onnx",
        ),
        (lambda d: (d / "backbone.onnx").unlink(), "missing: backbone.onnx"),
        (lambda d: (d / "extra.bin").write_bytes(b"x"), "not listed in the manifest: extra.bin"),
    ],
)
def test_tampered_bundle_is_refused_naming_the_file(bundle_dir, tamper, message):
    tamper(bundle_dir)
    with pytest.raises(UserError, match=message):
        load_bundle(bundle_dir)


def test_newer_format_is_refused_with_update_hint(bundle_dir):
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="Update unicure-rt .pull its repository"):
        load_bundle(bundle_dir)


def test_paths_outside_the_bundle_are_refused(bundle_dir, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "weights.bin"
    outside.write_bytes(b"w")
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["files"]["../" + outside.parent.name + "/weights.bin"] = "0" * 64
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="outside its directory"):
        load_bundle(bundle_dir)


def test_not_a_bundle(tmp_path):
    with pytest.raises(UserError, match="no manifest.json"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_bundle(tmp_path)
    shutil.rmtree(tmp_path)


def test_graph_with_external_data_outside_the_bundle_is_refused(tmp_path):
    """A graph whose external data points outside its folder never loads (no file is read)."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from unicure_rt.runtime.sessions import RuntimeOptions, create_session

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    path = bundle / "flexpert.onnx"
    onnx.save(
        helper.make_model(graph),
        path,
        save_as_external_data=True,
        location="w.bin",
        size_threshold=0,
    )
    model = onnx.load(path, load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../secret.bin"
    path.write_bytes(model.SerializeToString())
    (bundle / "w.bin").rename(tmp_path / "secret.bin")
    with pytest.raises(UserError, match="cannot load"):
        create_session(path, RuntimeOptions(device="cpu"))


def test_creation_time_follows_source_date_epoch(monkeypatch):
    from unicure_rt.bundle.load import creation_time

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert creation_time() == "2023-11-14T22:13:20+00:00"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(UserError, match="not a Unix time"):
        creation_time()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert creation_time().startswith(("20", "21")) and creation_time().endswith("+00:00")
