"""S4D: the diagonal state-space layer.

Paper: Gu, Goel, Gupta, Ré, "On the Parameterization and Initialization of Diagonal State
Space Models" (NeurIPS 2022), https://arxiv.org/abs/2206.11893.

Per channel h (H = d_model channels, M = d_state/2 complex modes in conjugate pairs):

    x'(t) = A x(t) + B u(t),  y(t) = C x(t) + D u(t),  A = diag(A_1..A_M), Re A_n < 0

Discretisation (``disc``), per mode:
    zoh       Ā = exp(ΔA),                   B̄ = (exp(ΔA) - 1)/A · B      (paper eq. (4)/(5))
    bilinear  Ā = (1 + ΔA/2)/(1 - ΔA/2),      B̄ = Δ/(1 - ΔA/2) · B         (S4 eq. (3))
Recurrent form (eq. (3)):   x_k = Ā x_{k-1} + B̄ u_k,   y_k = 2 Re(C x_k) + D u_k.
Parallel form: the kernel K_l = 2 Re(Σ_n C_n B̄_n Ā_n^l) (a Vandermonde product, eq. (6)),
computed by the compiled op :func:`seqzoo.ops.vandermonde` (memory O(H·L), never the
(H, M, L) matrix of powers), then y = K * u by FFT; or (mode="scan") the recurrence
itself with the compiled diagonal scan. B is fixed and folded into C, as in the paper's
minimal S4D. A carried state enters as y_t += 2 Re Σ_n C_n Ā_n^{t+1} x0_n (the same op),
and the final state is x_L = Ā^L x0 + B̄ Σ_k Ā^{L-1-k} u_k (the transposed op).

Inits (paper §4, with N = d_state, n = 0..N/2-1):
    lin   A_n = -1/2 + iπn                                      (S4D-Lin)
    inv   A_n = -1/2 + i(N/π)(N/(2n+1) - 1)                      (S4D-Inv)
    legs  A = the diagonal Λ of the DPLR form of HiPPO-LegS, B = V*B (S4D-LegS; B is folded
          into the initial C, which is then N(0,1)·B in distribution)
    real  A_n = -(n+1), imaginary part 0 (S4D-Real; like the S4 code, N/2 real modes each
          counted twice by the conjugate-pair 2 Re)

``bidirectional=True`` learns a second C for an anticausal kernel (the two-sided kernel of
S4's bidirectional mode): y_t = Σ_{s<=t} K_{t-s} u_s + Σ_{s>t} K'_{s-t-1} u_s; it has no
recurrent form. The block around the SSM follows S4: SSM -> GELU -> dropout -> linear to
2H -> GLU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn

from seqzoo import hippo
from seqzoo.layer import SequenceLayer, no_autocast, optim_hint, ssm_dtype
from seqzoo.modules.ssm_block import SSMOutput
from seqzoo.ops import diag_scan, vandermonde, vandermonde_transpose
from seqzoo.registry import register


@dataclass
class S4DConfig:
    d_model: int
    d_state: int = 64  # N: real state size; N/2 complex modes (conjugate pairs)
    init: Literal["lin", "inv", "legs", "real"] = "lin"
    n_ssm: int | None = None  # independent copies of A, tied across the channels (S4's n_ssm); None: H
    disc: Literal["zoh", "bilinear"] = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    lr: float | None = 1e-3  # learning-rate hint for A and Δ (None: the global one)
    mode: Literal["fft", "scan"] = "fft"  # parallel form: FFT convolution or diagonal scan
    bidirectional: bool = False  # two-sided kernel (non-causal, no step)
    activation: Literal["gelu", "silu", "identity"] = "gelu"
    output: Literal["glu", "linear", "identity"] = "glu"
    dropout: float = 0.0

    def __post_init__(self):
        if self.d_state < 2 or self.d_state % 2:
            raise ValueError(f"d_state must be an even integer >= 2 (conjugate pairs), got {self.d_state}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.n_ssm is not None and (self.n_ssm < 1 or self.d_model % self.n_ssm):
            raise ValueError(f"n_ssm={self.n_ssm} must be a positive divisor of d_model={self.d_model} (or None: one per channel)")
        if self.bidirectional and self.mode != "fft":
            raise ValueError("bidirectional=True needs mode='fft' (the two-sided kernel); mode='scan' is causal only")


class S4DState(NamedTuple):
    x: Tensor  # (B, H, N/2) complex SSM state


def init_A(init: str, H: int, N: int) -> tuple[Tensor, Tensor]:
    """(Re part magnitude, Im part) of the diagonal A for the S4D inits, each (H, N/2)."""
    n = torch.arange(N // 2, dtype=torch.float64)
    real = 0.5 * torch.ones(N // 2, dtype=torch.float64)
    if init == "lin":
        imag = math.pi * n
    elif init == "inv":
        imag = (N / math.pi) * (N / (2 * n + 1) - 1)
    elif init == "legs":
        Lam = torch.from_numpy(hippo.dplr("legs", N).Lambda)
        real, imag = -Lam.real, Lam.imag
    elif init == "real":
        real, imag = n + 1, torch.zeros_like(n)
    else:
        raise ValueError(f"unknown S4D init {init!r}; valid: lin, inv, legs, real")
    return real.expand(H, -1).clone(), imag.expand(H, -1).clone()


def init_B(init: str, N: int) -> Tensor:
    """The fixed input vector B (N/2,) complex that S4D folds into C: ones, or V*B for legs."""
    if init == "legs":
        return torch.from_numpy(hippo.dplr("legs", N).B)
    return torch.ones(N // 2, dtype=torch.complex128)


def cexp(z: Tensor) -> Tensor:
    """exp of a complex tensor through real exp/cos/sin (several times faster on CPU than
    torch.exp on complex input, which is not vectorised)."""
    mag = torch.exp(z.real)
    return torch.complex(mag * torch.cos(z.imag), mag * torch.sin(z.imag))


def vandermonde_powers(log_z: Tensor, L: int) -> Tensor:
    """z^l = exp(l log_z) for l = 0..L-1: log_z (H, M) -> (H, M, L)."""
    steps = torch.arange(L, device=log_z.device, dtype=log_z.real.dtype)
    return cexp(log_z.unsqueeze(-1) * steps)


def vandermonde_kernel(coef: Tensor, log_z: Tensor, L: int, powers: Tensor | None = None) -> Tensor:
    """2 Re Σ_n coef_n z_n^l for l = 0..L-1, with z = exp(log_z), materialising the
    (H, M, L) powers (the layer uses the compiled :func:`seqzoo.ops.vandermonde` instead).

    coef (..., H, M) complex, log_z (H, M) complex -> (..., H, L) real.
    """
    powers = vandermonde_powers(log_z, L) if powers is None else powers
    return 2 * torch.einsum("...hm,hml->...hl", coef, powers).real


def _spectrum(k: Tensor, n: int) -> Tensor:
    """``rfft(k, n)``, materialised in its own contiguous storage. With k a permuted view (as
    S4's kernels come), Inductor (torch 2.13) compiled a backward whose gradient for the
    *other* factor u was wrong (relative error ~1) while the forward and k's gradient were
    right; ``k.contiguous()`` did not help (Inductor drops it), the round trip through
    ``view_as_real`` does (tests/layers/test_compile.py, slow, s4's variants)."""
    return torch.view_as_complex(torch.view_as_real(torch.fft.rfft(k, n=n)).contiguous())


def fft_causal_conv(u: Tensor, k: Tensor) -> Tensor:
    """Causal convolution y_t = Σ_{s<=t} k_{t-s} u_s along the last dim. u (..., L), k (H, L)."""
    L = u.shape[-1]
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * _spectrum(k, n), n=n)
    return y[..., :L]


def fft_bidirectional_conv(u: Tensor, k_fwd: Tensor, k_bwd: Tensor) -> Tensor:
    """y_t = Σ_{s<=t} k_fwd[t-s] u_s + Σ_{s>t} k_bwd[s-t-1] u_s along the last dim:
    one circular convolution of size 2L with the two-sided kernel
    [k_fwd_0..k_fwd_{L-1}, 0, k_bwd_{L-2}..k_bwd_0]. u (..., L), k_fwd/k_bwd (..., L)."""
    L = u.shape[-1]
    n = 2 * L
    k = torch.cat([k_fwd, torch.zeros_like(k_fwd[..., :1]), k_bwd[..., : L - 1].flip(-1)], dim=-1)  # (..., 2L)
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * _spectrum(k, n), n=n)
    return y[..., :L]


def _complex(dtype: torch.dtype) -> tuple[torch.dtype, torch.dtype]:
    """(real, complex) dtypes SSM arithmetic runs in for real ``dtype``."""
    return (torch.float64, torch.complex128) if dtype == torch.float64 else (torch.float32, torch.complex64)


@register("s4d", config=S4DConfig)
class S4D(SequenceLayer):
    """Diagonal SSM layer (S4D). x (B, L, D) -> y (B, L, D); D = H channels."""

    supports_lengths = True
    State = S4DState
    test_variants = (
        {"init": "lin"},
        {"init": "inv", "mode": "scan"},
        {"init": "legs", "disc": "bilinear"},
        {"init": "real", "disc": "bilinear", "mode": "scan"},
        {"bidirectional": True},
        {"init": "legs", "n_ssm": 1},  # A tied across channels, as S4's LRA configs
    )

    def __init__(self, config: S4DConfig):
        super().__init__(config)
        H, N = config.d_model, config.d_state
        log_dt = torch.rand(H, dtype=torch.float64) * (math.log(config.dt_max) - math.log(config.dt_min)) + math.log(
            config.dt_min
        )
        real, imag = init_A(config.init, config.n_ssm or H, N)  # channel h uses copy h mod n_ssm
        self.log_dt = nn.Parameter(log_dt.float())
        self.log_A_real = nn.Parameter(torch.log(real).float())
        self.A_imag = nn.Parameter(imag.float())
        # C ~ N(0, 1) complex (times the fixed B), stored as real pairs so the module stays
        # real-typed; a second C for the anticausal kernel when bidirectional.
        n_dir = 2 if config.bidirectional else 1
        C = torch.randn(n_dir, H, N // 2, dtype=torch.complex128) * init_B(config.init, N)
        C = C if config.bidirectional else C[0]
        self.C = nn.Parameter(torch.view_as_real(C.to(torch.complex64)).clone())
        self.D = nn.Parameter(torch.randn(H))
        for p in (self.log_dt, self.log_A_real, self.A_imag):
            optim_hint(p, weight_decay=0.0, **({"lr": config.lr} if config.lr is not None else {}))
        self.keep_fp32("log_dt", "log_A_real", "A_imag")
        self.post = SSMOutput(H, H, config.activation, config.output, config.dropout)

    # ---------------------------------------------------------------- SSM parameters
    def discretize(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """(log Ā, B̄, C) in the complex dtype matching real ``dtype``: log Ā and B̄ (H, N/2),
        C (H, N/2) or (2, H, N/2) when bidirectional. Always computed in at least fp32
        (autocast is disabled here)."""
        rdtype, cdtype = _complex(dtype)
        with no_autocast(self.D.device):
            dt = torch.exp(self.log_dt.to(rdtype)).unsqueeze(-1)  # (H, 1)
            A = torch.complex(-torch.exp(self.log_A_real.to(rdtype)), self.A_imag.to(rdtype))  # (n_ssm, M)
            A = A.repeat(self.d_model // A.shape[0], 1)  # (H, M), as S4 repeats "(v t)"
            dtA = (A * dt).to(cdtype)
            if self.config.disc == "zoh":
                log_A_bar = dtA
                B_bar = (cexp(dtA) - 1) / A.to(cdtype)  # B = 1 (folded into C)
            else:
                log_A_bar = torch.log((1 + dtA / 2) / (1 - dtA / 2))
                B_bar = dt / (1 - dtA / 2)
            C = torch.view_as_complex(self.C.to(rdtype).contiguous()).to(cdtype)
        return log_A_bar, B_bar, C

    def kernel(self, L: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """The SSM convolution kernel: (H, L), or (2, H, L) [causal, anticausal] when
        bidirectional. Computed by the compiled Vandermonde op."""
        log_A_bar, B_bar, C = self.discretize(dtype)
        return vandermonde(C * B_bar, log_A_bar, L)

    # ---------------------------------------------------------------- forms
    def _ssm_parallel(self, u: Tensor, x0: Tensor | None, lengths: Tensor | None, need_state: bool):
        """u (B, H, L) real -> (y (B, H, L) without the D term, final state or None)."""
        Bsz, H, L = u.shape
        log_A_bar, B_bar, C = self.discretize(u.dtype)
        if self.config.mode == "scan":
            a = cexp(log_A_bar)[None, None]  # (1, 1, H, M)
            b = B_bar * rearrange(u, "b h l -> b l h 1").to(B_bar.dtype)  # (B, L, H, M)
            if lengths is not None:  # freeze the state on padding: a = 1, b = 0
                pad = (torch.arange(L, device=u.device)[None, :] >= lengths[:, None])[..., None, None]
                a = torch.where(pad, torch.ones_like(a), a)
                b = b.masked_fill(pad, 0)
            h, final = diag_scan(a, b, x0)
            y = 2 * torch.einsum("blhm,hm->bhl", h, C).real
            return y, final if need_state else None

        C_fwd = C[0] if self.config.bidirectional else C
        K = vandermonde(C * B_bar, log_A_bar, L)  # (H, L) or (2, H, L)
        y = fft_bidirectional_conv(u, K[0], K[1]) if self.config.bidirectional else fft_causal_conv(u, K)
        if x0 is not None:  # y_t += 2 Re Σ_n C_n Ā_n^{t+1} x0_n
            y = y + vandermonde(C_fwd * cexp(log_A_bar) * x0, log_A_bar, L)
        if not need_state:
            return y, None
        # Final state x_{len-1} = Σ_{k<len} Ā^{len-1-k} B̄ u_k + Ā^{len} x0. Shift each row right
        # so that its last real token sits at L-1; then all rows share the powers Ā^{L-1-k}.
        if lengths is not None:
            src = torch.arange(L, device=u.device)[None, :] - (L - lengths)[:, None]  # (B, L)
            u_end = torch.gather(u, 2, src.clamp(min=0)[:, None, :].expand(-1, H, -1))
            u_end = u_end.masked_fill((src < 0)[:, None, :], 0)
            n_steps = lengths.to(log_A_bar.real.dtype)
        else:
            u_end = u
            n_steps = torch.full((Bsz,), float(L), device=u.device, dtype=log_A_bar.real.dtype)
        x = B_bar * vandermonde_transpose(u_end.flip(-1), log_A_bar)  # Σ_j Ā^j u_{L-1-j}: (B, H, M)
        if x0 is not None:
            x = x + cexp(log_A_bar * n_steps[:, None, None]) * x0
        return y, x

    def _forward(self, x, state, lengths, return_state):
        dtype = ssm_dtype(x)
        u = rearrange(x, "b l h -> b h l").to(dtype)
        if lengths is not None:  # padding must not reach the state (nor, bidirectional, real outputs)
            u = u.masked_fill(torch.arange(x.shape[1], device=x.device)[None, None, :] >= lengths[:, None, None], 0)
        y, x_final = self._ssm_parallel(u, None if state is None else state.x, lengths, need_state=return_state)
        y = y + self.D.to(dtype)[:, None] * u
        y = rearrange(y, "b h l -> b l h").to(x.dtype)
        return self.post(y), S4DState(x_final)

    def _step(self, x_t, state):
        dtype = ssm_dtype(x_t)
        u = x_t.to(dtype)  # (B, H)
        A_bar, B_bar, C = self.cached(("step", dtype), lambda: self._step_matrices(dtype))
        x = A_bar * state.x + B_bar * u[..., None].to(B_bar.dtype)  # (B, H, M)
        y = 2 * (x * C).sum(-1).real + self.D.to(dtype) * u
        return self.post(y.to(x_t.dtype)), S4DState(x)

    def _step_matrices(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        log_A_bar, B_bar, C = self.discretize(dtype)
        return cexp(log_A_bar), B_bar, C

    def _init_state(self, batch_size, device, dtype):
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return S4DState(torch.zeros(batch_size, self.d_model, self.config.d_state // 2, device=device, dtype=cdtype))

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"d_model={c.d_model}, d_state={c.d_state}, init={c.init!r}, disc={c.disc!r}, mode={c.mode!r}"
            + (", bidirectional=True" if c.bidirectional else "")
        )


__all__ = [
    "S4D",
    "S4DConfig",
    "S4DState",
    "cexp",
    "vandermonde_powers",
    "vandermonde_kernel",
    "fft_causal_conv",
    "fft_bidirectional_conv",
    "init_A",
    "init_B",
]
