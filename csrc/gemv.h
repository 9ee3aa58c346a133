// y (B, O) = x (B, I) Wᵀ (+ bias): the matrix-vector products of a decode step.
//
// At batch 1 a step's projections read their weights once and do one multiply-add per
// weight, so their cost is the read. BLAS (MKL's sgemv) reaches about half of what the
// cache delivers at these sizes (a 1024 x 256 matrix: ~43 µs against ~23 µs to stream it)
// and its speed depends on what ran before it; this loop streams four rows of W at a time
// (four independent vector accumulators over the shared x, which stays in L1) and, for
// B > 1, reuses the four rows from L1 for every batch row. Summation order differs from
// BLAS only by rounding.
#pragma once

#include <cstdint>

namespace seqzoo {

template <typename T>
void gemv(int64_t B, int64_t O, int64_t I, const T* x, const T* W, const T* bias, T* y) {
  int64_t o = 0;
  for (; o + 4 <= O; o += 4) {
    const T* w0 = W + o * I;
    const T* w1 = w0 + I;
    const T* w2 = w1 + I;
    const T* w3 = w2 + I;
    for (int64_t b = 0; b < B; ++b) {
      const T* xb = x + b * I;
      T a0 = T(0), a1 = T(0), a2 = T(0), a3 = T(0);
#pragma omp simd reduction(+ : a0, a1, a2, a3)
      for (int64_t i = 0; i < I; ++i) {
        a0 += w0[i] * xb[i];
        a1 += w1[i] * xb[i];
        a2 += w2[i] * xb[i];
        a3 += w3[i] * xb[i];
      }
      T* yb = y + b * O + o;
      yb[0] = bias ? a0 + bias[o] : a0;
      yb[1] = bias ? a1 + bias[o + 1] : a1;
      yb[2] = bias ? a2 + bias[o + 2] : a2;
      yb[3] = bias ? a3 + bias[o + 3] : a3;
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

}  // namespace seqzoo
