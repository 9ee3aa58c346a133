"""torch.library glue of the compiled fused Mamba step: its fake kernel.

The schema and the CPU kernel are registered in C++ (csrc/selective_step/); this module is
imported only when the extension loaded. The fake kernel returns new contiguous tensors, as
the real one does.

No autograd formula is registered, on purpose: a Python autograd kernel sits in front of
every call (~40 µs, more than the step's arithmetic), and the op exists for decoding. The
public function runs the reference whenever a gradient is needed (its autograd is the
step's exact derivative), the compiled kernel otherwise.
"""

from __future__ import annotations

import torch


@torch.library.register_fake("seqzoo::selective_step")
def _selective_step_fake(x, conv_state, ssm_state, in_proj_weight, in_proj_bias, conv_weight, conv_bias,
                         x_proj_weight, dt_proj_weight, dt_bias, A, D, out_proj_weight, out_proj_bias):
    torch._check(x.dim() == 2 and A.dim() == 2, lambda: "selective_step: x (B, Dm), A (E, N)")
    return (x.new_empty(x.shape[0], out_proj_weight.shape[0]), conv_state.new_empty(conv_state.shape),
            ssm_state.new_empty(ssm_state.shape))
