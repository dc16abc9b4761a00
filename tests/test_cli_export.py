"""`unicure-rt export` from both checkpoint layouts to verified bundles, through the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch", reason="the export tests need the [export] extra (torch)")

from published_fixtures import make_published_state_dict, make_uce_files  # noqa: E402
from reference_impl import reference_cell_embedding  # noqa: E402

from unicure_rt.bundle.load import load_bundle  # noqa: E402
from unicure_rt.cli.app import app  # noqa: E402
from unicure_rt.runtime.tokenizer import Tokenizer  # noqa: E402
from unicure_rt.train.export.convert import published_vocabulary  # noqa: E402
from unicure_rt.train.models import UniCure, add_lora, save_native  # noqa: E402

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_published_checkpoint_exports_to_a_verified_bundle(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    uce = make_uce_files(tmp_path)
    state = make_published_state_dict(pad_length=1536, full_flexpert=False)
    torch.save(state, tmp_path / "unicure.pth")
    out = tmp_path / "bundle"
    result = invoke(
        "export",
        tmp_path / "unicure.pth",
        "--from",
        "reference",
        "--out",
        out,
        "--species-chrom",
        uce.species_chrom,
        "--protein-embeddings",
        uce.protein_embeddings,
        "--n-heads",
        "4",
    )
    assert result.exit_code == 0, result.output
    assert "Parity with PyTorch" in result.output
    progress = result.stderr.splitlines()  # no terminal: each step's start and end on stderr
    assert progress[0] == "loading checkpoint: started"
    assert progress[1].startswith("loading checkpoint: 1/1 (")
    assert len(progress) >= 6 and progress[-1].endswith(")") and "1/1" in progress[-1]
    bundle = load_bundle(out)
    manifest = bundle.manifest
    assert manifest["model"]["padding"] == "reference" and manifest["model"]["pad_length"] == 1536
    assert manifest["provenance"]["source_layout"] == "reference"
    assert all(row["max_abs"] < 1e-4 for row in manifest["parity"])
    tokenizer = Tokenizer.from_spec(bundle.tokenizer)
    profiles = np.random.default_rng(0).lognormal(1, 0.5, size=(2, len(tokenizer.genes)))
    tokens, mask = tokenizer.encode(profiles, ["a", "b"], seed=0)
    session = ort.InferenceSession(str(out / "backbone.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"tokens": tokens, "mask": mask})[0]
    vocabulary, published_ids = published_vocabulary(uce.species_chrom, uce.protein_embeddings)
    assert vocabulary["tokens"] == bundle.tokenizer["tokens"]
    want = reference_cell_embedding(
        state, torch.from_numpy(published_ids[tokens]), torch.from_numpy(mask), n_heads=4
    )
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


def test_reference_export_needs_the_uce_files(tmp_path):
    torch.save(make_published_state_dict(full_flexpert=False), tmp_path / "unicure.pth")
    result = invoke(
        "export", tmp_path / "unicure.pth", "--from", "reference", "--out", tmp_path / "b"
    )
    assert result.exit_code == 2
    assert "--species-chrom" in result.output and not (tmp_path / "b").exists()


def test_native_checkpoint_with_lora_exports(tmp_path):
    from conftest import landmark_vocabulary, tiny_config

    vocabulary, genes = landmark_vocabulary()
    torch.manual_seed(0)
    model = add_lora(UniCure(tiny_config(len(vocabulary["tokens"]))))
    save_native(model, tmp_path / "ckpt", vocabulary=vocabulary, genes=genes)
    out = tmp_path / "bundle"
    examples = Path(__file__).resolve().parents[1] / "examples" / "tcga_brca.h5ad"
    result = invoke("export", tmp_path / "ckpt", "--out", out, "--validation-data", examples)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    cases = {(row["graph"], row["case"]) for row in manifest["parity"]}
    assert ("backbone", "real_profiles") in cases
    assert manifest["genes"] == genes
    assert manifest["provenance"]["source_layout"] == "native"
    again = invoke("export", tmp_path / "ckpt", "--out", out)
    assert again.exit_code == 2 and "already exists" in again.output


def test_not_a_checkpoint(tmp_path):
    result = invoke("export", tmp_path, "--out", tmp_path / "b")
    assert result.exit_code == 2 and "not a native unicure-rt checkpoint" in result.output


def test_native_checkpoint_with_unmerged_peft_adapters(tmp_path):
    """Base weights from save_native plus peft's own adapter files: export merges them."""
    from conftest import landmark_vocabulary, tiny_config

    vocabulary, genes = landmark_vocabulary()
    torch.manual_seed(0)
    base = UniCure(tiny_config(len(vocabulary["tokens"])))
    save_native(base, tmp_path / "ckpt", vocabulary=vocabulary, genes=genes)
    spec = {
        **vocabulary,
        "pad_length": 160,
        "sample_size": 96,
        "padding": "masked",
        "weighting": "linear",
    }
    values = np.random.default_rng(1).lognormal(1, 0.5, size=(2, 978))
    tokens, mask = Tokenizer.from_spec(spec).encode(values, ["a", "b"], seed=0)
    with torch.no_grad():
        plain = base.eval().backbone(torch.from_numpy(tokens), torch.from_numpy(mask)).numpy()
    adapted = add_lora(base)
    for name, param in adapted.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.3)
    adapted.save_pretrained(str(tmp_path / "ckpt"))
    assert (tmp_path / "ckpt" / "adapter_config.json").is_file()
    out = tmp_path / "bundle"
    result = invoke("export", tmp_path / "ckpt", "--out", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert all(row["max_abs"] < 1e-4 for row in manifest["parity"])
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(out / "backbone.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"tokens": tokens, "mask": mask})[0]
    with torch.no_grad():
        adapted.eval()
        want = adapted.base_model.model.backbone(torch.from_numpy(tokens), torch.from_numpy(mask))
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    assert np.abs(got - plain).max() > 1e-4, "the adapters must be part of the export"
