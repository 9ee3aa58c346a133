#pragma once
#include <ATen/ATen.h>

namespace seqzoo {

// Causal depthwise conv1d, spec: seqzoo/ops/causal_conv1d/ref.py. Shapes:
//   x (B, D, L), weight (D, W), bias (D,), initial_states (B, D, W-1): the W-1 inputs before x
//   y_t = bias + sum_k weight_k * xp_{t+k},  xp = [initial_states | x]  (B, D, W-1+L)
//   out = silu(y) if `silu` else y ;  final_states = the last W-1 columns of xp.
// Returns (out (B, D, L), final_states (B, D, W-1)).
std::tuple<at::Tensor, at::Tensor> causal_conv1d_fwd_cpu(const at::Tensor& x,
                                                         const at::Tensor& weight,
                                                         const c10::optional<at::Tensor>& bias,
                                                         const c10::optional<at::Tensor>& initial,
                                                         bool silu);

// (dx, dweight, dbias, dinitial_states) given dout (B, D, L) and, optionally, the gradient
// of final_states (B, D, W-1). dbias is (D,) even without a bias; dinitial is (B, D, W-1).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> causal_conv1d_bwd_cpu(
    const at::Tensor& dout, const c10::optional<at::Tensor>& dfinal, const at::Tensor& x,
    const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& initial, bool silu);

// Shape, dtype and device checks shared by the CPU and CUDA kernels. The CPU kernel takes
// float32/float64 with every tensor in x's dtype; with `reduced_precision` (CUDA) x and
// initial_states may also be float16/bfloat16, with weight and bias in x's dtype or float32.
void check_causal_conv1d_inputs(const at::Tensor& x, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias,
                                const c10::optional<at::Tensor>& initial, bool reduced_precision);

}  // namespace seqzoo
