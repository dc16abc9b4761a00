"""Gene-identifier resolution (`unicure_rt.patients.genes`) and the gene table build script."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from unicure_rt.patients.genes import GENE_TABLE, gene_table, resolve_gene_ids

REPO = Path(__file__).resolve().parents[1]


def real_data() -> Path:
    root = Path(
        os.environ.get("UNICURE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared/data")
    )
    if not root.is_dir():
        pytest.skip(f"../shared/data not found: {root} (set UNICURE_SHARED_DATA)")
    return root


def load_build_script():
    spec = importlib.util.spec_from_file_location(
        "build_gene_table", REPO / "scripts" / "build_gene_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_columns_and_uniqueness():
    table = gene_table()
    assert list(table.columns) == [
        "symbol",
        "entrez_id",
        "ensembl_id",
        "chromosome",
        "start",
        "aliases",
    ]
    assert table["symbol"].is_unique and table["entrez_id"].is_unique
    assert table["ensembl_id"].is_unique
    assert (table["symbol"] == table["symbol"].str.upper()).all()
    assert not table["ensembl_id"].str.contains(r"\.").any()
    assert GENE_TABLE.stat().st_size < 1_000_000


def test_symbols_resolve_case_insensitively():
    symbols, report = resolve_gene_ids(["gnpda1", "CDH3", " Actb "])
    assert symbols == ["GNPDA1", "CDH3", "ACTB"]
    assert report["id_type"] == "symbol"
    assert (report["n_resolved"], report["n_unresolved"]) == (3, 0)


def test_ensembl_ids_with_and_without_version():
    symbols, report = resolve_gene_ids(["ENSG00000113552.4", "ENSG00000062038"])
    assert symbols == ["GNPDA1", "CDH3"]
    assert report["id_type"] == "ensembl"


def test_symbol_entrez_prefers_entrez_so_old_symbols_reach_the_landmark_symbol():
    # TCGA writes TMEM5|10329; the landmark symbol of Entrez 10329 is RXYLT1.
    symbols, report = resolve_gene_ids(["TMEM5|10329", "?|10007", "GNPDA1|999999999", "?|1"])
    assert symbols == ["RXYLT1", "GNPDA1", "GNPDA1", "A1BG"]
    assert report["id_type"] == "symbol|entrez"


def test_landmark_symbol_replaces_the_location_table_symbol():
    # gene_locations_hg38 calls Entrez 8996 AC074143.1; the landmark symbol is NOL3.
    assert resolve_gene_ids(["?|8996", "ENSG00000140939"])[0] == ["NOL3", "NOL3"]
    assert resolve_gene_ids(["AC074143.1"])[0] == [None]


def test_shared_symbol_keeps_the_established_gene():
    table = gene_table().set_index("symbol")
    assert table.loc["ATF7", "entrez_id"] == 11016
    assert resolve_gene_ids(["NPFF|8620"])[0] == [None]


def test_mixed_and_unresolved_labels_are_reported():
    labels = [
        "GNPDA1",
        "ENSG00000062038.9",
        "?|10329",
        "NOT_A_GENE",
        "?|123456789",
        "ENSG99999999999",
    ]
    symbols, report = resolve_gene_ids(labels)
    assert symbols == ["GNPDA1", "CDH3", "RXYLT1", None, None, None]
    assert report == {
        "id_type": "mixed",
        "id_type_counts": {"symbol": 2, "ensembl": 2, "symbol|entrez": 2},
        "n_labels": 6,
        "n_resolved": 3,
        "n_unresolved": 3,
        "unresolved_examples": ["NOT_A_GENE", "?|123456789", "ENSG99999999999"],
        "matched_by": {"symbol": 1, "alias": 0, "ensembl": 1, "entrez": 1},
        "alias_examples": {},
        "ambiguous_aliases": {"n": 0, "examples": {}},
    }
    json.dumps(report)


def test_non_text_and_empty_inputs():
    symbols, report = resolve_gene_ids([float("nan"), 7157])
    assert symbols == [None, None]
    assert resolve_gene_ids([])[1]["id_type"] == "none"


def test_build_table_rules_on_a_small_example():
    build = load_build_script()
    columns = ["symbol", "ensembl_id", "entrez_id", "chromosome", "start"]
    locations = pd.DataFrame(
        [
            ["NEWNAME", "ENSG00000000003", 1, "1", 10],
            ["DUP", "ENSG00000000005", 2, "2", 20],
            ["DUP", "ENSG00000000004", 3, "2", 30],
            ["other", "ENSG00000000006", 4, "X", 40],
        ],
        columns=columns,
    )
    landmarks = pd.DataFrame([["OLDNAME", "ENSG00000000003", 1, "1", 10]], columns=columns)
    table = build.build_table(locations, landmarks)
    assert table["symbol"].tolist() == ["DUP", "OLDNAME", "OTHER"]
    assert table.set_index("symbol").loc["DUP", "entrez_id"] == 3
    assert list(table.columns) == build.COLUMNS


def test_shipped_table_matches_the_build_script_and_holds_every_landmark_gene():
    data = real_data()
    build = load_build_script()
    dtypes = {"chromosome": str}
    locations = pd.read_csv(data / "genes" / "gene_locations_hg38.tsv.gz", sep="\t", dtype=dtypes)
    landmarks = pd.read_csv(data / "genes" / "landmark_genes.tsv", sep="\t", dtype=dtypes)
    ncbi = pd.read_csv(data / "genes" / "gene_aliases_ncbi_2022.tsv.gz", sep="\t", dtype=str)
    built = build.build_table(locations, landmarks, ncbi).fillna({"aliases": ""})
    pd.testing.assert_frame_equal(built, gene_table())
    symbols, report = resolve_gene_ids([f"?|{entrez}" for entrez in landmarks["entrez_id"]])
    assert symbols == landmarks["symbol"].str.upper().tolist()
    assert report["n_unresolved"] == 0
