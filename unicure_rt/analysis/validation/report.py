"""The outputs of `validate --out DIR`: validation.json, summary.md, summary.html, one PNG per
suite and run.json, all written into a staged folder that appears whole or not at all.

validation.json holds every figure, the options, seeds and the sha256 of the bundle, library,
data files and patient file; it has no time stamps or machine paths, so identical inputs give
an identical file. run.json adds the paths, versions, providers and timings. Figures are drawn
with matplotlib's Agg backend and mathtext off (drug and cell line names are data).
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import pandas as pd

from unicure_rt.outputs import staged_output_dir

PLOTS = {
    "sensitivity": "sensitivity_scatter.png",
    "signatures": "signatures_agreement.png",
    "classes": "classes_auroc.png",
}
TITLES = {
    "sensitivity": "Sensitivity: scores vs measured GDSC2 drug sensitivity of cell lines",
    "signatures": "Signatures: predicted effects vs measured L1000 consensus signatures",
    "classes": "Drug classes: antineoplastics (ATC L01) in patients' rankings",
}


def clean(value):
    """JSON-ready copy: NaN/inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA:
        return None
    return value


def summary_frame(suite: dict) -> pd.DataFrame:
    return pd.DataFrame(suite["summary"])


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:+.{digits}f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _p(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.3g}"


def figure_rows(suite: dict) -> list[dict]:
    """One display row per (metric, method): mean, 95% CI, median, p, units."""
    return [
        {
            "figure": row["metric"],
            "method": row["method"],
            "mean": _fmt(row["mean"]),
            "95% CI": f"{_fmt(row['ci_low'])} to {_fmt(row['ci_high'])}",
            "median": _fmt(row["median"]),
            "p (shuffled labels)": _p(row["p_value"]),
            "units": str(row["n_units"]),
        }
        for row in suite["summary"]
    ]


def _suite_notes(name: str, suite: dict) -> list[str]:
    if name == "sensitivity":
        return [
            f"{suite['n_units']} cell lines x {suite['n_drugs']} library drugs screened by GDSC2 "
            f"({suite['n_drugs_with_signature']} with a measured consensus signature: the "
            f"'shared drugs'); {suite['n_genes']} genes; normals: {suite['normal_atlas']} "
            f"tissue of origin. Lines left out: {suite['units_left_out']}.",
            suite["figure"] + ".",
        ]
    if name == "signatures":
        return [
            f"{suite['n_units']} of {suite['n_consensus_compounds']} consensus compounds with a "
            f"structure ({suite['structures']}); {suite['n_lincs_structure']} have a LINCS "
            "structure (the bundled demo model's stage 2 trained on those: in-sample; the "
            "others it never saw).",
            suite["figure"] + "; 'agreement with classic' is per patient of the classes suite: "
            "Spearman of the row's scores with the classic connectivity scores (shared drugs).",
        ]
    return [
        f"{suite['n_units']} patients; {suite['n_labelled_drugs']} labelled library drugs "
        f"({suite['n_antineoplastic']} antineoplastic), {suite['n_shared_labelled']} of them "
        f"with a measured signature ('shared'); {suite['n_consensus_labelled']} labelled "
        "consensus compounds.",
        suite["figure"] + ".",
        "Pathway rows: per GDSC target pathway with at least 5 library drugs "
        f"({suite.get('pathways', {})}), the AUROC of its drugs among the library drugs GDSC "
        "annotates; descriptive (which classes a method ranks first), not a test of right or "
        "wrong.",
    ]


def markdown(record: dict) -> str:
    """summary.md: the options, then one table and one plot per suite."""
    options = record["options"]
    lines = [
        "# unicure-rt validate",
        "",
        f"Bundle `{record['bundle']['manifest_sha256'][:16]}`, library "
        f"`{record['library']['content_sha256'][:16]}` ({record['library']['n_drugs']} drugs); "
        f"effects {', '.join(options['effects'])}; doses {options['doses_uM']} µM; seed "
        f"{options['seed']}, {options['draws']} sentence draw(s); "
        f"{options['n_permutations']} label permutations, {options['n_bootstrap']} bootstrap "
        "resamples."
        + (
            " **Negative control: every signature gene-shuffled.**"
            if options["shuffle_genes"]
            else ""
        ),
        "",
        "Every figure: higher is better. p: one-sided, against the same figure with the drug "
        "labels shuffled within each unit. 'mean response' ignores the unit (cell line, "
        "compound, patient); 'random' scores at random.",
    ]
    for name, suite in record["suites"].items():
        lines += ["", f"## {TITLES[name]}", ""]
        lines += [f"- {note}" for note in _suite_notes(name, suite)]
        rows = figure_rows(suite)
        header = list(rows[0])
        lines += ["", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(row[c] for c in header) + " |" for row in rows]
        lines += ["", f"![{name}]({PLOTS[name]})"]
    return "\n".join(lines) + "\n"


def _html_table(rows: list[dict]) -> str:
    header = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row.values()) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{header}</tr>{body}</table>"


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}"
    "table{border-collapse:collapse;font-size:.85rem}th,td{border:1px solid #ddd;"
    "padding:.2rem .5rem;text-align:right}th{background:#f4f4f4}img{max-width:100%}"
    ".note{color:#555}"
)


def html_page(record: dict, out: Path) -> str:
    """summary.html: the markdown's content, self-contained (plots inlined)."""
    parts = [f"<html><head><meta charset='utf-8'><style>{STYLE}</style></head><body>"]
    parts.append("<h1>unicure-rt validate</h1>")
    options = record["options"]
    parts.append(
        f"<p class='note'>effects {html.escape(', '.join(options['effects']))}; seed "
        f"{options['seed']}; every figure: higher is better; p against shuffled drug labels."
        "</p>"
    )
    for name, suite in record["suites"].items():
        parts.append(f"<h2>{html.escape(TITLES[name])}</h2>")
        parts += [f"<p class='note'>{html.escape(n)}</p>" for n in _suite_notes(name, suite)]
        parts.append(_html_table(figure_rows(suite)))
        image = base64.b64encode((out / PLOTS[name]).read_bytes()).decode()
        parts.append(f"<p><img alt='{name}' src='data:image/png;base64,{image}'></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def draw_plots(record: dict, out: Path) -> None:
    """One PNG per suite (Agg backend, mathtext off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.parse_math": False}):
        for name, suite in record["suites"].items():
            fig = _DRAW[name](plt, suite)
            fig.tight_layout()
            fig.savefig(out / PLOTS[name], dpi=100, metadata={"Software": None})
            plt.close(fig)


def _scatter(plt, suite: dict):
    panels = suite["scatter"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        ax.scatter(panel["AUC"], panel["score"], s=10, color="tab:blue")
        ax.set_title(f"{panel['unit']} ({panel['method']})", fontsize=8, loc="left")
        ax.set_xlabel("measured AUC (lower = more sensitive)", fontsize=8)
        ax.set_ylabel("score (lower = stronger reversal)", fontsize=8)
        ax.tick_params(labelsize=7)
    return fig


def _bars(plt, suite: dict, metric: str, title: str):
    rows = [r for r in suite["summary"] if r["metric"] == metric and r["mean"] is not None]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    means = [r["mean"] for r in rows]
    low = [r["mean"] - r["ci_low"] if r["ci_low"] is not None else 0 for r in rows]
    high = [r["ci_high"] - r["mean"] if r["ci_high"] is not None else 0 for r in rows]
    ax.barh(range(len(rows)), means, xerr=[low, high], color="tab:green", capsize=2)
    ax.set_yticks(range(len(rows)), [r["method"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"{title} (mean, 95% CI)", fontsize=8)
    return fig


def _classes(plt, suite: dict):
    fig = _bars(plt, suite, "L01 AUROC", "L01 AUROC over patients")
    fig.axes[0].axvline(0.5, color="grey", lw=0.8, ls="--")
    return fig


_DRAW = {
    "sensitivity": _scatter,
    "signatures": lambda plt, suite: _bars(plt, suite, "cosine", "cosine with measured"),
    "classes": _classes,
}


def write_outputs(record: dict, run: dict, out: Path, *, force: bool, protect: list) -> Path:
    """Write validation.json, summary.md, summary.html, the plots and run.json into `out`."""
    record = clean(record)
    with staged_output_dir(out, force=force, inputs=protect, kind="validate") as staging:
        (staging / "validation.json").write_text(json.dumps(record, indent=1) + "\n")
        draw_plots(record, staging)
        (staging / "summary.md").write_text(markdown(record))
        (staging / "summary.html").write_text(html_page(record, staging))
        (staging / "run.json").write_text(json.dumps(clean(run), indent=1) + "\n")
    return out
