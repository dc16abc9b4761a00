"""Training losses (section 7 of the reference); the stage-2 MSE term contributes gradients.

Each loss takes one group (`[n, g]` sets) or a batch of groups with leading dimensions
(`[..., n, g]`) and returns one value per group: stage 2 computes a whole batch of groups in a
few tensor operations instead of one small graph per group, which is most of its step time.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

N_KERNELS = 5
KERNEL_MUL = 2.0


def mmd(
    x: torch.Tensor, y: torch.Tensor, n_kernels: int = N_KERNELS, kernel_mul: float = KERNEL_MUL
) -> torch.Tensor:
    """Multi-kernel RBF MMD between sets `x[..., n, d]` and `y[..., m, d]`, as in the reference.

    Per group: bandwidth base = mean pairwise squared distance over the pooled set /
    kernel_mul**(n//2); kernels use base * kernel_mul**i, i = 0..n-1;
    MMD = mean(Kxx) + mean(Kyy) - mean(Kxy) - mean(Kyx).
    """
    n = x.shape[-2]
    total = torch.cat([x, y], dim=-2)
    squared = total.pow(2).sum(-1)
    d2 = (
        squared[..., :, None] + squared[..., None, :] - 2.0 * total @ total.transpose(-1, -2)
    ).clamp_min(0.0)
    m = total.shape[-2]
    bandwidth = d2.sum((-2, -1)).detach() / (m * m - m)
    bandwidth = torch.clamp(bandwidth, min=1e-12) / kernel_mul ** (n_kernels // 2)
    bandwidth = bandwidth[..., None, None]
    kernels = sum(torch.exp(-d2 / (bandwidth * kernel_mul**i)) for i in range(n_kernels))
    kxx, kyy = kernels[..., :n, :n], kernels[..., n:, n:]
    kxy, kyx = kernels[..., :n, n:], kernels[..., n:, :n]
    means = [k.mean((-2, -1)) for k in (kxx, kyy, kxy, kyx)]
    return means[0] + means[1] - means[2] - means[3]


def stage2_loss(
    pred: torch.Tensor,
    real: torch.Tensor,
    ctrl_mean: torch.Tensor,
    *,
    w_mse: float = 1.0,
    w_cos: float = 0.5,
    w_mmd: float = 0.1,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of each group sharing (cell line, drug, dose).

    `pred[..., n, g]`: predictions from the group's control cells; `real[..., m, g]`: observed
    treated profiles; `ctrl_mean[..., g]`: mean control profile.
    `1.0 * MSE(mean(pred) - ctrl, mean(real) - ctrl) + 0.5 * (1 - cos(dpred, dreal)) + 0.1 * MMD`.
    Unlike the reference (which detaches it) the MSE term contributes gradients. The terms are
    summed over the groups.
    """
    d_pred = pred.mean(-2) - ctrl_mean
    d_real = real.mean(-2) - ctrl_mean
    mse = (d_pred - d_real).pow(2).mean(-1)
    cos = 1.0 - F.cosine_similarity(d_pred, d_real, dim=-1, eps=1e-8)
    dist = mmd(pred, real)
    loss = w_mse * mse + w_cos * cos + w_mmd * dist
    return loss, {
        "mse": float(mse.detach().sum()),
        "cos": float(cos.detach().sum()),
        "mmd": float(dist.detach().sum()),
    }


def direction_loss(
    pred: torch.Tensor, pred_no_drug: torch.Tensor, signature: torch.Tensor, *, w_cos: float = 0.5
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of each z-score signature: only its direction is a measurement.

    `pred[..., n, g]` and `pred_no_drug[..., n, g]`: predictions for the same control cells with
    the drug and with the 528-zero control vector; `signature[..., g]`: the measured z-scores.
    `0.5 * (1 - cos(mean(pred) - mean(pred_no_drug), signature))`: the published scale-free
    term on the contrast effect, the change the scores are computed from. The term is summed over
    the signatures.
    """
    effect = pred.mean(-2) - pred_no_drug.mean(-2)
    cos = 1.0 - F.cosine_similarity(effect, signature, dim=-1, eps=1e-8)
    return w_cos * cos, {"signature_cos": float(cos.detach().sum())}
