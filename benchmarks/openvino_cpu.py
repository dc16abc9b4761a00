"""OV: W1's FlexPert graph through OpenVINO's CPU device beside ONNX Runtime's CPU provider.

Issue 22 asks whether another CPU backend is materially faster for these graphs; OpenVINO reads
ONNX files directly, so it needs no export of its own. The feeds are ROOF's graph-only feeds
(`roofline.graph_inputs`: W1's 4,992 drugs x 6 doses in 4,096-drug batches), run through
- ONNX Runtime's CPU provider as unicure-rt runs it (`w1_flexpert.sessions`: `create_session`
  with `RuntimeOptions(device="cpu")`), on the fp32 graph and on its int8 variant;
- OpenVINO's CPU device compiling the same `flexpert.onnx`: its defaults (which on CPUs with
  bf16 or AMX support infer in bf16), `INFERENCE_PRECISION_HINT` f32, and f32 with
  `PERFORMANCE_HINT` LATENCY and THROUGHPUT (the latter with all batches in flight on the
  compiled model's optimal number of infer requests, which is what that hint is for);
all in alternating rounds, medians, predictions/s, and the largest absolute difference of every
output from ONNX Runtime fp32's (an untimed pass, which also warms every backend up). The
bundled demo model's `flexpert.onnx` is measured the same way on the same feeds. Untimed, the
drug rankings of the lower-precision paths (ORT int8, OpenVINO's bf16 default) and of OpenVINO
f32 are held to W1's int8 criterion through the package's own scoring path.

OpenVINO is not a dependency of unicure-rt: where it is not installed the workload measures
nothing and records and prints why (ONNX Runtime alone is W1's and ROOF's business). Run with
`python benchmarks/run.py --only OV` (or `python benchmarks/openvino_cpu.py`, the same).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import models
import numpy as np
import roofline
import w1_flexpert
from common import REPO, alternate, summary, target

OUTPUT = "expression"
MATERIAL_SPEEDUP = 1.2  # the factor that would make an optional extra worth proposing
EQUAL_FIDELITY = 1e-4  # max |output difference| from ORT fp32 that counts as equal fidelity
OPENVINO_SETTINGS = {
    "default": {},
    "f32": {"INFERENCE_PRECISION_HINT": "f32"},
    "f32, LATENCY": {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"},
    "f32, THROUGHPUT": {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"},
}
DEMO_FLEXPERT = REPO / "unicure_rt" / "data" / "default_bundle" / "flexpert.onnx"


def openvino_core():
    """(OpenVINO `Core`, version) or (None, the reason it cannot run here)."""
    try:
        import openvino
    except ImportError as exc:
        return None, f"OpenVINO is not installed ({exc}); `pip install openvino` to measure it"
    return openvino.Core(), openvino.get_version()


def ort_runner(session) -> Callable[[list[dict]], list[np.ndarray]]:
    def run(feeds):
        return [session.run([OUTPUT], feed)[0] for feed in feeds]

    return run


def _text(value) -> str:
    """An OpenVINO property as text (element types by their short name: f32, bf16)."""
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


class OpenVINOSession:
    """The one method of an ONNX Runtime session that `FlexPertRunner` calls, on OpenVINO, so
    that the package's own scoring path ranks drugs from OpenVINO's predictions."""

    def __init__(self, compiled) -> None:
        self.request = compiled.create_infer_request()

    def run(self, names: list[str], feed: dict) -> list[np.ndarray]:
        outputs = self.request.infer(feed)
        return [outputs[name].copy() for name in names]


def ranking_fidelity(sessions: dict, problem, n_patients: int) -> dict:
    """W1's int8 criterion (Spearman, top-20 overlap, max |score diff| vs fp32 scores through
    `w1_flexpert.candidate`) for every session, on W1's patient and `n_patients - 1` more."""
    reference, *others = sessions.values()
    found: dict[str, list] = {name: [] for name in list(sessions)[1:]}
    for i in range(n_patients):
        patient = problem if i == 0 else w1_flexpert.new_cell(problem, seed=1000 + i - 1)
        fp32_scores = w1_flexpert.candidate(reference, patient)[0]
        for name, session in zip(found, others, strict=True):
            scores = w1_flexpert.candidate(session, patient)[0]
            found[name].append(w1_flexpert.fidelity(fp32_scores, scores))
    return {
        name: {
            "per_patient": rows,
            "spearman_min": min(r["spearman"] for r in rows),
            "top20_overlap_min": min(r["top20_overlap"] for r in rows),
            "max_abs_score_diff": max(r["max_abs_score_diff"] for r in rows),
        }
        for name, rows in found.items()
    }


def openvino_runner(core, path: Path, config: dict) -> tuple[Callable, dict]:
    """A function that runs the feeds through `path` compiled for CPU with `config`, and the
    compiled model's effective settings."""
    import openvino

    compiled = core.compile_model(str(path), "CPU", config)
    effective = {
        key: _text(compiled.get_property(key))
        for key in (
            "INFERENCE_PRECISION_HINT",
            "PERFORMANCE_HINT",
            "NUM_STREAMS",
            "INFERENCE_NUM_THREADS",
            "OPTIMAL_NUMBER_OF_INFER_REQUESTS",
        )
    }
    if config.get("PERFORMANCE_HINT") == "THROUGHPUT":
        queue = openvino.AsyncInferQueue(compiled)

        def run(feeds):
            outputs: list = [None] * len(feeds)

            def keep(request, index):
                outputs[index] = request.get_output_tensor(0).data.copy()

            queue.set_callback(keep)
            for index, feed in enumerate(feeds):
                queue.start_async(feed, index)
            queue.wait_all()
            return outputs

        return run, effective
    request = compiled.create_infer_request()

    def run(feeds):
        return [request.infer(feed)[OUTPUT].copy() for feed in feeds]

    return run, effective


def max_abs_diff(reference: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    return float(max(np.max(np.abs(r - o)) for r, o in zip(reference, outputs, strict=True)))


def compare(graphs: dict[str, Callable], feeds: list[dict], repeats: int) -> dict:
    """Fidelity pass (warms up every backend), then alternating timed rounds."""
    reference = None
    fidelity = {}
    for name, run in graphs.items():
        outputs = run(feeds)
        reference = outputs if reference is None else reference
        fidelity[name] = max_abs_diff(reference, outputs)
        print(f"[bench]   {name}: max |diff| vs first {fidelity[name]:.2e}", flush=True)
    scale = float(max(np.max(np.abs(r)) for r in reference))
    times = alternate({name: lambda run=run: run(feeds) for name, run in graphs.items()}, repeats)
    return {
        "times": {name: summary(t) for name, t in times.items()},
        "max_abs_diff": fidelity,
        "max_abs_output": scale,
    }


def table(graphs: dict, measured: dict, n_predictions: int, ort_name: str) -> list[dict]:
    """One row per backend/setting: median, predictions/s, speed vs ORT fp32 (of the medians and
    per round), fidelity."""
    base = measured["times"][ort_name]["median_s"]
    base_rounds = measured["times"][ort_name]["samples_s"]
    return [
        {
            "backend": name,
            "median_s": measured["times"][name]["median_s"],
            "min_s": measured["times"][name]["min_s"],
            "predictions_per_s": n_predictions / measured["times"][name]["median_s"],
            "speed_vs_ort_fp32": base / measured["times"][name]["median_s"],
            # per round (the machine's load changes between rounds, less within one)
            "paired_speed_vs_ort_fp32": sorted(
                b / x
                for b, x in zip(base_rounds, measured["times"][name]["samples_s"], strict=True)
            ),
            "max_abs_diff_vs_ort_fp32": measured["max_abs_diff"][name],
            **graphs[name],
        }
        for name in measured["times"]
    ]


def graph_label(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def backends(core, path: Path, ort_sessions: dict, int8_path: Path | None = None):
    """Runners for one graph and their facts: `ort_sessions` ({name: (session, graph path)})
    first, the first of them the reference, then OpenVINO's settings on `path`;
    with `int8_path`, OpenVINO also compiles the int8 variant (f32 hint), where it can."""
    runners = {name: ort_runner(session) for name, (session, _) in ort_sessions.items()}
    facts = {name: {"graph": graph_label(graph)} for name, (_, graph) in ort_sessions.items()}
    compiles = [(f"OpenVINO CPU {s}", path, c) for s, c in OPENVINO_SETTINGS.items()]
    if int8_path is not None:
        compiles.append(("OpenVINO CPU f32 hint, int8 graph", int8_path, OPENVINO_SETTINGS["f32"]))
    for name, graph, config in compiles:
        try:
            runners[name], effective = openvino_runner(core, graph, config)
        except RuntimeError as exc:  # an operator OpenVINO cannot compile: say so, go on
            print(f"[bench]   {name}: OpenVINO cannot compile {graph}: {exc}", flush=True)
            continue
        facts[name] = {"graph": graph_label(graph), "config": config, "effective": effective}
    return runners, facts


def run(args, work: Path) -> dict:
    from unicure_rt.runtime.sessions import RuntimeOptions, create_session

    core, ov_version = openvino_core()
    if core is None:  # ORT alone is W1's and ROOF's business
        print(f"[bench] OV: skipping OpenVINO: {ov_version}", flush=True)
        return {"openvino": None, "openvino_skipped": ov_version, "targets": []}
    paths = models.w1_bundle(work)
    n_drugs = w1_flexpert.N_DRUGS_QUICK if args.quick else w1_flexpert.N_DRUGS
    repeats = args.repeats or (1 if args.quick else 5)
    library = w1_flexpert.make_library(work, n_drugs)
    fp32, int8 = w1_flexpert.sessions(paths)
    problem = w1_flexpert.make_problem(fp32, library)
    feeds = roofline.graph_inputs(fp32, problem)
    n_pred = n_drugs * len(problem.doses)
    result: dict = {
        "n_drugs": n_drugs,
        "n_doses": len(problem.doses),
        "predictions": n_pred,
        "batches": len(feeds),
        "repeats": repeats,
        "openvino": ov_version,
        "openvino_skipped": None,
        "cpu_device": core.get_property("CPU", "FULL_DEVICE_NAME"),
        "cpu_default_precision": _text(core.get_property("CPU", "INFERENCE_PRECISION_HINT")),
    }
    graphs = {}
    print(f"[bench] OV: W1 graph, {n_pred:,} predictions, {repeats} alternating rounds", flush=True)
    w1_graph = paths["bundle"] / "flexpert.onnx"
    int8_graph = paths["int8_dir"] / "flexpert.onnx"
    runners, facts = backends(
        core,
        w1_graph,
        {"ORT CPU fp32": (fp32, w1_graph), "ORT CPU int8": (int8, int8_graph)},
        int8_graph,
    )
    measured = compare(runners, feeds, repeats)
    graphs["w1"] = table(facts, measured, n_pred, "ORT CPU fp32")
    scales = {"w1": measured["max_abs_output"]}
    print("[bench] OV: the bundled demo model's flexpert.onnx", flush=True)
    demo, _ = create_session(DEMO_FLEXPERT, RuntimeOptions(device="cpu"))
    runners, facts = backends(core, DEMO_FLEXPERT, {"ORT CPU fp32": (demo, DEMO_FLEXPERT)})
    measured = compare(runners, feeds, repeats)
    graphs["demo"] = table(facts, measured, n_pred, "ORT CPU fp32")
    scales["demo"] = measured["max_abs_output"]
    print("[bench] OV: rankings from each precision, W1 graph (untimed)", flush=True)
    result["ranking_vs_ort_fp32"] = ranking_fidelity(
        {
            "ORT CPU fp32": fp32,
            "ORT CPU int8": int8,
            "OpenVINO CPU default": OpenVINOSession(core.compile_model(str(w1_graph), "CPU")),
            "OpenVINO CPU f32": OpenVINOSession(
                core.compile_model(str(w1_graph), "CPU", OPENVINO_SETTINGS["f32"])
            ),
        },
        problem,
        1 if args.quick else 4,
    )
    result["graphs"] = graphs
    result["max_abs_output"] = scales
    result["targets"] = [_verdict(rows, label) for label, rows in graphs.items()]
    return result


def _verdict(rows: list[dict], graph: str) -> dict:
    """Is the fastest OpenVINO setting at equal fidelity >= MATERIAL_SPEEDUP x ORT fp32?"""
    fair = [
        r
        for r in rows
        if r["backend"].startswith("OpenVINO") and r["max_abs_diff_vs_ort_fp32"] <= EQUAL_FIDELITY
    ]
    best = max(fair, key=lambda r: r["speed_vs_ort_fp32"], default=None)
    measured = (
        f"{best['backend']}: {best['speed_vs_ort_fp32']:.2f}x ORT fp32, max |diff| "
        f"{best['max_abs_diff_vs_ort_fp32']:.1e}"
        if best
        else f"no OpenVINO setting within {EQUAL_FIDELITY:.0e} of ORT fp32"
    )
    return target(
        f"OpenVINO CPU materially faster than ORT CPU ({graph} graph, equal fidelity)",
        measured,
        None,
        f">= {MATERIAL_SPEEDUP}x at max |diff| <= {EQUAL_FIDELITY:.0e}",
        "information for the lead: OpenVINO is no dependency of unicure-rt",
    )


if __name__ == "__main__":
    import sys

    import run as runner

    sys.exit(runner.main(["--only", "OV", *sys.argv[1:]]))
