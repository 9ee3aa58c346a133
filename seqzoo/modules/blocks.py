"""Block-aligned streaming: helpers for layers whose attention pattern is tied to absolute
blocks of R tokens (block-diagonal attention, FLASH's chunks, Transformer-VQ's blocks).

Such a layer's state holds the tokens of its current, partial block (a buffer of R slots,
the first ``n_buf[b]`` in use). A parallel forward that continues from the state prepends
those buffered tokens to the new ones, so that index 0 of the result is a block start for
every row; the blocks can then be processed as whole (B, N, R, ...) tensors. Rows may hold
different numbers of buffered tokens (after a forward with ``lengths``), so the splice is a
per-row gather (a plain concatenation when nothing is buffered). Every length here follows
from shapes, never from the buffered counts, so ``torch.compile`` traces the layers without
graph breaks. Time is dim 1 throughout.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["splice", "unsplice", "take_rows", "padded_length"]


def padded_length(L: int, block: int, buffered: bool) -> int:
    """Length T of :func:`splice`'s result: L new tokens after up to ``block - 1`` buffered
    ones (``buffered``) or none, rounded up to whole blocks (at least one).

    A bound from shapes alone, not from the buffered counts: the counts are data, and a
    length read from them (``int(n_buf.max())``) would make the shapes data-dependent, which
    ``torch.compile`` cannot trace without breaking the graph. The bound costs at most one
    block of zeros more than the exact length."""
    longest = L + (block - 1 if buffered else 0)
    return max(1, -(-longest // block)) * block


def splice(buf: Tensor, n_buf: Tensor | None, new: Tensor, block: int) -> Tensor:
    """Put each row's buffered tokens in front of its new ones, zero-padded to whole blocks.

    buf (B, R, *) with rows [0, n_buf[b]) in use; n_buf (B,) long, or None when nothing is
    buffered (a forward without a state); new (B, L, *) -> (B, T, *) with E[b, i] = buf[b, i]
    for i < n_buf[b], new[b, i - n_buf[b]] for the next L positions, and zeros after;
    T = :func:`padded_length`.
    """
    B, R = buf.shape[:2]
    L = new.shape[1]
    T = padded_length(L, block, n_buf is not None)
    if n_buf is None:  # nothing buffered: the new tokens, then zeros to whole blocks
        return new if T == L else torch.cat([new, new.new_zeros(B, T - L, *new.shape[2:])], dim=1)
    src = torch.cat([buf.to(new.dtype), new, new.new_zeros(B, 1, *new.shape[2:])], dim=1)  # row R + L is zero
    i = torch.arange(T, device=new.device)[None, :]  # (1, T)
    nb = n_buf[:, None]
    idx = torch.where(i < nb, i, R + i - nb)
    idx = torch.where(i >= nb + L, R + L, idx)  # (B, T)
    return src[torch.arange(B, device=new.device)[:, None], idx]


def unsplice(E: Tensor, n_buf: Tensor | None, L: int) -> Tensor:
    """The positions of the new tokens again: E (B, T, *) -> (B, L, *), rows E[b, n_buf[b] + r]
    (rows [0, L) when n_buf is None)."""
    if n_buf is None:
        return E[:, :L]
    idx = n_buf[:, None] + torch.arange(L, device=E.device)[None, :]  # (B, L)
    return E[torch.arange(E.shape[0], device=E.device)[:, None], idx]


def take_rows(E: Tensor, start: Tensor, n: int, keep: Tensor | None = None, fill=0) -> Tensor:
    """n consecutive rows per batch entry: E (B, T, *), start (B,) -> (B, n, *) holding
    E[b, start[b] + j]; rows past the end of E, or with j >= keep[b], are set to ``fill``."""
    B, T = E.shape[:2]
    j = torch.arange(n, device=E.device)[None, :]  # (1, n)
    idx = start[:, None] + j  # (B, n)
    ok = idx < T
    if keep is not None:
        ok = ok & (j < keep[:, None])
    out = E[torch.arange(B, device=E.device)[:, None], idx.clamp(max=max(T - 1, 0))]
    mask = ok.view(B, n, *([1] * (E.dim() - 2)))
    return torch.where(mask, out, torch.as_tensor(fill, dtype=E.dtype, device=E.device))
