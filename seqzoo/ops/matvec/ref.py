"""Reference (the spec) of ``matvec``: a linear layer applied to the few rows of a decode
step, ``y = x Wᵀ + b`` for x (B, I), weight (O, I), bias (O,) or None -> y (B, O). Exactly
``torch.nn.functional.linear``; the compiled kernel differs only in the order of the
sums (rounding)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def matvec(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    return F.linear(x, weight, bias)
