"""The two effects x two rankings on the TCGA breast example: what each ranking means.

For `--effect published` and `--effect contrast`, ranked by `score` and by `z` (the drug's
gene-permutation null), on the 5 tumours of `examples/tcga_brca.h5ad` against their 5 normals
with the bundled model and library (6 doses, 3 draws, seed 0, 1,000 permutations):
- L01 AUROC: antineoplastics (ATC L01, an evaluation label never used by any score) against
  the other labelled drugs (650 of the library's 4,460 carry the flag), per patient, and its
  mean;
- the share of the variance of `score` over (patient, drug) that is a per-patient constant;
- how alike the patients' lists are: mean pairwise Jaccard overlap of their top 50;
- where near-empty fingerprints (glycerol, mannitol, lithium chloride) rank, and the rank the
  no-drug prediction (the 528-zero control vector) would take among the library's scores;
- the share of drugs with BH FDR < 0.05 per patient.
Writes `benchmarks/sections/effects.md` and `.json`. `python benchmarks/effects.py`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time

import numpy as np
import pandas as pd
from common import BENCH, REPO, cpu_info
from report import write_section
from sklearn.metrics import roc_auc_score

NO_DRUG_LIKE = ("glycerol", "mannitol", "lithium chloride")
TOP = 50


def with_control_row(library):
    """The library plus one row of zeros: at dose 0 its drug vector is the control vector."""
    emb = np.concatenate([library.embeddings, np.zeros((1, library.dim), np.float32)])
    metadata = pd.concat(
        [library.metadata, pd.DataFrame([{"drug_id": "NO-DRUG", "antineoplastic": False}])],
        ignore_index=True,
    )
    return dataclasses.replace(
        library,
        ids=[*library.ids, "NO-DRUG"],
        names=[*library.names, "(no drug)"],
        metadata=metadata,
        _embeddings=emb,
        _lookup=None,
    )


def summarise(ranking: pd.DataFrame, rank_by: str) -> dict:
    per_patient, tops, fdr_share = [], [], []
    for _, rows in ranking.groupby("profile", sort=False):
        scored = rows[rows[rank_by].notna()]
        labelled = scored[scored["antineoplastic"].notna()]
        flags = labelled["antineoplastic"].astype(bool)
        per_patient.append(float(roc_auc_score(flags, -labelled[rank_by])))
        order = scored.sort_values(rank_by, kind="stable")
        tops.append(set(order["drug_id"].head(TOP)))
        fdr_share.append(float((rows["fdr"] < 0.05).mean()))
    jaccard = [len(a & b) / len(a | b) for a, b in itertools.combinations(tops, 2)]
    return {
        "l01_auroc_per_patient": per_patient,
        "l01_auroc_mean": float(np.mean(per_patient)),
        "top50_jaccard_mean": float(np.mean(jaccard)),
        "share_fdr_below_0.05": fdr_share,
    }


def control_ranks(ranking: pd.DataFrame, no_drug: pd.Series) -> dict:
    """Per patient, the rank by score of near-empty fingerprints, and the rank the no-drug
    prediction would take among the library (`no_drug`: its score per profile; NaN =
    unscorable, shown as None)."""
    found: dict[str, list] = {"(no drug)": []}
    for profile, rows in ranking.groupby("profile", sort=False):
        control = no_drug.get(profile, np.nan)
        found["(no drug)"].append(
            None if np.isnan(control) else int(1 + (rows["score"] < control).sum())
        )
        for name in NO_DRUG_LIKE:
            hit = rows[rows["drug_name"].str.lower() == name]
            found.setdefault(name, []).append("absent" if hit.empty else int(hit["rank"].min()))
    return found


def main() -> None:
    sys.path.insert(0, str(REPO))
    from unicure_rt.bundle.load import load_bundle
    from unicure_rt.patients.load import load_patient
    from unicure_rt.scoring.options import ScoreOptions, resolve_library
    from unicure_rt.scoring.pipeline import score_patient

    bundle = load_bundle()
    library = resolve_library(bundle, None)
    patient = load_patient(REPO / "examples" / "tcga_brca.h5ad", normal_where="condition=normal")
    result: dict = {
        "command": "python benchmarks/effects.py",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpu": cpu_info(),
        "bundle_manifest_sha256": bundle.sha256,
        "effects": {},
    }
    for effect in ("published", "contrast"):
        t0 = time.perf_counter()
        options = ScoreOptions(effect=effect)
        ranking = score_patient(bundle, patient, library=library, options=options).ranking
        scores = ranking.pivot(index="profile", columns="drug_id", values="score")
        total = np.nanvar(scores.to_numpy())
        between = np.nanvar(np.nanmean(scores.to_numpy(), axis=1))
        at_dose_0 = score_patient(
            bundle,
            patient,
            library=with_control_row(library),
            options=dataclasses.replace(options, doses=(0.0,), permutations=0),
        ).ranking
        no_drug = at_dose_0[at_dose_0["drug_id"] == "NO-DRUG"].set_index("profile")["score"]
        result["effects"][effect] = {
            "seconds": time.perf_counter() - t0,
            "per_patient_constant_variance_share": float(between / total),
            "by": {by: summarise(ranking, by) for by in ("score", "z")},
            "control_ranks_by_score": control_ranks(ranking, no_drug),
        }
        print(effect, json.dumps(result["effects"][effect]["by"]), flush=True)
    (BENCH / "sections" / "effects.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "## Two effects x two rankings (TCGA breast example)",
        "",
        f"`{result['command']}` ({result['date']}; {result['cpu']['model']}; bundle manifest "
        f"{bundle.sha256[:12]}). 5 tumours against their 5 normals, 4,460 drugs, 6 doses, "
        "3 draws, 1,000 permutations.",
        "",
        "| effect | rank by | L01 AUROC (mean of 5) | per patient | top-50 Jaccard between "
        "patients | drugs with FDR < 0.05 |",
        "| --- | --- | ---: | --- | ---: | --- |",
    ]
    for effect, found in result["effects"].items():
        for by, s in found["by"].items():
            lines.append(
                f"| {effect} | {by} | {s['l01_auroc_mean']:.3f} | "
                f"{', '.join(f'{a:.3f}' for a in s['l01_auroc_per_patient'])} | "
                f"{s['top50_jaccard_mean']:.3f} | "
                f"{', '.join(f'{100 * x:.0f}%' for x in s['share_fdr_below_0.05'])} |"
            )
    lines += [
        "",
        "| effect | score variance that is a per-patient constant | rank by score per patient "
        "(- = unscorable; absent = not in the library) |",
        "| --- | ---: | --- |",
    ]
    for effect, found in result["effects"].items():
        ranks = "; ".join(
            f"{name}: {', '.join('-' if r is None else str(r) for r in values)}"
            for name, values in found["control_ranks_by_score"].items()
        )
        lines.append(
            f"| {effect} | {100 * found['per_patient_constant_variance_share']:.1f}% | {ranks} |"
        )
    write_section("effects", "\n".join(lines))


if __name__ == "__main__":
    main()
