"""Survival of strata on the real SCAN-B cohort: known directions, lifelines' numbers, errors."""

import numpy as np
import pandas as pd
import pytest

from unicure_rt.errors import UserError

pytest.importorskip("lifelines", reason="the survival tests need the [survival] extra")
from lifelines import CoxPHFitter  # noqa: E402
from lifelines.statistics import multivariate_logrank_test  # noqa: E402

from unicure_rt.analysis.survival import join_clinical, read_clinical, survival_analysis  # noqa: E402


@pytest.fixture(scope="module")
def scanb(shared_data):
    return read_clinical(shared_data / "cohorts" / "scanb_breast_400_clinical.parquet")


def strata_from(clinical: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"profile": labels.index, "cluster": labels.to_numpy()})


def test_grade_strata_reproduce_known_direction_and_lifelines(scanb):
    """Grade 3 tumours die sooner than grade 1 (SCAN-B: 1 vs 24 deaths)."""
    graded = scanb[scanb["nhg"].isin(["G1", "G3"])]
    labels = (graded["nhg"] == "G3").astype(int) + 1
    joined, summary = join_clinical(strata_from(graded, labels), scanb)
    assert summary["analysed"] == 218 and summary["time_column"] == "overall_survival_days"
    result = survival_analysis(joined)
    direct = multivariate_logrank_test(
        graded["overall_survival_days"], labels, graded["overall_survival_event"]
    )
    assert result.logrank_p == pytest.approx(direct.p_value, rel=1e-9)
    assert result.logrank_p < 0.01
    frame = pd.DataFrame(
        {
            "time": graded["overall_survival_days"],
            "event": graded["overall_survival_event"],
            "g3": (labels == 2).astype(float),
        }
    )
    hr = float(np.exp(CoxPHFitter().fit(frame, "time", "event").params_["g3"]))
    row = result.per_stratum.set_index("stratum").loc[2]
    assert row["cox_hazard_ratio"] == pytest.approx(hr, rel=1e-6) and hr > 1
    assert any("events" in note for note in result.warnings)  # G1 has 1 event


def test_noise_strata_give_non_small_p(scanb):
    rng = np.random.default_rng(0)
    labels = pd.Series(rng.integers(1, 4, size=len(scanb)), index=scanb.index)
    joined, _ = join_clinical(strata_from(scanb, labels), scanb)
    result = survival_analysis(joined, adjust=["age_at_diagnosis"])
    assert result.logrank_p > 0.05
    assert set(result.cox["term"]) == {"stratum_2", "stratum_3", "age_at_diagnosis"}


def test_bad_clinical_inputs_are_user_errors(scanb, tmp_path):
    labels = pd.Series(1, index=scanb.index)
    clusters = strata_from(scanb, labels)
    with pytest.raises(UserError, match="its columns are"):
        join_clinical(clusters, scanb, time="os")
    few = scanb.iloc[:10]
    with pytest.raises(UserError, match="at least 20"):
        join_clinical(clusters, few)
    bad = scanb.copy()
    bad["overall_survival_event"] = bad["overall_survival_event"] * 2
    with pytest.raises(UserError, match="0 \\(censored\\) or 1"):
        join_clinical(clusters, bad)
    bad = scanb.copy()
    bad["overall_survival_days"] = -bad["overall_survival_days"]
    with pytest.raises(UserError, match="negative"):
        join_clinical(clusters, bad)
    (tmp_path / "c.csv").write_text("who,time,event\na,1,0\n")
    with pytest.raises(UserError, match="--id-column"):
        read_clinical(tmp_path / "c.csv")
