"""One compound under several ids in `score`'s outputs and report, and what the report shows:
axis ranges, heatmap order, bulk profiles, the closing line (bundled model, TCGA example)."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unicure_rt.bundle.load import load_bundle
from unicure_rt.drugs.fingerprints import same_compound_groups
from unicure_rt.patients.load import load_patient
from unicure_rt.scoring.options import ScoreOptions, resolve_library
from unicure_rt.scoring.pipeline import score_patient
from unicure_rt.scoring.report import _value_range, heatmap_ranks, profile_kind
from unicure_rt.scoring.run_folder import write_score_outputs

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tcga_brca.h5ad"
PD_0325901 = "PD-0325901"  # listed twice in the bundled library: with and without stereo


def test_one_compound_is_one_inchikey_or_one_name_on_one_skeleton():
    names = ["PD-0325901", "PD-0325901", "tretinoin", "isotretinoin", "synonym", "other", "x"]
    keys = pd.Series(
        [
            "InChIKey=SUDAHWBOROXANE-SECBINFHSA-N",  # stereo given
            "InChIKey=SUDAHWBOROXANE-UHFFFAOYSA-N",  # the same compound without it
            "SHGAZHPCJJPHSC-YCNIQYBTSA-N",  # two drugs that share a skeleton, not a name
            "SHGAZHPCJJPHSC-XFYACQKRSA-N",
            "DWHVZCLBMTZRQM-UHFFFAOYSA-N",  # one InChIKey under two names
            "DWHVZCLBMTZRQM-UHFFFAOYSA-N",
            None,
        ]
    )
    groups = same_compound_groups(names, keys).tolist()
    assert groups[0] == groups[1]
    assert groups[4] == groups[5]
    assert len({groups[0], groups[2], groups[3], groups[4], groups[6]}) == 5
    by_name = same_compound_groups(["a", "b", "a"], None).tolist()
    assert by_name[0] == by_name[2] != by_name[1]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """The TCGA example scored against PD-0325901's two ids and three other drugs, with the
    report written."""
    bundle = load_bundle()
    library = resolve_library(bundle, None)
    rows = [i for i, name in enumerate(library.names) if name == PD_0325901] + [0, 1, 2]
    assert len(rows) == 5
    small = dataclasses.replace(
        library,
        ids=[library.ids[r] for r in rows],
        names=[library.names[r] for r in rows],
        metadata=library.metadata.iloc[rows].reset_index(drop=True),
        _embeddings=np.ascontiguousarray(library.embeddings[rows]),
        _lookup=None,
    )
    patient = load_patient(EXAMPLE, normal_where="condition=normal")
    options = ScoreOptions(doses=(1.0, 10.0), draws=1, permutations=0)
    result = score_patient(bundle, patient, library=small, options=options)
    out = tmp_path_factory.mktemp("report") / "out"
    write_score_outputs(
        result, out, force=False, input_files=[EXAMPLE], started=time.perf_counter(), report_top=4
    )
    return result, out, [small.ids[0], small.ids[1]]


def test_ids_of_one_compound_share_a_group_and_show_once_in_the_report(scored):
    result, out, pd_ids = scored
    ranking = pd.read_csv(out / "ranking.csv")
    assert len(ranking) == 5 * 5  # still one row per profile and id
    pd_rows = ranking[ranking["drug_id"].isin(pd_ids)]
    assert set(pd_rows["same_structure_ids"]) == {"|".join(pd_ids)}
    others = ranking[~ranking["drug_id"].isin(pd_ids)]
    assert (others["same_structure_ids"] == others["drug_id"]).all()
    page = (out / "report.html").read_text()
    tables = re.findall(r"<h3>(.*?)</h3>.*?<table>(.*?)</table>", page, flags=re.S)
    assert len(tables) == 5
    for _profile, table in tables:
        assert table.count(f'<td class="l">{PD_0325901}</td>') == 1
        cell = re.search(rf'{PD_0325901}</td><td class="l">(.*?)</td>', table).group(1)
        assert all(drug_id in cell for drug_id in pd_ids)


def test_report_says_bulk_for_bulk_samples(scored):
    result, out, _ = scored
    page = (out / "report.html").read_text()
    assert page.count("bulk sample") >= 2 * 5  # each profile's note and the QC table
    assert "cells: 1" not in page
    single_cell = {"input_qc": {"profiles": {"bulk": False}}}
    assert profile_kind(single_cell, {"n_cells": 312}) == "312 cells"


def test_closing_line_names_the_report(scored, capsys):
    from unicure_rt.cli.score import print_ranking

    result, out, _ = scored
    print_ranking(result, 3, out, report=True)
    printed = capsys.readouterr().out
    assert str((out / "report.html").resolve()) in printed
    print_ranking(result, 3, out)
    assert "report.html" not in capsys.readouterr().out


def test_score_axis_spans_the_values_not_zero():
    low, high = _value_range(np.array([-0.31, -0.30, -0.29, np.nan]))
    assert -0.33 < low < -0.31 and -0.29 < high < -0.27


def test_heatmap_columns_follow_mean_log_rank():
    """A: ranks 1, 1, 1000 (mean 334, mean log10 1.0); B: 20, 20, 20 (mean 20, mean log10 1.3);
    C (ids c1, c2) takes its better id's rank."""
    profiles = ["p1", "p2", "p3"]
    ranks = {"a": [1, 1, 1000], "b": [20, 20, 20], "c1": [30, 2, 5], "c2": [2, 40, 50]}
    groups = {"a": "a", "b": "b", "c1": "c1|c2", "c2": "c1|c2"}
    ranking = pd.DataFrame(
        [
            {"profile": p, "drug_id": d, "same_structure_ids": groups[d], "rank": r[i]}
            for i, p in enumerate(profiles)
            for d, r in ranks.items()
        ]
    )
    best = {p: ranking[ranking["profile"] == p] for p in profiles}
    matrix = heatmap_ranks(ranking, best)
    assert matrix.index.tolist() == profiles
    assert matrix.columns.tolist() == ["c1|c2", "a", "b"]
    assert matrix["c1|c2"].tolist() == [2, 2, 5]


def test_long_labels_are_cut_in_the_middle_to_keep_what_tells_them_apart():
    from unicure_rt.scoring.report import MAX_LABEL_CHARS, _short

    long = "(+/-)-7-hydroxy-2-(N,N-di-n-propylamino)tetralin [BRD-K0001] x2"
    short = _short(long)
    assert len(short) == MAX_LABEL_CHARS and short.endswith("[BRD-K0001] x2")
    assert short.startswith("(+/-)-7") and _short("tretinoin x2") == "tretinoin x2"
