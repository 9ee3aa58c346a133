// CUDA kernels of the diagonal linear scan h_t = a_t * h_{t-1} + b_t (spec:
// seqzoo/ops/diag_scan/ref.py), one pass over the data with a decoupled look-back
// (Merrill & Garland 2016, "Single-pass Parallel Prefix Scan with Decoupled Look-back").
//
// The scan is first order and linear, so a run of steps composes into one affine map
// h -> A h + B; two maps compose as (A2, B2) o (A1, B1) = (A2 A1, A2 B1 + B2).
//
// Tiles: a block (8 warps) owns kCh = 32 x kV channels of one batch row and kTL = 8 x kTS
// consecutive steps; lane l of warp w owns channels [l kV, (l+1) kV) and the kTS steps
// [w kTS, (w+1) kTS) of the tile. Each thread loads its a and b with 16-byte loads
// (kV = 16 / sizeof(T) channels side by side; consecutive lanes read consecutive 16 bytes,
// so a warp reads 512 contiguous bytes per step) and keeps them in registers. Then:
//   1. each thread composes its kTS steps into (A, B); the 8 warps' maps go to shared memory;
//   2. warp 0 composes the tile's map, publishes it, and looks back over the tiles before it
//      in time (same channels) until it finds one that published its inclusive prefix (the
//      state at its end), composing the published maps on the way; it then publishes this
//      tile's inclusive prefix. Tiles take tickets from a counter in the order they start,
//      so every tile a block waits for has started before it: the wait always ends;
//   3. each thread carries the tile's incoming state through the warps before its own and
//      runs its kTS steps from registers, writing h with 16-byte stores.
// a and b are read once and h written once: 12 bytes per element in fp32, as a copy of two
// arrays into one. The published maps add 3 values per 8 x kTS steps and channel.
//
// The backward is the same scan run from the end with conjugated decays shifted by one
// step, g_t = conj(a_{t+1}) g_{t+1} + dL/dh_t, writing dL/db_t = g_t and
// dL/da_t = g_t conj(h_{t-1}) (h_{-1} = h0), and dL/dh0 = conj(a_0) g_0.
//
// fp16/bf16 are read and written as such; states and maps are fp32 (fp64, complex64,
// complex128 for those types). Channel counts that are not a multiple of kV, or unaligned
// tensors, use the same kernel with one channel per lane.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda/compat.cuh"
#include "diag_scan/diag_scan.h"

namespace seqzoo {
namespace {

using cuda::acc_t;

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kAggregate = 1, kPrefix = 2;  // tile flags

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <typename T>
struct ScanParams {
  const T* a;  // (Ba, La, D): element (b, t, d) at a + b * a_bstride + t * a_tstride + d
  int64_t a_bstride, a_tstride;
  const T* x;   // forward: b (B, L, D); backward: dL/dh (B, L, D)
  const T* h;   // backward: the forward's states (B, L, D)
  const T* h0;  // (B, D) or null
  T* out;       // forward: h; backward: dL/db
  T* out_a;     // backward: dL/da (B, L, D)
  T* out_h0;    // backward: dL/dh0 (B, D)
  int64_t batch, len, dim;
  int64_t d_blocks;  // channel blocks per batch row
};

template <typename A>
struct Workspace {
  int* counter;  // tickets, zeroed before the launch
  int* flags;    // per tile: 0, kAggregate or kPrefix; zeroed before the launch
  A* map_a;      // per tile and channel: the tile's map (A, B) ...
  A* map_b;
  A* prefix;     // ... and its inclusive prefix (the state after its last step)
};

template <typename T, int N>
__device__ __forceinline__ void load_pack(const T* p, acc_t<T> (&v)[N]) {
  const Pack<T, N> pk = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
  for (int i = 0; i < N; ++i) v[i] = acc_t<T>(pk.v[i]);
}

template <typename T, int N>
__device__ __forceinline__ void store_pack(T* p, const acc_t<T> (&v)[N]) {
  Pack<T, N> pk;
#pragma unroll
  for (int i = 0; i < N; ++i) pk.v[i] = T(v[i]);
  *reinterpret_cast<Pack<T, N>*>(p) = pk;
}

// kReverse: the backward (see the file comment). kV channels per lane, kTS steps per warp.
template <typename T, bool kReverse, int kV, int kTS>
__global__ void __launch_bounds__(kThreads) scan_kernel(ScanParams<T> p, Workspace<acc_t<T>> ws) {
  using A = acc_t<T>;
  constexpr int kCh = 32 * kV, kTL = kWarps * kTS;
  __shared__ int s_ticket;
  SEQZOO_DYNAMIC_SMEM(A, smem);
  A* s_ma = smem;                 // (kWarps, kCh): each warp's map
  A* s_mb = s_ma + kWarps * kCh;
  A* s_carry = s_mb + kWarps * kCh;  // (kCh,): the state before the tile

  if (threadIdx.x == 0) s_ticket = atomicAdd(ws.counter, 1);
  __syncthreads();
  const int64_t tile = s_ticket;
  const int64_t n_cols = p.batch * p.d_blocks;
  const int64_t chunk = tile / n_cols, col = tile % n_cols;  // tiles start in time order
  const int64_t b = col / p.d_blocks;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t d = (col % p.d_blocks) * kCh + lane * kV;  // this lane's first channel
  const bool active = d < p.dim;                             // all kV channels or none
  const int64_t L = p.len, D = p.dim;
  const int64_t r0 = chunk * kTL + warp * kTS;  // this thread's first step, counted from the
                                                // end in the backward
  auto time_of = [&](int64_t r) { return kReverse ? L - 1 - r : r; };
  auto a_at = [&](int64_t t) { return p.a + b * p.a_bstride + t * p.a_tstride + d; };

  // 0. loads: decays av, inputs xv (and the previous states hp in the backward)
  A av[kTS][kV], xv[kTS][kV];
  A hp[kReverse ? kTS : 1][kV];
#pragma unroll
  for (int i = 0; i < kTS; ++i) {
    const int64_t r = r0 + i, t = time_of(r);
    const bool in = active && r < L;
#pragma unroll
    for (int v = 0; v < kV; ++v) av[i][v] = A(1), xv[i][v] = A(0);
    if (!in) continue;
    load_pack<T, kV>(p.x + (b * L + t) * D + d, xv[i]);
    if constexpr (kReverse) {
      if (t + 1 < L) {
        load_pack<T, kV>(a_at(t + 1), av[i]);
#pragma unroll
        for (int v = 0; v < kV; ++v) av[i][v] = cuda::conj(av[i][v]);
      }  // else: g_L = 0, any decay
      if (t > 0) {
        load_pack<T, kV>(p.h + (b * L + t - 1) * D + d, hp[i]);
      } else if (p.h0) {
        load_pack<T, kV>(p.h0 + b * D + d, hp[i]);
      } else {
#pragma unroll
        for (int v = 0; v < kV; ++v) hp[i][v] = A(0);
      }
    } else {
      load_pack<T, kV>(a_at(t), av[i]);
    }
  }

  // 1. this thread's map over its steps, then each warp's in shared memory
  A ma[kV], mb[kV];
#pragma unroll
  for (int v = 0; v < kV; ++v) {
    ma[v] = A(1);
    mb[v] = A(0);
#pragma unroll
    for (int i = 0; i < kTS; ++i) {
      mb[v] = av[i][v] * mb[v] + xv[i][v];
      ma[v] = av[i][v] * ma[v];
    }
    s_ma[warp * kCh + lane * kV + v] = ma[v];
    s_mb[warp * kCh + lane * kV + v] = mb[v];
  }
  __syncthreads();

  // 2. warp 0: the tile's map, the look-back, the tile's inclusive prefix
  if (warp == 0) {
    A ta[kV], tb[kV], hin[kV];
#pragma unroll
    for (int v = 0; v < kV; ++v) {
      ta[v] = A(1);
      tb[v] = A(0);
      for (int w = 0; w < kWarps; ++w) {
        const A wa = s_ma[w * kCh + lane * kV + v], wb = s_mb[w * kCh + lane * kV + v];
        tb[v] = wa * tb[v] + wb;
        ta[v] = wa * ta[v];
      }
    }
    const int64_t slot = tile * kCh + lane * kV;
    if (chunk == 0) {
#pragma unroll
      for (int v = 0; v < kV; ++v) {
        hin[v] = (!kReverse && p.h0 && active) ? A(p.h0[b * D + d + v]) : A(0);
      }
    } else {
#pragma unroll
      for (int v = 0; v < kV; ++v) {
        ws.map_a[slot + v] = ta[v];
        ws.map_b[slot + v] = tb[v];
      }
      __threadfence();
      __syncwarp();
      if (lane == 0) atomicExch(ws.flags + tile, kAggregate);
      // compose the maps of the tiles before, latest first, until one has its prefix
      A ra[kV], rb[kV];
#pragma unroll
      for (int v = 0; v < kV; ++v) ra[v] = A(1), rb[v] = A(0);
      for (int64_t pred = tile - n_cols;; pred -= n_cols) {
        int f;
        while ((f = *reinterpret_cast<volatile int*>(ws.flags + pred)) == 0) cuda::spin_pause();
        __threadfence();
        const int64_t ps = pred * kCh + lane * kV;
        if (f == kPrefix) {
#pragma unroll
          for (int v = 0; v < kV; ++v) hin[v] = ra[v] * cuda::load_cg(ws.prefix + ps + v) + rb[v];
          break;
        }
#pragma unroll
        for (int v = 0; v < kV; ++v) {
          const A pa = cuda::load_cg(ws.map_a + ps + v), pb = cuda::load_cg(ws.map_b + ps + v);
          rb[v] = ra[v] * pb + rb[v];
          ra[v] = ra[v] * pa;
        }
      }  // the first tile in time always publishes a prefix: the loop ends there at the latest
    }
#pragma unroll
    for (int v = 0; v < kV; ++v) {
      ws.prefix[slot + v] = ta[v] * hin[v] + tb[v];
      s_carry[lane * kV + v] = hin[v];
    }
    __threadfence();
    __syncwarp();
    if (lane == 0) atomicExch(ws.flags + tile, kPrefix);
  }
  __syncthreads();

  // 3. the state before this thread's steps, then the steps themselves
  A h[kV];
#pragma unroll
  for (int v = 0; v < kV; ++v) {
    h[v] = s_carry[lane * kV + v];
    for (int w = 0; w < warp; ++w) h[v] = s_ma[w * kCh + lane * kV + v] * h[v] + s_mb[w * kCh + lane * kV + v];
  }
  if (!active) return;
#pragma unroll
  for (int i = 0; i < kTS; ++i) {
    const int64_t r = r0 + i, t = time_of(r);
    if (r >= L) break;
#pragma unroll
    for (int v = 0; v < kV; ++v) h[v] = av[i][v] * h[v] + xv[i][v];
    store_pack<T, kV>(p.out + (b * L + t) * D + d, h);
    if constexpr (kReverse) {
      A ga[kV];
#pragma unroll
      for (int v = 0; v < kV; ++v) ga[v] = h[v] * cuda::conj(hp[i][v]);
      store_pack<T, kV>(p.out_a + (b * L + t) * D + d, ga);
      if (t == 0) {  // dL/dh0 = conj(a_0) g_0
        A a0[kV];
        load_pack<T, kV>(a_at(0), a0);
#pragma unroll
        for (int v = 0; v < kV; ++v) a0[v] = cuda::conj(a0[v]) * h[v];
        store_pack<T, kV>(p.out_h0 + b * D + d, a0);
      }
    }
  }
}

// Launch the scan for p (its out pointers set): vectors of 16 bytes when every row is aligned.
template <typename T, bool kReverse>
void run_scan(ScanParams<T> p, const at::Tensor& like) {
  using A = acc_t<T>;
  constexpr int kVec = sizeof(T) >= 16 ? 1 : 16 / int(sizeof(T));
  bool vec = p.dim % kVec == 0;
  for (const void* ptr : {static_cast<const void*>(p.a), static_cast<const void*>(p.x),
                          static_cast<const void*>(p.h), static_cast<const void*>(p.h0),
                          static_cast<const void*>(p.out), static_cast<const void*>(p.out_a),
                          static_cast<const void*>(p.out_h0)}) {
    vec = vec && cuda::aligned16(static_cast<const char*>(ptr));
  }
  auto go = [&]<int kV>() {
    // about 128 bytes of a and of b per thread in registers
    constexpr int kTS = std::max<int>(1, 128 / int(kV * sizeof(A)));
    constexpr int kCh = 32 * kV, kTL = kWarps * kTS;
    p.d_blocks = (p.dim + kCh - 1) / kCh;
    const int64_t n_chunks = (p.len + kTL - 1) / kTL;
    const int64_t n_tiles = n_chunks * p.batch * p.d_blocks;
    TORCH_CHECK(n_tiles < (int64_t(1) << 31), "seqzoo::diag_scan (CUDA): too many tiles");
    // workspace: counter, flags, then three (tile, channel) arrays of A, 16-byte aligned
    const int64_t head = (1 + n_tiles) * int64_t(sizeof(int));
    const int64_t off = (head + 15) / 16 * 16;
    const int64_t vals = n_tiles * kCh;
    auto buf = at::empty({off + 3 * vals * int64_t(sizeof(A))}, like.options().dtype(at::kByte));
    buf.narrow(0, 0, head).zero_();
    auto* base = buf.data_ptr<uint8_t>();
    A* arr = reinterpret_cast<A*>(base + off);
    const Workspace<A> ws{reinterpret_cast<int*>(base), reinterpret_cast<int*>(base) + 1, arr,
                          arr + vals, arr + 2 * vals};
    const size_t smem = sizeof(A) * (2 * kWarps * kCh + kCh);
    cuda::launch(scan_kernel<T, kReverse, kV, kTS>, dim3(unsigned(n_tiles)), dim3(kThreads), smem, p, ws);
  };
  if (vec) {
    go.template operator()<kVec>();
  } else {
    go.template operator()<1>();
  }
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

at::Tensor diag_scan_cuda(const at::Tensor& a_, const at::Tensor& b_,
                          const c10::optional<at::Tensor>& h0_) {
  check_diag_scan_inputs(a_, b_, h0_);
  SEQZOO_CUDA_GUARD(b_.device());
  const auto a = a_.contiguous();
  const auto b = b_.contiguous();
  const bool has_h0 = h0_.has_value() && h0_->defined();
  const auto h0 = has_h0 ? h0_->contiguous() : at::Tensor();
  const int64_t B = b.size(0), L = b.size(1), D = b.size(2);
  auto h = at::empty({B, L, D}, b.options());
  if (b.numel() == 0) return h;
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES_AND2(
      at::kHalf, at::kBFloat16, b.scalar_type(), "diag_scan_cuda", [&] {
        ScanParams<scalar_t> p{a.data_ptr<scalar_t>(),
                               a.size(0) == 1 ? 0 : a.size(1) * D,
                               a.size(1) == 1 ? 0 : D,
                               b.data_ptr<scalar_t>(),
                               nullptr,
                               ptr_or_null<scalar_t>(h0),
                               h.data_ptr<scalar_t>(),
                               nullptr,
                               nullptr,
                               B,
                               L,
                               D,
                               0};
        run_scan<scalar_t, false>(p, b);
      });
  return h;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> diag_scan_backward_cuda(
    const at::Tensor& a_, const at::Tensor& h_, const at::Tensor& grad_h_,
    const c10::optional<at::Tensor>& h0_) {
  check_diag_scan_inputs(a_, h_, h0_);
  TORCH_CHECK(grad_h_.sizes() == h_.sizes(), "seqzoo::diag_scan_backward: grad_h ",
              grad_h_.sizes(), " does not match h ", h_.sizes());
  SEQZOO_CUDA_GUARD(h_.device());
  const auto a = a_.contiguous();
  const auto h = h_.contiguous();
  const auto gh = grad_h_.to(h.scalar_type()).contiguous();
  const bool has_h0 = h0_.has_value() && h0_->defined();
  const auto h0 = has_h0 ? h0_->contiguous() : at::Tensor();
  const int64_t B = h.size(0), L = h.size(1), D = h.size(2);
  auto ga = at::empty({B, L, D}, h.options());
  auto gb = at::empty({B, L, D}, h.options());
  auto gh0 = at::zeros({B, D}, h.options());
  if (h.numel() == 0) return {ga, gb, gh0};
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES_AND2(
      at::kHalf, at::kBFloat16, h.scalar_type(), "diag_scan_backward_cuda", [&] {
        ScanParams<scalar_t> p{a.data_ptr<scalar_t>(),
                               a.size(0) == 1 ? 0 : a.size(1) * D,
                               a.size(1) == 1 ? 0 : D,
                               gh.data_ptr<scalar_t>(),
                               h.data_ptr<scalar_t>(),
                               ptr_or_null<scalar_t>(h0),
                               gb.data_ptr<scalar_t>(),
                               ga.data_ptr<scalar_t>(),
                               gh0.data_ptr<scalar_t>(),
                               B,
                               L,
                               D,
                               0};
        run_scan<scalar_t, true>(p, h);
      });
  return {ga, gb, gh0};
}

}  // namespace
}  // namespace seqzoo

TORCH_LIBRARY_IMPL(seqzoo, CUDA, m) {
  m.impl("diag_scan", &seqzoo::diag_scan_cuda);
  m.impl("diag_scan_backward", &seqzoo::diag_scan_backward_cuda);
}
