#pragma once
#include <ATen/ATen.h>

namespace seqzoo {

// One token through the whole Mamba block (the fused decode step), spec:
// seqzoo/ops/selective_step/ref.py. Shapes (E inner channels, N state size, W conv width,
// R the rank of the Δ projection, Dm the model width):
//   x (B, Dm), conv_state (B, E, W-1), ssm_state (B, E, N),
//   in_proj_weight (2E, Dm), in_proj_bias (2E,)?, conv_weight (E, W), conv_bias (E,)?,
//   x_proj_weight (R+2N, E), dt_proj_weight (E, R), dt_bias (E,), A (E, N), D (E,),
//   out_proj_weight (Dm, E), out_proj_bias (Dm,)?
// Returns (out (B, Dm), new conv_state (B, E, W-1), new ssm_state (B, E, N)); the inputs are
// not modified. Every tensor is float32, or every tensor float64 (the Python wrapper sends
// anything else, e.g. autocast's bf16 projections, to the reference).
std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_step_cpu(
    const at::Tensor& x, const at::Tensor& conv_state, const at::Tensor& ssm_state,
    const at::Tensor& in_proj_weight, const c10::optional<at::Tensor>& in_proj_bias,
    const at::Tensor& conv_weight, const c10::optional<at::Tensor>& conv_bias,
    const at::Tensor& x_proj_weight, const at::Tensor& dt_proj_weight, const at::Tensor& dt_bias,
    const at::Tensor& A, const at::Tensor& D, const at::Tensor& out_proj_weight,
    const c10::optional<at::Tensor>& out_proj_bias);

}  // namespace seqzoo
