"""Argument checks shared by the real-valued ops: every tensor argument that is given is a
``torch.Tensor`` of a supported dtype on the device of the first one. Shapes are each op's
own business."""

from __future__ import annotations

import torch
from torch import Tensor

REAL_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_real_tensors(op: str, named: dict[str, Tensor | None]) -> None:
    """Raise a TypeError/ValueError naming ``op`` and the argument; ``None`` entries (optional
    arguments not given) are skipped. The first entry sets the device."""
    first, ref = next(iter(named.items()))
    for name, t in named.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in REAL_FLOATS:
            raise TypeError(f"{op}: {name} has dtype {t.dtype}; supported: float16, bfloat16, float32, float64")
        if t.device != ref.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first} is on {ref.device}")


def inference_kernel_takes(tensors) -> bool:
    """Whether a CPU inference kernel (no backward; float32/float64 loops) computes what its
    reference would for these tensors (``None`` entries skipped; the first sets the dtype):
    every tensor float32, or every tensor float64; no autocast (under which the reference's
    products run in the autocast dtype); no gradient needed (the reference's autograd is
    then the op's derivative)."""
    tensors = [t for t in tensors if t is not None]
    x = tensors[0]
    dtype = x.dtype
    if dtype not in (torch.float32, torch.float64) or torch.is_autocast_enabled(x.device.type):
        return False
    grad = torch.is_grad_enabled()
    return all(t.dtype == dtype and not (grad and t.requires_grad) for t in tensors)
