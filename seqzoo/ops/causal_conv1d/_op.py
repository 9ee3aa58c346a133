"""torch.library glue of the compiled causal depthwise conv1d: fake kernels and autograd.

The schema and the CPU kernels are registered in C++ (csrc/causal_conv1d/); this module
is imported only when the extension loaded. The CPU kernels read x and the output's gradient
through their strides and write out and dx in x's layout (a transposed view of Mamba's
(B, L, E) projection stays channel-last); the CUDA kernels return contiguous tensors.
"""

from __future__ import annotations

import torch

from seqzoo.ops._layout import empty_in_layout_of


@torch.library.register_fake("seqzoo::causal_conv1d")
def _causal_conv1d_fake(x, weight, bias, initial_states, silu):
    torch._check(x.dim() == 3 and weight.dim() == 2, lambda: "causal_conv1d: x (B, D, L), weight (D, W)")
    B, D, L = x.shape
    return empty_in_layout_of(x, B, D, L), x.new_empty(B, D, weight.shape[1] - 1)


@torch.library.register_fake("seqzoo::causal_conv1d_backward")
def _causal_conv1d_backward_fake(dout, dfinal, x, weight, bias, initial_states, silu):
    B, D, L = x.shape
    W = weight.shape[1]
    return empty_in_layout_of(x, B, D, L), x.new_empty(D, W), x.new_empty(D), x.new_empty(B, D, W - 1)


def _setup_context(ctx, inputs, output):
    x, weight, bias, initial_states, silu = inputs
    ctx.save_for_backward(x, weight, bias, initial_states)
    ctx.silu = silu


def _backward(ctx, dout, dfinal):
    x, weight, bias, initial_states = ctx.saved_tensors
    if dout is None:
        dout = torch.zeros_like(x)
    dx, dw, db, dinit = torch.ops.seqzoo.causal_conv1d_backward(dout, dfinal, x, weight, bias, initial_states, ctx.silu)
    need = ctx.needs_input_grad
    return (
        dx if need[0] else None,
        dw if need[1] else None,
        db if bias is not None and need[2] else None,
        dinit if initial_states is not None and need[3] else None,
        None,
    )


torch.library.register_autograd("seqzoo::causal_conv1d", _backward, setup_context=_setup_context)
