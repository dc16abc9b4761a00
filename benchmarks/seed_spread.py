"""How much the bundled model's TCGA ranking figures move with the stage-2 seed alone.

For every seed, trains stage 2 again on the stage-1 backbone of the bundle's training run
(`python -m unicure_rt.train demo --stage1-from RUN --held-out all --seed S`), exports a
bundle into a scratch folder and reads the run's TCGA ranking evaluation (L01 AUROC of the
contrast and delta effects, the classic connectivity baseline, where the no-drug control and the
near-empty compounds rank) and its held-out consensus evaluation (the card's one held-out retrain,
without a tenth of the consensus compounds held out by Tanimoto cluster and the plate's held-out
drugs and doses: cosine of the predicted effect with the measured signature, beside the
mean-signature baseline). The bundle's own figure is one
draw from this spread: with 46 antineoplastics among 650 flagged drugs and five patients, a
difference from the classic baseline smaller than the spread says nothing about the model.

The bundle's own seed must reproduce the bundled FlexPert graph byte for byte (the script
checks it): the reused backbone and the fresh one are the same weights.

Writes `benchmarks/sections/seed_spread.md` and `.json`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import (
    cpu_info,
    require_training_run,
    seed_summary,
    seed_table,
    stage2_study,
    study_figures,
    write_study_json,
)
from report import write_section

FIGURES = (
    ("contrast_auroc", "L01 AUROC, contrast"),
    ("delta_auroc", "L01 AUROC, delta"),
    ("classic_auroc", "L01 AUROC, classic connectivity"),
    ("delta_no_drug_percentile", "no-drug control, share above it (delta)"),
    ("contrast_percentile_glycerol", "glycerol, share above it (contrast)"),
    ("contrast_percentile_mannitol", "mannitol, share above it (contrast)"),
    ("held_out_cosine", "held-out consensus cosine, model"),
    ("held_out_cosine_mean_signature", "held-out consensus cosine, mean signature"),
)


def graph_sha(bundle: Path, name: str) -> str:
    manifest = json.loads((bundle / "manifest.json").read_text())
    return manifest["files"][name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="the bundle's run")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument(
        "--bundle", type=Path, default=Path("unicure_rt/data/default_bundle"), help="for seed 0"
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    bundled = require_training_run(parser, args.run)
    per_seed, seconds = {}, {}
    reproduces = None
    with tempfile.TemporaryDirectory() as scratch:
        for seed in seeds:
            out = Path(scratch) / f"seed-{seed}"
            record, seconds[seed] = stage2_study(
                args.run, args.data, seed, out, "--held-out", "all"
            )
            per_seed[seed] = study_figures(record)
            if seed == bundled["seed"]:
                reproduces = graph_sha(out / "bundle", "flexpert.onnx") == graph_sha(
                    args.bundle, "flexpert.onnx"
                )
            print(f"[bench] seed {seed}: {json.dumps(per_seed[seed])}", flush=True)
    summary = {key: seed_summary(per_seed[s][key] for s in seeds) for key, _ in FIGURES}
    result = {
        "command": "python benchmarks/seed_spread.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpu": cpu_info(),
        "run": str(args.run),
        "stage1_seed": bundled["seed"],
        "seeds": seeds,
        "per_seed": per_seed,
        "summary": summary,
        "bundle_seed_reproduces_flexpert_graph": reproduces,
        "seconds_per_seed": seconds,
    }
    write_study_json("seed_spread", result)
    rows = seed_table(
        "figure",
        seeds,
        [(label, {s: per_seed[s][key] for s in seeds}, summary[key]) for key, label in FIGURES],
    )
    gap = summary["contrast_auroc"]["mean"] - summary["classic_auroc"]["mean"]
    ahead = sum(
        per_seed[s]["held_out_cosine"] > per_seed[s]["held_out_cosine_mean_signature"]
        for s in seeds
    )
    write_section(
        "seed_spread",
        "## Seed spread of the bundled model's TCGA figures\n\n"
        f"`{result['command']}` ({result['date']}; {result['cpu']['model']}). Stage 2 retrained "
        f"with each seed on the stage-1 backbone of `{args.run}` (seed {bundled['seed']}); "
        "TCGA figures on `examples/tcga_brca.h5ad`, 5 tumours, normals `condition=normal`, "
        "mean over patients; the held-out splits and their one retrain follow the seed. The "
        "classic baseline reads measured signatures and does not depend on the seed.\n\n"
        + "\n".join(rows)
        + "\n\n"
        f"Contrast L01 AUROC minus classic, mean over seeds: {gap:+.3f} (sd of the model's "
        f"figure {summary['contrast_auroc']['sd']:.3f}). Held-out consensus cosine above the "
        f"mean signature's in {ahead} of {len(seeds)} seeds. Seed {bundled['seed']} reproduces the "
        f"bundled FlexPert graph byte for byte: {reproduces}. About "
        f"{statistics.mean(seconds.values()):.0f} s per seed on 2 cores.\n",
    )


if __name__ == "__main__":
    main()
