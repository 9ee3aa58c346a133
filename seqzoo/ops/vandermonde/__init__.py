"""Vandermonde products of diagonal SSMs (spec: :mod:`.ref`):

    vandermonde(c, log_z, L)[..., l] = 2 Re Σ_n c_n z_n^l          (the S4D kernel, eq. (6))
    vandermonde_transpose(u, log_z)[..., n] = Σ_l u_l z_n^l        (a final state)

with z = exp(log_z). The compiled kernels (csrc/vandermonde/) form the powers on the fly,
so memory is O(output), not the O(N·L) matrix of powers per row the reference builds;
they compute in double precision internally. Both are differentiable in every input (the
backward of each is the other op).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from seqzoo import _ext
from seqzoo.ops import _dispatch
from seqzoo.ops.vandermonde import ref

if _ext.available():
    from seqzoo.ops.vandermonde import _op  # noqa: F401  (registers fake + autograd)

__all__ = ["vandermonde", "vandermonde_transpose"]


def _complex_dtype(*ts: Tensor) -> torch.dtype:
    double = any(t.dtype in (torch.float64, torch.complex128) for t in ts)
    return torch.complex128 if double else torch.complex64


def _real_dtype(cdtype: torch.dtype) -> torch.dtype:
    # not ``cdtype.to_real()``: torch.compile cannot trace that method (a graph break)
    return torch.float64 if cdtype == torch.complex128 else torch.float32


def _check(name: str, **ts: Tensor) -> None:
    ref_t = next(iter(ts.values()))
    for k, t in ts.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: {k} must be a torch.Tensor, got {type(t).__name__}")
        if not (t.is_complex() or t.is_floating_point()):
            raise TypeError(f"{name}: {k} must be floating point or complex, got {t.dtype}")
        if t.dim() < 1:
            raise ValueError(f"{name}: {k} must have a last dimension, got a scalar")
        if t.device != ref_t.device:
            raise ValueError(f"{name}: {k} is on {t.device} but {next(iter(ts))} is on {ref_t.device}")


def _batch(name: str, a: Tensor, b: Tensor, what: str) -> torch.Size:
    try:
        return torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    except RuntimeError:
        raise ValueError(f"{name}: the batch dims of {what} do not broadcast: {tuple(a.shape)} vs {tuple(b.shape)}") from None


def vandermonde(c: Tensor, log_z: Tensor, L: int, *, backend: str = "auto") -> Tensor:
    """``2 Re Σ_n c[..., n] exp(l · log_z[..., n])`` for l = 0..L-1.

    Args:
        c: coefficients (..., N), complex (e.g. C ⊙ B̄ of a diagonal SSM).
        log_z: log of the nodes (..., N), complex (e.g. Δ·A under ZOH), broadcastable with c.
        L: number of powers.
        backend: "auto" | "ref" | "cpp" | "cuda".

    Returns:
        (..., L) real (float64 if any input is double precision, else float32).
    """
    _check("vandermonde", c=c, log_z=log_z)
    if c.shape[-1] != log_z.shape[-1]:
        raise ValueError(f"vandermonde: c {tuple(c.shape)} and log_z {tuple(log_z.shape)} need the same N (last dim)")
    if isinstance(L, bool) or not isinstance(L, int) or L < 0:
        raise ValueError(f"vandermonde: L must be a non-negative int, got {L!r}")
    cdtype = _complex_dtype(c, log_z)
    c, log_z = c.to(cdtype), log_z.to(cdtype)
    batch = _batch("vandermonde", c, log_z, "c and log_z")
    choice = _dispatch.select("vandermonde", backend, c.device)
    if choice == "ref":
        return ref.vandermonde(c, log_z, L)
    N, M = c.shape[-1], math.prod(batch)
    c2 = c.expand(*batch, N).reshape(M, N)
    z2 = log_z.expand(*batch, N).reshape(M, N)
    return torch.ops.seqzoo.vandermonde(c2, z2, L).view(*batch, L)


def vandermonde_transpose(u: Tensor, log_z: Tensor, *, backend: str = "auto") -> Tensor:
    """``Σ_l u[..., l] exp(l · log_z[..., n])`` for every n.

    Args:
        u: real sequence (..., L).
        log_z: log of the nodes (..., N), complex, batch dims broadcastable with u's.
        backend: "auto" | "ref" | "cpp" | "cuda".

    Returns:
        (..., N) complex.
    """
    _check("vandermonde_transpose", u=u, log_z=log_z)
    if u.is_complex():
        raise TypeError("vandermonde_transpose: u must be real (split a complex sequence into two calls)")
    cdtype = _complex_dtype(u, log_z)
    u, log_z = u.to(_real_dtype(cdtype)), log_z.to(cdtype)
    batch = _batch("vandermonde_transpose", u, log_z, "u and log_z")
    choice = _dispatch.select("vandermonde_transpose", backend, u.device)
    if choice == "ref":
        return ref.vandermonde_transpose(u, log_z)
    L, N = u.shape[-1], log_z.shape[-1]
    M = math.prod(batch)
    u2 = u.expand(*batch, L).reshape(M, L)
    z2 = log_z.expand(*batch, N).reshape(M, N)
    return torch.ops.seqzoo.vandermonde_transpose(u2, z2).view(*batch, N)
