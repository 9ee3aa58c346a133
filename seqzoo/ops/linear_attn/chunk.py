"""Chunked parallel form of causal linear attention (spec: :mod:`.ref`).

The sequence is cut into chunks of C steps. Inside a chunk the pairs are formed
quadratically (a masked C × C matmul, decays applied through cumulative log-decays);
across chunks only the state S (K × V per head) travels. With b the inclusive
cumulative log-decay inside chunk n and S_n the state entering it:

    o_t     = (q_t kᵀ ⊙ D) v  +  e^{b_t} q_t S_n              (intra + inter, t in chunk n)
    S_{n+1} = e^{b_C} S_n + Σ_s e^{b_C - b_s} k_s v_sᵀ        (the chunk-level recurrence)

All factors are ≤ 1, so no exponential can overflow. The intra parts of all chunks are one
batched matmul; the recurrence over the L/C chunks is a short loop of small matmuls that
carries a single state. Cost: about 4·L·C·K + 4·L·K·V flops per head
(the chunkwise form of GLA, Yang et al. 2024) instead of 2·L²·K.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from seqzoo.ops.diag_scan import diag_scan
from seqzoo.ops.linear_attn._common import check_inputs


def chunk(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    decay: float | Tensor | None = None,
    normalize: bool = True,
    initial_state: Tensor | None = None,
    output_final_state: bool = True,
    chunk_size: int = 64,
    eps: float = 1e-6,
) -> tuple[Tensor, Tensor | None]:
    """Causal linear attention, chunked.

    Args:
        q, k: feature-mapped queries and keys (B, H, L, K).
        v: values (B, H, L, V).
        decay: None, a float, an (H,) tensor or a (B, H, L) tensor of γ in (0, 1]:
            S_t = γ_t S_{t-1} + k_t v_tᵀ.
        normalize: divide by q_t·z_t + eps (z_t = Σ decayed k_s); needs non-negative features.
        initial_state: (B, H, K, V), or (B, H, K, V + 1) when normalising (last column z).
        output_final_state: also return the state after the last step.
        chunk_size: C, the length of the quadratic blocks (any positive int; L need not be
            a multiple of it).
        eps: added to the denominator.

    Returns:
        ``(o (B, H, L, V), final_state or None)``; the final state has the initial state's shape.
    """
    g = check_inputs("linear_attn.chunk", q, k, v, decay, normalize, initial_state, chunk_size)
    B, H, L, K = q.shape
    if normalize:
        v = torch.cat([v, v.new_ones(B, H, L, 1)], dim=-1)  # the ones column accumulates z
    Vp = v.shape[-1]
    if L == 0:
        final = initial_state if initial_state is not None else q.new_zeros(B, H, K, Vp)
        return q.new_zeros(B, H, 0, Vp - int(normalize)), final if output_final_state else None

    C = min(chunk_size, L)
    pad = -L % C
    if pad:  # zero keys and unit decay on the padding: the state does not change there
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        if g is not None:
            g = F.pad(g.expand(-1, -1, L), (0, pad))
    qc, kc, vc = (rearrange(t, "b h (n c) d -> b h n c d", c=C) for t in (q, k, v))  # (B, H, N, C, *)
    N = qc.shape[2]
    tril = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    scores = qc @ kc.transpose(-1, -2)  # (B, H, N, C, C)
    if g is None:
        o = scores.masked_fill_(~tril, 0.0) @ vc  # intra-chunk (in place: a fresh matmul output)
        a_end = None
    else:
        b = rearrange(g.expand(-1, -1, L + pad), "b h (n c) -> b h n c", c=C).cumsum(-1)  # (B|1, H|1, N, C)
        b_end = b[..., -1:]  # (., ., N, 1): the whole chunk's log-decay
        D = torch.exp((b[..., :, None] - b[..., None, :]).masked_fill(~tril, float("-inf")))  # (., ., N, C, C)
        o = (scores * D) @ vc
        qc = qc * torch.exp(b)[..., None]  # e^{b_t} q_t
        kc = kc * torch.exp(b_end - b)[..., None]  # e^{b_C - b_s} k_s
        a_end = torch.exp(b_end)[..., None]  # (., ., N, 1, 1)
    # inter-chunk: every chunk's contribution U_n = Σ_s e^{b_C - b_s} k_s v_sᵀ in one batched
    # matmul, then the states between chunks by a scan over the N chunks,
    # S_n = a_n S_{n-1} + U_n (a cumulative sum without decay, the compiled diagonal scan
    # with one), and every chunk's queries against the state before it in one more matmul.
    U = kc.transpose(-1, -2) @ vc  # (B, H, N, K, V')
    S0 = initial_state.to(U.dtype) if initial_state is not None else U.new_zeros(B, H, K, Vp)
    if a_end is None:
        S_after = U.cumsum(2)
        if initial_state is not None:
            S_after += S0[:, :, None]
    else:
        a = a_end.expand(B, H, N, 1, 1).reshape(B * H, N, 1, 1)
        S_after = diag_scan(a.to(U.dtype), U.reshape(B * H, N, K, Vp), S0.reshape(B * H, K, Vp))[0].view(B, H, N, K, Vp)
    S_before = torch.cat([S0[:, :, None], S_after[:, :, :-1]], dim=2)  # the state each chunk starts from
    o = torch.baddbmm(o.flatten(0, 2), qc.flatten(0, 2), S_before.flatten(0, 2)).view(o.shape)
    final = S_after[:, :, -1]
    o = rearrange(o, "b h n c d -> b h (n c) d")[:, :, :L]
    if normalize:
        o = o[..., :-1] / (o[..., -1:] + eps)
    return o, final if output_final_state else None
