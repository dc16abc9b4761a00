"""Run the unicure-rt benchmarks and write `benchmarks/RESULTS.md` (+ `benchmarks/results.json`).

    python benchmarks/run.py                 # W1-W4 (~15 min on 2 cores, +5 min first time)
    python benchmarks/run.py --only W1,ROOF  # some workloads (others keep their last results)
    python benchmarks/run.py --quick         # smaller sizes, 1 repeat: a smoke test

Workloads: W1 (one patient, full-size FlexPert, vs the published PyTorch+pandas workflow),
ROOF (roofline of W1's fp32 graph), W2 (full-size backbone, per sentence and bundle size),
W3 (the bundled default model end to end through the CLI), W4 (1M-compound library), W4P (W4's
1M compounds, or --w4p-drugs, with the published-size FlexPert, fp32 and int8: ~30 min on 2
quiet cores, so only when named in --only), OV (W1's graph through OpenVINO's CPU device beside
ONNX Runtime's; skipped where OpenVINO is not installed, which unicure-rt does not depend on).
Models with random weights are built once and cached under --work (default
/tmp/unicure-rt-bench). Measurements wait (--wait minutes) for training or pytest processes of
other users of the machine to finish, and record the load average and any that still ran.
--quick runs write `benchmarks/results-quick.json` and never touch RESULTS.md.
GPU figures (CUDA, TensorRT): `python benchmarks/gpu.py` on a GPU machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from pathlib import Path

from common import (
    BENCH,
    DEFAULT_WORK,
    add_paths,
    busy_processes,
    load_average,
    machine,
    wait_until_quiet,
)

add_paths()

WORKLOADS = ("W1", "ROOF", "W2", "W3", "W4", "W4P", "OV")
DEFAULT_WORKLOADS = ("W1", "ROOF", "W2", "W3", "W4", "OV")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(DEFAULT_WORKLOADS), help="e.g. W1,W4P")
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repeat, no md")
    parser.add_argument("--repeats", type=int, default=0, help="override repeats per workload")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--wait", type=float, default=30.0, help="minutes to wait for quiet")
    parser.add_argument(
        "--w4p-drugs", type=int, default=0, help="W4P library size (1,000,000; --quick 10,000)"
    )
    parser.add_argument("--w4p-precisions", default="fp32,int8", help="W4P bundles, e.g. int8")
    args = parser.parse_args(argv)
    chosen = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(chosen) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = BENCH / ("results-quick.json" if args.quick else "results.json")
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    here = machine()
    # the machine of the entries that record none (written before entries recorded their own)
    results.setdefault("machine", here)
    command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    failures = 0
    w1_result = results.get("W1", {}).get("result")
    chosen_order = [w for w in WORKLOADS if w in chosen]
    for name in chosen_order:
        # the load average only before the first workload: afterwards it is our own load
        still_busy = wait_until_quiet(args.wait * 60, check_load=name == chosen_order[0])
        started = time.perf_counter()
        print(f"[bench] === {name} ===", flush=True)
        entry = {
            "command": command.strip(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "load_average_before": load_average(),
            "busy_before": still_busy,
            # per workload: entries kept from earlier runs may come from another machine
            "machine": here,
        }
        try:
            if name == "W1":
                import w1_flexpert

                entry["result"] = w1_flexpert.run(args, args.work)
                w1_result = entry["result"]
            elif name == "ROOF":
                import roofline

                entry["result"] = roofline.run(args, args.work, w1_result)
            elif name == "W2":
                import w2_backbone

                entry["result"] = w2_backbone.run(args, args.work)
            elif name == "W3":
                import w3_end_to_end

                entry["result"] = w3_end_to_end.run(args, args.work)
            elif name == "W4":
                import w4_scale

                entry["result"] = w4_scale.run(args, args.work)
            elif name == "W4P":
                import w4_scale

                entry["result"] = w4_scale.run_published(args, args.work, results.get("W4P"))
            elif name == "OV":
                import openvino_cpu

                entry["result"] = openvino_cpu.run(args, args.work)
        except Exception:  # record and go on with the other workloads
            failures += 1
            entry["error"] = traceback.format_exc()[-3000:]
            print(entry["error"], file=sys.stderr, flush=True)
        entry["wall_s"] = time.perf_counter() - started
        entry["load_average_after"] = load_average()
        entry["busy_after"] = busy_processes()
        results[name] = entry
        results_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
        for t in entry.get("result", {}).get("targets", []):
            status = {True: "PASS", False: "FAIL", None: "info"}[t["passed"]]
            print(f"[bench] {status}: {t['target']}: {t['measured']}", flush=True)
    if not args.quick:
        from report import render

        (BENCH / "RESULTS.md").write_text(render(results))
        print(f"[bench] wrote {BENCH / 'RESULTS.md'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
