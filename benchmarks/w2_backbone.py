"""W2: the published backbone (d_model 1280, 20 heads, d_ff 5120, `reference` padding 1536).

Seconds per sentence of `backbone.onnx` (ONNX Runtime, CPU) against the published PyTorch module
(eager `Backbone` with padding="reference": token table -> normalise -> Linear 5120->1280 ->
GELU -> LayerNorm, positions, post-norm layers with the +1.0 padding bias, CLS head), and the
bundle size against the published checkpoint.

The full 33 layers are ~2.6 GB of float32 transformer weights; exporting them through the dynamo
exporter and the parity gate needs several copies in memory and tens of minutes on this machine,
so each layer count in `LAYERS` is exported and timed in its own process and the per-sentence
time and the bundle size are extrapolated linearly in the layer count (fit over the measured
layer counts). The full-size bundle size is also computed analytically from parameter counts.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import models
import numpy as np
from common import BENCH, alternate, child_json, peak_rss_mib, summary, target

LAYERS = (2, 6)
LAYERS_QUICK = (1, 2)
FULL_LAYERS = 33
PUBLISHED_PARAMS = 742e6  # reference section 6, without the token table
PUBLISHED_TABLE_BYTES = 145_469 * 5120 * 4


def _sentences(manifest: dict, batch: int, seed: int = 0):
    from unicure_rt.runtime.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_spec(manifest["tokenizer"])
    rng = np.random.default_rng(seed)
    profiles = rng.lognormal(2.0, 1.0, size=(batch, len(tokenizer.genes)))
    return tokenizer.encode(profiles, [f"s{i}" for i in range(batch)], seed=seed)


def _bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).iterdir() if p.is_file())


def child(work: Path, n_layers: int, repeats: int, batches: list[int]) -> dict:
    """Export (cached) and time one layer count; run in its own process."""
    import torch

    from unicure_rt.runtime.sessions import RuntimeOptions, create_session

    paths = models.w2_bundle(work, n_layers)
    export = json.loads(paths["export"].read_text())
    manifest = json.loads((paths["bundle"] / "manifest.json").read_text())
    from unicure_rt.train.models.unicure import load_native

    model, _ = load_native(paths["native"])
    backbone = model.backbone.eval()
    session, provider = create_session(
        paths["bundle"] / "backbone.onnx", RuntimeOptions(device="cpu")
    )
    int8_session, _ = create_session(
        paths["int8_dir"] / "backbone.onnx", RuntimeOptions(device="cpu")
    )
    timings = {}
    max_abs = 0.0
    for batch in batches:
        tokens, mask = _sentences(manifest, batch)
        t_tokens, t_mask = torch.from_numpy(tokens), torch.from_numpy(mask)
        feeds = {"tokens": tokens, "mask": mask}

        def eager(tt=t_tokens, tm=t_mask):
            with torch.no_grad():
                return backbone(tt, tm)

        def ort32(f=feeds):
            return session.run(["cell_embedding"], f)[0]

        def ort8(f=feeds):
            return int8_session.run(["cell_embedding"], f)[0]

        want, got = eager().numpy(), ort32()
        max_abs = max(max_abs, float(np.abs(want - got).max()))
        ort8()
        times = alternate(
            {"pytorch_eager": eager, "unicure_rt_fp32": ort32, "unicure_rt_int8": ort8}, repeats
        )
        timings[str(batch)] = {
            name: {**summary(t), "per_sentence_s": float(np.median(t)) / batch}
            for name, t in times.items()
        }
    from unicure_rt.train.export.precision import _graph_bytes

    return {
        "n_layers": n_layers,
        "provider": provider,
        "timings": timings,
        "max_abs_embedding_diff": max_abs,
        "export": export,
        "bundle_bytes_fp32": _bytes(paths["bundle"]),
        "graph_bytes_fp32": {
            g: _graph_bytes(paths["bundle"], f"{g}.onnx") for g in ("backbone", "flexpert")
        },
        "graph_bytes_int8": {
            g: _graph_bytes(paths["int8_dir"], f"{g}.onnx") for g in ("backbone", "flexpert")
        },
        "peak_rss_mib": peak_rss_mib(),
    }


def analytic_sizes(vocab_tokens: int) -> dict:
    """Parameters of the exported graphs at full size, counted on meta-device modules."""
    import torch

    from unicure_rt.train.models import UniCure

    config = models.w2_config(FULL_LAYERS, vocab_tokens)
    with torch.device("meta"):
        model = UniCure(config)
    encoder = sum(p.numel() for p in model.backbone.encoder.parameters())
    positions = config.pad_length * config.d_model
    table = vocab_tokens * config.d_model
    c = config
    folded_flexpert = (
        2 * (c.window * c.attn_dim + c.attn_dim)  # query_map, key_map
        + (c.n_cell_windows * c.window + 1) * c.fusion_dim  # fusion_in (value_map folded)
        + (c.fusion_dim + 1) * c.decoder_hidden  # fusion_out (fusion_decoder.3 folded)
        + (c.decoder_hidden + 1) * c.n_genes
    )
    per_layer = sum(
        p.numel() for p in model.backbone.encoder.transformer_encoder.layers[0].parameters()
    )
    fp32 = 4 * (encoder + positions + table + folded_flexpert)
    return {
        "vocab_tokens": vocab_tokens,
        "encoder_params": encoder,
        "per_layer_params": per_layer,
        "token_table_params": table,
        "folded_flexpert_params": folded_flexpert,
        "bundle_bytes_fp32": fp32,
        # int8: every MatMul weight (layers, head, flexpert) at 1 byte; table, positions,
        # biases and norms stay float32 (the quantizer only touches MatMul/Gemm weights)
    }


def _fit(xs: list[int], ys: list[float]) -> tuple[float, float]:
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(intercept), float(slope)


def run(args, work: Path) -> dict:
    layers = LAYERS_QUICK if args.quick else LAYERS
    repeats = args.repeats or (1 if args.quick else 3)
    batches = [1] if args.quick else [1, 4]
    per_layer = {}
    for n in layers:
        print(f"[bench] W2: {n} layer(s) (export is cached in {work})", flush=True)
        per_layer[n] = child_json(
            [
                str(BENCH / "w2_backbone.py"),
                "--work",
                str(work),
                "--layers",
                str(n),
                "--repeats",
                str(repeats),
                "--batches",
                ",".join(map(str, batches)),
            ]
        )
    xs = list(layers)
    extrapolated = {}
    for batch in map(str, batches):
        extrapolated[batch] = {}
        for name in ("pytorch_eager", "unicure_rt_fp32", "unicure_rt_int8"):
            a, b = _fit(xs, [per_layer[n]["timings"][batch][name]["per_sentence_s"] for n in xs])
            extrapolated[batch][name] = {
                "intercept_s": a,
                "per_layer_s": b,
                "full_33_layers_per_sentence_s": a + b * FULL_LAYERS,
            }
    size_fit = {}
    for key in ("fp32", "int8"):
        totals = [
            sum(per_layer[n][f"graph_bytes_{key}"].values())
            + (per_layer[n]["bundle_bytes_fp32"] - sum(per_layer[n]["graph_bytes_fp32"].values()))
            for n in xs
        ]
        a, b = _fit(xs, totals)
        size_fit[key] = {
            "intercept_bytes": a,
            "per_layer_bytes": b,
            "full_33_bytes": a + b * FULL_LAYERS,
        }
    vocab_tokens = 3 + 25 + models.N_VOCAB_GENES
    analytic = analytic_sizes(vocab_tokens)
    published = PUBLISHED_PARAMS * 4 + PUBLISHED_TABLE_BYTES
    ratio32 = size_fit["fp32"]["full_33_bytes"] / published
    ratio8 = size_fit["int8"]["full_33_bytes"] / published
    ex = extrapolated["1"]
    speed = (
        ex["pytorch_eager"]["full_33_layers_per_sentence_s"]
        / (ex["unicure_rt_fp32"]["full_33_layers_per_sentence_s"])
    )
    speed8 = (
        ex["pytorch_eager"]["full_33_layers_per_sentence_s"]
        / (ex["unicure_rt_int8"]["full_33_layers_per_sentence_s"])
    )
    result = {
        "layers_measured": xs,
        "vocab_genes": models.N_VOCAB_GENES,
        "per_layer_count": {str(k): v for k, v in per_layer.items()},
        "extrapolated_per_sentence": extrapolated,
        "bundle_size_fit": size_fit,
        "analytic": analytic,
        "published_checkpoint_bytes": published,
        "ratio_fp32": ratio32,
        "ratio_int8": ratio8,
        "speedup_fp32_33_layers": speed,
        "speedup_int8_33_layers": speed8,
    }
    result["targets"] = [
        target(
            "W2 bundle size fp32 <= 40% of published checkpoint",
            f"{size_fit['fp32']['full_33_bytes'] / 1e9:.2f} GB vs {published / 1e9:.2f} GB "
            f"({ratio32:.1%}); analytic {analytic['bundle_bytes_fp32'] / 1e9:.2f} GB",
            ratio32 <= 0.40,
            "<= 40%",
            f"extrapolated from {xs} layers; the 33 transformer layers alone are "
            f"{33 * analytic['per_layer_params'] * 4 / 1e9:.2f} GB at fp32",
        ),
        target(
            "W2 bundle size int8 <= 20% of published checkpoint",
            f"{size_fit['int8']['full_33_bytes'] / 1e9:.2f} GB ({ratio8:.1%})",
            ratio8 <= 0.20,
            "<= 20%",
            f"extrapolated from {xs} layers",
        ),
        target(
            "W2 seconds per sentence, fp32, no slower than PyTorch eager",
            f"{ex['unicure_rt_fp32']['full_33_layers_per_sentence_s']:.2f} s vs "
            f"{ex['pytorch_eager']['full_33_layers_per_sentence_s']:.2f} s ({speed:.2f}x)",
            speed >= 1.0,
            ">= 1.0x",
            f"33 layers extrapolated from {xs} layers, batch 1",
        ),
        target(
            "W2 seconds per sentence, int8",
            f"{ex['unicure_rt_int8']['full_33_layers_per_sentence_s']:.2f} s ({speed8:.2f}x)",
            speed8 >= 1.0,
            ">= 1.0x",
            f"33 layers extrapolated from {xs} layers, batch 1",
        ),
    ]
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1")
    a = parser.parse_args()
    t0 = time.perf_counter()
    out = child(a.work, a.layers, a.repeats, [int(b) for b in a.batches.split(",")])
    out["wall_s"] = time.perf_counter() - t0
    sys.stdout.write("\n" + json.dumps(out) + "\n")
