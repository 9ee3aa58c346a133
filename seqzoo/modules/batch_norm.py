"""BatchNorm for right-padded sequences: statistics over the real positions only.

Ioffe & Szegedy, "Batch Normalization" (ICML 2015), Algorithm 1, with the batch taken to
be every real position of every sequence: for x (B, L, D) and lengths (B,),

    μ = Σ_{b, t < lengths[b]} x_bt / n,   σ² = Σ (x_bt - μ)² / n,   n = Σ_b lengths[b]
    y = (x - μ) / √(σ² + ε) · γ + β

and, in training, running_mean ← (1 - m) running_mean + m μ and running_var ← (1 - m)
running_var + m σ² n / (n - 1) (PyTorch's convention: momentum m weighs the new batch,
the running variance is unbiased). In eval mode the running statistics are used, so a
single position can be normalised alone: that is what the recurrent ``step`` does.

Padding is left out of the statistics, so the same sequences padded to different lengths
give the same outputs at their real positions. (S4 and S5 normalise the padded tensor,
padding included; see docs/benchmarks.md.) Statistics are per process: under DDP each rank
normalises with its own batch, as S4's training does (no SyncBatchNorm).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SequenceBatchNorm"]


class SequenceBatchNorm(nn.BatchNorm1d):
    """BatchNorm over (batch, length) of x (B, L, D), ignoring positions t >= lengths[b];
    x (B, D) is one step and needs eval mode (running statistics)."""

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:  # noqa: D102
        if x.dim() == 2:
            if self.training:
                raise RuntimeError(
                    "BatchNorm normalises with statistics over (batch, length), and a single step has no "
                    "length: call model.eval() (running statistics) before step()"
                )
            return self._affine(x, self.running_mean, self.running_var)
        if x.dim() != 3:
            raise ValueError(f"SequenceBatchNorm takes (B, L, D) sequences or (B, D) steps, got shape {tuple(x.shape)}")
        if not self.training:
            return self._affine(x, self.running_mean, self.running_var)

        xf = x.to(_compute_dtype(x))  # statistics in fp32 at least, whatever the autocast dtype
        if lengths is None:
            mask = None
            n = xf.new_tensor(float(x.shape[0] * x.shape[1]))
        else:
            mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, L, 1)
            n = mask.sum().to(xf.dtype)
        denom = n.clamp(min=1)
        mean = (xf if mask is None else xf * mask).sum(dim=(0, 1)) / denom
        dev = xf - mean
        var = (dev if mask is None else dev * mask).square().sum(dim=(0, 1)) / denom
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            w = (n > 0).to(self.running_mean.dtype) * m  # an empty batch leaves the running statistics alone
            unbiased = var * (n / (n - 1).clamp(min=1))
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), w)
            self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), w)
        return self._affine(x, mean, var)

    def _affine(self, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        cd = _compute_dtype(x)
        scale = torch.rsqrt(var.to(cd) + self.eps)
        shift = -mean.to(cd) * scale
        if self.affine:
            scale = scale * self.weight.to(cd)
            shift = shift * self.weight.to(cd) + self.bias.to(cd)
        return (x.to(cd) * scale + shift).to(x.dtype)


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
