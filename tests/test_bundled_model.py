"""The bundled default model scores both shipped examples through the CLI (the README's job)."""

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from unicure_rt.bundle.load import DEFAULT_BUNDLE, load_bundle
from unicure_rt.cli.app import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()


def test_default_bundle_is_verified_and_documented():
    bundle = load_bundle()
    assert bundle.path == DEFAULT_BUNDLE
    assert set(bundle.manifest["files"]) == {
        "backbone.onnx",
        "flexpert.onnx",
        "drug_encoder.onnx",
        "drugs.parquet",
        "MODEL_CARD.md",
    }
    assert "NOT the published UniCure" in (DEFAULT_BUNDLE / "MODEL_CARD.md").read_text()
    assert sum((DEFAULT_BUNDLE / f).stat().st_size for f in bundle.manifest["files"]) <= 30e6


def test_tcga_example_quick_start(tmp_path):
    result = runner.invoke(
        app,
        [
            "score",
            str(EXAMPLES / "tcga_brca.h5ad"),
            "--normal-where",
            "condition=normal",
            "--top",
            "5",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 0, result.output
    ranking = pd.read_parquet(tmp_path / "o" / "ranking.parquet")
    assert ranking["profile"].nunique() == 5
    assert ranking["drug_id"].nunique() == len(ranking) // 5 > 4000
    assert "TCGA-A2-A0CV-01A-31R-A115-07" in result.output


def test_oligodendroglioma_example(tmp_path):
    result = runner.invoke(
        app,
        [
            "score",
            str(EXAMPLES / "oligodendroglioma.h5ad"),
            "--sample-key",
            "patient",
            "--normal-where",
            "condition=normal",
            "--min-cells",
            "5",
            "--draws",
            "1",
            "--out",
            str(tmp_path / "o"),
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["gene_coverage"]["output_genes_present"] == 735  # 17 by older symbols (aliases)
    assert {p["sample"] for p in run["profiles"]} >= {"MGH36", "MGH53"}
