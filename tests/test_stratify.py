"""Stratification: planted strata are found, the outputs are complete, bad rankings are refused."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from unicure_rt.analysis.stratify import (
    SIGNIFICANT_FDR,
    SMALLEST_STRATUM,
    read_ranking,
    standardised_log_ranks,
    strata_warnings,
    stratify,
)
from unicure_rt.cli.app import app
from unicure_rt.errors import UserError

runner = CliRunner()


def planted_ranking(n_per_group=6, n_drugs=40, seed=0) -> pd.DataFrame:
    """Two groups of samples; drugs d00-d14 rank top in group A and bottom in group B."""
    rng = np.random.default_rng(seed)
    rows = []
    for group in ("A", "B"):
        for i in range(n_per_group):
            scores = rng.normal(size=n_drugs)
            scores[:15] += -4.0 if group == "A" else 4.0
            ranks = np.argsort(np.argsort(scores)) + 1
            for d in range(n_drugs):
                rows.append(
                    {
                        "profile": f"{group}{i}",
                        "drug_id": f"d{d:02d}",
                        "drug_name": f"drug {d}",
                        "rank": ranks[d],
                    }
                )
    return pd.DataFrame(rows)


def test_planted_strata_and_drugs_are_recovered():
    strata = stratify(planted_ranking())
    assert strata.k == 2
    clusters = strata.clusters.set_index("profile")["cluster"]
    assert clusters[[f"A{i}" for i in range(6)]].nunique() == 1
    assert clusters[[f"B{i}" for i in range(6)]].nunique() == 1
    assert clusters["A0"] != clusters["B0"]
    cluster_a = clusters["A0"]
    table = strata.differential[strata.differential["cluster"] == cluster_a].set_index("drug_id")
    planted = [f"d{d:02d}" for d in range(15)]
    assert (table.loc[planted, "log2_fold_change"] < 0).all()
    significant = set(table.index[table["fdr"] < 0.05])
    assert len(significant & set(planted)) >= 14
    strongest = table.nsmallest(15, "log2_fold_change").index
    assert set(strongest) == set(planted)
    assert list(strata.k_selection["k"]) == list(range(2, 11))
    assert strata.k_selection["chosen"].sum() == 1


def test_standardisation_is_per_drug():
    matrix = pd.DataFrame({"a": [1, 10, 100], "b": [5, 5, 5]}, index=["x", "y", "z"])
    z = standardised_log_ranks(matrix)
    np.testing.assert_allclose(z[:, 0].mean(), 0, atol=1e-12)
    np.testing.assert_allclose(z[:, 0].std(), 1)
    assert (z[:, 1] == 0).all()


def test_fixed_k_and_bad_inputs(tmp_path):
    assert stratify(planted_ranking(), k=3).k == 3
    with pytest.raises(UserError, match="--k must be between 2 and"):
        stratify(planted_ranking(n_per_group=2), k=5)
    with pytest.raises(UserError, match="at least 3 profiles"):
        stratify(planted_ranking(n_per_group=1))
    (tmp_path / "r.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="lacks the column"):
        read_ranking(tmp_path / "r.csv")
    with pytest.raises(UserError, match="No ranking"):
        read_ranking(tmp_path / "missing")


def test_cli_writes_tables_and_plots(tmp_path):
    planted_ranking().to_parquet(tmp_path / "ranking.parquet")
    out = tmp_path / "strata"
    result = runner.invoke(app, ["stratify", str(tmp_path), "--out", str(out), "--k", "2"])
    assert result.exit_code == 0, result.output
    for name in (
        "clusters.csv",
        "k_selection.csv",
        "differential_drugs.csv",
        "k_selection.png",
        "pca_clusters.png",
        "differential_drugs.png",
        "report.html",
        "run.json",
    ):
        assert (out / name).stat().st_size > 0
    again = runner.invoke(app, ["stratify", str(tmp_path), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_cohort_of_real_cell_lines(tiny_bundle, shared_data, tmp_path):
    """A 164-profile cohort from the real L1000 cell-line baselines, scored then stratified."""
    baselines = pd.read_parquet(shared_data / "l1000" / "cell_line_baselines.parquet")
    baselines.drop(index="averaged").to_csv(tmp_path / "lines.csv")
    baselines.loc[["averaged"]].to_csv(tmp_path / "normal.csv")
    scored = runner.invoke(
        app,
        [
            "score",
            str(tmp_path / "lines.csv"),
            "--normal",
            str(tmp_path / "normal.csv"),
            "--bundle",
            str(tiny_bundle),
            "--draws",
            "1",
            "--out",
            str(tmp_path / "scores"),
            "-q",
        ],
    )
    assert scored.exit_code == 0, scored.output
    result = runner.invoke(
        app, ["stratify", str(tmp_path / "scores"), "--out", str(tmp_path / "strata")]
    )
    assert result.exit_code == 0, result.output
    clusters = pd.read_csv(tmp_path / "strata" / "clusters.csv")
    assert len(clusters) == 164 and clusters["cluster"].nunique() >= 2


def test_tcga_example_ranking_stratifies(tiny_bundle, shared_data, tmp_path):
    tcga = shared_data / "patients" / "tcga_brca_rsem_counts.parquet"
    scored = runner.invoke(
        app,
        [
            "score",
            str(tcga),
            "--normal-where",
            "sample~-11A",
            "--bundle",
            str(tiny_bundle),
            "--out",
            str(tmp_path / "s"),
            "-q",
        ],
    )
    assert scored.exit_code == 0, scored.output
    result = runner.invoke(
        app, ["stratify", str(tmp_path / "s" / "ranking.csv"), "--out", str(tmp_path / "t")]
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "t" / "clusters.csv")) == 5


def test_unranked_drugs_are_dropped_and_text_ranks_refused(tmp_path):
    from unicure_rt.analysis.stratify import rank_matrix

    table = pd.DataFrame(
        {
            "profile": ["a", "a", "a", "b", "b", "b"],
            "drug_id": ["x", "y", "z", "x", "y", "z"],
            "rank": [1, None, 2, 2, 1, None],
        }
    )
    path = tmp_path / "ranking.csv"
    table.to_csv(path, index=False)
    matrix = rank_matrix(read_ranking(path))
    assert list(matrix.columns) == ["x"] and matrix["x"].tolist() == [1.0, 2.0]
    table.assign(rank=["1", "two", "2", "2", "1", ""]).to_csv(path, index=False)
    with pytest.raises(UserError, match="not finite numbers"):
        read_ranking(path)


def test_planted_strata_warn_of_nothing_and_report_progress(tmp_path):
    planted_ranking().to_parquet(tmp_path / "ranking.parquet")
    out = tmp_path / "strata"
    result = runner.invoke(app, ["stratify", str(tmp_path), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["warnings"] == [] and "Warning" not in result.stderr
    assert json.loads((out / "run.json").read_text())["warnings"] == []
    shown = runner.invoke(app, ["stratify", str(tmp_path), "--out", str(tmp_path / "again")])
    assert shown.exit_code == 0, shown.output
    lines = shown.stderr.splitlines()  # no terminal: plain progress lines on stderr
    assert lines[0] == "clustering: started"
    assert lines[1].startswith("clustering: 9/9 (")  # k = 2..10 for 12 profiles


def test_five_samples_in_three_strata_are_warned_about(tmp_path):
    planted_ranking(n_per_group=3, seed=1).query("profile != 'B2'").to_parquet(
        tmp_path / "ranking.parquet"
    )
    out = tmp_path / "strata"
    result = runner.invoke(app, ["stratify", str(tmp_path), "--out", str(out), "--k", "3"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "run.json").read_text())
    sizes = record["cluster_sizes"]
    small = [c for c, n in sizes.items() if n < SMALLEST_STRATUM]
    assert small and any("fewer than 3 profiles" in note for note in record["warnings"])
    stderr = " ".join(result.stderr.split())
    assert "Warning: Strat" in stderr and f"{small[0]} ({sizes[small[0]]} profile" in stderr


def test_no_significant_drug_is_warned_about():
    strata = stratify(planted_ranking())
    assert strata_warnings(strata) == []
    strata.differential["fdr"] = SIGNIFICANT_FDR
    (note,) = strata_warnings(strata)
    assert f"FDR < {SIGNIFICANT_FDR:g}" in note and "smallest FDR 0.25" in note
