"""torch.library glue of the compiled diagonal scan: fake kernels and autograd.

The schema and the CPU/CUDA kernels are registered in C++ (csrc/diag_scan/bindings.cpp);
this module is imported only when the extension loaded. Fake kernels return new contiguous
tensors, as the real ones do, whatever the inputs' strides.
"""

from __future__ import annotations

import torch


@torch.library.register_fake("seqzoo::diag_scan")
def _diag_scan_fake(a, b, h0):
    torch._check(b.dim() == 3 and a.dim() == 3, lambda: "diag_scan: a and b must be 3-D")
    torch._check(a.dtype == b.dtype, lambda: "diag_scan: a and b dtypes differ")
    return b.new_empty(b.shape)


@torch.library.register_fake("seqzoo::diag_scan_backward")
def _diag_scan_backward_fake(a, h, grad_h, h0):
    return h.new_empty(h.shape), h.new_empty(h.shape), h.new_empty(h.shape[0], h.shape[2])


def _setup_context(ctx, inputs, output):
    a, _b, h0 = inputs
    ctx.save_for_backward(a, output, h0)
    ctx.has_h0 = h0 is not None


def _backward(ctx, grad_h):
    a, h, h0 = ctx.saved_tensors
    grad_a, grad_b, grad_h0 = torch.ops.seqzoo.diag_scan_backward(a, h, grad_h, h0)
    grad_a = grad_a.sum_to_size(a.shape) if ctx.needs_input_grad[0] else None
    grad_b = grad_b if ctx.needs_input_grad[1] else None
    grad_h0 = grad_h0 if ctx.has_h0 and ctx.needs_input_grad[2] else None
    return grad_a, grad_b, grad_h0


torch.library.register_autograd("seqzoo::diag_scan", _backward, setup_context=_setup_context)
