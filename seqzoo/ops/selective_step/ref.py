"""Reference (the spec) of the fused Mamba step: one token through the whole selective
block, in plain PyTorch.

Paper: Gu & Dao 2023, "Mamba", Fig. 3 (the block) and Algorithm 2 with L = 1, i.e. the
recurrence eq. (2a)-(2b) with the discretisation Ā = exp(ΔA), B̄ = ΔB of the reference
code. For one token x (B, Dm) and the state (conv_state (B, E, W-1), ssm_state (B, E, N)):

    [xi, z]  = in_proj(x)                                    (B, E) each
    window   = [conv_state, xi]                              (B, E, W): the conv's last W inputs
    u        = silu(Σ_k conv_weight[:, k] window[..., k] + conv_bias)
    [Δ̃, B, C] = x_proj(u)                                    (B, R), (B, N), (B, N)
    Δ        = softplus(dt_proj_weight Δ̃ + dt_bias)          (B, E)
    h'       = exp(Δ A) ⊙ h + (Δ u) Bᵀ                       (B, E, N)
    y        = h' C + D u ,   out = out_proj(y · silu(z))    (B, Dm)
    returns (out, window[..., 1:], h')

Dtypes: the SSM part (conv, Δ, state, y) runs in the *compute dtype*: ssm_state's dtype,
at least float32 (so bf16/fp16 activations under autocast keep an fp32 state); in_proj,
x_proj and out_proj run in x's dtype, as ``nn.Linear`` does. ``out`` has x's dtype, the
new conv_state in_proj's output dtype (x's, or autocast's), the new ssm_state the compute
dtype. Pure: the inputs are not modified.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def selective_step(
    x: Tensor,
    conv_state: Tensor,
    ssm_state: Tensor,
    in_proj_weight: Tensor,
    in_proj_bias: Tensor | None,
    conv_weight: Tensor,
    conv_bias: Tensor | None,
    x_proj_weight: Tensor,
    dt_proj_weight: Tensor,
    dt_bias: Tensor,
    A: Tensor,
    D: Tensor,
    out_proj_weight: Tensor,
    out_proj_bias: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    E, N = A.shape
    R = dt_proj_weight.shape[1]
    dtype = torch.promote_types(ssm_state.dtype, torch.float32)
    xz = F.linear(x, in_proj_weight, in_proj_bias)  # (B, 2E)
    xi, z = xz[:, :E], xz[:, E:]
    window = torch.cat([conv_state.to(xi.dtype), xi[..., None]], dim=-1)  # (B, E, W)
    u = (window.to(dtype) * conv_weight.to(dtype)).sum(-1)
    if conv_bias is not None:
        u = u + conv_bias.to(dtype)
    u = F.silu(u)  # (B, E)
    dt_low, Bm, Cm = F.linear(u.to(xi.dtype), x_proj_weight).split([R, N, N], dim=-1)
    dt = F.softplus(F.linear(dt_low, dt_proj_weight).to(dtype) + dt_bias.to(dtype))  # (B, E)
    h = torch.exp(dt[..., None] * A.to(dtype)) * ssm_state.to(dtype) + (dt * u)[..., None] * Bm.to(dtype)[:, None, :]
    y = (h * Cm.to(dtype)[:, None, :]).sum(-1) + D.to(dtype) * u
    y = y * F.silu(z.to(dtype))
    out = F.linear(y.to(x.dtype), out_proj_weight, out_proj_bias)
    return out, window[..., 1:], h
