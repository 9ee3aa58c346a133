"""Dropout with one mask per (sequence, channel), shared along the sequence.

S4's ``DropoutNd`` (state-spaces/s4 ``src/models/nn/dropout.py``; like ``nn.Dropout1d``
for channels-last inputs) and S5's ``nn.Dropout(broadcast_dims=[0])`` over (L, H): for
x (B, L, *) the mask has shape (B, 1, *), so a channel is either kept at every position
of a sequence or dropped at all of them. On a (B, D) input (one recurrent step) there is
no sequence to tie along and the mask is per element.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TiedDropout", "tie_dropouts"]


class TiedDropout(nn.Dropout):
    """x (B, L, *) -> x · mask / (1 - p), mask (B, 1, *) ~ Bernoulli(1 - p) in training."""

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if not self.training or self.p == 0.0:
            return x
        shape = (x.shape[0], 1, *x.shape[2:]) if x.dim() >= 3 else x.shape
        keep = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


def tie_dropouts(module: nn.Module) -> nn.Module:
    """Replace every plain ``nn.Dropout`` inside ``module`` by a :class:`TiedDropout` of the
    same rate (in place; returns ``module``). Every registered layer applies its
    ``nn.Dropout`` modules to (B, L, ·) tensors, which is what tying assumes."""
    for name, child in list(module.named_children()):
        if type(child) is nn.Dropout:
            setattr(module, name, TiedDropout(child.p))
        else:
            tie_dropouts(child)
    return module
