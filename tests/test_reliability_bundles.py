"""Issue 19, items 5-8 and 13: a bundle's integrity cannot be bypassed. The loader opens only
hashed files inside the bundle, refuses malformed manifests and declared I/O that the graphs do
not have, can be pinned to one manifest digest or to a trusted signer, and refuses a drug library
whose embedding width differs from the encoder's. Each test reproduces a failure of the code
before the fix."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_bundles import GENES, write_fake_bundle
from typer.testing import CliRunner

from unicure_rt.bundle.load import load_bundle, write_manifest
from unicure_rt.bundle.pin import BundlePin
from unicure_rt.cli.app import app
from unicure_rt.drugs.build import import_library
from unicure_rt.errors import UserError
from unicure_rt.scoring.options import resolve_library

runner = CliRunner()


def invoke(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, *phrases):
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.lstrip().startswith("Error"), text
    for phrase in phrases:
        assert phrase in text, text


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def rewrite(bundle: Path, manifest) -> None:
    """Replace the manifest as it is, files list included (no re-hashing)."""
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def bundle(tmp_path) -> Path:
    return write_fake_bundle(tmp_path / "bundle")


# ---- 5. every file the loader opens is hashed and inside the bundle -----------------------


def test_a_fake_bundle_loads(bundle):
    loaded = load_bundle(bundle)
    assert loaded.graph_path("flexpert") == bundle / "flexpert.onnx"
    assert loaded.genes == GENES


def test_a_graph_outside_the_bundle_is_refused(bundle, tmp_path):
    """manifest.graphs.flexpert.path named a graph elsewhere; it loaded and changed rankings."""
    elsewhere = tmp_path / "other" / "flexpert.onnx"
    elsewhere.parent.mkdir()
    shutil.copyfile(bundle / "flexpert.onnx", elsewhere)
    manifest = manifest_of(bundle)
    manifest["graphs"]["flexpert"]["path"] = str(elsewhere)
    rewrite(bundle, manifest)
    with pytest.raises(UserError, match="does not hash"):
        load_bundle(bundle)


@pytest.mark.parametrize("rel", ["../other/flexpert.onnx", "ABSOLUTE", "sub/../../x.onnx"])
def test_a_hashed_path_leaving_the_bundle_is_refused(bundle, tmp_path, rel):
    """Even listed with its true sha256, a path with '..' or an absolute one is refused."""
    outside = tmp_path / "other" / "flexpert.onnx"
    outside.parent.mkdir()
    shutil.copyfile(bundle / "flexpert.onnx", outside)
    rel = str(outside) if rel == "ABSOLUTE" else rel
    manifest = manifest_of(bundle)
    manifest["files"][rel] = hashlib.sha256(outside.read_bytes()).hexdigest()
    manifest["graphs"]["flexpert"]["path"] = rel
    rewrite(bundle, manifest)
    with pytest.raises(UserError, match="outside its directory"):
        load_bundle(bundle)


def test_a_symlink_leaving_the_bundle_is_refused(bundle, tmp_path):
    outside = tmp_path / "flexpert-elsewhere.onnx"
    shutil.move(bundle / "flexpert.onnx", outside)
    os.symlink(outside, bundle / "flexpert.onnx")
    with pytest.raises(UserError, match="symlink leaving the bundle"):
        load_bundle(bundle)


def test_a_symlink_inside_the_bundle_is_followed(bundle):
    """The neighbour: a link to another file of the bundle stays inside it and is hashed."""
    shutil.move(bundle / "flexpert.onnx", bundle / "real.onnx")
    os.symlink("real.onnx", bundle / "flexpert.onnx")
    manifest = manifest_of(bundle)
    write_manifest(bundle, manifest)
    assert load_bundle(bundle).graph_path("flexpert").is_file()


@pytest.mark.parametrize("key", ["library", "drug_encoder.graph"])
def test_library_and_encoder_paths_must_be_hashed(bundle, tmp_path, key):
    manifest = manifest_of(bundle)
    if key == "library":
        manifest["library"] = "../drugs.parquet"
    else:
        manifest["drug_encoder"]["graph"] = "encoder-not-listed.onnx"
    rewrite(bundle, manifest)
    with pytest.raises(UserError, match=f"{key} '"):
        load_bundle(bundle)


def test_pycache_is_not_exempt_from_the_file_list(bundle):
    (bundle / "__pycache__").mkdir()
    (bundle / "__pycache__" / "evil.cpython-311.pyc").write_bytes(b"code")
    with pytest.raises(UserError, match="not listed in the manifest: __pycache__/evil"):
        load_bundle(bundle)


def test_the_loader_opens_no_unhashed_file(bundle):
    with pytest.raises(UserError, match="not one of the files"):
        load_bundle(bundle).file("manifest.json")


# ---- 6. a malformed manifest is refused in one message ------------------------------------


def _parent(manifest, path: str):
    """The container holding the last key of the dotted `path` (digits index lists)."""
    *parents, last = path.split(".")
    entry = manifest
    for key in parents:
        entry = entry[int(key)] if isinstance(entry, list) else entry[key]
    return entry, int(last) if isinstance(entry, list) else last


def _without(path: str):
    def change(manifest):
        entry, key = _parent(manifest, path)
        del entry[key]
        return manifest

    return change


def _set(path: str, value):
    def change(manifest):
        entry, key = _parent(manifest, path)
        entry[key] = value
        return manifest

    return change


MALFORMED = {
    "a number": (lambda m: 1, "manifest: must be a JSON object"),
    "a list": (lambda m: [m], "manifest: must be a JSON object"),
    "null": (lambda m: None, "manifest: must be a JSON object"),
    "no graphs": (_without("graphs"), "graphs: missing"),
    "no tokenizer": (_without("tokenizer"), "tokenizer: missing"),
    "no genes": (_without("genes"), "genes: missing"),
    "no drug encoder": (_without("drug_encoder"), "drug_encoder: missing"),
    "no files": (_without("files"), "manifest.files: missing"),
    "no flexpert": (_without("graphs.flexpert"), "graphs.flexpert: missing"),
    "text version": (_set("format_version", "1"), "format_version: must be an integer"),
    "genes as text": (_set("genes", "GENEA"), "genes: must be a non-empty list"),
    "repeated gene": (_set("genes", ["GENEA", "GENEA", "GENEC"]), "repeats a gene symbol"),
    "shape as text": (
        _set("graphs.backbone.outputs", [{"name": "cell_embedding", "dtype": "float32"}]),
        "graphs.backbone.outputs[0].shape: missing",
    ),
    "zero axis": (
        _set("graphs.flexpert.outputs", [{"name": "x", "dtype": "float32", "shape": [0]}]),
        "shape: must be a non-empty list of positive integers",
    ),
    "unknown dtype": (
        _set("graphs.flexpert.outputs", [{"name": "x", "dtype": "float", "shape": [1]}]),
        "dtype: must be one of",
    ),
    "text pad length": (_set("tokenizer.pad_length", "8"), "pad_length: must be a positive"),
    "tokens not a list": (_set("tokenizer.tokens", "abc"), "tokenizer.tokens: must be a list"),
    "locus missing": (_set("tokenizer.gene_loci", {}), "must be [chromosome, start]"),
    "unknown chromosome": (
        _set("tokenizer.gene_loci", {g: ["7", 1] for g in GENES}),
        "chromosome '7' has no token",
    ),
    "text dim": (_set("drug_encoder.dim", "512"), "drug_encoder.dim: must be a positive"),
    "short sha256": (_set("files", {"backbone.onnx": "abc"}), "64 hex digits"),
    "graphs a list": (_set("graphs", []), "graphs: must be an object"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_manifest_is_a_clean_error(bundle, case):
    change, message = MALFORMED[case]
    rewrite(bundle, change(manifest_of(bundle)))
    with pytest.raises(UserError, match="manifest is malformed") as caught:
        load_bundle(bundle)
    assert message in str(caught.value)
    assert_clean_error(invoke("verify", bundle), "manifest is malformed", message)


# ---- 7. the declared I/O is the graphs' I/O -----------------------------------------------

CONTRACT = {
    "false output width": (
        _set("graphs.flexpert.outputs.0.shape", ["batch", 5]),
        "size 5 is 3 in the graph",
    ),
    "fixed axis declared dynamic": (
        _set("graphs.backbone.outputs.0.shape", ["batch", "width"]),
        "dynamic axis 'width' is fixed at 8",
    ),
    "dynamic axis declared fixed": (
        _set("graphs.flexpert.inputs.1.shape", ["batch", 528]),
        "size 528 is a dynamic axis",
    ),
    "wrong input name": (
        _set("graphs.flexpert.inputs.1.name", "drugs"),
        "'drugs': not in the graph",
    ),
    "wrong dtype": (
        _set("graphs.backbone.inputs.0.dtype", "int32"),
        "dtype int32, the graph has int64",
    ),
    "wrong rank": (
        _set("graphs.flexpert.outputs.0.shape", ["batch"]),
        "shape ['batch'], the graph has",
    ),
    "swapped graphs": (
        _set("graphs.flexpert.path", "backbone.onnx"),
        "graphs.flexpert input: the graph also has",
    ),
    "gene count": (_set("genes", ["GENEA", "GENEB"]), "but genes lists 2"),
}


@pytest.mark.parametrize("case", CONTRACT, ids=list(CONTRACT))
def test_declared_io_that_the_graphs_lack_is_refused(bundle, case, tmp_path):
    change, message = CONTRACT[case]
    rewrite(bundle, change(manifest_of(bundle)))
    with pytest.raises(UserError, match="do not match the inputs and outputs") as caught:
        load_bundle(bundle)
    assert message in str(caught.value)
    out = tmp_path / "models"
    assert_clean_error(invoke("export-triton", bundle, "--out", out), message)
    assert not out.exists()


def test_a_drug_encoder_of_another_width_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from unicure_rt.drugs.encoder import rdkit_encoder_spec

    directory = tmp_path / "rdkit"
    directory.mkdir()
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["fingerprint", "W"], ["drug_embedding"])],
        "drug_encoder",
        [helper.make_tensor_value_info("fingerprint", TensorProto.FLOAT, ["batch", 2048])],
        [helper.make_tensor_value_info("drug_embedding", TensorProto.FLOAT, ["batch", 100])],
        [numpy_helper.from_array(np.zeros((2048, 100), np.float32), "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, directory / "drug_encoder.onnx")
    write_fake_bundle(directory, rdkit_encoder_spec(directory / "drug_encoder.onnx", dim=512))
    with pytest.raises(UserError, match="drug_encoder output 'drug_embedding' axis 1: size 512"):
        load_bundle(directory)


# ---- 8. pinning a bundle: its manifest digest, its signature ------------------------------


def digest(bundle: Path) -> str:
    return hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()


def test_verify_reports_the_digest_and_accepts_the_pinned_one(bundle):
    result = invoke("verify", bundle, "--bundle-sha256", digest(bundle).upper(), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["manifest_sha256"] == digest(bundle) and report["pinned_sha256"] == "ok"
    assert report["signature"] == "not checked"


@pytest.mark.parametrize("change", ["perturbed graph", "permuted genes"])
def test_a_consistent_but_different_bundle_fails_the_pin(bundle, change):
    """Re-hashed after a change, the bundle passes its integrity check: only the pin sees it."""
    pinned = digest(bundle)
    manifest = manifest_of(bundle)
    if change == "perturbed graph":
        onnx = pytest.importorskip("onnx")
        model = onnx.load(str(bundle / "flexpert.onnx"))
        weight = next(t for t in model.graph.initializer if t.name == "W")
        values = np.frombuffer(weight.raw_data, np.float32).copy()
        values[0] += 1e-3
        weight.raw_data = values.tobytes()
        onnx.save(model, str(bundle / "flexpert.onnx"))
    else:
        manifest["genes"] = manifest["genes"][::-1]
    write_manifest(bundle, manifest)
    load_bundle(bundle)  # consistent with itself
    with pytest.raises(UserError, match="not the pinned"):
        load_bundle(bundle, BundlePin(sha256=pinned))
    assert_clean_error(invoke("verify", bundle, "--bundle-sha256", pinned), "not the pinned")


@pytest.mark.parametrize("value", ["abc", "g" * 64, ""])
def test_a_malformed_pin_is_refused(bundle, value):
    assert_clean_error(invoke("verify", bundle, "--bundle-sha256", value), "64 hexadecimal")


def test_every_command_that_runs_a_bundle_takes_the_pin(tiny_bundle, tmp_path):
    from test_reliability_outputs import counts_csv

    table = counts_csv(tmp_path / "t.csv")
    wrong = "0" * 64
    commands = {
        "score": ["score", table, "--normal-where", "sample=n", "--out", tmp_path / "s"],
        "embed": ["embed", table, "--out", tmp_path / "e.parquet"],
        "predict": ["predict", table, "--drug", "drug01", "--out", tmp_path / "p.parquet"],
        "export-triton": ["export-triton", tiny_bundle, "--out", tmp_path / "models"],
    }
    for name, args in commands.items():
        bundle_args = [] if name == "export-triton" else ["--bundle", tiny_bundle]
        result = invoke(*args, *bundle_args, "--bundle-sha256", wrong)
        assert_clean_error(result, "not the pinned")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]
    right = digest(Path(tiny_bundle))
    result = invoke(*commands["embed"], "--bundle", tiny_bundle, "--bundle-sha256", right)
    assert result.exit_code == 0, result.output
    assert f"manifest sha256 {right}" in " ".join(result.output.split())
    result = invoke(*commands["score"], "--bundle", tiny_bundle, "--draws", "1", "--doses", "1")
    assert result.exit_code == 0, result.output
    assert f"manifest sha256 {right}" in " ".join(result.output.split())


@pytest.fixture
def keys(tmp_path):
    pytest.importorskip("model_signing", reason="signatures need the [signing] extra")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    paths = {}
    for who in ("publisher", "stranger"):
        key = ec.generate_private_key(ec.SECP256R1())
        paths[who] = tmp_path / f"{who}.pem", tmp_path / f"{who}.pub.pem"
        paths[who][0].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        paths[who][1].write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return paths


def sign(bundle: Path, private_key: Path, signature: Path) -> Path:
    from model_signing import signing

    signing.Config().use_elliptic_key_signer(private_key=str(private_key)).sign(
        str(bundle), str(signature)
    )
    return signature


def test_a_signed_bundle_verifies_with_the_trusted_key_only(bundle, keys, tmp_path):
    signature = sign(bundle, keys["publisher"][0], tmp_path / "bundle.sig")
    ok = invoke(
        "verify", bundle, "--bundle-signature", signature, "--trusted-key", keys["publisher"][1]
    )
    assert ok.exit_code == 0, ok.output
    assert "verified with the trusted key" in ok.output
    stranger = invoke(
        "verify", bundle, "--bundle-signature", signature, "--trusted-key", keys["stranger"][1]
    )
    assert_clean_error(stranger, "does not verify")
    forged = sign(bundle, keys["stranger"][0], tmp_path / "forged.sig")
    pin = BundlePin(signature=forged, trusted_key=keys["publisher"][1])
    with pytest.raises(UserError, match="does not verify"):
        load_bundle(bundle, pin)


def test_a_bundle_changed_after_signing_is_refused(bundle, keys, tmp_path):
    signature = sign(bundle, keys["publisher"][0], tmp_path / "bundle.sig")
    manifest = manifest_of(bundle)
    manifest["genes"] = manifest["genes"][::-1]
    write_manifest(bundle, manifest)
    pin = BundlePin(signature=signature, trusted_key=keys["publisher"][1])
    with pytest.raises(UserError, match="changed after signing"):
        load_bundle(bundle, pin)


def test_signature_options_go_together_and_need_the_extra(bundle, tmp_path, monkeypatch):
    sig = tmp_path / "x.sig"
    sig.write_text("{}")
    assert_clean_error(invoke("verify", bundle, "--bundle-signature", sig), "go together")
    monkeypatch.setitem(sys.modules, "model_signing", None)
    result = invoke("verify", bundle, "--bundle-signature", sig, "--trusted-key", sig)
    assert_clean_error(result, "pip install '.[signing]'")


# ---- 13. a library's embedding width is the encoder's -------------------------------------


def _library(tmp_path: Path, width: int) -> Path:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(4, width)), index=[f"d{i}" for i in range(4)])
    table.index.name = "drug_id"
    table.to_parquet(tmp_path / f"emb{width}.parquet")
    out = tmp_path / f"lib{width}.parquet"
    import_library(tmp_path / f"emb{width}.parquet", encoder_id="unimol-512", out=out)
    return out


def test_a_library_of_another_width_is_refused(bundle, tmp_path):
    """100 values under the right encoder id were scored, dose values filling the gap."""
    loaded = load_bundle(bundle)
    with pytest.raises(UserError, match="holds embeddings of 100 values.*makes 512"):
        resolve_library(loaded, _library(tmp_path, 100))
    assert resolve_library(loaded, _library(tmp_path, 512)).dim == 512


def test_score_refuses_a_narrow_library(tiny_bundle, tmp_path):
    from test_reliability_outputs import counts_csv

    table = counts_csv(tmp_path / "in" / "t.csv")
    result = invoke(
        "score", table, "--bundle", tiny_bundle, "--drugs", _library(tmp_path, 100),
        "--normal-where", "sample=n", "--out", tmp_path / "out",
    )  # fmt: skip
    assert_clean_error(result, "holds embeddings of 100 values")
    assert not (tmp_path / "out").exists()
