"""Whether code is being traced into a graph rather than run eagerly.

Under ``torch.compile`` (Dynamo tracing) or while a CUDA graph is captured, Python must not
branch on tensor *values*: ``bool(t.any())``, ``int(t.max())``, ``float(t)``, ``.item()``,
``.tolist()`` break a compiled graph (or make it data-dependent) and fail a capture (they
synchronise with the device). seqzoo's layers and ops use such reads only as eager-mode
shortcuts (skip work no row needs) or input checks, and take a branch-free path with the
same result when :func:`is_tracing` says so.
"""

from __future__ import annotations

import torch

__all__ = ["is_tracing"]


def is_tracing() -> bool:
    """True while ``torch.compile`` traces or a CUDA graph is being captured."""
    if torch.compiler.is_compiling():
        return True
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
