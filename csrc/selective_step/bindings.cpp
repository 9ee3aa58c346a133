// Schema and CPU registration of the fused Mamba step (torch.ops.seqzoo.selective_step).
// The fake kernel is registered in Python (seqzoo/ops/selective_step/_op.py); no autograd
// formula: the Python wrapper runs the reference when a gradient is needed.
#include <torch/library.h>

#include "selective_step/selective_step.h"

TORCH_LIBRARY_FRAGMENT(seqzoo, m) {
  m.def(
      "selective_step(Tensor x, Tensor conv_state, Tensor ssm_state, Tensor in_proj_weight, "
      "Tensor? in_proj_bias, Tensor conv_weight, Tensor? conv_bias, Tensor x_proj_weight, "
      "Tensor dt_proj_weight, Tensor dt_bias, Tensor A, Tensor D, Tensor out_proj_weight, "
      "Tensor? out_proj_bias) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(seqzoo, CPU, m) { m.impl("selective_step", &seqzoo::selective_step_cpu); }
