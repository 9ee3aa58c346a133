// CUDA kernels of the causal depthwise conv1d in front of Mamba's SSM (Gu & Dao 2023,
// Fig. 3). Spec: seqzoo/ops/causal_conv1d/ref.py; causal_conv1d_cpu.cpp has the same math.
//
// A block of 128 threads owns kTD = 32 channels x kTL = 128 steps of one batch row. It
// stages the inputs its outputs need, x[t0 - (W-1), t0 + kTL) with the initial states in
// front of t = 0, in shared memory. The loads are coalesced along whichever of L and D is
// x's contiguous dimension: in Mamba's block x (B, D, L) is a transposed view of a
// (B, L, D) projection and is read as it is, never copied. Each thread then computes
// outputs along t, so the stores into the contiguous (B, D, L) output are coalesced too:
// one read of x and one write of out per element, the traffic of a copy. fp16/bf16 inputs
// are read and written as such; the arithmetic is fp32 (fp64 for fp64 inputs).
//
// The one-token update is the same kernel with L = 1 (the state carries the W-1 inputs).
//
// Backward, per tile: stage x[t0 - (W-1), t0 + kTL + W - 1), form
// dy = dout * silu'(y) (y recomputed) over [t0, t0 + kTL + W - 1), then
//   dx_s = sum_k w_k dy_{s+W-1-k}  (+ dfinal for the last W-1 steps),
//   dinit_q = sum_{k<=q} w_k dy_{q-k}  (+ dfinal when L < W-1),
// and dweight_k = sum_t dy_t xp_{t+k}, dbias = sum_t dy_t accumulated per block over a
// segment of tiles, written as partials (B * segments, D, W+1) and summed after: no
// atomics, so the result does not depend on the order blocks run in.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "causal_conv1d/causal_conv1d.h"
#include "cuda/compat.cuh"

namespace seqzoo {
namespace {

using cuda::acc_t;

constexpr int kThreads = 128;
constexpr int kTD = 32;   // channels per tile
constexpr int kTL = 128;  // steps per tile
constexpr int kMaxWidth = 64;

template <typename T, typename TW>
struct ConvParams {
  const T* x;  // (B, D, L), any strides
  int64_t sx_b, sx_d, sx_l;
  const TW* weight;  // (D, W) contiguous
  const TW* bias;    // (D,) or null
  const T* initial;  // (B, D, W-1) contiguous, or null (zeros)
  int64_t batch, dim, len;
  int width;
  bool silu;
};

// tile[dd * pitch + c] = x[b, d0 + dd, tx0 + c] for c < cols: the initial states stand for
// t < 0 (tx0 >= -(W-1)); zero past the end of the row or of the channels.
template <typename T, typename TW>
__device__ void stage_x(const ConvParams<T, TW>& p, int64_t b, int64_t d0, int64_t tx0, int cols,
                        acc_t<T>* tile, int pitch) {
  using A = acc_t<T>;
  const bool d_fast = p.sx_d == 1 && p.sx_l != 1;  // channel-last view: coalesce along D
  const int P = p.width - 1;
  for (int i = threadIdx.x; i < kTD * cols; i += blockDim.x) {
    int dd, c;
    if (d_fast) {
      dd = i % kTD;
      c = i / kTD;
    } else {
      c = i % cols;
      dd = i / cols;
    }
    const int64_t d = d0 + dd, t = tx0 + c;
    A v = A(0);
    if (d < p.dim && t < p.len) {
      if (t >= 0) {
        v = cuda::load(p.x + b * p.sx_b + d * p.sx_d + t * p.sx_l);
      } else if (p.initial) {
        v = cuda::load(p.initial + (b * p.dim + d) * P + (P + t));
      }
    }
    tile[dd * pitch + c] = v;
  }
}

// wt[dd * W + k] = weight[d0 + dd, k], bt[dd] = bias[d0 + dd] (zeros past the channels)
template <typename T, typename TW>
__device__ void stage_params(const ConvParams<T, TW>& p, int64_t d0, acc_t<T>* wt, acc_t<T>* bt) {
  using A = acc_t<T>;
  const int W = p.width;
  for (int i = threadIdx.x; i < kTD * W; i += blockDim.x) {
    const int64_t d = d0 + i / W;
    wt[i] = d < p.dim ? A(cuda::load(p.weight + d * W + i % W)) : A(0);
  }
  for (int i = threadIdx.x; i < kTD; i += blockDim.x) {
    bt[i] = (p.bias && d0 + i < p.dim) ? A(cuda::load(p.bias + d0 + i)) : A(0);
  }
}

// sum_k w[k] * x[k] over the taps; kW > 0: the width is a compile-time constant
template <int kW, typename A>
__device__ __forceinline__ A taps(const A* w, const A* x, int W) {
  A y = A(0);
  if constexpr (kW > 0) {
#pragma unroll
    for (int k = 0; k < kW; ++k) y += w[k] * x[k];
  } else {
    for (int k = 0; k < W; ++k) y += w[k] * x[k];
  }
  return y;
}

template <typename T, typename TW, int kW>
__global__ void __launch_bounds__(kThreads)
    conv_fwd_kernel(ConvParams<T, TW> p, T* __restrict__ out, T* __restrict__ final_states) {
  using A = acc_t<T>;
  const int W = kW > 0 ? kW : p.width, P = W - 1;
  const int pitch = kTL + P;  // tile column c <-> x time t0 - P + c <-> xp index t0 + c
  SEQZOO_DYNAMIC_SMEM(A, smem);
  A* tile = smem;                // (kTD, pitch)
  A* wt = tile + kTD * pitch;    // (kTD, W)
  A* bt = wt + kTD * W;          // (kTD,)
  const int64_t t0 = int64_t(blockIdx.x) * kTL, d0 = int64_t(blockIdx.y) * kTD, b = blockIdx.z;
  stage_x(p, b, d0, t0 - P, pitch, tile, pitch);
  stage_params(p, d0, wt, bt);
  __syncthreads();
  for (int i = threadIdx.x; i < kTD * kTL; i += blockDim.x) {
    const int dd = i / kTL, c = i % kTL;
    const int64_t d = d0 + dd, t = t0 + c;
    if (d >= p.dim || t >= p.len) continue;
    A y = bt[dd] + taps<kW>(wt + dd * W, tile + dd * pitch + c, W);  // xp_{t+k} = column c + k
    if (p.silu) y *= cuda::sigmoid(y);
    cuda::store(out + (b * p.dim + d) * p.len + t, y);
  }
  // the last tile holds the last W-1 inputs: xp index L + j is column L + j - t0
  if (t0 + kTL >= p.len) {
    for (int i = threadIdx.x; i < kTD * P; i += blockDim.x) {
      const int dd = i / P, j = i % P;
      const int64_t d = d0 + dd;
      if (d < p.dim) cuda::store(final_states + (b * p.dim + d) * P + j, tile[dd * pitch + (p.len + j - t0)]);
    }
  }
}

template <typename T, typename TW, int kW>
__global__ void __launch_bounds__(kThreads)
    conv_bwd_kernel(ConvParams<T, TW> p, const T* __restrict__ dout, const T* __restrict__ dfinal,
                    T* __restrict__ dx, T* __restrict__ dinit, acc_t<T>* __restrict__ partial,
                    int tiles_per_seg) {
  using A = acc_t<T>;
  const int W = kW > 0 ? kW : p.width, P = W - 1;
  const int xpitch = kTL + 2 * P;  // x column c <-> x time t0 - P + c <-> xp index t0 + c
  const int gpitch = kTL + P;      // dy column c <-> time t0 + c
  SEQZOO_DYNAMIC_SMEM(A, smem);
  A* xt = smem;                  // (kTD, xpitch)
  A* gt = xt + kTD * xpitch;     // (kTD, gpitch)
  A* wt = gt + kTD * gpitch;     // (kTD, W)
  A* bt = wt + kTD * W;          // (kTD,)
  A* acc = bt + kTD;             // (kTD, W+1): this block's dweight, dbias sums
  const int64_t seg = blockIdx.x, d0 = int64_t(blockIdx.y) * kTD, b = blockIdx.z;
  const int64_t L = p.len, D = p.dim;
  const int64_t n_tiles = (L + kTL - 1) / kTL;
  stage_params(p, d0, wt, bt);
  for (int i = threadIdx.x; i < kTD * (W + 1); i += blockDim.x) acc[i] = A(0);

  for (int64_t tile = seg * tiles_per_seg; tile < min((seg + 1) * int64_t(tiles_per_seg), n_tiles);
       ++tile) {
    const int64_t t0 = tile * kTL;
    stage_x(p, b, d0, t0 - P, xpitch, xt, xpitch);
    __syncthreads();
    // dy over [t0, t0 + kTL + P): zero past L
    for (int i = threadIdx.x; i < kTD * gpitch; i += blockDim.x) {
      const int dd = i / gpitch, c = i % gpitch;
      const int64_t d = d0 + dd, t = t0 + c;
      A g = A(0);
      if (d < D && t < L) {
        g = cuda::load(dout + (b * D + d) * L + t);
        if (p.silu) {
          const A y = bt[dd] + taps<kW>(wt + dd * W, xt + dd * xpitch + c, W);
          const A s = cuda::sigmoid(y);
          g *= s * (A(1) + y * (A(1) - s));
        }
      }
      gt[i] = g;
    }
    __syncthreads();
    // dx_s = sum_k w_k dy_{s+P-k}, plus the gradient of the final state for s >= L - P
    for (int i = threadIdx.x; i < kTD * kTL; i += blockDim.x) {
      const int dd = i / kTL, c = i % kTL;
      const int64_t d = d0 + dd, s = t0 + c;
      if (d >= D || s >= L) continue;
      const A* w = wt + dd * W;
      const A* g = gt + dd * gpitch + c;  // g[j] = dy_{s+j}
      A v = A(0);
      if constexpr (kW > 0) {
#pragma unroll
        for (int k = 0; k < kW; ++k) v += w[k] * g[P - k];
      } else {
        for (int k = 0; k < W; ++k) v += w[k] * g[P - k];
      }
      if (dfinal && s + P >= L) v += cuda::load(dfinal + (b * D + d) * P + (s + P - L));
      cuda::store(dx + (b * D + d) * L + s, v);
    }
    // dweight_k += sum_t dy_t xp_{t+k}, dbias += sum_t dy_t: one (channel, k) per thread
    for (int i = threadIdx.x; i < kTD * (W + 1); i += blockDim.x) {
      const int dd = i / (W + 1), k = i % (W + 1);
      const A* g = gt + dd * gpitch;
      A sum = A(0);
      if (k < W) {
        const A* xr = xt + dd * xpitch + k;
        for (int c = 0; c < kTL; ++c) sum += g[c] * xr[c];
      } else {
        for (int c = 0; c < kTL; ++c) sum += g[c];
      }
      acc[i] += sum;
    }
    // the initial states' gradient: xp index q < P gets sum_{k<=q} w_k dy_{q-k}
    if (t0 == 0 && dinit) {
      for (int i = threadIdx.x; i < kTD * P; i += blockDim.x) {
        const int dd = i / P, q = i % P;
        const int64_t d = d0 + dd;
        if (d >= D) continue;
        A v = A(0);
        for (int k = 0; k <= q; ++k) v += wt[dd * W + k] * gt[dd * gpitch + (q - k)];
        if (dfinal && q >= L) v += cuda::load(dfinal + (b * D + d) * P + (q - L));
        cuda::store(dinit + (b * D + d) * P + q, v);
      }
    }
    __syncthreads();  // before the next tile overwrites xt and gt
  }
  for (int i = threadIdx.x; i < kTD * (W + 1); i += blockDim.x) {
    const int64_t d = d0 + i / (W + 1);
    if (d < D) partial[((b * gridDim.x + seg) * D + d) * (W + 1) + i % (W + 1)] = acc[i];
  }
}

bool present(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Calls f.template operator()<T, TW>() for x's storage type T and the weights' TW.
template <typename F>
void dispatch_types(at::ScalarType x, at::ScalarType w, F&& f) {
  switch (x) {
    case at::kFloat: f.template operator()<float, float>(); break;
    case at::kDouble: f.template operator()<double, double>(); break;
    case at::kHalf:
      if (w == at::kFloat) {
        f.template operator()<c10::Half, float>();
      } else {
        f.template operator()<c10::Half, c10::Half>();
      }
      break;
    case at::kBFloat16:
      if (w == at::kFloat) {
        f.template operator()<c10::BFloat16, float>();
      } else {
        f.template operator()<c10::BFloat16, c10::BFloat16>();
      }
      break;
    default: TORCH_CHECK(false, "seqzoo::causal_conv1d (CUDA): unsupported dtype ", x);
  }
}

// Calls f.template operator()<kW>() with the width as a constant for W = 2, 3, 4 (Mamba's
// widths), 0 (read at run time) otherwise.
template <typename F>
void dispatch_width(int64_t W, F&& f) {
  switch (W) {
    case 2: f.template operator()<2>(); break;
    case 3: f.template operator()<3>(); break;
    case 4: f.template operator()<4>(); break;
    default: f.template operator()<0>(); break;
  }
}

template <typename T, typename TW>
ConvParams<T, TW> make_params(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                              const at::Tensor& init, bool silu) {
  return ConvParams<T, TW>{x.data_ptr<T>(),      x.stride(0),       x.stride(1),
                           x.stride(2),          weight.data_ptr<TW>(), ptr_or_null<TW>(bias),
                           ptr_or_null<T>(init), x.size(0),         x.size(1),
                           x.size(2),            int(weight.size(1)), silu};
}

void check_cuda_sizes(const at::Tensor& x, const at::Tensor& weight) {
  TORCH_CHECK(weight.size(1) <= kMaxWidth, "seqzoo::causal_conv1d (CUDA): width W = ",
              weight.size(1), " is above the supported ", kMaxWidth);
  TORCH_CHECK(x.size(0) <= 65535, "seqzoo::causal_conv1d (CUDA): batch ", x.size(0),
              " is above 65535");
  TORCH_CHECK((x.size(1) + kTD - 1) / kTD <= 65535, "seqzoo::causal_conv1d (CUDA): ", x.size(1),
              " channels is above ", 65535 * kTD);
}

std::tuple<at::Tensor, at::Tensor> causal_conv1d_fwd_cuda(const at::Tensor& x,
                                                          const at::Tensor& weight_,
                                                          const c10::optional<at::Tensor>& bias_,
                                                          const c10::optional<at::Tensor>& init_,
                                                          bool silu) {
  check_causal_conv1d_inputs(x, weight_, bias_, init_, true);
  check_cuda_sizes(x, weight_);
  SEQZOO_CUDA_GUARD(x.device());
  const int64_t B = x.size(0), D = x.size(1), L = x.size(2), W = weight_.size(1);
  auto out = at::empty({B, D, L}, x.options());
  const auto init = present(init_) ? init_->contiguous() : at::Tensor();
  if (L == 0 || B * D == 0) {  // the final state is the initial one
    auto final_states = init.defined() ? init.clone() : at::zeros({B, D, W - 1}, x.options());
    return {out, final_states};
  }
  auto final_states = at::empty({B, D, W - 1}, x.options());
  const auto weight = weight_.contiguous();
  const auto bias = present(bias_) ? bias_->contiguous() : at::Tensor();
  const dim3 grid((L + kTL - 1) / kTL, (D + kTD - 1) / kTD, B);
  dispatch_types(x.scalar_type(), weight.scalar_type(), [&]<typename T, typename TW>() {
    const auto p = make_params<T, TW>(x, weight, bias, init, silu);
    const size_t smem = sizeof(acc_t<T>) * kTD * ((kTL + W - 1) + W + 1);
    dispatch_width(W, [&]<int kW>() {
      cuda::launch(conv_fwd_kernel<T, TW, kW>, grid, dim3(kThreads), smem, p,
                   out.data_ptr<T>(), final_states.data_ptr<T>());
    });
  });
  return {out, final_states};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> causal_conv1d_bwd_cuda(
    const at::Tensor& dout_, const c10::optional<at::Tensor>& dfinal_, const at::Tensor& x,
    const at::Tensor& weight_, const c10::optional<at::Tensor>& bias_,
    const c10::optional<at::Tensor>& init_, bool silu) {
  check_causal_conv1d_inputs(x, weight_, bias_, init_, true);
  check_cuda_sizes(x, weight_);
  SEQZOO_CUDA_GUARD(x.device());
  const int64_t B = x.size(0), D = x.size(1), L = x.size(2), W = weight_.size(1);
  TORCH_CHECK(dout_.sizes() == x.sizes(), "seqzoo::causal_conv1d_backward: grad of out ",
              dout_.sizes(), " must have x's shape ", x.sizes());
  if (present(dfinal_)) {
    TORCH_CHECK(dfinal_->dim() == 3 && dfinal_->size(0) == B && dfinal_->size(1) == D &&
                    dfinal_->size(2) == W - 1,
                "seqzoo::causal_conv1d_backward: grad of final_states must be (B, D, W-1), got ",
                dfinal_->sizes());
  }
  const auto opts = x.options();
  const auto acc_type = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto dx = at::empty({B, D, L}, opts);
  if (L == 0 || B * D == 0) {  // the final state's gradient goes to the initial state
    auto dinit = present(dfinal_) ? dfinal_->to(x.scalar_type()).contiguous().clone()
                                  : at::zeros({B, D, W - 1}, opts);
    return {dx, at::zeros(weight_.sizes(), weight_.options()), at::zeros({D}, opts), dinit};
  }
  auto dinit = at::empty({B, D, W - 1}, opts);
  const auto weight = weight_.contiguous();
  const auto bias = present(bias_) ? bias_->contiguous() : at::Tensor();
  const auto init = present(init_) ? init_->contiguous() : at::Tensor();
  const auto dout = dout_.to(x.scalar_type()).contiguous();
  const auto dfinal = present(dfinal_) ? dfinal_->to(x.scalar_type()).contiguous() : at::Tensor();
  // tiles per block: enough blocks to fill the GPU a few times over, but few partial rows
  const int64_t n_tiles = (L + kTL - 1) / kTL, d_tiles = (D + kTD - 1) / kTD;
  const int64_t per_seg =
      std::clamp<int64_t>(n_tiles * d_tiles * B / (8 * int64_t(cuda::sm_count())), 1, 8);
  const int64_t n_seg = (n_tiles + per_seg - 1) / per_seg;
  auto partial = at::empty({B * n_seg, D, W + 1}, opts.dtype(acc_type));
  const dim3 grid(n_seg, d_tiles, B);
  dispatch_types(x.scalar_type(), weight.scalar_type(), [&]<typename T, typename TW>() {
    const auto p = make_params<T, TW>(x, weight, bias, init, silu);
    const size_t smem =
        sizeof(acc_t<T>) * kTD * ((kTL + 2 * (W - 1)) + (kTL + W - 1) + W + 1 + (W + 1));
    dispatch_width(W, [&]<int kW>() {
      cuda::launch(conv_bwd_kernel<T, TW, kW>, grid, dim3(kThreads), smem, p, dout.data_ptr<T>(),
                   ptr_or_null<T>(dfinal), dx.data_ptr<T>(), dinit.data_ptr<T>(),
                   partial.data_ptr<acc_t<T>>(), int(per_seg));
    });
  });
  const auto sums = partial.sum(0);  // (D, W+1)
  auto dweight = sums.narrow(1, 0, W).to(weight_.scalar_type()).contiguous();
  auto dbias = sums.select(1, W).to(x.scalar_type()).contiguous();
  return {dx, dweight, dbias, dinit};
}

}  // namespace
}  // namespace seqzoo

TORCH_LIBRARY_IMPL(seqzoo, CUDA, m) {
  m.impl("causal_conv1d", &seqzoo::causal_conv1d_fwd_cuda);
  m.impl("causal_conv1d_backward", &seqzoo::causal_conv1d_bwd_cuda);
}
