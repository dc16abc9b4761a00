"""The `stratify` report: one self-contained HTML page (figures inlined, nothing fetched).

Reads the `Strata` of a run, the PNG figures already written into its output folder and, with
`--clinical`, the `Outcome` (survival, Cox, pairwise log-rank, clinical association); writes
`report.html` into that folder. Styles and table formatting are those of the `score` report.
"""

from __future__ import annotations

import html
from pathlib import Path

from unicure_rt.analysis.outcome import Outcome, cox_table
from unicure_rt.analysis.stratify import Strata
from unicure_rt.scoring.effects import drug_labels
from unicure_rt.scoring.report import STYLE, _img, _table

FIGURE_TITLES = {
    "k_selection.png": "k selection (inertia and silhouette)",
    "pca_clusters.png": "samples by drug-rank profile (PCA)",
    "differential_drugs.png": "most differential drugs",
}


def write_stratify_report(
    strata: Strata, folder: Path, *, top: int, outcome: Outcome | None = None
) -> Path:
    """Write `report.html` into `folder`, which already holds the stratify figures."""
    counts = strata.clusters["cluster"].value_counts().sort_index()
    sections = [
        "<h1>unicure-rt patient strata</h1>",
        f"<p class='note'>{len(strata.clusters)} samples, k = {strata.k} strata "
        f"({', '.join(f'{c}: {n}' for c, n in counts.items())} samples), chosen by the best "
        "silhouette of k-means on standardised log10 drug ranks (or given with --k).</p>",
        "<p class='warn'>Research use only. Strata come from predicted drug ranks, not from "
        "measured drug response.</p>",
        "<h2>k selection</h2>",
        _table(strata.k_selection),
        "<h2>Most differential drugs</h2>",
    ]
    best = strata.differential.nsmallest(top, "p_value")
    shown = best[["cluster", "log2_fold_change", "p_value", "fdr"]].copy()
    shown.insert(1, "drug", drug_labels(best))
    sections.append(_table(shown, left=("drug",)))
    sections.append("<h2>Figures</h2>")
    sections += [_img(folder / name, title) for name, title in FIGURE_TITLES.items()]
    if outcome is not None:
        sections += _outcome_section(outcome, folder)
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>unicure-rt strata</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )
    path = folder / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _outcome_section(outcome: Outcome, folder: Path) -> list[str]:
    join, result = outcome.join, outcome.survival
    adjusted = ", ".join(result.adjust) if result.adjust else "nothing"
    return [
        "<h2>Outcome of the strata</h2>",
        f"<p class='note'>Clinical table {html.escape(outcome.options.path.name)} (sha256 "
        f"{outcome.sha256[:16]}...): {join['matched']} of {join['ranked']} ranked samples "
        f"matched, {join['missing_follow_up']} without follow-up, {join['analysed']} analysed "
        f"with {join['events']} events; time column {html.escape(join['time_column'])}, event "
        f"column {html.escape(join['event_column'])}.</p>",
        "".join(f"<p class='warn'>{html.escape(note)}</p>" for note in result.warnings),
        f"<p>Multivariate log-rank across strata: chi2 = {result.logrank_statistic:.3g}, "
        f"p = {result.logrank_p:.3g}.</p>",
        _img(folder / "km.png", "Kaplan-Meier curves by stratum"),
        f"<h3>Per stratum (Cox hazard ratio vs stratum 1, adjusted for {html.escape(adjusted)})"
        "</h3>",
        _table(result.per_stratum),
        "<h3>Cox model with proportional-hazards test</h3>",
        _table(cox_table(result), left=("term",)),
        "<h3>Pairwise log-rank (Holm-adjusted)</h3>",
        _table(result.pairwise),
        "<h3>Association with categorical clinical variables (BH-adjusted)</h3>",
        _table(outcome.association, left=("variable", "test", "counts")),
    ]
