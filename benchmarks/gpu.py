"""GPU figures of issue 6: W1 and W4 on the CUDA and TensorRT providers, fp32 and fp16.

    python benchmarks/gpu.py                          # on a GPU machine (about 5 min on an H100)
    python benchmarks/gpu.py --devices cpu --quick    # the same code on a CPU: a smoke test

Model: the published-size FlexPert + decoder of W1 (random weights in the published layout,
built and cached by `models.w1_bundle`), plus its fp16 variant from the export path's
`make_variant`. Every configuration runs unicure-rt's own scoring path (`FlexPertRunner`,
`reversal_scores`, ranking) for one patient:

- W1: 4,992 drugs x 6 doses; one untimed warm-up (TensorRT builds its engines there), then the
  median of --repeats; scores compared with the CPU fp32 path (max abs difference, Spearman,
  top-20 overlap).
- W4: --drugs synthetic compounds (default 1,000,000) x 6 doses, the same patient, streamed
  from a float16 Parquet library; the same warm-up and median. Target: under 10 s on one H100.
  The time includes the CPU side of scoring (reversal scores, ranking), as a user sees it.

Configurations: `cuda` runs the fp32 graph and the fp16 variant; `tensorrt` runs the fp32 graph
with and without `--fp16` (TensorRT's own half-precision kernels). A configuration that cannot
start or fails is recorded with its reason, and the others still run. After each configuration
the results so far go to `benchmarks/gpu.json` and `benchmarks/sections/gpu.md` (part of
RESULTS.md), so a run cut short keeps what it measured; --quick runs and runs where no GPU
configuration ran write nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

from common import BENCH, DEFAULT_WORK, add_paths, machine, target

add_paths()

import models  # noqa: E402 - after add_paths
from report import status_cell, write_section  # noqa: E402
from w1_flexpert import (  # noqa: E402
    N_DRUGS,
    N_DRUGS_QUICK,
    candidate,
    fidelity,
    make_library,
    make_problem,
)
from w4_scale import write_library  # noqa: E402

W4_TARGET_S = 10.0
W4_QUICK_DRUGS = 20_000


def configurations(devices: list[str]) -> list[tuple[str, str, str, bool]]:
    """(label, device, graph precision, TensorRT fp16) for the requested devices."""
    table = {
        "cpu": [("cpu fp32", "cpu", "fp32", False)],
        "cuda": [("cuda fp32", "cuda", "fp32", False), ("cuda fp16", "cuda", "fp16", False)],
        "tensorrt": [
            ("tensorrt fp32", "tensorrt", "fp32", False),
            ("tensorrt fp16", "tensorrt", "fp32", True),
        ],
    }
    return [entry for device in devices for entry in table[device]]


def graph_paths(work: Path) -> dict[str, Path]:
    """The W1 FlexPert graph at fp32 and fp16 (the fp16 variant is made once and cached)."""
    from unicure_rt.train.export.precision import make_variant

    paths = models.w1_bundle(work)
    fp16_dir = paths["root"] / "fp16"
    if not (fp16_dir / "flexpert.onnx").exists():
        manifest = json.loads((paths["bundle"] / "manifest.json").read_text())
        make_variant(paths["bundle"], fp16_dir, manifest, "fp16")
    return {"fp32": paths["bundle"] / "flexpert.onnx", "fp16": fp16_dir / "flexpert.onnx"}


def timed(fn, repeats: int) -> tuple[dict, object]:
    """One untimed warm-up call, then `repeats` timed ones; returns (stats, last result)."""
    result = fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return {"median_s": statistics.median(samples), "samples_s": samples}, result


def run_configuration(label, device, precision, fp16, graphs, problems, args, reference) -> dict:
    """Both workloads on one configuration; a failure is recorded, not raised."""
    from unicure_rt.errors import UserError
    from unicure_rt.runtime.sessions import RuntimeOptions, create_session

    runtime = RuntimeOptions(device=device, fp16=fp16, cache_dir=args.work / "trt_cache")
    try:
        session, provider = create_session(graphs[precision], runtime)
    except UserError as exc:
        return {"label": label, "unavailable": str(exc)}
    entry = {"label": label, "provider": provider, "graph": precision, "trt_fp16": fp16}
    for name, problem in problems.items():
        try:
            stats, (scores, _) = timed(
                lambda p=problem: candidate(session, p, drug_batch=args.drug_batch), args.repeats
            )
        except Exception as exc:  # noqa: BLE001 - e.g. an engine build or out of GPU memory
            entry[name] = {"failed": f"{type(exc).__name__}: {str(exc)[:300]}"}
            print(f"[gpu] {label} {name}: failed: {entry[name]['failed']}", flush=True)
            continue
        n_pred = len(problem.library) * len(problem.doses)
        stats["predictions"] = n_pred
        stats["predictions_per_s"] = n_pred / stats["median_s"]
        if name == "W1":
            stats["vs_cpu_fp32"] = fidelity(reference, scores)
        entry[name] = stats
        print(f"[gpu] {label} {name}: {stats['median_s']:.3f} s", flush=True)
    return entry


def _cells(stats: dict, w1: bool) -> list[str]:
    if "failed" in stats:
        return [f"failed: {stats['failed'][:120]}"] + [""] * (2 if w1 else 1)
    out = [f"{stats['median_s']:.3f}", f"{stats['predictions_per_s']:,.0f}"]
    if w1:
        fid = stats["vs_cpu_fp32"]
        out.append(
            f"{fid['max_abs_score_diff']:.1e} / {fid['spearman']:.5f} / {fid['top20_overlap']}/20"
        )
    return out


def section(result: dict) -> str:
    m = result["machine"]
    lines = [
        "## GPU: W1 and W4 on CUDA and TensorRT",
        "",
        f"Run {result['date']}, `{result['command']}`; GPU: {result['gpu'] or 'none'}; "
        f"onnxruntime {m['versions'].get('onnxruntime-gpu') or m['versions'].get('onnxruntime')}"
        f"; {m['cpu']['logical_cpus']} logical CPUs. One patient, published-size FlexPert "
        f"(random weights), unicure-rt's scoring path, drug batch {result['drug_batch']}; "
        f"medians of {result['repeats']} after one warm-up. W1: {result['w1_drugs']:,} drugs x 6 "
        f"doses; W4: {result['w4_drugs']:,} drugs x 6 doses (times include CPU-side scoring).",
        "",
        "| configuration | provider | W1 s | W1 predictions/s | W1 vs CPU fp32: max abs / "
        "Spearman / top-20 | W4 s | W4 predictions/s |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for e in result["configurations"]:
        if "unavailable" in e:
            lines.append(f"| {e['label']} | unavailable: {e['unavailable'][:160]} | | | | | |")
            continue
        cells = _cells(e["W1"], True) + _cells(e["W4"], False)
        lines.append(f"| {e['label']} | {e['provider']} | " + " | ".join(cells) + " |")
    lines += ["", "| target | goal | measured | result |", "| --- | --- | --- | --- |"]
    for t in result["targets"]:
        lines.append(
            f"| {t['target']} | {t['goal']} | {t['measured']} | {status_cell(t['passed'])} |"
        )
    return "\n".join(lines) + "\n"


def w4_target(entries: list[dict], full: bool) -> dict:
    times = [
        e["W4"]["median_s"]
        for e in entries
        if e.get("provider", "CPUExecutionProvider") != "CPUExecutionProvider"
        and "median_s" in e.get("W4", {})
    ]
    fastest = min(times, default=None)
    return target(
        "W4 GPU: 1,000,000 compounds x 6 doses, one patient",
        "not run (no GPU configuration completed W4)"
        if fastest is None
        else f"{fastest:.2f} s (fastest GPU configuration)",
        None if fastest is None or not full else fastest < W4_TARGET_S,
        f"< {W4_TARGET_S:g} s on one H100",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="cuda,tensorrt", help="from cpu,cuda,tensorrt")
    parser.add_argument("--drugs", type=int, default=1_000_000, help="W4 library size")
    parser.add_argument("--drug-batch", type=int, default=16_384)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--quick", action="store_true", help=f"W1 {N_DRUGS_QUICK:,} drugs, W4 20,000; no files"
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    unknown = sorted(set(devices) - {"cpu", "cuda", "tensorrt"})
    if unknown:
        parser.error(f"unknown device(s) {unknown}; choose from cpu, cuda, tensorrt")
    args.work.mkdir(parents=True, exist_ok=True)

    from unicure_rt.drugs.library import load_library
    from unicure_rt.runtime.sessions import RuntimeOptions, create_session, gpu_name

    graphs = graph_paths(args.work)
    w1_drugs = N_DRUGS_QUICK if args.quick else N_DRUGS
    w4_drugs = W4_QUICK_DRUGS if args.quick else args.drugs
    encoder = "unimol-512"
    w4_library = load_library(
        write_library(args.work / f"gpu_library_{w4_drugs}.parquet", w4_drugs, encoder),
        encoder_id=encoder,
    )
    cpu_session, _ = create_session(graphs["fp32"], RuntimeOptions(device="cpu"))
    w1 = make_problem(cpu_session, make_library(args.work, w1_drugs))  # W1's own data
    problems = {"W1": w1, "W4": dataclasses.replace(w1, library=w4_library)}  # same patient
    reference, _ = candidate(cpu_session, w1, drug_batch=args.drug_batch)
    del cpu_session

    result = {
        "command": "python benchmarks/gpu.py " + " ".join(argv if argv else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine(),
        "gpu": gpu_name(),
        "drug_batch": args.drug_batch,
        "repeats": args.repeats,
        "w1_drugs": w1_drugs,
        "w4_drugs": w4_drugs,
        "configurations": [],
    }
    full = not args.quick and w4_drugs == 1_000_000
    for config in configurations(devices):
        result["configurations"].append(
            run_configuration(*config, graphs, problems, args, reference)
        )
        result["targets"] = [w4_target(result["configurations"], full)]
        on_gpu = any(
            e.get("provider", "CPUExecutionProvider") != "CPUExecutionProvider"
            for e in result["configurations"]
        )
        if on_gpu and not (args.quick or args.no_write):
            (BENCH / "gpu.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
            write_section("gpu", section(result))
    print(section(result))
    return 0 if any("unavailable" not in e for e in result["configurations"]) else 1


if __name__ == "__main__":
    sys.exit(main())
