"""The SSD scan of Mamba-2 (spec: :mod:`.ref`) and its chunked algorithm.

Paper: Dao & Gu, "Transformers are SSMs" (ICML 2024), §6 "A hardware-efficient
algorithm for SSD" (the block decomposition of the semiseparable matrix M, Fig. 5). With
chunks of Q steps and cumulative log-decays s_i = Σ_{k<=i} Δ_k A inside a chunk:

1. diagonal blocks (quadratic, attention-like):  y_i += Σ_{j<=i} (C_i·B_j) e^{s_i - s_j} Δ_j x_j
2. each chunk's final state from its inputs:      S_c = Σ_j e^{s_{Q-1} - s_j} Δ_j x_j B_jᵀ
3. the recurrence across chunks:                 S_in[c+1] = e^{s_{Q-1}} S_in[c] + S_c
4. off-diagonal blocks from the carried state:    y_i += e^{s_i} S_in[c] C_i

L is padded up to a multiple of Q with Δ = 0 (decay 1, no input), which changes neither
the outputs nor the final state, so any ``chunk_size`` gives the same result.

Backends: "chunked" (the algorithm above in PyTorch, CPU or GPU), "scan" (the recurrence
as seqzoo's compiled CPU selective scan, :func:`ssd_scan`: what ``auto`` uses on a CPU for
d_state up to ``SCAN_MAX_STATE``, the chunked algorithm above it), "mamba_ssm"
(``mamba_chunk_scan_combined``, preferred by ``auto`` on a GPU when it imports), "ref"
(the loop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from seqzoo import _ext
from seqzoo.ops import _dispatch
from seqzoo.ops._checks import check_real_tensors
from seqzoo.ops.diag_scan import diag_scan
from seqzoo.ops.selective_scan import MAMBA_SSM_INSTALL, selective_scan
from seqzoo.ops.ssd import ref

__all__ = ["ssd", "ssd_chunked", "ssd_scan"]


def _load_mamba_ssm():
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    return mamba_chunk_scan_combined


def _probe_mamba_ssm(fn, device: torch.device) -> None:
    """A tiny call on ``device`` (it also compiles the Triton kernels), checked against the
    reference."""
    g = torch.Generator().manual_seed(0)
    Bsz, L, H, P, G, N = 1, 32, 2, 16, 1, 16
    x, B, C = (torch.randn(*s, generator=g).to(device) for s in ((Bsz, L, H, P), (Bsz, L, G, N), (Bsz, L, G, N)))
    dt = (torch.rand(Bsz, L, H, generator=g) * 0.5).to(device)
    A = (-torch.rand(H, generator=g) - 0.5).to(device)
    got = fn(x, dt, A, B, C, 16)
    want = ref.ssd(x, dt, A, B, C)
    err = float((got.float() - want).abs().max() / want.abs().max())
    if not err < 1e-2:  # the Triton kernels use tf32 matmuls
        raise RuntimeError(f"its output differs from the reference by {err:.1e} (relative)")


_dispatch.register_extra_backend(
    "ssd", "mamba_ssm", ("cuda",), _load_mamba_ssm, probe=_probe_mamba_ssm, preferred=True,
    package="mamba_ssm", install=MAMBA_SSM_INSTALL, dtypes=(torch.float32, torch.float16, torch.bfloat16),
)
_dispatch.register_extra_backend("ssd", "chunked", ("cpu", "cuda"), lambda: ssd_chunked)


def _load_scan():
    if not _ext.has_kernel("selective_scan", "cpu"):
        raise ImportError("the compiled extension with the CPU selective scan is not available")
    return ssd_scan


_dispatch.register_extra_backend("ssd", "scan", ("cpu",), _load_scan, preferred=True)

# d_state up to which ``auto`` runs SSD as a selective scan on a CPU: the scan's work grows
# with H P N L, the chunked algorithm's mostly with its (Q x Q) blocks. Measured in one
# process on the 2-core VM, one thread, forward + backward, batch 32, L 256, E = H P = 128
# (python -m bench.ssd --batch 32 --length 256 --heads 4 --head-dim 32 --state N, and an
# interleaved A/B): N 16 scan 16-31 ms vs chunked 40-52 ms; N 32 41-71 vs 42-60; N 64 66-117
# vs 60-92 (its forward alone 2x slower).
SCAN_MAX_STATE = 16


def ssd_chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The chunked SSD algorithm in PyTorch; shapes as :func:`ssd`.

    Every contraction is a batched matmul over (batch, chunk, group) with the heads of a
    group stacked into the rows (heads share B and C), and step 3 is one compiled
    :func:`~seqzoo.ops.diag_scan` over the chunks instead of a Python loop. The one tensor
    of size (b, c, h, q, q) is the masked decay-and-score matrix of step 1. Under autocast
    the matmuls run in the autocast dtype (fp32 accumulation); the log-decays, the decays
    and the recurrence across chunks stay in the compute dtype.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    for t in (dt, A, B, C, initial_state):
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    L, H, G = x.shape[1], x.shape[2], B.shape[2]
    R, Q = H // G, chunk_size
    pad = (-L) % Q
    # Δ = 0 on the padding: decay 1 and no input, so outputs and final state are unchanged
    x_, dt_, B_, C_ = (F.pad(t.to(dtype), (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    x_ = rearrange(x_, "b (c q) (g r) p -> b c g q r p", q=Q, g=G)
    dt_ = rearrange(dt_, "b (c q) (g r) -> b c g r q", q=Q, g=G)
    B_ = rearrange(B_, "b (c q) g n -> b c g q n", q=Q)
    C_ = rearrange(C_, "b (c q) g n -> b c g q n", q=Q)
    s = torch.cumsum(dt_ * rearrange(A.to(dtype), "(g r) -> g r 1", g=G), dim=-1)  # (b, c, g, r, q): s_i
    s_end = s[..., -1:]  # (b, c, g, r, 1): log-decay over the whole chunk

    # 1. diagonal blocks: y_i = sum_{j<=i} (C_i . B_j) e^{s_i - s_j} Δ_j x_j
    causal = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril()
    decay = torch.exp((s[..., :, None] - s[..., None, :]).masked_fill(~causal, float("-inf")))  # (b, c, g, r, q, q)
    scores = torch.matmul(C_, B_.transpose(-1, -2))  # (b, c, g, q, q): C_i . B_j
    xdt = rearrange(x_, "b c g q r p -> b c g r q p") * dt_[..., None]  # Δ_j x_j (b, c, g, r, q, p)
    y = torch.matmul(decay * scores[:, :, :, None], xdt)  # (b, c, g, r, q, p)

    # 2. each chunk's state at its end: S_c = sum_j e^{s_end - s_j} Δ_j x_j B_j^T, heads as rows
    xw = rearrange(xdt * torch.exp(s_end - s)[..., None], "b c g r q p -> b c g (r p) q")
    states = torch.matmul(xw, B_).to(dtype)  # (b, c, g, r p, n)

    # 3. the recurrence across chunks, S_after[c] = e^{s_end[c]} S_after[c-1] + S_c, as a scan
    states = rearrange(states, "b c g (r p) n -> b c g r p n", r=R)
    S0 = None if initial_state is None else rearrange(initial_state.to(dtype), "b (g r) p n -> b g r p n", g=G)
    S_after, S_last = diag_scan(torch.exp(s_end)[..., None], states, S0)  # (b, c, g, r, p, n), (b, g, r, p, n)
    S_in = torch.cat([(S0 if S0 is not None else torch.zeros_like(S_last))[:, None], S_after[:, :-1]], dim=1)
    S_in = rearrange(S_in, "b c g r p n -> b c g (r p) n")

    # 4. off-diagonal blocks: the carried state read out by C_i, decayed to step i
    y_off = torch.matmul(C_, S_in.transpose(-1, -2))  # (b, c, g, q, r p)
    y_off = rearrange(y_off, "b c g q (r p) -> b c g r q p", r=R) * torch.exp(s)[..., None]
    y = rearrange(y + y_off, "b c g r q p -> b (c q) (g r) p")[:, :L].to(x.dtype)
    if not return_final_state:
        return y
    return y, rearrange(S_last, "b g r p n -> b (g r) p n")


def ssd_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """SSD as a selective scan (:func:`~seqzoo.ops.selective_scan`, the compiled CPU kernel);
    shapes as :func:`ssd`, ``chunk_size`` unused.

    Row p of head h's state is the N-vector state of one selective-scan channel (h, p):
    ``S_t[p] = exp(Δ_t A_h) S_{t-1}[p] + Δ_t x_t[p] B_t`` and ``y_t[p] = <C_t, S_t[p]>`` are
    eq. (2a)-(2b) of Mamba with the channel's Δ = the head's, A_dn = A_h for every n (the
    kernel then computes one decay per step instead of N) and B, C shared by the group's
    channels. Nothing of size (B, L, H, P, N) is stored; gradients reach Δ and A through the
    expansions (sums over p and n).
    """
    Bsz, L, H, P = x.shape
    N = B.shape[-1]
    u = rearrange(x, "b l h p -> b (h p) l")
    delta = rearrange(dt[..., None].expand(Bsz, L, H, P), "b l h p -> b (h p) l")
    A_ = A.repeat_interleave(P)[:, None].expand(H * P, N)
    Bm, Cm = (rearrange(t, "b l g n -> b g n l") for t in (B, C))
    h0 = None if initial_state is None else initial_state.reshape(Bsz, H * P, N)
    y, last = selective_scan(u, delta, A_, Bm, Cm, initial_state=h0, return_final_state=True, backend="cpp")
    y = rearrange(y, "b (h p) l -> b l h p", p=P)
    return (y, last.reshape(Bsz, H, P, N)) if return_final_state else y


def _check(x, dt, A, B, C, chunk_size, initial_state) -> None:
    check_real_tensors("ssd", dict(x=x, dt=dt, A=A, B=B, C=C, initial_state=initial_state))
    if x.dim() != 4:
        raise ValueError(f"ssd: x must be (B, L, H, P), got shape {tuple(x.shape)}")
    Bsz, L, H, P = x.shape
    if tuple(dt.shape) != (Bsz, L, H):
        raise ValueError(f"ssd: dt must be (B, L, H) = {(Bsz, L, H)}, got shape {tuple(dt.shape)}")
    if tuple(A.shape) != (H,):
        raise ValueError(f"ssd: A must be (H,) = ({H},) (one scalar per head), got shape {tuple(A.shape)}")
    if B.dim() != 4 or B.shape[:2] != (Bsz, L) or B.shape != C.shape:
        raise ValueError(
            f"ssd: B and C must both be (B, L, G, N) with (B, L) = {(Bsz, L)}, got {tuple(B.shape)} and {tuple(C.shape)}"
        )
    G, N = B.shape[2], B.shape[3]
    if H % G:
        raise ValueError(f"ssd: the number of groups G = {G} must divide the number of heads H = {H}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"ssd: chunk_size must be a positive int, got {chunk_size!r}")
    if initial_state is not None and tuple(initial_state.shape) != (Bsz, H, P, N):
        raise ValueError(f"ssd: initial_state must be (B, H, P, N) = {(Bsz, H, P, N)}, got {tuple(initial_state.shape)}")


def ssd(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    *,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """SSD scan (Mamba-2): per head h, ``S_t = exp(Δ_t A_h) S_{t-1} + Δ_t x_t B_tᵀ``,
    ``y_t = S_t C_t``.

    Args:
        x: (B, L, H, P).  dt: (B, L, H) step sizes (already positive: softplus applied).
        A: (H,) one scalar per head.  B, C: (B, L, G, N), G dividing H.
        chunk_size: Q of the chunked algorithm (any value gives the same result).
        initial_state: (B, H, P, N).  return_final_state: also return the last state.
        backend: "auto" | "ref" | "chunked" | "scan" | "mamba_ssm".

    Returns:
        y (B, L, H, P) in x's dtype [, final state (B, H, P, N) in the compute dtype].
    """
    _check(x, dt, A, B, C, chunk_size, initial_state)
    choice = _dispatch.select("ssd", backend, x.device, x.dtype)
    if choice == "scan" and backend == "auto" and B.shape[-1] > SCAN_MAX_STATE:
        choice = "chunked"
    if choice == "ref":
        return ref.ssd(x, dt, A, B, C, chunk_size, initial_state, return_final_state)
    if choice == "scan":
        return ssd_scan(x, dt, A, B, C, chunk_size, initial_state, return_final_state)
    if choice == "mamba_ssm":
        return _dispatch.extra_kernel("ssd", "mamba_ssm", x.device)(
            x, dt, A.float(), B, C, chunk_size, initial_states=initial_state, return_final_states=return_final_state
        )
    return ssd_chunked(x, dt, A, B, C, chunk_size, initial_state, return_final_state)
