"""What the moving average of the stage-2 weights does to the TCGA ranking figures.

For every seed and every decay, trains stage 2 again on the stage-1 backbone of the bundle's
training run (`python -m unicure_rt.train demo --stage1-from RUN --held-out all --seed S
--s2-ema-decay D`; `none` keeps the last step's weights) and reads the run's TCGA ranking
evaluation (the L01 AUROC of the contrast and delta effects beside classic connectivity, where
the no-drug control and the near-empty compounds glycerol and mannitol rank) and its held-out
consensus cosine (the card's held-out retrain, averaged the same way) beside the mean
signature's. The bundled decay's row is read from `benchmarks/sections/seed_spread.json`
(the same command with the bundle's default decay, on the same run and seeds: identical runs),
so run `benchmarks/seed_spread.py` first. The decay is a setting of the bundled model chosen by
these figures, so the five TCGA patients are not an independent test of it.

Writes `benchmarks/sections/weight_averaging.md` and `.json`.
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
    BENCH,
    cpu_info,
    require_training_run,
    stage2_study,
    study_figures,
    write_study_json,
)
from report import write_section

FIGURES = (
    ("contrast_auroc", "L01 AUROC, contrast"),
    ("delta_auroc", "L01 AUROC, delta"),
    ("delta_no_drug_percentile", "no-drug control, share above it (delta)"),
    ("contrast_percentile_glycerol", "glycerol, share above it (contrast)"),
    ("contrast_percentile_mannitol", "mannitol, share above it (contrast)"),
    ("held_out_cosine", "held-out consensus cosine"),
    ("held_out_cosine_mean_signature", "same, mean signature"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="the bundle's run")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--decays", default="none", help="besides the bundled decay")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    decays = args.decays.split(",")
    bundled_run = require_training_run(parser, args.run)
    bundled = f"{bundled_run['demo_config']['s2_ema_decay']} (bundled)"
    spread_file = BENCH / "sections" / "seed_spread.json"
    spread = json.loads(spread_file.read_text()) if spread_file.is_file() else {}
    if spread.get("run") != str(args.run) or not set(seeds) <= set(spread.get("seeds", [])):
        parser.error(
            f"{spread_file} holds no seed spread of --run {args.run} with seeds {args.seeds}: "
            f"run `python benchmarks/seed_spread.py --run {args.run} --seeds {args.seeds}` first."
        )
    results: dict[str, dict[int, dict]] = {decay: {} for decay in decays}
    results[bundled] = {
        s: {key: spread["per_seed"][str(s)][key] for key, _ in FIGURES} for s in seeds
    }
    classic = spread["summary"]["classic_auroc"]["mean"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for seed in seeds:
            for decay in decays:
                out = Path(scratch) / f"seed-{seed}-{decay}"
                record, _ = stage2_study(
                    args.run, args.data, seed, out, "--held-out", "all", "--s2-ema-decay", decay
                )
                figures = study_figures(record)
                results[decay][seed] = {key: figures[key] for key, _ in FIGURES}
                print(f"[bench] seed {seed} decay {decay}: {results[decay][seed]}", flush=True)
    result = {
        "command": "python benchmarks/weight_averaging.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpu": cpu_info(),
        "run": str(args.run),
        "seeds": seeds,
        "per_decay": results,
        "classic_auroc": classic,
        "seconds": time.perf_counter() - start,
    }
    write_study_json("weight_averaging", result)
    rows = [
        "| decay | " + " | ".join(label for _, label in FIGURES) + " |",
        "| --- |" + " ---: |" * len(FIGURES),
    ]
    for decay in [*decays, bundled]:
        cells = []
        for key, _ in FIGURES:
            values = [results[decay][s][key] for s in seeds]
            cells.append(f"{statistics.mean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})")
        rows.append(f"| {decay} | " + " | ".join(cells) + " |")
    write_section(
        "weight_averaging",
        "## Moving average of the stage-2 weights\n\n"
        f"`{result['command']}` ({result['date']}; {result['cpu']['model']}). Stage 2 retrained "
        f"on the stage-1 backbone of `{args.run}` with seeds {', '.join(map(str, seeds))} and "
        "each decay of the moving average of its weights (`none`: the last step's weights; the "
        "bundled decay's row is read from the seed spread's identical runs, "
        "`benchmarks/sections/seed_spread.md`); "
        "TCGA figures on `examples/tcga_brca.h5ad`, 5 tumours, normals `condition=normal`, mean "
        "over patients; held-out consensus cosine from the run's one held-out retrain. Each "
        "cell: mean over seeds (each seed). Classic connectivity, which does "
        f"not depend on the model: L01 AUROC {classic:.3f}. The bundled model uses the decay "
        "chosen from these figures, so the five patients are not an independent test of it. "
        f"This command's runs took {result['seconds'] / 60:.0f} min on 2 cores.\n\n"
        + "\n".join(rows)
        + "\n",
    )


if __name__ == "__main__":
    main()
