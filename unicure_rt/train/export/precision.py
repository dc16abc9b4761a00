"""Reduced-precision bundles: fp16 and int8 variants of the fp32 graphs, with measured fidelity.

Longer than 400 lines because making a variant and measuring its fidelity against the fp32
graphs go together: a variant is kept only when its measurement passes.

The fp32 graphs are always exported and parity-checked first. A variant is then made from those
fp32 ONNX files and replaces them in the bundle (a bundle holds one precision; its manifest's
`precision` says which):

- `fp16`: weights and compute in float16 (`onnxruntime.transformers.float16`), graph inputs and
  outputs kept at the contract dtypes (float32/int64); the numerically fragile ops in
  `FP16_BLOCKED_OPS` (normalisations, softmax, reductions) stay in float32.
- `int8`: `onnxruntime.quantization.quantize_dynamic` on the MatMul/Gemm weights (Gemm is
  rewritten as MatMul + Add by the dynamic quantizer), with the settings in `INT8_SETTINGS`.
  The default QInt8 weights with the full 8-bit range saturate the u8 x s8 kernels of AVX2
  CPUs without VNNI (measured there: drug-rank Spearman 0.96); `reduce_range=True` (7-bit
  weights) or QUInt8 weights avoid that. The default is QUInt8, per-channel, full range: of the
  settings that are safe on every CPU it is the closest to fp32 (see `INT8_SETTINGS`). On CPUs
  with VNNI the session runs these weights as the equal int8 ones
  (`unicure_rt.runtime.int8_weights`). Layers that read only a broadcast cell row
  (`per_cell_nodes`) stay float32: they run once per cell, so int8 would save nothing there and
  would put one error into every drug's prediction.

Every variant records its fidelity against fp32 under the manifest key `fidelity`, measured on
a scoring task like real use (`measure_fidelity`): a few cell embeddings from random sentences x
a synthetic library of `N_DRUGS` drugs x the six reference doses, each graph run with ONNX
Runtime's CPU provider. Export refuses (`FidelityError`, no bundle written) a variant under
the documented floors:

- `SPEARMAN_FLOOR = 0.99`: for every profile, the Spearman correlation between the variant's
  and fp32's per-drug reversal scores (averaged over the doses) is at least 0.99;
- `TOP_K_FLOOR = 18`: for every profile, at least 18 of fp32's top 20 drugs are in the
  variant's top 20.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from unicure_rt.bundle.schema import CELL_ROWS
from unicure_rt.defaults import REFERENCE_DOSES_UM
from unicure_rt.drugs.vectors import drug_vectors
from unicure_rt.errors import UserError
from unicure_rt.runtime.sessions import cell_feed
from unicure_rt.runtime.tokenizer import Tokenizer
from unicure_rt.scoring.effects import ascending_ranks, reversal_scores

PRECISIONS = ("fp32", "fp16", "int8")
GRAPHS = ("backbone", "flexpert")

# Documented fidelity floors (the performance issue's int8 targets), for every variant.
SPEARMAN_FLOOR = 0.99
TOP_K = 20
TOP_K_FLOOR = 18

# The scoring task the fidelity is measured on.
N_PROFILES = 4
N_DRUGS = 500
PROVIDER = "CPUExecutionProvider"

# Ops kept in float32 in fp16 bundles (besides float16.DEFAULT_OP_BLOCK_LIST): sums over many
# values and exponentials, where float16's range and 11-bit mantissa lose the most.
FP16_BLOCKED_OPS = (
    "LayerNormalization",
    "Softmax",
    "ReduceL2",
    "ReduceMean",
    "ReduceSum",
    "Pow",
    "Sqrt",
)
# uint8 weights: the u8 x u8 kernels do not saturate on AVX2 without VNNI (the u8 x s8 ones do
# with full-range QInt8 weights), and keep all 8 bits, unlike reduce_range=True (7-bit weights,
# measurably worse on the test model: top-20 overlap 17/20). Per-channel (per output column)
# scales.
INT8_SETTINGS = {
    "weight_type": "QUInt8",
    "reduce_range": False,
    "per_channel": True,
    "op_types": ["MatMul", "Gemm"],
    "float32_layers": "reading only a broadcast cell row",
}


class FidelityError(UserError):
    """A reduced-precision variant ranks drugs too differently from fp32."""


# ----------------------------------------------------------------------------- conversion


def graph_files(directory: Path, relpath: str) -> list[str]:
    """The graph file and the external-data files it references, relative to `directory`."""
    import onnx

    model = onnx.load(str(Path(directory) / relpath), load_external_data=False)
    parent = Path(relpath).parent
    found = [relpath]
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                rel = (parent / entry.value).as_posix()
                if rel not in found:
                    found.append(rel)
    return found


def _graph_bytes(directory: Path, relpath: str) -> int:
    """Size of a graph with its external data."""
    return sum((Path(directory) / rel).stat().st_size for rel in graph_files(directory, relpath))


def _uses_external_data(path: Path) -> bool:
    return len(graph_files(path.parent, path.name)) > 1


def _save(model, target: Path, external: bool) -> None:
    import onnx

    target.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save_model(
            model,
            str(target),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=target.name + ".data",
        )
    else:
        onnx.save_model(model, str(target))


def _typed_model(source: Path):
    """`source` with inferred types, minus the value_info entries that name initializers.

    The dynamo exporter records a value_info for every initializer. Left in, they break both
    converters: the float16 one casts float32 initializers kept for blocked ops (LayerNorm
    weights shared by all layers) as if they were float16, once per user, giving nodes with
    duplicate names; the quantizer transposes Gemm weights but not their stale shapes. Inference
    goes through a file beside `source` so graphs over 2 GB and their external data work.
    """
    import onnx

    with tempfile.NamedTemporaryFile(dir=source.parent, suffix=".onnx") as inferred:
        onnx.shape_inference.infer_shapes_path(str(source), inferred.name)
        model = onnx.load(inferred.name)
    initializers = {tensor.name for tensor in model.graph.initializer}
    kept = [v for v in model.graph.value_info if v.name not in initializers]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return model


def per_cell_nodes(model) -> list[str]:
    """Names of `model`'s MatMul/Gemm nodes that read only the cell rows of an input whose first
    axis is `CELL_ROWS` (a graph that broadcasts one cell over its drug batch) and constants."""
    per_cell = {
        value.name
        for value in model.graph.input
        if value.type.tensor_type.shape.dim
        and value.type.tensor_type.shape.dim[0].dim_param == CELL_ROWS
    }
    constants = {tensor.name for tensor in model.graph.initializer}
    found = []
    for node in model.graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type == "Constant":
            constants.update(node.output)
        elif any(x in per_cell for x in inputs) and all(
            x in per_cell or x in constants for x in inputs
        ):
            per_cell.update(node.output)
            if node.op_type in ("MatMul", "Gemm"):
                found.append(node.name)
    return found


def fp16_graph(source: Path, target: Path) -> dict:
    """float16 weights and compute; float32 graph inputs/outputs and `FP16_BLOCKED_OPS`."""
    from onnxruntime.transformers import float16

    model = float16.convert_float_to_float16(
        _typed_model(source),
        disable_shape_infer=True,
        keep_io_types=True,
        op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(FP16_BLOCKED_OPS),
    )
    _save(model, target, _uses_external_data(source))
    return {
        "tool": "onnxruntime.transformers.float16.convert_float_to_float16",
        "keep_io_types": True,
        "fp32_ops": list(FP16_BLOCKED_OPS),
    }


def int8_graph(source: Path, target: Path, settings: dict | None = None) -> dict:
    """Dynamic int8 quantization of the MatMul/Gemm weights (activations quantized at run time)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings = {**INT8_SETTINGS, **(settings or {})}
    target.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic warns about pre-processing on every call
    model = _typed_model(source)
    try:
        quantize_dynamic(
            model,
            target,
            op_types_to_quantize=list(settings["op_types"]),
            nodes_to_exclude=per_cell_nodes(model),
            per_channel=settings["per_channel"],
            reduce_range=settings["reduce_range"],
            weight_type=QuantType[settings["weight_type"]],
            use_external_data_format=_uses_external_data(source),
        )
    finally:
        root.setLevel(level)
    return {"tool": "onnxruntime.quantization.quantize_dynamic", **settings}


def make_variant(
    fp32_dir: Path, variant_dir: Path, manifest: dict, precision: str, settings: dict | None = None
) -> dict:
    """Write the `precision` variant of every graph of `fp32_dir` into `variant_dir`.

    Returns the conversion settings (recorded in the manifest).
    """
    import onnxruntime as ort

    if precision not in PRECISIONS or precision == "fp32":
        raise ValueError(f"no reduced-precision variant '{precision}'")
    recorded: dict = {}
    for name in GRAPHS:
        rel = manifest["graphs"][name]["path"]
        source, target = Path(fp32_dir) / rel, Path(variant_dir) / rel
        if precision == "fp16":
            recorded = fp16_graph(source, target)
        else:
            recorded = int8_graph(source, target, settings)
    return {**recorded, "onnxruntime": ort.__version__}


# ----------------------------------------------------------------------------- fidelity


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=[PROVIDER])


def _cell_embeddings(session, tokenizer: Tokenizer, profiles: np.ndarray, seed: int) -> np.ndarray:
    ids = [f"fidelity{i}" for i in range(len(profiles))]
    tokens, mask = tokenizer.encode(profiles, ids, seed=seed)
    return session.run(["cell_embedding"], {"tokens": tokens, "mask": mask})[0]


def _expression(session, cell: np.ndarray, drugs: np.ndarray) -> np.ndarray:
    feeds = {"cell_embedding": cell_feed(session, cell, len(drugs)), "drug": drugs}
    return session.run(["expression"], feeds)[0]


def measure_fidelity(
    fp32_dir: Path,
    variant_dir: Path,
    *,
    manifest: dict | None = None,
    seed: int = 0,
    n_profiles: int = N_PROFILES,
    n_drugs: int = N_DRUGS,
    doses: tuple[float, ...] = REFERENCE_DOSES_UM,
    settings: dict | None = None,
) -> dict:
    """How closely the variant's drug ranking follows fp32's on a synthetic scoring task.

    Random profiles -> sentences (the manifest's tokenizer) -> cell embeddings from each bundle's
    backbone; each bundle's FlexPert predicts expression for `n_drugs` random drug embeddings at
    every dose; reversal scores use a tumour profile near fp32's mean prediction and a random
    disease signature, and are averaged over the doses. Per profile: Spearman of the variant's
    scores against fp32's and the overlap of the two top-`TOP_K` sets. Both run end to end (the
    variant's FlexPert gets the variant's cell embeddings), on the CPU provider.
    """
    from scipy.stats import spearmanr

    fp32_dir, variant_dir = Path(fp32_dir), Path(variant_dir)
    if manifest is None:
        manifest = json.loads((fp32_dir / "manifest.json").read_text())
    model = manifest["model"]
    tokenizer = Tokenizer.from_spec(manifest["tokenizer"])
    rng = np.random.default_rng(seed)
    profiles = rng.lognormal(2.0, 0.7, size=(n_profiles, len(tokenizer.genes)))
    library = rng.normal(size=(n_drugs, model["drug_dim"])).astype(np.float32)
    length = model["drug_vector_length"]
    drugs = {dose: drug_vectors(library, dose, length) for dose in doses}

    embeddings, predictions = {}, {}
    for key, directory in (("fp32", fp32_dir), ("variant", variant_dir)):
        backbone = _session(directory / manifest["graphs"]["backbone"]["path"])
        embeddings[key] = _cell_embeddings(backbone, tokenizer, profiles, seed)
        del backbone
        flexpert = _session(directory / manifest["graphs"]["flexpert"]["path"])
        predictions[key] = [
            {dose: _expression(flexpert, cell, drugs[dose]) for dose in doses}
            for cell in embeddings[key]
        ]
        del flexpert

    max_abs_expression = 0.0
    spearman, overlap = [], []
    for i in range(n_profiles):
        reference, variant = predictions["fp32"][i], predictions["variant"][i]
        mean_prediction = np.mean([reference[d] for d in doses], axis=(0, 1), dtype=np.float64)
        spread = float(np.mean(np.std([reference[d] for d in doses], axis=1))) or 1.0
        tumour = mean_prediction + rng.normal(scale=spread, size=len(mean_prediction))
        signature = rng.normal(scale=spread, size=len(mean_prediction))
        scores = {}
        for key, by_dose in (("fp32", reference), ("variant", variant)):
            scores[key] = np.mean(
                [reversal_scores(by_dose[d], tumour, signature) for d in doses], axis=0
            )
        for dose in doses:
            diff = np.abs(variant[dose].astype(np.float64) - reference[dose])
            max_abs_expression = max(max_abs_expression, float(diff.max()))
        spearman.append(float(spearmanr(scores["fp32"], scores["variant"]).statistic))
        top_fp32 = set(np.flatnonzero(ascending_ranks(scores["fp32"]) <= TOP_K).tolist())
        top_variant = set(np.flatnonzero(ascending_ranks(scores["variant"]) <= TOP_K).tolist())
        overlap.append(len(top_fp32 & top_variant))
    cell_diff = np.abs(embeddings["variant"].astype(np.float64) - embeddings["fp32"])
    sizes = {
        name: {
            "fp32": _graph_bytes(fp32_dir, manifest["graphs"][name]["path"]),
            "variant": _graph_bytes(variant_dir, manifest["graphs"][name]["path"]),
        }
        for name in GRAPHS
    }
    return {
        "reference": "fp32",
        "max_abs_expression": max_abs_expression,
        "max_abs_cell_embedding": float(cell_diff.max()),
        "spearman_min": float(np.min(spearman)),
        "spearman_mean": float(np.mean(spearman)),
        "top20_overlap_min": int(np.min(overlap)),
        "n_profiles": n_profiles,
        "n_drugs": n_drugs,
        "doses_uM": list(doses),
        "seed": seed,
        "provider": PROVIDER,
        "floors": {"spearman_min": SPEARMAN_FLOOR, "top20_overlap_min": TOP_K_FLOOR},
        "settings": settings or {},
        "graph_bytes": sizes,
    }


def check_fidelity(fidelity: dict, precision: str) -> None:
    """Raise `FidelityError` naming the measured numbers if the variant is under a floor."""
    spearman, overlap = fidelity["spearman_min"], fidelity["top20_overlap_min"]
    if np.isfinite(spearman) and spearman >= SPEARMAN_FLOOR and overlap >= TOP_K_FLOOR:
        return
    raise FidelityError(
        f"The {precision} variant ranks drugs too differently from fp32: Spearman of the "
        f"per-drug reversal scores {spearman:.4f} (floor {SPEARMAN_FLOOR}), top-{TOP_K} overlap "
        f"{overlap}/{TOP_K} (floor {TOP_K_FLOOR}/{TOP_K}), max abs expression error "
        f"{fidelity['max_abs_expression']:.3g}, over {fidelity['n_profiles']} profiles x "
        f"{fidelity['n_drugs']} drugs. The bundle was not written. Export it with "
        "--precision fp32 (or fp16 if int8 was refused)."
    )


# ----------------------------------------------------------------------------- export step


def apply_precision(
    staging: Path, manifest: dict, precision: str, scratch: Path, *, seed: int = 0
) -> dict:
    """Replace the fp32 graphs of `staging` by their `precision` variant; return the manifest.

    The fp32 graphs (and `staging`'s manifest, which must describe them) move to
    `scratch/fp32`; conversion and measurement run in a separate process, as the parity gate
    does, so that the export process never holds the PyTorch model and the sessions at once.
    Raises `FidelityError` under the floors. The caller rewrites the manifest (file hashes).
    """
    if precision == "fp32":
        return manifest
    if precision not in PRECISIONS:
        raise UserError(f"Unknown precision '{precision}': use one of {', '.join(PRECISIONS)}.")
    staging, fp32_dir = Path(staging), Path(scratch) / "fp32"
    fp32_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(staging / "manifest.json", fp32_dir / "manifest.json")
    for name in GRAPHS:
        for rel in graph_files(staging, manifest["graphs"][name]["path"]):
            (fp32_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(staging / rel, fp32_dir / rel)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "unicure_rt.train.export.precision",
            str(fp32_dir),
            str(staging),
            precision,
            str(seed),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"the {precision} conversion process failed:\n{completed.stderr[-4000:]}"
        )
    fidelity = json.loads(completed.stdout)
    check_fidelity(fidelity, precision)
    return {**manifest, "precision": precision, "fidelity": fidelity}


def main(argv: list[str]) -> None:
    fp32_dir, variant_dir, precision, seed = Path(argv[0]), Path(argv[1]), argv[2], int(argv[3])
    manifest = json.loads((fp32_dir / "manifest.json").read_text())
    settings = make_variant(fp32_dir, variant_dir, manifest, precision)
    fidelity = measure_fidelity(
        fp32_dir, variant_dir, manifest=manifest, seed=seed, settings=settings
    )
    print(json.dumps(fidelity))


if __name__ == "__main__":
    main(sys.argv[1:])
