"""Reading patient files (`unicure_rt.patients`): synthetic files for each rule, then real data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from unicure_rt.errors import UserError
from unicure_rt.patients import read
from unicure_rt.patients.coverage import MIN_OUTPUT_GENE_FRACTION, check_coverage, gene_coverage
from unicure_rt.patients.genes import gene_table
from unicure_rt.patients.load import load_patient

GENES = ["A1BG", "ACTB", "CDH3", "GAPDH", "GNPDA1", "NOL3", "RXYLT1", "TP53"]


def real_data() -> Path:
    root = Path(
        os.environ.get("UNICURE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared/data")
    )
    if not root.is_dir():
        pytest.skip(f"../shared/data not found: {root} (set UNICURE_SHARED_DATA)")
    return root


def landmark_genes() -> list[str]:
    return pd.read_csv(real_data() / "genes" / "landmark_genes.tsv", sep="\t")["symbol"].tolist()


def write_h5ad(path: Path, X, obs: dict | None = None, genes=GENES, **fields) -> Path:
    n_obs = np.shape(X)[0]
    frame = pd.DataFrame(obs or {}, index=[f"cell{i}" for i in range(n_obs)])
    adata = anndata.AnnData(X=X, obs=frame, var=pd.DataFrame(index=list(genes)), **fields)
    adata.write_h5ad(path)
    return path


def counts(n_obs: int, n_genes: int = len(GENES), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(20, size=(n_obs, n_genes)).astype(np.float32)


def cells(n_obs: int, n_genes: int = len(GENES), seed: int = 0) -> np.ndarray:
    """Counts shaped like single cells: each observation detects about a third of the genes."""
    X = counts(n_obs, n_genes, seed)
    X[(np.arange(n_obs)[:, None] + np.arange(n_genes)) % 3 != 0] = 0
    return X


def log2cpm(summed: np.ndarray) -> np.ndarray:
    return np.log2(summed / summed.sum() * 1e6 + 1)


def floats_in(value) -> list:
    """Every float inside a QC structure (QC holds counts and text, never expression values)."""
    if isinstance(value, dict):
        return [f for item in value.values() for f in floats_in(item)]
    if isinstance(value, list | tuple):
        return [f for item in value for f in floats_in(item)]
    return [value] if isinstance(value, float) else []


def two_patients(tmp_path: Path, X=None) -> Path:
    """Patients P1 (cells 0-3, cell 3 normal) and P2 (cells 4-6, cell 6 normal)."""
    obs = {
        "donor_id": ["P1"] * 4 + ["P2"] * 3,
        "cell_type": ["tumour", "tumour", "tumour", "normal", "tumour", "tumour", "normal"],
    }
    X = cells(7) if X is None else X
    return write_h5ad(tmp_path / "patients.h5ad", sparse.csr_matrix(X), obs)


# --- conversion ----------------------------------------------------------------------------------


def test_counts_are_pseudobulked_per_sample_with_matched_normals(tmp_path):
    X = cells(7)
    path = two_patients(tmp_path, X)
    profiles = load_patient(path, normal_where="cell_type=normal", min_cells=1)
    assert profiles.genes == GENES
    assert list(profiles.tumour.index) == ["P1", "P2"]
    assert profiles.tumour.dtypes.eq(np.float64).all()
    np.testing.assert_allclose(profiles.tumour.loc["P1"], log2cpm(X[:3].sum(0)))
    np.testing.assert_allclose(profiles.tumour.loc["P2"], log2cpm(X[4:6].sum(0)))
    np.testing.assert_allclose(profiles.normal.loc["P1"], log2cpm(X[3]))
    np.testing.assert_allclose(profiles.normal.loc["P2"], log2cpm(X[6]))
    assert profiles.obs.to_dict("list") == {
        "sample": ["P1", "P2"],
        "group": [None, None],
        "n_cells": [3, 2],
        "normal_source": ["matched sample P1", "matched sample P2"],
    }
    qc = profiles.qc
    assert qc["input"]["value_kind"] == "counts"
    assert qc["input"]["source"] == "X"
    assert qc["profiles"]["sample_key"] == "donor_id"
    json.dumps(qc)
    assert floats_in(qc) == []


def test_cpm_library_counts_unresolved_genes(tmp_path):
    X = counts(2, len(GENES) + 1)
    path = write_h5ad(
        tmp_path / "p.h5ad", X, {"cell_type": ["t", "n"]}, genes=[*GENES, "NOT_A_GENE"]
    )
    profiles = load_patient(path, normal_where="cell_type=n", min_cells=1)
    expected = np.log2(X[0, :-1] / X[0].sum() * 1e6 + 1)
    np.testing.assert_allclose(profiles.tumour.iloc[0], expected)
    assert profiles.qc["input"]["gene_ids"]["unresolved_examples"] == ["NOT_A_GENE"]


def test_labels_of_the_same_gene_are_summed_and_reported(tmp_path):
    X = counts(2, 3)
    genes = ["GNPDA1", "ENSG00000113552.4", "CDH3"]
    path = write_h5ad(tmp_path / "p.h5ad", X, {"cell_type": ["t", "n"]}, genes=genes)
    profiles = load_patient(path, normal_where="cell_type=n", min_cells=1)
    assert profiles.genes == ["CDH3", "GNPDA1"]
    summed = np.array([X[0, 2], X[0, 0] + X[0, 1]])
    np.testing.assert_allclose(profiles.tumour.iloc[0], log2cpm(summed))
    duplicates = profiles.qc["input"]["duplicates_summed"]
    assert duplicates == {"n": 1, "examples": {"GNPDA1": ["GNPDA1", "ENSG00000113552.4"]}}


def test_single_cell_log_data_is_averaged_in_linear_space(tmp_path):
    X = np.log2(cells(7) / 10 + 1)
    path = two_patients(tmp_path, X)
    profiles = load_patient(path, normal_where="cell_type~norm", min_cells=1)
    assert profiles.qc["input"]["value_kind"] == "log"
    expected = np.log2((2.0 ** X[:3].astype(np.float64) - 1).mean(0) + 1)
    np.testing.assert_allclose(profiles.tumour.loc["P1"], expected)


def test_bulk_log_table_is_used_as_given(tmp_path):
    values = np.log2(counts(3, seed=1).T / 7 + 1).astype(np.float64)
    frame = pd.DataFrame(values, index=GENES, columns=["s1-T", "s2-T", "s3-N"])
    frame.to_csv(tmp_path / "bulk.csv")
    profiles = load_patient(tmp_path / "bulk.csv", normal_where="sample~-N")
    np.testing.assert_allclose(profiles.tumour.to_numpy(), values[:, :2].T)
    np.testing.assert_allclose(profiles.normal.to_numpy(), values[:, [2, 2]].T)
    assert profiles.obs["n_cells"].tolist() == [1, 1]
    assert profiles.obs["normal_source"].tolist() == ["mean of 1 normal sample"] * 2


def test_non_integer_large_values_are_linear(tmp_path):
    X = counts(2) * 10.37
    path = write_h5ad(tmp_path / "tpm.h5ad", X, {"cell_type": ["t", "n"]})
    profiles = load_patient(path, normal_where="cell_type=n", min_cells=1)
    assert profiles.qc["input"]["value_kind"] == "linear"
    np.testing.assert_allclose(profiles.tumour.iloc[0], log2cpm(X[0].astype(np.float64)))


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        (2.3, "up to .*: too large for log .* so its scale cannot be told"),
        (-1.0, "scaled or centred"),
    ],
)
def test_ambiguous_and_negative_values_are_refused(tmp_path, scale, message):
    X = counts(2) * scale  # Poisson(20) x 2.3 peaks between 30 and 100
    path = write_h5ad(tmp_path / "p.h5ad", X, {"cell_type": ["t", "n"]})
    with pytest.raises(UserError, match=message):
        load_patient(path, normal_where="cell_type=n", min_cells=1)


def test_scaled_x_refusal_names_the_other_matrices(tmp_path):
    X = counts(2)
    path = write_h5ad(
        tmp_path / "p.h5ad", X - X.mean(0), {"cell_type": ["t", "n"]}, layers={"counts": X}
    )
    with pytest.raises(
        UserError, match=r"also has counts: pass one with --layer \(e.g. --layer counts\)"
    ):
        load_patient(path, layer="X", normal_where="cell_type=n", min_cells=1)


def test_nan_values_are_refused_with_their_place(tmp_path):
    X = counts(3)
    X[1, 2] = np.nan
    X[2, 2] = np.inf
    path = write_h5ad(tmp_path / "p.h5ad", X, {"cell_type": ["t", "t", "n"]})
    with pytest.raises(
        UserError, match=r"2 NaN or infinite values, in 2 observations .*cell1.*CDH3"
    ):
        load_patient(path, normal_where="cell_type=n", min_cells=1)


def test_all_zero_matrix_and_all_zero_profile_are_refused(tmp_path):
    path = write_h5ad(tmp_path / "zero.h5ad", np.zeros((2, len(GENES))), {"cell_type": ["t", "n"]})
    with pytest.raises(UserError, match="only zeros"):
        load_patient(path, normal_where="cell_type=n", min_cells=1)
    X = counts(3)
    X[0] = 0
    path = write_h5ad(tmp_path / "p.h5ad", X, {"donor_id": ["A", "B", "B"], "c": ["t", "t", "n"]})
    with pytest.raises(UserError, match="profiles A have no expression"):
        load_patient(path, normal_where="c=n", min_cells=1)


# --- sources and gene labels ---------------------------------------------------------------------


def test_default_source_is_counts_layer_then_raw_then_x(tmp_path):
    X = counts(2)
    obs = {"cell_type": ["t", "n"]}
    logged = np.log1p(X)
    with_layer = write_h5ad(tmp_path / "a.h5ad", logged, obs, layers={"counts": X})
    assert load_patient(with_layer, normal_where="cell_type=n", min_cells=1).qc["input"][
        "source"
    ] == ("layers['counts']")
    frame = pd.DataFrame(obs, index=["a", "b"])
    adata = anndata.AnnData(X=logged - 1, obs=frame, var=pd.DataFrame(index=GENES))
    adata.raw = anndata.AnnData(X=logged, obs=adata.obs, var=adata.var)
    adata.write_h5ad(tmp_path / "b.h5ad")
    profiles = load_patient(tmp_path / "b.h5ad", normal_where="cell_type=n", min_cells=1)
    assert profiles.qc["input"]["source"] == "raw.X"
    assert profiles.qc["input"]["value_kind"] == "log"


def test_missing_layer_lists_the_available_matrices(tmp_path):
    path = write_h5ad(tmp_path / "p.h5ad", counts(2), {"cell_type": ["t", "n"]})
    with pytest.raises(UserError, match="no expression matrix 'counts'. Available: X"):
        load_patient(path, layer="counts", normal_where="cell_type=n")


def test_gene_key_reads_a_var_column(tmp_path):
    adata = anndata.AnnData(
        X=counts(2),
        obs=pd.DataFrame({"cell_type": ["t", "n"]}, index=["a", "b"]),
        var=pd.DataFrame({"ensembl": gene_table().set_index("symbol").loc[GENES, "ensembl_id"]})
        .reset_index(drop=True)
        .set_axis([f"g{i}" for i in range(len(GENES))]),
    )
    adata.write_h5ad(tmp_path / "p.h5ad")
    profiles = load_patient(
        tmp_path / "p.h5ad", gene_key="ensembl", normal_where="cell_type=n", min_cells=1
    )
    assert profiles.genes == GENES
    assert profiles.qc["input"]["gene_ids"]["id_type"] == "ensembl"
    with pytest.raises(UserError, match="--gene-key 'symbol' is not a column.*ensembl"):
        load_patient(tmp_path / "p.h5ad", gene_key="symbol", normal_where="cell_type=n")


def test_no_resolvable_gene_is_refused(tmp_path):
    path = write_h5ad(tmp_path / "p.h5ad", counts(2, 2), {"c": ["t", "n"]}, genes=["x1", "x2"])
    with pytest.raises(UserError, match="None of the 2 gene labels"):
        load_patient(path, normal_where="c=n")


def test_backed_reading_in_blocks_matches_in_memory(tmp_path, monkeypatch):
    path = two_patients(tmp_path)
    expected = load_patient(path, normal_where="cell_type=normal", min_cells=1)
    monkeypatch.setattr(read, "BACKED_BYTES", 0)
    monkeypatch.setattr(read, "BLOCK_VALUES", 2 * len(GENES))
    backed = load_patient(path, normal_where="cell_type=normal", min_cells=1)
    assert backed.qc["input"]["backed"] is True
    pd.testing.assert_frame_equal(backed.tumour, expected.tumour)
    pd.testing.assert_frame_equal(backed.normal, expected.normal)


# --- tables --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t.csv", "t.tsv", "t.csv.gz", "t.parquet"])
@pytest.mark.parametrize("genes_on_rows", [True, False])
def test_table_orientation_and_formats(tmp_path, name, genes_on_rows):
    values = counts(4).astype(np.float64)
    frame = pd.DataFrame(values, index=["A-01", "B-01", "C-11", "D-11"], columns=GENES)
    frame = frame.T if genes_on_rows else frame
    path = tmp_path / name
    if name.endswith("parquet"):
        frame.rename_axis("label").reset_index().to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if ".tsv" in name else ",")
    profiles = load_patient(path, normal_where="sample~-11")
    orientation = profiles.qc["input"]["orientation"]
    assert orientation.startswith("genes x samples" if genes_on_rows else "samples x genes")
    assert list(profiles.tumour.index) == ["A-01", "B-01"]
    np.testing.assert_allclose(profiles.tumour.loc["A-01"], log2cpm(values[0]))
    normals = np.vstack([log2cpm(values[2]), log2cpm(values[3])]).mean(0)
    np.testing.assert_allclose(profiles.normal.loc["B-01"], normals)
    assert profiles.obs["normal_source"].tolist() == ["mean of 2 normal samples"] * 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "could not be read as a CSV"),
        ("gene,s1\n", "empty table"),
        ("gene,s1,note\nGNPDA1,3,x\n", "non-numeric columns \\(note\\)"),
        ("gene,s1\nfoo,3\nbar,4\n", "no row or column label resolve"),
        ("id,GNPDA1,CDH3\ns1,3,4\ns1,5,6\n", "duplicated sample ids \\(s1\\)"),
    ],
)
def test_bad_tables_are_refused(tmp_path, content, message):
    (tmp_path / "t.csv").write_text(content)
    with pytest.raises(UserError, match=message):
        load_patient(tmp_path / "t.csv", normal_where="sample~x")


def test_table_refuses_h5ad_only_options(tmp_path):
    pd.DataFrame(counts(2), columns=GENES, index=["a", "b"]).to_csv(tmp_path / "t.csv")
    with pytest.raises(UserError, match="apply to AnnData files only"):
        load_patient(tmp_path / "t.csv", layer="counts", normal_where="sample=b")
    with pytest.raises(UserError, match="apply to AnnData files only"):
        load_patient(tmp_path / "t.csv", group_key="x", normal_where="sample=b")


# --- bad files -----------------------------------------------------------------------------------


def test_missing_unknown_and_corrupt_files_are_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_patient(tmp_path / "absent.h5ad", normal_where="a=b")
    (tmp_path / "p.xlsx").write_text("x")
    with pytest.raises(UserError, match="unknown file type"):
        load_patient(tmp_path / "p.xlsx", normal_where="a=b")
    (tmp_path / "p.parquet").write_bytes(b"not a parquet file")
    with pytest.raises(UserError, match="could not be read as a PARQUET table"):
        load_patient(tmp_path / "p.parquet", normal_where="a=b")
    whole = two_patients(tmp_path).read_bytes()
    (tmp_path / "cut.h5ad").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match="could not be read as an AnnData file"):
        load_patient(tmp_path / "cut.h5ad", normal_where="cell_type=normal")


def test_empty_h5ad_is_refused(tmp_path):
    path = write_h5ad(tmp_path / "p.h5ad", np.zeros((0, len(GENES))))
    with pytest.raises(UserError, match="empty matrix"):
        load_patient(path, normal_where="a=b")


# --- samples and groups --------------------------------------------------------------------------


def test_sample_key_defaults_and_file_stem(tmp_path):
    X = counts(3)
    obs = {"patient": ["A", "A", "B"], "sample": ["s1", "s2", "s3"], "c": ["t", "n", "t"]}
    path = write_h5ad(tmp_path / "p.h5ad", X, obs)
    profiles = load_patient(path, normal_where="c=n", min_cells=1)
    assert profiles.qc["profiles"]["sample_key"] == "patient"
    assert profiles.obs["normal_source"].tolist() == ["matched sample A", "mean of 1 normal sample"]
    path = write_h5ad(tmp_path / "tumour_42.h5ad", cells(3), {"c": ["t", "n", "t"]})
    profiles = load_patient(path, normal_where="c=n", min_cells=1)
    assert list(profiles.tumour.index) == ["tumour_42"]
    assert profiles.obs["normal_source"].tolist() == ["matched sample tumour_42"]


def test_sample_key_from_observation_names(tmp_path):
    adata = anndata.AnnData(
        X=counts(5),
        obs=pd.DataFrame(
            {"c": ["t", "n", "t", "t", "t"]}, index=["P1_a", "P1_b", "P2_a", "P2_b", "P2_c"]
        ),
        var=pd.DataFrame(index=GENES),
    )
    adata.write_h5ad(tmp_path / "p.h5ad")
    profiles = load_patient(
        tmp_path / "p.h5ad", sample_key=r"obs_names:^([^_]+)_", normal_where="c=n", min_cells=1
    )
    assert profiles.obs[["sample", "n_cells"]].to_dict("list") == {
        "sample": ["P1", "P2"],
        "n_cells": [1, 3],
    }
    one_each = load_patient(tmp_path / "p.h5ad", sample_key="obs_names", normal_where="c=n")
    assert one_each.qc["profiles"]["bulk"] is True
    assert list(one_each.tumour.index) == ["P1_a", "P2_a", "P2_b", "P2_c"]
    with pytest.raises(UserError, match="does not match 3 observation names"):
        load_patient(tmp_path / "p.h5ad", sample_key="obs_names:^P1", normal_where="c=n")
    with pytest.raises(UserError, match="not a valid regular expression"):
        load_patient(tmp_path / "p.h5ad", sample_key="obs_names:([", normal_where="c=n")


def test_unknown_or_incomplete_keys_are_refused(tmp_path):
    path = write_h5ad(tmp_path / "p.h5ad", counts(2), {"c": ["t", "n"], "d": ["x", None]})
    with pytest.raises(
        UserError, match="--sample-key 'donor' is not an obs column.*Available.*c, d"
    ):
        load_patient(path, sample_key="donor", normal_where="c=n")
    with pytest.raises(UserError, match="--group-key 'g' is not an obs column"):
        load_patient(path, group_key="g", normal_where="c=n")
    with pytest.raises(UserError, match="1 observations .* no value in obs\\['d'\\]"):
        load_patient(path, sample_key="d", normal_where="c=n")


def test_groups_split_samples_and_small_groups_are_dropped(tmp_path):
    obs = {
        "donor_id": ["P1"] * 7,
        "state": ["a", "a", "a", "b", "n", "n", "n"],
    }
    X = cells(7)
    path = write_h5ad(tmp_path / "p.h5ad", X, obs)
    profiles = load_patient(path, group_key="state", normal_where="state=n", min_cells=2)
    assert list(profiles.tumour.index) == ["P1/a"]
    assert profiles.obs.loc["P1/a", "group"] == "a"
    assert profiles.qc["profiles"]["dropped_min_cells"] == [{"profile": "P1/b", "n_cells": 1}]
    np.testing.assert_allclose(profiles.normal.loc["P1/a"], log2cpm(X[4:].sum(0)))
    with pytest.raises(UserError, match="Every tumour profile .* fewer than --min-cells 5"):
        load_patient(path, group_key="state", normal_where="state=n", min_cells=5)


def test_min_cells_must_be_a_positive_whole_number(tmp_path):
    path = two_patients(tmp_path)
    with pytest.raises(UserError, match="--min-cells"):
        load_patient(path, normal_where="cell_type=normal", min_cells=0)


# --- normal reference ----------------------------------------------------------------------------


def test_a_normal_reference_is_required_and_unique(tmp_path):
    path = two_patients(tmp_path)
    with pytest.raises(UserError, match="--normal PATH .*--normal-where"):
        load_patient(path)
    with pytest.raises(UserError, match="not both"):
        load_patient(path, normal=path, normal_where="cell_type=normal")


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("cell_type", "not of the form COL=VALUE"),
        ("=normal", "not of the form COL=VALUE"),
        ("tissue=normal", "'tissue' is not an obs column"),
        ("cell_type=Normal", "selects no observation.*normal, tumour"),
        ("cell_type~o", "selects every observation"),
    ],
)
def test_bad_normal_where_is_refused(tmp_path, where, message):
    with pytest.raises(UserError, match=message):
        load_patient(two_patients(tmp_path), normal_where=where, min_cells=1)


def test_normal_file_matched_by_sample_else_mean(tmp_path):
    X = counts(5)
    tumour = write_h5ad(tmp_path / "t.h5ad", X[:3], {"donor_id": ["P1", "P2", "P3"]})
    normal = write_h5ad(
        tmp_path / "n.h5ad", X[3:, :-1], {"donor_id": ["P1", "P9"]}, genes=GENES[:-1]
    )
    profiles = load_patient(tumour, normal=normal)
    assert profiles.genes == GENES[:-1]
    assert profiles.obs["normal_source"].tolist() == [
        "matched sample P1",
        "mean of 2 normal samples",
        "mean of 2 normal samples",
    ]
    np.testing.assert_allclose(profiles.normal.loc["P1"], log2cpm(X[3, :-1]))
    np.testing.assert_allclose(profiles.tumour.loc["P1"], log2cpm(X[0])[:-1])
    assert profiles.qc["normal"]["normal_file"]["value_kind"] == "counts"
    logged = write_h5ad(tmp_path / "log.h5ad", np.log1p(X[3:] / 3), {"donor_id": ["P1", "P9"]})
    with pytest.raises(UserError, match="counts values and the normal file .* log values"):
        load_patient(tumour, normal=logged)


# --- gene coverage -------------------------------------------------------------------------------


def test_gene_coverage_counts_and_threshold():
    output = [f"G{i}" for i in range(10)]
    coverage = gene_coverage(output[:5] + ["X"], output + ["X", "Y"], output)
    assert coverage["output_genes_present"] == 5
    assert coverage["output_fraction"] == 0.5
    assert coverage["vocabulary_genes_present"] == 6
    assert coverage["output_genes_missing_examples"] == output[5:]
    json.dumps(coverage)
    check_coverage(coverage)
    assert MIN_OUTPUT_GENE_FRACTION == 0.5
    with pytest.raises(UserError, match="covers only 4 of 10 landmark genes"):
        check_coverage(gene_coverage(output[:4], output, output))
    with pytest.raises(UserError, match="in the model's gene vocabulary"):
        check_coverage(gene_coverage(output, ["other"], output))


# --- real data -----------------------------------------------------------------------------------


def test_tcga_brca_rsem_counts_with_solid_tissue_normals():
    path = real_data() / "patients" / "tcga_brca_rsem_counts.parquet"
    profiles = load_patient(path, normal_where="sample~-11A")
    assert len(profiles.tumour) == 5
    assert all("-01A-" in sample for sample in profiles.tumour.index)
    assert profiles.obs["normal_source"].tolist() == ["mean of 5 normal samples"] * 5
    qc = profiles.qc
    assert qc["input"]["orientation"].startswith("genes x samples")
    assert qc["input"]["value_kind"] == "linear"
    assert qc["input"]["gene_ids"]["id_type"] == "symbol|entrez"
    assert qc["normal"]["n_normal_samples"] == 5
    raw = pd.read_parquet(path)
    normals = [column for column in raw.columns if "-11A-" in column]
    expected = np.mean([log2cpm(raw[c].to_numpy())[raw.index == "TMEM5|10329"] for c in normals])
    assert profiles.normal["RXYLT1"].to_numpy() == pytest.approx([expected] * 5)
    coverage = gene_coverage(profiles.genes, gene_table()["symbol"], landmark_genes())
    assert coverage["output_genes_present"] == 978
    check_coverage(coverage)
    json.dumps(qc)


def test_oligodendroglioma_patients_from_cell_ids():
    path = real_data() / "singlecell" / "oligodendroglioma.h5ad"
    options = {"sample_key": r"obs_names:^([^_]+)_", "normal_where": "cell_type~Oligodendrocytes"}
    profiles = load_patient(path, **options)
    assert list(profiles.tumour.index) == ["93", "97", "MGH36", "MGH53"]
    assert profiles.obs.loc["MGH53", "normal_source"] == "matched sample MGH53"
    assert profiles.obs.loc["93", "normal_source"] == "mean of 1 normal sample"
    qc = profiles.qc
    assert qc["input"]["value_kind"] == "linear"  # X is TPM-like, not log: values reach 34,215
    assert qc["profiles"]["dropped_min_cells"] == [{"profile": "MGH54", "n_cells": 5}]
    assert qc["normal"]["dropped_min_cells"] == [{"profile": "MGH54", "n_cells": 6}]
    coverage = gene_coverage(profiles.genes, gene_table()["symbol"], landmark_genes())
    assert coverage["output_genes_present"] == 735  # 17 of them by older symbols (aliases)
    check_coverage(coverage)
    grouped = load_patient(path, group_key="cell_type", **options)
    assert "MGH53/malignant_MGH53" in grouped.tumour.index
    with pytest.raises(UserError, match="Oligodendrocytes \\(non-malignant\\)"):
        load_patient(path, normal_where="cell_type=Oligodendrocytes")


def test_pbmc_is_refused_for_coverage_and_its_scaled_x():
    path = real_data() / "singlecell" / "pbmc68k_reduced.h5ad"
    profiles = load_patient(path, normal_where="bulk_labels=CD14+ Monocyte")
    assert profiles.qc["input"]["source"] == "raw.X"
    assert profiles.qc["input"]["value_kind"] == "log"
    coverage = gene_coverage(profiles.genes, gene_table()["symbol"], landmark_genes())
    with pytest.raises(UserError, match="71 of 978 landmark genes"):
        check_coverage(coverage)
    with pytest.raises(UserError, match="scaled or centred.*--layer raw.X"):
        load_patient(path, layer="X", normal_where="bulk_labels=CD14+ Monocyte")
