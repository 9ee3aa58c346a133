"""Input checks shared by every form of the linear-attention op (chunk, recurrent, ref),
so that all three accept and reject exactly the same arguments."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from seqzoo.tracing import is_tracing

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_inputs(
    where: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    decay: float | Tensor | None,
    normalize: bool,
    initial_state: Tensor | None,
    chunk_size: int,
) -> Tensor | None:
    """Validate the op's arguments; return the log-decay broadcastable to (B, H, L) or None.

    Shapes: q, k (B, H, L, K); v (B, H, L, V); initial_state (B, H, K, V), or
    (B, H, K, V + 1) when ``normalize`` (the last column is the normaliser z).
    decay: a float, an (H,) tensor (one per head) or a (B, H, L) tensor (one per step),
    with values in (0, 1].
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{where}: {name} must be (B, H, L, {'V' if name == 'v' else 'K'}), got shape {tuple(t.shape)}")
        if t.dtype not in _FLOATS:
            raise TypeError(f"{where}: {name} must be floating point, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{where}: {name} is on {t.device} but q is on {q.device}")
    if q.shape != k.shape:
        raise ValueError(f"{where}: q and k must have the same shape (B, H, L, K), got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"{where}: v must be (B, H, L, V) with the (B, H, L) of q = {tuple(q.shape[:3])}, got {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{where}: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{where}: chunk_size must be a positive int, got {chunk_size!r}")
    B, H, L, K = q.shape
    V = v.shape[-1]
    if initial_state is not None:
        want = (B, H, K, V + 1) if normalize else (B, H, K, V)
        if not isinstance(initial_state, Tensor) or tuple(initial_state.shape) != want:
            got = tuple(initial_state.shape) if isinstance(initial_state, Tensor) else type(initial_state).__name__
            extra = " (the last column is the normaliser z, because normalize=True)" if normalize else ""
            raise ValueError(f"{where}: initial_state must be (B, H, K, {'V + 1' if normalize else 'V'}) = {want}{extra}, got {got}")
        if initial_state.device != q.device:
            raise ValueError(f"{where}: initial_state is on {initial_state.device} but q is on {q.device}")
    return _log_decay(where, decay, B, H, L, q)


def _log_decay(where: str, decay, B: int, H: int, L: int, q: Tensor) -> Tensor | None:
    if decay is None:
        return None
    if isinstance(decay, (int, float)) and not isinstance(decay, bool):
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"{where}: decay must lie in (0, 1], got {decay}")
        return torch.full((1, 1, 1), math.log(decay), dtype=q.dtype, device=q.device)
    if not isinstance(decay, Tensor):
        raise TypeError(f"{where}: decay must be None, a float, an (H,) or a (B, H, L) tensor, got {type(decay).__name__}")
    if decay.device != q.device:
        raise ValueError(f"{where}: decay is on {decay.device} but q is on {q.device}")
    if decay.dim() == 0:
        decay = decay.reshape(1, 1, 1)
    elif decay.dim() == 1 and decay.shape[0] == H:
        decay = decay.reshape(1, H, 1)
    elif decay.dim() == 3 and tuple(decay.shape) == (B, H, L):
        pass
    else:
        raise ValueError(
            f"{where}: decay must be a scalar, (H,) = ({H},) per head or (B, H, L) = ({B}, {H}, {L}) per step, "
            f"got shape {tuple(decay.shape)}"
        )
    if decay.numel() and not is_tracing():  # a value check: eager only (a graph cannot branch on it)
        lo, hi = float(decay.detach().min()), float(decay.detach().max())
        if not (lo > 0.0 and hi <= 1.0):
            raise ValueError(f"{where}: decay values must lie in (0, 1], got min {lo:.3g}, max {hi:.3g}")
    return torch.log(decay.to(q.dtype))
