"""One config object per exported graph: inputs, outputs, dynamic axes, tolerance."""

from __future__ import annotations

from dataclasses import dataclass

from unicure_rt.bundle.schema import CELL_ROWS
from unicure_rt.train.models.config import UniCureConfig


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of a graph input or output; strings in `shape` are dynamic axes."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphConfig:
    """What one ONNX graph of a bundle takes and returns, and how closely it must match PyTorch."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    atol: float = 1e-4
    # named axes the graph broadcasts against the batch (size 1 or the batch's size): traced at
    # size 1, because the exporter cannot trace a broadcast between two dynamic sizes, and named
    # in the ONNX file afterwards (`onnx_export.name_broadcast_axes`)
    broadcast_axes: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return f"{self.name}.onnx"

    def dynamic_shapes(self, dims: dict) -> tuple:
        """`torch.onnx.export(dynamo=True)` dynamic shapes, one `Dim` per named axis.

        Positional (in input order), so the graph's input names need not match the module's
        argument names.
        """
        return tuple(
            {
                axis: dims[size]
                for axis, size in enumerate(spec.shape)
                if isinstance(size, str) and size not in self.broadcast_axes
            }
            for spec in self.inputs
        )

    def manifest_entry(self) -> dict:
        return {
            "path": self.filename,
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
        }


def backbone_graph_config(config: UniCureConfig, atol: float = 1e-4) -> GraphConfig:
    seq: int | str = "seq" if config.padding == "masked" else config.pad_length
    return GraphConfig(
        name="backbone",
        inputs=(
            TensorSpec("tokens", "int64", ("batch", seq)),
            TensorSpec("mask", "int64", ("batch", seq)),
        ),
        outputs=(TensorSpec("cell_embedding", "float32", ("batch", config.cell_dim)),),
        atol=atol,
    )


def flexpert_graph_config(config: UniCureConfig, atol: float = 1e-4) -> GraphConfig:
    """The cell side is the same for every drug a patient is scored against, so the graph takes
    one cell row for a whole batch of drugs (or one per drug) and computes it once per row."""
    return GraphConfig(
        name="flexpert",
        inputs=(
            TensorSpec("cell_embedding", "float32", (CELL_ROWS, config.cell_dim)),
            TensorSpec("drug", "float32", ("batch", "drug_length")),
        ),
        outputs=(TensorSpec("expression", "float32", ("batch", config.n_genes)),),
        atol=atol,
        broadcast_axes=(CELL_ROWS,),
    )
