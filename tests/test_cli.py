"""End-to-end CLI tests through Typer's runner: score, embed, predict, info, export."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from unicure_rt.cli.app import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tcga(shared_data):
    return shared_data / "patients" / "tcga_brca_rsem_counts.parquet"


def score_tcga(tiny_bundle, tcga, out, *extra):
    return invoke(
        "score",
        tcga,
        "--bundle",
        tiny_bundle,
        "--normal-where",
        "sample~-11A",
        "--out",
        out,
        *extra,
    )


def test_score_tcga_writes_ranking_and_run_record(tiny_bundle, tcga, tmp_path):
    result = score_tcga(tiny_bundle, tcga, tmp_path / "out", "--top", "3")
    assert result.exit_code == 0, result.output
    ranking = pd.read_parquet(tmp_path / "out" / "ranking.parquet")
    assert ranking["profile"].nunique() == 5
    assert len(ranking) == 5 * 50
    for _, rows in ranking.groupby("profile"):
        assert sorted(rows["rank"]) == list(range(1, 51))
        assert rows.sort_values("rank")["score"].is_monotonic_increasing
    dose_columns = [c for c in ranking if c.startswith("score_") and c.endswith("uM")]
    assert len(dose_columns) == 6
    np.testing.assert_allclose(ranking[dose_columns].mean(axis=1), ranking["score"], atol=1e-12)
    assert set(ranking["best_dose_uM"]) <= {0.04, 0.12, 0.37, 1.11, 3.33, 10.0}
    csv = pd.read_csv(tmp_path / "out" / "ranking.csv")
    assert list(csv.columns) == list(ranking.columns)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["seed"] == 0 and run["draws"] == 3
    assert run["providers"]["flexpert"] == "CPUExecutionProvider"
    assert run["signed_int8_graphs"] == []  # fp32 graphs: nothing to run as int8
    assert run["gene_coverage"]["output_genes_present"] == 978
    assert (
        run["inputs"][0]["sha256"]
        and run["library"]["content_sha256"]
        and run["bundle"]["manifest_sha256"]
    )
    assert {"embedding_s", "scoring_s", "total_s"} <= set(run["timings_s"])
    assert "TCGA-A2-A0CV-01A-31R-A115-07" in result.output


def test_run_record_holds_no_expression_values(tiny_bundle, tcga, tmp_path):
    assert score_tcga(tiny_bundle, tcga, tmp_path / "out").exit_code == 0
    text = (tmp_path / "out" / "run.json").read_text()
    tumour = pd.read_parquet(tcga)
    values = {f"{v:.4f}" for v in tumour.iloc[:200, 0].to_numpy() if v > 1}
    assert not any(v in text for v in values)


def test_same_seed_gives_byte_identical_rankings_across_threads(tiny_bundle, tcga, tmp_path):
    assert score_tcga(tiny_bundle, tcga, tmp_path / "a", "--threads", "1").exit_code == 0
    assert score_tcga(tiny_bundle, tcga, tmp_path / "b", "--threads", "2").exit_code == 0
    assert (tmp_path / "a" / "ranking.parquet").read_bytes() == (
        tmp_path / "b" / "ranking.parquet"
    ).read_bytes()
    assert score_tcga(tiny_bundle, tcga, tmp_path / "c", "--seed", "1").exit_code == 0
    a = pd.read_parquet(tmp_path / "a" / "ranking.parquet")
    c = pd.read_parquet(tmp_path / "c" / "ranking.parquet")
    assert not np.array_equal(a["score"].to_numpy(), c["score"].to_numpy())


def test_existing_output_needs_force(tiny_bundle, tcga, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = score_tcga(tiny_bundle, tcga, out)
    assert result.exit_code == 2 and "already exists" in result.output
    assert (out / "mine.txt").read_text() == "keep me"
    refused = score_tcga(tiny_bundle, tcga, out, "--force")
    assert refused.exit_code == 2 and "not written by unicure-rt" in refused.output
    assert (out / "mine.txt").read_text() == "keep me"
    (out / "mine.txt").unlink()
    out.rmdir()
    assert score_tcga(tiny_bundle, tcga, out).exit_code == 0
    (out / "stale.txt").write_text("from an earlier run")
    assert score_tcga(tiny_bundle, tcga, out, "--force").exit_code == 0
    assert (out / "ranking.parquet").exists() and not (out / "stale.txt").exists()


def test_json_output(tiny_bundle, tcga):
    result = invoke(
        "score",
        tcga,
        "--bundle",
        tiny_bundle,
        "--normal-where",
        "sample~-11A",
        "--json",
        "--top",
        "2",
        "--draws",
        "1",
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert len(payload["profiles"]) == 5
    assert all(len(rows) == 2 and rows[0]["rank"] == 1 for rows in payload["profiles"].values())
    assert all(rows[0]["score_sd_across_draws"] is None for rows in payload["profiles"].values())


def test_oligodendroglioma_with_normal_cells_in_the_same_file(tiny_bundle, shared_data, tmp_path):
    result = invoke(
        "score",
        shared_data / "singlecell" / "oligodendroglioma.h5ad",
        "--bundle",
        tiny_bundle,
        "--normal-where",
        "cell_type~Oligodendrocytes",
        "--sample-key",
        "obs_names:^([^_]+)_",
        "--min-cells",
        "5",
        "--out",
        tmp_path / "out",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["gene_coverage"]["output_genes_present"] == 735  # 17 by older symbols (aliases)
    sources = {p["profile"]: p["normal_source"] for p in run["profiles"]}
    assert sources["MGH53"].startswith("matched")


def test_pbmc_is_refused_for_coverage(tiny_bundle, shared_data, tmp_path):
    out = tmp_path / "out"
    result = invoke(
        "score",
        shared_data / "singlecell" / "pbmc68k_reduced.h5ad",
        "--bundle",
        tiny_bundle,
        "--normal-where",
        "bulk_labels=CD14+ Monocyte",
        "--out",
        out,
    )
    assert result.exit_code == 2
    assert "71 of 978" in " ".join(result.output.split())
    assert "Traceback" not in result.output and not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "normal reference is required"),
        (("--normal-where", "sample~-11A", "--doses", "1,abc"), "--doses"),
        (("--normal-where", "sample~-11A", "--device", "quantum"), "Unknown --device"),
        (("--normal-where", "sample~-11A", "--device", "cuda"), "cannot run here"),
        (("--normal-where", "sample~-11A", "--drugs", "missing.parquet"), "missing.parquet"),
    ],
)
def test_bad_options_are_clean_errors(tiny_bundle, tcga, tmp_path, args, message):
    out = tmp_path / "out"
    result = invoke("score", tcga, "--bundle", tiny_bundle, "--out", out, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not out.exists()
    assert not list(tmp_path.iterdir())


def test_missing_input_file(tiny_bundle, tmp_path):
    result = invoke(
        "score", tmp_path / "nope.h5ad", "--bundle", tiny_bundle, "--normal-where", "a=b"
    )
    assert result.exit_code == 2 and "nope.h5ad" in result.output


def test_embed_profiles_and_cells(tiny_bundle, tcga, shared_data, tmp_path):
    result = invoke(
        "embed", tcga, "--bundle", tiny_bundle, "--out", tmp_path / "e.parquet", "--draws", "2"
    )
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "e.parquet")
    embeddings = table[[c for c in table if c.startswith("emb_")]].to_numpy()
    assert embeddings.shape == (10, 1280)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    import anndata

    h5ad = shared_data / "singlecell" / "oligodendroglioma.h5ad"
    result = invoke(
        "embed", h5ad, "--bundle", tiny_bundle, "--out", tmp_path / "cells.h5ad", "--draws", "1"
    )
    assert result.exit_code == 0, result.output
    adata = anndata.read_h5ad(tmp_path / "cells.h5ad")
    assert adata.obsm["X_unicure"].shape == (184, 1280)
    progress = result.stderr.splitlines()  # no terminal: plain lines on stderr
    assert progress[0] == "embedding: started" and progress[1].startswith("embedding: 184/184 (")
    assert "embedding:" not in result.stdout


def test_predict_named_drugs(tiny_bundle, tcga, tmp_path):
    out = tmp_path / "p.parquet"
    result = invoke(
        "predict",
        tcga,
        "--bundle",
        tiny_bundle,
        "--drug",
        "drug03",
        "--drug",
        "drug07",
        "--doses",
        "1,10",
        "--draws",
        "1",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "Demonstration model" not in result.output  # a bundle trained elsewhere
    predictions = pd.read_parquet(out)
    assert len(predictions) == 10 * 2 * 2
    assert predictions.shape[1] == 3 + 978
    progress = result.stderr.splitlines()  # no terminal: plain lines per stage on stderr
    assert progress[0] == "embedding: started" and progress[1].startswith("embedding: 10/10 (")
    assert progress[2] == "predicting: started" and progress[3].startswith("predicting: 10/10 (")
    bad = invoke("predict", tcga, "--bundle", tiny_bundle, "--drug", "aspirin-not-there")
    assert bad.exit_code == 2 and "not in library" in bad.output


def test_bundled_demo_model_says_so_once(tcga):
    """The bundled model's runs carry one line saying it is the demonstration model."""
    result = invoke("predict", tcga, "--drug", "vorinostat", "--doses", "1", "--draws", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("Demonstration model, not the published UniCure weights") == 1


def test_predict_json(tiny_bundle, tcga, tmp_path):
    args = ["--drug", "drug03", "--drug", "drug01+drug02", "--doses", "1", "--draws", "1"]
    result = invoke("predict", tcga, "--bundle", tiny_bundle, *args, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout holds the JSON and nothing else
    assert set(summary) == {"predictions", "run"}
    run = summary["run"]
    assert set(run) == {"bundle", "seed", "draws", "doses_uM", "effect", "baseline", "out"}
    assert run["doses_uM"] == [1.0] and run["draws"] == 1 and run["out"] is None
    assert run["effect"] in ("published", "contrast") and isinstance(run["baseline"], str)
    assert len(run["bundle"]["manifest_sha256"]) == 64
    rows = summary["predictions"]
    assert len(rows) == 10 * 2  # profiles x (one drug + one pair) x one dose
    assert {row["drug_id"] for row in rows} == {"drug03", "drug01+drug02"}
    for row in rows:
        assert set(row) == {"profile", "drug_id", "drug_name", "dose_uM", "largest_changes"}
        assert isinstance(row["profile"], str) and row["dose_uM"] == 1.0
        assert row["drug_name"] in ("drug03", "drug01+drug02")
        assert len(row["largest_changes"]) == 5
        for change in row["largest_changes"]:
            assert set(change) == {"gene", "change"} and isinstance(change["change"], float)
        sizes = [abs(c["change"]) for c in row["largest_changes"]]
        assert sizes == sorted(sizes, reverse=True)
    assert "drug pair" in " ".join(result.stderr.split())  # the pair caveat, on stderr
    assert "started" not in result.stderr  # --json: no progress


def test_info_json(tiny_bundle):
    result = invoke("info", tiny_bundle, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["manifest"]["graphs"]["backbone"]["outputs"][0]["name"] == "cell_embedding"
    assert "CPUExecutionProvider" in summary["available_providers"]
    assert invoke("info", tiny_bundle).exit_code == 0


BLOCK_TORCH = (
    "import sys, importlib.abc\n"
    "class NoTorch(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r} (blocked by the test)')\n"
    "sys.meta_path.insert(0, NoTorch())\n"
)


def test_score_runs_without_torch(tiny_bundle, tcga, tmp_path):
    """The clinic side must not need torch: make it unimportable and run a whole score."""
    code = BLOCK_TORCH + (
        "from typer.testing import CliRunner\n"
        "from unicure_rt.cli.app import app\n"
        f"r = CliRunner().invoke(app, ['score', {str(tcga)!r}, '--bundle', {str(tiny_bundle)!r},"
        f" '--normal-where', 'sample~-11A', '--out', {str(tmp_path / 'o')!r}, '-q'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "o" / "ranking.parquet").exists()


def test_import_does_not_load_torch():
    code = (
        "import sys, unicure_rt.cli.app, unicure_rt.scoring.pipeline; print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_report_is_self_contained(tiny_bundle, tcga, tmp_path):
    result = score_tcga(tiny_bundle, tcga, tmp_path / "out", "--report", "--top", "4", "-q")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    for name in ("report.html", "top_drugs.png", "dose_curves.png", "rank_heatmap.png"):
        assert (out / name).stat().st_size > 1000
    page = (out / "report.html").read_text()
    assert "TCGA-A2-A0CV-01A-31R-A115-07" in page and "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "978 of 978" in page
    no_out = invoke(
        "score", tcga, "--bundle", tiny_bundle, "--normal-where", "sample~-11A", "--report"
    )
    assert no_out.exit_code == 2 and "--out" in no_out.output


def test_signature_constant_over_measured_genes_is_refused(tiny_bundle, tmp_path):
    from unicure_rt.train.export.pipeline import default_output_genes

    genes = default_output_genes()
    base = np.random.default_rng(0).uniform(2, 12, size=len(genes)).round(1) + 0.25
    table = pd.DataFrame({"tumour": base + 1.0, "normal": base}, index=genes)
    table.loc["EXTRA1"] = [3.0, 9.0]
    table.to_csv(tmp_path / "t.csv")
    result = invoke(
        "score",
        tmp_path / "t.csv",
        "--bundle",
        tiny_bundle,
        "--normal-where",
        "sample=normal",
        "--out",
        tmp_path / "o",
    )
    assert result.exit_code == 2, result.output
    assert "constant" in result.output and not (tmp_path / "o").exists()


def test_progress_without_a_terminal_is_plain_lines_on_stderr():
    import io

    from rich.console import Console

    from unicure_rt.cli.common import LineProgress

    stream = io.StringIO()
    progress = LineProgress(Console(file=stream, width=200), every=3600)
    with progress:
        task = progress.add_task("scoring", total=3)
        for done in (1, 2, 3):
            progress.update(task, completed=done)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "scoring: started"
    assert len(lines) == 2 and lines[1].startswith("scoring: 3/3 (")  # 1 and 2: within `every`
