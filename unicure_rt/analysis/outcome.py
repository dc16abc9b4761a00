"""`stratify --clinical`: the outcome of drug-rank strata, analysed and written.

Reads a clinical table (CSV/TSV/Parquet, via `unicure_rt.analysis.survival.read_clinical`) and the
`clusters` of `stratify`; writes into a stratify output folder `survival.csv` (per stratum: n,
events, median survival with 95% CI, Cox HR vs stratum 1 with CI and p, PH-test p, log-rank p),
`cox.csv` (every Cox term: HR, CI, p, PH-test statistic and p), `pairwise_logrank.csv` (Holm),
`clinical_association.csv` (BH) and `km.png`, and returns what run.json records. The clinical
table is read and its columns checked before any clustering, so a bad table fails fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from unicure_rt.analysis.survival import (
    SurvivalResult,
    categorical_columns,
    check_columns,
    clinical_association,
    follow_up_columns,
    join_clinical,
    plot_kaplan_meier,
    read_clinical,
    require_lifelines,
    survival_analysis,
)
from unicure_rt.errors import UserError
from unicure_rt.provenance import sha256_file

SURVIVAL_FILES = (
    "survival.csv",
    "cox.csv",
    "pairwise_logrank.csv",
    "clinical_association.csv",
    "km.png",
)


@dataclass
class ClinicalOptions:
    """What `stratify --clinical` was told: the table and the columns to use."""

    path: Path
    id_column: str | None = None
    time: str | None = None
    event: str | None = None
    adjust: tuple[str, ...] = ()
    associate: tuple[str, ...] | None = None  # None: every categorical column


@dataclass
class Outcome:
    options: ClinicalOptions
    sha256: str
    join: dict  # time/event columns, ranked, matched, missing follow-up, analysed, events
    joined: pd.DataFrame  # stratum, time, event + clinical columns, one row per analysed sample
    survival: SurvivalResult
    association: pd.DataFrame


def parse_columns(text: str | None, option: str) -> tuple[str, ...] | None:
    """'age,nhg' -> ('age', 'nhg'); None stays None; empty or repeated names are refused."""
    if text is None:
        return None
    names = tuple(part.strip() for part in text.split(","))
    if not all(names):
        raise UserError(
            f"{option} has an empty column name (got '{text}'); give clinical column names "
            f"separated by commas, e.g. {option} age_at_diagnosis,nhg."
        )
    if len(set(names)) < len(names):
        raise UserError(f"{option} names a column twice (got '{text}'); name each column once.")
    return names


def load_clinical(options: ClinicalOptions) -> pd.DataFrame:
    """The clinical table indexed by sample id, its follow-up and --adjust/--associate columns
    checked; needs lifelines (the [survival] extra), checked first."""
    require_lifelines()
    table = read_clinical(options.path, options.id_column)
    follow_up_columns(table, options.time, options.event)
    check_columns(table, list(options.adjust), "--adjust")
    check_columns(table, list(options.associate or ()), "--associate")
    return table


def analyse_outcome(
    clusters: pd.DataFrame, table: pd.DataFrame, options: ClinicalOptions
) -> Outcome:
    """Join the strata to follow-up; survival statistics and categorical associations."""
    joined, join = join_clinical(clusters, table, time=options.time, event=options.event)
    result = survival_analysis(joined, adjust=options.adjust)
    variables = options.associate
    if variables is None:
        variables = categorical_columns(joined)
    association = clinical_association(joined, list(variables))
    return Outcome(options, sha256_file(options.path), join, joined, result, association)


def cox_table(result: SurvivalResult) -> pd.DataFrame:
    """Every Cox term with its proportional-hazards test (Schoenfeld residuals, rank of time)."""
    ph = result.proportional_hazards.rename(
        columns={"statistic": "ph_statistic", "p_value": "ph_p_value"}
    )
    return result.cox.merge(ph, on="term", how="left")


def write_outcome(outcome: Outcome, folder: Path) -> dict:
    """Write the survival tables and km.png into `folder`; the record run.json keeps."""
    result = outcome.survival
    result.per_stratum.to_csv(folder / "survival.csv", index=False)
    cox_table(result).to_csv(folder / "cox.csv", index=False)
    result.pairwise.to_csv(folder / "pairwise_logrank.csv", index=False)
    outcome.association.to_csv(folder / "clinical_association.csv", index=False)
    plot_kaplan_meier(outcome.joined, folder / "km.png", time_label=outcome.join["time_column"])
    options = outcome.options
    return {
        "clinical": {
            "path": str(options.path),
            "name": options.path.name,
            "sha256": outcome.sha256,
            "id_column": options.id_column,
            **outcome.join,
        },
        "survival": {
            "adjust": list(options.adjust),
            "associate": None if options.associate is None else list(options.associate),
            "logrank_statistic": result.logrank_statistic,
            "logrank_p": result.logrank_p,
            "n_analysed": result.n_analysed,
            "n_excluded_from_cox": result.n_excluded_covariates,
            "per_stratum": _records(result.per_stratum),
            "cox": _records(cox_table(result)),
            "warnings": result.warnings,
        },
        "files": list(SURVIVAL_FILES),
    }


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts; NaN (e.g. a median not reached) becomes null."""
    return [
        {key: (None if pd.isna(value) else value) for key, value in row.items()}
        for row in frame.astype(object).to_dict(orient="records")
    ]
