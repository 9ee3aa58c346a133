#pragma once
#include <ATen/ATen.h>

namespace seqzoo {

// y (B, O) = x (B, I) weight(O, I)ᵀ + bias (O,)?: the linear layers of a decode step (a few
// rows), spec: seqzoo/ops/matvec/ref.py. float32 or float64, every tensor of x's dtype;
// returns a new contiguous tensor.
at::Tensor matvec_cpu(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias);

}  // namespace seqzoo
