"""`score --engine ray`: a cohort on a local Ray cluster with 2 workers ranks every profile
exactly as the single-machine `score` does for its file."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from unicure_rt.bundle.load import load_bundle
from unicure_rt.cli.app import app
from unicure_rt.patients.genes import resolve_gene_ids

pytest.importorskip(
    "ray.data",
    reason="the Ray engine tests need Ray Data (the [ray] extra, also in [dev]): "
    "pip install '.[ray]' in a unicure-rt clone",
)
import ray  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tcga_brca.h5ad"
NORMAL_WHERE = "sample~-11A"  # TCGA solid-tissue normals, in the h5ad files and in the table
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def score_on_ray(inputs, bundle, out, *extra):
    """`unicure-rt score INPUTS --engine ray` against the cohort's solid-tissue normals."""
    args = ("--engine", "ray", "--bundle", bundle, "--normal-where", NORMAL_WHERE, "--out", out)
    return invoke("score", inputs, *args, *extra)


def big_table(adata: anndata.AnnData) -> pd.DataFrame:
    """Counts of 18 tumour profiles and the 5 normals, genes x samples: two blocks of 16 + 2.

    The tumours are the 5 real ones under several ids, with a different depth each, so every
    profile has its own sentences (seeded by its id) and its own counts."""
    counts = pd.DataFrame(
        np.asarray(adata.X).T, index=adata.var_names, columns=adata.obs_names
    ).round()
    tumours = [c for c in counts if "-01A" in c]
    normals = [c for c in counts if "-11A" in c]
    columns = {}
    for i in range(18):
        source = tumours[i % len(tumours)]
        columns[f"COHORT-{i:02d}-01A"] = (counts[source] * (1 + i % 4)).astype(np.int64)
    for source in normals:
        columns[source] = counts[source].astype(np.int64)
    return pd.DataFrame(columns)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, shared_data_or_none) -> Path:
    """A folder of patient files built from the real examples: the TCGA h5ad split in three,
    a counts table with 18 profiles, and the shared TCGA parquet when the data is present."""
    folder = tmp_path_factory.mktemp("cohort") / "patients"
    folder.mkdir()
    adata = anndata.read_h5ad(EXAMPLE)
    tumours = [n for n in adata.obs_names if "-01A" in n]
    normals = [n for n in adata.obs_names if "-11A" in n]
    adata[tumours[:2] + normals].copy().write_h5ad(folder / "a_first.h5ad")
    adata[tumours[2:4] + normals].copy().write_h5ad(folder / "b_second.h5ad")
    adata[tumours[4:] + normals[:2]].copy().write_h5ad(folder / "c_third.h5ad")
    big_table(adata).to_csv(folder / "d_cohort.csv")
    if shared_data_or_none is not None:
        parquet = shared_data_or_none / "patients" / "tcga_brca_rsem_counts.parquet"
        (folder / "e_tcga.parquet").write_bytes(parquet.read_bytes())
    (folder / "notes.txt").write_text("not a patient file")
    return folder


@pytest.fixture(scope="module")
def shared_data_or_none():
    from conftest import SHARED_DATA

    return SHARED_DATA if (SHARED_DATA / "README.md").is_file() else None


@pytest.fixture(scope="module")
def local_rankings(cohort, tiny_bundle, tmp_path_factory) -> dict[str, Path]:
    """The single-machine output folder of every file of the cohort."""
    root = tmp_path_factory.mktemp("local")
    outs = {}
    for path in sorted(cohort.iterdir()):
        if path.suffix == ".txt":
            continue
        out = root / path.name
        result = invoke(
            "score", path, "--bundle", tiny_bundle, "--normal-where", NORMAL_WHERE, "--out", out
        )
        assert result.exit_code == 0, result.output
        outs[str(path.resolve())] = out
    return outs


@pytest.fixture(scope="module")
def ray_cohort(cohort, tiny_bundle, tmp_path_factory) -> Path:
    """The cohort scored by `score --engine ray` on a local cluster the command starts."""
    if ray.is_initialized():  # left by `ray_cluster`: the command must start its own
        ray.shutdown()
    out = tmp_path_factory.mktemp("ray") / "out"
    result = score_on_ray(cohort, tiny_bundle, out, "--workers", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert not ray.is_initialized()  # the local cluster it started is gone
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray for the tests that do not need the command to start its own (the command
    uses a Ray already initialised in its process)."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        object_store_memory=300 * 1024**2,
    )
    yield
    ray.shutdown()


def rows_of(ranking: pd.DataFrame, index: int) -> pd.DataFrame:
    """The rows of input number `index`, without the input columns."""
    mine = ranking[ranking["input_index"] == index]
    return mine.drop(columns=["input_index", "input"]).reset_index(drop=True)


def test_rankings_equal_the_single_machine_ones(ray_cohort, local_rankings):
    ranking = pd.read_parquet(ray_cohort / "ranking.parquet")
    assert list(ranking.columns[:2]) == ["input_index", "input"]
    assert sorted(set(ranking["input_index"])) == list(range(len(local_rankings)))
    for index, (path, out) in enumerate(local_rankings.items()):
        local = pd.read_parquet(out / "ranking.parquet")
        assert set(ranking.loc[ranking["input_index"] == index, "input"]) == {Path(path).name}
        mine = rows_of(ranking, index)
        assert list(mine.columns) == list(local.columns)
        for profile, rows in local.groupby("profile", sort=False):
            pd.testing.assert_frame_equal(
                mine[mine["profile"] == profile].reset_index(drop=True),
                rows.reset_index(drop=True),
                check_exact=True,
            )
        pd.testing.assert_frame_equal(mine, local, check_exact=True)  # and in the same order


def test_dataset_layout_and_run_record(ray_cohort, local_rankings, cohort):
    parts = sorted(p.name for p in (ray_cohort / "ranking.parquet").iterdir())
    n_inputs = len(local_rankings)
    # the 18-profile table (input 3) is two blocks; every other file is one
    assert parts == sorted(
        [f"part-{i:05d}-00000.parquet" for i in range(n_inputs)] + ["part-00003-00001.parquet"]
    )
    assert sorted(p.name for p in ray_cohort.iterdir()) == ["ranking.parquet", "run.json"]
    run = json.loads((ray_cohort / "run.json").read_text())
    assert run["engine"]["name"] == "ray" and run["engine"]["workers"] == 2
    assert run["engine"]["block_size"] == 16 and run["engine"]["started_here"]
    assert run["seed"] == 0 and run["draws"] == 3
    assert run["providers"]["flexpert"] == "CPUExecutionProvider"
    assert run["signed_int8_graphs"] == []  # fp32 graphs
    assert run["skipped_files"] == [{"name": "notes.txt"}]
    assert [i["name"] for i in run["inputs"]] == [Path(p).name for p in local_rankings]
    assert str(cohort) not in (ray_cohort / "run.json").read_text()
    n_profiles = 0
    for index, (path, out) in enumerate(local_rankings.items()):
        entry = run["inputs"][index]
        local = json.loads((out / "run.json").read_text())
        assert entry["input_index"] == index and "path" not in entry
        assert entry["sha256"] == local["inputs"][0]["sha256"]
        assert entry["gene_coverage"] == local["gene_coverage"]
        assert entry["input_qc"] == local["input_qc"]
        tagged = [p for p in run["profiles"] if p["input_index"] == index]
        assert {p["input"] for p in tagged} == {Path(path).name}
        mine = [{k: v for k, v in p.items() if k not in ("input_index", "input")} for p in tagged]
        assert mine == local["profiles"]
        n_profiles += len(local["profiles"])
    assert len(run["profiles"]) == n_profiles >= 23
    assert run["ranking"]["rows"] == n_profiles * 50


def test_a_bad_file_stops_the_cohort_before_scoring(cohort, tiny_bundle, tmp_path, ray_cluster):
    folder = tmp_path / "patients"
    folder.mkdir()
    for name in ("a_first.h5ad", "b_second.h5ad"):
        (folder / name).write_bytes((cohort / name).read_bytes())
    adata = anndata.read_h5ad(cohort / "c_third.h5ad")
    adata[[n for n in adata.obs_names if "-01A" in n]].copy().write_h5ad(folder / "no_normal.h5ad")
    out = tmp_path / "out"
    result = score_on_ray(folder, tiny_bundle, out)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "1 of 3 input files cannot be scored" in text and "no_normal.h5ad" in text
    assert "Traceback" not in result.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["patients"]


def test_a_profile_refused_by_a_worker_is_a_clean_error(cohort, tiny_bundle, tmp_path, ray_cluster):
    """A UserError inside a worker (here the tokenizer's: nothing to draw a sentence from)
    reaches the user as its own message, and nothing is written."""
    folder = tmp_path / "patients"
    folder.mkdir()
    (folder / "a_first.h5ad").write_bytes((cohort / "a_first.h5ad").read_bytes())
    adata = anndata.read_h5ad(cohort / "c_third.h5ad")
    symbols, _ = resolve_gene_ids(list(adata.var_names))
    landmarks = set(load_bundle(tiny_bundle).vocabulary_genes)
    values = np.asarray(adata.X).copy()
    tumour = [i for i, n in enumerate(adata.obs_names) if "-01A" in n]
    values[np.ix_(tumour, [s in landmarks for s in symbols])] = 0
    adata.X = values
    adata.write_h5ad(folder / "z_empty.h5ad")
    out = tmp_path / "out"
    result = score_on_ray(folder, tiny_bundle, out)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "1 block(s) of profiles could not be scored" in text and "z_empty.h5ad" in text
    assert "no positive expression on the bundle's vocabulary genes" in text
    assert "Traceback" not in result.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["patients"]


def test_files_of_one_name_in_two_folders_stay_apart(
    cohort, local_rankings, tiny_bundle, tmp_path, ray_cluster
):
    """Two sites' `patient.h5ad`: joined by `input_index`, each gets its own file's ranking;
    no folder is written anywhere unless --record-paths."""
    sources = ["a_first.h5ad", "b_second.h5ad"]
    copies = []
    for site, source in zip(["site_a", "site_b"], sources, strict=True):
        (tmp_path / site).mkdir()
        copies.append(tmp_path / site / "patient.h5ad")
        copies[-1].write_bytes((cohort / source).read_bytes())
    for record_paths in (False, True):
        out = tmp_path / f"out_{record_paths}"
        extra = ["--record-paths"] if record_paths else []
        result = score_on_ray(copies[0], tiny_bundle, out, copies[1], *extra)
        assert result.exit_code == 0, result.output
        ranking = pd.read_parquet(out / "ranking.parquet")
        run = json.loads((out / "run.json").read_text())
        for index, (copy, source) in enumerate(zip(copies, sources, strict=True)):
            local = local_rankings[str((cohort / source).resolve())]
            pd.testing.assert_frame_equal(
                rows_of(ranking, index), pd.read_parquet(local / "ranking.parquet")
            )
            label = str(copy.resolve()) if record_paths else "patient.h5ad"
            assert set(ranking.loc[ranking["input_index"] == index, "input"]) == {label}
            entry = run["inputs"][index]
            assert entry["input_index"] == index and entry["name"] == "patient.h5ad"
            assert entry.get("path") == (str(copy.resolve()) if record_paths else None)
            local_run = json.loads((local / "run.json").read_text())
            assert entry["sha256"] == local_run["inputs"][0]["sha256"]
            tagged = [p for p in run["profiles"] if p["input_index"] == index]
            assert [p["profile"] for p in tagged] == [p["profile"] for p in local_run["profiles"]]
            assert {p["input"] for p in tagged} == {label}
        if not record_paths:
            assert str(tmp_path) not in (out / "run.json").read_text()
            assert not any(str(tmp_path) in value for value in ranking["input"])


@pytest.mark.parametrize(
    "args, message",
    [
        (("--engine", "spark"), "Unknown --engine"),
        (("--address", "10.0.0.5:6379"), "add --engine ray"),
        (("--engine", "ray", "--report"), "not available with --engine ray"),
        (("--engine", "ray", "--no-out"), "give --out DIR"),
    ],
)
def test_engine_options_are_clean_errors(cohort, tiny_bundle, tmp_path, args, message):
    out = ["--out", tmp_path / "out"]
    if "--no-out" in args:
        args, out = tuple(a for a in args if a != "--no-out"), []
    result = invoke("score", cohort / "a_first.h5ad", "--bundle", tiny_bundle, *out, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not list(tmp_path.iterdir())


def test_local_engine_scores_one_file(cohort, tiny_bundle, tmp_path):
    result = invoke("score", cohort, "--bundle", tiny_bundle, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "--engine ray" in result.output
    assert not (tmp_path / "out").exists()


def test_missing_ray_is_a_clean_error(cohort, tiny_bundle, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "out"
    result = score_on_ray(cohort, tiny_bundle, out)
    assert result.exit_code == 2, result.output
    assert "pip install '.[ray]'` in a unicure-rt clone" in " ".join(result.output.split())
    assert not out.exists()
