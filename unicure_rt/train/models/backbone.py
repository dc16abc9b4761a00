"""UCE-style transformer backbone: cell sentence -> L2-normalised cell embedding."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from unicure_rt.train.models.config import UniCureConfig


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """Standard interleaved sin/cos table, shaped `[max_len, 1, d_model]` as in UCE."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
    )
    table = torch.zeros(max_len, 1, d_model)
    table[:, 0, 0::2] = torch.sin(position * div_term)
    table[:, 0, 1::2] = torch.cos(position * div_term)
    return table


def _head_block(d_in: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, d_out), nn.LayerNorm(d_out), nn.GELU(), nn.Dropout(dropout)
    )


class CellHead(nn.Module):
    """3 x [Linear, LayerNorm, GELU, Dropout] then Linear; applied to the CLS position only."""

    def __init__(self, config: UniCureConfig) -> None:
        super().__init__()
        c = config
        self.decoder = nn.Sequential(
            _head_block(c.d_model, c.head_hidden, c.dropout),
            _head_block(c.head_hidden, c.cell_dim, c.dropout),
            _head_block(c.cell_dim, c.cell_dim, c.dropout),
            nn.Linear(c.cell_dim, c.cell_dim),
        )

    def forward(self, cls_state: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.decoder(cls_state), dim=-1)


class TokenEncoder(nn.Module):
    """Token table row -> normalise -> Linear -> GELU -> LayerNorm -> x sqrt(d_model).

    A fixed function of the token id at inference, so export precomputes it into a table.
    """

    def __init__(self, config: UniCureConfig) -> None:
        super().__init__()
        self.scale = math.sqrt(config.d_model)
        self.pe_embedding = nn.Embedding(config.vocab_size, config.token_dim)
        self.encoder = nn.Sequential(
            nn.Linear(config.token_dim, config.d_model), nn.GELU(), nn.LayerNorm(config.d_model)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encoder(F.normalize(self.pe_embedding(tokens), dim=-1)) * self.scale


def padding_bias(mask: torch.Tensor, pad_bias: float) -> torch.Tensor:
    """Float key-padding mask: 0 on real tokens, `pad_bias` on padding (+1.0: reference quirk)."""
    zero = torch.zeros((), dtype=torch.float32)
    return torch.where(mask > 0, zero, torch.full((), pad_bias, dtype=torch.float32))


class SentenceEncoder(nn.Module):
    """Positions + transformer + CLS head over token states `[batch, seq, d_model]`.

    Layers are `nn.TransformerEncoderLayer` in the sequence-first layout so that peft's LoRA on
    `nn.MultiheadAttention` works in eval mode.
    """

    def __init__(self, config: UniCureConfig) -> None:
        super().__init__()
        self.pad_bias = config.pad_bias
        self.register_buffer("pe", sinusoidal_positions(config.pad_length, config.d_model))
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            config.d_model, config.n_heads, config.d_ff, config.dropout, activation="relu"
        )
        self.transformer_encoder = nn.TransformerEncoder(
            layer, config.n_layers, enable_nested_tensor=False
        )
        self.head = CellHead(config)

    def forward(self, token_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = token_states.transpose(0, 1)
        x = self.dropout(x + self.pe[: x.shape[0]])
        x = self.transformer_encoder(x, src_key_padding_mask=padding_bias(mask, self.pad_bias))
        return self.head(x[0])


class Backbone(nn.Module):
    """The UCE backbone: `tokens`, `mask` `[batch, seq]` -> cell embedding `[batch, cell_dim]`."""

    def __init__(self, config: UniCureConfig) -> None:
        super().__init__()
        self.config = config
        self.tokens = TokenEncoder(config)
        self.encoder = SentenceEncoder(config)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.tokens(tokens), mask)
