"""Shared helpers of the benchmarks: machine facts, load checks, alternating timers, RSS."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
DEFAULT_WORK = Path(os.environ.get("UNICURE_BENCH_WORK", "/tmp/unicure-rt-bench"))
TIME_BIN = "/usr/bin/time"

# Processes that make timings meaningless while they run (other engineers' jobs).
BUSY_PATTERNS = ("unicure_rt.train", "pytest", "explore.py", "unicure-rt score")
QUIET_LOAD = 1.0  # 1-minute load average under which the machine counts as quiet


def add_paths() -> None:
    """Make `tests/` (published fixtures) and the repository importable."""
    for path in (REPO, REPO / "tests", BENCH):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


# ----------------------------------------------------------------------------- machine


def cpu_info() -> dict:
    text = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    flag_set = set(flags.group(1).split()) if flags else set()
    cores = {
        (p, c)
        for p, c in re.findall(r"^physical id\s*:\s*(\d+)\s*\ncore id\s*:\s*(\d+)", text, re.M)
    }
    siblings = re.search(r"^siblings\s*:\s*(\d+)", text, re.M)
    cpu_cores = re.search(r"^cpu cores\s*:\s*(\d+)", text, re.M)
    return {
        "model": model.group(1).strip() if model else platform.processor(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": len(cores) or (int(cpu_cores.group(1)) if cpu_cores else None),
        "siblings": int(siblings.group(1)) if siblings else None,
        "simd": sorted(
            f
            for f in flag_set
            if f in {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile"}
        ),
        "l3_cache": _lscpu("L3 cache"),
    }


def _lscpu(field: str) -> str | None:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return None
    match = re.search(rf"^{re.escape(field)}:\s*(.*)$", out, re.M)
    return match.group(1).strip() if match else None


def ram_gib() -> float:
    match = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return round(int(match.group(1)) / 1024**2, 1) if match else float("nan")


def versions() -> dict:
    found = {"python": platform.python_version()}
    for package in (
        "numpy",
        "onnxruntime-gpu",
        "onnxruntime",
        "torch",
        "pandas",
        "pyarrow",
        "onnx",
        "scipy",
        "threadpoolctl",
        "openvino",
    ):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    try:
        import numpy  # noqa: F401  (loads OpenBLAS so that threadpoolctl sees it)
        from threadpoolctl import threadpool_info

        found["blas"] = [
            f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
            f"{i.get('num_threads')} threads)"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        ]
    except ImportError:
        pass
    return found


def machine() -> dict:
    return {
        "cpu": cpu_info(),
        "ram_gib": ram_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "versions": versions(),
    }


# ----------------------------------------------------------------------------- load


def busy_processes() -> list[str]:
    """Command lines of running training / pytest processes (not ours)."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "benchmarks/" in cmd:
            continue
        if any(p in cmd for p in BUSY_PATTERNS) and "grep" not in cmd:
            found.append(f"{entry.name}: {cmd.strip()[:120]}")
    return found


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_until_quiet(max_wait_s: float, poll_s: float = 30.0, check_load: bool = True) -> list[str]:
    """Wait (up to `max_wait_s`) until no training/pytest process runs and the 1-minute load
    average is under `QUIET_LOAD`; returns what still runs (empty when quiet)."""
    deadline = time.time() + max_wait_s
    while True:
        busy = busy_processes()
        load = os.getloadavg()[0] if check_load else 0.0
        if (not busy and load < QUIET_LOAD) or time.time() >= deadline:
            return busy + ([f"load average {load:.2f}"] if load >= QUIET_LOAD else [])
        what = busy[0] if busy else f"load average {load:.2f}"
        print(f"[bench] waiting for a quiet machine ({what})", flush=True)
        time.sleep(min(poll_s, max(1.0, deadline - time.time())))


# ----------------------------------------------------------------------------- timing


def alternate(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Run every function once per round, in turn, `repeats` rounds; wall seconds per call.

    Alternating (rather than all repeats of one, then the other) spreads the machine's noise
    over both sides of a comparison.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats):
        names = list(fns) if round_ % 2 == 0 else list(reversed(fns))
        for name in names:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
            print(f"[bench]   {name}: {times[name][-1]:.3f} s", flush=True)
    return times


def summary(samples: list[float]) -> dict:
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "n": len(samples),
        "samples_s": [round(s, 4) for s in samples],
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process (ru_maxrss, MiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    match = re.search(r"^VmRSS:\s*(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) / 1024 if match else float("nan")


def timed_command(cmd: list[str], *, env: dict | None = None, cwd: Path = REPO) -> dict:
    """Run `cmd` under /usr/bin/time -v: wall seconds, CPU seconds (user + system), peak RSS
    (MiB), exit code, output tail."""
    out_file = Path(f"/tmp/unicure-bench-time-{os.getpid()}.txt")
    full = [TIME_BIN, "-v", "-o", str(out_file), *cmd] if Path(TIME_BIN).exists() else cmd
    t0 = time.perf_counter()
    done = subprocess.run(full, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    wall = time.perf_counter() - t0
    rss = cpu = None
    if out_file.exists():
        text = out_file.read_text()
        out_file.unlink()
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        rss = int(match.group(1)) / 1024 if match else None
        times = re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", text)
        cpu = sum(float(t) for t in times) if len(times) == 2 else None
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mib": rss,
        "returncode": done.returncode,
        "stdout_tail": done.stdout[-2000:],
        "stderr_tail": done.stderr[-2000:],
    }


def child_json(
    script_args: list[str], *, timeout: float | None = None, env: dict | None = None
) -> dict:
    """Run `python benchmarks/<script> ...` in a fresh process that prints one JSON line last."""
    cmd = [sys.executable, *script_args]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def target(name: str, measured: str, passed: bool | None, goal: str, note: str = "") -> dict:
    return {"target": name, "measured": measured, "passed": passed, "goal": goal, "note": note}


# ----------------------------------------------------------------------------- training studies


def stage2_study(run: Path, data: Path, seed: int, out: Path, *extra: str) -> tuple[dict, float]:
    """Train stage 2 again on the stage-1 backbone of the training run `run` (`python -m
    unicure_rt.train demo --stage1-from RUN --seed SEED ...extra`), with a bundle in `out/bundle`;
    returns the new run record and the seconds it took."""
    command = [
        sys.executable, "-m", "unicure_rt.train", "demo", "--data", str(data), "--out", str(out),
        "--bundle-out", str(out / "bundle"), "--seed", str(seed), "--stage1-from", str(run),
        *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    return json.loads((out / "training-run.json").read_text()), seconds


def require_training_run(parser, run: Path) -> dict:
    """The record of the bundle's training run `run`, or a usage error saying how to make it."""
    if not (run / "training-run.json").is_file():
        parser.error(
            f"--run {run} holds no training run: train the bundle first (`python -m "
            "unicure_rt.train demo --data ../shared/data --out runs/demo --bundle-out "
            "unicure_rt/data/default_bundle --seed 0 --record docs/training-run.json`)."
        )
    return json.loads((run / "training-run.json").read_text())


def study_figures(record: dict) -> dict:
    """A stage-2 study's TCGA ranking figures (mean over patients) and its held-out consensus
    cosine, the model's and the mean signature's."""
    consensus = record["evaluation"]["unseen_consensus_cluster"]["metrics"]
    return {
        **record["ranking_evaluation"]["mean"],
        "held_out_cosine": consensus["model"]["mean_cosine"],
        "held_out_cosine_mean_signature": consensus["mean_signature"]["mean_cosine"],
    }


def seed_summary(values) -> dict:
    """Mean, sd (0 for one value), min and max of a figure over seeds."""
    values = list(values)
    return {
        "mean": statistics.mean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def seed_table(first: str, seeds: list[int], rows: list[tuple[str, dict, dict]]) -> list[str]:
    """A markdown table with a column per seed and a `mean ± sd` column: `rows` are (label,
    {seed: value}, {"mean", "sd"}); a seed without a value reads "not run"."""
    lines = [
        f"| {first} | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± sd |",
        "| --- |" + " ---: |" * (len(seeds) + 1),
    ]
    for label, values, summary in rows:
        cells = " | ".join(f"{values[s]:.3f}" if s in values else "not run" for s in seeds)
        lines.append(f"| {label} | {cells} | {summary['mean']:.3f} ± {summary['sd']:.3f} |")
    return lines


def write_study_json(name: str, result: dict) -> None:
    """A stand-alone study's raw figures beside its section: `benchmarks/sections/NAME.json`."""
    (BENCH / "sections" / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
