"""S5: the simplified (MIMO, diagonal) state-space layer.

Paper: Smith, Warrington, Linderman, "Simplified State Space Layers for Sequence
Modeling" (ICLR 2023), https://arxiv.org/abs/2208.04933. (Parts are named, not numbered:
no copy of the paper text was at hand to check equation numbers against.)

One continuous-time MIMO system shared by all H channels, with a state of size P = d_state
(the paper's S5 layer):

    x'(t) = A x(t) + B u(t),  y(t) = C x(t) + D u(t),   A (P, P), B (P, H), C (H, P), D diag (H)

Diagonalised dynamics: A = V Λ V⁻¹, and in the eigenbasis x̃ = V⁻¹ x the system is
x̃' = Λ x̃ + B̃ u, y = C̃ x̃ + D u with B̃ = V⁻¹ B and C̃ = C V; Λ, B̃, C̃ are the
parameters.

Init: HiPPO-N, the normal part A_LegS + P Pᵀ of the HiPPO-LegS matrix (S4's NPLR form),
diagonalised: Λ = its eigenvalues (real part -1/2), V its unitary
eigenvectors (``seqzoo.hippo.nplr/dplr("legs", ·)``). With ``blocks = J``, A is
initialised block-diagonal with J copies of the HiPPO-N of size P/J (the paper's
block-diagonal initialisation), V = blkdiag(V_1..V_J). B and C are drawn in the
original coordinates (lecun-normal scale 1/√P, C complex) and mapped to B̃ = V⁻¹B, C̃ = CV.

Conjugate symmetry (``conj_sym``): a real system's eigenvalues come in
conjugate pairs, so only the P/2 modes with Im λ >= 0 are kept and y = 2 Re(C̃ x̃) + D u.

Discretisation of the diagonal system with a learnable timescale Δ per state
(``dt_per_state=True``, Δ ∈ R^P as in the paper; conjugate modes share theirs) or one Δ
shared by all states (``dt_per_state=False``). A Δ per input channel has no meaning for a
MIMO system whose state mixes all channels, so "per channel" is read as "one for all":

    ZOH:       Λ̄ = exp(ΛΔ),                       B̄ = Λ⁻¹ (Λ̄ - I) B̃
    bilinear:  Λ̄ = (I - ΔΛ/2)⁻¹ (I + ΔΛ/2),       B̄ = (I - ΔΛ/2)⁻¹ Δ B̃

Recurrence:  x̃_k = Λ̄ x̃_{k-1} + B̄ u_k,  y_k = C̃ x̃_k + D u_k.
Parallel form: that diagonal recurrence by a scan over time — the paper uses a parallel
(associative) scan; here :func:`seqzoo.ops.diag_scan`, the compiled diagonal scan (complex
state, real input promoted). ``bidirectional=True`` runs a second scan over the reversed
sequence with its own C̃ (C̃ has 2·P/2 columns, as in the paper's bidirectional S5) and no
recurrent form. The block around the SSM follows S4D here: SSM -> activation -> dropout ->
linear to 2H -> GLU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from seqzoo import hippo
from seqzoo.layer import SequenceLayer, no_autocast, optim_hint, ssm_dtype
from seqzoo.modules.ssm_block import SSMOutput
from seqzoo.ops import diag_scan
from seqzoo.registry import register


@dataclass
class S5Config:
    d_model: int
    d_state: int = 64  # P: state size of the (real) MIMO system; P/2 complex modes with conj_sym
    blocks: int = 1  # J: block-diagonal HiPPO-N init with J blocks of size P/J
    conj_sym: bool = True
    discretization: Literal["zoh", "bilinear"] = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_per_state: bool = True  # Δ per state (paper); False: one Δ for all states
    clip_eigs: bool = False  # keep Re Λ <= -1e-4 (stable for unbounded lengths)
    bidirectional: bool = False
    lr: float | None = 1e-3  # learning-rate hint for Λ, B̃ and Δ (None: the global one)
    activation: Literal["gelu", "silu", "identity"] = "gelu"
    output: Literal["glu", "linear", "identity", "half_glu1", "half_glu2"] = "glu"  # half_glu*: S5's own
    dropout: float = 0.0

    def __post_init__(self):
        if self.d_state < 1 or self.blocks < 1 or self.d_state % self.blocks:
            raise ValueError(
                f"blocks={self.blocks} must be a positive divisor of d_state={self.d_state} "
                "(the init puts one HiPPO-N block of size d_state/blocks on the diagonal)"
            )
        if self.conj_sym and (self.d_state // self.blocks) % 2:
            raise ValueError(
                f"conj_sym needs an even block size d_state/blocks, got {self.d_state}/{self.blocks}; "
                "change d_state or blocks, or set conj_sym=False"
            )
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class S5State(NamedTuple):
    x: Tensor  # (B, M) complex state in the eigenbasis, M = P/2 (conj_sym) or P


def hippo_n_init(P: int, blocks: int, conj_sym: bool) -> tuple[np.ndarray, np.ndarray]:
    """Block-diagonal HiPPO-N: (Λ (M,), V (P, M)) complex128, M = P/2 with conj_sym else P.
    Each block is the diagonalised normal part of HiPPO-LegS of size P/blocks."""
    size = P // blocks
    dec = hippo.dplr("legs", size) if conj_sym else hippo.nplr("legs", size)
    lam, V = dec.Lambda, dec.V  # (m,), (size, m)
    m = lam.shape[0]
    Vbig = np.zeros((P, blocks * m), dtype=np.complex128)
    for j in range(blocks):
        Vbig[j * size : (j + 1) * size, j * m : (j + 1) * m] = V
    return np.tile(lam, blocks), Vbig


@register("s5", config=S5Config)
class S5(SequenceLayer):
    """S5 layer: one MIMO diagonal SSM over all channels. x (B, L, D) -> y (B, L, D)."""

    supports_lengths = True
    State = S5State
    test_variants = (
        {},
        {"d_state": 16, "blocks": 2, "dt_per_state": False, "discretization": "bilinear"},
        {"d_state": 8, "conj_sym": False, "clip_eigs": True},
        {"d_state": 16, "blocks": 4, "bidirectional": True},
        {"d_state": 8, "output": "half_glu2"},  # S5's gated output (its ListOps / IMDB runs)
    )

    def __init__(self, config: S5Config):
        super().__init__(config)
        H, P = config.d_model, config.d_state
        lam, V = hippo_n_init(P, config.blocks, config.conj_sym)
        V = torch.from_numpy(V)  # (P, M)
        Vinv = V.conj().T  # V is unitary (per block), so V⁻¹ = Vᴴ on the kept modes
        M = lam.shape[0]
        std = 1.0 / math.sqrt(P)
        B = torch.randn(P, H, dtype=torch.float64) * std
        B_tilde = Vinv @ B.to(torch.complex128)  # (M, H)  B̃ = V⁻¹ B
        n_C = 2 if config.bidirectional else 1
        C = torch.randn(n_C, H, P, dtype=torch.complex128) * (std * math.sqrt(2))  # re, im each ~ N(0, 1/P)
        C_tilde = rearrange(C @ V, "n h m -> h (n m)")  # (H, n_C·M)  C̃ = C V
        log_dt = torch.rand(M if config.dt_per_state else 1, dtype=torch.float64)
        log_dt = log_dt * (math.log(config.dt_max) - math.log(config.dt_min)) + math.log(config.dt_min)

        self.Lambda_re = nn.Parameter(torch.from_numpy(lam.real.copy()).float())
        self.Lambda_im = nn.Parameter(torch.from_numpy(lam.imag.copy()).float())
        self.B = nn.Parameter(torch.view_as_real(B_tilde).float().contiguous())  # (M, H, 2)
        self.C = nn.Parameter(torch.view_as_real(C_tilde).float().contiguous())  # (H, n_C·M, 2)
        self.D = nn.Parameter(torch.randn(H))
        self.log_dt = nn.Parameter(log_dt.float())
        hints = {"lr": config.lr} if config.lr is not None else {}
        for p in (self.Lambda_re, self.Lambda_im, self.B, self.log_dt):
            optim_hint(p, weight_decay=0.0, **hints)
        self.keep_fp32("Lambda_re", "Lambda_im", "B", "log_dt")
        self.post = SSMOutput(H, H, config.activation, config.output, config.dropout)

    @property
    def n_modes(self) -> int:
        return self.Lambda_re.shape[0]

    # ---------------------------------------------------------------- SSM parameters
    def continuous(self, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(Λ (M,), B̃ (M, H), C̃ (H, n·M), Δ (M,)) of the continuous-time diagonal system, in
        the complex dtype matching real ``dtype`` (fp32 at least; autocast off)."""
        with no_autocast(self.D.device):
            rdtype = torch.float64 if dtype == torch.float64 else torch.float32
            re = self.Lambda_re.to(rdtype)
            if self.config.clip_eigs:
                re = re.clamp(max=-1e-4)
            lam = torch.complex(re, self.Lambda_im.to(rdtype))
            B = torch.view_as_complex(self.B.to(rdtype).contiguous())
            C = torch.view_as_complex(self.C.to(rdtype).contiguous())
            dt = torch.exp(self.log_dt.to(rdtype)).expand(self.n_modes)
        return lam, B, C, dt

    def discretize(self, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
        """(Λ̄ (M,), B̄ (M, H), C̃ (H, n·M)) complex: ZOH or bilinear (module docstring)."""
        lam, B, C, dt = self.continuous(dtype)
        with no_autocast(self.D.device):
            if self.config.discretization == "zoh":
                lam_bar = torch.exp(lam * dt)
                B_bar = ((lam_bar - 1) / lam)[:, None] * B
            else:
                den = 1 - (dt / 2) * lam
                lam_bar = (1 + (dt / 2) * lam) / den
                B_bar = (dt / den)[:, None] * B
        return lam_bar, B_bar, C

    # ---------------------------------------------------------------- forms
    def _readout(self, xs: Tensor, C: Tensor) -> Tensor:
        """Re(C̃ x̃) (×2 under conjugate symmetry): xs (..., M) complex, C (H, M) -> (..., H) real."""
        y = xs.real @ C.real.T - xs.imag @ C.imag.T
        return 2 * y if self.config.conj_sym else y

    def _ssm(self, u: Tensor, x0: Tensor | None, lengths: Tensor | None):
        """u (B, L, H) real (zero on padding) -> (y (B, L, H) without the D term, final state)."""
        with no_autocast(u.device):  # the SSM runs in fp32 at least
            return self._ssm_fp32(u, x0, lengths)

    def _ssm_fp32(self, u: Tensor, x0: Tensor | None, lengths: Tensor | None):
        M = self.n_modes
        lam_bar, B_bar, C = self.discretize(u.dtype)
        Bu = torch.complex(u @ B_bar.real.T, u @ B_bar.imag.T)  # (B, L, M)  B̄ u_k
        a = lam_bar.view(1, 1, M)
        if lengths is not None:  # freeze the state on padding: Λ̄ -> 1 (B̄u is already 0 there)
            pad = torch.arange(u.shape[1], device=u.device)[None, :, None] >= lengths[:, None, None]
            a = torch.where(pad, torch.ones_like(a), a)  # (B, L, M)
        xs, final = diag_scan(a, Bu, x0)  # (B, L, M): the recurrence x̃_k = Λ̄ x̃_{k-1} + B̄ u_k
        y = self._readout(xs, C[:, :M])
        if self.config.bidirectional:  # padding is zero input, so the reverse scan starts at each row's end
            xs_rev, _ = diag_scan(lam_bar.view(1, 1, M), Bu.flip(1))
            y = y + self._readout(xs_rev.flip(1), C[:, M:])
        return y, final

    def _forward(self, x, state, lengths, return_state):
        dtype = ssm_dtype(x)
        u = x.to(dtype)  # (B, L, H)
        if lengths is not None:
            u = u.masked_fill(torch.arange(x.shape[1], device=x.device)[None, :, None] >= lengths[:, None, None], 0)
        y, final = self._ssm(u, None if state is None else state.x, lengths)
        y = y + self.D.to(dtype) * u
        return self.post(y.to(x.dtype)), S5State(final)

    def _step(self, x_t, state):
        dtype = ssm_dtype(x_t)
        u = x_t.to(dtype)  # (B, H)
        lam_bar, B_bar, C = self.cached(("step", dtype), lambda: self.discretize(dtype))
        with no_autocast(u.device):
            x = lam_bar * state.x + torch.complex(u @ B_bar.real.T, u @ B_bar.imag.T)  # (B, M)
            y = self._readout(x, C) + self.D.to(dtype) * u
        return self.post(y.to(x_t.dtype)), S5State(x)

    def _init_state(self, batch_size, device, dtype):
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return S5State(torch.zeros(batch_size, self.n_modes, device=device, dtype=cdtype))

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"d_model={c.d_model}, d_state={c.d_state}, blocks={c.blocks}, conj_sym={c.conj_sym}, "
            f"discretization={c.discretization!r}, bidirectional={c.bidirectional}"
        )


__all__ = ["S5", "S5Config", "S5State", "hippo_n_init"]
