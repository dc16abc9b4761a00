"""`unicure-rt export-triton`: a bundle as a Triton Inference Server model repository.

Layout written (atomically, through `unicure_rt.outputs.staged_output_dir`):

    REPOSITORY/
      backbone/config.pbtxt    backbone/1/model.onnx   (+ its external-data files, if any)
      flexpert/config.pbtxt    flexpert/1/model.onnx   (+ its external-data files, if any)
      manifest.json            the bundle's manifest, unchanged (provenance, tokenizer, genes)
      client_example.py        an HTTP client: profile -> backbone -> flexpert -> ranking
      README.md                how to serve it and call it

Each `config.pbtxt` uses the `onnxruntime_onnx` platform and takes its inputs and outputs from
the manifest's I/O contract: with `max_batch_size > 0` the leading `batch` dimension is left out
of `dims` (Triton adds it) and dynamic batching is on; named (dynamic) dimensions become -1.
FlexPert's `cells` axis (one cell row for all drugs, or one per drug) is batched like `batch`:
Triton batches every input, so its clients send one cell row per drug.
With `tensorrt`, ONNX Runtime's TensorRT execution provider is requested as a GPU execution
accelerator (FP16 with `fp16`). Triton reads only the model folders; the files beside them are
for people and clients.
"""

from __future__ import annotations

import inspect
import shutil
from dataclasses import dataclass
from pathlib import Path

from unicure_rt.bundle.load import DEFAULT_BUNDLE, MANIFEST, Bundle, load_bundle
from unicure_rt.bundle.pin import BundlePin
from unicure_rt.bundle.schema import CELL_ROWS
from unicure_rt.errors import UserError
from unicure_rt.outputs import refuse_existing, staged_output_dir

GRAPHS = ("backbone", "flexpert")
BATCH_DIM = "batch"
MODEL_FILE = "model.onnx"
VERSION = "1"
CLIENT = "client_example.py"
DEFAULT_MAX_BATCH_SIZE = 256
MAX_QUEUE_DELAY_US = 100
TRITON_TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "string": "TYPE_STRING",
}


@dataclass(frozen=True)
class TritonOptions:
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    tensorrt: bool = False
    fp16: bool = False

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise UserError(
                f"--max-batch-size must be 0 (no batching) or more (got {self.max_batch_size})."
            )
        if self.fp16 and not self.tensorrt:
            raise UserError(
                "--fp16 sets the precision of the TensorRT accelerator: add --tensorrt, or "
                "export a float16 bundle (`unicure-rt export --precision fp16`) to serve fp16 "
                "weights on ONNX Runtime alone."
            )


def _dims(graph: str, spec: dict, batched: bool) -> list[int]:
    shape = list(spec["shape"])
    if batched:
        if not shape or shape[0] not in (BATCH_DIM, CELL_ROWS):
            raise UserError(
                f"The {graph} graph's '{spec['name']}' has shape {shape}, without the leading "
                f"dynamic '{BATCH_DIM}' dimension Triton batches on. Export with "
                "--max-batch-size 0 (no server-side batching), or re-export the bundle."
            )
        shape = shape[1:]
    return [-1 if isinstance(size, str) else int(size) for size in shape]


def _tensor(graph: str, spec: dict, batched: bool) -> str:
    dtype = TRITON_TYPES.get(spec["dtype"])
    if dtype is None:
        raise UserError(
            f"The {graph} graph's '{spec['name']}' has dtype {spec['dtype']}, which Triton has "
            "no type for. Re-export the bundle with the standard I/O contract."
        )
    dims = ", ".join(str(d) for d in _dims(graph, spec, batched))
    return f'  {{\n    name: "{spec["name"]}"\n    data_type: {dtype}\n    dims: [ {dims} ]\n  }}'


def model_config(bundle: Bundle, graph: str, options: TritonOptions) -> str:
    """The `config.pbtxt` text of one graph of `bundle`."""
    contract = bundle.manifest["graphs"][graph]
    batched = options.max_batch_size > 0
    inputs = ",\n".join(_tensor(graph, spec, batched) for spec in contract["inputs"])
    outputs = ",\n".join(_tensor(graph, spec, batched) for spec in contract["outputs"])
    lines = [
        f"# unicure-rt export-triton: {graph} of bundle manifest sha256 {bundle.sha256}",
        f'name: "{graph}"',
        'platform: "onnxruntime_onnx"',
        f'default_model_filename: "{MODEL_FILE}"',
        f"max_batch_size: {options.max_batch_size}",
        f"input [\n{inputs}\n]",
        f"output [\n{outputs}\n]",
    ]
    if batched:
        lines.append(
            f"dynamic_batching {{\n  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}\n}}"
        )
    if options.tensorrt:
        precision = "FP16" if options.fp16 else "FP32"
        lines.append(
            "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n"
            '      {\n        name: "tensorrt"\n'
            f'        parameters {{ key: "precision_mode" value: "{precision}" }}\n'
            "      }\n    ]\n  }\n}"
        )
    return "\n".join(lines) + "\n"


def graph_files(bundle: Bundle, graph: str) -> list[str]:
    """The graph file of `graph` and its external-data files, relative to the bundle.

    Read from the graph itself with `onnx` when it is installed; otherwise the bundle files
    named `<graph file>.<anything>` (how unicure-rt names external data).
    """
    relpath = bundle.manifest["graphs"][graph]["path"]
    try:
        import onnx
    except ImportError:
        prefix = relpath + "."
        return [
            relpath,
            *sorted(f for f in bundle.manifest.get("files", {}) if f.startswith(prefix)),
        ]
    model = onnx.load(str(bundle.path / relpath), load_external_data=False)
    parent = Path(relpath).parent
    found = [relpath]
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            rel = (parent / entry.value).as_posix()
            if entry.key == "location" and rel not in found:
                found.append(rel)
    return found


def _tensors(specs: list[dict]) -> str:
    return ", ".join(
        f"`{s['name']}` {s['dtype']} `[{', '.join(str(d) for d in s['shape'])}]`" for s in specs
    )


def _readme(bundle: Bundle, options: TritonOptions) -> str:
    graphs = bundle.manifest["graphs"]
    rows = "\n".join(
        f"| `{g}` | {_tensors(graphs[g]['inputs'])} | {_tensors(graphs[g]['outputs'])} |"
        for g in GRAPHS
    )
    return f"""# Triton model repository of a unicure-rt bundle

Written by `unicure-rt export-triton` from `{bundle.path}` (manifest sha256 `{bundle.sha256}`,
precision {bundle.manifest.get("precision", "fp32")}); `manifest.json` is that bundle's manifest.

| model | inputs | outputs |
| --- | --- | --- |
{rows}

max_batch_size {options.max_batch_size}, dynamic batching \
{"on" if options.max_batch_size else "off"}, TensorRT \
{("FP16" if options.fp16 else "FP32") if options.tensorrt else "off"}.

Serve it (any Triton release with the ONNX Runtime backend):

    docker run --rm --gpus all -p 8000:8000 -p 8001:8001 -v "$PWD":/models \\
        nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models

Call it (`pip install '.[triton]'`):

    python client_example.py PATIENT.h5ad --normal-where condition=normal \\
        --drugs DRUG_LIBRARY.parquet --url localhost:8000

The client builds cell sentences with the tokenizer spec of `manifest.json`, calls `backbone`,
then `flexpert` over the library at each dose, and ranks drugs by reversal score, as
`unicure-rt score` does on one machine.
"""


def export_triton(
    bundle_path: Path | str | None,
    out: Path | str,
    options: TritonOptions,
    *,
    force: bool = False,
    pin: BundlePin | None = None,
) -> Bundle:
    """Write the Triton model repository of a (verified, with `pin` pinned) bundle to `out`;
    return the bundle."""
    from unicure_rt.engines import triton_client

    out = Path(out)
    protect = [bundle_path or DEFAULT_BUNDLE]
    refuse_existing(out, force, protect)
    bundle = load_bundle(bundle_path, pin)
    missing = [g for g in GRAPHS if g not in bundle.manifest.get("graphs", {})]
    if missing:
        raise UserError(
            f"Bundle '{bundle.path}' has no {' or '.join(missing)} graph in its manifest, so "
            "there is nothing to serve. Export a complete bundle with `unicure-rt export`."
        )
    configs = {graph: model_config(bundle, graph, options) for graph in GRAPHS}
    with staged_output_dir(out, force=force, inputs=protect, kind="triton") as staging:
        for graph in GRAPHS:
            version = staging / graph / VERSION
            version.mkdir(parents=True)
            main, *external = graph_files(bundle, graph)
            shutil.copyfile(bundle.path / main, version / MODEL_FILE)
            for rel in external:  # keep the location the graph records, relative to the model
                target = version / Path(rel).relative_to(Path(main).parent)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(bundle.path / rel, target)
            (staging / graph / "config.pbtxt").write_text(configs[graph])
        shutil.copyfile(bundle.path / MANIFEST, staging / MANIFEST)
        (staging / CLIENT).write_text(inspect.getsource(triton_client))
        (staging / "README.md").write_text(_readme(bundle, options))
    return bundle
