"""Shipped normal references, `--normal tissue:NAME` / `auto`, and inputs as clinics write them
(log2 with a pseudo-count, matched pairs in one bulk file, current gene symbols), on real data."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from unicure_rt.cli.app import app
from unicure_rt.errors import UserError
from unicure_rt.patients import normals
from unicure_rt.patients.coverage import check_coverage, gene_coverage
from unicure_rt.patients.genes import gene_table, resolve_gene_ids
from unicure_rt.patients.load import load_patient

REPO = Path(__file__).resolve().parents[1]
TCGA = REPO / "examples" / "tcga_brca.h5ad"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tcga_condition() -> pd.Series:
    return anndata.read_h5ad(TCGA).obs["condition"]


# --- the shipped table ---------------------------------------------------------------------------


def test_shipped_table_is_what_the_script_builds(shared_data, tmp_path):
    build = script("build_normal_reference")
    hpa = pd.read_parquet(shared_data / "normal" / "hpa_tissue_consensus.parquet")
    gtex = pd.read_parquet(shared_data / "normal" / "gtex_tissue_median_tpm.parquet")
    landmarks = (REPO / "unicure_rt" / "data" / "landmark_genes.txt").read_text().split()
    table, metadata = build.build_table(hpa, gtex, landmarks)
    build.write_table(table, metadata, tmp_path / "t.parquet")
    assert (tmp_path / "t.parquet").read_bytes() == normals.NORMAL_TABLE.read_bytes()
    refs = normals.load_references()
    assert refs.values.shape == (978, 90)
    np.testing.assert_array_equal(refs.values["hpa:breast"], hpa.loc["breast"].to_numpy())
    assert refs.references["gtex:bladder"]["label"] == "Bladder"
    assert refs.references["hpa:cerebral_cortex"]["organ"] == "brain"
    assert refs.references["hpa:total_pbmc"]["kind"] == "blood cell type"
    assert "CC BY-SA 3.0" in refs.sources["hpa"]["license"]
    assert all(refs.sources[s]["release"] and refs.sources[s]["license"] for s in refs.sources)
    data = normals.NORMAL_TABLE.parent
    assert "Human Protein Atlas" in (data / "normal_tissues_LICENSE.md").read_text()
    assert "Attribution-ShareAlike 3.0" in (data / "normal_tissues_CC-BY-SA-3.0.txt").read_text()


def test_info_shows_the_references_and_their_licenses():
    result = invoke("info", "--json")
    assert result.exit_code == 0, result.output
    shipped = json.loads(result.stdout)["normal_references"]
    assert shipped["sources"]["hpa"]["n_references"] == 61
    assert shipped["sources"]["gtex"]["n_references"] == 29
    assert "CC BY-SA 3.0" in shipped["sources"]["hpa"]["license"]
    text = " ".join(invoke("info").output.split())
    assert "Normal references" in text and "CC BY-SA 3.0" in text


# --- names and the platform adjustment -----------------------------------------------------------


def test_tissue_names_ignore_case_and_separators():
    assert normals.resolve_tissue("tissue:breast") == "hpa:breast"
    assert normals.resolve_tissue("tissue:Urinary Bladder") == "hpa:urinary_bladder"
    assert normals.resolve_tissue("tissue:urinary-bladder") == "hpa:urinary_bladder"
    assert normals.resolve_tissue("tissue:GTEx:Adipose.Tissue") == "gtex:adipose_tissue"
    assert normals.resolve_tissue("tissue:total_PBMC") == "hpa:total_pbmc"
    with pytest.raises(UserError, match="no HPA reference named 'brest'. Did you mean breast?"):
        normals.resolve_tissue("tissue:brest")
    with pytest.raises(UserError, match="organ made of several references: .*cerebral_cortex"):
        normals.resolve_tissue("tissue:brain")
    with pytest.raises(UserError, match="unknown source 'encode'"):
        normals.resolve_tissue("tissue:encode:breast")
    assert normals.normal_file("tissue:breast") is None and normals.normal_file("auto") is None
    assert normals.normal_file("normals.h5ad") == Path("normals.h5ad")


def test_quantile_map_puts_the_reference_on_the_tumour_scale():
    reference = np.array([5.0, 1.0, 3.0, 3.0, 9.0])
    tumour = np.array([10.0, 0.0, 2.0, 4.0, 6.0])
    mapped = normals.quantile_map(reference, tumour)
    np.testing.assert_allclose(mapped, [6.0, 0.0, 3.0, 3.0, 10.0])  # tied genes share the mean


def test_tissue_breast_keeps_every_tumour_gene_and_maps_each_profile():
    patient = load_patient(TCGA, normal="Tissue:Breast")
    assert len(patient.genes) > 18000 and patient.tumour.shape[1] == len(patient.genes)
    assert patient.normal.shape == (10, 978)
    breast = normals.load_references().values["hpa:breast"][patient.normal.columns]
    unique = ~breast.duplicated(keep=False).to_numpy()  # tied genes share an interpolated value
    for profile in patient.tumour.index:  # the tumour's own values, in breast's order
        tumour = patient.tumour.loc[profile, patient.normal.columns].to_numpy()
        normal = patient.normal.loc[profile].to_numpy()
        assert np.isin(normal[unique], tumour).all()
        assert spearmanr(normal, breast).statistic == pytest.approx(1.0)
        assert normal.min() == tumour.min() and normal.max() == tumour.max()
    assert set(patient.obs["normal_source"]) == {"hpa:breast (shipped, quantile-mapped)"}
    qc = patient.qc["normal"]
    assert qc["table"]["sha256"] == normals.load_references().sha256
    assert set(qc["sources"]) == {"hpa"} and qc["n_signature_genes"] == 978
    gtex = load_patient(TCGA, normal="tissue:gtex:breast")
    assert "XBP1" not in gtex.normal.columns and gtex.normal.shape[1] == 977  # NaN in GTEx


# --- auto ----------------------------------------------------------------------------------------


def test_auto_picks_breast_for_tcga_normals_and_reports_the_runner_up():
    patient = load_patient(TCGA, normal="auto")
    condition = tcga_condition()
    choices = patient.qc["normal"]["choices"]
    normal_picks = [choices[p]["reference"] for p in choices if condition[p] == "normal"]
    # measured: 4 of 5 breast; the fifth (TCGA-A7-A13G-11A) is fatty and matches adipose tissue
    assert sorted(normal_picks) == ["hpa:adipose_tissue"] + ["hpa:breast"] * 4
    for choice in choices.values():
        assert choice["margin"] == pytest.approx(choice["spearman"] - choice["runner_up_spearman"])
        assert choice["margin"] >= 0 and choice["n_genes"] == normals.AUTO_GENES
    first = patient.obs.index[0]
    assert patient.obs.loc[first, "normal_source"].startswith("auto: hpa:breast (Spearman")
    assert "runner-up" in patient.obs.loc[first, "normal_source"]


def test_auto_picks_brain_for_non_malignant_oligodendrocytes(shared_data):
    patient = load_patient(
        shared_data / "singlecell" / "oligodendroglioma.h5ad",
        normal="auto",
        sample_key=r"obs_names:^([^_]+)_",
        group_key="cell_type",
        min_cells=5,
    )
    choices = patient.qc["normal"]["choices"]
    oligodendrocytes = [p for p in choices if "Oligodendrocytes" in p]
    assert len(oligodendrocytes) == 2
    assert {choices[p]["organ"] for p in oligodendrocytes} == {"brain"}
    malignant = [p for p in choices if "malignant_" in p and "non-malignant" not in p]
    assert {choices[p]["organ"] for p in malignant} == {"brain"}


def test_auto_on_scanb_mostly_picks_breast(shared_data):
    patient = load_patient(
        shared_data / "cohorts" / "scanb_breast_400_log2fpkm.parquet", normal="auto"
    )
    picks = pd.Series([c["reference"] for c in patient.qc["normal"]["choices"].values()])
    assert len(picks) == 400
    assert (picks == "hpa:breast").mean() > 0.5


# --- inputs as clinics write them ----------------------------------------------------------------


def test_log2_with_a_pseudocount_is_accepted_and_reported(shared_data):
    path = shared_data / "cohorts" / "scanb_breast_400_log2fpkm.parquet"
    patient = load_patient(path, normal="tissue:breast")
    qc = patient.qc["input"]
    assert qc["value_kind"] == "log_pseudocount"
    detected = qc["log_pseudocount"]
    assert detected["floor"] == pytest.approx(-3.3) and detected["n_at_floor"] == 10
    assert detected["pseudocount"] == pytest.approx(0.1, rel=0.02)
    raw = pd.read_parquet(path).astype(np.float64)
    expected = np.log2(2.0 ** raw.loc["F1008", "ABCC5"] - 2.0**-3.3 + 1)
    assert patient.tumour.loc["F1008", "ABCC5"] == pytest.approx(expected)
    assert (patient.tumour.to_numpy() >= 0).all()


def test_a_few_log2_pseudocount_samples_without_a_zero_are_accepted(shared_data, tmp_path):
    """SCAN-B's first 10 tumours hold no FPKM of 0: the minimum is held once, not shared."""
    raw = pd.read_parquet(shared_data / "cohorts" / "scanb_breast_400_log2fpkm.parquet")
    first = raw.iloc[:10]
    assert (first.to_numpy() == first.to_numpy().min()).sum() == 1
    first.to_parquet(tmp_path / "ten.parquet")
    patient = load_patient(tmp_path / "ten.parquet", normal="tissue:breast")
    detected = patient.qc["input"]["log_pseudocount"]
    assert patient.qc["input"]["value_kind"] == "log_pseudocount"
    assert detected["n_at_floor"] == 1 and "no value is 0" in detected["detected"]
    assert (patient.tumour.to_numpy() >= 0).all()


def test_a_stray_negative_value_is_still_refused(shared_data, tmp_path):
    raw = pd.read_parquet(shared_data / "cohorts" / "scanb_breast_400_log2fpkm.parquet")
    positive = raw.iloc[:10].clip(lower=0.5)
    positive.iloc[3, 7] = -1.0
    positive.to_parquet(tmp_path / "stray.parquet")
    with pytest.raises(UserError, match="1 negative values are too few"):
        load_patient(tmp_path / "stray.parquet", normal="tissue:breast")


def test_z_scores_are_still_refused(shared_data, tmp_path):
    raw = pd.read_parquet(shared_data / "cohorts" / "scanb_breast_400_log2fpkm.parquet")
    z = (raw - raw.mean()) / raw.std()
    z.to_parquet(tmp_path / "z.parquet")
    with pytest.raises(UserError, match="of its values are negative .* scaled or centred"):
        load_patient(tmp_path / "z.parquet", normal="tissue:breast")


def paired_file(tmp_path: Path) -> tuple[Path, anndata.AnnData]:
    """The TCGA example as five patients P1..P5, each with one tumour and one normal sample."""
    adata = anndata.read_h5ad(TCGA)
    condition = adata.obs["condition"]
    tumours = sorted(condition.index[condition == "tumour"])
    normal_ids = sorted(condition.index[condition == "normal"])
    patient = {t: f"P{i + 1}" for i, t in enumerate(tumours)}
    patient.update({n: f"P{i + 1}" for i, n in enumerate(normal_ids)})
    adata.obs["sample"] = [patient[name] for name in adata.obs_names]
    adata.write_h5ad(tmp_path / "pairs.h5ad")
    return tmp_path / "pairs.h5ad", adata


def test_matched_pairs_in_one_bulk_file_give_each_patient_its_own_normal(tmp_path):
    path, adata = paired_file(tmp_path)
    patient = load_patient(path, normal_where="condition=normal")  # default --min-cells 10
    assert list(patient.tumour.index) == ["P1", "P2", "P3", "P4", "P5"]
    assert patient.obs["n_cells"].tolist() == [1] * 5
    assert patient.obs["normal_source"].tolist() == [f"matched sample P{i}" for i in range(1, 6)]
    assert patient.qc["profiles"]["bulk"] is True and patient.qc["normal"]["bulk"] is True
    one = load_patient(TCGA, normal_where="condition=normal")  # every observation on its own
    for sample in patient.tumour.index:
        rows = adata.obs_names[(adata.obs["sample"] == sample).to_numpy()]
        tumour = next(r for r in rows if adata.obs.loc[r, "condition"] == "tumour")
        normal = next(r for r in rows if adata.obs.loc[r, "condition"] == "normal")
        np.testing.assert_array_equal(patient.tumour.loc[sample], one.tumour.loc[tumour])
        own = load_patient(TCGA, normal="tissue:breast").tumour.loc[normal, patient.genes]
        np.testing.assert_allclose(patient.normal.loc[sample], own)


def test_two_bulk_observations_of_one_patient_are_never_pooled(tmp_path):
    path, _ = paired_file(tmp_path)
    for options in ({"normal": "tissue:breast", "min_cells": 1}, {"normal": "auto"}):
        with pytest.raises(UserError, match="never pools bulk samples"):
            load_patient(path, **options)


def test_current_symbols_resolve_by_alias_and_ambiguous_aliases_are_reported():
    symbols, report = resolve_gene_ids(["AARS1", "GFUS", "BLTP2", "SKIC2", "TP53", "A1B"])
    assert symbols == ["AARS", "TSTA3", "KIAA0100", "SKIV2L", "TP53", None]
    assert report["matched_by"] == {"symbol": 1, "alias": 4, "ensembl": 0, "entrez": 0}
    assert report["alias_examples"]["AARS1"] == "AARS"
    assert report["ambiguous_aliases"] == {"n": 1, "examples": {"A1B": ["A1BG", "SNTB1"]}}
    _, ids = resolve_gene_ids(["ENSG00000141510", "TP53|7157"])
    assert ids["matched_by"] == {"symbol": 0, "alias": 0, "ensembl": 1, "entrez": 1}


def test_shipped_gene_table_is_what_the_script_builds(shared_data):
    build = script("build_gene_table")
    genes = shared_data / "genes"
    dtypes = {"chromosome": str, "entrez_id": int, "start": int}
    table = build.build_table(
        pd.read_csv(genes / "gene_locations_hg38.tsv.gz", sep="\t", dtype=dtypes),
        pd.read_csv(genes / "landmark_genes.tsv", sep="\t", dtype=dtypes),
        pd.read_csv(genes / "gene_aliases_ncbi_2022.tsv.gz", sep="\t", dtype={"aliases": str}),
    )
    shipped = gene_table()
    pd.testing.assert_frame_equal(table.fillna({"aliases": ""}), shipped, check_dtype=False)
    current = {"AARS": "AARS1", "TSTA3": "GFUS", "FAM57A": "TLCD3A", "KIAA0100": "BLTP2"}
    aliases = shipped.set_index("symbol")["aliases"]
    assert all(new in aliases[old].split("|") for old, new in current.items())


def test_vocabulary_coverage_is_checked():
    vocabulary = [f"V{i}" for i in range(1000)]
    output = vocabulary[:20]
    check_coverage(gene_coverage(output + vocabulary[20:30], vocabulary, output))  # 3.0%
    coverage = gene_coverage(output[:14], vocabulary, output)  # 1.4% of the vocabulary
    assert coverage["output_genes_missing"] == output[14:]
    with pytest.raises(UserError, match="only 14 of the 1000 genes of the model's vocabulary"):
        check_coverage(coverage)


# --- the command line ----------------------------------------------------------------------------


def test_score_with_auto_writes_the_choice_in_run_json_and_the_header(tiny_bundle, tmp_path):
    out = tmp_path / "out"
    args = ("score", TCGA, "--bundle", tiny_bundle, "--normal", "auto", "--out", out)
    result = invoke(*args, "--draws", "1", "--doses", "1", "--top", "2")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "normal: auto: hpa:breast (Spearman" in text and "runner-up" in text
    run = json.loads((out / "run.json").read_text())
    # no normal file to hash; run.json names files without their folders by default
    assert [i["name"] for i in run["inputs"]] == [TCGA.name]
    choices = run["input_qc"]["normal"]["choices"]
    assert len(choices) == 10 and all("runner_up" in c for c in choices.values())
    gene_ids = run["input_qc"]["input"]["gene_ids"]  # SYMBOL|ENTREZ labels: by Entrez id
    assert sum(gene_ids["matched_by"].values()) == gene_ids["n_resolved"]
    assert gene_ids["matched_by"]["entrez"] > 18000
    assert run["gene_coverage"]["output_genes_missing"] == []
    assert all(p["normal_source"].startswith("auto: ") for p in run["profiles"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--normal", "tissue:brest"), "Did you mean breast?"),
        (("--normal", "tissue:gtex:urinary_bladder"), "GTEX references: adipose_tissue"),
        (("--normal", "auto", "--normal-where", "condition=normal"), "not both"),
        (("--normal", "tissue:breast"), "never pools bulk samples"),
    ],
)
def test_refusals_are_one_paragraph_with_exit_2(tiny_bundle, tmp_path, args, message):
    path, _ = paired_file(tmp_path)
    out = tmp_path / "out"
    result = invoke("score", path, "--bundle", tiny_bundle, "--out", out, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not out.exists()


def test_cohort_run_record_names_a_shipped_reference_and_hashes_a_file(tmp_path):
    from unicure_rt.engines.cohort import _normal_record

    assert _normal_record("tissue:breast") == {"shipped_reference": "tissue:breast"}
    assert _normal_record(None) is None
    (tmp_path / "n.csv").write_text("gene,s\nTP53,1\n")
    record = _normal_record(tmp_path / "n.csv")
    assert record["path"] == str(tmp_path / "n.csv") and len(record["sha256"]) == 64
