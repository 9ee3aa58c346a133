"""S4: the structured state-space layer with a diagonal-plus-low-rank (DPLR) state matrix.

Paper: Gu, Goel, Ré, "Efficiently Modeling Long Sequences with Structured State Spaces"
(ICLR 2022), https://arxiv.org/abs/2111.00396. Initialisation from HiPPO (Gu et al. 2020)
through :mod:`seqzoo.hippo`.

Per channel h (H = d_model channels, N = d_state, M = N/2 modes kept under conjugate
symmetry, r = rank of the HiPPO correction):

    x'(t) = A x(t) + B u(t),   y(t) = C x(t) + D u(t),   A = Λ - P Pᴴ      (S4 eq. (1), Thm. 1)

in the unitary eigenbasis of the normal part (so Λ is diagonal). Only half of every
conjugate pair is stored; the full N-dimensional complex system is X_full = [X, conj(X)]
for X in Λ, P, B, C̃, which makes the kernel and the outputs real.

Discretisation (``disc``):
    bilinear  Ā = (I - Δ/2 A)⁻¹(I + Δ/2 A),  B̄ = (I - Δ/2 A)⁻¹ Δ B          (S4 eq. (3))
    zoh       Ā = exp(ΔA),  B̄ = A⁻¹(exp(ΔA) - I) B, both read off exp of the augmented
              matrix [[ΔA, ΔB], [0, 0]] (no A⁻¹, no eigendecomposition: HiPPO-LegS's
              eigenvectors have condition number ~1e20 at N = 64, so the "diagonalised"
              route would lose every digit)

Kernel K_l = C Ā^l B̄, l < L (S4 eq. (4)). As in the paper, the parameter is the truncated
generating-function vector C̃ = C (I - Ā^{l_max}) for a fixed length l_max (S4 §3.3 /
Algorithm 1 step 1). Then, for ω on the l_max-th roots of unity (only the rfft half),

    K̂(ω) = Σ_{l<l_max} K_l ω^l = C̃ (I - Āω)⁻¹ B̄
         = 2/(1+ω) [ k_{C̃B} - k_{C̃P} (I + k_{PP})⁻¹ k_{PB} ],   k_{XY}(ω) = Σ_n X_n Y_n Δ / (z - ΔΛ_n)

with z = 2(1-ω)/(1+ω) (S4 Lemmas C.2-C.3: the bilinear resolvent and the Woodbury
identity), the sums being Cauchy kernels over the conjugate pairs (compiled op
:func:`seqzoo.ops.cauchy`), and K = irfft(K̂) (Algorithm 1 steps 2-4). The kernel is
exactly the impulse response of the recurrence with C = C̃ (I - Ā^{l_max})⁻¹, which is what
``step`` uses; a sequence shorter than l_max uses the first L taps, a longer one doubles
the kernel length with C̃ ← C̃ (I + Ā^{l_max}) (dense matrix powers). The conversion to C
is well conditioned when l_max·Δ·|λ| ≳ 1 (Ā^{l_max} small); with a short l_max it is not
(FouT at l_max = 16: cond(I - Ā^{l_max}) ~ 1e4, and a float32 kernel loses ~4 digits), so
keep l_max near the sequence length (the default 1024 with dt_min = 1e-3 is fine). Under ZOH there is no
resolvent identity, and the kernel is computed densely: K_{qs+r} = (C Ā^{qs})(Ā^r B̄) with
s ≈ √L (O(H(N³ log s + N² √L + N L))).

Carried state. A state x0 adds y_t += C Ā^{t+1} x0: under bilinear it is the kernel with B
replaced by β = (I + Δ/2 A) x0 / Δ (then B̄_β = Ā x0), the same Cauchy/Woodbury sums; under
ZOH the dense product above. The final state x_T = Ā^T x0 + Σ_t Ā^{T-1-t} B̄ u_t is
computed with the dense discrete system in a real basis, chunk by chunk (Horner over
chunks of 64 steps: O(T N (1 + N/64)) per channel).

Recurrent form (``step_mode``): "dense" steps the real N×N form of (Ā, B̄, C) (O(N²) per
token), computed once and cached; "diagonal" diagonalises Ā (O(N) per token; the state is
then in eigen-coordinates, (B, H, N)). A step in eigen-coordinates amplifies rounding by
the condition number of Ā's eigenvectors, which HiPPO matrices make large: at the LegS init
(fp32 parameters) it is ~1e7 at N = 16 and ~2e9 at N = 64, so a float64 diagonal step
agrees with the parallel form to ~1e-7 but a float32 one does not (measured 0.35 relative
at N = 16); a warning says when cond·eps exceeds 1e-4. "dense" is exact in both.

``channels`` C̃ rows per channel (S4's multiple kernels / heads: the SSM maps each channel
to ``channels`` outputs, mixed by the output linear). ``bidirectional`` adds ``channels``
rows for an anticausal kernel (two-sided kernel, no recurrent form). The block follows S4:
SSM -> activation -> dropout -> linear (channels·H -> H) or GLU.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from seqzoo import hippo
from seqzoo.layer import SequenceLayer, no_autocast, optim_hint, ssm_dtype
from seqzoo.layers.s4d import fft_bidirectional_conv, fft_causal_conv
from seqzoo.modules.ssm_block import SSMOutput
from seqzoo.ops import cauchy
from seqzoo.registry import register
from seqzoo.tracing import is_tracing

_MIN_REAL = 1e-4  # smallest |Re Λ| at init (LegT / FouT have a purely imaginary normal part)
_CHUNK = 64  # chunk length of the dense final-state computation


@dataclass
class S4Config:
    d_model: int
    d_state: int = 64  # N: state size; N/2 complex modes are stored (conjugate pairs)
    channels: int = 1  # kernels (C̃ rows) per channel
    n_ssm: int | None = None  # independent copies of (Λ, P, B), tied across the channels (S4's n_ssm); None: H
    init: Literal["legs", "legt", "lagt", "fout"] = "legs"  # HiPPO measure of the DPLR init
    disc: Literal["bilinear", "zoh"] = "bilinear"
    l_max: int = 1024  # kernel length C̃ refers to (longer inputs double it)
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    lr: float | None = 1e-3  # learning-rate hint for Λ, P, B and Δ (None: the global one)
    step_mode: Literal["dense", "diagonal"] = "dense"
    bidirectional: bool = False  # two-sided kernel (non-causal, no step)
    activation: Literal["gelu", "silu", "identity"] = "gelu"
    output: Literal["glu", "linear", "identity"] = "glu"
    dropout: float = 0.0

    def __post_init__(self):
        if self.d_state < 2 or self.d_state % 2:
            raise ValueError(f"d_state must be an even integer >= 2 (conjugate pairs), got {self.d_state}")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        if self.n_ssm is not None and (self.n_ssm < 1 or self.d_model % self.n_ssm):
            raise ValueError(f"n_ssm={self.n_ssm} must be a positive divisor of d_model={self.d_model} (or None: one per channel)")
        if self.l_max < 1:
            raise ValueError(f"l_max must be >= 1, got {self.l_max}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.output == "identity" and self.channels != 1:
            raise ValueError(
                f"output='identity' needs channels=1 (the SSM gives channels·H = {self.channels}·d_model features)"
            )


class S4State(NamedTuple):
    # step_mode="dense": (B, H, N/2) complex, the kept half of the state in the DPLR basis.
    # step_mode="diagonal": (B, H, N) complex, coordinates in the eigenbasis of Ā.
    x: Tensor


# ------------------------------------------------------------------------------ helpers
def _dtypes(dtype: torch.dtype) -> tuple[torch.dtype, torch.dtype]:
    return (torch.float64, torch.complex128) if dtype == torch.float64 else (torch.float32, torch.complex64)


def _nodes(L: int, cdtype: torch.dtype, device) -> tuple[Tensor, Tensor]:
    """z = 2(1-ω)/(1+ω) and 2/(1+ω) at ω_k = exp(-2πik/L), k = 0..L//2 (the rfft half).
    Computed in float64; at ω = -1 (k = L/2), 1+ω is the rounding residue ~1e-16·i, so z
    and 2/(1+ω) are ~1e16 but finite and their product with the Cauchy sums is exact to
    rounding (the Cauchy op evaluates v/(z-w) without overflow)."""
    k = torch.arange(L // 2 + 1, dtype=torch.float64, device=device)
    omega = torch.polar(torch.ones_like(k), -2 * math.pi * k / L)
    return (2 * (1 - omega) / (1 + omega)).to(cdtype), (2 / (1 + omega)).to(cdtype)


def _powers_times(A: Tensor, b: Tensor, n: int) -> Tensor:
    """[A^0 b, A^1 b, ..., A^{n-1} b] by doubling: A (H, N, N), b (..., H, N) -> (..., H, N, n)."""
    X, P = b.unsqueeze(-1), A
    while X.shape[-1] < n:
        X = torch.cat([X, P @ X], dim=-1)
        P = P @ P
    return X[..., :n]


def _rows_times_powers(c: Tensor, A: Tensor, n: int) -> Tensor:
    """[c A^0, c A^1, ..., c A^{n-1}] by doubling: c (..., H, N), A (H, N, N) -> (..., H, n, N)."""
    R, P = c.unsqueeze(-2), A
    while R.shape[-2] < n:
        R = torch.cat([R, R @ P], dim=-2)
        P = P @ P
    return R[..., :n, :]


def _apply_power(A: Tensor, x: Tensor, n: Tensor, n_max: int) -> Tensor:
    """A^{n_b} x_b per batch row by binary powers: A (H, N, N), x (B, H, N), n (B,) int with
    0 <= n <= n_max. The bound comes from shapes (the sequence length), not from n, so the
    loop does not depend on data (torch.compile traces it without a graph break)."""
    out, P, bit = x, A, 1
    while bit <= n_max:
        mask = (n & bit) != 0
        if is_tracing() or bool(mask.any()):  # eager: skip the product when no row needs it
            out = torch.where(mask[:, None, None], torch.einsum("hij,bhj->bhi", P, out), out)
        bit <<= 1
        if bit <= n_max:
            P = P @ P
    return out


# ------------------------------------------------------------------------------ layer
@register("s4", config=S4Config)
class S4(SequenceLayer):
    """DPLR SSM layer (S4). x (B, L, D) -> y (B, L, D); D = H channels."""

    supports_lengths = True
    State = S4State
    test_variants = (
        {},
        {"disc": "zoh", "channels": 2, "d_state": 16},
        {"init": "legt", "d_state": 6, "step_mode": "diagonal"},
        {"d_state": 16, "l_max": 16, "output": "linear"},  # L > l_max: the C̃-doubling path
        {"init": "fout", "d_state": 16},
        {"init": "lagt", "bidirectional": True, "channels": 2, "d_state": 16},
        {"d_state": 8, "n_ssm": 1},  # (Λ, P, B) tied across channels, as S4's LRA configs
    )

    def __init__(self, config: S4Config):
        super().__init__(config)
        H, N, M = config.d_model, config.d_state, config.d_state // 2
        S = config.n_ssm or H  # (Λ, P, B) copies; channel h uses copy h mod S (S4's repeat '(v t)')
        dp = hippo.dplr(config.init, N)
        lam = torch.from_numpy(dp.Lambda)
        real = (-lam.real).clamp(min=_MIN_REAL)
        log_dt = torch.rand(H, dtype=torch.float64) * (math.log(config.dt_max) - math.log(config.dt_min))
        self.log_dt = nn.Parameter((log_dt + math.log(config.dt_min)).float())
        self.log_A_real = nn.Parameter(torch.log(real).expand(S, M).float().clone())
        self.A_imag = nn.Parameter(lam.imag.expand(S, M).float().clone())
        # complex parameters are stored as real pairs (..., 2) so the module stays real-typed
        P = torch.from_numpy(dp.P)[:, None, :].expand(-1, S, -1)  # (r, S, M)
        self.P = nn.Parameter(torch.view_as_real(P.to(torch.complex64)).clone())
        self.B = nn.Parameter(torch.view_as_real(torch.from_numpy(dp.B).expand(S, M).to(torch.complex64)).clone())
        rows = config.channels * (2 if config.bidirectional else 1)
        self.C = nn.Parameter(torch.view_as_real(torch.randn(rows, H, M, dtype=torch.complex64)).clone())  # C̃
        self.D = nn.Parameter(torch.randn(config.channels, H))
        for p in (self.log_dt, self.log_A_real, self.A_imag, self.P, self.B):
            optim_hint(p, weight_decay=0.0, **({"lr": config.lr} if config.lr is not None else {}))
        self.keep_fp32("log_dt", "log_A_real", "A_imag", "P", "B")
        self.post = SSMOutput(config.channels * H, H, config.activation, config.output, config.dropout)

    # ---------------------------------------------------------------- SSM parameters
    def _params(self, dtype: torch.dtype):
        """(Δ (H,), Λ (H, M), P (r, H, M), B (H, M), C̃ (rows, H, M)) in the complex dtype
        matching ``dtype``, in at least fp32 (autocast off)."""
        rdtype, cdtype = _dtypes(dtype)
        v = self.d_model // self.log_A_real.shape[0]  # channels per (Λ, P, B) copy (n_ssm)
        with no_autocast(self.D.device):
            dt = torch.exp(self.log_dt.to(rdtype))
            lam = torch.complex(-torch.exp(self.log_A_real.to(rdtype)), self.A_imag.to(rdtype)).repeat(v, 1)
            P = torch.view_as_complex(self.P.to(rdtype).contiguous()).repeat(1, v, 1)
            B = torch.view_as_complex(self.B.to(rdtype).contiguous()).repeat(v, 1)
            C = torch.view_as_complex(self.C.to(rdtype).contiguous())
        return dt, lam.to(cdtype), P, B, C

    def dense_system(self, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
        """The discrete system as real matrices in the basis r = view_as_real(x).flatten(-2)
        (interleaved Re/Im of the kept half x; the full state is [x, conj x]):
        Ā (H, N, N), B̄ (H, N), C = C̃ (I - Ā^{l_max})⁻¹ (rows, H, N), with y = C r.

        In that basis Λ is block-diagonal with blocks [[Re λ, -Im λ], [Im λ, Re λ]], the
        rank-r term P_full P_fullᴴ becomes 2 p pᵀ with p = (Re P, Im P) interleaved, B becomes
        (Re B, Im B) and C̃ becomes (2 Re C̃, -2 Im C̃)."""
        dt, lam, P, B, Ct = self._params(dtype)
        with no_autocast(self.D.device):
            N = self.config.d_state
            a, w, zero = lam.real, lam.imag, torch.zeros_like(lam.real)
            A = (  # (H, N, N) block diagonal: 2x2 blocks [[a, -w], [w, a]]
                torch.diag_embed(torch.stack([a, a], -1).flatten(-2))
                + torch.diag_embed(torch.stack([-w, zero], -1).flatten(-2)[..., :-1], offset=1)
                + torch.diag_embed(torch.stack([w, zero], -1).flatten(-2)[..., :-1], offset=-1)
            )
            p = torch.view_as_real(P).flatten(-2)  # (r, H, N)
            A = A - 2 * torch.einsum("rhi,rhj->hij", p, p)
            b = torch.view_as_real(B).flatten(-2) * dt[:, None]  # Δ B (H, N)
            dtA = A * dt[:, None, None]
            eye = torch.eye(N, dtype=A.dtype, device=A.device)
            if self.config.disc == "bilinear":
                lhs = eye - dtA / 2
                A_bar = torch.linalg.solve(lhs, eye + dtA / 2)
                B_bar = torch.linalg.solve(lhs, b.unsqueeze(-1)).squeeze(-1)
            else:  # exp([[ΔA, ΔB], [0, 0]]) = [[Ā, B̄], [0, 1]]
                top = torch.cat([dtA, b.unsqueeze(-1)], dim=-1)  # (H, N, N+1)
                E = torch.linalg.matrix_exp(torch.cat([top, torch.zeros_like(top[:, :1])], dim=-2))
                A_bar, B_bar = E[:, :N, :N], E[:, :N, N]
            ct = torch.view_as_real(Ct.conj().resolve_conj()).flatten(-2) * 2  # (rows, H, N): (2 Re C̃, -2 Im C̃)
            # C = C̃ (I - Ā^{l_max})⁻¹, i.e. (I - Ā^{l_max})ᵀ Cᵀ = C̃ᵀ
            lhs = (eye - torch.linalg.matrix_power(A_bar, self.config.l_max)).transpose(-1, -2)
            C = torch.linalg.solve(lhs, rearrange(ct, "r h n -> h n r"))
            return A_bar, B_bar, rearrange(C, "h n r -> r h n")

    def _dense64(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`dense_system` computed in float64 (the matrix powers stay accurate) and cast
        to ``dtype``; cached for inference."""
        rd = _dtypes(dtype)[0]
        return self.cached(("dense", rd), lambda: tuple(t.to(rd) for t in self.dense_system(torch.float64)))

    # ---------------------------------------------------------------- kernels
    def kernel(self, L: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """The SSM convolution kernel (rows, H, L): rows = channels, or 2·channels (causal
        then anticausal) when bidirectional."""
        return self._kernels(L, dtype, None)[0]

    def _kernels(self, L: int, dtype: torch.dtype, x0: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """(K (rows, H, L), state term (B, rows, H, L) = C Ā^{t+1} x0, or None)."""
        if self.config.disc == "zoh":
            return self._kernels_dense(L, dtype, x0)
        return self._kernels_cauchy(L, dtype, x0)

    def _kernels_cauchy(self, L: int, dtype: torch.dtype, x0: Tensor | None):
        """Bilinear: S4 Algorithm 1 (Cauchy kernel + Woodbury at the roots of unity, irfft)."""
        dt, lam, P, B, Ct = self._params(dtype)
        cdtype = lam.dtype
        Lk = self.config.l_max
        while Lk < L:
            Lk *= 2
        rows = Ct
        if Lk > self.config.l_max:  # C̃_{2m} = C̃_m (I + Ā^m): double the length the kernel covers
            A_bar = self._dense64(torch.float64)[0]
            ct = torch.view_as_real(Ct.conj().resolve_conj()).flatten(-2).to(A_bar.dtype) * 2  # real-basis row of C̃
            X, m = torch.linalg.matrix_power(A_bar, self.config.l_max), self.config.l_max
            while m < Lk:
                ct = ct + torch.einsum("rhi,hij->rhj", ct, X)
                X, m = X @ X, 2 * m
            rows = torch.view_as_complex(ct.unflatten(-1, (-1, 2)).contiguous()).conj().to(cdtype) / 2
        cols = B[None]  # (1, H, M)
        if x0 is not None:  # B̄_β = Ā x0 for β = (I + Δ/2 A) x0 / Δ  (first half of the full vector)
            PHx = 2 * torch.einsum("rhm,bhm->rbh", P.conj(), x0).real  # Pᴴ x0_full (r, B, H), real
            Ax0 = lam * x0 - torch.einsum("rhm,rbh->bhm", P, PHx.to(cdtype))
            cols = torch.cat([cols, x0 / dt[:, None] + Ax0 / 2], dim=0)  # (1 + B, H, M)
        R, Bc, r = rows.shape[0], cols.shape[0], P.shape[0]
        X = torch.cat([rows, P.conj()], dim=0)  # (R + r, H, M)
        Y = torch.cat([cols, P], dim=0)  # (Bc + r, H, M)
        v = X[:, None] * Y[None] * dt[:, None].to(cdtype)  # (R + r, Bc + r, H, M)
        z, scale = _nodes(Lk, cdtype, v.device)
        k = cauchy(v, z, dt[:, None] * lam, conj=True)  # (R + r, Bc + r, H, F)
        k00, k01, k10, k11 = k[:R, :Bc], k[:R, Bc:], k[R:, :Bc], k[R:, Bc:]
        if r == 1:
            Khat = k00 - k01 * k10 / (1 + k11[0, 0])
        else:  # (I + k_PP)⁻¹ k_PB per (h, frequency)
            Q = torch.eye(r, dtype=cdtype, device=v.device)[:, :, None, None] + k11
            sol = torch.linalg.solve(rearrange(Q, "i j h f -> h f i j"), rearrange(k10, "i b h f -> h f i b"))
            Khat = k00 - torch.einsum("cihf,hfib->cbhf", k01, sol)
        K = torch.fft.irfft(Khat * scale, n=Lk)[..., :L]  # (R, Bc, H, L)
        return K[:, 0], (rearrange(K[:, 1:], "r b h l -> b r h l") if x0 is not None else None)

    def _kernels_dense(self, L: int, dtype: torch.dtype, x0: Tensor | None):
        """ZOH: K_{qs+r} = (C Ā^{qs}) (Ā^r b), s ≈ √L, for b = B̄ (and b = Ā x0), in float64."""
        A_bar, B_bar, C = self._dense64(torch.float64)
        b = B_bar[None]  # (1, H, N)
        if x0 is not None:
            r0 = torch.view_as_real(x0).flatten(-2).to(A_bar.dtype)  # (B, H, N)
            b = torch.cat([b, torch.einsum("hij,bhj->bhi", A_bar, r0)], dim=0)
        s = max(1, math.isqrt(max(L - 1, 0)) + 1)
        q = -(-L // s)
        cols = _powers_times(A_bar, b, s)  # (Bb, H, N, s)
        rows = _rows_times_powers(C, torch.linalg.matrix_power(A_bar, s), q)  # (R, H, q, N)
        K = torch.einsum("rhqn,bhns->rbhqs", rows, cols).flatten(-2)[..., :L].to(_dtypes(dtype)[0])
        return K[:, 0], (rearrange(K[:, 1:], "r b h l -> b r h l") if x0 is not None else None)

    # ---------------------------------------------------------------- state
    def _final_state(self, u_end: Tensor, x0: Tensor | None, n_steps: Tensor) -> Tensor:
        """x_T = Ā^{n} x0 + Σ_t Ā^{T-1-t} B̄ u_end_t, in the real basis, Horner over chunks.
        u_end (B, H, T) real (each row's last real token at T-1), x0 (B, H, M) complex or
        None, n (B,) steps taken from x0. Returns (B, H, M) complex."""
        Bsz, H, T = u_end.shape
        M = self.config.d_state // 2
        A_r, b_r, _ = self._dense64(u_end.dtype)
        c = min(_CHUNK, max(T, 1))
        nq = -(-T // c)
        uc = F.pad(u_end, (nq * c - T, 0)).view(Bsz, H, nq, c)  # zeros in front change nothing
        X = _powers_times(A_r, b_r, c).flip(-1)  # (H, N, c): Ā^{c-1-j} B̄
        s = torch.einsum("hnj,bhqj->bhqn", X, uc)  # each chunk's contribution at its end
        Ac = torch.linalg.matrix_power(A_r, c)
        r = s[:, :, 0]
        for i in range(1, nq):
            r = torch.einsum("hij,bhj->bhi", Ac, r) + s[:, :, i]
        if x0 is not None:
            r = r + _apply_power(A_r, torch.view_as_real(x0).reshape(Bsz, H, 2 * M).to(r.dtype), n_steps, T)
        return torch.view_as_complex(r.reshape(Bsz, H, M, 2).contiguous())

    def _diag_system(self, dtype: torch.dtype):
        """Eigen-decomposition of Ā (float64): (μ (H, N), W, W⁻¹ (H, N, N), b' = W⁻¹B̄ (H, N),
        c' = C W (rows, H, N)), complex, cast to ``dtype``'s complex type."""

        def build():
            A_bar, B_bar, C = self._dense64(torch.float64)
            mu, W = torch.linalg.eig(A_bar)
            W_inv = torch.linalg.inv(W)
            # a step in eigen-coordinates amplifies rounding by about cond(W); checked in eager
            # runs (a compiled graph cannot branch on the value: it warned when run eagerly)
            eps = torch.finfo(_dtypes(dtype)[0]).eps
            expected = 0.0 if is_tracing() else float(torch.linalg.cond(W.detach()).max()) * eps
            if expected > 1e-4:
                warnings.warn(
                    f"s4 step_mode='diagonal': the eigenvectors of Ā have condition number "
                    f"{expected / eps:.1e}, so a {_dtypes(dtype)[0]} step may lose "
                    f"accuracy (~{expected:.0e} relative): HiPPO matrices are highly non-normal. "
                    "step_mode='dense' is exact.",
                    RuntimeWarning,
                    stacklevel=4,
                )
            cd = _dtypes(dtype)[1]
            bd = torch.einsum("hij,hj->hi", W_inv, B_bar.to(W.dtype))
            cw = torch.einsum("rhi,hij->rhj", C.to(W.dtype), W)
            return mu.to(cd), W.to(cd), W_inv.to(cd), bd.to(cd), cw.to(cd)

        return self.cached(("diag", dtype), build)

    def _state_in(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        """A carried state -> the kept half in the DPLR basis (B, H, M)."""
        if self.config.step_mode == "diagonal":
            _, W, _, _, _ = self._diag_system(dtype)
            r = torch.einsum("hij,bhj->bhi", W, x).real  # (B, H, N) real basis
            x = torch.view_as_complex(r.unflatten(-1, (-1, 2)).contiguous())
        return x

    def _state_out(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        if self.config.step_mode == "diagonal":
            _, _, W_inv, _, _ = self._diag_system(dtype)
            x = torch.einsum("hij,bhj->bhi", W_inv, torch.view_as_real(x).flatten(-2).to(W_inv.dtype))
        return x

    # ---------------------------------------------------------------- forms
    def _forward(self, x, state, lengths, return_state):
        with no_autocast(x.device):  # the SSM in fp32 / complex64 at least, whatever autocast does
            y, x_final = self._ssm(x, state, lengths, return_state)
        return self.post(y.to(x.dtype)), (S4State(x_final) if return_state else None)

    def _ssm(self, x, state, lengths, return_state):
        """x (B, L, H) -> (y (B, L, channels·H) in ssm_dtype(x) before the output stage, the
        final state (B, H, M) complex, or None when not ``return_state``)."""
        dtype = ssm_dtype(x)
        _, cdtype = _dtypes(dtype)
        Bsz, L, H = x.shape
        ch = self.config.channels
        u = rearrange(x, "b l h -> b h l").to(dtype)
        if lengths is not None:  # padding must not reach the state (nor, bidirectional, real outputs)
            u = u.masked_fill(torch.arange(L, device=x.device)[None, None, :] >= lengths[:, None, None], 0)
        x0 = None if state is None else self._state_in(state.x, dtype).to(cdtype)
        K, Kx = self._kernels(L, dtype, x0)  # (rows, H, L), (B, rows, H, L)
        u_ = u[:, None]  # (B, 1, H, L)
        y = fft_bidirectional_conv(u_, K[:ch], K[ch:]) if self.config.bidirectional else fft_causal_conv(u_, K)
        if Kx is not None:
            y = y + Kx
        y = y + self.D.to(dtype)[:, :, None] * u_  # (B, ch, H, L)
        y = rearrange(y, "b c h l -> b l (c h)")
        if not return_state:
            return y, None
        if lengths is not None:  # shift each row so that its last real token sits at L-1
            src = torch.arange(L, device=u.device)[None, :] - (L - lengths)[:, None]  # (B, L)
            u_end = torch.gather(u, 2, src.clamp(min=0)[:, None, :].expand(-1, H, -1))
            u_end = u_end.masked_fill((src < 0)[:, None, :], 0)
            n_steps = lengths
        else:
            u_end, n_steps = u, torch.full((Bsz,), L, device=u.device, dtype=torch.long)
        x_final = self._final_state(u_end, x0, n_steps)
        return y, self._state_out(x_final, dtype)

    def _step(self, x_t, state):
        with no_autocast(x_t.device):
            y, x_new = self._ssm_step(x_t, state)
        return self.post(y.to(x_t.dtype)), S4State(x_new)

    def _ssm_step(self, x_t, state):
        """x_t (B, H) -> (y (B, channels·H) in ssm_dtype(x_t), the new state)."""
        dtype = ssm_dtype(x_t)
        u = x_t.to(dtype)  # (B, H)
        Bsz, H = u.shape
        if self.config.step_mode == "dense":
            A_r, b_r, c_r = self._dense64(dtype)
            r = torch.view_as_real(state.x).reshape(Bsz, H, -1)  # (B, H, N) real
            r = torch.einsum("hij,bhj->bhi", A_r, r) + b_r * u[..., None]
            y = torch.einsum("chn,bhn->bch", c_r, r)  # (B, ch, H)
            x_new = torch.view_as_complex(r.reshape(Bsz, H, -1, 2).contiguous())
        else:
            mu, _, _, bd, cd = self._diag_system(dtype)
            x_new = mu * state.x + bd * u[..., None].to(bd.dtype)  # (B, H, N)
            y = torch.einsum("chn,bhn->bch", cd, x_new).real
        y = y + self.D.to(dtype) * u[:, None]
        return rearrange(y, "b c h -> b (c h)"), x_new

    def _init_state(self, batch_size, device, dtype):
        cdtype = _dtypes(dtype)[1]
        n = self.config.d_state if self.config.step_mode == "diagonal" else self.config.d_state // 2
        return S4State(torch.zeros(batch_size, self.d_model, n, device=device, dtype=cdtype))

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"d_model={c.d_model}, d_state={c.d_state}, channels={c.channels}, init={c.init!r}, "
            f"disc={c.disc!r}, l_max={c.l_max}, step_mode={c.step_mode!r}"
            + (", bidirectional=True" if c.bidirectional else "")
        )


__all__ = ["S4", "S4Config", "S4State"]
