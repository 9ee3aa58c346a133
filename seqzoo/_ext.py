"""Loads the compiled extension ``seqzoo._C`` once and says what it provides.

Importing ``seqzoo._C`` runs the extension's static initialisers, which register the ops
under ``torch.ops.seqzoo``. If the extension was not built (or fails to load), seqzoo
still imports; the op dispatchers fall back to the references with one warning.
"""

from __future__ import annotations

import torch

BUILD_HINT = (
    "build it with `pip install --no-build-isolation -e .` from the seqzoo checkout "
    "(torch installed first), or `python setup.py build_ext --inplace`"
)

_loaded: bool | None = None
_error: str | None = None
_kernels: dict[tuple[str, str], bool] = {}


def available() -> bool:
    """True when ``seqzoo._C`` is importable (its ops are then registered)."""
    global _loaded, _error
    if _loaded is None:
        try:
            from seqzoo import _C  # noqa: F401
        except Exception as e:  # ImportError, or an ABI mismatch surfacing as OSError
            _loaded, _error = False, f"{type(e).__name__}: {e}"
        else:
            _loaded = True
    return _loaded


def load_error() -> str | None:
    """Why the extension did not load (None when it did, or was not tried yet)."""
    available()
    return _error


@torch.compiler.assume_constant_result
def has_kernel(op: str, device_type: str) -> bool:
    """True when ``torch.ops.seqzoo.<op>`` has a kernel for ``device_type`` ("cpu"/"cuda").
    Asked of the dispatcher once per (op, device type): the answer cannot change after the
    extension loaded, and the lookup costs more than a decode step's small ops. A constant
    for ``torch.compile`` (the dispatcher query is no tensor op: it would break the graph)."""
    hit = _kernels.get((op, device_type))
    if hit is not None:
        return hit
    if not available():
        return False
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return False
    try:
        found = torch._C._dispatch_has_kernel_for_dispatch_key(f"seqzoo::{op}", key)
    except RuntimeError:  # op not registered at all
        found = False
    _kernels[(op, device_type)] = found
    return found
