"""Mamba-2: the SSD (state-space duality) block.

Paper: Dao & Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms
Through Structured State Space Duality" (ICML 2024), https://arxiv.org/abs/2405.21060.
The block of §7 / Fig. 6 ("parallel" Mamba-2 block), with E = expand * d_model inner
channels split into H = E / head_dim heads of size P = head_dim, and G groups of B/C:

    z, xBC, Δ̃ = in_proj(u)                     all projections at the start of the block
    x, B, C   = SiLU(causal conv(xBC))          (B, L, E), (B, L, G, N), (B, L, G, N)
    Δ         = softplus(Δ̃ + dt_bias)           (B, L, H): one step size per head
    y         = SSD(x, Δ, A, B, C) + D x        A = -exp(A_log): a scalar per head, i.e. the
                                                state matrix is scalar times identity (§3)
    out       = out_proj(RMSNorm(y · SiLU(z)))  the gated, grouped RMSNorm of §7

SSD runs chunked (:mod:`seqzoo.ops.ssd`): quadratic attention-like blocks within chunks
of ``chunk_size`` steps, a recurrence across chunks; its loop reference is the spec, and
the recurrent form (``step``) is that recurrence one token at a time.

Init (as the reference implementation): A ~ U[1, 16] per head (stored as log), Δ
log-uniform in [dt_min, dt_max] stored through the inverse softplus as dt_bias, D = 1;
A_log, D, dt_bias stay fp32 and carry ``weight_decay=0`` hints.

State = (conv_state (B, E + 2GN, d_conv-1), ssm_state (B, H, P, N)). ``lengths``: Δ = 0 on
padding (the state is untouched) and the conv state is taken from the last real inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from seqzoo.layer import SequenceLayer, optim_hint, ssm_dtype
from seqzoo.layers.mamba import conv_state_at, inverse_softplus
from seqzoo.ops import causal_conv1d, causal_conv1d_update, ssd
from seqzoo.registry import register


@dataclass
class Mamba2Config:
    d_model: int
    d_state: int = 64  # N (the reference implementation uses 128 on GPUs)
    d_conv: int = 4
    expand: int = 2  # E = expand * d_model
    head_dim: int | None = None  # P, must divide E; None: the largest of 64, 32, 16, ... dividing E
    n_groups: int = 1  # G groups of B/C shared by H / G heads each
    chunk_size: int = 64  # Q of the chunked SSD algorithm
    A_init_min: float = 1.0
    A_init_max: float = 16.0
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False  # biases of in_proj / out_proj
    norm_eps: float = 1e-5

    def __post_init__(self):
        for name in ("d_state", "d_conv", "expand", "n_groups", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        E = self.expand * self.d_model
        if self.head_dim is None:
            self.head_dim = next(p for p in (64, 32, 16, 8, 4, 2, 1) if E % p == 0)
        if self.head_dim < 1:
            raise ValueError(f"head_dim must be >= 1, got {self.head_dim}")
        if E % self.head_dim:
            divisors = [p for p in (8, 16, 32, 64, 128) if E % p == 0]
            raise ValueError(
                f"head_dim={self.head_dim} must divide the inner width expand * d_model = {E}; "
                f"try head_dim in {divisors or [1]}"
            )
        H = E // self.head_dim
        if H % self.n_groups:
            raise ValueError(f"n_groups={self.n_groups} must divide the number of heads H = E / head_dim = {H}")
        if not 0 < self.A_init_min <= self.A_init_max:
            raise ValueError(f"need 0 < A_init_min <= A_init_max, got {self.A_init_min}, {self.A_init_max}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")


class Mamba2State(NamedTuple):
    conv_state: Tensor  # (B, E + 2 G N, d_conv - 1): the last inputs of the causal conv
    ssm_state: Tensor  # (B, H, P, N)


def gated_rms_norm(y: Tensor, z: Tensor, weight: Tensor, groups: int, eps: float) -> Tensor:
    """RMSNorm(y · SiLU(z)) over each of ``groups`` equal slices of the last dim, times weight."""
    y = rearrange(y * F.silu(z), "... (g c) -> ... g c", g=groups)
    y = y * torch.rsqrt(y.square().mean(-1, keepdim=True) + eps)
    return rearrange(y, "... g c -> ... (g c)") * weight


@register("mamba2", config=Mamba2Config)
class Mamba2(SequenceLayer):
    """Mamba-2 (SSD) block. x (B, L, D) -> y (B, L, D); state = (conv_state, ssm_state)."""

    supports_lengths = True
    State = Mamba2State
    test_variants = (
        {"d_state": 8, "head_dim": 8, "chunk_size": 8},
        {"d_state": 6, "head_dim": 4, "n_groups": 2, "chunk_size": 5, "d_conv": 3, "bias": True},
    )

    def __init__(self, config: Mamba2Config):
        super().__init__(config)
        c = config
        E = c.expand * c.d_model
        self.d_inner, self.n_heads = E, E // c.head_dim
        G, N, H = c.n_groups, c.d_state, self.n_heads
        self.conv_dim = E + 2 * G * N
        self.in_proj = nn.Linear(c.d_model, 2 * E + 2 * G * N + H, bias=c.bias)  # -> z, xBC, Δ̃
        self.conv = nn.Conv1d(self.conv_dim, self.conv_dim, c.d_conv, groups=self.conv_dim, bias=c.conv_bias)
        log_dt = torch.rand(H) * (math.log(c.dt_max) - math.log(c.dt_min)) + math.log(c.dt_min)
        self.dt_bias = nn.Parameter(inverse_softplus(torch.exp(log_dt).clamp(min=c.dt_init_floor)))  # (H,)
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(c.A_init_min, c.A_init_max)))  # (H,)
        self.D = nn.Parameter(torch.ones(H))
        self.norm_weight = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, c.d_model, bias=c.bias)
        for p in (self.A_log, self.D, self.dt_bias):
            optim_hint(p, weight_decay=0.0)
        self.keep_fp32("A_log", "D", "dt_bias")

    # ---------------------------------------------------------------- pieces
    @property
    def conv_weight(self) -> Tensor:
        return self.conv.weight[:, 0, :]  # (E + 2GN, d_conv)

    def _split_in(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """in_proj: (..., D) -> z (..., E), xBC (..., E + 2GN), Δ̃ (..., H)."""
        return self.in_proj(u).split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)

    def _split_xbc(self, xbc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., E + 2GN) -> x (..., H, P), B (..., G, N), C (..., G, N)."""
        c = self.config
        GN = c.n_groups * c.d_state
        x, Bm, Cm = xbc.split([self.d_inner, GN, GN], dim=-1)
        x = rearrange(x, "... (h p) -> ... h p", p=c.head_dim)
        Bm = rearrange(Bm, "... (g n) -> ... g n", g=c.n_groups)
        Cm = rearrange(Cm, "... (g n) -> ... g n", g=c.n_groups)
        return x, Bm, Cm

    def _out(self, y: Tensor, x: Tensor, z: Tensor, dtype: torch.dtype, out_dtype: torch.dtype) -> Tensor:
        """y (..., H, P) from the scan -> skip term, gated norm, out_proj."""
        y = y + self.D.to(dtype)[:, None] * x  # per-head skip
        y = gated_rms_norm(
            rearrange(y, "... h p -> ... (h p)"), z.to(dtype), self.norm_weight.to(dtype), self.config.n_groups, self.config.norm_eps
        )
        return self.out_proj(y.to(out_dtype))

    # ---------------------------------------------------------------- forms
    def _forward(self, x, state, lengths, return_state):
        c = self.config
        dtype = ssm_dtype(x)
        L = x.shape[1]
        z, xbc, dt = self._split_in(x)
        xbc = rearrange(xbc, "b l c -> b c l")
        conv0 = None if state is None else state.conv_state
        xbc_c, conv_last = causal_conv1d(xbc, self.conv_weight, self.conv.bias, conv0, return_final_states=True, activation="silu")
        if lengths is not None and return_state:
            conv_last = conv_state_at(xbc, conv0, lengths, c.d_conv)
        xs, Bm, Cm = self._split_xbc(rearrange(xbc_c, "b c l -> b l c").to(dtype))  # (B, L, H, P), (B, L, G, N) x2
        dt = F.softplus(dt.to(dtype) + self.dt_bias.to(dtype))  # (B, L, H)
        if lengths is not None:  # Δ = 0 on padding: decay 1, no input
            pad = torch.arange(L, device=x.device)[None, :] >= lengths[:, None]
            dt = dt.masked_fill(pad[..., None], 0.0)
        A = -torch.exp(self.A_log.to(dtype))
        y, S = ssd(
            xs, dt, A, Bm, Cm, c.chunk_size, None if state is None else state.ssm_state, return_final_state=True
        )  # (B, L, H, P), (B, H, P, N)
        out = self._out(y, xs, z, dtype, x.dtype)
        return out, Mamba2State(conv_last.to(x.dtype), S) if return_state else None

    def _step(self, x_t, state):
        dtype = ssm_dtype(x_t)
        z, xbc, dt = self._split_in(x_t)
        xbc_c, conv_state = causal_conv1d_update(xbc, state.conv_state, self.conv_weight, self.conv.bias, "silu")
        xs, Bm, Cm = self._split_xbc(xbc_c.to(dtype))  # (B, H, P), (B, G, N) x2
        dt = F.softplus(dt.to(dtype) + self.dt_bias.to(dtype))  # (B, H)
        A = -torch.exp(self.A_log.to(dtype))
        heads_per_group = self.n_heads // self.config.n_groups
        Bh = Bm.repeat_interleave(heads_per_group, dim=1)  # (B, H, N)
        Ch = Cm.repeat_interleave(heads_per_group, dim=1)
        a = torch.exp(dt * A)[..., None, None]  # (B, H, 1, 1)
        S = a * state.ssm_state + (dt[..., None] * xs)[..., None] * Bh[:, :, None, :]  # (B, H, P, N)
        y = torch.einsum("bhpn,bhn->bhp", S, Ch)
        return self._out(y, xs, z, dtype, x_t.dtype), Mamba2State(conv_state, S)

    def _init_state(self, batch_size, device, dtype):
        c = self.config
        ssm = torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else dtype
        return Mamba2State(
            torch.zeros(batch_size, self.conv_dim, c.d_conv - 1, device=device, dtype=dtype),
            torch.zeros(batch_size, self.n_heads, c.head_dim, c.d_state, device=device, dtype=ssm),
        )

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"d_model={c.d_model}, d_state={c.d_state}, heads={self.n_heads}x{c.head_dim}, "
            f"n_groups={c.n_groups}, chunk_size={c.chunk_size}"
        )


__all__ = ["Mamba2", "Mamba2Config", "Mamba2State", "gated_rms_norm"]
