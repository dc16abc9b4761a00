"""One configuration object for the whole UniCure model; the default is the published size."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

Padding = Literal["reference", "masked"]
Weighting = Literal["linear", "log1p", "unlogged"]

PUBLISHED_LORA_LAYERS = (28, 29, 30, 31, 32)


@dataclass
class UniCureConfig:
    """Sizes and semantics of the backbone, the FlexPert head and the adaptor.

    `padding="reference"` reproduces the published quirk (padding keys get +1.0 on their
    attention logits, sentences stay padded to `pad_length`); `"masked"` excludes padding, so
    sentences may be trimmed. `flexpert_heads > 1` averages that many independently trained
    FlexPert heads (`FlexPertEnsemble`); the published model has one.
    """

    vocab_size: int = 145_469
    token_dim: int = 5120
    d_model: int = 1280
    n_heads: int = 20
    d_ff: int = 5120
    n_layers: int = 33
    head_hidden: int = 1024
    cell_dim: int = 1280
    pad_length: int = 1536
    sample_size: int = 1024
    padding: Padding = "reference"
    weighting: Weighting = "linear"
    lora_layers: tuple[int, ...] = PUBLISHED_LORA_LAYERS
    lora_rank: int = 32
    window: int = 32
    stride: int = 16
    attn_dim: int = 64
    drug_dim: int = 512
    drug_vector_length: int = 528
    decoder_hidden: int = 2048
    n_genes: int = 978
    adaptor_hidden: int | None = None
    flexpert_heads: int = 1
    dropout: float = 0.1
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lora_layers = tuple(self.lora_layers)
        if self.padding not in ("reference", "masked"):
            raise ValueError(f"padding must be 'reference' or 'masked', not {self.padding!r}")
        if self.flexpert_heads < 1:
            raise ValueError(f"flexpert_heads must be at least 1, not {self.flexpert_heads}")
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        for name, length in (
            ("cell_dim", self.cell_dim),
            ("drug_vector_length", self.drug_vector_length),
        ):
            if (length - self.window) % self.stride:
                raise ValueError(
                    f"{name}={length} is not covered by windows of {self.window}/{self.stride}"
                )

    @property
    def n_cell_windows(self) -> int:
        return (self.cell_dim - self.window) // self.stride + 1

    @property
    def fusion_dim(self) -> int:
        return self.n_cell_windows * self.attn_dim

    @property
    def pad_bias(self) -> float:
        """What padding keys add to attention logits."""
        return 1.0 if self.padding == "reference" else float("-inf")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["lora_layers"] = list(self.lora_layers)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> UniCureConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown UniCure config keys: {', '.join(unknown)}")
        return cls(**data)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> UniCureConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
