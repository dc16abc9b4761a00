"""Exact int8 weights for VNNI CPUs: the in-memory rewrite of an int8 bundle's uint8 weights."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from unicure_rt.runtime import int8_weights, sessions  # noqa: E402
from unicure_rt.runtime.sessions import RuntimeOptions, create_session  # noqa: E402
from unicure_rt.train.export.precision import int8_graph  # noqa: E402

ON_VNNI = bool(int8_weights.cpu_vnni_flags())
NEEDS_VNNI = pytest.mark.skipif(
    not ON_VNNI,
    reason="this CPU has no VNNI (avx512_vnni, avx_vnni, amx_int8): ONNX Runtime's uint8 x int8 "
    "kernels saturate here, so signed weights are never used and their outputs not compared",
)
IN, HIDDEN, OUT = 96, 160, 48


def save(model, path):
    model.ir_version = 9  # readable by every onnxruntime >= 1.20
    onnx.save(model, str(path))
    return path


def fp32_graph(path):
    """x -> Gemm(transposed weights) -> Relu -> MatMul -> y, with weights of real-model scale."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((HIDDEN, IN)) / np.sqrt(IN)).astype(np.float32)
    b1 = rng.standard_normal(HIDDEN).astype(np.float32) * 0.1
    w2 = (rng.standard_normal((HIDDEN, OUT)) / np.sqrt(HIDDEN)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUT])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))],
    )
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8_weights")
    fp32 = fp32_graph(folder / "mlp.onnx")
    int8 = folder / "mlp.int8.onnx"
    int8_graph(fp32, int8)
    return fp32, int8


def matmul_integer_weights(model) -> list[tuple[np.ndarray, np.ndarray]]:
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [
        (tensors[node.input[1]], tensors[node.input[3]])
        for node in model.graph.node
        if node.op_type == "MatMulInteger"
    ]


def test_weights_and_zero_points_become_int8_minus_128(graphs):
    _, int8 = graphs
    before = matmul_integer_weights(onnx.load(str(int8)))
    after = matmul_integer_weights(onnx.load_from_string(int8_weights.signed_weight_model(int8)))
    assert len(before) == len(after) == 2
    for (weight, zero), (signed, signed_zero) in zip(before, after, strict=True):
        assert weight.dtype == zero.dtype == np.uint8
        assert signed.dtype == signed_zero.dtype == np.int8
        np.testing.assert_array_equal(signed.astype(np.int16), weight.astype(np.int16) - 128)
        np.testing.assert_array_equal(signed_zero.astype(np.int16), zero.astype(np.int16) - 128)
        # what the kernels multiply, weight minus zero point, is unchanged
        np.testing.assert_array_equal(
            signed.astype(np.int32) - signed_zero.astype(np.int32).reshape(1, -1),
            weight.astype(np.int32) - zero.astype(np.int32).reshape(1, -1),
        )


def test_graphs_without_uint8_matmul_weights_are_left_alone(graphs, tmp_path):
    fp32, int8 = graphs
    assert int8_weights.signed_weight_model(fp32) is None
    signed = tmp_path / "signed.onnx"
    signed.write_bytes(int8_weights.signed_weight_model(int8))
    assert int8_weights.signed_weight_model(signed) is None  # already int8
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert int8_weights.signed_weight_model(empty) is None


def test_a_weight_read_by_another_node_keeps_its_type(tmp_path):
    """Rewriting a tensor that another node also reads would change that node's input."""
    rng = np.random.default_rng(1)
    weight = rng.integers(0, 256, (IN, OUT)).astype(np.uint8)
    zero = np.full(OUT, 128, np.uint8)
    other_zero = np.full(OUT, 120, np.uint8)
    graph = helper.make_graph(
        [
            helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
            helper.make_node("MatMulInteger", ["xq", "w", "xz", "z"], ["a"]),
            helper.make_node("MatMulInteger", ["xq", "v", "xz", "z"], ["b"]),  # shares z
            helper.make_node("Cast", ["v"], ["v32"], to=TensorProto.INT32),  # v read elsewhere
            helper.make_node("MatMulInteger", ["xq", "u", "xz", "z2"], ["c"]),
            helper.make_node("Sum", ["a", "b", "c"], ["y"]),
        ],
        "shared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, IN])],
        [
            helper.make_tensor_value_info("y", TensorProto.INT32, [4, OUT]),
            helper.make_tensor_value_info("v32", TensorProto.INT32, [IN, OUT]),
        ],
        [
            numpy_helper.from_array(a, n)
            for a, n in (
                (weight, "w"),
                (weight, "v"),
                (weight, "u"),
                (zero, "z"),
                (other_zero, "z2"),
            )
        ],
    )
    path = save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "g.onnx"
    )
    model = onnx.load_from_string(int8_weights.signed_weight_model(path))
    dtypes = {t.name: t.data_type for t in model.graph.initializer}
    # v is read by Cast, so v stays uint8, so z (shared with v's MatMulInteger) and w stay too
    assert dtypes == {
        "w": TensorProto.UINT8,
        "v": TensorProto.UINT8,
        "z": TensorProto.UINT8,
        "u": TensorProto.INT8,
        "z2": TensorProto.INT8,
    }


def test_cpu_vnni_flags_reads_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_int8 avx_vnni\n")
    assert int8_weights.cpu_vnni_flags(cpuinfo) == ["avx_vnni", "amx_int8"]
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 fma\n")
    assert int8_weights.cpu_vnni_flags(cpuinfo) == []
    assert int8_weights.cpu_vnni_flags(tmp_path / "absent") == []


def run(session, x):
    return session.run(None, {"x": x})[0]


def test_sessions_use_signed_weights_only_on_vnni_cpus(graphs, monkeypatch):
    fp32, int8 = graphs
    monkeypatch.setattr(sessions, "cpu_vnni_flags", lambda: [])
    options = RuntimeOptions(device="cpu")
    create_session(int8, options)
    assert options.signed_int8 == []
    monkeypatch.setattr(sessions, "cpu_vnni_flags", lambda: ["avx512_vnni"])
    create_session(fp32, options)
    assert options.signed_int8 == []  # nothing to rewrite in an fp32 graph
    create_session(int8, options)
    create_session(int8, options)
    assert options.signed_int8 == ["mlp.int8.onnx"]


@NEEDS_VNNI
def test_signed_weights_give_bit_identical_outputs_on_this_vnni_cpu(graphs):
    _, int8 = graphs
    from unicure_rt.onnx_runtime import ort

    unsigned = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    options = RuntimeOptions(device="cpu")
    signed, _ = create_session(int8, options)
    assert options.signed_int8 == ["mlp.int8.onnx"]
    rng = np.random.default_rng(2)
    for scale in (0.1, 1.0, 30.0):  # wide activations use the whole uint8 range
        x = (rng.standard_normal((257, IN)) * scale).astype(np.float32)
        np.testing.assert_array_equal(run(signed, x), run(unsigned, x))


def test_an_unreadable_graph_is_left_to_onnx_runtime_to_refuse(tmp_path, monkeypatch):
    from unicure_rt.errors import UserError

    monkeypatch.setattr(sessions, "cpu_vnni_flags", lambda: ["avx512_vnni"])
    damaged = tmp_path / "flexpert.onnx"
    damaged.write_bytes(b"MatMulInteger" + b"\xff" * 64)
    with pytest.raises(UserError, match="cannot load"):
        create_session(damaged, RuntimeOptions(device="cpu"))
    with pytest.raises(UserError, match="cannot load"):
        create_session(tmp_path / "absent.onnx", RuntimeOptions(device="cpu"))
