"""Signed int8 weights for ONNX Runtime's VNNI kernels, made exactly from a bundle's unsigned ones.

int8 bundles hold uint8 weights (`unicure_rt.train.export.precision.INT8_SETTINGS`): on CPUs
without VNNI, ONNX Runtime's uint8 x int8 kernels add pairs of products in saturating 16-bit
arithmetic, so int8 weights would change the results there, while its uint8 x uint8 kernels are
exact but several times slower. On a CPU with VNNI (`VNNI_FLAGS`) the uint8 x int8 kernels
accumulate in 32 bits and are exact. There `signed_weight_model` rewrites every
`MatMulInteger` weight w and its zero point z from uint8 to int8 (w - 128, z - 128): every
difference w - z, hence every integer product and every output of the graph, is unchanged
(bit-identical; `tests/test_int8_weights.py`), at several times the speed (`benchmarks/`, W1 int8).
The bundle's file is read as it is (hashed by the bundle loader); the rewrite lives in memory.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

# /proc/cpuinfo flags of the instructions whose uint8 x int8 dot products accumulate in 32 bits.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# ONNX's protobuf serialisation limit: a rewritten graph must fit in one message.
MAX_MODEL_BYTES = 2**31 - 1


def cpu_vnni_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The VNNI flags of this CPU ([] where there are none or /proc/cpuinfo cannot be read)."""
    try:
        with open(cpuinfo, errors="replace") as lines:  # the first CPU's block says it all
            for line in lines:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in VNNI_FLAGS if flag in present]
    except OSError:
        pass
    return []


def _mentions_matmul_integer(path: Path) -> bool:
    """Cheap pre-check: a graph with a MatMulInteger node holds the op's name as plain bytes."""
    with open(path, "rb") as handle:
        if Path(path).stat().st_size == 0:
            return False
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(b"MatMulInteger") >= 0


def signed_weight_model(path: Path) -> bytes | None:
    """The graph at `path` with its uint8 MatMulInteger weights and zero points made int8.

    Returns the serialised model, or None when the graph has no such weights (fp32 and fp16
    graphs, or weights already int8) or would not fit in one protobuf message.
    """
    if not _mentions_matmul_integer(path):
        return None
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    uint8 = {
        tensor.name: tensor
        for tensor in model.graph.initializer
        if tensor.data_type == onnx.TensorProto.UINT8
    }
    pairs = {  # (weight, zero point) of each MatMulInteger whose both are uint8 initializers
        (node.input[1], node.input[3])
        for node in model.graph.node
        if node.op_type == "MatMulInteger"
        and len(node.input) == 4
        and node.input[1] in uint8
        and node.input[3] in uint8
    }
    names = {name for pair in pairs for name in pair}
    other_uses = {  # a tensor read anywhere else keeps its type
        name
        for node in model.graph.node
        for index, name in enumerate(node.input)
        if name in names and not (node.op_type == "MatMulInteger" and index in (1, 3))
    } | {output.name for output in model.graph.output}
    blocked = other_uses & names  # and every pair sharing a tensor with a blocked pair
    while True:
        spread = {name for pair in pairs if blocked.intersection(pair) for name in pair}
        if spread <= blocked:
            break
        blocked |= spread
    shifted = 0
    for name in sorted(names - blocked):
        unsigned = numpy_helper.to_array(uint8[name])
        signed = (unsigned.astype(np.int16) - 128).astype(np.int8)
        uint8[name].CopyFrom(numpy_helper.from_array(signed, name))
        shifted += 1
    if not shifted or model.ByteSize() > MAX_MODEL_BYTES:
        return None
    return model.SerializeToString()
