"""`stratify --clinical` through the CLI: planted outcome, outputs and run.json, every bad input."""

import hashlib
import json
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from unicure_rt.cli.app import app

pytest.importorskip("lifelines", reason="the survival tests need the [survival] extra")
from lifelines.statistics import multivariate_logrank_test  # noqa: E402
from test_stratify import planted_ranking  # noqa: E402

runner = CliRunner()
N_PER_GROUP = 40
SURVIVAL_FILES = (
    "survival.csv",
    "cox.csv",
    "pairwise_logrank.csv",
    "clinical_association.csv",
    "km.png",
    "report.html",
    "run.json",
)


def planted_clinical(seed: int = 1, hazard_a: float = 4.0) -> pd.DataFrame:
    """Follow-up of the planted ranking's samples: group A dies `hazard_a` times faster."""
    rng = np.random.default_rng(seed)
    ids = [f"{group}{i}" for group in "AB" for i in range(N_PER_GROUP)]
    rate = np.where([i.startswith("A") for i in ids], hazard_a, 1.0)
    death = rng.exponential(1.0 / rate)
    censor = rng.exponential(1.5, size=len(ids))
    return pd.DataFrame(
        {
            "sample": ids,
            "time": np.minimum(death, censor),
            "event": (death <= censor).astype(int),
            "age": rng.normal(60, 10, len(ids)).round(),
            "grade": rng.choice(["G1", "G2", "G3"], len(ids)),
        }
    )


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted")
    planted_ranking(n_per_group=N_PER_GROUP).to_parquet(folder / "ranking.parquet")
    planted_clinical().to_csv(folder / "clinical.csv", index=False)
    return folder


def stratify(cohort, out, *extra):
    return runner.invoke(
        app, ["stratify", str(cohort), "--out", str(out), "--k", "2", "--clinical", *extra]
    )


@pytest.fixture(scope="module")
def planted_run(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "strata"
    result = stratify(cohort, out, str(cohort / "clinical.csv"), "--adjust", "age,grade")
    assert result.exit_code == 0, result.output
    return out, result


def test_planted_outcome_gives_small_p_and_the_right_hazard_ratio(planted_run):
    out, result = planted_run
    clusters = pd.read_csv(out / "clusters.csv").set_index("profile")["cluster"]
    short = int(clusters["A0"])
    assert clusters[[f"A{i}" for i in range(N_PER_GROUP)]].eq(short).all()
    survival = pd.read_csv(out / "survival.csv").set_index("stratum")
    assert survival["logrank_p_value"].iloc[0] < 1e-3
    other = 3 - short
    if short == 1:  # the reference stratum dies sooner: the other's HR is below 1
        assert survival.loc[other, "cox_ci_upper"] < 1
    else:
        assert survival.loc[short, "cox_ci_lower"] > 1
    assert survival.loc[short, "median_time"] < survival.loc[other, "median_time"]
    cox = pd.read_csv(out / "cox.csv").set_index("term")
    assert {"stratum_2", "age", "grade_G2", "grade_G3"} == set(cox.index)
    assert cox["ph_p_value"].between(0, 1).all()
    assert "log-rank p" in result.output


def test_run_json_records_the_clinical_file_options_and_figures(planted_run, cohort):
    out, _ = planted_run
    for name in SURVIVAL_FILES:
        assert (out / name).stat().st_size > 0, name
    record = json.loads((out / "run.json").read_text())
    digest = hashlib.sha256((cohort / "clinical.csv").read_bytes()).hexdigest()
    assert record["clinical"]["name"] == "clinical.csv"
    assert record["clinical"]["sha256"] == digest
    assert record["clinical"]["matched"] == record["clinical"]["analysed"] == 2 * N_PER_GROUP
    assert record["options"] == {
        "k": 2,
        "seed": 0,
        "top": 15,
        "id_column": None,
        "time": None,
        "event": None,
        "adjust": ["age", "grade"],
        "associate": None,
    }
    survival = pd.read_csv(out / "survival.csv")
    assert record["survival"]["logrank_p"] == pytest.approx(survival["logrank_p_value"].iloc[0])
    hazard = record["survival"]["per_stratum"][1]["cox_hazard_ratio"]
    assert hazard == pytest.approx(survival["cox_hazard_ratio"].iloc[1])
    assert set(record["files"]) == {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert "without looking at survival" in record["survival"]["warnings"][0]
    page = (out / "report.html").read_text()
    assert "Outcome of the strata" in page and page.count("data:image/png;base64,") == 4


def test_null_outcome_gives_non_small_p(cohort, tmp_path):
    """Outcomes permuted across samples carry no stratum signal."""
    clinical = planted_clinical()
    shuffled = np.random.default_rng(7).permutation(len(clinical))
    clinical[["time", "event"]] = clinical[["time", "event"]].to_numpy()[shuffled]
    clinical.to_csv(tmp_path / "null.csv", index=False)
    result = stratify(cohort, tmp_path / "out", str(tmp_path / "null.csv"))
    assert result.exit_code == 0, result.output
    survival = pd.read_csv(tmp_path / "out" / "survival.csv")
    assert survival["logrank_p_value"].iloc[0] > 0.05
    assert survival["cox_p_value"].iloc[1] > 0.05


def test_same_inputs_give_identical_outputs_and_json_summary(cohort, planted_run, tmp_path):
    out, _ = planted_run
    args = [str(cohort / "clinical.csv"), "--adjust", "age,grade", "--json"]
    result = stratify(cohort, tmp_path / "again", *args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["k"] == 2 and summary["survival"]["logrank_p"] < 1e-3
    for name in SURVIVAL_FILES:
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name


def test_without_clinical_writes_report_and_run_json(cohort, tmp_path):
    result = runner.invoke(app, ["stratify", str(cohort), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "s" / "run.json").read_text())
    assert "clinical" not in record and record["k"] == 2
    assert "Outcome" not in (tmp_path / "s" / "report.html").read_text()
    assert not (tmp_path / "s" / "survival.csv").exists()


def write(frame: pd.DataFrame, path):
    frame.to_csv(path, index=False)
    return str(path)


BAD_TABLES = {
    "non-numeric time": (
        lambda c: c.assign(time=c["time"].astype(object).where(c.index != 3, "soon")),
        [],
        "non-numeric",
    ),
    "negative time": (lambda c: c.assign(time=c["time"] - 10), [], "negative times"),
    "event not 0/1": (lambda c: c.assign(event=c["event"] * 2), [], "0 (censored) or 1"),
    "event as text": (
        lambda c: c.assign(event=c["event"].map({0: "alive", 1: "dead"})),
        [],
        "0 (censored) or 1",
    ),
    "too few joined ids": (
        lambda c: c.assign(sample=[f"X{i}" if i > 5 else s for i, s in enumerate(c["sample"])]),
        [],
        "at least 20 are needed",
    ),
    "no id column": (lambda c: c.rename(columns={"sample": "who"}), [], "--id-column"),
    "unknown id column": (lambda c: c, ["--id-column", "patient_id"], "its columns are"),
    "unknown time column": (lambda c: c, ["--time", "os"], "--time 'os' is not a column"),
    "unknown event column": (lambda c: c, ["--event", "dead"], "--event 'dead' is not a column"),
    "no time column": (lambda c: c.rename(columns={"time": "t"}), [], "Name the column with"),
    "unknown covariate": (lambda c: c, ["--adjust", "age,stage"], "--adjust names 'stage'"),
    "empty covariate": (lambda c: c, ["--adjust", "age,,grade"], "empty column name"),
    "unknown association": (lambda c: c, ["--associate", "pam50"], "--associate names"),
    "repeated ids": (
        lambda c: c.assign(sample=["A1", *c["sample"].iloc[1:]]),
        [],
        "repeats ids",
    ),
    "no events": (lambda c: c.assign(event=0), [], "one event"),
    "one stratum only": (lambda c: c[c["sample"].str.startswith("A")], [], "nothing to compare"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_clinical_inputs_exit_2_with_one_message(cohort, tmp_path, case):
    change, options, message = BAD_TABLES[case]
    table = write(change(planted_clinical()), tmp_path / "clinical.csv")
    out = tmp_path / "out"
    result = stratify(cohort, out, table, *options)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing.csv", "No clinical table"), ("clinical.xlsx", "use .csv, .tsv or .parquet")],
)
def test_missing_or_unreadable_clinical_file(cohort, tmp_path, name, message):
    (tmp_path / "clinical.xlsx").write_text("not a table")
    result = stratify(cohort, tmp_path / "out", str(tmp_path / name))
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()


def test_clinical_options_need_clinical(cohort, tmp_path):
    result = runner.invoke(
        app, ["stratify", str(cohort), "--out", str(tmp_path / "o"), "--time", "t"]
    )
    assert result.exit_code == 2 and "only apply with --clinical" in result.output


def test_missing_lifelines_names_the_install_command(cohort, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lifelines", None)
    result = stratify(cohort, tmp_path / "out", str(cohort / "clinical.csv"))
    assert result.exit_code == 2
    assert "pip install '.[survival]'" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_scanb_score_then_stratify_clinical(tiny_bundle, shared_data, tmp_path):
    """80 real SCAN-B tumours (every 5th row; FPKM, GTEx breast as normal): score, stratify."""
    log2 = pd.read_parquet(shared_data / "cohorts" / "scanb_breast_400_log2fpkm.parquet")
    breast = pd.read_parquet(shared_data / "normal" / "gtex_tissue_median_tpm.parquet")
    breast = breast.loc[["Breast"], list(log2.columns)].dropna(axis=1)
    (2.0 ** log2.iloc[::5][breast.columns] - 0.1).clip(lower=0).to_parquet(tmp_path / "t.parquet")
    breast.to_parquet(tmp_path / "normal.parquet")
    scored = runner.invoke(
        app,
        [
            "score",
            str(tmp_path / "t.parquet"),
            "--normal",
            str(tmp_path / "normal.parquet"),
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
    clinical = shared_data / "cohorts" / "scanb_breast_400_clinical.parquet"
    out = tmp_path / "strata"
    args = ["stratify", str(tmp_path / "scores"), "--out", str(out), "--clinical", str(clinical)]
    result = runner.invoke(app, [*args, "--adjust", "age_at_diagnosis"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "run.json").read_text())
    assert record["clinical"]["matched"] == 80 and record["clinical"]["ranked"] == 80
    assert record["clinical"]["time_column"] == "overall_survival_days"
    clusters = pd.read_csv(out / "clusters.csv").set_index("profile")["cluster"]
    follow_up = pd.read_parquet(clinical).loc[clusters.index]
    direct = multivariate_logrank_test(
        follow_up["overall_survival_days"], clusters, follow_up["overall_survival_event"]
    )
    assert record["survival"]["logrank_p"] == pytest.approx(direct.p_value, rel=1e-9)
    association = pd.read_csv(out / "clinical_association.csv")
    assert {"pam50_subtype", "er_status", "nhg"} <= set(association["variable"])
    assert any("events (<" in note for note in record["survival"]["warnings"])


def test_a_cox_model_that_does_not_converge_is_a_user_error(cohort, tmp_path, monkeypatch):
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    def fail(*args, **kwargs):
        raise ConvergenceError("Convergence halted due to matrix inversion problems.")

    monkeypatch.setattr(CoxPHFitter, "fit", fail)
    result = stratify(cohort, tmp_path / "out", str(cohort / "clinical.csv"), "--adjust", "age")
    assert result.exit_code == 2 and "did not converge" in result.output
    assert "--adjust" in result.output and not (tmp_path / "out").exists()
