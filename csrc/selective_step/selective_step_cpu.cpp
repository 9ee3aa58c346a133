// CPU kernel of the fused Mamba step: one token through the whole block (Gu & Dao 2023,
// "Mamba", Fig. 3; Algorithm 2 with L = 1, the recurrence eq. (2a)-(2b)).
// Spec: seqzoo/ops/selective_step/ref.py.
//
// Why a fused step: decoding calls the block once per token and layer with batch 1, where
// the arithmetic is a few matrix-vector products and ~E*N multiply-adds. As ~15 separate
// tensor ops each call pays dispatch and allocation (microseconds) for nanoseconds of work;
// here the three projections are matrix-vector products that read each weight once
// (csrc/gemv.h: its own loop for up to 4 batch rows, BLAS beyond) and everything between
// them is two passes over the E channels, every intermediate in one scratch buffer:
//   in_proj(x) -> (xi, z)   (B, 2E)
//   pass 1, per channel e:  the conv over [conv_state, xi] (W taps), silu -> u_e, and the
//                           shifted conv state;
//   x_proj(u) -> (Δ̃, B, C)  one matrix-vector product (it needs all of u);
//   pass 2, per channel e:  Δ_e = softplus(<dt_proj_e, Δ̃> + bias_e),
//                           h_e = exp(Δ_e A_e) ⊙ h_e + Δ_e u_e B  (N-vector, vectorised
//                           over n with vmath::exp), y_e = <h_e, C> + D_e u_e, y_e silu(z_e);
//   out_proj(y).
// Single-threaded: at batch 1 a block's step is ~10 µs of arithmetic and a weight read of
// ~1.6 MB (d_model 256), less than waking threads costs.
#include <cmath>

#include "gemv.h"
#include "selective_step/selective_step.h"
#include "vec_math.h"

namespace seqzoo {

namespace {

// TORCH_CHECK formats its message only when the check fails: a decode step must not pay
// for building strings.
#define SEQZOO_STEP_CHECK(cond, ...) TORCH_CHECK(cond, "seqzoo::selective_step: ", __VA_ARGS__)

void check_inputs(const at::Tensor& x, const at::Tensor& conv_state, const at::Tensor& ssm_state,
                  const at::Tensor& in_w, const c10::optional<at::Tensor>& in_b, const at::Tensor& conv_w,
                  const c10::optional<at::Tensor>& conv_b, const at::Tensor& xproj_w, const at::Tensor& dtproj_w,
                  const at::Tensor& dt_bias, const at::Tensor& A, const at::Tensor& D, const at::Tensor& out_w,
                  const c10::optional<at::Tensor>& out_b) {
  const auto dtype = x.scalar_type();
  SEQZOO_STEP_CHECK(dtype == at::kFloat || dtype == at::kDouble, "the CPU kernel takes float32 or float64, got ", dtype);
  SEQZOO_STEP_CHECK(x.dim() == 2 && A.dim() == 2, "x must be (B, Dm) and A (E, N)");
  const int64_t B = x.size(0), Dm = x.size(1), E = A.size(0), N = A.size(1);
  SEQZOO_STEP_CHECK(conv_w.dim() == 2 && conv_w.size(0) == E, "conv_weight must be (E, W)");
  SEQZOO_STEP_CHECK(dtproj_w.dim() == 2 && dtproj_w.size(1) >= 1, "dt_proj_weight must be (E, R)");
  const int64_t W = conv_w.size(1), R = dtproj_w.size(1);
  auto want = [&](const at::Tensor& t, at::IntArrayRef shape, const char* name) {
    SEQZOO_STEP_CHECK(t.sizes() == shape, name, " has shape ", t.sizes(), ", expected ", shape);
    SEQZOO_STEP_CHECK(t.scalar_type() == dtype, name, " must have x's dtype ", dtype, ", got ", t.scalar_type());
    SEQZOO_STEP_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  };
  want(conv_state, {B, E, W - 1}, "conv_state");
  want(ssm_state, {B, E, N}, "ssm_state");
  want(in_w, {2 * E, Dm}, "in_proj_weight");
  if (in_b) want(*in_b, {2 * E}, "in_proj_bias");
  want(conv_w, {E, W}, "conv_weight");
  if (conv_b) want(*conv_b, {E}, "conv_bias");
  want(xproj_w, {R + 2 * N, E}, "x_proj_weight");
  want(dtproj_w, {E, R}, "dt_proj_weight");
  want(dt_bias, {E}, "dt_bias");
  want(A, {E, N}, "A");
  want(D, {E}, "D");
  want(out_w, {Dm, E}, "out_proj_weight");
  if (out_b) want(*out_b, {Dm}, "out_proj_bias");
}

template <typename T>
void mix(int64_t B, int64_t E, int64_t W, const T* xz, const T* cs, const T* cw, const T* cb, T* u, T* new_cs) {
  // pass 1: conv over the window [conv_state, xi], silu; the state shifts by one input
  for (int64_t b = 0; b < B; ++b) {
    const T* xi = xz + b * 2 * E;
    const T* s = cs + b * E * (W - 1);
    T* ns = new_cs + b * E * (W - 1);
    T* ub = u + b * E;
#pragma omp simd
    for (int64_t e = 0; e < E; ++e) {
      T acc = cb ? cb[e] : T(0);
      for (int64_t k = 0; k < W - 1; ++k) acc += cw[e * W + k] * s[e * (W - 1) + k];
      acc += cw[e * W + W - 1] * xi[e];
      ub[e] = acc * vmath::sigmoid(acc);
    }
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t k = 0; k + 1 < W - 1; ++k) ns[e * (W - 1) + k] = s[e * (W - 1) + k + 1];
      if (W > 1) ns[e * (W - 1) + W - 2] = xi[e];
    }
  }
}

// pass 2: Δ, the state update and the gated output. The per-channel scalars (Δ, Δu, the
// gate) in loops vectorised over the channels, then the N-vector update per channel
// vectorised over n. `work` holds 2E values.
template <typename T>
void scan(int64_t B, int64_t E, int64_t N, int64_t R, const T* xz, const T* u, const T* xdbl, const T* dtw,
          const T* dtb, const T* A, const T* Dv, const T* h0, T* h, T* y, T* work) {
  T* dt = work;
  T* gate = work + E;
  for (int64_t b = 0; b < B; ++b) {
    const T* dlow = xdbl + b * (R + 2 * N);
    const T* Bv = dlow + R;
    const T* Cv = Bv + N;
    const T* z = xz + b * 2 * E + E;
    const T* ub = u + b * E;
    for (int64_t e = 0; e < E; ++e) {
      T acc = T(0);
#pragma omp simd reduction(+ : acc)
      for (int64_t r = 0; r < R; ++r) acc += dtw[e * R + r] * dlow[r];
      dt[e] = acc + dtb[e];
    }
#pragma omp simd
    for (int64_t e = 0; e < E; ++e) {
      dt[e] = vmath::softplus(dt[e]);
      gate[e] = z[e] * vmath::sigmoid(z[e]);
    }
    const T* hp = h0 + b * E * N;
    T* hn = h + b * E * N;
    T* yb = y + b * E;
    for (int64_t e = 0; e < E; ++e) {
      const T d = dt[e], du = d * ub[e];
      const T* a = A + e * N;
      T acc = T(0);
#pragma omp simd reduction(+ : acc)
      for (int64_t n = 0; n < N; ++n) {
        const T v = vmath::exp(d * a[n]) * hp[e * N + n] + du * Bv[n];
        hn[e * N + n] = v;
        acc += v * Cv[n];
      }
      yb[e] = (acc + Dv[e] * ub[e]) * gate[e];
    }
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_step_cpu(
    const at::Tensor& x, const at::Tensor& conv_state, const at::Tensor& ssm_state,
    const at::Tensor& in_proj_weight, const c10::optional<at::Tensor>& in_proj_bias,
    const at::Tensor& conv_weight, const c10::optional<at::Tensor>& conv_bias,
    const at::Tensor& x_proj_weight, const at::Tensor& dt_proj_weight, const at::Tensor& dt_bias,
    const at::Tensor& A, const at::Tensor& D, const at::Tensor& out_proj_weight,
    const c10::optional<at::Tensor>& out_proj_bias) {
  check_inputs(x, conv_state, ssm_state, in_proj_weight, in_proj_bias, conv_weight, conv_bias, x_proj_weight,
               dt_proj_weight, dt_bias, A, D, out_proj_weight, out_proj_bias);
  const int64_t B = x.size(0), E = A.size(0), N = A.size(1), W = conv_weight.size(1);
  const int64_t R = dt_proj_weight.size(1);
  const int64_t Dm = x.size(1), Dout = out_proj_weight.size(0);
  const auto xc = x.contiguous();
  const auto in_w = in_proj_weight.contiguous();
  const auto in_b = in_proj_bias ? in_proj_bias->contiguous() : at::Tensor();
  const auto xp_w = x_proj_weight.contiguous();
  const auto out_w = out_proj_weight.contiguous();
  const auto out_b = out_proj_bias ? out_proj_bias->contiguous() : at::Tensor();
  const auto cs = conv_state.contiguous();
  const auto cw = conv_weight.contiguous();
  const auto h0 = ssm_state.contiguous();
  const auto dtw = dt_proj_weight.contiguous();
  const auto dtb = dt_bias.contiguous();
  const auto Ac = A.contiguous();
  const auto Dc = D.contiguous();
  const auto cb = conv_bias ? conv_bias->contiguous() : at::Tensor();
  auto out = at::empty({B, Dout}, x.options());
  auto new_cs = at::empty({B, E, W - 1}, x.options());
  auto h = at::empty({B, E, N}, x.options());
  // scratch, one allocation: xz (B, 2E), u (B, E), x_proj's output (B, R+2N), y (B, E), 2E
  auto work = at::empty({B * (4 * E + R + 2 * N) + 2 * E}, x.options());
  int64_t off = 0;
  auto take = [&](int64_t rows, int64_t cols) {
    auto t = work.narrow(0, off, rows * cols).view({rows, cols});
    off += rows * cols;
    return t;
  };
  auto xz = take(B, 2 * E), u = take(B, E), xdbl = take(B, R + 2 * N), y = take(B, E), scratch = take(1, 2 * E);
  linear_rows_out(xz, xc, in_w, in_b);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "selective_step_cpu", [&] {
    using T = scalar_t;
    mix<T>(B, E, W, xz.const_data_ptr<T>(), cs.const_data_ptr<T>(), cw.const_data_ptr<T>(),
           cb.defined() ? cb.const_data_ptr<T>() : nullptr, u.mutable_data_ptr<T>(), new_cs.mutable_data_ptr<T>());
  });
  linear_rows_out(xdbl, u, xp_w, at::Tensor());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "selective_step_cpu", [&] {
    using T = scalar_t;
    scan<T>(B, E, N, R, xz.const_data_ptr<T>(), u.const_data_ptr<T>(), xdbl.const_data_ptr<T>(),
            dtw.const_data_ptr<T>(), dtb.const_data_ptr<T>(), Ac.const_data_ptr<T>(), Dc.const_data_ptr<T>(),
            h0.const_data_ptr<T>(), h.mutable_data_ptr<T>(), y.mutable_data_ptr<T>(), scratch.mutable_data_ptr<T>());
  });
  linear_rows_out(out, y, out_w, out_b);
  return {out, new_cs, h};
}

}  // namespace seqzoo
