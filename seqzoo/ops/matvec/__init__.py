"""``matvec`` (spec: :mod:`.ref`): a linear layer over the few rows of a decode step,
``x (B, I) -> x Wᵀ + b (B, O)``.

A batch-1 step reads each weight once and does one multiply-add with it, so a decode
step's linear layers cost their weight read. The compiled kernel (csrc/matvec/, the loop of
csrc/gemv.h) streams the weight rows once for up to 4 rows of x. ``F.linear`` (MKL) matches
it at one row, but its time grows with the rows (two rows: 1.8x one row's), so at 2-4 rows
the kernel is 1.2-1.5x faster (``python -m bench.matvec``); in a 4-layer Mamba language
model with MLPs a batch-1 decode step got 1.10x faster (docs/benchmarks.md).

Backends (chosen in :mod:`seqzoo.ops._dispatch`):
    "cpp"  seqzoo's CPU kernel: float32 or float64, all of one dtype, no gradient needed,
           no autocast. It runs its own loop for up to 4 rows and hands more to BLAS,
           whose blocked product wins there; ``auto`` sends more than 4 rows to
           ``F.linear`` directly (the same BLAS call, without the op's dispatch).
    "ref"  ``torch.nn.functional.linear``: every other case (GPU, gradients, autocast's
           low-precision products, more than 4 rows), without a fallback warning: it is
           the intended path there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqzoo import _ext
from seqzoo.ops import _dispatch
from seqzoo.ops._checks import check_real_tensors, inference_kernel_takes
from seqzoo.ops.matvec import ref

if _ext.available():
    from seqzoo.ops.matvec import _op  # noqa: F401  (registers the fake kernel)

__all__ = ["matvec", "run"]

_KERNEL_ROWS = 4  # csrc/gemv.h's kGemvMaxRows: beyond it the kernel itself calls BLAS


def matvec(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, backend: str = "auto") -> Tensor:
    """``F.linear(x, weight, bias)`` for x (B, I), weight (O, I), bias (O,) or None -> (B, O),
    through the compiled kernel where it is the faster path (see the module docstring).

    backend: "auto" | "ref" | "cpp" ("cpp" refuses inputs it does not take, with the reason).
    """
    check_real_tensors("matvec", {"x": x, "weight": weight, "bias": bias})
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"matvec: x must be (B, I) and weight (O, I) with the same I, got x {tuple(x.shape)} and "
                         f"weight {tuple(weight.shape)}; for a sequence (B, L, I) use F.linear")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"matvec: bias must be (O,) = ({weight.shape[0]},), got {tuple(bias.shape)}")
    return run(x, weight, bias, backend)


def run(x: Tensor, weight: Tensor, bias: Tensor | None = None, backend: str = "auto") -> Tensor:
    """:func:`matvec` on already checked arguments: what a layer's step calls per token."""
    if backend == "auto" and (x.shape[0] > _KERNEL_ROWS or not _ext.has_kernel("matvec", x.device.type)):
        return ref.matvec(x, weight, bias)
    choice = _dispatch.select("matvec", backend, x.device, x.dtype)
    if choice == "cpp" and not inference_kernel_takes((x, weight, bias)):
        if backend == "cpp":
            raise ValueError(
                "matvec: backend='cpp' takes float32 or float64 tensors, all of one dtype, outside autocast and "
                f"without gradients (got x {x.dtype}, weight {weight.dtype}); use backend='auto', which runs "
                "F.linear for those"
            )
        choice = "ref"
    if choice == "ref":
        return ref.matvec(x, weight, bias)
    return torch.ops.seqzoo.matvec(x, weight, bias)
