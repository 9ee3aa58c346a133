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

Backends: "chunked" (the algorithm above in PyTorch, CPU or GPU; what ``auto`` uses),
"mamba_ssm" (``mamba_chunk_scan_combined``, preferred by ``auto`` on a GPU when it
imports), "ref" (the loop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from seqzoo.ops import _dispatch
from seqzoo.ops._checks import check_real_tensors
from seqzoo.ops.selective_scan import MAMBA_SSM_INSTALL
from seqzoo.ops.ssd import ref

__all__ = ["ssd", "ssd_chunked"]

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


def segsum(a: Tensor) -> Tensor:
    """a (..., T) -> (..., T, T) with out[i, j] = Σ_{j<k<=i} a_k for i >= j and -inf above the
    diagonal, so that exp(out) is the decay from step j to step i. Built from a cumulative
    sum of masked copies rather than s_i - s_j, which would cancel digits."""
    T = a.shape[-1]
    a = a[..., None, :].expand(*a.shape[:-1], T, T).transpose(-1, -2)  # a[..., i, j] = a_i
    strict = torch.ones(T, T, dtype=torch.bool, device=a.device).tril(-1)  # i > j
    s = a.masked_fill(~strict, 0).cumsum(dim=-2)
    return s.masked_fill(~torch.ones_like(strict).tril(), float("-inf"))


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
    """The chunked SSD algorithm in PyTorch; shapes as :func:`ssd`."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    for t in (dt, A, B, C, initial_state):
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    Bsz, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    Q = chunk_size
    pad = (-L) % Q
    # Δ = 0 on the padding: decay 1 and no input, so outputs and final state are unchanged
    x_, dt_, B_, C_ = (F.pad(t.to(dtype), (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
    x_ = rearrange(x_, "b (c q) (g r) p -> b c q g r p", q=Q, g=G)
    dt_ = rearrange(dt_, "b (c q) (g r) -> b g r c q", q=Q, g=G)
    B_ = rearrange(B_, "b (c q) g n -> b c q g n", q=Q)
    C_ = rearrange(C_, "b (c q) g n -> b c q g n", q=Q)
    dA = dt_ * rearrange(A.to(dtype), "(g r) -> g r 1 1", g=G)  # (b, g, r, c, q) log-decays
    dA_cs = dA.cumsum(-1)

    # 1. diagonal blocks: (C_i · B_j) e^{s_i - s_j} Δ_j x_j for j <= i
    decay = torch.exp(segsum(dA))  # (b, g, r, c, q, q)
    scores = torch.einsum("bcign,bcjgn->bcgij", C_, B_)  # (b, c, g, q, q)
    y = torch.einsum("bcgij,bgrcij,bgrcj,bcjgrp->bcigrp", scores, decay, dt_, x_)

    # 2. each chunk's contribution to the state at its end
    to_end = torch.exp(dA_cs[..., -1:] - dA_cs) * dt_  # (b, g, r, c, q)
    states = torch.einsum("bcjgn,bgrcj,bcjgrp->bcgrpn", B_, to_end, x_)  # (b, c, g, r, p, n)

    # 3. recurrence across chunks: S_in[c] is the state before chunk c
    if initial_state is None:
        S = x_.new_zeros(Bsz, G, H // G, P, N)
    else:
        S = rearrange(initial_state.to(dtype), "b (g r) p n -> b g r p n", g=G)
    chunk_decay = torch.exp(dA_cs[..., -1])  # (b, g, r, c)
    S_in = []
    for decay_c, state_c in zip(chunk_decay.unbind(-1), states.unbind(1)):
        S_in.append(S)
        S = decay_c[..., None, None] * S + state_c
    S_in = torch.stack(S_in, dim=1)  # (b, c, g, r, p, n)

    # 4. off-diagonal blocks: the carried state read out by C_i, decayed to step i
    y = y + torch.einsum("bcign,bgrci,bcgrpn->bcigrp", C_, torch.exp(dA_cs), S_in)
    y = rearrange(y, "b c q g r p -> b (c q) (g r) p")[:, :L].to(x.dtype)
    if not return_final_state:
        return y
    return y, rearrange(S, "b g r p n -> b (g r) p n")


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
        backend: "auto" | "ref" | "chunked" | "mamba_ssm".

    Returns:
        y (B, L, H, P) in x's dtype [, final state (B, H, P, N) in the compute dtype].
    """
    _check(x, dt, A, B, C, chunk_size, initial_state)
    choice = _dispatch.select("ssd", backend, x.device, x.dtype)
    if choice == "ref":
        return ref.ssd(x, dt, A, B, C, chunk_size, initial_state, return_final_state)
    if choice == "mamba_ssm":
        return _dispatch.extra_kernel("ssd", "mamba_ssm", x.device)(
            x, dt, A.float(), B, C, chunk_size, initial_states=initial_state, return_final_states=return_final_state
        )
    return ssd_chunked(x, dt, A, B, C, chunk_size, initial_state, return_final_state)
