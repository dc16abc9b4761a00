"""Issue 17 cost: drug pairs for one patient, K = 20 and K = 50 best drugs paired.

For each K: the K best single drugs of one profile paired with each other (K(K-1)/2 pairs),
each arm at the default pair doses (3 x 3 dose pairs), both orders: 18 FlexPert rows per pair,
scored with the 1,000-permutation null. Two models:
- the bundled demo model on the first tumour profile of examples/tcga_brca.h5ad, through
  `score_patient` (the pair time is its run record's `combinations_s`; the single-drug pass over
  the whole library is reported beside it);
- the published-size FlexPert + decoder (W1: `models.w1_bundle`, random weights in the
  published layout) with a random 4,992-drug library and a synthetic patient
  (`w1_flexpert.make_problem`), through `FlexPertRunner` and `combinations.profile_pairs`.
Writes benchmarks/sections/combinations.md (re-rendering RESULTS.md) and prints it.

Usage: python benchmarks/combinations.py [--tops 20,50] [--repeats 2] [--skip-w1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

from common import DEFAULT_WORK, add_paths, cpu_info, load_average

add_paths()

from report import write_section  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tcga_brca.h5ad"


def bundled(tops: list[int], repeats: int) -> list[dict]:
    """Pair cost on the bundled model for one TCGA profile (CPU)."""
    from unicure_rt.bundle.load import load_bundle
    from unicure_rt.patients.load import load_patient
    from unicure_rt.runtime.sessions import RuntimeOptions
    from unicure_rt.scoring.combinations import PairOptions
    from unicure_rt.scoring.options import ScoreOptions, resolve_library
    from unicure_rt.scoring.pipeline import score_patient

    bundle = load_bundle(None)
    library = resolve_library(bundle, None)
    patient = load_patient(EXAMPLE, normal_where="condition=normal")
    one = patient.tumour.index[:1]
    patient = dataclasses.replace(
        patient,
        tumour=patient.tumour.loc[one],
        normal=patient.normal.loc[one],
        obs=patient.obs.loc[one],
    )
    options = ScoreOptions(draws=1, runtime=RuntimeOptions(device="cpu"))
    rows = []
    for top in tops:
        pairs = PairOptions(top=top)
        times, singles = [], []
        for _ in range(repeats):
            result = score_patient(bundle, patient, library=library, options=options, pairs=pairs)
            times.append(result.run["timings_s"]["combinations_s"])
            singles.append(result.run["timings_s"]["scoring_s"] - times[-1])
        n_pairs = result.run["combinations"]["pairs_per_profile"][0]
        rows.append(
            _row("bundled demo model", top, n_pairs, pairs, times, singles, len(library), options)
        )
    return rows


def published_size(tops: list[int], repeats: int, work: Path) -> list[dict]:
    """Pair cost on the published-size FlexPert (W1 model, random weights, CPU)."""
    import models
    import pandas as pd
    from w1_flexpert import make_library, make_problem

    from unicure_rt.runtime.sessions import RuntimeOptions, create_session
    from unicure_rt.scoring.combinations import PairOptions, profile_pairs
    from unicure_rt.scoring.options import ScoreOptions
    from unicure_rt.scoring.pipeline import _profile_ranking
    from unicure_rt.scoring.runner import FlexPertRunner

    paths = models.w1_bundle(work)
    session, _ = create_session(paths["bundle"] / "flexpert.onnx", RuntimeOptions(device="cpu"))
    library = make_library(work, 4992)
    problem = make_problem(session, library)
    options = ScoreOptions(draws=1)
    runner = FlexPertRunner(session, library, options)
    rows = []
    for top in tops:
        pairs = PairOptions(top=top)
        times, singles = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            table, _ = _profile_ranking(
                runner,
                problem.cell,
                problem.cell[None, :],
                problem.genes,
                problem.tumour,
                problem.normal,
                options,
            )
            singles.append(time.perf_counter() - t0)
            ids = pd.DataFrame(
                {"profile": "synthetic", "sample": "synthetic", "group": None},
                index=table.index,
            )
            ids["drug_id"], ids["drug_name"] = library.ids, library.names
            ranking = pd.concat([ids, table], axis=1)
            t0 = time.perf_counter()
            found = profile_pairs(
                runner,
                problem.cell,
                problem.genes,
                problem.tumour,
                problem.normal,
                ranking,
                options,
                pairs,
            )
            times.append(time.perf_counter() - t0)
        rows.append(
            _row(
                "published-size FlexPert (W1)",
                top,
                len(found),
                pairs,
                times,
                singles,
                4992,
                options,
            )
        )
    return rows


def _row(model, top, n_pairs, pairs, times, singles, n_drugs, options) -> dict:
    flexpert_rows = n_pairs * pairs.rows_per_pair() + top * len(pairs.doses) + 1
    median = statistics.median(times)
    return {
        "model": model,
        "top": top,
        "pairs": n_pairs,
        "flexpert_rows": flexpert_rows,
        "pair_s": median,
        "pair_s_samples": [round(t, 3) for t in times],
        "rows_per_s": flexpert_rows / median,
        "singles_s": statistics.median(singles),
        "single_rows": n_drugs * len(options.doses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tops", default="20,50")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-w1", action="store_true")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args()
    tops = [int(t) for t in args.tops.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    load_before = load_average()
    rows = bundled(tops, args.repeats)
    if not args.skip_w1:
        rows += published_size(tops, args.repeats, args.work)
    cpu = cpu_info()
    command = "python benchmarks/combinations.py" + (
        f" --tops {args.tops}" if args.tops != "20,50" else ""
    )
    command += f" --repeats {args.repeats}" if args.repeats != 2 else ""
    command += " --skip-w1" if args.skip_w1 else ""
    lines = [
        "## Drug pairs (issue 17: `score --combinations` for one patient)",
        "",
        f"Run {time.strftime('%Y-%m-%dT%H:%M:%S')}, `{command}`, CPU only: {cpu['model']}, "
        f"{cpu['logical_cpus']} logical CPUs, SIMD {', '.join(cpu['simd']) or 'none listed'}; "
        f"load average before {load_before}, after {load_average()} (a shared machine: other "
        "jobs may have run). Each pair: every arm at 0.37, 1.11, 3.33 µM (9 dose pairs) x 2 "
        "orders = 18 FlexPert rows, 1,000 gene permutations, plus the K arms alone at the 3 "
        "doses and one no-drug row. Pair time = median of the repeats; the single-drug pass "
        "(whole library x 6 doses, 1 sentence draw) beside it for scale.",
        "",
        "| model | K | pairs | FlexPert rows | pairs s | rows/s | single-drug pass s (rows) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['top']} | {r['pairs']:,} | {r['flexpert_rows']:,} | "
            f"{r['pair_s']:.2f} ({', '.join(f'{t:.2f}' for t in r['pair_s_samples'])}) | "
            f"{r['rows_per_s']:,.0f} | {r['singles_s']:.2f} ({r['single_rows']:,}) |"
        )
    lines.append("")
    write_section("combinations", "\n".join(lines))
    print("\n".join(lines))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
