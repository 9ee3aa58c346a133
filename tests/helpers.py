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


def compiled_backend(op: str, device: str) -> str:
    """The backend name of seqzoo's compiled kernel of ``op`` on ``device`` ("cpp" on cpu,
    "cuda" on cuda), for tests that compare it against the reference. Skips the test when
    the extension has no such kernel: not built, or built without CUDA (or without a CUDA
    kernel for this op)."""
    from seqzoo import _ext
    from seqzoo.ops._dispatch import compiled_name

    if not _ext.has_kernel(op, device):
        if not _ext.available():
            pytest.skip("seqzoo._C not built")
        pytest.skip(f"seqzoo._C has no {device} kernel for {op}")
    return compiled_name(device)
