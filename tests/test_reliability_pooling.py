"""Bulk samples sharing an id are never pooled silently (#19 item 14).

Whether a side of an h5ad holds bulk samples or single cells is read from the data (landmark
genes detected per observation), not from whether ids repeat: two, three or five bulk samples
under one id are refused whatever --min-cells is, unless --sample-key names the key (deliberate
pooling, recorded); single cells still pool per patient.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from unicure_rt.cli.app import app
from unicure_rt.errors import UserError
from unicure_rt.patients.load import load_patient, load_profiles
from unicure_rt.patients.profiles import BULK_MIN_DETECTED

REPO = Path(__file__).resolve().parents[1]
TCGA = REPO / "examples" / "tcga_brca.h5ad"
OLIGODENDROGLIOMA = REPO / "examples" / "oligodendroglioma.h5ad"
runner = CliRunner()


def tcga_with_replicates(folder: Path, n: int, column: str | None = "patient") -> Path:
    """The TCGA example with its first `n` tumours under patient id P1, every other sample on
    its own id (column None: no sample column at all)."""
    adata = anndata.read_h5ad(TCGA)
    tumours = list(adata.obs_names[adata.obs["condition"] == "tumour"])
    ids = {name: "P1" if name in tumours[:n] else name for name in adata.obs_names}
    adata.obs = adata.obs.drop(columns="sample")
    if column is not None:
        adata.obs[column] = [ids[name] for name in adata.obs_names]
    path = folder / f"replicates_{n}.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("min_cells", [1, 3, 10])
def test_bulk_replicates_under_one_id_are_refused(tmp_path, n, min_cells):
    path = tcga_with_replicates(tmp_path, n)
    for normal in ({"normal_where": "condition=normal"}, {"normal": "tissue:breast"}):
        with pytest.raises(UserError, match=rf"bulk samples.*P1 x{n}.*never pools bulk"):
            load_patient(path, min_cells=min_cells, **normal)
    with pytest.raises(UserError, match=rf"P1 x{n}.*--sample-key \(patient\)"):
        load_profiles(path, min_cells=min_cells)


def test_a_named_sample_key_pools_bulk_replicates_deliberately_and_says_so(tmp_path):
    path = tcga_with_replicates(tmp_path, 3)
    pooled = load_patient(path, sample_key="patient", normal_where="condition=normal")
    assert pooled.obs.loc["P1", "n_cells"] == 3  # kept although below --min-cells 10
    layout = pooled.qc["profiles"]
    assert layout["bulk"] is True and layout["bulk_pooled_by_request"] is True
    assert layout["landmark_detection_percent"] >= 99
    adata = anndata.read_h5ad(path)
    rows = (adata.obs["patient"] == "P1").to_numpy()
    summed = anndata.concat([adata[~rows], adata[rows][:1]])  # P1 once, its counts summed
    summed.X[-1] = np.asarray(adata.X[rows].sum(axis=0)).ravel()
    summed.write_h5ad(tmp_path / "summed.h5ad")
    reference = load_patient(tmp_path / "summed.h5ad", normal_where="condition=normal")
    pd.testing.assert_frame_equal(pooled.tumour, reference.tumour)
    assert reference.qc["profiles"]["bulk_pooled_by_request"] is False


def test_a_bulk_file_without_sample_ids_is_not_one_sample(tmp_path):
    path = tcga_with_replicates(tmp_path, 5, column=None)
    with pytest.raises(UserError, match=r"no donor_id, patient, sample column.*--sample-key"):
        load_patient(path, normal_where="condition=normal", min_cells=1)
    each = load_patient(path, sample_key="obs_names", normal_where="condition=normal")
    assert len(each.tumour) == 5 and each.obs["n_cells"].tolist() == [1] * 5


def test_log_pseudocount_bulk_replicates_are_bulk(tmp_path, shared_data):
    """Bulk on the log2(FPKM + 0.1) scale (zeros at a negative floor) is bulk too."""
    table = pd.read_parquet(shared_data / "cohorts" / "scanb_breast_400_log2fpkm.parquet")
    values = table.select_dtypes("number").iloc[:40]  # enough rows to share the floor
    obs = pd.DataFrame(
        {"patient": ["A"] * 3 + [f"P{i}" for i in range(37)], "condition": "tumour"},
        index=[str(i) for i in values.index],
    )
    obs.iloc[-1, 1] = "normal"
    adata = anndata.AnnData(values.to_numpy(np.float64), obs, pd.DataFrame(index=values.columns))
    adata.write_h5ad(tmp_path / "scanb.h5ad")
    with pytest.raises(UserError, match=r"bulk samples.*A x3"):
        load_patient(tmp_path / "scanb.h5ad", normal_where="condition=normal", min_cells=1)


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("layout", ["genes_on_rows.csv", "samples_on_rows.tsv", "rows.parquet"])
def test_table_replicates_under_one_id_are_refused(tmp_path, n, layout):
    adata = anndata.read_h5ad(TCGA)
    frame = pd.DataFrame(adata.X, index=adata.obs_names, columns=adata.var_names)
    frame.index = ["S1"] * n + list(frame.index[n:])
    path = tmp_path / layout
    if layout.endswith(".csv"):
        frame.T.to_csv(path)
    elif layout.endswith(".tsv"):
        frame.to_csv(path, sep="\t")
    else:
        frame.to_parquet(path)
    with pytest.raises(UserError, match=r"duplicated sample ids \(S1\)"):
        load_patient(path, normal_where="sample~-11A", min_cells=1)


def test_single_cells_still_pool_per_patient():
    options = {"normal_where": "condition=normal", "min_cells": 7}
    default = load_patient(OLIGODENDROGLIOMA, **options)
    named = load_patient(OLIGODENDROGLIOMA, sample_key="patient", **options)
    pd.testing.assert_frame_equal(default.tumour, named.tumour)
    pd.testing.assert_frame_equal(default.normal, named.normal)
    layout = default.qc["profiles"]
    assert layout["bulk"] is False and layout["bulk_pooled_by_request"] is False
    assert layout["landmark_detection_percent"] < 100 * BULK_MIN_DETECTED
    assert default.obs["n_cells"].to_dict() == {"93": 40, "97": 35, "MGH36": 33, "MGH53": 34}
    assert default.qc["normal"]["dropped_min_cells"] == [{"profile": "MGH54", "n_cells": 6}]
    assert default.qc["normal"]["bulk"] is False


def test_score_refuses_bulk_replicates_with_exit_2(tiny_bundle, tmp_path):
    path = tcga_with_replicates(tmp_path, 3)
    out = tmp_path / "out"
    args = ("score", path, "--bundle", tiny_bundle, "--normal-where", "condition=normal")
    result = runner.invoke(app, [str(a) for a in (*args, "--min-cells", "1", "--out", out)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "P1 x3" in text and "--sample-key" in text and "Traceback" not in result.output
    assert not out.exists()
    deliberate = (*args, "--sample-key", "patient", "--out", out, "--draws", "1", "--doses", "1")
    result = runner.invoke(app, [str(a) for a in (*deliberate, "--top", "2")])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["input_qc"]["profiles"]["bulk_pooled_by_request"] is True
    assert {p["profile"]: p["n_cells"] for p in run["profiles"]}["P1"] == 3
