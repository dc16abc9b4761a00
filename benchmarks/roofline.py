"""Roofline of W1: FLOPs the fp32 FlexPert graph executes, achieved GFLOP/s vs measured GEMM peak.

- FLOPs: every MatMul/Gemm of `flexpert.onnx` with the shapes it runs at (its inputs and output
  exposed as graph outputs and read back from one ONNX Runtime run), 2 FLOPs per multiply-add.
- Peak: the best of a large float32 GEMM in numpy (OpenBLAS), PyTorch (where installed: its
  oneDNN/MKL CPU kernels) and ONNX Runtime (one MatMul node, MLAS) at the shape of the graph's
  largest layer for a 4,096-drug batch, and a square one, all in the same run.
- Achieved: W1's 29,952 predictions through `session.run` alone (inputs prepared beforehand),
  and through the whole scoring path (from W1).
- Where time goes: ONNX Runtime's profiler, time per operator type.
- Knobs: session options (threads, spinning, arena, optimisation level) and the drug batch size,
  each timed against the default configuration in alternation; and the drug batch size of the
  whole scoring path (W1's fp32 candidate), where numpy's work between runs shares the cores.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import models
import numpy as np
import w1_flexpert
from common import alternate, summary, target

# Drug batch sizes compared with `score`'s default (graph alone and whole scoring path).
SWEEP_BATCHES = (256, 512, 1024, 4096, 8192)


def graph_macs(path: Path, batch: int = 8) -> dict:
    """Multiply-adds per prediction of every MatMul/Gemm, from the shapes at run time."""
    import onnx
    import onnxruntime as ort

    from unicure_rt.runtime.sessions import cell_feed

    model = onnx.load(str(path))
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    wanted = []
    for node in nodes:
        for name in (*node.input[:2], node.output[0]):
            if name not in inits and name not in wanted:
                wanted.append(name)
    existing = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options)
    rng = np.random.default_rng(0)
    cell = cell_feed(session, rng.normal(size=1280), batch)
    drug = rng.normal(size=(batch, 528)).astype(np.float32)
    values = dict(
        zip(wanted, session.run(wanted, {"cell_embedding": cell, "drug": drug}), strict=True)
    )
    shape = {**{k: list(v.shape) for k, v in values.items()}, **inits}
    rows = []
    for node in nodes:
        a, out = shape[node.input[0]], shape[node.output[0]]
        trans_a = any(x.name == "transA" and x.i for x in node.attribute)
        k = a[-2] if (node.op_type == "Gemm" and trans_a) else a[-1]
        macs = int(np.prod(out)) * k
        rows.append(
            {
                "node": node.name,
                "op": node.op_type,
                "a": shape[node.input[0]],
                "b": shape[node.input[1]],
                "out": out,
                "macs_per_prediction": macs / batch,
            }
        )
    total = sum(r["macs_per_prediction"] for r in rows)
    return {"per_node": rows, "macs_per_prediction": total}


def _ort_matmul(m: int, k: int, n: int, threads: int = 0):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(size=(k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options)
    x = rng.normal(size=(m, k)).astype(np.float32)
    return lambda: session.run(["y"], {"x": x})


def _torch_matmul(a: np.ndarray, b: np.ndarray):
    """PyTorch's CPU GEMM on the same operands, or None where torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return lambda: torch.matmul(ta, tb)


def gemm_peak(repeats: int) -> dict:
    shapes = {"largest_layer_4096": (4096, 2528, 5056), "square_4096": (4096, 4096, 4096)}
    rng = np.random.default_rng(0)
    found = {}
    for label, (m, k, n) in shapes.items():
        a = rng.normal(size=(m, k)).astype(np.float32)
        b = rng.normal(size=(k, n)).astype(np.float32)
        flops = 2.0 * m * k * n
        fns = {"numpy": lambda a=a, b=b: a @ b, "onnxruntime": _ort_matmul(m, k, n)}
        torch_matmul = _torch_matmul(a, b)
        if torch_matmul is not None:
            fns["pytorch"] = torch_matmul
        for fn in fns.values():  # warm-up
            fn()
        times = alternate(fns, repeats)
        for lib, t in times.items():
            found[f"{lib}/{label}"] = {
                "shape_mkn": [m, k, n],
                "best_gflops": flops / min(t) / 1e9,
                "median_gflops": flops / float(np.median(t)) / 1e9,
            }
    best = max(found, key=lambda key: found[key]["best_gflops"])
    return {"measurements": found, "peak_gflops": found[best]["best_gflops"], "peak_from": best}


def default_drug_batch() -> int:
    """`score`'s drugs per FlexPert run (`ScoreOptions.drug_batch`)."""
    from unicure_rt.scoring.options import ScoreOptions

    return ScoreOptions().drug_batch


def graph_inputs(session, problem, drug_batch: int | None = None) -> list[dict]:
    """Feeds for every dose and drug batch of W1 (`score`'s batch size unless given)."""
    from unicure_rt.drugs.vectors import drug_vectors
    from unicure_rt.runtime.sessions import cell_feed

    feeds = []
    for dose in problem.doses:
        for _start, emb in problem.library.iter_batches(drug_batch or default_drug_batch()):
            feeds.append(
                {
                    "cell_embedding": cell_feed(session, problem.cell, len(emb)),
                    "drug": drug_vectors(emb, dose),
                }
            )
    return feeds


def run_graph(session, feeds) -> None:
    for feed in feeds:
        session.run(["expression"], feed)


def profile_ops(path: Path, feeds) -> dict:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "prof")
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        run_graph(session, feeds[:1])  # warm-up is included in the profile; drop it below
        run_graph(session, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    runs = [e for e in events if e.get("name") == "model_run"]
    last_runs = runs[1:]
    start = min(e["ts"] for e in last_runs) if last_runs else 0
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if e["ts"] < start:
            continue
        op = e.get("args", {}).get("op_name", "?")
        per_op[op] = per_op.get(op, 0.0) + e["dur"] / 1e6
    total_runs = sum(e["dur"] for e in last_runs) / 1e6
    total_ops = sum(per_op.values())
    return {
        "model_run_s": total_runs,
        "kernel_s": total_ops,
        "per_op_s": dict(sorted(per_op.items(), key=lambda kv: -kv[1])),
        "per_op_share": {
            k: v / total_ops for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])
        },
    }


def _session(path: Path, **opts):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = opts.get("level", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if opts.get("threads"):
        so.intra_op_num_threads = opts["threads"]
    if "spinning" in opts:
        so.add_session_config_entry("session.intra_op.allow_spinning", opts["spinning"])
    if opts.get("no_arena"):
        so.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def sweep(path: Path, problem, repeats: int, physical: int) -> list[dict]:
    """Each configuration timed over one dose of W1 against the default, alternating."""
    import onnxruntime as ort

    one_dose = type(problem)(
        problem.library, problem.cell, problem.tumour, problem.normal, problem.genes, (1.11,)
    )
    default = default_drug_batch()
    base_session = _session(path)
    base_feeds = graph_inputs(base_session, one_dose, default)
    configs = {
        f"intra_op_threads={physical} (physical cores)": ({"threads": physical}, default),
        "intra_op_threads=1": ({"threads": 1}, default),
        "allow_spinning=0": ({"spinning": "0"}, default),
        "cpu_mem_arena off": ({"no_arena": True}, default),
        "graph level BASIC": ({"level": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}, default),
        "graph level EXTENDED": (
            {"level": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED},
            default,
        ),
        **{f"drug_batch={b}": ({}, b) for b in SWEEP_BATCHES if b != default},
    }
    rows = []
    for label, (opts, batch) in configs.items():
        session = _session(path, **opts) if opts else base_session
        feeds = graph_inputs(session, one_dose, batch) if batch != default else base_feeds
        run_graph(session, feeds[:1])
        times = alternate(
            {
                "default": lambda: run_graph(base_session, base_feeds),
                label: lambda s=session, f=feeds: run_graph(s, f),
            },
            repeats,
        )
        ratio = float(np.median(times["default"]) / np.median(times[label]))
        rows.append(
            {
                "config": label,
                "median_s": float(np.median(times[label])),
                "default_median_s": float(np.median(times["default"])),
                "speed_vs_default": ratio,
            }
        )
    return rows


def scoring_batches(session, problem, repeats: int) -> list[dict]:
    """W1's whole fp32 scoring path (`w1_flexpert.candidate`) at each of `SWEEP_BATCHES`, in
    alternation: unlike the graph alone, it alternates ONNX Runtime runs with numpy work."""
    times = alternate(
        {
            f"drug_batch={b}": lambda b=b: w1_flexpert.candidate(session, problem, drug_batch=b)
            for b in SWEEP_BATCHES
        },
        repeats,
    )
    return [
        {"drug_batch": b, **summary(times[f"drug_batch={b}"]), "default": b == default_drug_batch()}
        for b in SWEEP_BATCHES
    ]


def run(args, work: Path, w1_result: dict | None = None) -> dict:
    from common import cpu_info

    paths = models.w1_bundle(work)
    n_drugs = w1_flexpert.N_DRUGS_QUICK if args.quick else w1_flexpert.N_DRUGS
    repeats = args.repeats or (2 if args.quick else 5)
    flex = paths["bundle"] / "flexpert.onnx"
    macs = graph_macs(flex)
    library = w1_flexpert.make_library(work, n_drugs)
    fp32, _int8 = w1_flexpert.sessions(paths)
    problem = w1_flexpert.make_problem(fp32, library)
    feeds = graph_inputs(fp32, problem)
    n_pred = n_drugs * len(problem.doses)
    flops = 2.0 * macs["macs_per_prediction"] * n_pred
    print("[bench] roofline: GEMM peak", flush=True)
    peak = gemm_peak(repeats)
    print("[bench] roofline: graph-only time", flush=True)
    run_graph(fp32, feeds[:1])
    graph_times = alternate({"graph_only": lambda: run_graph(fp32, feeds)}, repeats)["graph_only"]
    graph_s = float(np.median(graph_times))
    achieved = flops / graph_s / 1e9
    best_achieved = flops / min(graph_times) / 1e9
    result = {
        "macs": macs,
        "n_predictions": n_pred,
        "gflop_total": flops / 1e9,
        "gemm_peak": peak,
        "graph_only": summary(graph_times),
        "achieved_gflops_graph_only": achieved,
        "achieved_gflops_graph_only_best": best_achieved,
        "fraction_of_peak": achieved / peak["peak_gflops"],
        "drug_batch": default_drug_batch(),
    }
    if w1_result:
        e2e = w1_result["times"]["unicure_rt_fp32"]["median_s"]
        result["achieved_gflops_end_to_end"] = flops / e2e / 1e9
        result["fraction_of_peak_end_to_end"] = flops / e2e / 1e9 / peak["peak_gflops"]
        result["scoring_overhead_s"] = e2e - graph_s
    print("[bench] roofline: profiling", flush=True)
    t0 = time.perf_counter()
    result["profile"] = profile_ops(flex, feeds[: max(1, len(feeds) // len(problem.doses))])
    result["profile"]["wall_s"] = time.perf_counter() - t0
    if not args.quick:
        print("[bench] roofline: session option / batch sweep", flush=True)
        result["sweep"] = sweep(flex, problem, 3, cpu_info()["physical_cores"] or 1)
        print("[bench] roofline: scoring path per drug batch", flush=True)
        result["scoring_batches"] = scoring_batches(fp32, problem, 3)
    frac = result["fraction_of_peak"]
    result["targets"] = [
        target(
            "Roofline: fp32 graph at >= 85% of the best fp32 GEMM (numpy, PyTorch, ORT)",
            f"{achieved:.0f} GFLOP/s of {peak['peak_gflops']:.0f} GFLOP/s "
            f"({frac:.0%}; {macs['macs_per_prediction'] / 1e6:.2f} M MACs/prediction)",
            frac >= 0.85,
            ">= 85% of peak",
            f"peak from {peak['peak_from']}",
        )
    ]
    return result
