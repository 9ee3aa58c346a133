"""torch.library glue of the compiled ``matvec``: its fake kernel (a new contiguous
(B, O) tensor, as the CPU kernel returns). The schema and the kernel are registered in
C++ (csrc/matvec/); this module is imported only when the extension loaded."""

from __future__ import annotations

import torch


@torch.library.register_fake("seqzoo::matvec")
def _matvec_fake(x, weight, bias):
    torch._check(x.dim() == 2 and weight.dim() == 2, lambda: "matvec: x (B, I), weight (O, I)")
    torch._check(x.shape[1] == weight.shape[1], lambda: "matvec: x and weight disagree in I")
    return x.new_empty(x.shape[0], weight.shape[0])
