"""Measure the shipped normal references against true normals; write a JSON of the figures.

Reads `examples/tcga_brca.h5ad` (5 TCGA breast tumours and 5 solid-tissue normals of other
patients, obs `condition`), `singlecell/oligodendroglioma.h5ad` and
`cohorts/scanb_breast_400_log2fpkm.parquet` from the shared data folder, and the bundled model.
Writes (default `docs/normal-references.json`):

- `ranking_agreement`: per TCGA tumour, the Spearman correlation between its drug ranking
  (mean score over the doses, every library drug) with the true normals (`--normal-where
  condition=normal`: the mean of the 5 normals) and with each shipped alternative:
  `tissue:breast` (as shipped: quantile-mapped), `tissue:breast` without the quantile mapping
  (the reference's log2(nTPM + 1) subtracted as is), `tissue:gtex:breast` and `auto`;
- `auto_choice`: what `auto` picks for the 5 TCGA normals and 5 tumours, for the
  oligodendroglioma cells pooled per patient and cell type, and the share of SCAN-B tumours
  given an HPA breast reference, for `normals.AUTO_GENES` and the other gene counts tried.

Usage: python scripts/measure_normal_references.py [--data ../shared/data] [--out PATH]
       [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from unicure_rt.bundle.load import load_bundle
from unicure_rt.patients import normals
from unicure_rt.patients.load import PatientProfiles, load_patient, load_profiles
from unicure_rt.runtime.sessions import RuntimeOptions
from unicure_rt.scoring.options import ScoreOptions, resolve_library
from unicure_rt.scoring.pipeline import score_patient

REPO = Path(__file__).resolve().parents[1]
TCGA = REPO / "examples" / "tcga_brca.h5ad"
GENE_COUNTS = (50, 100, 200, 400, 700)


def _tumours(patient: PatientProfiles, keep: list[str]) -> PatientProfiles:
    return PatientProfiles(
        patient.genes,
        patient.tumour.loc[keep],
        patient.normal.loc[keep],
        patient.obs.loc[keep],
        patient.qc,
    )


def _unmapped(patient: PatientProfiles, spec: str) -> PatientProfiles:
    """`patient` with the shipped reference's log2(x + 1) as normal, not quantile-mapped."""
    column = normals.resolve_tissue(spec)
    raw = np.log2(normals.load_references().values[column].astype(float) + 1.0)
    normal = pd.DataFrame(
        [raw[patient.normal.columns].to_numpy()] * len(patient.normal),
        index=patient.normal.index,
        columns=patient.normal.columns,
    )
    return PatientProfiles(patient.genes, patient.tumour, normal, patient.obs, patient.qc)


def ranking_agreement(threads: int) -> dict:
    """Spearman of each TCGA tumour's drug scores: true normals vs each shipped alternative."""
    conditions = tcga_conditions()
    bundle = load_bundle(None)
    library = resolve_library(bundle, None)
    options = ScoreOptions(runtime=RuntimeOptions(device="cpu", threads=threads))
    scores, seconds = {}, {}
    for name, patient in conditions.items():
        t0 = time.perf_counter()
        ranking = score_patient(bundle, patient, library=library, options=options).ranking
        seconds[name] = time.perf_counter() - t0
        scores[name] = ranking.pivot(index="drug_id", columns="profile", values="score")
    truth = scores.pop("true_normals")
    agreement = {}
    for name, table in scores.items():
        per = {p: float(spearmanr(truth[p], table[p], nan_policy="omit").statistic) for p in truth}
        agreement[name] = {"per_tumour": per, "median": float(np.median(list(per.values())))}
    return {"spearman_vs_true_normals": agreement, "scoring_seconds": seconds}


def tcga_conditions() -> dict[str, PatientProfiles]:
    condition = anndata.read_h5ad(TCGA).obs["condition"]
    tumours = sorted(condition.index[condition == "tumour"])
    true = load_patient(TCGA, normal_where="condition=normal")
    breast = _tumours(load_patient(TCGA, normal="tissue:breast"), tumours)
    return {
        "true_normals": true,
        "tissue:breast": breast,
        "tissue:breast without quantile mapping": _unmapped(breast, "tissue:breast"),
        "tissue:gtex:breast": _tumours(load_patient(TCGA, normal="tissue:gtex:breast"), tumours),
        "auto": _tumours(load_patient(TCGA, normal="auto"), tumours),
    }


def auto_choice(data: Path) -> dict:
    """What `auto` picks, for every gene count of GENE_COUNTS (see the module docstring)."""
    condition = anndata.read_h5ad(TCGA).obs["condition"]
    tcga = load_profiles(TCGA).tumour
    oligo = load_profiles(
        data / "singlecell" / "oligodendroglioma.h5ad",
        sample_key=r"obs_names:^([^_]+)_",
        group_key="cell_type",
        min_cells=5,
    ).tumour
    scanb = load_profiles(data / "cohorts" / "scanb_breast_400_log2fpkm.parquet").tumour
    found = {}
    for n_genes in GENE_COUNTS:

        def pick(frame: pd.DataFrame, n=n_genes) -> dict:
            return {str(p): normals.choose_tissue(row, n) for p, row in frame.iterrows()}

        tcga_picks = pick(tcga)
        scanb_picks = pick(scanb)
        breast = sum(c["reference"] == "hpa:breast" for c in scanb_picks.values())
        found[str(n_genes)] = {
            "tcga_normals": {p: c for p, c in tcga_picks.items() if condition[p] == "normal"},
            "tcga_tumours": {p: c for p, c in tcga_picks.items() if condition[p] == "tumour"},
            "oligodendroglioma": pick(oligo),
            "scanb_share_breast": breast / len(scanb_picks),
            "scanb_top_picks": pd.Series([c["reference"] for c in scanb_picks.values()])
            .value_counts()
            .head(5)
            .to_dict(),
        }
    return {"shipped_n_genes": normals.AUTO_GENES, "by_n_genes": found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "normal-references.json")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    t0 = time.perf_counter()
    result = {
        "command": "python scripts/measure_normal_references.py"
        + (f" --threads {args.threads}" if args.threads != 1 else ""),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "auto_choice": auto_choice(args.data),
        "ranking_agreement": ranking_agreement(args.threads),
    }
    result["total_seconds"] = time.perf_counter() - t0
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
