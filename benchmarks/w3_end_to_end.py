"""W3: `unicure-rt score examples/tcga_brca.h5ad --normal-where condition=normal`, end to end.

Wall time and peak RSS of the command (subprocess under /usr/bin/time -v), the stage timings it
records in run.json, and the start-up time: a fresh interpreter importing `unicure_rt.cli.app`
and what `score` imports when it runs, then `load_bundle` (sha256 of every file), the drug
library (`resolve_library`) and the two ONNX Runtime sessions.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import models
from common import BENCH, child_json, summary, target, timed_command

EXAMPLE = "examples/tcga_brca.h5ad"


def run(args, work: Path) -> dict:
    bundle, label = models.default_bundle_or_small(work)
    repeats = args.repeats or (1 if args.quick else 2)
    exe = shutil.which("unicure-rt") or str(Path(sys.executable).parent / "unicure-rt")
    base = [exe, "score", EXAMPLE, "--normal-where", "condition=normal"]
    from unicure_rt.bundle.load import DEFAULT_BUNDLE

    extra = [] if Path(bundle) == DEFAULT_BUNDLE else ["--bundle", str(bundle)]
    cmd = base + extra
    runs = []
    for _ in range(repeats):
        runs.append(timed_command(cmd))
        print(f"[bench]   score: {runs[-1]['wall_s']:.2f} s", flush=True)
        if runs[-1]["returncode"] != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{runs[-1]['stderr_tail']}")
    with tempfile.TemporaryDirectory() as tmp:
        staged = timed_command(cmd + ["--out", str(Path(tmp) / "out"), "--quiet"])
        run_json = json.loads((Path(tmp) / "out" / "run.json").read_text())
    startup = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        found = child_json([str(BENCH / "startup_probe.py")] + ([str(bundle)] if extra else []))
        found["process_wall_s"] = time.perf_counter() - t0
        startup.append(found)
    help_runs = [timed_command([exe, "--help"]) for _ in range(repeats)]
    median_startup = statistics.median(s["in_process_total_s"] for s in startup)
    wall = statistics.median(r["wall_s"] for r in runs)
    rss = max(r["peak_rss_mib"] or 0 for r in runs)
    result = {
        "bundle": models.relative(bundle),
        "bundle_label": label,
        "command": " ".join(["unicure-rt", *cmd[1:]]),
        "wall": summary([r["wall_s"] for r in runs]),
        "peak_rss_mib": rss,
        "run_json_timings_s": run_json.get("timings_s"),
        "n_profiles": len(run_json.get("profiles", [])),
        "n_drugs": run_json.get("library", {}).get("n_drugs"),
        "draws": run_json.get("draws"),
        "providers": run_json.get("providers"),
        "staged_run_wall_s": staged["wall_s"],
        "startup": startup,
        "startup_median_s": median_startup,
        "startup_process_wall_median_s": statistics.median(s["process_wall_s"] for s in startup),
        "help_wall_median_s": statistics.median(r["wall_s"] for r in help_runs),
        "stdout_head": runs[0]["stdout_tail"][:1500],
    }
    result["targets"] = [
        target(
            "W3 start-up <= 1 s",
            f"{median_startup:.2f} s in process (import {startup[0]['import_cli_s']:.2f} + "
            f"score's imports {startup[0]['import_score_s']:.2f} + "
            f"bundle {startup[0]['load_bundle_s']:.2f} + library "
            f"{startup[0]['load_library_s']:.2f} + sessions "
            f"{startup[0]['create_sessions_s']:.2f}); "
            f"{result['startup_process_wall_median_s']:.2f} s with interpreter start",
            median_startup <= 1.0,
            "<= 1 s",
            label,
        ),
        target(
            "W3 whole example in seconds",
            f"{wall:.1f} s wall, peak RSS {rss:.0f} MiB ({result['n_profiles']} profiles x "
            f"{result['n_drugs']} drugs x 6 doses, {result['draws']} draws)",
            wall < 60,
            "seconds (< 60 s)",
            label,
        ),
    ]
    return result
