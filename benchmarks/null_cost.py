"""The cost of the per-drug null and of the contrast effect on the W3 patient run.

Runs `unicure-rt score examples/tcga_brca.h5ad --normal-where condition=normal --quiet` in
alternating order (so that load from other jobs falls on every variant alike):
- `today`: the published effect without the null (`--effect published --permutations 0`), the
  computation of the previous release;
- `published+null`: the published effect with the default null (1,000 gene permutations);
- `contrast+null`: the contrast (one extra FlexPert row per cell) with the default null, ranked
  by z: the bundled model's default.
Writes `benchmarks/sections/null_cost.md` and `.json` with the medians, the ratios to `today`
(target: at most 2x), the CPU model and SIMD flags, and the load average around each run.

There is no one-off cost per bundle + library: the gene-permutation null is drawn from the
patient's own signature, so nothing is computed ahead or cached.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from common import BENCH, cpu_info, timed_command
from report import write_section

EXAMPLE = "examples/tcga_brca.h5ad"
VARIANTS = {
    "today": ["--effect", "published", "--rank-by", "score", "--permutations", "0"],
    "published+null": ["--effect", "published", "--rank-by", "score"],
    "contrast+null": ["--effect", "contrast", "--rank-by", "z"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    exe = shutil.which("unicure-rt") or str(Path(sys.executable).parent / "unicure-rt")
    base = [exe, "score", EXAMPLE, "--normal-where", "condition=normal", "--quiet"]
    walls: dict[str, list[float]] = {name: [] for name in VARIANTS}
    loads = []
    for _ in range(args.repeats):
        for name, extra in VARIANTS.items():
            before = os.getloadavg()[0]
            done = timed_command(base + extra)
            if done["returncode"] != 0:
                raise RuntimeError(f"{name} failed:\n{done['stderr_tail']}")
            walls[name].append(done["wall_s"])
            loads.append([round(before, 2), round(os.getloadavg()[0], 2)])
            print(f"[bench] {name}: {done['wall_s']:.2f} s", flush=True)
    medians = {name: statistics.median(values) for name, values in walls.items()}
    result = {
        "command": "python benchmarks/null_cost.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpu": cpu_info(),
        "score_command": " ".join(["unicure-rt", *base[1:]]),
        "variants": VARIANTS,
        "wall_s": walls,
        "median_wall_s": medians,
        "ratio_to_today": {name: medians[name] / medians["today"] for name in VARIANTS},
        "load_average_1min_before_after": loads,
    }
    out = BENCH / "sections"
    (out / "null_cost.json").write_text(json.dumps(result, indent=1) + "\n")
    rows = "\n".join(
        f"| {name} | `{' '.join(extra)}` | {medians[name]:.1f} | "
        f"{result['ratio_to_today'][name]:.2f}x |"
        for name, extra in VARIANTS.items()
    )
    cpu = result["cpu"]
    write_section(
        "null_cost",
        "## Cost of the null and of the contrast (W3 patient run)\n\n"
        f"`{result['command']}` ({result['date']}; {cpu['model']}, {cpu['logical_cpus']} "
        f"logical CPUs, SIMD {', '.join(cpu['simd'])}). Command: `{result['score_command']}` "
        f"plus the variant's options; median wall of {args.repeats} alternating runs "
        "(5 profiles x 4,460 drugs x 6 doses, 3 draws). Target: a patient run with the new "
        "columns within 2x of today's.\n\n"
        "| variant | options | wall s | vs today |\n| --- | --- | ---: | ---: |\n"
        f"{rows}\n\n"
        "1-minute load average before/after each run: "
        f"{', '.join(f'{a}/{b}' for a, b in loads)}. No one-off cost per bundle + library: "
        "the gene-permutation null needs nothing computed ahead.\n",
    )
    print(json.dumps(result["median_wall_s"]))


if __name__ == "__main__":
    main()
