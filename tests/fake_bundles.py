"""Small complete bundles for tests that need a loadable bundle but not a trained model.

`write_fake_bundle(directory, drug_encoder=...)` writes a backbone and a flexpert graph with the
manifest's declared I/O (the values they compute are arbitrary), a two-gene tokenizer and the
manifest hashing every file already in `directory` (e.g. a drug encoder graph written first).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from unicure_rt.bundle.load import write_manifest

CELL_DIM = 8
GENES = ["GENEA", "GENEB", "GENEC"]
PRECOMPUTED = {"id": "unimol-512", "kind": "precomputed", "dim": 512}


def per_drug_flexpert_inputs(cell_dim: int = 1280) -> list[SimpleNamespace]:
    """`get_inputs()` of a flexpert graph exported before the `cells` axis (one cell row per
    drug), for session stand-ins that `runtime.sessions.cell_feed` reads."""
    return [
        SimpleNamespace(name="cell_embedding", shape=["batch", cell_dim]),
        SimpleNamespace(name="drug", shape=["batch", "drug_length"]),
    ]


def _save(model, path: Path) -> None:
    onnx = pytest.importorskip("onnx", reason="writing test graphs needs onnx")
    model.ir_version = 9
    onnx.save(model, path)


def _backbone(path: Path, cell_dim: int) -> None:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["tokens"], ["t"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["t", "axis"], ["s"], keepdims=1),
            helper.make_node("MatMul", ["s", "W"], ["cell_embedding"]),
        ],
        "backbone",
        [
            helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("cell_embedding", TensorProto.FLOAT, ["batch", cell_dim])],
        [
            numpy_helper.from_array(np.array([1], np.int64), "axis"),
            numpy_helper.from_array(np.ones((1, cell_dim), np.float32), "W"),
        ],
    )
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _flexpert(path: Path, cell_dim: int, n_genes: int) -> None:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["cell_embedding", "W"], ["c"]),
            helper.make_node("ReduceSum", ["drug", "axis"], ["d"], keepdims=1),
            helper.make_node("Add", ["c", "d"], ["expression"]),
        ],
        "flexpert",
        [
            helper.make_tensor_value_info("cell_embedding", TensorProto.FLOAT, ["batch", cell_dim]),
            helper.make_tensor_value_info("drug", TensorProto.FLOAT, ["batch", "drug_length"]),
        ],
        [helper.make_tensor_value_info("expression", TensorProto.FLOAT, ["batch", n_genes])],
        [
            numpy_helper.from_array(np.array([1], np.int64), "axis"),
            numpy_helper.from_array(np.ones((cell_dim, n_genes), np.float32), "W"),
        ],
    )
    _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def fake_manifest(drug_encoder: dict, cell_dim: int = CELL_DIM) -> dict:
    """The manifest entries of a fake bundle (without `files` and `format_version`)."""
    tensor = lambda name, dtype, shape: {"name": name, "dtype": dtype, "shape": shape}  # noqa: E731
    return {
        "model": {
            "n_layers": 1,
            "d_model": 4,
            "n_heads": 1,
            "cell_dim": cell_dim,
            "padding": "masked",
        },
        "graphs": {
            "backbone": {
                "path": "backbone.onnx",
                "inputs": [
                    tensor("tokens", "int64", ["batch", "seq"]),
                    tensor("mask", "int64", ["batch", "seq"]),
                ],
                "outputs": [tensor("cell_embedding", "float32", ["batch", cell_dim])],
            },
            "flexpert": {
                "path": "flexpert.onnx",
                "inputs": [
                    tensor("cell_embedding", "float32", ["batch", cell_dim]),
                    tensor("drug", "float32", ["batch", "drug_length"]),
                ],
                "outputs": [tensor("expression", "float32", ["batch", len(GENES)])],
            },
        },
        "genes": list(GENES),
        "tokenizer": {
            "tokens": ["<pad>", "<cls>", "<chrom_close>", "chrom:1"] + [f"gene:{g}" for g in GENES],
            "gene_loci": {g: ["1", 100 * (i + 1)] for i, g in enumerate(GENES)},
            "pad_length": 8,
            "sample_size": 4,
            "padding": "masked",
            "weighting": "unlogged",
        },
        "drug_encoder": dict(drug_encoder),
        "precision": "fp32",
    }


def write_fake_bundle(directory: Path, drug_encoder: dict = PRECOMPUTED, **entries) -> Path:
    """A loadable bundle in `directory` (created if needed); `entries` override manifest keys."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _backbone(directory / "backbone.onnx", CELL_DIM)
    _flexpert(directory / "flexpert.onnx", CELL_DIM, len(GENES))
    manifest = fake_manifest(drug_encoder)
    manifest.update(entries)
    write_manifest(directory, manifest)
    return directory
