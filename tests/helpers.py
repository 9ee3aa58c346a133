"""Test helpers: import as ``from tests.helpers import rel_err``."""

from __future__ import annotations

import pytest
import torch


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: one number for 'how far is a from the reference b'."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != {tuple(b.shape)}"
    if not a.numel():
        return 0.0
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / max(scale, 1e-30)


# Tests that compare against references take a ``device`` parameter: CUDA cases carry the
# ``cuda`` marker (``pytest -m cuda`` on a GPU machine runs them all) and skip without a GPU.
HAS_CUDA = torch.cuda.is_available()
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=(pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device"))),
]
