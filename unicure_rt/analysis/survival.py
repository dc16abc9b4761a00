"""Outcome of patient strata: clinical join, Kaplan-Meier, log-rank, Cox PH, association.

Longer than 400 lines because the clinical join, the models and the figure of one analysis
share the checks of the joined table; split, the checks would sit apart from the only code that
relies on them.

Reads a clinical table (CSV/TSV/Parquet) and the `clusters` of `stratify`; everything survival
is computed with lifelines, an optional extra (`pip install '.[survival]'`), imported
lazily so the clinic install stays light. The strata are chosen from drug ranks alone (k by
silhouette), never by looking at the outcome.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from unicure_rt.errors import UserError

MIN_MATCHED = 20  # fewer matched samples than this cannot support a survival comparison
MIN_EVENTS_PER_STRATUM = 10  # below this the estimates are unstable: warn
TIME_CANDIDATES = ("time", "os_time", "os_days", "overall_survival_days", "survival_time")
EVENT_CANDIDATES = ("event", "status", "os_event", "overall_survival_event", "os_status")
ID_CANDIDATES = ("sample", "sample_id", "profile", "id", "patient")
MAX_CATEGORIES = 10  # integer or text columns with at most this many levels are categorical
NOT_K_BY_SURVIVAL = (
    "The number of strata k was chosen from the drug ranks alone (best silhouette or --k), "
    "without looking at survival."
)


@dataclass
class SurvivalResult:
    per_stratum: pd.DataFrame  # stratum, n, events, median, HR vs stratum 1 with CI, p-values
    pairwise: pd.DataFrame  # stratum_a, stratum_b, statistic, p, Holm-adjusted p
    cox: pd.DataFrame  # every Cox term: HR, CI, p
    proportional_hazards: pd.DataFrame  # per Cox term: Schoenfeld-residual test statistic, p
    logrank_statistic: float
    logrank_p: float
    n_analysed: int
    n_excluded_covariates: int
    adjust: list[str]
    warnings: list[str] = field(default_factory=list)


def require_lifelines():
    """The lifelines module, or a UserError naming the install command."""
    try:
        import lifelines
    except ImportError:
        raise UserError(
            "`stratify --clinical` needs the survival extra (lifelines), which is not installed. "
            "Install it from your unicure-rt clone with `pip install '.[survival]'` (or "
            "`pip install lifelines`) and run the command again."
        ) from None
    return lifelines


def read_clinical(path: Path, id_column: str | None = None) -> pd.DataFrame:
    """A clinical table indexed by sample id (string); a named Parquet index becomes a column."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"No clinical table at '{path}'. Pass a CSV, TSV or Parquet file.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            table = pd.read_parquet(path)
            if table.index.name is not None:
                table = table.reset_index()
        elif suffix in (".tsv", ".txt"):
            table = pd.read_csv(path, sep="\t")
        elif suffix == ".csv":
            table = pd.read_csv(path)
        else:
            raise UserError(
                f"Clinical table '{path}' has the extension '{suffix}'; use .csv, .tsv or .parquet."
            )
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a damaged file for the user
        raise UserError(f"Cannot read the clinical table '{path}' ({exc}).") from None
    columns = ", ".join(map(str, table.columns))
    if id_column is None:
        id_column = next((c for c in ID_CANDIDATES if c in table.columns), None)
        if id_column is None:
            raise UserError(
                f"The clinical table '{path}' has no sample-id column named "
                f"{' / '.join(ID_CANDIDATES)}; its columns are: {columns}. Name the column "
                "holding the sample ids of the ranking with --id-column."
            )
    elif id_column not in table.columns:
        raise UserError(
            f"--id-column '{id_column}' is not a column of '{path}'; its columns are: {columns}."
        )
    table[id_column] = table[id_column].astype(str)
    if table[id_column].duplicated().any():
        dupes = table.loc[table[id_column].duplicated(), id_column].unique()[:5]
        raise UserError(
            f"The id column '{id_column}' of '{path}' repeats ids ({', '.join(dupes)}); keep one "
            "row per sample."
        )
    return table.set_index(id_column)


def check_columns(table: pd.DataFrame, names: list[str], option: str) -> None:
    """Refuse any of `names` (given with `option`) that is not a column of the clinical table."""
    missing = [name for name in names if name not in table.columns]
    if missing:
        raise UserError(
            f"{option} names {', '.join(repr(m) for m in missing)}, not a column of the clinical "
            f"table; its columns are: {', '.join(map(str, table.columns))}."
        )


def _pick(table: pd.DataFrame, given: str | None, candidates: tuple[str, ...], option: str) -> str:
    columns = ", ".join(map(str, table.columns))
    if given is not None:
        if given not in table.columns:
            raise UserError(
                f"{option} '{given}' is not a column of the clinical table; its columns are: "
                f"{columns}."
            )
        return given
    found = next((c for c in candidates if c in table.columns), None)
    if found is None:
        raise UserError(
            f"The clinical table has no column named {' / '.join(candidates)}; its columns are: "
            f"{columns}. Name the column with {option}."
        )
    return found


def follow_up_columns(
    table: pd.DataFrame, time: str | None = None, event: str | None = None
) -> tuple[str, str]:
    """The time and event columns: the ones named (checked), else the first usual names."""
    return (
        _pick(table, time, TIME_CANDIDATES, "--time"),
        _pick(table, event, EVENT_CANDIDATES, "--event"),
    )


def join_clinical(
    clusters: pd.DataFrame,
    clinical: pd.DataFrame,
    *,
    time: str | None = None,
    event: str | None = None,
    min_matched: int = MIN_MATCHED,
) -> tuple[pd.DataFrame, dict]:
    """Strata joined to follow-up: columns stratum, time, event + the clinical columns.

    Rows whose time or event is missing are dropped (counted); non-numeric or negative times and
    events other than 0/1 are refused. Returns the joined table and a summary of the join.
    """
    time, event = follow_up_columns(clinical, time, event)
    strata = clusters.set_index(clusters["profile"].astype(str))["cluster"]
    matched = strata.index.intersection(clinical.index)
    if len(matched) < min_matched:
        raise UserError(
            f"Only {len(matched)} of the {len(strata)} ranked samples have a row in the clinical "
            f"table (at least {min_matched} are needed). Check that --id-column holds the same "
            f"ids as the ranking's profiles (e.g. '{strata.index[0]}', clinical: "
            f"'{clinical.index[0] if len(clinical) else 'none'}')."
        )
    joined = clinical.loc[matched].copy()
    joined.insert(0, "stratum", strata.loc[matched].astype(int).to_numpy())
    times = pd.to_numeric(joined[time], errors="coerce")
    bad = joined.index[times.isna() & joined[time].notna()]
    if len(bad):
        raise UserError(
            f"The time column '{time}' holds non-numeric values (e.g. '{joined.loc[bad[0], time]}'"
            f" for {bad[0]}); give follow-up times as numbers (days, months or years)."
        )
    if (times < 0).any():
        raise UserError(
            f"The time column '{time}' holds {int((times < 0).sum())} negative times (e.g. "
            f"{times.idxmin()}); follow-up times must be zero or more."
        )
    raw_events = joined[event]
    if raw_events.dtype == bool:
        raw_events = raw_events.astype(int)
    events = pd.to_numeric(raw_events, errors="coerce")
    valid = events.isna() | events.isin([0, 1])
    if not valid.all() or (events.isna() & raw_events.notna()).any():
        odd = raw_events[~valid | (events.isna() & raw_events.notna())].unique()[:5]
        raise UserError(
            f"The event column '{event}' must be 0 (censored) or 1 (event); it holds "
            f"{', '.join(map(str, odd))}. Recode it, or name the right column with --event."
        )
    joined = joined.drop(columns=[time, event])
    joined["time"], joined["event"] = times, events
    usable = joined["time"].notna() & joined["event"].notna()
    joined = joined[usable].sort_index()
    if len(joined) < min_matched or joined["event"].sum() == 0:
        raise UserError(
            f"After dropping samples without time or event, {len(joined)} samples with "
            f"{int(joined['event'].sum())} events remain; at least {min_matched} samples and one "
            "event are needed."
        )
    summary = {
        "time_column": time,
        "event_column": event,
        "ranked": int(len(strata)),
        "matched": int(len(matched)),
        "missing_follow_up": int((~usable).sum()),
        "analysed": int(len(joined)),
        "events": int(joined["event"].sum()),
    }
    return joined, summary


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error)."""
    order = np.argsort(p)
    scaled = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(scaled, 1.0)
    return adjusted


def _design(joined: pd.DataFrame, adjust: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Cox design: stratum dummies (reference = stratum 1) + the covariates, complete cases."""
    check_columns(joined.drop(columns=["stratum", "time", "event"]), adjust, "--adjust")
    reference = int(joined["stratum"].min())
    dummies = pd.get_dummies(joined["stratum"], prefix="stratum", dtype=float)
    dummies = dummies.drop(columns=f"stratum_{reference}")
    parts = [joined[["time", "event"]], dummies]
    for name in adjust:
        column = joined[name]
        numeric = pd.to_numeric(column, errors="coerce")
        if numeric.notna().sum() == column.notna().sum() and column.nunique() > 2:
            parts.append(numeric.rename(name).to_frame())
        else:
            levels = pd.get_dummies(column.astype("string"), prefix=name, dtype=float)
            levels[column.isna().to_numpy()] = np.nan
            parts.append(levels.iloc[:, 1:])
    design = pd.concat(parts, axis=1).dropna()
    return design, list(dummies.columns)


def survival_analysis(
    joined: pd.DataFrame, adjust: list[str] | tuple[str, ...] = ()
) -> SurvivalResult:
    """KM medians, multivariate and pairwise log-rank, Cox PH of stratum (+ covariates), PH test."""
    require_lifelines()
    from lifelines import CoxPHFitter, KaplanMeierFitter
    from lifelines.exceptions import ConvergenceError
    from lifelines.statistics import (
        multivariate_logrank_test,
        pairwise_logrank_test,
        proportional_hazard_test,
    )
    from lifelines.utils import median_survival_times

    adjust = list(adjust)
    if joined["stratum"].nunique() < 2:
        raise UserError(
            f"All {len(joined)} samples with follow-up fall in stratum "
            f"{int(joined['stratum'].iloc[0])}, so there is nothing to compare. Add the clinical "
            "rows of the other strata, or choose another --k."
        )
    notes: list[str] = [NOT_K_BY_SURVIVAL]
    rows = []
    for stratum, group in joined.groupby("stratum"):
        fitter = KaplanMeierFitter().fit(group["time"], group["event"])
        median = float(fitter.median_survival_time_)
        bounds = median_survival_times(fitter.confidence_interval_).to_numpy().ravel()
        events = int(group["event"].sum())
        rows.append(
            {
                "stratum": int(stratum),
                "n": len(group),
                "events": events,
                "median_time": median if np.isfinite(median) else np.nan,
                "median_ci_lower": bounds[0] if np.isfinite(bounds[0]) else np.nan,
                "median_ci_upper": bounds[1] if np.isfinite(bounds[1]) else np.nan,
            }
        )
        if events < MIN_EVENTS_PER_STRATUM:
            notes.append(
                f"Stratum {stratum} has {events} events (< {MIN_EVENTS_PER_STRATUM}): its "
                "estimates are unstable."
            )
    per_stratum = pd.DataFrame(rows)
    overall = multivariate_logrank_test(joined["time"], joined["stratum"], joined["event"])
    pairs = pairwise_logrank_test(joined["time"], joined["stratum"], joined["event"]).summary
    pairwise = pd.DataFrame(
        {
            "stratum_a": [int(a) for a, _ in pairs.index],
            "stratum_b": [int(b) for _, b in pairs.index],
            "statistic": pairs["test_statistic"].to_numpy(),
            "p_value": pairs["p"].to_numpy(),
        }
    )
    pairwise["p_holm"] = _holm(pairwise["p_value"].to_numpy())

    design, stratum_terms = _design(joined, adjust)
    excluded = len(joined) - len(design)
    if excluded:
        notes.append(f"{excluded} samples lack a covariate of --adjust and are left out of Cox.")
    n_terms = design.shape[1] - 2
    if design["event"].sum() < 10 * n_terms:
        notes.append(
            f"The Cox model has {int(design['event'].sum())} events for {n_terms} terms "
            "(fewer than 10 per term): hazard ratios may be biased."
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cph = CoxPHFitter().fit(design, duration_col="time", event_col="event")
        except ConvergenceError:
            raise UserError(
                f"The Cox model of stratum{' + ' + ', '.join(adjust) if adjust else ''} did not "
                f"converge on {len(design)} samples with {int(design['event'].sum())} events "
                "(a term that separates events perfectly, or too many terms for the events). "
                "Adjust for fewer covariates (--adjust), or choose a smaller --k."
            ) from None
        ph = proportional_hazard_test(cph, design, time_transform="rank").summary
    for warning in caught:
        if "Convergence" in type(warning.message).__name__:
            text = str(warning.message).splitlines()[0].split(" For example")[0]
            notes.append(f"Cox fit: {text}")
    summary = cph.summary
    cox = pd.DataFrame(
        {
            "term": summary.index.astype(str),
            "hazard_ratio": summary["exp(coef)"].to_numpy(),
            "ci_lower": summary["exp(coef) lower 95%"].to_numpy(),
            "ci_upper": summary["exp(coef) upper 95%"].to_numpy(),
            "p_value": summary["p"].to_numpy(),
        }
    )
    proportional = pd.DataFrame(
        {
            "term": ph.index.astype(str),
            "statistic": ph["test_statistic"].to_numpy(),
            "p_value": ph["p"].to_numpy(),
        }
    )
    violated = proportional.loc[proportional["p_value"] < 0.05, "term"].tolist()
    if violated:
        notes.append(
            "Proportional hazards look violated (Schoenfeld residuals vs rank of time, p < 0.05) "
            f"for {', '.join(violated)}: read those hazard ratios as averages over follow-up."
        )
    by_term = cox.set_index("term")
    ph_by_term = proportional.set_index("term")["p_value"]
    reference = int(per_stratum["stratum"].min())
    for column in ("hazard_ratio", "ci_lower", "ci_upper", "p_value"):
        per_stratum[f"cox_{column}"] = [
            1.0 if column == "hazard_ratio" and s == reference else np.nan
            for s in per_stratum["stratum"]
        ]
    per_stratum["ph_p_value"] = np.nan
    for term in stratum_terms:
        row = per_stratum["stratum"] == int(term.split("_")[1])
        for column in ("hazard_ratio", "ci_lower", "ci_upper", "p_value"):
            per_stratum.loc[row, f"cox_{column}"] = by_term.loc[term, column]
        per_stratum.loc[row, "ph_p_value"] = ph_by_term.get(term, np.nan)
    per_stratum["logrank_p_value"] = float(overall.p_value)
    return SurvivalResult(
        per_stratum=per_stratum,
        pairwise=pairwise,
        cox=cox,
        proportional_hazards=proportional,
        logrank_statistic=float(overall.test_statistic),
        logrank_p=float(overall.p_value),
        n_analysed=int(len(joined)),
        n_excluded_covariates=int(excluded),
        adjust=adjust,
        warnings=notes,
    )


def categorical_columns(joined: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    """Clinical columns with 2..MAX_CATEGORIES levels (text, boolean or integer codes)."""
    names = []
    for name in joined.columns:
        if name in ("stratum", "time", "event", *exclude):
            continue
        column = joined[name].dropna()
        if not 2 <= column.nunique() <= MAX_CATEGORIES:
            continue
        numeric = pd.to_numeric(column, errors="coerce")
        if numeric.isna().any() or (numeric == numeric.round()).all():
            names.append(name)
    return names


def clinical_association(joined: pd.DataFrame, variables: list[str]) -> pd.DataFrame:
    """Per variable: stratum x level counts, Fisher (2x2) or chi-square test, BH-adjusted p."""
    from scipy.stats import chi2_contingency, false_discovery_control, fisher_exact

    check_columns(joined.drop(columns=["stratum", "time", "event"]), variables, "--associate")
    rows = []
    for name in variables:
        data = joined[["stratum", name]].dropna()
        table = pd.crosstab(data["stratum"], data[name].astype(str))
        if table.shape[0] < 2 or table.shape[1] < 2:
            continue
        if table.shape == (2, 2):
            test, p = "fisher", float(fisher_exact(table.to_numpy()).pvalue)
        else:
            test, p = "chi-square", float(chi2_contingency(table.to_numpy()).pvalue)
        counts = "; ".join(
            f"{stratum}: " + ", ".join(f"{level}={n}" for level, n in row.items())
            for stratum, row in table.iterrows()
        )
        rows.append(
            {
                "variable": name,
                "n": int(table.to_numpy().sum()),
                "test": test,
                "p_value": p,
                "counts": counts,
            }
        )
    frame = pd.DataFrame(rows, columns=["variable", "n", "test", "p_value", "counts"])
    frame.insert(4, "p_bh", false_discovery_control(frame["p_value"]) if len(frame) else [])
    return frame


def plot_kaplan_meier(joined: pd.DataFrame, path: Path, time_label: str = "time") -> Path:
    """KM curve per stratum with 95% confidence bands and numbers at risk beneath (PNG);
    mathtext is off, so a '$' in the time column's name prints as itself."""
    require_lifelines()
    import matplotlib

    matplotlib.use("Agg")
    with matplotlib.rc_context({"text.parse_math": False}):
        _draw_kaplan_meier(joined, path, time_label)
    return path


def _draw_kaplan_meier(joined: pd.DataFrame, path: Path, time_label: str) -> None:
    import matplotlib.pyplot as plt
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts

    fig, ax = plt.subplots(figsize=(7, 5))
    fitters = []
    for stratum, group in joined.groupby("stratum"):
        fitter = KaplanMeierFitter(label=f"stratum {stratum}").fit(group["time"], group["event"])
        fitter.plot_survival_function(ax=ax, ci_show=True)
        fitters.append(fitter)
    ax.set_xlabel(time_label)
    ax.set_ylabel("survival probability")
    ax.set_title("Kaplan-Meier by drug-rank stratum (95% CI)")
    add_at_risk_counts(*fitters, ax=ax, rows_to_show=["At risk"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
