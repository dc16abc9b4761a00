"""How much a held-out consensus compound's structure says about its measured signature.

The model card's held-out consensus target asks the model's predicted direction to beat the
mean signature on compounds held out by Tanimoto cluster. This study asks the same of
predictors that need no expression model, on the held-out compounds of the seed spread's
splits (`evaluate.joint_split`, seeds 0-4 by default, as `--held-out all` draws them):
`structure_ridge` (the unit-length training signatures regressed on structure, Tanimoto-kernel
ridge around their mean, its penalty cross-validated over training clusters), the nearest
training compound, the mean signature and the mean unit-length signature (the best single
direction for the mean cosine, which ignores structure).
The model's figure per seed is read from `benchmarks/sections/seed_spread.json` where that
study used the same split (its mean-signature figure must match this script's to 1e-9).

Writes `benchmarks/sections/structure_signal.md` and `.json` (with the seconds it took); no
training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from common import (
    BENCH,
    REPO,
    add_paths,
    cpu_info,
    seed_summary,
    seed_table,
    write_study_json,
)
from report import write_section

METHODS = (
    ("structure_ridge", "structure ridge (Tanimoto kernel, unit-length signatures)"),
    ("nearest_by_tanimoto", "nearest training compound"),
    ("mean_signature", "mean signature"),
    ("mean_unit_signature", "mean unit-length signature"),
)
SEED_SPREAD = BENCH / "sections" / "seed_spread.json"


def model_figures(seeds: list[int], mean_signature: dict[int, float]) -> dict[int, float]:
    """The model's held-out cosine per seed from the seed spread, where its split is this one."""
    if not SEED_SPREAD.is_file():
        return {}
    spread = json.loads(SEED_SPREAD.read_text())["per_seed"]
    return {
        s: spread[str(s)]["held_out_cosine"]
        for s in seeds
        if str(s) in spread
        and abs(spread[str(s)]["held_out_cosine_mean_signature"] - mean_signature[s]) < 1e-9
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--record", type=Path, default=REPO / "docs" / "training-run.json")
    args = parser.parse_args()
    if not (args.data / "l1000").is_dir():
        parser.error(f"--data {args.data} is not the shared data folder (no l1000/ in it).")
    add_paths()
    import numpy as np

    from unicure_rt.drugs.fingerprints import tanimoto_matrix
    from unicure_rt.train import data as D
    from unicure_rt.train import evaluate as E

    start = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    n_held_drugs = json.loads(args.record.read_text())["demo_config"]["n_held_drugs"]
    genes = D.landmark_genes(args.data)["symbol"].tolist()
    conditions = D.treated_data(args.data, genes).conditions
    per_seed, penalties = {}, {}
    for seed in seeds:
        train, splits = E.joint_split(conditions, tanimoto_matrix, seed, n_held_drugs)
        test, _ = splits["unseen_consensus_cluster"]
        baselines = E.signature_baselines(conditions, train, test, tanimoto_matrix, seed)
        per_seed[seed] = {name: float(np.mean(baselines.cosines[name])) for name, _ in METHODS}
        per_seed[seed]["n_test_compounds"] = len(test)
        penalties[seed] = baselines.record["structure_ridge"]["chosen"]
        print(f"[bench] seed {seed}: {json.dumps(per_seed[seed])}", flush=True)
    table = {key: {s: per_seed[s][key] for s in seeds} for key, _ in METHODS}
    columns = list(METHODS)
    model = model_figures(seeds, table["mean_signature"])
    if model:
        table["model"] = model
        columns.insert(0, ("model", "model (seed spread's held-out retrain)"))
    summary = {key: seed_summary(table[key].values()) for key, _ in columns}
    ridge_gain = [table["structure_ridge"][s] - table["mean_unit_signature"][s] for s in seeds]
    strongest = max(METHODS, key=lambda m: summary[m[0]]["mean"])
    result = {
        "command": " ".join(["python benchmarks/structure_signal.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpu": cpu_info(),
        "seeds": seeds,
        "per_seed": per_seed,
        "structure_ridge_penalty": penalties,
        "model_from_seed_spread": model,
        "summary": summary,
        "structure_ridge_minus_mean_unit_signature": ridge_gain,
        "seconds": time.perf_counter() - start,
    }
    write_study_json("structure_signal", result)
    rows = seed_table(
        "method", seeds, [(label, table[key], summary[key]) for key, label in columns]
    )
    write_section(
        "structure_signal",
        "## What structure says about held-out consensus signatures\n\n"
        f"`{result['command']}` ({result['date']}, {result['seconds']:.0f} s). Mean cosine "
        "with the measured consensus "
        "z-signature over the compounds each seed's Tanimoto-cluster split holds out "
        f"({', '.join(str(per_seed[s]['n_test_compounds']) for s in seeds)} compounds), by "
        "predictors that need no expression model"
        + (
            "; the model's row is the seed spread's held-out retrain on the same split"
            * bool(model)
        )
        + ". Structure-ridge penalty chosen per seed by cross-validation over training "
        "clusters: "
        + ", ".join(f"{penalties[s]:g}" for s in seeds)
        + ".\n\n"
        + "\n".join(rows)
        + "\n\n"
        "What structure adds to the direction every compound shares (structure ridge minus "
        f"mean unit-length signature): {statistics.mean(ridge_gain):+.3f} on average, ahead in "
        f"{sum(g > 0 for g in ridge_gain)} of {len(seeds)} seeds. Strongest "
        f"predictor without an expression model, mean over seeds: {strongest[1]} "
        f"({summary[strongest[0]]['mean']:.3f}).\n",
    )


if __name__ == "__main__":
    main()
