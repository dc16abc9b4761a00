"""Render `benchmarks/results.json` as `benchmarks/RESULTS.md`."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

SECTIONS = Path(__file__).with_name("sections")


def status_cell(passed) -> str:
    return {True: "**pass**", False: "**FAIL**", None: "info"}[passed]


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _targets(results: dict) -> list[str]:
    lines = [
        "| workload | target | goal | measured | result | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("W1", "ROOF", "W2", "W3", "W4", "W4P", "OV"):
        entry = results.get(name)
        if not entry:
            continue
        if "error" in entry:
            lines.append(f"| {name} | (run failed) | | see results.json | **ERROR** | |")
            continue
        for t in entry["result"]["targets"]:
            measured = t["measured"].replace("|", "&#124;")
            lines.append(
                f"| {name} | {t['target']} | {t['goal']} | {measured} | "
                f"{status_cell(t['passed'])} | {t['note']} |"
            )
    return lines


def _cpu(cpu: dict) -> str:
    return (
        f"{cpu['model']}, {cpu['physical_cores']} physical cores, {cpu['logical_cpus']} logical "
        f"CPUs, L3 {cpu['l3_cache']}, SIMD {', '.join(cpu['simd'])}"
    )


def _conditions(entry: dict, machine: dict) -> str:
    busy = entry.get("busy_before") or []
    text = (
        f"Run {entry['date']}, `{entry['command']}`, {entry['wall_s']:.0f} s; load average "
        f"before {entry['load_average_before']}, after {entry['load_average_after']}"
    )
    if busy:
        text += f"; **other heavy processes were running**: {busy}"
    ran_on = entry.get("machine", machine)["cpu"]
    if ran_on != machine["cpu"]:
        text += f". **Another machine than above**: {_cpu(ran_on)}"
    return text + "."


def signed_weights_sentence(record: dict | None) -> str:
    """How the int8 graph's uint8 weights ran (`unicure_rt.runtime.int8_weights`)."""
    if record is None:
        return "."
    if record["graphs"]:
        return (
            f"; its uint8 weights ran as the exact int8 ones on this CPU's VNNI kernels "
            f"({', '.join(record['vnni_flags'])}; `unicure_rt.runtime.int8_weights`)."
        )
    return "; its uint8 weights ran as they are (no VNNI on this CPU)."


def _w1(r: dict) -> list[str]:
    t = r["times"]
    lines = [
        f"{r['n_drugs']:,} drugs x {r['n_doses']} doses = {r['predictions']:,} predictions for one "
        f"patient; {r['repeats']} alternating repeats (baseline, fp32, int8 in turn), medians. "
        f"Model: {r['model']}. PyTorch threads: {r['torch_threads']}.",
        "",
        "| path | median s | min s | predictions/s | speed-up vs baseline |",
        "| --- | --- | --- | --- | --- |",
    ]
    base = t["baseline_pytorch_pandas"]["median_s"]
    for name, label in (
        ("baseline_pytorch_pandas", "baseline: PyTorch eager FlexPert + pandas Pearson loop"),
        ("unicure_rt_fp32", "unicure-rt fp32 (`flexpert.onnx`, FlexPertRunner, reversal_scores)"),
        ("unicure_rt_int8", "unicure-rt int8 (same path, int8 variant)"),
    ):
        s = t[name]
        lines.append(
            f"| {label} | {s['median_s']:.2f} | {s['min_s']:.2f} | "
            f"{r['predictions_per_s'][name]:,.0f} | {base / s['median_s']:.2f}x |"
        )
    same = r["fp32_vs_baseline"]
    paired = r["paired_speedups"]
    lines += [
        "",
        f"Per-round (paired) speed-ups: fp32 {', '.join(f'{x:.2f}' for x in paired['fp32'])}; "
        f"int8 {', '.join(f'{x:.2f}' for x in paired['int8'])}.",
        "",
        f"Same ranking: max |score(fp32) - score(baseline)| = {same['max_abs_score_diff']:.2e}; "
        f"ranks identical: {same['ranks_identical']} ({same['n_rank_differences']} differ"
        + (
            "; "
            + "; ".join(
                f"drug {d['drug']}: rank {d['baseline_rank']} (baseline) vs {d['fp32_rank']} "
                f"(fp32), scores {d['baseline_score']:.9f} vs {d['fp32_score']:.9f}"
                for d in same.get("rank_differences", [])
            )
            if same.get("rank_differences")
            else ""
        )
        + ")."
        + (
            f" Smallest gap between two baseline scores: {same['min_gap_between_scores']:.1e}."
            if "min_gap_between_scores" in same
            else ""
        ),
        "",
        "int8 vs fp32 (reversal scores, per patient; the timed patient first, then untimed "
        "extra patients): "
        + "; ".join(
            f"Spearman {f['spearman']:.4f}, top-20 overlap {f['top20_overlap']}/20"
            for f in r["int8_vs_fp32"]["per_patient"]
        )
        + f". int8 graph from {r['int8_source']}: `{json.loads(r['int8_settings'])}`"
        + signed_weights_sentence(r.get("int8_signed_weights")),
    ]
    return lines


def _roof(r: dict) -> list[str]:
    peak = r["gemm_peak"]
    lines = [
        f"FLOPs counted from the MatMul/Gemm nodes of the fp32 `flexpert.onnx` at their run-time "
        f"shapes: **{r['macs']['macs_per_prediction'] / 1e6:.2f} M multiply-adds per "
        f"prediction**, {r['gflop_total']:.0f} GFLOP for W1's {r['n_predictions']:,} "
        "predictions.",
        "",
        "| node | op | A | B | out | M MACs / prediction |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n in r["macs"]["per_node"]:
        lines.append(
            f"| {n['node']} | {n['op']} | {n['a']} | {n['b']} | {n['out']} | "
            f"{n['macs_per_prediction'] / 1e6:.3f} |"
        )
    lines += [
        "",
        "Measured fp32 GEMM peak on this machine (best of the repeats):",
        "",
        "| library / shape (M, K, N) | best GFLOP/s | median GFLOP/s |",
        "| --- | --- | --- |",
    ]
    for key, m in peak["measurements"].items():
        lines.append(
            f"| {key} {tuple(m['shape_mkn'])} | {m['best_gflops']:.0f} | {m['median_gflops']:.0f} |"
        )
    lines += [
        "",
        f"Peak used: **{peak['peak_gflops']:.0f} GFLOP/s** ({peak['peak_from']}).",
        "",
        f"Achieved by the fp32 graph (only `session.run` over W1's inputs, batches of "
        f"{r.get('drug_batch', 4096):,}, "
        f"median {r['graph_only']['median_s']:.2f} s): **{r['achieved_gflops_graph_only']:.0f} "
        f"GFLOP/s = {r['fraction_of_peak']:.0%} of peak** (best repeat "
        f"{r['achieved_gflops_graph_only_best']:.0f} GFLOP/s).",
    ]
    if "achieved_gflops_end_to_end" in r:
        lines.append(
            f"Through the whole W1 scoring path: {r['achieved_gflops_end_to_end']:.0f} GFLOP/s "
            f"({r['fraction_of_peak_end_to_end']:.0%} of peak); scoring outside the graph "
            f"(drug vectors, Pearson, ranking) costs {r['scoring_overhead_s']:.2f} s."
        )
    prof = r["profile"]
    lines += [
        "",
        f"ONNX Runtime profile (one dose of W1, {prof['model_run_s']:.2f} s in `model_run`, "
        f"{prof['kernel_s']:.2f} s in kernels):",
        "",
        "| operator | seconds | share |",
        "| --- | --- | --- |",
    ]
    for op, s in prof["per_op_s"].items():
        lines.append(f"| {op} | {s:.3f} | {prof['per_op_share'][op]:.1%} |")
    if r.get("sweep"):
        lines += [
            "",
            "Session options and drug batch size, each timed over one dose of W1 against the "
            "default configuration (ORT_ENABLE_ALL, default threads, spinning on, arena on, "
            f"batch {r.get('drug_batch', 4096):,}) in alternation:",
            "",
            "| configuration | median s | default median s | speed vs default |",
            "| --- | --- | --- | --- |",
        ]
        for row in r["sweep"]:
            lines.append(
                f"| {row['config']} | {row['median_s']:.3f} | {row['default_median_s']:.3f} | "
                f"{row['speed_vs_default']:.2f}x |"
            )
    if r.get("scoring_batches"):
        lines += [
            "",
            "The whole fp32 scoring path of W1 (`w1_flexpert.candidate`: FlexPert runs, effects, "
            "scores, the per-drug null, ranking) at each drug batch size, in alternation:",
            "",
            "| drug batch | median s | min s | max s |",
            "| --- | --- | --- | --- |",
        ]
        for row in r["scoring_batches"]:
            label = f"{row['drug_batch']:,}" + (" (default)" if row["default"] else "")
            lines.append(
                f"| {label} | {row['median_s']:.2f} | {row['min_s']:.2f} | {row['max_s']:.2f} |"
            )
    return lines


def _w2(r: dict) -> list[str]:
    lines = [
        f"Published sizes (d_model 1280, 20 heads, d_ff 5120, token_dim 5120, `reference` "
        f"padding to 1536), random weights, vocabulary of {r['vocab_genes']:,} genes; exported "
        f"with `export_bundle` at {r['layers_measured']} layers, each in its own process; the "
        "33-layer figures are linear fits in the layer count.",
        "",
        "| layers | batch | PyTorch eager s/sentence | fp32 s/sentence | int8 s/sentence | "
        "max abs embedding diff (fp32 vs eager) | export s | export peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, row in r["per_layer_count"].items():
        for batch, t in row["timings"].items():
            lines.append(
                f"| {n} | {batch} | {t['pytorch_eager']['per_sentence_s']:.3f} | "
                f"{t['unicure_rt_fp32']['per_sentence_s']:.3f} | "
                f"{t['unicure_rt_int8']['per_sentence_s']:.3f} | "
                f"{row['max_abs_embedding_diff']:.1e} | {row['export']['export_s']:.0f} | "
                f"{row['export']['peak_rss_mib']:.0f} |"
            )
    lines += [
        "",
        "| batch | path | s/sentence fixed part | s/sentence per layer | 33 layers s/sentence |",
        "| --- | --- | --- | --- | --- |",
    ]
    for batch, paths in r["extrapolated_per_sentence"].items():
        for name, fit in paths.items():
            lines.append(
                f"| {batch} | {name} | {fit['intercept_s']:.3f} | {fit['per_layer_s']:.3f} | "
                f"{fit['full_33_layers_per_sentence_s']:.2f} |"
            )
    a = r["analytic"]
    fit = r["bundle_size_fit"]
    lines += [
        "",
        f"Bundle size: published checkpoint = 742 M parameters x 4 B + the 145,469 x 5120 "
        f"float32 token table = {_gb(r['published_checkpoint_bytes'])}. Fitted over the measured "
        f"bundles: fp32 {_gb(fit['fp32']['intercept_bytes'])} + "
        f"{fit['fp32']['per_layer_bytes'] / 1e6:.1f} MB/layer -> "
        f"**{_gb(fit['fp32']['full_33_bytes'])} ({r['ratio_fp32']:.1%})** at 33 layers; int8 "
        f"{_gb(fit['int8']['intercept_bytes'])} + {fit['int8']['per_layer_bytes'] / 1e6:.1f} "
        f"MB/layer -> **{_gb(fit['int8']['full_33_bytes'])} ({r['ratio_int8']:.1%})**. "
        f"Analytic fp32 (parameter counts: {a['encoder_params'] / 1e6:.1f} M encoder incl. "
        f"{a['per_layer_params'] / 1e6:.2f} M per layer, token table {a['vocab_tokens']:,} x "
        f"1280, folded FlexPert {a['folded_flexpert_params'] / 1e6:.1f} M): "
        f"{_gb(a['bundle_bytes_fp32'])}.",
    ]
    return lines


def _w3(r: dict) -> list[str]:
    s = r["startup"][0]
    # runs before the command modules imported their logic lazily have no separate figure
    score_imports = (
        f"+ score's imports {s['import_score_s']:.2f} s " if "import_score_s" in s else ""
    )
    return [
        f"Bundle: {r['bundle_label']} (`{r['bundle']}`). Command: `{r['command']}`.",
        "",
        f"- wall time (subprocess, median of {r['wall']['n']}): **{r['wall']['median_s']:.1f} s** "
        f"(samples {r['wall']['samples_s']}); peak RSS **{r['peak_rss_mib']:.0f} MiB** "
        "(/usr/bin/time -v)",
        f"- work: {r['n_profiles']} tumour profiles x {r['n_drugs']} drugs x 6 doses, "
        f"{r['draws']} draws; providers {r['providers']}",
        f"- stage timings from run.json (a run with `--out`): {r['run_json_timings_s']}",
        f"- start-up (fresh interpreter, median of {len(r['startup'])}): **"
        f"{r['startup_median_s']:.2f} s** = import `unicure_rt.cli.app` {s['import_cli_s']:.2f} s "
        f"{score_imports}+ `load_bundle` {s['load_bundle_s']:.2f} s + library "
        f"({s['n_drugs']} drugs) {s['load_library_s']:.2f} s + two ORT sessions "
        f"{s['create_sessions_s']:.2f} s; "
        f"with interpreter start {r['startup_process_wall_median_s']:.2f} s; "
        f"`unicure-rt --help` {r['help_wall_median_s']:.2f} s",
    ]


def _w4(r: dict) -> list[str]:
    lines = [
        f"Bundle: {r['bundle_label']} (`{r['bundle']}`). One tumour profile (first of the TCGA "
        "example), 1 draw, 6 doses, `score_patient` with the top-10 predictions kept; a fresh "
        "process per library; libraries of synthetic float16 embeddings.",
        "",
        "| runner | drugs | library file MiB | predictions | scoring s | predictions/s | "
        "RSS after load MiB | peak RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in r["rows"]:
        lines.append(
            f"| streaming (this version) | {row['n_drugs']:,} | {row['library_file_mib']:.0f} | "
            f"{row['predictions']:,} | {row['scoring_s']:.1f} | {row['predictions_per_s']:,.0f} | "
            f"{row['rss_after_load_mib']:.0f} | {row['peak_rss_mib']:.0f} |"
        )
    return lines


def _w4p(r: dict) -> list[str]:
    lines = [
        f"Model: {r['model']}. One tumour profile (first of the TCGA example), {r['draws']} draw, "
        "6 doses, `score_patient` with the top-10 predictions kept; each bundle in a fresh "
        "process on the same synthetic float16 library; load average read before and after "
        "each process.",
        "",
        "| precision | drugs | library file MiB | predictions | scoring s | predictions/s | "
        "RSS after load MiB | peak RSS MiB | load before | load after | run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in r["rows"]:
        run = "this run"
        if "measured_in" in row:
            run = f"{row['measured_in']['date']} (`{row['measured_in']['command']}`)"
        lines.append(
            f"| {row['precision']} | {row['n_drugs']:,} | {row['library_file_mib']:.0f} | "
            f"{row['predictions']:,} | {row['scoring_s']:.0f} | {row['predictions_per_s']:,.0f} | "
            f"{row['rss_after_load_mib']:.0f} | {row['peak_rss_mib']:.0f} | "
            f"{row['load_average_before']} | {row['load_average_after']} | {run} |"
        )
    return lines


def _paired(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"


def _ov(r: dict) -> list[str]:
    if r["openvino_skipped"]:
        return [f"OpenVINO skipped: {r['openvino_skipped']}."]
    lines = [
        f"OpenVINO {r['openvino']} on `{r['cpu_device']}` (its CPU device's default inference "
        f"precision here: {r['cpu_default_precision']}). The same feeds through every backend: "
        f"{r['n_drugs']:,} drugs x {r['n_doses']} doses = {r['predictions']:,} predictions in "
        f"{r['batches']} batches of up to 4,096 drugs (ROOF's graph-only feeds, `session.run` or "
        f"an infer request per batch; THROUGHPUT: all batches in flight on an `AsyncInferQueue`); "
        f"{r['repeats']} alternating rounds, medians. ORT: `create_session` with "
        "`RuntimeOptions(device='cpu')`, as `unicure-rt score --device cpu` runs it. Fidelity: "
        "the largest |output - ORT fp32 output| over every prediction and gene.",
    ]
    titles = {
        "w1": "W1's published-size FlexPert (`bundle_fp32/flexpert.onnx`)",
        "demo": "the bundled demo model's FlexPert (`unicure_rt/data/default_bundle`)",
    }
    for graph, rows in r["graphs"].items():
        lines += [
            "",
            f"{titles[graph]} (ORT fp32 outputs up to |{r['max_abs_output'][graph]:.2f}|):",
            "",
            "| backend / setting | graph | median s | min s | predictions/s | speed vs ORT fp32 | "
            "per round: median (range) | max abs diff vs ORT fp32 |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in rows:
            lines.append(
                f"| {row['backend']} | `{row['graph']}` | {row['median_s']:.2f} | "
                f"{row['min_s']:.2f} | {row['predictions_per_s']:,.0f} | "
                f"{row['speed_vs_ort_fp32']:.2f}x | {_paired(row['paired_speed_vs_ort_fp32'])} | "
                f"{row['max_abs_diff_vs_ort_fp32']:.1e} |"
            )
        effective = {
            row["backend"]: row["effective"] for row in rows if row.get("effective") is not None
        }
        lines += [
            "",
            "OpenVINO's effective settings: "
            + "; ".join(
                f"{name.removeprefix('OpenVINO CPU ')}: "
                + ", ".join(f"{k.lower()} {v}" for k, v in e.items())
                for name, e in effective.items()
            )
            + ".",
        ]
    ranking = r.get("ranking_vs_ort_fp32", {})
    lines += [
        "",
        "Rankings of W1's graph against ORT fp32's (unicure-rt's scoring path, "
        f"{len(next(iter(ranking.values()))['per_patient'])} patient(s); W1's int8 criterion: "
        "Spearman >= 0.99 and top-20 overlap >= 18/20 per patient):",
        "",
        "| backend / setting | Spearman min | top-20 overlap min | max abs score diff |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, f in ranking.items():
        lines.append(
            f"| {name} | {f['spearman_min']:.5f} | {f['top20_overlap_min']}/20 | "
            f"{f['max_abs_score_diff']:.1e} |"
        )
    return lines


def render(results: dict) -> str:
    m = results["machine"]
    cpu = m["cpu"]
    out = [
        "# unicure-rt benchmarks",
        "",
        "Written by `python benchmarks/run.py` (see its docstring for options); raw numbers in "
        "`benchmarks/results.json`. Timings are wall-clock medians of alternating repeats "
        "(baseline and candidate in the same process, in turn); never of unit tests.",
        "",
        "## Machine",
        "",
        f"- CPU: {_cpu(cpu)} (a section measured on another machine names its own)",
        f"- RAM: {m['ram_gib']} GiB; OS: {m['os']}; no GPU (CPUExecutionProvider)",
        f"- versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}",
        "",
        "## Targets",
        "",
        *_targets(results),
    ]
    sections = {
        "W1": ("W1: one patient, full published FlexPert", _w1),
        "ROOF": ("Roofline of W1's fp32 graph", _roof),
        "W2": ("W2: backbone at published size", _w2),
        "W3": ("W3: the bundled default model end to end", _w3),
        "W4": ("W4: scale to 1,000,000 compounds", _w4),
        "W4P": ("W4 at published size: 1,000,000 compounds, published-size FlexPert", _w4p),
        "OV": ("OV: OpenVINO's CPU device beside ONNX Runtime's (issue 22)", _ov),
    }
    for name, spec in sections.items():
        if name not in results:
            continue
        title, fn = spec
        entry = results[name]
        out += ["", f"## {title}", "", _conditions(entry, m), ""]
        if "error" in entry:
            out += ["```", entry["error"], "```"]
        else:
            out += fn(entry["result"])
    notes = Path(__file__).with_name("notes.md")
    if notes.exists():
        out += ["", notes.read_text().strip()]
    for extra in sorted(SECTIONS.glob("*.md")):  # written by the stand-alone benchmarks
        out += ["", extra.read_text().strip()]
    return "\n".join(out) + "\n"


def write_section(name: str, text: str) -> None:
    """Keep a stand-alone benchmark's section and re-render RESULTS.md with it."""
    SECTIONS.mkdir(exist_ok=True)
    (SECTIONS / f"{name}.md").write_text(text.strip() + "\n")
    results = Path(__file__).with_name("results.json")
    if results.exists():
        Path(__file__).with_name("RESULTS.md").write_text(render(json.loads(results.read_text())))


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("results.json")
    sys.stdout.write(render(json.loads(path.read_text())))
