"""Cost of this round's new work (issue 22): `validate` end to end, `--normal auto` beside the
other normal references, and SCAN-B's tumours end to end (patients per hour on this machine).

Every measurement is a whole process under /usr/bin/time -v (wall, CPU user + system, peak
RSS) that writes its output folder into a temporary folder (its run.json gives the stage
timings), with the 1-, 5- and 15-minute load average (`uptime`) before and after:
- validate: the README's command, `--validate-repeats` times;
- normals: `score examples/tcga_brca.h5ad` with `--normal-where condition=normal`,
  `--normal tissue:breast` and `--normal auto`, in turn, `--repeats` rounds;
- SCAN-B: `score --normal tissue:breast` with the default settings on N tumours of
  `scanb_breast_400_log2fpkm.parquet`, for each N of `--scanb-sizes` (a temporary Parquet file,
  deleted afterwards), and the straight line through (N, wall) extrapolated to the 400 (or,
  with 400 among the sizes, the whole cohort measured: `--scanb-sizes 10,20,400`, about 20 min).
The contrast effect, the per-drug null and the drug pairs have their own sections
(`benchmarks/null_cost.py`, `benchmarks/combinations.py`). Writes `benchmarks/sections/costs.md`
and `.json`.

Usage: python benchmarks/costs.py [--repeats 2] [--validate-repeats 1] [--scanb-sizes 10,20]
       python benchmarks/costs.py --render   # the section again from costs.json, no measuring
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from common import BENCH, REPO, cpu_info, load_average, timed_command
from report import write_section

EXAMPLE = "examples/tcga_brca.h5ad"
SCANB = "cohorts/scanb_breast_400_log2fpkm.parquet"
SCANB_TUMOURS = 400
VALIDATE = [
    "validate",
    "--data-dir",
    "{data}",
    "--patients",
    EXAMPLE,
    "--normal-where",
    "condition=normal",
    "--effect",
    "published,contrast",
    "--rank-by",
    "score,z",
]
NORMALS = {
    "--normal-where condition=normal": ["--normal-where", "condition=normal"],
    "--normal tissue:breast": ["--normal", "tissue:breast"],
    "--normal auto": ["--normal", "auto"],
}
FLOOR_TUMOURS = 2
"""Tumours holding the cohort's lowest value that every SCAN-B subset includes: `score` reads a
table as log2(x + c) only when at least two values share its minimum (the zeros' floor)."""


def heavy_processes(min_cpu: float = 50.0) -> list[str]:
    """`ps` lines (%CPU, command) of the processes averaging at least `min_cpu`% of a CPU: the
    other jobs that share the machine while the script runs (this process left out)."""
    out = subprocess.run(
        ["ps", "-eo", "pid=,pcpu=,args=", "--sort=-pcpu"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    found = []
    for line in out.splitlines():
        pid, pcpu, args = line.split(maxsplit=2)
        if float(pcpu) >= min_cpu and int(pid) != os.getpid():
            found.append(f"{pcpu}% {args.strip()[:70]}")
    return found


def shown(cmd: list[str]) -> str:
    return " ".join(["unicure-rt", *cmd])


def measure(exe: str, cmd: list[str], out: Path) -> dict:
    """One whole process of `unicure-rt cmd --out out`: times, peak RSS, load and run.json."""
    before = load_average()
    done = timed_command([exe, *cmd, "--out", str(out)])
    after = load_average()
    if done["returncode"] != 0:
        raise RuntimeError(f"{shown(cmd)} failed:\n{done['stderr_tail']}")
    run = json.loads((out / "run.json").read_text())
    profiles = run.get("profiles", [])
    found = {
        "wall_s": done["wall_s"],
        "cpu_s": done["cpu_s"],
        "peak_rss_mib": done["peak_rss_mib"],
        "load_average_before": before,
        "load_average_after": after,
        "timings_s": run["timings_s"],
        "n_profiles": len(profiles),
        "normal_sources": dict(Counter(p["normal_source"] for p in profiles)),
        "settings": {
            key: run.get(key) for key in ("effect", "rank_by", "null", "doses_uM", "draws")
        }
        | {"n_drugs": run.get("library", {}).get("n_drugs")},
    }
    print(
        f"[bench] {shown(cmd)}: {found['wall_s']:.1f} s wall, {found['cpu_s']:.1f} s CPU, "
        f"{found['peak_rss_mib']:.0f} MiB; load {before} -> {after}",
        flush=True,
    )
    return found


def scanb_subset(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """`n` tumours in file order: the first `FLOOR_TUMOURS` holding the cohort's minimum, then
    the first others, so the subset is read with the same log2(x + c) as the whole cohort."""
    values = table.to_numpy()
    at_floor = np.flatnonzero((values == values.min()).any(axis=1))[:FLOOR_TUMOURS]
    others = np.setdiff1d(np.arange(len(table)), at_floor)[: n - len(at_floor)]
    return table.iloc[np.sort(np.concatenate([at_floor, others]))]


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def median_stage(runs: list[dict], stage: str) -> float:
    return statistics.median(r["timings_s"].get(stage, 0.0) for r in runs)


def line_through(sizes: list[int], values: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of `values` against `sizes`."""
    slope, intercept = np.polyfit(np.asarray(sizes, float), np.asarray(values, float), 1)
    return float(intercept), float(slope)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the normal references")
    parser.add_argument("--validate-repeats", type=int, default=1)
    parser.add_argument("--scanb-sizes", default="10,20", help="tumours per SCAN-B run")
    parser.add_argument("--data-dir", default="../shared/data", help="the shared data folder")
    parser.add_argument(
        "--render", action="store_true", help="only write the section again from costs.json"
    )
    args = parser.parse_args()
    stored = BENCH / "sections" / "costs.json"
    if args.render:
        result = json.loads(stored.read_text())
    else:
        result = measure_all(args)
        stored.write_text(json.dumps(result, indent=1) + "\n")
    write_section("costs", section(result))
    print(section(result))


def measure_all(args: argparse.Namespace) -> dict:
    sizes = [int(n) for n in args.scanb_sizes.split(",")]
    exe = shutil.which("unicure-rt") or str(Path(sys.executable).parent / "unicure-rt")
    validate_cmd = [part.format(data=args.data_dir) for part in VALIDATE]
    started = time.perf_counter()
    result = {
        "command": " ".join(["python", "benchmarks/costs.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpu": cpu_info(),
        "load_average_before": load_average(),
        "heavy_processes_before": heavy_processes(),
    }
    with tempfile.TemporaryDirectory(prefix="unicure-costs-") as tmp:
        work = Path(tmp)
        result["validate"] = {
            "command": shown(validate_cmd) + " --out DIR",
            "runs": [
                measure(exe, validate_cmd, work / f"validate-{i}")
                for i in range(args.validate_repeats)
            ],
        }
        normal_runs: dict[str, list[dict]] = {name: [] for name in NORMALS}
        for round_ in range(args.repeats):
            names = list(NORMALS) if round_ % 2 == 0 else list(reversed(NORMALS))
            for name in names:
                cmd = ["score", EXAMPLE, *NORMALS[name], "--quiet"]
                normal_runs[name].append(
                    measure(exe, cmd, work / f"normal-{round_}-{list(NORMALS).index(name)}")
                )
        result["normals"] = {
            name: {"command": shown(["score", EXAMPLE, *extra, "--quiet"]) + " --out DIR"}
            | {"runs": normal_runs[name]}
            for name, extra in NORMALS.items()
        }
        cohort = pd.read_parquet(REPO / args.data_dir / SCANB)
        scanb_runs = {}
        for n in sizes:
            subset = work / f"scanb_{n}.parquet"
            scanb_subset(cohort, n).to_parquet(subset)
            scanb_runs[n] = measure(
                exe, ["score", str(subset), "--normal", "tissue:breast", "--quiet"], work / f"s{n}"
            )
    result["scanb"] = scanb_summary(scanb_runs, cohort, args.data_dir)
    result["load_average_after"] = load_average()
    result["heavy_processes_after"] = heavy_processes()
    result["wall_s"] = time.perf_counter() - started
    return result


def scanb_summary(runs: dict[int, dict], cohort: pd.DataFrame, data_dir: str) -> dict:
    sizes = sorted(runs)
    values = cohort.to_numpy()
    wall_fit = line_through(sizes, [runs[n]["wall_s"] for n in sizes])
    cpu_fit = line_through(sizes, [runs[n]["cpu_s"] for n in sizes])
    wall_400 = wall_fit[0] + wall_fit[1] * SCANB_TUMOURS
    return {
        "command": "unicure-rt score SUBSET.parquet --normal tissue:breast --quiet --out DIR",
        "cohort": str(Path(data_dir) / SCANB),
        "subset": f"the first {FLOOR_TUMOURS} tumours holding the cohort's minimum value "
        f"({values.min():g}), then the first others, in file order",
        "first_n_minimum": {
            str(n): {
                "minimum": float(values[:n].min()),
                "held_by": int((values[:n] == values[:n].min()).sum()),
            }
            for n in sizes
        },
        "runs": {str(n): runs[n] for n in sizes},
        "wall_fit_s": {"fixed": wall_fit[0], "per_tumour": wall_fit[1]},
        "cpu_fit_s": {"fixed": cpu_fit[0], "per_tumour": cpu_fit[1]},
        "per_tumour_stage_s": {
            str(n): {
                stage: runs[n]["timings_s"][stage] / n for stage in ("embedding_s", "scoring_s")
            }
            for n in sizes
        },
        "extrapolated_400": {
            "wall_s": wall_400,
            "patients_per_hour": SCANB_TUMOURS * 3600 / wall_400,
            "cpu_s": cpu_fit[0] + cpu_fit[1] * SCANB_TUMOURS,
        },
    }


def linearity(scanb: dict) -> str:
    """Whether the per-tumour work (embedding + scoring, from run.json) stays the same from the
    smallest to the largest run, and the peak RSS that the growing ranking table adds."""
    sizes = list(scanb["runs"])
    per = {n: sum(scanb["per_tumour_stage_s"][n].values()) for n in sizes}
    first, last = per[sizes[0]], per[sizes[-1]]
    change = last / first - 1
    rss = {n: scanb["runs"][n]["peak_rss_mib"] for n in sizes}
    rss_slope = (rss[sizes[-1]] - rss[sizes[0]]) / (int(sizes[-1]) - int(sizes[0]))
    verdict = (
        "the cost is linear in the tumours (the per-tumour work changes by at most 10%)"
        if abs(change) <= 0.10
        else "the per-tumour work changes by more than 10%: not linear at these sizes"
    )
    if int(sizes[-1]) >= SCANB_TUMOURS:
        rss_at_all = f"{rss[sizes[-1]]:.0f} MiB at {sizes[-1]} tumours, measured."
    else:
        extrapolated = rss[sizes[-1]] + rss_slope * (SCANB_TUMOURS - int(sizes[-1]))
        rss_at_all = (
            f"if that holds, about {extrapolated:.0f} MiB at {SCANB_TUMOURS} tumours: an "
            "extrapolation, not measured."
        )
    return (
        "Linear in the tumours? Embedding + scoring per tumour (run.json): "
        + ", ".join(f"{per[n]:.2f} s at N = {n}" for n in sizes)
        + f" ({change:+.0%}): {verdict}; the fixed part (start-up, sessions, reading) is the "
        f"line's intercept. Peak RSS grows by {rss_slope:.1f} MiB per tumour from N = "
        f"{sizes[0]} to {sizes[-1]} (the ranking table is held until it is written); " + rss_at_all
    )


def all_runs(result: dict) -> list[dict]:
    return [
        *result["validate"]["runs"],
        *(r for entry in result["normals"].values() for r in entry["runs"]),
        *result["scanb"]["runs"].values(),
    ]


def cpu_share(result: dict) -> str:
    """Range of CPU seconds / wall seconds over every measured process."""
    shares = [r["cpu_s"] / r["wall_s"] for r in all_runs(result)]
    return f"{min(shares):.2f} to {max(shares):.2f}"


def max_cpu_share(result: dict) -> float:
    return max(r["cpu_s"] / r["wall_s"] for r in all_runs(result))


def reference_counts(sources: dict[str, int]) -> list[tuple[str, int]]:
    """Profiles per reference, most used first, without `auto`'s per-profile scores."""
    counts = Counter()
    for source, n in sources.items():
        counts[source.split(" (")[0]] += n
    return counts.most_common()


def section(result: dict) -> str:
    cpu = result["cpu"]
    validate = result["validate"]
    v_runs = validate["runs"]
    lines = [
        "## Cost of this round's new work (issue 22: validate, --normal auto, SCAN-B)",
        "",
        f"`{result['command']}` ({result['date']}, {result['wall_s'] / 60:.0f} min; "
        f"{cpu['model']}, {cpu['logical_cpus']} logical CPUs, SIMD {', '.join(cpu['simd'])}). "
        "Each figure is one whole process under `/usr/bin/time -v`: wall, CPU (user + system) "
        "and peak RSS; stage times from the run.json of its output folder. **The machine was "
        "shared**: processes averaging at least half a CPU (`ps`) at the start: "
        f"{'; '.join(f'`{p}`' for p in result['heavy_processes_before']) or 'none'}; at the "
        f"end: {'; '.join(f'`{p}`' for p in result['heavy_processes_after']) or 'none'}. "
        "1-, 5- and 15-minute load average (`uptime`) "
        f"{result['load_average_before']} before and {result['load_average_after']} after the "
        "script, and around each process below. The walls are therefore upper bounds of an "
        f"idle machine's. CPU / wall of the processes: {cpu_share(result)} (2 would be both "
        "cores busy all the time): on an idle machine the same work may run up to "
        f"{2 / max_cpu_share(result):.1f}x faster if it spreads over both cores (not measured "
        "here).",
        "",
        "Where each cost of issue 22's list is: the contrast effect and the per-drug null per "
        "patient in *Cost of the null and of the contrast* (`benchmarks/null_cost.py`); "
        "`--combinations` at K = 20 and 50 in *Drug pairs* (`benchmarks/combinations.py`); the "
        "rest here. **Neither has a one-off cost per bundle + library**: the null is drawn from "
        "each profile's own signature (`score.permuted_signatures`, 1,000 gene permutations of "
        "tumour - normal) and the contrast's no-drug prediction is one more FlexPert row per "
        "cell of that profile, so nothing is computed ahead or cached for a bundle or library.",
        "",
        "### `validate` end to end",
        "",
        f"`{validate['command']}`, {len(v_runs)} run(s).",
        "",
        "| wall s | CPU s | peak RSS MiB | sensitivity s | patients s | signatures s | "
        "classes s | total s (run.json) | load before -> after |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in v_runs:
        t = r["timings_s"]
        lines.append(
            f"| {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:.0f} | "
            f"{t.get('sensitivity_s', 0):.1f} | {t.get('patients_s', 0):.1f} | "
            f"{t.get('signatures_s', 0):.1f} | {t.get('classes_s', 0):.1f} | "
            f"{t.get('total_s', 0):.1f} | {r['load_average_before']} -> "
            f"{r['load_average_after']} |"
        )
    lines += [
        "",
        "Suites as run.json names them: sensitivity = GDSC2 measured sensitivity of the cell "
        "lines; patients = scoring the example's tumours for the classes suite and the ranking "
        "agreement (both effects x both rankings); signatures = measured L1000 signatures; "
        "classes = known drug classes.",
        "",
        "### `--normal auto` beside the other normal references (TCGA example)",
        "",
        f"`unicure-rt score {EXAMPLE} NORMAL --quiet --out DIR` with each NORMAL in turn, "
        f"{len(next(iter(result['normals'].values()))['runs'])} rounds; medians. "
        "`--normal-where condition=normal` scores the 5 tumours against the 5 normals of the "
        "file; the shipped references score all 10 samples (the normals too), so the "
        "comparison of the choice itself is per profile and `auto` against `tissue:breast`.",
        "",
        "| normal | profiles | wall s | CPU s | peak RSS MiB | wall s per profile | "
        "embedding s | scoring s | outside score_patient s | references chosen |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, entry in result["normals"].items():
        runs = entry["runs"]
        wall = median_of(runs, "wall_s")
        inside = statistics.median(
            sum(r["timings_s"].get(s, 0.0) for s in ("sessions_s", "embedding_s", "scoring_s"))
            for r in runs
        )
        chosen = ", ".join(
            f"{name} x{count}" for name, count in reference_counts(runs[0]["normal_sources"])
        )
        lines.append(
            f"| `{name}` | {runs[0]['n_profiles']} | {wall:.1f} | {median_of(runs, 'cpu_s'):.1f} "
            f"| {max(r['peak_rss_mib'] for r in runs):.0f} | {wall / runs[0]['n_profiles']:.2f} "
            f"| {median_stage(runs, 'embedding_s'):.1f} | {median_stage(runs, 'scoring_s'):.1f} "
            f"| {wall - inside:.1f} | {chosen} |"
        )
    auto, fixed = (
        result["normals"][k]["runs"] for k in ("--normal auto", "--normal tissue:breast")
    )
    auto_wall, fixed_wall = median_of(auto, "wall_s"), median_of(fixed, "wall_s")
    lines += [
        "",
        f"`auto` against `tissue:breast` (same {auto[0]['n_profiles']} profiles): "
        f"{auto_wall - fixed_wall:+.1f} s wall ({auto_wall / fixed_wall - 1:+.1%}), "
        f"{median_of(auto, 'cpu_s') - median_of(fixed, 'cpu_s'):+.1f} s CPU, peak RSS "
        f"{max(r['peak_rss_mib'] for r in auto) - max(r['peak_rss_mib'] for r in fixed):+.0f} "
        "MiB.",
    ]
    loads = [
        f"{r['load_average_before'][0]}/{r['load_average_after'][0]}"
        for entry in result["normals"].values()
        for r in entry["runs"]
    ]
    scanb = result["scanb"]
    ex = scanb["extrapolated_400"]
    settings = next(iter(scanb["runs"].values()))["settings"]
    first = "; ".join(
        f"the first {n}: {m['minimum']:g}, held by {m['held_by']} value(s)"
        for n, m in scanb["first_n_minimum"].items()
    )
    lines += [
        "",
        "Outside score_patient = process wall - (sessions + embedding + scoring): interpreter "
        "start, reading the input, the normal reference (and `auto`'s choice), writing the "
        "outputs. 1-minute load average before/after each run: " + ", ".join(loads) + ".",
        "",
        f"### SCAN-B end to end ({SCANB_TUMOURS} tumours, default settings)",
        "",
        f"`{scanb['command']}`: the defaults (the bundle's effect `{settings['effect']}` ranked "
        f"by `{settings['rank_by']}`, {settings['null']['permutations']:,} permutations, "
        f"doses {settings['doses_uM']} µM, {settings['draws']} draws, {settings['n_drugs']:,} "
        "drugs) on N tumours of `scanb_breast_400_log2fpkm.parquet`, written to a temporary "
        f"file: {scanb['subset']}. Why not simply the first N: `score` reads negative values as "
        "log2(x + c) only when at least two values share the minimum (the zeros' floor), else it "
        f"refuses the table as scaled data ({first}).",
        "",
        "| tumours | wall s | CPU s | peak RSS MiB | embedding s / tumour | scoring s / tumour | "
        "writing s | load before -> after |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for n, r in scanb["runs"].items():
        per = scanb["per_tumour_stage_s"][n]
        lines.append(
            f"| {n} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:.0f} | "
            f"{per['embedding_s']:.2f} | {per['scoring_s']:.2f} | "
            f"{r['timings_s'].get('writing_s', 0):.1f} | {r['load_average_before']} -> "
            f"{r['load_average_after']} |"
        )
    sizes = list(scanb["runs"])
    wall_fit, cpu_fit = scanb["wall_fit_s"], scanb["cpu_fit_s"]
    fit = (
        f"Line through the {len(sizes)} runs (N = {', '.join(sizes)}): wall = "
        f"{wall_fit['fixed']:.1f} s + {wall_fit['per_tumour']:.2f} s x N; CPU = "
        f"{cpu_fit['fixed']:.1f} s + {cpu_fit['per_tumour']:.2f} s x N."
    )
    whole = scanb["runs"].get(str(SCANB_TUMOURS))
    if whole:
        throughput = (
            f"**Measured** on all {SCANB_TUMOURS}: {whole['wall_s'] / 60:.1f} min wall "
            f"({whole['cpu_s'] / 60:.0f} CPU min), **{SCANB_TUMOURS * 3600 / whole['wall_s']:.0f} "
            "patients per hour on these 2 shared cores**."
        )
    else:
        throughput = (
            f"**Extrapolated** from {' and '.join(sizes)} tumours (not measured on the "
            f"{SCANB_TUMOURS}): {SCANB_TUMOURS} tumours in {ex['wall_s'] / 60:.0f} min wall "
            f"({ex['cpu_s'] / 60:.0f} CPU min), **{ex['patients_per_hour']:.0f} patients per "
            "hour on these 2 shared cores**."
        )
    lines += ["", f"{fit} {throughput}", "", linearity(scanb)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
