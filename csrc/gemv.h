// y (B, O) = x (B, I) Wᵀ (+ bias): the matrix-vector products of a decode step.
//
// At batch 1 a step's projections read their weights once and do one multiply-add per
// weight, so their cost is the read. This loop streams four rows of W at a time (four
// independent vector accumulators over the shared x, which stays in L1) and, for B > 1,
// uses each loaded weight for two batch rows. Measured against BLAS (MKL's sgemv, which
// perf shows in its generic "def" code path on this project's AMD CPUs) by
// `python -m bench.matvec`: equal at one row (both stream at what the memory delivers),
// 1.2-1.5x faster at 2-4 rows (MKL's time grows with the rows: 1.8x at two), slower
// beyond, where linear_rows_out hands over to BLAS's blocked product. Summation order
// differs from BLAS only by rounding.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace seqzoo {

template <typename T>
inline void store4(T* y, const T* bias, T a0, T a1, T a2, T a3) {
  y[0] = bias ? a0 + bias[0] : a0;
  y[1] = bias ? a1 + bias[1] : a1;
  y[2] = bias ? a2 + bias[2] : a2;
  y[3] = bias ? a3 + bias[3] : a3;
}

template <typename T>
void gemv(int64_t B, int64_t O, int64_t I, const T* x, const T* W, const T* bias, T* y) {
  int64_t o = 0;
  for (; o + 4 <= O; o += 4) {
    const T* w0 = W + o * I;
    const T* w1 = w0 + I;
    const T* w2 = w1 + I;
    const T* w3 = w2 + I;
    int64_t b = 0;
    for (; b + 2 <= B; b += 2) {  // two batch rows: 8 accumulators, each weight load used twice
      const T* xb = x + b * I;
      const T* xc = xb + I;
      T a0 = T(0), a1 = T(0), a2 = T(0), a3 = T(0), c0 = T(0), c1 = T(0), c2 = T(0), c3 = T(0);
#pragma omp simd reduction(+ : a0, a1, a2, a3, c0, c1, c2, c3)
      for (int64_t i = 0; i < I; ++i) {
        a0 += w0[i] * xb[i];
        a1 += w1[i] * xb[i];
        a2 += w2[i] * xb[i];
        a3 += w3[i] * xb[i];
        c0 += w0[i] * xc[i];
        c1 += w1[i] * xc[i];
        c2 += w2[i] * xc[i];
        c3 += w3[i] * xc[i];
      }
      store4(y + b * O + o, bias ? bias + o : nullptr, a0, a1, a2, a3);
      store4(y + (b + 1) * O + o, bias ? bias + o : nullptr, c0, c1, c2, c3);
    }
    for (; b < B; ++b) {
      const T* xb = x + b * I;
      T a0 = T(0), a1 = T(0), a2 = T(0), a3 = T(0);
#pragma omp simd reduction(+ : a0, a1, a2, a3)
      for (int64_t i = 0; i < I; ++i) {
        a0 += w0[i] * xb[i];
        a1 += w1[i] * xb[i];
        a2 += w2[i] * xb[i];
        a3 += w3[i] * xb[i];
      }
      store4(y + b * O + o, bias ? bias + o : nullptr, a0, a1, a2, a3);
    }
  }
  for (; o < O; ++o) {
    const T* w = W + o * I;
    for (int64_t b = 0; b < B; ++b) {
      const T* xb = x + b * I;
      T a = T(0);
#pragma omp simd reduction(+ : a)
      for (int64_t i = 0; i < I; ++i) a += w[i] * xb[i];
      y[b * O + o] = bias ? a + bias[o] : a;
    }
  }
}

constexpr int64_t kGemvMaxRows = 4;

// out (B, O) = x (B, I) wᵀ + b (b undefined: none); x, w, b and out contiguous, of one
// floating dtype. The matrix-vector loop above for up to kGemvMaxRows rows, BLAS beyond.
inline void linear_rows_out(at::Tensor& out, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const int64_t B = x.size(0);
  if (B > kGemvMaxRows) {
    if (b.defined())
      at::addmm_out(out, b, x, w.t());
    else
      at::mm_out(out, x, w.t());
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "seqzoo_gemv", [&] {
    gemv<scalar_t>(B, w.size(0), w.size(1), x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                   b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, out.mutable_data_ptr<scalar_t>());
  });
}

}  // namespace seqzoo
