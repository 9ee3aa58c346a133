"""Mamba: the selective state-space block.

Paper: Gu & Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"
(2023), https://arxiv.org/abs/2312.00752. The block of Fig. 3, with E = expand * d_model
inner channels and an N-vector state per channel:

    x, z   = in_proj(u)                                   (B, L, E) each
    x      = SiLU(causal depthwise conv_{d_conv}(x))       (§3.4: the short conv of H3)
    Δ̃, B, C = x_proj(x)                                   (B, L, dt_rank), (B, L, N), (B, L, N)
    Δ      = softplus(dt_proj(Δ̃))                         (Algorithm 2, s_Δ and τ_Δ)
    y      = SelectiveScan(x, Δ, A, B, C) + D x           (Algorithm 2 / eq. (2), :mod:`seqzoo.ops.selective_scan`)
    out    = out_proj(y · SiLU(z))

Init (§3.6, App. D): S4D-Real A = -(1, 2, ..., N) per channel, stored as A_log; Δ drawn
log-uniformly in [dt_min, dt_max] and stored as dt_proj's bias through the inverse
softplus; D = 1. A_log, D and the Δ bias stay fp32 (also when the module is cast to
fp16/bf16) and carry ``weight_decay=0`` hints.

Recurrent form: state = (conv_state: the last d_conv-1 inputs of the conv (B, E, d_conv-1),
ssm_state (B, E, N)). A forward that starts from a state feeds conv_state to the first
positions and uses ssm_state as the scan's initial state, so chunked forwards equal one.
``lengths``: padded positions get Δ = 0 exactly (the scan gets delta = -inf before its
softplus), which leaves the SSM state untouched; the conv state is gathered from the last
d_conv-1 *real* inputs of each row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from seqzoo.layer import LayerInputError, SequenceLayer, optim_hint, ssm_dtype
from seqzoo.ops import causal_conv1d, selective_scan
from seqzoo.ops.selective_step import run as selective_step_run
from seqzoo.registry import register


@dataclass
class MambaConfig:
    d_model: int
    d_state: int = 16  # N
    d_conv: int = 4  # width of the causal depthwise conv
    expand: int = 2  # E = expand * d_model
    dt_rank: int | None = None  # rank of the Δ projection; None: ceil(d_model / 16)
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False  # biases of in_proj / out_proj

    def __post_init__(self):
        for name in ("d_state", "d_conv", "expand"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dt_rank is not None and self.dt_rank < 1:
            raise ValueError(f"dt_rank must be >= 1 (or None for ceil(d_model / 16)), got {self.dt_rank}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")


class MambaState(NamedTuple):
    conv_state: Tensor  # (B, E, d_conv - 1): the last inputs of the causal conv
    ssm_state: Tensor  # (B, E, N)


def inverse_softplus(y: Tensor) -> Tensor:
    """x with softplus(x) = y, for y > 0: x = y + log(1 - exp(-y))."""
    return y + torch.log(-torch.expm1(-y))


def conv_state_at(x: Tensor, state: Tensor | None, lengths: Tensor, width: int) -> Tensor:
    """The last ``width - 1`` real inputs of each row: x (B, C, L) right-padded, state (B, C,
    width-1) the inputs before x (zeros if None), lengths (B,) -> (B, C, width-1)."""
    B, C, _ = x.shape
    if state is None:
        state = x.new_zeros(B, C, width - 1)
    xp = torch.cat([state.to(x.dtype), x], dim=-1)  # (B, C, width-1+L)
    idx = lengths[:, None] + torch.arange(width - 1, device=x.device)  # (B, width-1)
    return xp.gather(2, idx[:, None, :].expand(B, C, width - 1))


@register("mamba", config=MambaConfig)
class Mamba(SequenceLayer):
    """Mamba block. x (B, L, D) -> y (B, L, D); state = (conv_state, ssm_state)."""

    supports_lengths = True
    State = MambaState
    test_variants = ({}, {"d_state": 5, "d_conv": 2, "expand": 1, "dt_rank": 3, "bias": True})

    def __init__(self, config: MambaConfig):
        super().__init__(config)
        D, N = config.d_model, config.d_state
        E = config.expand * D
        R = config.dt_rank or math.ceil(D / 16)
        self.d_inner, self.dt_rank = E, R
        self.in_proj = nn.Linear(D, 2 * E, bias=config.bias)
        self.conv = nn.Conv1d(E, E, config.d_conv, groups=E, bias=config.conv_bias)  # weight (E, 1, d_conv)
        self.x_proj = nn.Linear(E, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.out_proj = nn.Linear(E, D, bias=config.bias)

        # Δ init: dt_proj maps a unit-scale input to roughly unit scale; its bias is
        # softplus^-1(dt) with dt log-uniform in [dt_min, dt_max] (Mamba App. D)
        nn.init.uniform_(self.dt_proj.weight, -(R**-0.5), R**-0.5)
        log_dt = torch.rand(E) * (math.log(config.dt_max) - math.log(config.dt_min)) + math.log(config.dt_min)
        dt = torch.exp(log_dt).clamp(min=config.dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(inverse_softplus(dt))
        # S4D-Real: A_n = -(n + 1)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))  # (E, N)
        self.D = nn.Parameter(torch.ones(E))
        for p in (self.A_log, self.D, self.dt_proj.bias):
            optim_hint(p, weight_decay=0.0)
        self.keep_fp32("A_log", "D", "dt_proj.bias")  # the selective scan is sensitive to them (mamba #6)

    # ---------------------------------------------------------------- pieces
    @property
    def conv_weight(self) -> Tensor:
        return self.conv.weight[:, 0, :]  # (E, d_conv)

    def _ssm_params(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """(A (E, N), D (E,), Δ bias (E,)) in the SSM compute dtype."""
        return -torch.exp(self.A_log.to(dtype)), self.D.to(dtype), self.dt_proj.bias.to(dtype)

    def _split_x_dbl(self, xc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x_proj: (..., E) -> Δ̃ projected to (..., E) (without the bias), B (..., N), C (..., N)."""
        N = self.config.d_state
        dt_low, Bm, Cm = self.x_proj(xc).split([self.dt_rank, N, N], dim=-1)
        return F.linear(dt_low, self.dt_proj.weight), Bm, Cm

    # ---------------------------------------------------------------- forms
    def _forward(self, x, state, lengths, return_state):
        dtype = ssm_dtype(x)
        Bsz, L, _ = x.shape
        xi, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, E) each
        xi = rearrange(xi, "b l e -> b e l")
        conv0 = None if state is None else state.conv_state
        xc, conv_last = causal_conv1d(
            xi, self.conv_weight, self.conv.bias, conv0, return_final_states=True, activation="silu"
        )  # (B, E, L)
        if lengths is not None and return_state:
            conv_last = conv_state_at(xi, conv0, lengths, self.config.d_conv)

        delta, Bm, Cm = self._split_x_dbl(rearrange(xc, "b e l -> b l e"))
        delta = rearrange(delta, "b l e -> b e l").to(dtype)  # (B, E, L)
        if lengths is not None:  # softplus(-inf) = 0: Δ = 0 leaves the state as it is
            pad = torch.arange(L, device=x.device)[None, :] >= lengths[:, None]  # (B, L)
            delta = delta.masked_fill(pad[:, None, :], float("-inf"))
        A, Dskip, dt_bias = self._ssm_params(dtype)
        y, h = selective_scan(
            xc.to(dtype),
            delta,
            A,
            rearrange(Bm, "b l n -> b n l").to(dtype),
            rearrange(Cm, "b l n -> b n l").to(dtype),
            Dskip,
            rearrange(z, "b l e -> b e l").to(dtype),
            dt_bias,
            delta_softplus=True,
            initial_state=None if state is None else state.ssm_state,
            return_final_state=True,
        )  # y (B, E, L), h (B, E, N)
        out = self.out_proj(rearrange(y, "b e l -> b l e").to(x.dtype))
        return out, MambaState(conv_last.to(x.dtype), h) if return_state else None

    def _step(self, x_t, state):
        """One token: the fused step op (:mod:`seqzoo.ops.selective_step`, Algorithm 2 with
        L = 1, eq. (2a)/(2b)), whose reference is this block's recurrence written out:

            u = silu(Σ_k w_k window_k + b)             the conv over its last W inputs
            h = exp(Δ A) ⊙ h + (Δ u) Bᵀ,  y = h C + D u,  out = out_proj(y · silu(z))

        Decoding calls it once per token and layer, so per-op overhead, not arithmetic, is
        its cost: on CPU the compiled kernel runs the block in three matrix-vector products
        and two passes over the channels; elsewhere (GPU: CUDA graphs remove the launch
        cost) the reference runs. The parameters in the SSM dtype are cached between steps.
        """
        dtype = ssm_dtype(x_t)
        A, Dskip, dt_bias, w, b = self.cached(("step", dtype), lambda: self._step_constants(dtype), deps=self._step_deps())
        args = (x_t, state.conv_state, state.ssm_state, self.in_proj.weight, self.in_proj.bias, w, b,
                self.x_proj.weight, self.dt_proj.weight, dt_bias, A, Dskip, self.out_proj.weight, self.out_proj.bias)
        out, conv_state, ssm_state = selective_step_run(args)
        return out, MambaState(conv_state, ssm_state)

    def _step_constants(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """What a step reuses, in the SSM dtype: A = -exp(A_log) (E, N), D (E,), the Δ bias
        (E,), the conv's taps (E, W) and its bias (E,) or None."""
        A, Dskip, dt_bias = self._ssm_params(dtype)
        b = self.conv.bias
        return A, Dskip, dt_bias, self.conv_weight.to(dtype), None if b is None else b.to(dtype)

    def _step_deps(self) -> tuple[Tensor, ...]:
        """The tensors :meth:`_step_constants` reads (what the step cache is checked against)."""
        deps = (self.A_log, self.D, self.dt_proj.bias, self.conv.weight, self.conv.bias)
        return tuple(t for t in deps if t is not None)

    def _check_state_shapes(self, state):
        E, N, W = self.d_inner, self.config.d_state, self.config.d_conv
        for field, t, want in zip(state._fields, state, ((E, W - 1), (E, N))):
            if t.shape[1:] != want:
                raise LayerInputError(
                    f"{self.name}: state.{field} has shape {tuple(t.shape)}, expected (B, {want[0]}, {want[1]}); "
                    "is it from a layer with other options?"
                )

    def _init_state(self, batch_size, device, dtype):
        E, N, W = self.d_inner, self.config.d_state, self.config.d_conv
        ssm = torch.promote_types(dtype, torch.float32) if dtype.is_floating_point else dtype
        return MambaState(
            torch.zeros(batch_size, E, W - 1, device=device, dtype=dtype),
            torch.zeros(batch_size, E, N, device=device, dtype=ssm),
        )

    def extra_repr(self) -> str:
        c = self.config
        return f"d_model={c.d_model}, d_state={c.d_state}, d_conv={c.d_conv}, expand={c.expand}, dt_rank={self.dt_rank}"


__all__ = ["Mamba", "MambaConfig", "MambaState", "inverse_softplus", "conv_state_at"]
