"""`score --report`: a self-contained HTML page (figures inlined) and the figures as PNG files.

Reads a `ScoreResult` (ranking + run record); writes `report.html`, `top_drugs.png`,
`dose_curves.png` and, for cohorts, `rank_heatmap.png`. Nothing is fetched when the page is
opened: styles and images are embedded.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from unicure_rt.score import ScoreResult, dose_label, ranked_top
from unicure_rt.scoring import drug_labels

MAX_PROFILE_PANELS = 12  # per-profile figures show the first 12 profiles; the heatmap shows all

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px
solid #ddd;padding-bottom:.2rem}table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}th{background:#f4f4f4}
td.l,th.l{text-align:left}.note{color:#666;font-size:.9rem}.warn{background:#fff4e5;
border:1px solid #f0b36a;padding:.5rem .8rem;border-radius:4px}img{max-width:100%}
"""


def _figures(result: ScoreResult, top: int, out: Path) -> dict[str, Path]:
    """Draw the report's figures with mathtext off: sample ids and drug names are data, and a
    '$' in one must print as itself, not crash the figure as a formula."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.parse_math": False}):
        return _draw_figures(plt, result, top, out)


def _draw_figures(plt, result: ScoreResult, top: int, out: Path) -> dict[str, Path]:
    ranking, doses = result.ranking, result.run["doses_uM"]
    profiles = list(dict.fromkeys(ranking["profile"]))
    figures = {}

    shown = profiles[:MAX_PROFILE_PANELS]
    fig, axes = _grid(plt, len(shown))
    for ax, profile in zip(axes, shown, strict=False):
        best = ranked_top(ranking[ranking["profile"] == profile], top)
        names = drug_labels(best)[::-1]
        ax.barh(names, best["score"].to_numpy()[::-1], color="tab:green")
        ax.set_title(profile, fontsize=9, loc="left")
        ax.set_xlabel("reversal score (lower = stronger)", fontsize=8)
        ax.tick_params(labelsize=7)
    figures["top_drugs"] = _save(fig, out / "top_drugs.png")

    fig, axes = _grid(plt, len(shown))
    for ax, profile in zip(axes, shown, strict=False):
        best = ranked_top(ranking[ranking["profile"] == profile], min(top, 5))
        curves = best[[dose_label(d) for d in doses]].to_numpy()
        for label, values in zip(drug_labels(best), curves, strict=True):
            ax.plot(doses, values, "o-", label=label, ms=3)
        ax.set_xscale("log")
        ax.set_xlabel("dose (µM)", fontsize=8)
        ax.set_ylabel("reversal score", fontsize=8)
        ax.set_title(profile, fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False)
    figures["dose_curves"] = _save(fig, out / "dose_curves.png")
    if len(profiles) > 1:
        union = ranking[ranking["rank"].le(top).fillna(False)]["drug_id"].unique()
        matrix = ranking[ranking["drug_id"].isin(union)].pivot_table(
            index="profile", columns="drug_id", values="rank", aggfunc="first"
        )
        names = ranking.drop_duplicates("drug_id").set_index("drug_id")
        height = 0.3 * len(profiles) + 2.2
        fig, ax = plt.subplots(figsize=(max(5, 0.35 * matrix.shape[1] + 3), height))
        values = matrix.to_numpy(dtype=float, na_value=np.nan)
        image = ax.imshow(np.log10(values), aspect="auto", cmap="viridis_r")
        ax.set_yticks(range(len(matrix)), matrix.index, fontsize=7)
        labels = drug_labels(names.loc[matrix.columns].reset_index())
        ax.set_xticks(range(matrix.shape[1]), labels, rotation=90, fontsize=7)
        fig.colorbar(image, ax=ax, label="log10 rank")
        ax.set_title("Sample x drug ranks (drugs in any sample's top list)")
        figures["rank_heatmap"] = _save(fig, out / "rank_heatmap.png")
    return figures


def _grid(plt, n: int):
    """A figure with one panel per profile, three per row; unused panels hidden."""
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _table(frame: pd.DataFrame, left: tuple[str, ...] = ()) -> str:
    def cell(tag: str, column: str, value) -> str:
        css = ' class="l"' if column in left else ""
        return f"<{tag}{css}>{html.escape(_fmt(value))}</{tag}>"

    head = "".join(cell("th", c, c) for c in frame.columns)
    rows = [
        "<tr>"
        + "".join(cell("td", c, v) for c, v in zip(frame.columns, values, strict=True))
        + "</tr>"
        for values in frame.itertuples(index=False)
    ]
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _fmt(value) -> str:
    if isinstance(value, float | np.floating):
        return "" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


COLUMNS = {
    "rank": "rank",
    "drug_name": "drug",
    "drug_id": "id",
    "score": "score",
    "z": "z",
    "p_value": "p",
    "fdr": "FDR",
    "best_dose_uM": "best dose (µM)",
    "score_sd_across_draws": "SD across draws",
}


def write_report(result: ScoreResult, out: Path, *, top: int = 10) -> Path:
    """Write the figures and `report.html` into the folder `out` (which must exist)."""
    run = result.run
    figures = _figures(result, top, out)
    sections = [
        f"<h1>unicure-rt drug ranking</h1><p class='note'>{len(run['profiles'])} profile(s) x "
        f"{run['library']['n_drugs']} drugs x {len(run['doses_uM'])} doses, seed {run['seed']}, "
        f"{run['draws']} sentence draw(s), {html.escape(run['providers']['flexpert'])}</p>",
        "<p class='warn'>Research use only. Scores are model predictions of transcriptional "
        "reversal, not evidence of clinical benefit. Read the model card of the bundle used.</p>",
        f"<p class='note'>{html.escape(scoring_note(run))}</p>",
        "<h2>Top drugs per sample</h2>",
    ]
    for profile, rows in result.ranking.groupby("profile", sort=False):
        info = next(p for p in run["profiles"] if p["profile"] == profile)
        sections.append(
            f"<h3>{html.escape(profile)}</h3><p class='note'>normal reference: "
            f"{html.escape(info['normal_source'])}; cells: {info['n_cells']}; embedding spread "
            f"across draws: {info['embedding_spread']:.4f}</p>"
        )
        shown = ranked_top(rows, top)[[c for c in COLUMNS if c in rows]].rename(columns=COLUMNS)
        shown["best dose (µM)"] = [f"{d:g}" for d in shown["best dose (µM)"]]
        sections.append(_table(shown, left=("drug", "id")))
    if result.combinations is not None:
        sections += _pairs_section(result.combinations, run["combinations"], top)
    sections.append("<h2>Figures</h2>")
    sections += [_img(path, name) for name, path in figures.items()]
    sections += ["<h2>Input QC</h2>", *_qc_tables(run)]
    provenance = {
        k: run.get(k)
        for k in ("unicure_rt", "versions", "bundle", "library", "inputs", "timings_s")
    }
    sections += [
        "<h2>Provenance</h2>",
        f"<pre>{html.escape(json.dumps(provenance, indent=1, default=str))}</pre>",
    ]
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>unicure-rt report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


PAIR_COLUMNS = {
    "rank": "rank",
    "drug_a_name": "drug A",
    "drug_b_name": "drug B",
    "score": "score",
    "fdr": "FDR",
    "additive_score": "additive",
    "synergy": "synergy",
    "best_single_score": "best single",
    "order_difference": "order difference",
    "best_dose_a_uM": "dose A (µM)",
    "best_dose_b_uM": "dose B (µM)",
}


def _pairs_section(table: pd.DataFrame, record: dict, top: int) -> list[str]:
    """The top-pairs tables (`score --combinations`), headed by what the columns mean and the
    warning that pair predictions are extrapolations."""
    doses = ", ".join(f"{d:g}" for d in record["doses_uM"])
    sections = [
        "<h2>Top drug pairs per sample</h2>",
        f"<p class='warn'>{html.escape(record['note'])}</p>",
        "<p class='note'>"
        + html.escape(
            f"Each sample's {record['top']} best distinct single drugs"
            + (f" and {', '.join(record['partners'])}" if record["partners"] else "")
            + f" paired with each other; each arm at {doses} µM, every dose of one arm with "
            "every dose of the other, both orders predicted and averaged; scored like a single "
            "drug. additive = the sum of the two drugs' predicted effects, scored the same way; "
            "synergy = score - additive (negative = more reversal than the sum); best single = "
            "the better arm alone on the same doses; order difference = score of A then B "
            "minus B then A (large values: the model disagrees with itself)."
        )
        + "</p>",
    ]
    for profile, rows in table.groupby("profile", sort=False):
        best = rows[rows["rank"].le(top).fillna(False)]
        shown = best[[c for c in PAIR_COLUMNS if c in best]].rename(columns=PAIR_COLUMNS)
        for arm in ("a", "b"):
            names = best[f"drug_{arm}_name"].where(best[f"drug_{arm}_name"].notna(), None)
            shown[f"drug {arm.upper()}"] = [
                name or drug_id for name, drug_id in zip(names, best[f"drug_{arm}_id"], strict=True)
            ]
        sections.append(f"<h3>{html.escape(profile)}</h3>")
        sections.append(_table(shown, left=("drug A", "drug B")))
    return sections


def scoring_note(run: dict) -> str:
    """One paragraph on what the score, z, p and FDR columns mean for this run."""
    effect = {
        "published": "the published formula: Pearson correlation over the output genes of the "
        "predicted change pred - tumour with the signature tumour - normal (it carries the "
        "model's platform offset, the same for every drug)",
        "contrast": "the contrast: Pearson correlation over the output genes of pred(drug) - "
        "pred(no drug), the model's own prediction without a drug for the same cell, with the "
        "signature tumour - normal",
    }[run["effect"]]
    text = f"Score = mean over the doses of {effect}; lower = stronger predicted reversal."
    permutations = run.get("null", {}).get("permutations")
    if permutations:
        text += (
            f" z and p compare each drug's score with its scores against {permutations} "
            "copies of the signature with its values shuffled over the genes (one-sided p of "
            "reversal, (1 + count at or below) / (permutations + 1)); FDR is Benjamini-Hochberg "
            "over the drugs of the sample."
        )
    return text + f" Ranked by {run['rank_by']}; ties share the lower rank."


def _qc_tables(run: dict) -> list[str]:
    coverage, source = run["gene_coverage"], run["input_qc"].get("input", {})
    checks = pd.DataFrame(
        [
            (
                "output genes measured",
                f"{coverage['output_genes_present']} of {coverage['output_genes_total']}",
            ),
            (
                "vocabulary genes measured",
                f"{coverage['vocabulary_genes_present']} of {coverage['vocabulary_genes_total']}",
            ),
            ("value kind detected", str(source.get("value_kind"))),
            ("conversion", str(source.get("conversion"))),
        ],
        columns=["check", "value"],
    )
    profiles = pd.DataFrame(
        [
            (p["profile"], p["sample"], p["group"] or "", p["n_cells"], p["normal_source"])
            for p in run["profiles"]
        ],
        columns=["profile", "sample", "group", "cells", "normal reference"],
    )
    return [
        _table(checks, left=("check", "value")),
        _table(profiles, left=("profile", "sample", "group", "normal reference")),
    ]
