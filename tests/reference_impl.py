"""An independent, plain PyTorch reading of sections 3-5 of the reference, for tests.

It computes directly from a state dict in the PUBLISHED layout (section 6) with published token
ids, and shares no code with `unicure_rt.train.models`: every layer is written out by hand. LoRA is
applied unmerged, as `lora_pytorch` does at forward time: its effective in-projection weight is
`W_q + (q_out.weight @ q_in.weight).T`, so the query gets `x @ q_out.weight @ q_in.weight` added
(likewise k, v), while its effective out-projection weight is `W_o + o_out.weight @ o_in.weight`,
so the attention output gets `a @ o_in.weight.T @ o_out.weight.T` added.
"""

from __future__ import annotations

import math

import torch

UCE = "uce_lora.module."


def _w(state, key, dtype):
    return state[key].to(dtype)


def _linear(state, prefix, x):
    return x @ _w(state, prefix + "weight", x.dtype).T + _w(state, prefix + "bias", x.dtype)


def _layer_norm(state, prefix, x, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * _w(state, prefix + "weight", x.dtype) + _w(
        state, prefix + "bias", x.dtype
    )


def _gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _l2_normalize(x, eps=1e-12):
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def _self_attention(state, prefix, x, key_bias, n_heads):
    """x `[seq, batch, d]`; key_bias `[batch, seq]` added to the logits of every query."""
    seq, batch, d = x.shape
    head_dim = d // n_heads
    lora = prefix + "self_attn.lora_module."
    has_lora = lora + "q_in.weight" in state
    attn = prefix + ("self_attn.module." if has_lora else "self_attn.")
    w_in = _w(state, attn + "in_proj_weight", x.dtype)
    b_in = _w(state, attn + "in_proj_bias", x.dtype)
    projected = []
    for part, name in enumerate("qkv"):
        rows = slice(part * d, (part + 1) * d)
        y = x @ w_in[rows].T + b_in[rows]
        if has_lora:
            y = y + x @ _w(state, f"{lora}{name}_out.weight", x.dtype) @ _w(
                state, f"{lora}{name}_in.weight", x.dtype
            )
        projected.append(y.reshape(seq, batch, n_heads, head_dim).permute(1, 2, 0, 3))
    q, k, v = projected  # [batch, heads, seq, head_dim]
    logits = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + key_bias[:, None, None, :]
    a = torch.softmax(logits, dim=-1) @ v
    a = a.permute(2, 0, 1, 3).reshape(seq, batch, d)
    out = a @ _w(state, attn + "out_proj.weight", x.dtype).T + _w(
        state, attn + "out_proj.bias", x.dtype
    )
    if has_lora:
        out = (
            out
            + a
            @ _w(state, lora + "o_in.weight", x.dtype).T
            @ _w(state, lora + "o_out.weight", x.dtype).T
        )
    return out


def n_layers_of(state) -> int:
    prefix = UCE + "transformer_encoder.layers."
    return 1 + max(int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix))


def reference_cell_embedding(state, tokens, mask, n_heads, dtype=torch.float64):
    """Published token ids `tokens` and `mask` `[batch, seq]` -> cell embeddings `[batch, cell]`."""
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    mask = torch.as_tensor(mask)
    table = state[UCE + "pe_embedding.weight"]
    x = _l2_normalize(table[tokens].to(dtype))  # [batch, seq, token_dim]
    x = _linear(state, UCE + "encoder.0.", x)
    x = _layer_norm(state, UCE + "encoder.2.", _gelu(x))
    d_model = x.shape[-1]
    x = x * math.sqrt(d_model)
    x = x.transpose(0, 1)  # sequence first
    x = x + _w(state, UCE + "pos_encoder.pe", dtype)[: x.shape[0]]
    key_bias = (1 - mask).to(dtype)  # quirk: a float mask, +1.0 on padding keys
    for n in range(n_layers_of(state)):
        prefix = f"{UCE}transformer_encoder.layers.{n}."
        x = _layer_norm(
            state, prefix + "norm1.", x + _self_attention(state, prefix, x, key_bias, n_heads)
        )
        ff = _linear(state, prefix + "linear2.", torch.relu(_linear(state, prefix + "linear1.", x)))
        x = _layer_norm(state, prefix + "norm2.", x + ff)
    h = x[0]  # CLS
    for i in range(3):
        h = _gelu(
            _layer_norm(state, f"{UCE}decoder.{i}.1.", _linear(state, f"{UCE}decoder.{i}.0.", h))
        )
    return _l2_normalize(_linear(state, f"{UCE}decoder.3.", h))


def _windows(x, window, stride):
    n = (x.shape[-1] - window) // stride + 1
    return torch.stack([x[:, i * stride : i * stride + window] for i in range(n)], dim=1)


def reference_expression(state, cell, drug, window=32, stride=16, dtype=torch.float64):
    """Cell embeddings `[batch, cell]`, drug vectors `[batch, 528 | 1056]` -> `[batch, genes]`."""
    cell = torch.as_tensor(cell).to(dtype)
    drug = torch.as_tensor(drug).to(dtype)
    q = _linear(state, "query_map.", _windows(cell, window, stride))
    drug_windows = _windows(drug, window, stride)
    k = _linear(state, "key_map.", drug_windows)
    v = _linear(state, "value_map.", drug_windows)
    attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
    fused = (attention @ v).flatten(1)
    fused = _linear(
        state, "fusion_decoder.3.", torch.relu(_linear(state, "fusion_decoder.0.", fused))
    )
    return _linear(state, "decoder.3.", torch.relu(_linear(state, "decoder.0.", fused)))


def reference_forward(state, tokens, mask, drug, n_heads, dtype=torch.float64):
    """(cell embedding, predicted expression) of the published model."""
    cell = reference_cell_embedding(state, tokens, mask, n_heads, dtype)
    return cell, reference_expression(state, cell, drug, dtype=dtype)
