"""FlexPert cross-attention head, decoder and fine-tuning adaptor (reference section 5)."""

from __future__ import annotations

import math

import torch
from torch import nn

from unicure_rt.train.models.config import UniCureConfig


def windows(x: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """Cut `[batch, length]` into `[batch, n_windows, window]` overlapping windows.

    With `window == 2 * stride` (the published 32/16) this is built from halves, which keeps the
    vector length a dynamic axis in exported graphs.
    """
    if window == 2 * stride and x.shape[-1] % stride == 0:
        halves = x.reshape(x.shape[0], -1, stride)
        return torch.cat([halves[:, :-1], halves[:, 1:]], dim=-1)
    return x.unfold(-1, window, stride)


class FlexPert(nn.Module):
    """Cell embedding + drug vector -> predicted treated expression of `n_genes` genes."""

    def __init__(self, config: UniCureConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        self.query_map = nn.Linear(c.window, c.attn_dim)
        self.key_map = nn.Linear(c.window, c.attn_dim)
        self.value_map = nn.Linear(c.window, c.attn_dim)
        self.fusion_decoder = nn.Sequential(
            nn.Linear(c.fusion_dim, c.fusion_dim),
            nn.ReLU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.fusion_dim, c.fusion_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(c.fusion_dim, c.decoder_hidden),
            nn.ReLU(),
            nn.Dropout(c.dropout),
            nn.Linear(c.decoder_hidden, c.n_genes),
        )

    def fuse(self, cell: torch.Tensor, drug: torch.Tensor) -> torch.Tensor:
        c = self.config
        q = self.query_map(windows(cell, c.window, c.stride))
        drug_windows = windows(drug, c.window, c.stride)
        k, v = self.key_map(drug_windows), self.value_map(drug_windows)
        attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(c.attn_dim), dim=-1)
        return (attention @ v).flatten(1)

    def forward(self, cell: torch.Tensor, drug: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.fusion_decoder(self.fuse(cell, drug)))


class FlexPertEnsemble(nn.Module):
    """`config.flexpert_heads` FlexPert heads, each initialised and trained on its own loss;
    the prediction is their mean.

    With a few hundred training structures the held-out error of one head is mostly variance
    (seeds alone move TCGA L01 AUROC by about 0.04); averaging independently initialised heads
    removes part of it without more data. The heads share the drug embedding, so a bundle keeps
    one drug encoder and one library.
    """

    def __init__(self, config: UniCureConfig) -> None:
        super().__init__()
        self.config = config
        self.heads = nn.ModuleList(FlexPert(config) for _ in range(config.flexpert_heads))

    def forward(self, cell: torch.Tensor, drug: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(cell, drug) for head in self.heads]).mean(0)


def flexpert_module(config: UniCureConfig) -> nn.Module:
    """The FlexPert of `config`: one head (the published layout) or an ensemble of heads."""
    return FlexPert(config) if config.flexpert_heads == 1 else FlexPertEnsemble(config)


class Adaptor(nn.Module):
    """Linear -> ReLU -> Dropout(0.2) -> Linear on the frozen model's output (fine-tuning)."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, n_out)
        )

    def forward(self, expression: torch.Tensor) -> torch.Tensor:
        return self.net(expression)
