"""The modules that become `backbone.onnx` and `flexpert.onnx`, with exact simplifications.

Each simplification changes nothing but rounding, and the parity gate (`validate.py`) proves it
against the plain PyTorch model:

- the token path (normalise -> Linear -> GELU -> LayerNorm -> x sqrt(d)) is a fixed function of
  the token id, so it is precomputed into a `[vocab, d_model]` table;
- the cell head runs on the CLS position only (the model already does so);
- the query and key maps are linear, so a query's logit against a drug window is that window
  times `scale · Wkᵀ (Wq x + bq)` plus `scale · q·bk`; the second term is the same for every
  window of the query and cancels in the softmax, so the cell side folds into one
  `window -> window` map of the cell windows (`cell_query`) and keys are never projected;
- the cell side reads only the cell embedding, so the graph computes it once per cell and
  broadcasts it over the drug batch: `cell_embedding` may have one row for a whole batch of
  drugs (`CELL_ROWS`, `bundle/schema.py`);
- `value_map` is linear and attention rows sum to one, so attention weights the raw drug windows
  and `value_map` merges into `fusion_decoder.0` (when the attention is at least as wide as a
  window, where this saves work);
- `fusion_decoder.3` and `decoder.0` are consecutive Linear layers and fold into one;
- an ensemble's heads each get these folds, and their mean is taken in the graph.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from unicure_rt.train.models.backbone import Backbone
from unicure_rt.train.models.flexpert import FlexPert, FlexPertEnsemble, windows


@torch.no_grad()
def precompute_token_table(backbone: Backbone, chunk: int = 4096) -> torch.Tensor:
    """`TokenEncoder` evaluated on every token id of the vocabulary: `[vocab, d_model]`."""
    vocab = backbone.config.vocab_size
    rows = [backbone.tokens(torch.arange(i, min(i + chunk, vocab))) for i in range(0, vocab, chunk)]
    return torch.cat(rows)


class BackboneGraph(nn.Module):
    """`tokens`, `mask` -> `cell_embedding`, reading token states from a precomputed table."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.register_buffer("token_table", precompute_token_table(backbone))
        self.encoder = backbone.encoder

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(F.embedding(tokens, self.token_table), mask)


class FlexPertGraph(nn.Module):
    """`cell_embedding`, `drug` -> `expression` with `fusion_decoder.3` folded into `decoder.0`.

    `value_map` folds into the fusion layer only where that saves work (`attn_dim >= window`,
    as in the published 64/32); for narrower attention, projecting the values first is cheaper.
    No reshape of the cell side names the batch size, so a graph traced with one cell row runs
    any number of them (one, broadcast over the drugs, or one per drug).
    """

    @torch.no_grad()
    def __init__(self, flexpert: FlexPert) -> None:
        super().__init__()
        c = flexpert.config
        self.window, self.stride = c.window, c.stride
        scale = 1.0 / math.sqrt(c.attn_dim)
        starts = torch.arange(c.n_cell_windows) * c.stride
        self.register_buffer("cell_window_index", starts[:, None] + torch.arange(c.window))
        wq, bq = flexpert.query_map.weight, flexpert.query_map.bias
        wk = flexpert.key_map.weight
        self.cell_query = nn.Linear(c.window, c.window)
        self.cell_query.weight.copy_(scale * (wk.T @ wq))
        self.cell_query.bias.copy_(scale * (bq @ wk))
        self.fold_values = c.attn_dim >= c.window
        self.fused_width = c.n_cell_windows * (c.window if self.fold_values else c.attn_dim)
        w0, b0 = flexpert.fusion_decoder[0].weight, flexpert.fusion_decoder[0].bias
        if self.fold_values:
            wv, bv = flexpert.value_map.weight, flexpert.value_map.bias
            blocks = w0.reshape(c.fusion_dim, c.n_cell_windows, c.attn_dim)
            merged = torch.einsum("owa,ai->owi", blocks, wv).reshape(c.fusion_dim, -1)
            self.fusion_in = nn.Linear(merged.shape[1], c.fusion_dim)
            self.fusion_in.weight.copy_(merged)
            self.fusion_in.bias.copy_(b0 + blocks.sum(1) @ bv)
        else:
            self.value_map = flexpert.value_map
            self.fusion_in = flexpert.fusion_decoder[0]
        w3, b3 = flexpert.fusion_decoder[3].weight, flexpert.fusion_decoder[3].bias
        wd, bd = flexpert.decoder[0].weight, flexpert.decoder[0].bias
        self.fusion_out = nn.Linear(c.fusion_dim, c.decoder_hidden)
        self.fusion_out.weight.copy_(wd @ w3)
        self.fusion_out.bias.copy_(wd @ b3 + bd)
        self.out = flexpert.decoder[3]

    def forward(self, cell_embedding: torch.Tensor, drug: torch.Tensor) -> torch.Tensor:
        queries = self.cell_query(cell_embedding[:, self.cell_window_index])
        drug_windows = windows(drug, self.window, self.stride)
        attention = torch.softmax(queries @ drug_windows.transpose(1, 2), dim=-1)
        values = drug_windows if self.fold_values else self.value_map(drug_windows)
        fused = self.fusion_in((attention @ values).reshape(-1, self.fused_width))
        return self.out(torch.relu(self.fusion_out(torch.relu(fused))))


class FlexPertEnsembleGraph(nn.Module):
    """The mean of the heads' `FlexPertGraph`s: one `flexpert.onnx` for a `FlexPertEnsemble`."""

    def __init__(self, ensemble: FlexPertEnsemble) -> None:
        super().__init__()
        self.heads = nn.ModuleList(FlexPertGraph(head) for head in ensemble.heads)

    def forward(self, cell_embedding: torch.Tensor, drug: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(cell_embedding, drug) for head in self.heads]).mean(0)


def flexpert_graph(flexpert: FlexPert | FlexPertEnsemble) -> nn.Module:
    """The module exported as `flexpert.onnx` for one FlexPert head or an ensemble of them."""
    if isinstance(flexpert, FlexPertEnsemble):
        return FlexPertEnsembleGraph(flexpert)
    return FlexPertGraph(flexpert)
