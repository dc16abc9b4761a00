"""`export-triton`: the model repository's configs against the graphs, and the client example's
requests run on the exported graphs with ONNX Runtime in place of a Triton server."""

from __future__ import annotations

import importlib.util
import inspect
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from unicure_rt.bundle.load import load_bundle, write_manifest
from unicure_rt.cli.app import app
from unicure_rt.engines import triton_client
from unicure_rt.patients.load import load_patient
from unicure_rt.scoring.options import ScoreOptions, resolve_library
from unicure_rt.scoring.pipeline import score_patient

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2",
    reason="the Triton tests need tritonclient[grpc] (in the dev extra): pip install -e '.[dev]'",
)
text_format = pytest.importorskip("google.protobuf.text_format")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tcga_brca.h5ad"
ORT_TYPES = {"tensor(int64)": "TYPE_INT64", "tensor(float)": "TYPE_FP32"}
NUMPY_TYPES = {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def parse_config(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def type_name(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


def session(repository: Path, model: str) -> ort.InferenceSession:
    path = repository / model / "1" / "model.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def repository(tiny_bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "models"
    result = invoke("export-triton", tiny_bundle, "--out", out, "--max-batch-size", "32")
    assert result.exit_code == 0, result.output
    return out


def test_repository_layout(repository, tiny_bundle):
    files = sorted(p.relative_to(repository).as_posix() for p in repository.rglob("*"))
    assert files == [
        "README.md",
        "backbone",
        "backbone/1",
        "backbone/1/model.onnx",
        "backbone/config.pbtxt",
        "client_example.py",
        "flexpert",
        "flexpert/1",
        "flexpert/1/model.onnx",
        "flexpert/config.pbtxt",
        "manifest.json",
    ]
    bundle = load_bundle(tiny_bundle)
    manifest = (tiny_bundle / "manifest.json").read_bytes()
    assert (repository / "manifest.json").read_bytes() == manifest
    for graph in ("backbone", "flexpert"):
        copied = (repository / graph / "1" / "model.onnx").read_bytes()
        assert copied == bundle.graph_path(graph).read_bytes()
    assert (repository / "client_example.py").read_text() == inspect.getsource(triton_client)
    assert not list(repository.parent.glob(".models.partial-*"))


@pytest.mark.parametrize("model", ["backbone", "flexpert"])
def test_configs_parse_and_match_the_graphs(repository, model):
    config = parse_config(repository / model / "config.pbtxt")
    assert config.name == model
    assert config.platform == "onnxruntime_onnx"
    assert config.default_model_filename == "model.onnx"
    assert config.max_batch_size == 32
    assert config.HasField("dynamic_batching")
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator
    graph = session(repository, model)
    for declared, actual in (
        (config.input, graph.get_inputs()),
        (config.output, graph.get_outputs()),
    ):
        assert [t.name for t in declared] == [a.name for a in actual]
        for tensor, arg in zip(declared, actual, strict=True):
            assert type_name(tensor.data_type) == ORT_TYPES[arg.type]
            # the batch dimension is Triton's; every other dimension as the graph has it
            assert isinstance(arg.shape[0], str)
            expected = [d if isinstance(d, int) else -1 for d in arg.shape[1:]]
            assert list(tensor.dims) == expected, (model, tensor.name, arg.shape)


def test_flexpert_config_accepts_pair_vectors(repository):
    """A drug pair is fed as 1,056 values ([A | B], the published combination input), a drug
    alone as 528: the config leaves the drug width dynamic and the served graph runs both."""
    config = parse_config(repository / "flexpert" / "config.pbtxt")
    (drug,) = [t for t in config.input if t.name == "drug"]
    assert list(drug.dims) == [-1]
    graph = session(repository, "flexpert")
    rng = np.random.default_rng(0)
    cells = rng.normal(size=(3, 1280)).astype(np.float32)
    pair = rng.normal(size=(3, 1056)).astype(np.float32)
    feeds = {"cell_embedding": cells, "drug": pair}
    (expression,) = graph.run(["expression"], feeds)
    assert expression.shape == (3, 978) and np.isfinite(expression).all()
    (alone,) = graph.run(["expression"], {"cell_embedding": cells, "drug": pair[:, :528]})
    assert not np.allclose(alone, expression)  # the second arm is read, not ignored


def test_unbatched_and_tensorrt_variants(tiny_bundle, tmp_path):
    out = tmp_path / "plain"
    result = invoke(
        "export-triton", tiny_bundle, "--out", out, "--max-batch-size", "0", "--tensorrt"
    )
    assert result.exit_code == 0, result.output
    config = parse_config(out / "flexpert" / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert [list(t.dims) for t in config.input] == [[-1, 1280], [-1, -1]]
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert dict(accelerator.parameters) == {"precision_mode": "FP32"}

    out = tmp_path / "fp16"
    assert invoke("export-triton", tiny_bundle, "--out", out, "--tensorrt", "--fp16").exit_code == 0
    for model in ("backbone", "flexpert"):
        config = parse_config(out / model / "config.pbtxt")
        assert config.max_batch_size == 256
        (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert dict(accelerator.parameters) == {"precision_mode": "FP16"}


def test_client_example_requests_run_on_the_graphs(repository, tiny_bundle):
    """The copied client's requests, fed to the repository's graphs, rank like `score`."""
    path = repository / "client_example.py"
    spec = importlib.util.spec_from_file_location("client_example", path)
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    configs = {m: parse_config(repository / m / "config.pbtxt") for m in ("backbone", "flexpert")}
    sessions = {m: session(repository, m) for m in configs}
    requests = []

    def infer(model: str, inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
        config = configs[model]
        assert [t.name for t in config.input] == list(inputs)
        for tensor in config.input:
            array = inputs[tensor.name]
            assert type_name(tensor.data_type) == NUMPY_TYPES[str(array.dtype)]
            assert 0 < array.shape[0] <= config.max_batch_size
            assert all(d in (-1, n) for d, n in zip(tensor.dims, array.shape[1:], strict=True))
        requests.append(model)
        return sessions[model].run([output], inputs)[0]

    bundle = load_bundle(tiny_bundle)
    library = resolve_library(bundle, None)
    patient = load_patient(EXAMPLE, normal_where="condition=normal")
    local = score_patient(bundle, patient, library=library, options=ScoreOptions()).ranking
    manifest = json.loads((repository / "manifest.json").read_text())
    batch = configs["flexpert"].max_batch_size
    for profile in patient.tumour.index[:2]:
        scores = client.score_profile(
            infer,
            manifest,
            patient.tumour.loc[profile],
            patient.normal.loc[profile],
            library.iter_batches(batch),
        )
        expected = local[local["profile"] == profile].set_index("drug_id").loc[library.ids]
        np.testing.assert_allclose(scores, expected["score"].to_numpy(), rtol=0, atol=1e-6)
        assert np.array_equal(client.ascending_ranks(scores), expected["rank"].to_numpy())
    # per profile: one backbone call, then ceil(50 / 32) = 2 library batches x 6 doses
    assert requests == (["backbone"] + ["flexpert"] * 12) * 2


@pytest.mark.parametrize("read_with", ["onnx", "manifest"])
def test_external_data_files_travel_with_the_graph(tiny_bundle, tmp_path, monkeypatch, read_with):
    onnx = pytest.importorskip("onnx", reason="writing external data needs onnx ([export] extra)")
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    model = onnx.load(str(bundle / "flexpert.onnx"))
    onnx.save_model(
        model,
        str(bundle / "flexpert.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="flexpert.onnx.data",
    )
    manifest = json.loads((bundle / "manifest.json").read_text())
    write_manifest(bundle, manifest)
    if read_with == "manifest":  # the clinic install has no onnx: files named after the graph
        monkeypatch.setitem(sys.modules, "onnx", None)
    out = tmp_path / "models"
    assert invoke("export-triton", bundle, "--out", out).exit_code == 0
    version = out / "flexpert" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["flexpert.onnx.data", "model.onnx"]
    graph = session(out, "flexpert")
    cells = np.ones((2, 1280), np.float32)
    drugs = np.ones((2, 528), np.float32)
    assert graph.run(["expression"], {"cell_embedding": cells, "drug": drugs})[0].shape == (2, 978)


@pytest.mark.parametrize(
    "args, message",
    [
        (("--fp16",), "add --tensorrt"),
        (("--max-batch-size", "-1"), "--max-batch-size must be"),
    ],
)
def test_bad_options_are_clean_errors(tiny_bundle, tmp_path, args, message):
    out = tmp_path / "models"
    result = invoke("export-triton", tiny_bundle, "--out", out, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists() and not list(tmp_path.iterdir())


def test_refuses_to_overwrite_without_force(tiny_bundle, tmp_path):
    out = tmp_path / "models"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = invoke("export-triton", tiny_bundle, "--out", out)
    assert result.exit_code == 2 and "already exists" in result.output
    assert (out / "mine.txt").read_text() == "keep me"
    refused = invoke("export-triton", tiny_bundle, "--out", out, "--force")
    assert refused.exit_code == 2 and "not written by unicure-rt" in refused.output
    (out / "mine.txt").unlink()
    out.rmdir()
    assert invoke("export-triton", tiny_bundle, "--out", out).exit_code == 0
    (out / "mine.txt").write_text("added later")
    assert invoke("export-triton", tiny_bundle, "--out", out, "--force").exit_code == 0
    assert (out / "flexpert" / "config.pbtxt").exists() and not (out / "mine.txt").exists()
    not_a_bundle = invoke("export-triton", tmp_path / "nothing", "--out", tmp_path / "x")
    assert not_a_bundle.exit_code == 2 and "not a unicure-rt bundle" in not_a_bundle.output
