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

from unicure_rt.drugs.fingerprints import STRUCTURE_GROUPS_NOTE
from unicure_rt.scoring.effects import compound_labels
from unicure_rt.scoring.results import ScoreResult, dose_label, l01_mark, top_compounds

MAX_PROFILE_PANELS = 12  # per-profile figures show the first 12 profiles; the heatmap shows all
RANKED_QUANTITY = {"score": "reversal score", "z": "z of the score against its null"}
FIGURE_CAPTIONS = {
    "top_drugs": "The {top} best compounds of each sample by {rank_by} (the first "
    f"{MAX_PROFILE_PANELS} samples).",
    "dose_curves": "Reversal score at each dose of each sample's five best compounds (the first "
    f"{MAX_PROFILE_PANELS} samples).",
    "rank_heatmap": "Rank of every compound in any sample's top {top}, in every sample; a "
    "compound under several ids takes its best-ranked id's rank.",
}
MAX_LABEL_CHARS = 28  # longer drug labels are cut in figures, so that panels do not overlap

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px
solid #ddd;padding-bottom:.2rem}table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}th{background:#f4f4f4}
td.l,th.l{text-align:left}td.l{min-width:7em}.id{white-space:nowrap}
.note{color:#666;font-size:.9rem}.warn{background:#fff4e5;
border:1px solid #f0b36a;padding:.5rem .8rem;border-radius:4px}img{max-width:100%}
"""


def _figures(
    result: ScoreResult, best: dict[str, pd.DataFrame], top: int, out: Path
) -> dict[str, Path]:
    """Draw the report's figures with mathtext off: sample ids and drug names are data, and a
    '$' in one must print as itself, not crash the figure as a formula."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.parse_math": False}):
        return _draw_figures(plt, result, best, top, out)


def _draw_figures(
    plt, result: ScoreResult, best: dict[str, pd.DataFrame], top: int, out: Path
) -> dict[str, Path]:
    """`best`: each profile's `top_compounds` table, in the ranking's profile order."""
    ranking, doses = result.ranking, result.run["doses_uM"]
    profiles = list(best)
    figures = {}

    rank_by = result.run["rank_by"]
    shown = profiles[:MAX_PROFILE_PANELS]
    fig, axes = _grid(plt, len(shown), panel_height=max(3.4, 0.25 * top + 1.2))
    for ax, profile in zip(axes, shown, strict=False):
        values = best[profile][rank_by].to_numpy(dtype=float)
        rows = np.arange(len(values))[::-1]  # the best at the top
        ax.hlines(rows, *_value_range(values), color="#e4e4e4", lw=0.8, zorder=0)
        ax.plot(values, rows, "o", color="tab:green", ms=5)
        ax.set_yticks(rows, [_short(label) for label in compound_labels(best[profile])])
        ax.set_xlim(*_value_range(values))
        ax.xaxis.set_major_locator(plt.MaxNLocator(5))
        ax.set_title(profile, fontsize=9, loc="left")
        ax.set_xlabel(
            f"{RANKED_QUANTITY[rank_by]} (lower = stronger)\n"
            "the axis spans these values; it does not start at 0",
            fontsize=8,
        )
        ax.tick_params(labelsize=7)
    figures["top_drugs"] = _save(fig, out / "top_drugs.png")

    fig, axes = _grid(plt, len(shown), panel_height=4.4)  # room for the legend below
    for ax, profile in zip(axes, shown, strict=False):
        first = best[profile].head(5)
        curves = first[[dose_label(d) for d in doses]].to_numpy()
        for label, values in zip(compound_labels(first), curves, strict=True):
            ax.plot(doses, values, "o-", label=_short(label), ms=3)
        ax.set_xscale("log")
        positive = [d for d in doses if d > 0]
        ax.set_xticks(positive, [f"{d:g}" for d in positive])
        ax.minorticks_off()
        ax.set_xlabel("dose (µM)", fontsize=8)
        ax.set_ylabel("reversal score", fontsize=8)
        ax.set_title(profile, fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(0, -0.2), ncol=2)
    figures["dose_curves"] = _save(fig, out / "dose_curves.png")
    if len(profiles) > 1:
        figures["rank_heatmap"] = _rank_heatmap(plt, ranking, best, out)
    return figures


def heatmap_ranks(ranking: pd.DataFrame, best: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Profiles x compounds in any profile's `best` table: a compound's rank is that of its
    best-ranked id; columns in order of mean log10 rank over the profiles (best first; the
    colour scale is log10 rank, and a plain mean would let one sample's rank 3000 outweigh
    the others' rank 1)."""
    union = pd.concat(best.values())["same_structure_ids"].unique()
    ranked = ranking[ranking["rank"].notna() & ranking["same_structure_ids"].isin(union)]
    matrix = ranked.pivot_table(
        index="profile", columns="same_structure_ids", values="rank", aggfunc="min"
    ).reindex(index=list(best))
    order = np.log10(matrix).mean().sort_values(kind="stable").index
    return matrix[order]


def _rank_heatmap(plt, ranking: pd.DataFrame, best: dict[str, pd.DataFrame], out: Path) -> Path:
    matrix = heatmap_ranks(ranking, best)
    compounds = pd.concat(best.values()).drop_duplicates("same_structure_ids")
    labels = compound_labels(compounds.set_index("same_structure_ids").loc[matrix.columns])
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * matrix.shape[1] + 3), 0.3 * len(matrix) + 3.2))
    values = matrix.to_numpy(dtype=float, na_value=np.nan)
    image = ax.imshow(np.log10(values), aspect="auto", cmap="viridis_r")
    ax.set_yticks(range(len(matrix)), matrix.index, fontsize=7)
    ax.set_xticks(range(matrix.shape[1]), [_short(s) for s in labels], rotation=90, fontsize=7)
    fig.colorbar(image, ax=ax, label="log10 rank")
    ax.set_title(
        "Sample x compound ranks (compounds in any sample's top list), "
        "columns ordered by mean log10 rank across samples (best first)",
        fontsize=9,
        loc="left",
    )
    return _save(fig, out / "rank_heatmap.png")


def _value_range(values: np.ndarray) -> tuple[float, float]:
    """An axis range around `values` with a margin, so that their differences show."""
    finite = values[np.isfinite(values)]
    low, high = (finite.min(), finite.max()) if len(finite) else (-1.0, 1.0)
    margin = max(0.08 * (high - low), 0.005)
    return float(low - margin), float(high + margin)


def _short(label: str) -> str:
    """A drug label cut in the middle to `MAX_LABEL_CHARS` for a figure (the tables show it
    whole): the end keeps what tells similar labels apart (an id, the 'x2' of several ids)."""
    if len(label) <= MAX_LABEL_CHARS:
        return label
    head = (MAX_LABEL_CHARS - 1) // 2
    return label[:head] + "…" + label[-(MAX_LABEL_CHARS - 1 - head) :]


def _grid(plt, n: int, panel_height: float = 3.4):
    """A figure with one panel per profile, three per row; unused panels hidden."""
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, panel_height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _table(frame: pd.DataFrame, left: tuple[str, ...] = (), markup: tuple[str, ...] = ()) -> str:
    """An HTML table of `frame`; `markup` columns hold HTML already (the rest is escaped)."""

    def cell(tag: str, column: str, value) -> str:
        css = ' class="l"' if column in left else ""
        text = value if tag == "td" and column in markup else html.escape(_fmt(value))
        return f"<{tag}{css}>{text}</{tag}>"

    head = "".join(cell("th", c, c) for c in frame.columns)
    rows = [
        "<tr>"
        + "".join(cell("td", c, v) for c, v in zip(frame.columns, values, strict=True))
        + "</tr>"
        for values in frame.itertuples(index=False)
    ]
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _id_list(ids: str) -> str:
    """`same_structure_ids` as HTML: the ids comma-separated, each kept on one line."""
    return ", ".join(f"<span class='id'>{html.escape(i)}</span>" for i in ids.split("|"))


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
    "same_structure_ids": "ids",
    "score": "score",
    "z": "z",
    "p_value": "p",
    "fdr": "FDR",
    "best_dose_uM": "best dose (µM)",
    "score_sd_across_draws": "SD across draws",
    "antineoplastic": "L01",
}


def write_report(result: ScoreResult, out: Path, *, top: int = 10) -> Path:
    """Write the figures and `report.html` into the folder `out` (which must exist)."""
    run = result.run
    best = {
        profile: top_compounds(rows, top)
        for profile, rows in result.ranking.groupby("profile", sort=False)
    }
    figures = _figures(result, best, top, out)
    sections = [
        f"<h1>unicure-rt drug ranking</h1><p class='note'>{len(run['profiles'])} profile(s) x "
        f"{run['library']['n_drugs']} drugs x {len(run['doses_uM'])} doses, seed {run['seed']}, "
        f"{run['draws']} sentence draw(s), {html.escape(run['providers']['flexpert'])}</p>",
        "<p class='warn'>Research use only. Scores are model predictions of transcriptional "
        "reversal, not evidence of clinical benefit. Read the model card of the bundle used.</p>",
        f"<p class='note'>{html.escape(scoring_note(run))}</p>",
        "<h2>Top drugs per sample</h2>",
        "<p class='note'>"
        + html.escape(
            "One row per compound: a compound the library lists under several ids shows once, "
            f"with all its ids and the values of its best-ranked id ({STRUCTURE_GROUPS_NOTE}). "
            "Ranks count ids, so they skip the other ids of such a compound. ranking.csv keeps "
            "one row per id; its column same_structure_ids names the ids of the same compound."
            + (
                " L01: an antineoplastic agent (ATC code L01), where the library says so."
                if "antineoplastic" in result.ranking
                else ""
            )
        )
        + "</p>",
    ]
    for profile, compounds in best.items():
        info = next(p for p in run["profiles"] if p["profile"] == profile)
        sections.append(
            f"<h3>{html.escape(profile)}</h3><p class='note'>normal reference: "
            f"{html.escape(info['normal_source'])}; {profile_kind(run, info)}; embedding spread "
            f"across draws: {info['embedding_spread']:.4f}</p>"
        )
        shown = compounds[[c for c in COLUMNS if c in compounds]].rename(columns=COLUMNS)
        shown["ids"] = [_id_list(ids) for ids in shown["ids"]]
        shown["best dose (µM)"] = [f"{d:g}" for d in shown["best dose (µM)"]]
        if "L01" in shown:
            shown["L01"] = [l01_mark(flag) for flag in shown["L01"]]
        sections.append(_table(shown, left=("drug", "ids"), markup=("ids",)))
    if result.combinations is not None:
        sections += _pairs_section(result.combinations, run["combinations"], top)
    sections.append("<h2>Figures</h2>")
    for name, path in figures.items():
        caption = FIGURE_CAPTIONS[name].format(top=top, rank_by=RANKED_QUANTITY[run["rank_by"]])
        sections += [f"<p class='note'>{html.escape(caption)}</p>", _img(path, name)]
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
            (p["profile"], p["sample"], p["group"] or "", profile_kind(run, p), p["normal_source"])
            for p in run["profiles"]
        ],
        columns=["profile", "sample", "group", "profile of", "normal reference"],
    )
    return [
        _table(checks, left=("check", "value")),
        _table(profiles, left=("profile", "sample", "group", "normal reference")),
    ]


def profile_kind(run: dict, profile: dict) -> str:
    """What a profile was made of: a bulk sample, or the number of cells pooled into it."""
    if run["input_qc"].get("profiles", {}).get("bulk"):
        return "bulk sample"
    return f"{profile['n_cells']} cells"
