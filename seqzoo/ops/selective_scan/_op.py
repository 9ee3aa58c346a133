"""torch.library glue of the compiled selective scan: fake kernels and autograd.

The schema and the CPU/CUDA kernels are registered in C++ (csrc/selective_scan/); this
module is imported only when the extension loaded.

``seqzoo::selective_scan`` returns (out, last_state, checkpoints): the checkpoints are
the states at the start of every ``chunk`` steps, from which ``selective_scan_backward``
recomputes the states it needs (nothing of size (B, D, L, N) is stored).

Layouts: the CPU kernels read u, delta, z and the output's gradient through their strides
and allocate each (B, D, L) output in the layout of an input: ``out`` as z (as u without
z), du as u, ddelta as delta, dz as z, "channels contiguous" for a transposed view of a
(B, L, D) tensor (stride 1 over D, not over L), rows contiguous otherwise. The CUDA
kernels take and return contiguous tensors (the wrapper makes them so). The fake kernels
below apply the same rule (seqzoo/ops/_layout.py).
"""

from __future__ import annotations

import torch

from seqzoo.ops._layout import empty_in_layout_of


def _n_chunks(L, chunk: int):
    return (L + chunk - 1) // chunk if chunk > 0 else 0


@torch.library.register_fake("seqzoo::selective_scan")
def _selective_scan_fake(u, delta, A, B, C, D, z, delta_bias, h0, delta_softplus, chunk):
    torch._check(u.dim() == 3, lambda: "selective_scan: u must be (B, D, L)")
    torch._check(A.dim() == 2 and B.dim() == 4 and C.dim() == 4, lambda: "selective_scan: bad A/B/C rank")
    Bsz, Dm, L = u.shape
    N = A.shape[1]
    out = empty_in_layout_of(z if z is not None else u, Bsz, Dm, L)
    return out, u.new_empty(Bsz, Dm, N), u.new_empty(Bsz, Dm, _n_chunks(L, chunk), N)


@torch.library.register_fake("seqzoo::selective_scan_backward")
def _selective_scan_backward_fake(dout, dlast, u, delta, A, B, C, D, z, delta_bias, ckpt, delta_softplus, chunk):
    Bsz, Dm, L = u.shape
    N = A.shape[1]
    dz = empty_in_layout_of(z, Bsz, Dm, L) if z is not None else u.new_empty(0)
    return (
        empty_in_layout_of(u, Bsz, Dm, L),  # du
        empty_in_layout_of(delta, Bsz, Dm, L),  # ddelta
        u.new_empty(A.shape),  # dA
        u.new_empty(B.shape),  # dB
        u.new_empty(C.shape),  # dC
        u.new_empty(Dm),  # dD
        dz,
        u.new_empty(Dm),  # ddelta_bias
        u.new_empty(Bsz, Dm, N),  # dh0
    )


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, h0, delta_softplus, chunk = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])
    ctx.delta_softplus, ctx.chunk = delta_softplus, chunk
    ctx.mark_non_differentiable(output[2])


def _backward(ctx, dout, dlast, _dckpt):
    u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(u)
    du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = torch.ops.seqzoo.selective_scan_backward(
        dout, dlast, u, delta, A, B, C, D, z, delta_bias, ckpt, ctx.delta_softplus, ctx.chunk
    )
    need = ctx.needs_input_grad
    keep = lambda g, i: g if need[i] else None  # noqa: E731
    return (
        keep(du, 0),
        keep(ddelta, 1),
        keep(dA, 2),
        keep(dB, 3),
        keep(dC, 4),
        keep(dD, 5) if D is not None else None,
        keep(dz, 6) if z is not None else None,
        keep(dbias, 7) if delta_bias is not None else None,
        keep(dh0, 8),
        None,
        None,
    )


torch.library.register_autograd("seqzoo::selective_scan", _backward, setup_context=_setup_context)
