// CPU kernels of the causal depthwise conv1d that precedes the SSM in Mamba's block
// (Gu & Dao 2023, Fig. 3: "Conv" before the selective SSM; H3's "shift" conv).
//
// Spec: seqzoo/ops/causal_conv1d/ref.py. Per batch row b and channel d, with the W-1
// carried inputs in front of the row, xp = [initial_states | x] of length W-1+L:
//   y_t = bias + sum_{k<W} weight_k xp_{t+k}     (xp_{t+W-1} = x_t: the tap k = W-1 is "now")
//   out_t = silu(y_t) if requested ;   final_states = xp[L : L+W-1] (the last W-1 inputs)
//
// One task per (b, d) row: the row is gathered once into a padded buffer, then every tap
// is a contiguous multiply-add over t (vectorised). The backward is the transposed
// convolution of dy plus per-row dot products for dweight, summed over the batch after.
// x and dout are read through their strides, and out and dx are written in x's layout:
// rows contiguous, or channels contiguous for a transposed view of a (B, L, D) tensor
// (Mamba's projection), which then goes through without a transposed copy either way.
// When x (and dout) have their channels contiguous, the kernels run over blocks of
// channels in the vector lanes instead of over rows (a row would be a strided gather):
// the same arithmetic per value in the same order, so out, dx and the initial states'
// gradient are the same numbers; dweight and dbias are sums over t in another order.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "causal_conv1d/causal_conv1d.h"
#include "common.h"
#include "dynamic_parallel.h"
#include "vec_math.h"

namespace seqzoo {

namespace {

// Rows (b, d) per task: enough work that threads are not woken for a few steps (a single
// decoding step runs on the calling thread).
inline int64_t rows_grain(int64_t L, int64_t W) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, (L + W) * W));
}

// g * silu'(y) = g * s * (1 + y (1 - s)), s = sigmoid(y): the gradient of silu at y
template <typename T>
inline T silu_backward(T y, T g) {
  const T s = vmath::sigmoid(y);
  return g * s * (T(1) + y * (T(1) - s));
}

// A (B, D, L) tensor read or written through its strides.
template <typename T>
struct Rows {
  T* p = nullptr;
  int64_t sb = 0, sd = 0, sl = 0, dim = 1;
  T* row(int64_t row) const { return p + (row / dim) * sb + (row % dim) * sd; }  // row = b * D + d
};

template <typename T>
Rows<T> rows_of(const at::Tensor& t) {
  return {t.data_ptr<std::remove_const_t<T>>(), t.stride(0), t.stride(1), t.stride(2), t.size(1)};
}

template <typename T>
struct ConvArgs {
  Rows<const T> x;   // (B, D, L)
  const T* weight;   // (D, W)
  const T* bias;     // (D,) or null
  const T* initial;  // (B, D, W-1) or null
  int64_t batch, dim, len, width;
  bool silu;

  // xp = [initial | x] for row (b, d) into `xp` (W-1+L values)
  void load_row(int64_t row, T* xp) const {
    const int64_t P = width - 1;
    if (initial) {
      std::copy(initial + row * P, initial + row * P + P, xp);
    } else {
      std::fill(xp, xp + P, T(0));
    }
    const T* xr = x.row(row);
    for (int64_t t = 0; t < len; ++t) xp[P + t] = xr[t * x.sl];
  }

  // y[t] = bias + sum_k w_k xp[t+k], before the activation
  void conv_row(int64_t d, const T* xp, T* y) const {
    const T* w = weight + d * width;
    const T b0 = bias ? bias[d] : T(0);
    std::fill(y, y + len, b0);
    for (int64_t k = 0; k < width; ++k) {
      const T wk = w[k];
      const T* src = xp + k;
#pragma omp simd
      for (int64_t t = 0; t < len; ++t) y[t] += wk * src[t];
    }
  }
};

template <typename T>
void forward_kernel(const ConvArgs<T>& a, const Rows<T>& out, T* final_states) {
  const int64_t L = a.len, P = a.width - 1;
  parallel_jobs(a.batch * a.dim, rows_grain(L, a.width), [&](auto next_row) {
    std::vector<T> xp(P + L), yv(L);
    for (int64_t row; (row = next_row()) >= 0;) {  // row = b * D + d
      const int64_t d = row % a.dim;
      a.load_row(row, xp.data());
      T* y = yv.data();
      a.conv_row(d, xp.data(), y);
      if (a.silu) {
#pragma omp simd
        for (int64_t t = 0; t < L; ++t) y[t] *= vmath::sigmoid(y[t]);
      }
      T* o = out.row(row);
      for (int64_t t = 0; t < L; ++t) o[t * out.sl] = y[t];
      std::copy(xp.data() + L, xp.data() + L + P, final_states + row * P);
    }
  });
}

template <typename T>
void backward_kernel(const ConvArgs<T>& a, const Rows<const T>& dout, const T* dfinal, const Rows<T>& dx,
                     T* dinitial, T* dw_part, T* db_part) {
  const int64_t L = a.len, W = a.width, P = W - 1;
  parallel_jobs(a.batch * a.dim, rows_grain(L, a.width), [&](auto next_row) {
    std::vector<T> xp(P + L), dxp(P + L), dy(L), gov(L);
    for (int64_t row; (row = next_row()) >= 0;) {
      const int64_t d = row % a.dim;
      const T* w = a.weight + d * W;
      const T* gor = dout.row(row);
      for (int64_t t = 0; t < L; ++t) gov[t] = gor[t * dout.sl];
      const T* go = gov.data();
      a.load_row(row, xp.data());
      if (a.silu) {  // dy = dout * silu'(y), y recomputed
        a.conv_row(d, xp.data(), dy.data());
#pragma omp simd
        for (int64_t t = 0; t < L; ++t) {
          dy[t] = silu_backward(dy[t], go[t]);
        }
      } else {
        std::copy(go, go + L, dy.data());
      }
      // d xp: the final states are xp[L : L+P]; each tap scatters w_k dy_t to xp[t+k]
      std::fill(dxp.begin(), dxp.end(), T(0));
      if (dfinal) {
        for (int64_t j = 0; j < P; ++j) dxp[L + j] += dfinal[row * P + j];
      }
      for (int64_t k = 0; k < W; ++k) {
        const T wk = w[k];
        T* dst = dxp.data() + k;
        T acc = T(0);
        const T* src = xp.data() + k;
#pragma omp simd reduction(+ : acc)
        for (int64_t t = 0; t < L; ++t) {
          dst[t] += wk * dy[t];
          acc += dy[t] * src[t];  // d weight_k
        }
        dw_part[row * W + k] = acc;
      }
      T db = T(0);
#pragma omp simd reduction(+ : db)
      for (int64_t t = 0; t < L; ++t) db += dy[t];
      db_part[row] = db;
      std::copy(dxp.data(), dxp.data() + P, dinitial + row * P);
      T* dxr = dx.row(row);
      for (int64_t t = 0; t < L; ++t) dxr[t * dx.sl] = dxp[P + t];
    }
  });
}


// ---- channels contiguous: x[b, d, t] at x.p + b * sb + t * sl + d (sd == 1)
//
// One job per (b, block of kChannelBlock channels); a block's inputs are copied to xp
// (P + L, n) and its pre-activations live in (L, n), so every inner loop runs over n
// contiguous channels (a compile-time n for full blocks, NB = kChannelBlock).

constexpr int64_t kChannelBlock = 64;

// (W, D) copy of the (D, W) taps: tap k of consecutive channels is contiguous
template <typename T>
std::vector<T> taps_by_channel(const T* weight, int64_t D, int64_t W) {
  std::vector<T> wt(W * D);
  for (int64_t d = 0; d < D; ++d)
    for (int64_t k = 0; k < W; ++k) wt[k * D + d] = weight[d * W + k];
  return wt;
}

template <typename T>
struct Block {
  const ConvArgs<T>& a;
  const T* wt;  // (W, D)
  int64_t b, d0;

  // xp (P + L, n): the W-1 carried inputs of channels d0.., then x
  template <int64_t NB>
  void load(int64_t n_rt, T* xp) const {
    const int64_t n = NB > 0 ? NB : n_rt, P = a.width - 1, D = a.dim;
    for (int64_t i = 0; i < P; ++i) {
      T* dst = xp + i * n;
      for (int64_t j = 0; j < n; ++j) dst[j] = a.initial ? a.initial[(b * D + d0 + j) * P + i] : T(0);
    }
    const T* xb = a.x.p + b * a.x.sb + d0;
    for (int64_t t = 0; t < a.len; ++t) {
      const T* src = xb + t * a.x.sl;
      T* dst = xp + (P + t) * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) dst[j] = src[j];
    }
  }

  // y (L, n) = bias + sum_k w_k xp[t+k], in conv_row's order
  template <int64_t NB>
  void conv(int64_t n_rt, const T* xp, T* y) const {
    const int64_t n = NB > 0 ? NB : n_rt, D = a.dim, W = a.width;
    for (int64_t t = 0; t < a.len; ++t) {
      T* yt = y + t * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) yt[j] = a.bias ? a.bias[d0 + j] : T(0);
      for (int64_t k = 0; k < W; ++k) {
        const T* wk = wt + k * D + d0;
        const T* src = xp + (t + k) * n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) yt[j] += wk[j] * src[j];
      }
    }
  }

  template <int64_t NB>
  void forward(int64_t n_rt, T* xp, T* y, const Rows<T>& out, T* final_states) const {
    const int64_t n = NB > 0 ? NB : n_rt, L = a.len, P = a.width - 1, D = a.dim;
    load<NB>(n, xp);
    conv<NB>(n, xp, y);
    T* ob = out.p + b * out.sb + d0;
    for (int64_t t = 0; t < L; ++t) {
      T* yt = y + t * n;
      T* o = ob + t * out.sl;
      if (a.silu) {
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) o[j] = yt[j] * vmath::sigmoid(yt[j]);
      } else {
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) o[j] = yt[j];
      }
    }
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < P; ++i) final_states[(b * D + d0 + j) * P + i] = xp[(L + i) * n + j];
  }

  template <int64_t NB>
  void backward(int64_t n_rt, T* xp, T* dy, T* dw, T* db, const Rows<const T>& dout, const T* dfinal,
                const Rows<T>& dx, T* dinitial, T* dw_part, T* db_part) const {
    const int64_t n = NB > 0 ? NB : n_rt, L = a.len, W = a.width, P = W - 1, D = a.dim;
    load<NB>(n, xp);
    const T* gb = dout.p + b * dout.sb + d0;
    if (a.silu) {  // dy = dout * silu'(y), y recomputed
      conv<NB>(n, xp, dy);
      for (int64_t t = 0; t < L; ++t) {
        T* dyt = dy + t * n;
        const T* go = gb + t * dout.sl;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          dyt[j] = silu_backward(dyt[j], go[j]);
        }
      }
    } else {
      for (int64_t t = 0; t < L; ++t) {
        const T* go = gb + t * dout.sl;
        T* dyt = dy + t * n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) dyt[j] = go[j];
      }
    }
    // One pass over the positions i of xp: d xp_i = [dfinal] + sum_k w_k dy_{i-k}, added in
    // the order of k (backward_kernel's), and d weight_k += dy_{i-k} xp_i, d bias += dy_i
    // (sums over t in order, per channel).
    T* dxb = dx.p + b * dx.sb + d0;
    T* acc = db + n;  // scratch (n) after db
    std::fill(dw, dw + W * n, T(0));
    std::fill(db, db + n, T(0));
    for (int64_t i = 0; i < P + L; ++i) {
      T* dxi = i < P ? acc : dxb + (i - P) * dx.sl;
      const T* xi = xp + i * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) dxi[j] = T(0);
      if (i >= L && dfinal) {
        for (int64_t j = 0; j < n; ++j) dxi[j] += dfinal[(b * D + d0 + j) * P + i - L];
      }
      for (int64_t k = 0; k < W; ++k) {
        const int64_t t = i - k;
        if (t < 0 || t >= L) continue;
        const T* wk = wt + k * D + d0;
        const T* dyt = dy + t * n;
        T* dwk = dw + k * n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          dxi[j] += wk[j] * dyt[j];
          dwk[j] += dyt[j] * xi[j];
        }
      }
      if (i < L) {
        const T* dyi = dy + i * n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) db[j] += dyi[j];
      }
      if (i < P) {
        for (int64_t j = 0; j < n; ++j) dinitial[(b * D + d0 + j) * P + i] = dxi[j];
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t k = 0; k < W; ++k) dw_part[(b * D + d0 + j) * W + k] = dw[k * n + j];
      db_part[b * D + d0 + j] = db[j];
    }
  }
};

template <typename T>
void forward_kernel_cl(const ConvArgs<T>& a, const Rows<T>& out, T* final_states) {
  const int64_t L = a.len, P = a.width - 1, D = a.dim;
  const int64_t blocks = (D + kChannelBlock - 1) / kChannelBlock;
  const auto wt = taps_by_channel(a.weight, D, a.width);
  parallel_jobs(a.batch * blocks, 1, [&](auto next_job) {
    std::vector<T> xp((P + L) * kChannelBlock), y(L * kChannelBlock);
    for (int64_t job; (job = next_job()) >= 0;) {
      const Block<T> blk{a, wt.data(), job / blocks, (job % blocks) * kChannelBlock};
      const int64_t n = std::min(kChannelBlock, D - blk.d0);
      if (n == kChannelBlock) {
        blk.template forward<kChannelBlock>(n, xp.data(), y.data(), out, final_states);
      } else {
        blk.template forward<0>(n, xp.data(), y.data(), out, final_states);
      }
    }
  });
}

template <typename T>
void backward_kernel_cl(const ConvArgs<T>& a, const Rows<const T>& dout, const T* dfinal, const Rows<T>& dx,
                        T* dinitial, T* dw_part, T* db_part) {
  const int64_t L = a.len, W = a.width, P = W - 1, D = a.dim;
  const int64_t blocks = (D + kChannelBlock - 1) / kChannelBlock;
  const auto wt = taps_by_channel(a.weight, D, W);
  parallel_jobs(a.batch * blocks, 1, [&](auto next_job) {
    std::vector<T> xp((P + L) * kChannelBlock), dy(L * kChannelBlock), dw(W * kChannelBlock),
        db(2 * kChannelBlock);
    for (int64_t job; (job = next_job()) >= 0;) {
      const Block<T> blk{a, wt.data(), job / blocks, (job % blocks) * kChannelBlock};
      const int64_t n = std::min(kChannelBlock, D - blk.d0);
      if (n == kChannelBlock) {
        blk.template backward<kChannelBlock>(n, xp.data(), dy.data(), dw.data(), db.data(), dout, dfinal, dx,
                                             dinitial, dw_part, db_part);
      } else {
        blk.template backward<0>(n, xp.data(), dy.data(), dw.data(), db.data(), dout, dfinal, dx, dinitial,
                                 dw_part, db_part);
      }
    }
  });
}

bool present(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace

void check_causal_conv1d_inputs(const at::Tensor& x, const at::Tensor& weight,
                                const c10::optional<at::Tensor>& bias,
                                const c10::optional<at::Tensor>& initial, bool reduced_precision) {
  TORCH_CHECK(x.dim() == 3, "seqzoo::causal_conv1d: x must be (B, D, L), got ", x.sizes());
  const int64_t B = x.size(0), D = x.size(1);
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == D && weight.size(1) >= 1,
              "seqzoo::causal_conv1d: weight must be (D, W) with D = ", D, " and W >= 1, got ",
              weight.sizes());
  const int64_t W = weight.size(1);
  const auto dtype = x.scalar_type();
  const bool half = dtype == at::kHalf || dtype == at::kBFloat16;
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || (reduced_precision && half),
              "seqzoo::causal_conv1d: this kernel takes x in float32 or float64",
              reduced_precision ? " (or float16/bfloat16)" : "", ", got ", dtype);
  auto same = [&](const at::Tensor& t, const char* name, at::ScalarType want) {
    TORCH_CHECK(t.scalar_type() == want, "seqzoo::causal_conv1d: ", name, " has dtype ",
                t.scalar_type(), " but ", want, " was expected (x has ", dtype, ")");
    TORCH_CHECK(t.device() == x.device(), "seqzoo::causal_conv1d: ", name, " is on ",
                t.device(), " but x is on ", x.device());
  };
  // with fp16/bf16 x, the parameters may stay float32 (a module under autocast)
  const auto wtype = half && weight.scalar_type() == at::kFloat ? at::kFloat : dtype;
  same(weight, "weight", wtype);
  if (present(bias)) {
    same(*bias, "bias", wtype);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == D, "seqzoo::causal_conv1d: bias must be (",
                D, ",), got ", bias->sizes());
  }
  if (present(initial)) {
    same(*initial, "initial_states", dtype);
    TORCH_CHECK(initial->dim() == 3 && initial->size(0) == B && initial->size(1) == D &&
                    initial->size(2) == W - 1,
                "seqzoo::causal_conv1d: initial_states must be (B, D, W-1) = (", B, ", ", D, ", ",
                W - 1, "), got ", initial->sizes());
  }
}

std::tuple<at::Tensor, at::Tensor> causal_conv1d_fwd_cpu(const at::Tensor& x_,
                                                         const at::Tensor& weight_,
                                                         const c10::optional<at::Tensor>& bias_,
                                                         const c10::optional<at::Tensor>& init_,
                                                         bool silu) {
  check_causal_conv1d_inputs(x_, weight_, bias_, init_, false);
  const int64_t B = x_.size(0), D = x_.size(1), L = x_.size(2), W = weight_.size(1);
  auto out = empty_in_layout_of(x_, B, D, L, x_.options());
  auto final_states = at::empty({B, D, W - 1}, x_.options());
  if (B * D == 0) return {out, final_states};
  const auto& x = x_;  // read through its strides
  const auto weight = weight_.contiguous();
  const auto bias = present(bias_) ? bias_->contiguous() : at::Tensor();
  const auto init = present(init_) ? init_->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv1d_fwd_cpu", [&] {
    const ConvArgs<scalar_t> args{rows_of<const scalar_t>(x), weight.data_ptr<scalar_t>(),
                                  ptr_or_null<scalar_t>(bias), ptr_or_null<scalar_t>(init),
                                  B, D, L, W, silu};
    const auto o = rows_of<scalar_t>(out);  // in x's layout (empty_in_layout_of)
    (channel_last(x) ? forward_kernel_cl<scalar_t> : forward_kernel<scalar_t>)(
        args, o, final_states.data_ptr<scalar_t>());
  });
  return {out, final_states};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> causal_conv1d_bwd_cpu(
    const at::Tensor& dout_, const c10::optional<at::Tensor>& dfinal_, const at::Tensor& x_,
    const at::Tensor& weight_, const c10::optional<at::Tensor>& bias_,
    const c10::optional<at::Tensor>& init_, bool silu) {
  check_causal_conv1d_inputs(x_, weight_, bias_, init_, false);
  const int64_t B = x_.size(0), D = x_.size(1), L = x_.size(2), W = weight_.size(1);
  TORCH_CHECK(dout_.sizes() == x_.sizes(), "seqzoo::causal_conv1d_backward: grad of out ",
              dout_.sizes(), " must have x's shape ", x_.sizes());
  if (present(dfinal_)) {
    TORCH_CHECK(dfinal_->dim() == 3 && dfinal_->size(0) == B && dfinal_->size(1) == D &&
                    dfinal_->size(2) == W - 1,
                "seqzoo::causal_conv1d_backward: grad of final_states must be (B, D, W-1), got ",
                dfinal_->sizes());
  }
  const auto opts = x_.options();
  auto dx = empty_in_layout_of(x_, B, D, L, opts);
  auto dinit = at::empty({B, D, W - 1}, opts);
  auto dw_part = at::zeros({B, D, W}, opts);
  auto db_part = at::zeros({B, D}, opts);
  if (B * D > 0) {
    const auto& x = x_;  // x and dout: read through their strides
    const auto weight = weight_.contiguous();
    const auto bias = present(bias_) ? bias_->contiguous() : at::Tensor();
    const auto init = present(init_) ? init_->contiguous() : at::Tensor();
    const auto dout = dout_.to(x.scalar_type());
    const auto dfinal =
        present(dfinal_) ? dfinal_->to(x.scalar_type()).contiguous() : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv1d_bwd_cpu", [&] {
      const ConvArgs<scalar_t> args{rows_of<const scalar_t>(x), weight.data_ptr<scalar_t>(),
                                    ptr_or_null<scalar_t>(bias), ptr_or_null<scalar_t>(init),
                                    B, D, L, W, silu};
      const bool cl = channel_last(x) && channel_last(dout);  // dx is in x's layout
      (cl ? backward_kernel_cl<scalar_t> : backward_kernel<scalar_t>)(
          args, rows_of<const scalar_t>(dout), ptr_or_null<scalar_t>(dfinal), rows_of<scalar_t>(dx),
          dinit.data_ptr<scalar_t>(),
          dw_part.data_ptr<scalar_t>(), db_part.data_ptr<scalar_t>());
    });
  }
  return {dx, dw_part.sum(0), db_part.sum(0), dinit};
}

}  // namespace seqzoo
