"""RTF: the rational transfer function state-space layer ("state-free" inference).

Paper: Parnichkun et al., "State-Free Inference of State-Space Models: The Transfer
Function Approach" (ICML 2024), https://arxiv.org/abs/2405.06147. (Parts are named, not
numbered: no copy of the paper text was at hand to check equation numbers against.)

Each of the H channels is a SISO linear time-invariant system given by its transfer
function, written with s = z⁻¹ (the one-step delay):

    H(s) = h0 + (b_1 s + ... + b_N s^N) / (1 + a_1 s + ... + a_N s^N) = h0 + b(s)/a(s)

The parameters are the 2N + 1 coefficients (a, b, h0); N = d_state is the state size.

Recurrent form: the companion (controllable canonical) realisation the paper steps with,

    A = [[-a_1 ... -a_N], [I_{N-1}, 0]],  B = e_1,  x_{t+1} = A x_t + B u_t,  y_t = C x_t + h0 u_t,

whose state x_t = (w_{t-1}, ..., w_{t-N}) holds the last N values of the all-pole signal
w = u / a(s) (w_t = u_t - Σ_k a_k w_{t-k}); one step costs O(N).

Parallel form, the paper's state-free parallel inference: one rFFT of the zero-padded
coefficient vectors evaluates a(s) and b(s) at the T-th roots of unity (T = l_max), and

    k = irfft(rfft(b_pad) / rfft(a_pad)),  k_0 := h0,   k ∈ R^T,

which costs O(T log T) time and O(T) memory per channel, whatever N is. This k is the
T-periodic aliasing Σ_m h_{n+mT} of the impulse response of (A, B, b). Because
Σ_m b A^{n-1+mT} B = b (I - A^T)⁻¹ A^{n-1} B for n >= 1, its taps 1..T-1 are *exactly*
those of the system with C = b (I - A^T)⁻¹: the learned numerator is the
truncation-corrected C̃ = C (I - A^T) of the paper's truncated transfer function. Tap 0
is the exception: aliasing puts C A^{T-1} B there (the reference code adds h0 to it, an
error of size ρ(A)^T); setting k_0 = h0 makes k the exact T-tap response. This layer is that IIR
system (A, B, C, h0). Consequences, all exact:

- forward from the zero state, L <= T: y = k[:L] * u (FFT convolution; N-free).
- C from the kernel, without the reference code's O(N³ log T) ``(I - A^T)`` solve: since
  k - h0 δ = Σ_j C_j s^j / a(s) (mod s^T), C_j = Σ_{i<j} a_i k_{j-i} (a_0 = 1) for
  j = 1..N, the first N+1 taps of a * k (needs T > N). Tests check it against the solve.
- forward from a state x0 (chunked prefill): with the initial-condition polynomials
  P_t = Σ_j a_{t+1+j} x0_j and R_t = Σ_j C_{t+1+j} x0_j (t < N), a(s) W = U - P and
  y = k * u + R - P * (k - h0 δ), and the final state is the last N values of
  w = (u - P) * g with g = 1/a(s) mod s^L, a power-series inverse computed by Newton's
  iteration (g <- g (2 - a g)) with FFT products: O(L log L), N-free.
- L > T: the kernel is continued exactly as h0 δ + (Σ_j C_j s^j) * g.

Init: "zeros" (the paper's: a = b = 0, all poles at the origin, stable) or "montel" (a, b
uniform in ±1/N, so Σ|a_k| <= 1 and the poles lie in the unit disc). Optional
stability constraint ``constraint="l1"``: a = a_raw / (Σ|a_raw| + |c| + ε) with a
learnable c per channel, so Σ|a_k| < 1 and by the Cauchy/Montel bound every root of
z^N + a_1 z^{N-1} + ... + a_N lies strictly inside the unit circle.

``bidirectional=True`` adds an anti-causal RTF (own a, b, no h0) applied to the reversed
sequence (no recurrent form then). The block around the SSM follows S4:
SSM -> activation -> dropout -> linear to 2H -> GLU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn

from seqzoo.layer import SequenceLayer, no_autocast, optim_hint, ssm_dtype
from seqzoo.modules.ssm_block import SSMOutput
from seqzoo.registry import register

# ---------------------------------------------------------------------- power series
# Sequences are power series in s = z⁻¹ along the last dim: p[..., n] is the coefficient of s^n.


def fft_size(n: int) -> int:
    """Smallest 2^i 3^j 5^k >= n (the lengths pocketFFT handles fastest)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def poly_mul(p: Tensor, q: Tensor, n: int) -> Tensor:
    """(p q) mod s^n, by FFT: p (..., lp), q (..., lq), broadcast -> (..., n).
    A causal convolution y = k * u over length L is ``poly_mul(u, k, L)``."""
    p, q = p[..., :n], q[..., :n]
    m = p.shape[-1] + q.shape[-1] - 1
    size = fft_size(m)
    out = torch.fft.irfft(torch.fft.rfft(p, n=size) * torch.fft.rfft(q, n=size), n=size)
    out = out[..., : min(n, m)]
    if m < n:
        out = torch.nn.functional.pad(out, (0, n - m))
    return out


def series_inverse(a: Tensor, n: int) -> Tensor:
    """g = 1 / a(s) mod s^n for a (..., N+1) with a[..., 0] = 1 -> (..., n).

    Newton's iteration doubles the number of exact coefficients each round: if
    a g = 1 + s^m e (mod s^2m), then g (2 - a g) = g - s^m g e is exact mod s^2m.
    O(n log n) with FFT products; no recursion over time.
    """
    g = a.new_ones(*a.shape[:-1], 1)
    m = 1
    while m < n:
        m2 = min(2 * m, n)
        e = poly_mul(a, g, m2)[..., m:]  # (..., m2 - m)
        g = torch.cat([g, -poly_mul(g, e, m2 - m)], dim=-1)
        m = m2
    return g[..., :n]


def _monic(a: Tensor) -> Tensor:
    """[1, a_1, ..., a_N]: (..., N) -> (..., N+1)."""
    return torch.cat([torch.ones_like(a[..., :1]), a], dim=-1)


def rtf_kernel(a: Tensor, b: Tensor, h0: Tensor, T: int) -> Tensor:
    """The state-free kernel (state-free parallel inference): a, b (H, N), h0 (H,) -> k (H, T).

    One rFFT of the zero-padded coefficients [1, a_1..a_N] and [0, b_1..b_N] evaluates
    both polynomials at the T-th roots of unity; the inverse FFT of b/a is the T-periodic
    aliased impulse response, whose taps 1..T-1 are exactly those of the system with
    C = b (I - A^T)⁻¹ (see the module docstring). Its tap 0 holds that system's T-th tap
    C A^{T-1} B instead of 0, so tap 0 is set to h0 (where the paper adds h0 to the
    spectrum): then k is the exact T-tap impulse response. Needs T > N.
    """
    den = _monic(a)  # (H, N+1)
    num = torch.cat([torch.zeros_like(b[:, :1]), b], dim=-1)  # (H, N+1)
    spec = torch.fft.rfft(torch.cat([den, num], dim=0), n=T)  # (2H, T//2+1): the one rFFT
    den_f, num_f = spec.chunk(2, dim=0)
    k = torch.fft.irfft(num_f / den_f, n=T)  # (H, T): Σ_m h_{n+mT} of (A, B, b)
    # Taps 1..T-1 are exact. Tap 0 aliases Σ_{m>=1} b A^{mT-1} B = C A^{T-1} B, the T-th tap of
    # the corrected system (the identity above needs n >= 1); its true lag-0 tap is h0.
    return torch.cat([h0[:, None], k[:, 1:]], dim=-1)


def output_row(a: Tensor, k: Tensor) -> Tensor:
    """C of the companion realisation from the kernel: C_j = Σ_{i<j} a_i k_{j-i}, j = 1..N.
    a (H, N), k (H, >= N+1) -> C (H, N). Equivalent to solving C (I - A^T) = b."""
    N = a.shape[-1]
    den = _monic(a)
    hp = torch.cat([torch.zeros_like(k[:, :1]), k[:, 1 : N + 1]], dim=-1)  # k - h0 δ: tap 0 is exactly 0
    return poly_mul(den, hp, N + 1)[:, 1:]


def initial_polys(coef: Tensor, x0: Tensor) -> Tensor:
    """Q_t = Σ_{j=0}^{N-1-t} coef_{t+j} x0_j for t = 0..N-1 (a correlation, by FFT).
    coef (..., H, N) (coef_m = a_{m+1} or C_{m+1}) and x0 (B, H, N) broadcast together."""
    N = x0.shape[-1]
    return poly_mul(coef, x0.flip(-1), 2 * N - 1)[..., N - 1 :]


def _fit(p: Tensor, L: int) -> Tensor:
    """Truncate or zero-pad the last dim to L."""
    n = p.shape[-1]
    return p[..., :L] if n >= L else torch.nn.functional.pad(p, (0, L - n))


# ---------------------------------------------------------------------- config / state


@dataclass
class RTFConfig:
    d_model: int
    d_state: int = 64  # N: order of the rational transfer function (= companion state size)
    l_max: int = 1024  # T: the kernel length the numerator is corrected for (must exceed d_state)
    init: Literal["zeros", "montel"] = "zeros"
    constraint: Literal["none", "l1"] = "none"  # "l1": Σ|a_k| < 1, every pole inside the unit circle
    num_a: int | None = None  # distinct denominators a, tied across the channels (RTF's num_a); None: H
    bidirectional: bool = False
    lr: float | None = 1e-3  # learning-rate hint for a, b (None: the global one)
    activation: Literal["gelu", "silu", "identity"] = "gelu"
    output: Literal["glu", "linear", "identity"] = "glu"
    dropout: float = 0.0

    def __post_init__(self):
        if self.d_state < 1:
            raise ValueError(f"d_state must be a positive integer, got {self.d_state}")
        if self.l_max <= self.d_state:
            raise ValueError(
                f"l_max={self.l_max} must exceed d_state={self.d_state} (the kernel needs more taps "
                "than the state has coefficients); raise l_max"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_a is not None and (self.num_a < 1 or self.d_model % self.num_a):
            raise ValueError(f"num_a={self.num_a} must be a positive divisor of d_model={self.d_model} (or None: one per channel)")


class RTFState(NamedTuple):
    x: Tensor  # (B, H, N) companion state (w_{t-1}, ..., w_{t-N}), real


class RTFSystem(NamedTuple):
    """The coefficients of one evaluation, in one real dtype; H' = H (causal) or 2H
    (bidirectional: rows H.. are the anti-causal half, which has no h0)."""

    a: Tensor  # (H', N) denominator after the constraint
    b: Tensor  # (H', N) numerator C̃ = C (I - A^T)
    h0: Tensor  # (H',) feedthrough (zeros for the anti-causal half)
    k: Tensor  # (H', T) state-free kernel


@register("rtf", config=RTFConfig)
class RTF(SequenceLayer):
    """Rational transfer function SSM layer. x (B, L, D) -> y (B, L, D); D = H channels."""

    supports_lengths = True
    State = RTFState
    test_variants = (
        {},  # the paper's zero init
        {"init": "montel", "d_state": 8, "l_max": 64},
        {"init": "montel", "d_state": 4, "l_max": 16, "constraint": "l1"},  # L = 29 > l_max: continued kernel
        {"init": "montel", "d_state": 8, "l_max": 64, "bidirectional": True},
        {"init": "montel", "d_state": 4, "l_max": 32, "num_a": 2, "constraint": "l1"},  # tied denominators
    )

    def __init__(self, config: RTFConfig):
        super().__init__(config)
        H, N = config.d_model, config.d_state
        rows = 2 * H if config.bidirectional else H
        a_rows = rows // H * (config.num_a or H)  # channel h of each direction uses a row h // (H / num_a)
        if config.init == "zeros":
            a, b = torch.zeros(a_rows, N), torch.zeros(rows, N)
        else:  # montel: Σ|a_k| <= 1
            a, b = (torch.rand(a_rows, N) * 2 - 1) / N, (torch.rand(rows, N) * 2 - 1) / N
        self.a = nn.Parameter(a)
        self.b = nn.Parameter(b)
        self.h0 = nn.Parameter(torch.randn(H))
        hints = {"lr": config.lr} if config.lr is not None else {}
        for p in (self.a, self.b):
            optim_hint(p, weight_decay=0.0, **hints)
        if config.constraint == "l1":
            self.a_scale = optim_hint(nn.Parameter(torch.rand(a_rows)), weight_decay=0.0, **hints)
        self.keep_fp32("a", "b", *(("a_scale",) if config.constraint == "l1" else ()))  # the poles and zeros
        self.post = SSMOutput(H, H, config.activation, config.output, config.dropout)

    # ---------------------------------------------------------------- the system
    def system(self, dtype: torch.dtype = torch.float32) -> RTFSystem:
        """Coefficients and the T-tap state-free kernel, in float64 if ``dtype`` is, else
        float32 (autocast off: the SSM never runs in half precision)."""
        with no_autocast(self.a.device):
            rdtype = torch.float64 if dtype == torch.float64 else torch.float32
            a = self.a.to(rdtype)
            if self.config.constraint == "l1":
                a = a / (a.abs().sum(-1, keepdim=True) + self.a_scale.to(rdtype).abs()[:, None] + 1e-6)
            a = a.repeat_interleave(self.b.shape[0] // a.shape[0], dim=0)  # (H', N), as RTF repeats "(D R)"
            b = self.b.to(rdtype)
            h0 = self.h0.to(rdtype)
            if self.config.bidirectional:
                h0 = torch.cat([h0, torch.zeros_like(h0)])
            return RTFSystem(a, b, h0, rtf_kernel(a, b, h0, self.config.l_max))

    def companion(self, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
        """(a (H, N), C (H, N), h0 (H,)) of the causal companion realisation: A has first row
        -a, B = e_1, and C is the corrected output row (C (I - A^T) = b)."""
        sys = self.system(dtype)
        H = self.d_model
        return sys.a[:H], output_row(sys.a[:H], sys.k[:H]), sys.h0[:H]

    def _kernel(self, sys: RTFSystem, L: int, g: Tensor | None = None) -> Tensor:
        """(H', L) impulse responses: the state-free kernel when L <= T, else continued
        through the realisation (h0 δ + C(s) g(s), exact; ``g`` = 1/a(s) mod s^L if known)."""
        T = self.config.l_max
        if L <= T:
            return sys.k[:, :L]
        C = output_row(sys.a, sys.k)  # (H', N)
        if g is None:
            g = series_inverse(_monic(sys.a), L)  # (H', L)
        k = poly_mul(torch.cat([torch.zeros_like(C[:, :1]), C], dim=-1), g, L)
        return torch.cat([k[:, :1] + sys.h0[:, None], k[:, 1:]], dim=-1)

    def kernel(self, L: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """The causal convolution kernel (H, L); with bidirectional=True, (2, H, L): the
        causal kernel and the anti-causal one (taps at lags 0..L-1, lag 0 is zero)."""
        k = self._kernel(self.system(dtype), L)
        return rearrange(k, "(two h) l -> two h l", two=2) if self.config.bidirectional else k

    # ---------------------------------------------------------------- forms
    def _ssm(self, u: Tensor, x0: Tensor | None, lengths: Tensor | None, need_state: bool):
        """u (B, H, L) real (zero on padding) -> (y (B, H, L), final state (B, H, N) or None)."""
        Bsz, H, L = u.shape
        N = self.config.d_state
        sys = self.system(u.dtype)
        g = None  # 1/a(s) mod s^L: needed for the final state, and for the kernel when L > T
        if need_state or L > self.config.l_max:
            g = series_inverse(_monic(sys.a if L > self.config.l_max else sys.a[:H]), L)
        k = self._kernel(sys, L, g)  # (H', L)
        y = poly_mul(u, k[:H], L)  # causal FFT convolution
        if self.config.bidirectional:  # anti-causal half: y_t += Σ_{d>=1} k'_d u_{t+d}
            y = y + poly_mul(u.flip(-1), k[H:], L).flip(-1)
        if x0 is None and not need_state:
            return y, None

        a = sys.a[:H]
        P = None
        if x0 is not None:  # free response from x0: y += R - P * (k - h0 δ)
            C = output_row(a, sys.k[:H])
            P, R = initial_polys(torch.stack([a, C])[:, None], x0).unbind(0)  # (B, H, N) each
            hp = torch.cat([torch.zeros_like(k[:H, :1]), k[:H, 1:]], dim=-1)
            y = y + _fit(R, L) - poly_mul(P, hp, L)
        if not need_state:
            return y, None

        # final state: the last N values of w = (u - P) / a(s)
        w = poly_mul(u if P is None else u - _fit(P, L), g[:H], L)  # (B, H, L)
        hist = x0 if x0 is not None else u.new_zeros(Bsz, H, N)
        w_ext = torch.cat([hist.flip(-1), w], dim=-1)  # (B, H, N+L): index N+t holds w_t
        if lengths is None:
            x_final = w_ext[..., L : L + N].flip(-1)
        else:
            idx = N + lengths[:, None] - 1 - torch.arange(N, device=u.device)[None, :]  # (B, N)
            x_final = torch.gather(w_ext, 2, idx[:, None, :].expand(-1, H, -1))
        return y, x_final

    def _forward(self, x, state, lengths, return_state):
        dtype = ssm_dtype(x)
        u = rearrange(x, "b l h -> b h l").to(dtype)
        if lengths is not None:  # padding must not reach the state or the anti-causal half
            u = u.masked_fill(torch.arange(x.shape[1], device=x.device)[None, None, :] >= lengths[:, None, None], 0)
        x0 = None if state is None else state.x.to(dtype)
        y, x_final = self._ssm(u, x0, lengths, need_state=return_state)
        y = rearrange(y, "b h l -> b l h").to(x.dtype)
        return self.post(y), (RTFState(x_final) if x_final is not None else None)

    def _step(self, x_t, state):
        dtype = ssm_dtype(x_t)
        u = x_t.to(dtype)  # (B, H)
        a, C, h0 = self.cached(("step", dtype), lambda: self.companion(dtype))
        x = state.x.to(dtype)  # (B, H, N)
        y = (x * C).sum(-1) + h0 * u  # y_t = C x_t + h0 u_t
        w = u - (x * a).sum(-1)  # first row of A x_t + B u_t
        x_next = torch.cat([w[..., None], x[..., :-1]], dim=-1)  # shift: the companion structure
        return self.post(y.to(x_t.dtype)), RTFState(x_next)

    def _init_state(self, batch_size, device, dtype):
        dtype = torch.promote_types(dtype, torch.float32)
        return RTFState(torch.zeros(batch_size, self.d_model, self.config.d_state, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"d_model={c.d_model}, d_state={c.d_state}, l_max={c.l_max}, init={c.init!r}, "
            f"constraint={c.constraint!r}, bidirectional={c.bidirectional}"
        )


__all__ = [
    "RTF",
    "RTFConfig",
    "RTFState",
    "RTFSystem",
    "fft_size",
    "poly_mul",
    "series_inverse",
    "rtf_kernel",
    "output_row",
    "initial_polys",
]
