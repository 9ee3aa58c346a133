"""The layout rule of the compiled (B, D, L) sequence kernels (selective scan, causal conv),
for their fake kernels: csrc/common.h's ``channel_last`` / ``empty_in_layout_of``.

A (B, D, L) tensor is "channel-last" when its channels are contiguous (a transposed view of a
(B, L, D) tensor: stride 1 over D, not over L). The CPU kernels allocate an output in the
layout of an input, so Mamba's transposed projections go through without copies; the CUDA
kernels return contiguous tensors.
"""

from __future__ import annotations

from torch import Tensor


def channel_last(t: Tensor) -> bool:
    return t.stride(1) == 1 and t.stride(2) != 1


def empty_in_layout_of(like: Tensor, B: int, D: int, L: int) -> Tensor:
    """An empty (B, D, L) tensor in ``like``'s layout on a CPU, contiguous elsewhere."""
    if like.device.type == "cpu" and channel_last(like):
        return like.new_empty(B, L, D).transpose(1, 2)
    return like.new_empty(B, D, L)
