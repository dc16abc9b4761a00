"""Export step: PyTorch module -> ONNX file, with the dynamo exporter and dynamic axes."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
from torch.export import Dim

from unicure_rt.train.export.config import GraphConfig

EXTERNAL_DATA_THRESHOLD = 2 * 1024**3  # protobuf's hard limit for one file


def export_graph(
    module: torch.nn.Module,
    graph: GraphConfig,
    example_inputs: tuple[torch.Tensor, ...],
    out_dir: Path,
    *,
    max_dims: dict[str, int] | None = None,
) -> Path:
    """Write `out_dir/<graph.filename>`; graphs over 2 GB keep their weights in external data.

    The dynamo exporter is used because the legacy one bakes the sequence length into the
    attention reshapes.
    """
    names = {size for spec in graph.inputs for size in spec.shape if isinstance(size, str)}
    names -= set(graph.broadcast_axes)
    max_dims = max_dims or {}
    dims = {n: Dim(n, max=max_dims[n]) if n in max_dims else Dim(n) for n in names}
    n_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    path = Path(out_dir) / graph.filename
    quiet = io.StringIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(),
            example_inputs,
            dynamo=True,
            input_names=[spec.name for spec in graph.inputs],
            output_names=[spec.name for spec in graph.outputs],
            dynamic_shapes=graph.dynamic_shapes(dims),
            verbose=False,
        )
        drop_debug_metadata(program.model)
        name_broadcast_axes(program.model, graph)
        program.save(str(path), external_data=n_bytes > EXTERNAL_DATA_THRESHOLD)
    return path


def drop_debug_metadata(model) -> None:
    """Remove the exporter's per-node debug metadata (source stack traces, FX names).

    It holds absolute paths and line numbers of the exporting checkout, so without this the
    same weights give different files from different checkouts; it is also most of the
    bytes of a small graph's structure. Nothing at run time reads it.
    """
    graphs = [model.graph, *model.functions.values()]
    for graph in graphs:
        for node in graph.all_nodes():
            node.metadata_props.clear()


def name_broadcast_axes(model, graph: GraphConfig) -> None:
    """Give the axes of `graph.broadcast_axes`, traced at size 1, their names in the graph's
    inputs, and drop the intermediate shapes inferred at size 1.

    ONNX Runtime infers shapes again when it loads the file; left in place, the traced ones
    would let it specialise operators to a single row. The parity gate runs both a one-row and
    a one-per-drug case, so a graph that still assumed one row would not pass it.
    """
    if not graph.broadcast_axes:
        return
    import onnx_ir as ir

    specs = {spec.name: spec for spec in graph.inputs}
    for value in model.graph.inputs:
        spec = specs[value.name]
        named = [
            size if size in graph.broadcast_axes else dim
            for size, dim in zip(spec.shape, value.shape, strict=True)
        ]
        value.shape = ir.Shape(named)
    outputs = {id(value) for value in model.graph.outputs}
    for node in model.graph.all_nodes():
        for value in node.outputs:
            if id(value) not in outputs:
                value.shape = None
