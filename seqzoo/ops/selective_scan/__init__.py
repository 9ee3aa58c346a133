"""Selective scan, the S6 layer of Mamba (spec: :mod:`.ref`), with ``mamba_ssm``'s signature.

Backends (chosen in :mod:`seqzoo.ops._dispatch`):
    "cpp"        seqzoo's fused CPU kernel (csrc/selective_scan/): the N-vector state stays
                 in a local array while it walks L, parallel over (batch, channel); never a
                 (B, D, L, N) tensor. The backward recomputes states chunk by chunk from
                 checkpoints taken every ``CHECKPOINT_CHUNK`` steps.
    "cuda"       seqzoo's own CUDA kernel, when the extension was built with CUDA.
    "mamba_ssm"  ``mamba_ssm``'s CUDA kernel (the ``cuda`` extra), preferred by ``auto`` on a
                 GPU when it imports. It has no initial state: with ``initial_state`` given,
                 ``auto`` uses seqzoo's CUDA kernel (or the reference) instead.
    "ref"        the loop reference.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from seqzoo import _ext
from seqzoo.ops import _dispatch
from seqzoo.ops._checks import check_real_tensors
from seqzoo.ops.selective_scan import ref

if _ext.available():
    from seqzoo.ops.selective_scan import _op  # noqa: F401  (registers fake + autograd)

__all__ = ["selective_scan", "CHECKPOINT_CHUNK"]

log = logging.getLogger("seqzoo")

# Steps between the states the forward keeps for the backward: memory B*D*N*L/64 values.
CHECKPOINT_CHUNK = 64

MAMBA_SSM_INSTALL = (
    "pip install --no-build-isolation mamba-ssm (or seqzoo[cuda]) on a machine with a CUDA toolkit, "
    "torch installed first: the wheel must be built against the torch you run (a mismatched one "
    "imports but has no kernel)"
)


def _load_mamba_ssm():
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn


def _probe_mamba_ssm(fn, device: torch.device) -> None:
    """A tiny call on ``device``, checked against the reference (catches a missing compiled
    module behind an importable interface, and a kernel that runs but is wrong)."""
    g = torch.Generator().manual_seed(0)
    Bsz, Dm, N, L = 1, 4, 4, 16
    args = [torch.randn(Bsz, Dm, L, generator=g), torch.rand(Bsz, Dm, L, generator=g),
            -torch.rand(Dm, N, generator=g) - 0.5, torch.randn(Bsz, N, L, generator=g),
            torch.randn(Bsz, N, L, generator=g), torch.randn(Dm, generator=g), torch.randn(Bsz, Dm, L, generator=g)]
    u, delta, A, B, C, D, z = (t.to(device) for t in args)
    got = fn(u, delta, A, B, C, D, z, None, True, False)
    want = ref.selective_scan(u, delta, A, B, C, D, z, None, True)
    err = float((got.float() - want).abs().max() / want.abs().max())
    if not err < 1e-3:
        raise RuntimeError(f"its output differs from the reference by {err:.1e} (relative)")


_dispatch.register_extra_backend(
    "selective_scan", "mamba_ssm", ("cuda",), _load_mamba_ssm, probe=_probe_mamba_ssm, preferred=True,
    package="mamba_ssm", install=MAMBA_SSM_INSTALL, dtypes=(torch.float32, torch.float16, torch.bfloat16),
)


def _check(u, delta, A, B, C, D, z, delta_bias, initial_state) -> None:
    named = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, initial_state=initial_state)
    for name, t in named.items():
        if isinstance(t, Tensor) and t.is_complex():
            raise TypeError(f"selective_scan: {name} is complex; this op is the real selective scan (real A, B, C)")
    check_real_tensors("selective_scan", named)
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (B, D, L), got shape {tuple(u.shape)}")
    Bsz, Dm, L = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta must have u's shape (B, D, L) = {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != Dm:
        raise ValueError(f"selective_scan: A must be (D, N) with D = {Dm}, got shape {tuple(A.shape)}")
    N = A.shape[1]
    for name, m in (("B", B), ("C", C)):
        ok = (m.dim() == 3 and m.shape == (Bsz, N, L)) or (m.dim() == 4 and m.shape[0] == Bsz and m.shape[2:] == (N, L))
        if not ok:
            raise ValueError(
                f"selective_scan: {name} must be (B, N, L) = {(Bsz, N, L)} or grouped (B, G, N, L) = "
                f"{(Bsz, 'G', N, L)}, got shape {tuple(m.shape)} (input-independent (D, N) {name} is not supported)"
            )
    if B.dim() != C.dim() or (B.dim() == 4 and B.shape[1] != C.shape[1]):
        raise ValueError(f"selective_scan: B {tuple(B.shape)} and C {tuple(C.shape)} must have the same layout and groups")
    if B.dim() == 4 and Dm % B.shape[1]:
        raise ValueError(f"selective_scan: the number of groups G = {B.shape[1]} must divide D = {Dm}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (Dm,):
            raise ValueError(f"selective_scan: {name} must be (D,) = ({Dm},), got shape {tuple(t.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"selective_scan: z must have u's shape (B, D, L) = {tuple(u.shape)}, got {tuple(z.shape)}")
    if initial_state is not None and tuple(initial_state.shape) != (Bsz, Dm, N):
        raise ValueError(
            f"selective_scan: initial_state must be (B, D, N) = {(Bsz, Dm, N)}, got shape {tuple(initial_state.shape)}"
        )


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    *,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """The selective scan (Mamba, Algorithm 2), signature of ``mamba_ssm``'s ``selective_scan_fn``.

    Per batch row and channel d (N-vector state h, Δ = softplus?(delta + delta_bias)):
    ``h_t = exp(Δ_t A_d) ⊙ h_{t-1} + Δ_t u_t B_t``, ``y_t = <C_t, h_t> + D_d u_t``,
    ``out_t = y_t · silu(z_t)``.

    Args:
        u: (B, D, L).  delta: (B, D, L).  A: (D, N), real.
        B, C: (B, N, L), or grouped (B, G, N, L) with G dividing D (channel d uses group
            d // (D / G)).
        D: (D,) skip.  z: (B, D, L) gate.  delta_bias: (D,).  delta_softplus: apply softplus.
        initial_state: (B, D, N), the state before the first step (zeros if None).
        return_final_state: also return the state after the last step.
        backend: "auto" | "ref" | "cpp" | "cuda" | "mamba_ssm".

    Returns:
        out (B, D, L) in u's dtype, or ``(out, final_state)`` with final_state (B, D, N) in
        the compute dtype (float32, or float64 for float64 inputs). Arithmetic runs in at
        least float32 (fp16/bf16 inputs are upcast).
    """
    _check(u, delta, A, B, C, D, z, delta_bias, initial_state)
    choice = _dispatch.select("selective_scan", backend, u.device, u.dtype)
    if choice == "mamba_ssm" and initial_state is not None:
        if backend == "mamba_ssm":
            raise ValueError("selective_scan: backend='mamba_ssm' has no initial_state; use backend='auto' or 'cuda'")
        choice = "cuda" if _ext.has_kernel("selective_scan", "cuda") else "ref"
        log.info("seqzoo.ops.selective_scan: initial_state given, mamba_ssm has none: using %s", choice)
    if choice == "ref":
        return ref.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_final_state)
    if choice == "mamba_ssm":
        return _dispatch.extra_kernel("selective_scan", "mamba_ssm", u.device)(
            u, delta, A.float(), B, C, D if D is None else D.float(), z,
            delta_bias if delta_bias is None else delta_bias.float(), delta_softplus, return_final_state,
        )

    args = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    dtype = torch.float32
    for t in args:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    u_, delta_, A_, B_, C_, D_, z_, bias_, h0_ = (None if t is None else t.to(dtype) for t in args)
    # The CPU kernels read u, delta, z through their strides (Mamba passes transposed views of
    # its (B, L, E) projections) and write out in z's layout (_op.py); the CUDA kernels take
    # contiguous rows.
    if u.device.type != "cpu":
        u_, delta_, z_ = (None if t is None else t.contiguous() for t in (u_, delta_, z_))
    if B_.dim() == 3:  # (B, N, L) -> one group
        B_, C_ = B_.unsqueeze(1), C_.unsqueeze(1)
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args)
    chunk = CHECKPOINT_CHUNK if need_grad else 0
    out, last, _ = torch.ops.seqzoo.selective_scan(u_, delta_, A_, B_, C_, D_, z_, bias_, h0_, delta_softplus, chunk)
    out = out.to(u.dtype)
    return (out, last) if return_final_state else out
