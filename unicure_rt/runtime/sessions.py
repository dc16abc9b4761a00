"""ONNX Runtime sessions: execution-provider choice, quiet fallback, TensorRT caches.

`onnxruntime.get_available_providers()` lists the GPU providers of onnxruntime-gpu even on a
machine without a GPU or without CUDA libraries, so the provider that actually runs is read
back from the session (`session.get_providers()`), and ONNX Runtime's own error pages during a
failed GPU attempt are captured and reduced to one line.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unicure_rt.bundle.schema import CELL_ROWS
from unicure_rt.cache import cache_root
from unicure_rt.errors import UserError
from unicure_rt.onnx_runtime import ort
from unicure_rt.runtime.int8_weights import cpu_vnni_flags, signed_weight_model

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
PROVIDER = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
PROVIDER_LIBRARY = {
    "tensorrt": "libonnxruntime_providers_tensorrt.so",
    "cuda": "libonnxruntime_providers_cuda.so",
}


@dataclass
class RuntimeOptions:
    """How to run the graphs: `device` (auto|cpu|cuda|tensorrt), fp16 on GPU, CPU threads."""

    device: str = "auto"
    fp16: bool = False
    threads: int = 0  # 0 = ONNX Runtime's default (all physical cores)
    cache_dir: Path | None = None
    notes: list[str] = field(default_factory=list)  # one line per fallback, for the user
    # graph files whose uint8 weights run as exact int8 ones on this VNNI CPU (`int8_weights`)
    signed_int8: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise UserError(
                f"Unknown --device '{self.device}'. Choose one of: {', '.join(DEVICES)} "
                "(auto tries TensorRT, then CUDA, then CPU)."
            )


def gpu_name() -> str:
    """The first NVIDIA GPU's model name from the driver's /proc entry ('' if none)."""
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("Model:"):
                return line.split(":", 1)[1].strip()
    return ""


NO_GPU = "no NVIDIA GPU found"


def has_nvidia_gpu() -> bool:
    """Whether the NVIDIA driver shows a GPU on this machine (its /proc entry or device node)."""
    return any(Path("/proc/driver/nvidia/gpus").glob("*")) or Path("/dev/nvidia0").exists()


def runnable_providers() -> list[str]:
    """ONNX Runtime's providers that can run here: the GPU ones only where there is a GPU
    (a GPU build of onnxruntime lists them on every machine)."""
    providers = ort.get_available_providers()
    if has_nvidia_gpu():
        return providers
    return [p for p in providers if p not in (PROVIDER["tensorrt"], PROVIDER["cuda"])]


def tensorrt_cache_dir(model_path: Path, options: RuntimeOptions) -> Path:
    """Engine/timing cache folder keyed by model hash, ORT version, GPU and precision."""
    digest = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()[:16]
    key = (
        f"{digest}-ort{ort.__version__}-{gpu_name() or 'gpu'}-{'fp16' if options.fp16 else 'fp32'}"
    )
    root = options.cache_dir or cache_root() / "tensorrt"
    path = Path(root) / "".join(c if c.isalnum() or c in "-._" else "_" for c in key)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _library_loads(device: str) -> str | None:
    """None if the provider's shared library and its CUDA dependencies load, else the reason."""
    if PROVIDER[device] not in ort.get_available_providers():
        return f"this onnxruntime build has no {PROVIDER[device]}"
    library = Path(ort.__file__).parent / "capi" / PROVIDER_LIBRARY[device]
    try:
        ctypes.CDLL(str(library))
    except OSError:
        _preload_cuda_libraries()
        try:
            ctypes.CDLL(str(library))
        except OSError as exc:
            missing = str(exc).split(":")[0].strip()
            return f"{missing} not found"
    return None


def _preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from pip's nvidia-* packages (or PyTorch's) the way ONNX Runtime documents.

    `onnxruntime.preload_dlls` exists in onnxruntime-gpu 1.21+; it prints a line for every library
    it cannot find, which the caller's own one-line reason replaces.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    # best effort: the caller's retry reports what is still missing
    with (
        contextlib.redirect_stdout(io.StringIO()),
        _captured_stderr(),
        contextlib.suppress(Exception),
    ):
        preload()


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptor 2 (ORT's provider error pages)."""
    lines: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def _provider_entry(device: str, model_path: Path, options: RuntimeOptions):
    if device == "tensorrt":
        cache = str(tensorrt_cache_dir(model_path, options))
        return (
            PROVIDER[device],
            {
                "trt_fp16_enable": options.fp16,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": cache,
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": cache,
            },
        )
    return PROVIDER[device]


def session_options(options: RuntimeOptions) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if options.threads:
        so.intra_op_num_threads = options.threads
    return so


def create_session(model_path: Path, options: RuntimeOptions) -> tuple[ort.InferenceSession, str]:
    """A session on the requested device; returns it with the provider that actually runs.

    `auto` tries TensorRT -> CUDA -> CPU and records one line in `options.notes` per provider
    that could not run. An explicitly requested GPU device that cannot run is an error.
    """
    candidates = ["tensorrt", "cuda", "cpu"] if options.device == "auto" else [options.device]
    if options.device == "auto" and not has_nvidia_gpu():
        candidates = ["cpu"]  # say so once, not which CUDA library a GPU would need
        if NO_GPU not in options.notes:
            options.notes.append(NO_GPU)
    if options.fp16 and options.device in ("cuda", "cpu"):
        raise UserError(
            f"--fp16 applies to --device tensorrt (or auto) only; --device {options.device} runs "
            "the graphs in the precision they were exported in. For half precision there, export "
            "the bundle with --precision fp16."
        )
    for device in candidates:
        if device != "cpu":
            reason = _library_loads(device)
            if reason is not None:
                _unavailable(device, reason, options)
                continue
        providers = [_provider_entry(device, model_path, options), PROVIDER["cpu"]]
        model: str | bytes = str(model_path)
        if device == "cpu":
            providers = [PROVIDER["cpu"]]
            model = _cpu_model(model_path, options)
        with _captured_stderr() as errors:
            try:
                session = ort.InferenceSession(model, session_options(options), providers=providers)
            except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped load errors
                first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if device != "cpu" and options.device == "auto":
                    _unavailable(device, first_line[-200:], options)
                    continue
                raise UserError(
                    f"ONNX Runtime cannot load '{model_path}' ({first_line[:300]}). The graph is "
                    "damaged, refers to data outside its bundle, or was written by an "
                    "incompatible exporter: re-export the bundle."
                ) from None
        if session.get_providers()[0] == PROVIDER[device]:
            return session, PROVIDER[device]
        reason = next((line for line in errors if "error" in line.lower()), "it failed to start")
        _unavailable(device, reason.strip()[-200:], options)
    raise AssertionError("the CPU provider always runs")  # pragma: no cover


def _cpu_model(model_path: Path, options: RuntimeOptions) -> str | bytes:
    """The graph for the CPU provider: with exact int8 weights where this CPU has VNNI."""
    if not cpu_vnni_flags():
        return str(model_path)
    try:
        signed = signed_weight_model(Path(model_path))
    except Exception:  # noqa: BLE001 - unreadable here: ONNX Runtime's load says why, below
        signed = None
    if signed is None:
        return str(model_path)
    if Path(model_path).name not in options.signed_int8:
        options.signed_int8.append(Path(model_path).name)
    return signed


def _unavailable(device: str, reason: str, options: RuntimeOptions) -> None:
    if options.device != "auto":
        raise UserError(
            f"--device {device} was requested but {PROVIDER[device]} cannot run here ({reason}). "
            "Install onnxruntime-gpu with matching CUDA/TensorRT libraries on a machine with an "
            "NVIDIA GPU, or use --device auto or --device cpu."
        )
    note = f"{PROVIDER[device].removesuffix('ExecutionProvider')}: {reason}"
    if note not in options.notes:
        options.notes.append(note)


def one_blas_thread():
    """A context in which numpy's BLAS runs on one thread.

    Used around loops that alternate ONNX Runtime runs with numpy work: BLAS threads left
    spinning after a numpy product take cores from ONNX Runtime's threads (W1's published-size
    FlexPert on 2 cores in 512-drug batches: about 8 s instead of 5.5 s; benchmarks/notes.md).
    Products on one thread also round the same on every machine, whatever its core count.
    """
    from threadpoolctl import threadpool_limits  # lazy: scoring's start-up stays small

    return threadpool_limits(limits=1, user_api="blas")


def cell_feed(session, cell: np.ndarray, rows: int) -> np.ndarray:
    """The `cell_embedding` feed that pairs one cell embedding (`float32[cell_dim]`) with a
    batch of `rows` drugs in a `flexpert.onnx` `session`.

    Graphs whose cell axis is named `cells` (exported since that axis existed) compute the cell
    side once and broadcast it over the drugs, so they get the cell's single row; older graphs
    take the cell repeated once per drug.
    """
    cell = np.ascontiguousarray(cell, dtype=np.float32)[None, :]
    shapes = {arg.name: arg.shape for arg in session.get_inputs()}
    if shapes["cell_embedding"][0] == CELL_ROWS:
        return cell
    return np.repeat(cell, rows, axis=0)
