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
