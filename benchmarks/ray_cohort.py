"""Ray cohort: `score --engine ray` throughput with 1 and 2 workers on this machine.

A cohort of `--profiles` TCGA tumour profiles (the 5 of examples/tcga_brca.h5ad under new ids
and depths, with the 5 normals in every file), `--profiles-per-file` per h5ad file, scored
against the first `--drugs` compounds of the bundled library (the default bundle, else a small
random one) at the 6 reference doses, 3 draws. One local Ray cluster (all CPUs) is started
once and reused; each run starts its actor pool (bundle, library and sessions loaded per
worker), reads the files in Ray tasks, scores and writes the Parquet dataset. Runs alternate
between 1 and 2 workers. For reference, the same files scored one after the other in this
process by the single-machine path (`score_patient`, ONNX Runtime on all cores).

Results: `benchmarks/ray_cohort.json`, and `benchmarks/sections/ray_cohort.md`, which
`benchmarks/RESULTS.md` includes (re-rendered here).

    python benchmarks/ray_cohort.py [--profiles 16] [--profiles-per-file 2] [--drugs 1000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from report import write_section

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
EXAMPLE = REPO / "examples" / "tcga_brca.h5ad"
HEADING = "## Ray cohort"
BUSY = ("unicure_rt.train", "pytest", "benchmarks/")


def busy() -> list[str]:
    """Other training, test or benchmark processes (timings are meaningless beside them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), os.getppid()):
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(p in cmd for p in BUSY) and "ray_cohort.py" not in cmd:
            found.append(f"{entry.name}: {cmd.strip()[:100]}")
    return found


def make_cohort(folder: Path, n_profiles: int, per_file: int) -> list[Path]:
    import anndata
    import numpy as np

    folder.mkdir(parents=True)
    adata = anndata.read_h5ad(EXAMPLE)
    tumours = [n for n in adata.obs_names if "-01A" in n]
    normals = adata[[n for n in adata.obs_names if "-11A" in n]]
    files = []
    for start in range(0, n_profiles, per_file):
        rows = []
        for i in range(start, min(start + per_file, n_profiles)):
            one = adata[[tumours[i % len(tumours)]]].copy()
            one.X = np.round(np.asarray(one.X) * (1 + i % 3))
            one.obs_names = [f"BENCH-{i:03d}-01A"]
            one.obs["sample"] = one.obs_names
            rows.append(one)
        part = anndata.concat([*rows, normals.copy()])
        path = folder / f"patients_{start // per_file:03d}.h5ad"
        part.write_h5ad(path)
        files.append(path)
    return files


def make_library(bundle, n_drugs: int, out: Path) -> Path:
    import pandas as pd

    from unicure_rt.drugs.build import import_library
    from unicure_rt.scoring.options import resolve_library

    library = resolve_library(bundle, None)
    n = min(n_drugs, len(library))
    frame = pd.DataFrame(library.embeddings[:n], columns=[f"e{i}" for i in range(library.dim)])
    frame.insert(0, "drug_id", library.ids[:n])
    import_library(frame, encoder_id=bundle.drug_encoder["id"], out=out)
    return out


def section(result: dict) -> str:
    runs = result["runs"]
    one, two = runs["ray_1_worker"], runs["ray_2_workers"]
    rows = []
    for label, key in (
        ("single machine (score_patient per file, ORT on 2 threads)", "local_sequential"),
        ("ray, 1 worker", "ray_1_worker"),
        ("ray, 2 workers", "ray_2_workers"),
    ):
        run = runs[key]
        phase = f"{run['scoring_median_s']:.1f}" if "scoring_median_s" in run else "-"
        rows.append(
            f"| {label} | {run['median_s']:.1f} | {run['profiles_per_s']:.3f} | "
            f"{run['rows_per_s']:,.0f} | {phase} |"
        )
    c = result["cohort"]
    return f"""{HEADING}

`python benchmarks/ray_cohort.py` ({result["date"]}; {result["machine"]}; Ray \
{result["ray"]}, one local cluster of {result["cluster_cpus"]:g} CPUs started once in \
{result["ray_start_s"]:.1f} s and reused). Cohort: {c["profiles"]} tumour profiles in \
{c["files"]} h5ad files ({c["profiles_per_file"]} per file, each with 5 normals), \
{c["drugs"]} drugs of the bundled library, 6 doses, 3 draws, bundle `{c["bundle"]}`. Median of \
{result["repeats"]} alternating runs; a Ray run includes starting its actor pool (bundle +
library + sessions per worker), reading the files in Ray tasks, scoring and writing the
Parquet dataset.

| engine | wall s | profiles/s | ranking rows/s | scoring phase s |
| --- | ---: | ---: | ---: | ---: |
{chr(10).join(rows)}

2 workers vs 1: {one["median_s"] / two["median_s"]:.2f}x end to end, \
{one["scoring_median_s"] / two["scoring_median_s"]:.2f}x in the scoring phase. Rankings of \
every run are identical to the single-machine ones (checked on every run). 1-minute load \
average before each run: {result["load_during"]} (this benchmark's own load included).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=16)
    parser.add_argument("--profiles-per-file", type=int, default=2)
    parser.add_argument("--drugs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="run even if the machine is busy")
    parser.add_argument("--no-write", action="store_true", help="print the results only")
    args = parser.parse_args()
    others = busy()
    if others and not args.force:
        sys.exit(
            "[bench] other jobs are running, timings would be meaningless:\n" + "\n".join(others)
        )

    import pandas as pd
    import ray

    sys.path.insert(0, str(REPO))
    from unicure_rt.bundle.load import DEFAULT_BUNDLE, load_bundle
    from unicure_rt.engines.ray_engine import score_cohort
    from unicure_rt.patients.load import LoadOptions, load_patient
    from unicure_rt.runtime.sessions import RuntimeOptions
    from unicure_rt.scoring.options import ScoreOptions, resolve_library
    from unicure_rt.scoring.pipeline import score_patient

    work = Path(tempfile.mkdtemp(prefix="unicure-ray-bench-"))
    try:
        if (DEFAULT_BUNDLE / "manifest.json").exists():  # a copy: others may re-export it
            bundle = load_bundle(shutil.copytree(DEFAULT_BUNDLE, work / "default_bundle"))
        else:
            sys.path.insert(0, str(BENCH))
            import models

            bundle = load_bundle(models.small_bundle(work)["bundle"])
        files = make_cohort(work / "cohort", args.profiles, args.profiles_per_file)
        drugs = make_library(bundle, args.drugs, work / "library.parquet")
        load = LoadOptions(normal_where="condition=normal")
        options = ScoreOptions(runtime=RuntimeOptions(device="cpu"))

        library = resolve_library(bundle, drugs)
        t0 = time.perf_counter()
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        ray_start = time.perf_counter() - t0
        keys = ["local_sequential", "ray_1_worker", "ray_2_workers"]
        times: dict[str, list[float]] = {k: [] for k in keys}
        scoring: dict[str, list[float]] = {k: [] for k in keys}
        reference: list[pd.DataFrame] = []  # the single-machine ranking, from the first run
        loads = []

        def local() -> None:
            tables = []
            for path in files:
                patient = load_patient(path, **load.kwargs())
                ranking = score_patient(bundle, patient, library=library, options=options).ranking
                ranking.insert(0, "input", str(path.resolve()))
                tables.append(ranking)
            if not reference:
                reference.append(pd.concat(tables, ignore_index=True))

        def on_ray(key: str) -> None:
            out = work / f"out-{key}"
            run = score_cohort(
                [work / "cohort"],
                out,
                bundle=bundle.path,
                drugs=drugs,
                load=load,
                options=options,
                workers=1 if key == "ray_1_worker" else 2,
                force=True,
                quiet=True,
            )
            scoring[key].append(run["timings_s"]["scoring_s"])
            mine = pd.read_parquet(out / "ranking.parquet")
            pd.testing.assert_frame_equal(mine, reference[0], check_exact=True)

        for round_ in range(args.repeats):  # round 0 starts with the local run (the reference)
            for key in keys if round_ % 2 == 0 else keys[::-1]:
                loads.append(os.getloadavg()[0])
                t0 = time.perf_counter()
                local() if key == "local_sequential" else on_ray(key)
                times[key].append(time.perf_counter() - t0)
                print(f"[bench] {key}: {times[key][-1]:.1f} s", flush=True)
        cluster_cpus = ray.cluster_resources().get("CPU", 0)
        ray.shutdown()

        n_rows = args.profiles * len(library)
        runs = {}
        for key, samples in times.items():
            median = statistics.median(samples)
            runs[key] = {
                "median_s": median,
                "samples_s": [round(s, 2) for s in samples],
                "profiles_per_s": args.profiles / median,
                "rows_per_s": n_rows / median,
            }
            if scoring[key]:
                runs[key]["scoring_median_s"] = statistics.median(scoring[key])
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model")]
        cpu = next((n for n in names if not n.isdigit()), platform.processor())
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{cpu}, {os.cpu_count()} logical CPUs, no GPU",
            "ray": ray.__version__,
            "cluster_cpus": cluster_cpus,
            "ray_start_s": ray_start,
            "repeats": args.repeats,
            "cohort": {
                "profiles": args.profiles,
                "files": len(files),
                "profiles_per_file": args.profiles_per_file,
                "drugs": len(library),
                "bundle": f"bundled demo model, manifest sha256 {bundle.sha256[:12]}",
            },
            "runs": runs,
            "load_during": f"{min(loads):.1f}-{max(loads):.1f}"
            + (f", {len(others)} other jobs running (--force)" if others else ", no other job"),
        }
        if not args.no_write:
            (BENCH / "ray_cohort.json").write_text(json.dumps(result, indent=1) + "\n")
            write_section("ray_cohort", section(result))
        print(section(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
