"""Execution providers: choice, quiet fallback and TensorRT caches, without needing a GPU."""

import os

import onnxruntime as ort
import pytest

from unicure_rt.errors import UserError
from unicure_rt.runtime import sessions as runtime
from unicure_rt.runtime.sessions import RuntimeOptions, create_session, tensorrt_cache_dir


def gpu_runs() -> bool:
    return runtime._library_loads("cuda") is None and bool(runtime.gpu_name())


@pytest.fixture
def flexpert_graph(tiny_bundle):
    return tiny_bundle / "flexpert.onnx"


def test_unknown_device_is_a_user_error():
    with pytest.raises(UserError, match="Unknown --device 'tpu'"):
        RuntimeOptions(device="tpu")


def test_fp16_needs_tensorrt():
    with pytest.raises(UserError, match="--fp16 applies to --device tensorrt"):
        create_session("unused.onnx", RuntimeOptions(device="cpu", fp16=True))


def test_without_a_gpu_auto_says_so_in_one_line(flexpert_graph, monkeypatch):
    monkeypatch.setattr(runtime, "has_nvidia_gpu", lambda: False)
    options = RuntimeOptions(device="auto")
    _session, provider = create_session(flexpert_graph, options)
    create_session(flexpert_graph, options)
    assert provider == "CPUExecutionProvider" and options.notes == [runtime.NO_GPU]
    assert "TensorrtExecutionProvider" not in runtime.runnable_providers()
    assert "CUDAExecutionProvider" not in runtime.runnable_providers()
    from unicure_rt.cli.score import gpu_note

    assert gpu_note(options.notes) == "CPU only: no NVIDIA GPU found"


@pytest.mark.skipif(gpu_runs(), reason="this machine has a working GPU provider")
def test_auto_falls_back_to_cpu_with_one_line_per_provider(flexpert_graph, capfd, monkeypatch):
    """A machine with a GPU whose CUDA libraries are missing: one line per provider."""
    monkeypatch.setattr(runtime, "has_nvidia_gpu", lambda: True)
    options = RuntimeOptions(device="auto")
    session, provider = create_session(flexpert_graph, options)
    assert provider == "CPUExecutionProvider" == session.get_providers()[0]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert len(options.notes) == 2
        assert options.notes[0].startswith("Tensorrt") and options.notes[1].startswith("CUDA")
        assert all("\n" not in note and len(note) < 200 for note in options.notes)
    create_session(flexpert_graph, options)
    assert len(options.notes) <= 2, "the same fallback is reported once"
    captured = capfd.readouterr()
    assert "[E:onnxruntime" not in captured.err and "Traceback" not in captured.err


@pytest.mark.skipif(gpu_runs(), reason="this machine has a working GPU provider")
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_explicit_gpu_device_without_gpu_is_refused(flexpert_graph, device):
    with pytest.raises(UserError, match="cannot run here"):
        create_session(flexpert_graph, RuntimeOptions(device=device))


def test_tensorrt_cache_is_keyed_by_model_versions_and_precision(
    tmp_path, flexpert_graph, tiny_bundle
):
    fp32 = tensorrt_cache_dir(flexpert_graph, RuntimeOptions(cache_dir=tmp_path))
    fp16 = tensorrt_cache_dir(flexpert_graph, RuntimeOptions(cache_dir=tmp_path, fp16=True))
    other = tensorrt_cache_dir(tiny_bundle / "backbone.onnx", RuntimeOptions(cache_dir=tmp_path))
    assert len({fp32, fp16, other}) == 3
    assert all(path.is_dir() and path.parent == tmp_path for path in (fp32, fp16, other))
    assert f"ort{ort.__version__}" in fp32.name and fp32.name.endswith("fp32")


def test_tensorrt_provider_options(flexpert_graph, tmp_path):
    name, options = runtime._provider_entry(
        "tensorrt", flexpert_graph, RuntimeOptions(fp16=True, cache_dir=tmp_path)
    )
    assert name == "TensorrtExecutionProvider"
    assert options["trt_fp16_enable"] is True and options["trt_engine_cache_enable"] is True
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"]
    assert options["trt_engine_cache_path"].startswith(str(tmp_path))


def test_native_stderr_is_captured():
    with runtime._captured_stderr() as lines:
        os.write(2, b"provider error page\n")
    assert lines == ["provider error page"]


def test_threads_option_reaches_the_session():
    assert runtime.session_options(RuntimeOptions(threads=1)).intra_op_num_threads == 1


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers()
    or runtime._library_loads("cuda") is None,
    reason="needs an onnxruntime-gpu build whose CUDA libraries are missing (a CPU machine)",
)
def test_missing_cuda_libraries_are_preloaded_once_quietly(monkeypatch, capfd):
    calls = []

    def noisy_preload():
        calls.append(1)
        print("Failed to load libcublasLt.so.13")

    monkeypatch.setattr(ort, "preload_dlls", noisy_preload, raising=False)
    reason = runtime._library_loads("cuda")
    assert calls == [1]
    assert reason is not None and "not found" in reason
    assert capfd.readouterr().out == ""
