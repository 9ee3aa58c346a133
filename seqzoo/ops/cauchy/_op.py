"""torch.library glue of the compiled Cauchy kernel: fake kernels and autograd.

The schema and the CPU/CUDA kernels are registered in C++ (csrc/cauchy/bindings.cpp); this
module is imported only when the extension loaded. The backward is its own compiled op
(first order only: a second derivative through it raises). Fake kernels return new
contiguous tensors, as the real ones do, whatever the inputs' strides.
"""

from __future__ import annotations

import torch


@torch.library.register_fake("seqzoo::cauchy")
def _cauchy_fake(v, z, w, conj):
    torch._check(v.dim() == 2 and w.shape == v.shape and z.dim() == 1, lambda: "cauchy: bad shapes")
    torch._check(v.dtype == z.dtype == w.dtype, lambda: "cauchy: dtypes differ")
    return v.new_empty(v.shape[0], z.shape[0])


@torch.library.register_fake("seqzoo::cauchy_backward")
def _cauchy_backward_fake(grad, v, z, w, conj, need_z):
    return v.new_empty(v.shape), w.new_empty(w.shape), z.new_empty(z.shape)


def _setup_context(ctx, inputs, output):
    v, z, w, conj = inputs
    ctx.save_for_backward(v, z, w)
    ctx.conj = conj


def _backward(ctx, grad):
    v, z, w = ctx.saved_tensors
    need_z = ctx.needs_input_grad[1]
    gv, gw, gz = torch.ops.seqzoo.cauchy_backward(grad, v, z, w, ctx.conj, need_z)
    return (
        gv if ctx.needs_input_grad[0] else None,
        gz if need_z else None,
        gw if ctx.needs_input_grad[2] else None,
        None,
    )


torch.library.register_autograd("seqzoo::cauchy", _backward, setup_context=_setup_context)
