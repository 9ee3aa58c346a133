// CUDA kernels of the selective scan (Mamba's S6, Gu & Dao 2023, Algorithm 2).
//
// Spec: seqzoo/ops/selective_scan/ref.py; selective_scan_cpu.cpp has the same math. Per
// batch row b and channel d (a "row"), with dt_t = softplus?(delta_t + bias_d):
//   h_t = exp(dt_t A_d) ⊙ h_{t-1} + dt_t u_t B_t ,  y_t = <C_t, h_t> + D_d u_t ,
//   out_t = y_t silu(z_t).
//
// Layout: a row is owned by kR lanes of a warp (kR = min(32, N rounded up to a power of
// two)); lane q of the row owns the kS states n = q, q + kR, ... (kS = N_pad / kR), so a
// state lives in one register and the recurrence needs no communication. Time runs in
// tiles of kK steps (kK kS <= 16 keeps the tile's states and decays in registers in the
// backward):
//   - the lanes of a row split the tile's steps between them to load delta, u, z (and
//     dout) with coalesced loads and compute the step sizes once per step; these row
//     scalars reach the other lanes through shared memory;
//   - B_t and C_t of the tile are staged once per block in shared memory, [t][n]: a
//     block's rows all belong to one batch row and one group (the launch makes sure), so
//     they share them;
//   - the sums over n (y_t, and in the backward du_t and d dt_t) are kK values per lane,
//     summed over the row's lanes by a butterfly reduce-scatter (kK - 1 shuffles per lane
//     for kK values, instead of log2(kR) per value), which leaves each lane the sums of
//     the steps it loaded the inputs of, so the outputs are stored coalesced as well.
// The decays are exp2(dt A log2 e) (one MUFU instruction with --use_fast_math).
//
// Backward (states recomputed, nothing of size (B, D, N, L) in memory): chunks of `chunk`
// steps from the last to the first; for each chunk, a forward walk from its checkpoint
// (the forward's state at the chunk start) keeps the state at every tile start in shared
// memory; then tiles in reverse: recompute the tile's states and decays in registers, then
// walk it backwards with g = dL/dh (about 1.75 exponentials per state and step with
// chunk = 64 and kK = 16, against 1 in the forward):
//   g_t = exp(dt_{t+1} A) ⊙ g_{t+1} + dy_t C_t
//   dC_t += dy_t h_t ,  dB_t += g_t dt_t u_t              (summed over the group's rows)
//   du_t = dy_t D + dt_t <g_t, B_t> ,  d dt_t = <g_t, A ⊙ exp(dt_t A) ⊙ h_{t-1}> + u_t <g_t, B_t>
//   dA += g_t dt_t exp(dt_t A) ⊙ h_{t-1}                 (per lane, over all t)
// dB and dC are first summed over the block's rows in shared memory (atomic adds there),
// then added to the (B, G, N, L) gradient once per block, not once per row. dA, dD and the
// bias gradient are per-row partials summed over the batch afterwards.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cuda/compat.cuh"
#include "selective_scan/selective_scan.h"

namespace seqzoo {
namespace {

using cuda::acc_t;

constexpr int kMaxWarps = 8;
constexpr int64_t kChunkMultiple = 16;  // checkpoints must fall on tile starts
constexpr double kLog2e = 1.4426950408889634;

__device__ __forceinline__ float dev_exp2(float x) { return exp2f(x); }
__device__ __forceinline__ double dev_exp2(double x) { return exp2(x); }
__device__ __forceinline__ float dev_softplus(float x) { return x > 20.f ? x : log1pf(__expf(x)); }
__device__ __forceinline__ double dev_softplus(double x) { return x > 20.0 ? x : log1p(exp(x)); }
template <typename A>
__device__ __forceinline__ A dev_softplus_grad(A x) {
  return x > A(20) ? A(1) : cuda::sigmoid(x);
}

template <typename T>
struct Params {
  const T* u;      // (B, D, L)
  const T* delta;  // (B, D, L)
  const T* A;      // (D, N)
  const T* Bm;     // (B, G, N, L)
  const T* Cm;     // (B, G, N, L)
  const T* Dskip;  // (D,) or null
  const T* z;      // (B, D, L) or null
  const T* bias;   // (D,) or null
  const T* h0;     // (B, D, N) or null
  int64_t batch, dim, len, nstate, groups, chunk, n_chunks;
  bool softplus;
  int rows_per_warp;  // rows per warp (each kR lanes); the block has blockDim.x / 32 warps
};

template <typename T>
struct Grads {
  T* du;              // (B, D, L)
  T* ddelta;          // (B, D, L)
  T* dz;              // (B, D, L) or null
  T* dA_part;         // (B, D, N)
  T* dD_part;         // (B, D)
  T* dbias_part;      // (B, D)
  T* dh0;             // (B, D, N)
  acc_t<T>* dB;       // (B, G, N, L), zeroed; blocks add their sums
  acc_t<T>* dC;       // (B, G, N, L)
};

// Sums v over the kR lanes of each row (lanes q = lane % kR) by recursive halving: at each
// step a lane keeps one half of its array and adds the other lanes' copy of that half.
// Afterwards lane q holds, in v[0 .. max(1, kK / kR)), the sums of steps
// i = q kK / kR + j when kK >= kR, or of step q / (kR / kK) (shared by kR / kK lanes).
template <int kM, int kOff, int kK, typename A>
__device__ __forceinline__ void reduce_scatter_step(A (&v)[kK], int lane) {
  if constexpr (kOff >= 1) {
    if constexpr (kM > 1) {
      constexpr int kH = kM / 2;
      const bool upper = (lane & kOff) != 0;
#pragma unroll
      for (int j = 0; j < kH; ++j) {
        const A send = upper ? v[j] : v[j + kH];
        const A keep = upper ? v[j + kH] : v[j];
        v[j] = keep + __shfl_xor_sync(0xffffffffu, send, kOff);
      }
      reduce_scatter_step<kH, kOff / 2, kK>(v, lane);
    } else {
      v[0] += __shfl_xor_sync(0xffffffffu, v[0], kOff);
      reduce_scatter_step<1, kOff / 2, kK>(v, lane);
    }
  }
}
template <int kR, int kK, typename A>
__device__ __forceinline__ void reduce_scatter(A (&v)[kK], int lane) {
  reduce_scatter_step<kK, kR / 2, kK>(v, lane);
}

// Where a thread is: its row, its lane in the row, the steps of a tile it loads/stores.
template <int kR, int kK>
struct Place {
  static constexpr int kOut = kK >= kR ? kK / kR : 1;  // steps per lane
  int warp, lane, q;  // q: lane within the row
  bool has_row;       // false for the spare lanes of a warp with fewer rows than 32 / kR
  int row_local;      // row within the block (a real row's index for spare lanes too)
  int64_t row;        // b * D + d
  int i_own;          // first step of the tile this lane loads and stores
  bool owner;         // whether it loads/stores any (several lanes share one step when kK < kR)
  int rows_per_block;

  __device__ Place(int rows_per_warp) {
    warp = threadIdx.x / 32;
    lane = threadIdx.x % 32;
    q = lane % kR;
    const int r = lane / kR;
    has_row = r < rows_per_warp;
    row_local = warp * rows_per_warp + (has_row ? r : 0);
    rows_per_block = (blockDim.x / 32) * rows_per_warp;
    row = int64_t(blockIdx.x) * rows_per_block + row_local;
    i_own = kK >= kR ? q * (kK / kR) : q / (kR / kK);
    owner = has_row && (kK >= kR || q % (kR / kK) == 0);
  }
};

// sB[i * kNp + n] = B[b, g, n, t0 + i] (zero past N or t_end), the same for C (if sC)
template <typename T, int kNp, int kK>
__device__ void stage_bc(const Params<T>& p, const T* Bg, const T* Cg, int64_t t0, int64_t t_end,
                         acc_t<T>* sB, acc_t<T>* sC) {
  using A = acc_t<T>;
  for (int e = threadIdx.x; e < kK * kNp; e += blockDim.x) {
    const int i = e % kK, n = e / kK;  // consecutive threads: consecutive t (coalesced)
    const int64_t t = t0 + i;
    const bool in = n < p.nstate && t < t_end;
    sB[i * kNp + n] = in ? A(Bg[n * p.len + t]) : A(0);
    if (sC) sC[i * kNp + n] = in ? A(Cg[n * p.len + t]) : A(0);
  }
}

template <typename T, int kR, int kS, int kK>
__global__ void __launch_bounds__(32 * kMaxWarps)
    fwd_kernel(Params<T> p, T* __restrict__ out, T* __restrict__ last, T* __restrict__ ckpt) {
  using A = acc_t<T>;
  constexpr int kNp = kR * kS;
  using P = Place<kR, kK>;
  const P pl(p.rows_per_warp);
  const int64_t D = p.dim, L = p.len, N = p.nstate, row = pl.row;
  const int64_t row0 = int64_t(blockIdx.x) * pl.rows_per_block;
  const int64_t b = row0 / D, d = row % D, g = (row0 % D) / (D / p.groups);
  const T* Bg = p.Bm + (b * p.groups + g) * N * L;
  const T* Cg = p.Cm + (b * p.groups + g) * N * L;
  SEQZOO_DYNAMIC_SMEM(A, smem);
  A* sB = smem;                 // (kK, kNp)
  A* sC = sB + kK * kNp;        // (kK, kNp)
  A* s_dt = sC + kK * kNp + pl.row_local * kK;  // this row's step sizes (kK,)
  A* s_dtu = s_dt + pl.rows_per_block * kK;     // and dt u (kK,)

  A A2[kS], h[kS];
#pragma unroll
  for (int s = 0; s < kS; ++s) {
    const int64_t n = pl.q + s * kR;
    A2[s] = n < N ? A(p.A[d * N + n]) * A(kLog2e) : A(0);
    h[s] = (n < N && p.h0) ? A(p.h0[row * N + n]) : A(0);
  }
  const A Dd = p.Dskip ? A(p.Dskip[d]) : A(0), bias = p.bias ? A(p.bias[d]) : A(0);

  for (int64_t t0 = 0; t0 < L; t0 += kK) {
    if (ckpt && pl.has_row && t0 % p.chunk == 0) {  // the state before the chunk
#pragma unroll
      for (int s = 0; s < kS; ++s) {
        const int64_t n = pl.q + s * kR;
        if (n < N) ckpt[(row * p.n_chunks + t0 / p.chunk) * N + n] = T(h[s]);
      }
    }
    stage_bc<T, kNp, kK>(p, Bg, Cg, t0, L, sB, sC);
    A u_o[P::kOut], z_o[P::kOut];
    if (pl.owner) {
#pragma unroll
      for (int j = 0; j < P::kOut; ++j) {
        const int i = pl.i_own + j;
        const int64_t t = t0 + i;
        A dt = A(0), uu = A(0), zz = A(0);
        if (t < L) {
          const A x = A(p.delta[row * L + t]) + bias;
          dt = p.softplus ? dev_softplus(x) : x;
          uu = A(p.u[row * L + t]);
          if (p.z) zz = A(p.z[row * L + t]);
        }
        s_dt[i] = dt;  // dt = 0 past the end: decay 1, no input
        s_dtu[i] = dt * uu;
        u_o[j] = uu;
        z_o[j] = zz;
      }
    }
    __syncthreads();
    A y[kK];
#pragma unroll
    for (int i = 0; i < kK; ++i) {
      const A dt = s_dt[i], dtu = s_dtu[i];
      A acc = A(0);
#pragma unroll
      for (int s = 0; s < kS; ++s) {
        const int n = pl.q + s * kR;
        h[s] = dev_exp2(dt * A2[s]) * h[s] + dtu * sB[i * kNp + n];  // eq. (2a)
        acc += sC[i * kNp + n] * h[s];                                // eq. (2b)
      }
      y[i] = acc;
    }
    reduce_scatter<kR, kK>(y, pl.lane);
    if (pl.owner) {
#pragma unroll
      for (int j = 0; j < P::kOut; ++j) {
        const int64_t t = t0 + pl.i_own + j;
        if (t >= L) break;
        A yy = y[j] + Dd * u_o[j];
        if (p.z) yy *= z_o[j] * cuda::sigmoid(z_o[j]);
        out[row * L + t] = T(yy);
      }
    }
    __syncthreads();  // before the next tile overwrites the shared arrays
  }
  if (pl.has_row) {
#pragma unroll
    for (int s = 0; s < kS; ++s) {
      const int64_t n = pl.q + s * kR;
      if (n < N) last[row * N + n] = T(h[s]);
    }
  }
}

template <typename T, int kR, int kS, int kK>
__global__ void __launch_bounds__(32 * kMaxWarps)
    bwd_kernel(Params<T> p, const T* __restrict__ dout, const T* __restrict__ dlast,
               const T* __restrict__ ckpt, Grads<T> gr) {
  using A = acc_t<T>;
  constexpr int kNp = kR * kS;
  using P = Place<kR, kK>;
  const P pl(p.rows_per_warp);
  const int64_t D = p.dim, L = p.len, N = p.nstate, row = pl.row;
  const int64_t row0 = int64_t(blockIdx.x) * pl.rows_per_block;
  const int64_t b = row0 / D, d = row % D, g = (row0 % D) / (D / p.groups);
  const int64_t bg = b * p.groups + g;
  const T* Bg = p.Bm + bg * N * L;
  const T* Cg = p.Cm + bg * N * L;
  const int rpb = pl.rows_per_block;
  const int tiles_per_chunk = int(p.chunk / kK);
  SEQZOO_DYNAMIC_SMEM(A, smem);
  A* sB = smem;                  // (kK, kNp) this tile's B and C
  A* sC = sB + kK * kNp;
  A* sdB = sC + kK * kNp;        // (kK, kNp) the block's sums of dB and dC for this tile
  A* sdC = sdB + kK * kNp;
  A* s_dt = sdC + kK * kNp + pl.row_local * kK;  // per row (kK,): dt, dt u, dy
  A* s_dtu = s_dt + rpb * kK;
  A* s_dy = s_dtu + rpb * kK;
  A* s_h = sdC + kK * kNp + 3 * rpb * kK + pl.row_local * tiles_per_chunk * kNp;  // tile starts

  A Ad[kS], A2[kS], gs[kS], dA[kS];
#pragma unroll
  for (int s = 0; s < kS; ++s) {
    const int64_t n = pl.q + s * kR;
    Ad[s] = n < N ? A(p.A[d * N + n]) : A(0);
    A2[s] = Ad[s] * A(kLog2e);
    gs[s] = (n < N && dlast) ? A(dlast[row * N + n]) : A(0);
    dA[s] = A(0);
  }
  const A Dd = p.Dskip ? A(p.Dskip[d]) : A(0), bias = p.bias ? A(p.bias[d]) : A(0);
  A dD = A(0), dbias = A(0);
  for (int e = threadIdx.x; e < kK * kNp; e += blockDim.x) sdB[e] = sdC[e] = A(0);

  // this lane's step sizes of tile t0 into the row's shared arrays (zero past t_end)
  auto row_steps = [&](int64_t t0, int64_t t_end) {
    if (!pl.owner) return;
#pragma unroll
    for (int j = 0; j < P::kOut; ++j) {
      const int i = pl.i_own + j;
      const int64_t t = t0 + i;
      A dt = A(0), uu = A(0);
      if (t < t_end) {
        const A x = A(p.delta[row * L + t]) + bias;
        dt = p.softplus ? dev_softplus(x) : x;
        uu = A(p.u[row * L + t]);
      }
      s_dt[i] = dt;
      s_dtu[i] = dt * uu;
    }
  };

  for (int64_t c = p.n_chunks - 1; c >= 0; --c) {
    const int64_t tc0 = c * p.chunk, tc1 = min(L, tc0 + p.chunk);
    const int n_tiles = int((tc1 - tc0 + kK - 1) / kK);
    // 1. forward from the checkpoint: the state at every tile start of the chunk
    A h[kS];
#pragma unroll
    for (int s = 0; s < kS; ++s) {
      const int64_t n = pl.q + s * kR;
      h[s] = n < N ? A(ckpt[(row * p.n_chunks + c) * N + n]) : A(0);
    }
    for (int j = 0; j < n_tiles; ++j) {
      if (pl.has_row) {
#pragma unroll
        for (int s = 0; s < kS; ++s) s_h[j * kNp + pl.q + s * kR] = h[s];
      }
      if (j == n_tiles - 1) break;
      const int64_t t0 = tc0 + int64_t(j) * kK;
      stage_bc<T, kNp, kK>(p, Bg, Cg, t0, tc1, sB, nullptr);
      row_steps(t0, tc1);
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kK; ++i) {
        const A dt = s_dt[i], dtu = s_dtu[i];
#pragma unroll
        for (int s = 0; s < kS; ++s) {
          h[s] = dev_exp2(dt * A2[s]) * h[s] + dtu * sB[i * kNp + pl.q + s * kR];
        }
      }
      __syncthreads();
    }

    // 2. the chunk's tiles from the last to the first
    for (int j = n_tiles - 1; j >= 0; --j) {
      const int64_t t0 = tc0 + int64_t(j) * kK;
      stage_bc<T, kNp, kK>(p, Bg, Cg, t0, tc1, sB, sC);
      A uu[P::kOut], dsp[P::kOut], go[P::kOut], zz[P::kOut];  // this lane's steps
      if (pl.owner) {
#pragma unroll
        for (int jj = 0; jj < P::kOut; ++jj) {
          const int i = pl.i_own + jj;
          const int64_t t = t0 + i;
          A dt = A(0);
          uu[jj] = dsp[jj] = go[jj] = zz[jj] = A(0);
          if (t < tc1) {
            const A x = A(p.delta[row * L + t]) + bias;
            dt = p.softplus ? dev_softplus(x) : x;
            dsp[jj] = p.softplus ? dev_softplus_grad(x) : A(1);
            uu[jj] = A(p.u[row * L + t]);
            go[jj] = A(dout[row * L + t]);
            if (p.z) zz[jj] = A(p.z[row * L + t]);
          }
          s_dt[i] = dt;
          s_dtu[i] = dt * uu[jj];
        }
      }
      __syncthreads();
      // the tile's states and decays, in registers; y_t (for the gate's gradient) on the way
      A hs[kK][kS], as[kK][kS], hstart[kS], y[kK];
#pragma unroll
      for (int s = 0; s < kS; ++s) hstart[s] = s_h[j * kNp + pl.q + s * kR];
#pragma unroll
      for (int i = 0; i < kK; ++i) {
        const A dt = s_dt[i], dtu = s_dtu[i];
        A acc = A(0);
#pragma unroll
        for (int s = 0; s < kS; ++s) {
          const int n = pl.q + s * kR;
          const A prev = i > 0 ? hs[i - 1][s] : hstart[s];
          as[i][s] = dev_exp2(dt * A2[s]);
          hs[i][s] = as[i][s] * prev + dtu * sB[i * kNp + n];
          acc += sC[i * kNp + n] * hs[i][s];
        }
        y[i] = acc;
      }
      if (p.z) reduce_scatter<kR, kK>(y, pl.lane);
      // dy = dout silu(z) and the gate's gradient, per step, to the row's shared array
      if (pl.owner) {
#pragma unroll
        for (int jj = 0; jj < P::kOut; ++jj) {
          const int i = pl.i_own + jj;
          const int64_t t = t0 + i;
          A dy = go[jj];
          if (p.z) {
            const A yy = y[jj] + Dd * uu[jj], sg = cuda::sigmoid(zz[jj]);
            if (t < tc1) gr.dz[row * L + t] = T(dy * yy * sg * (A(1) + zz[jj] * (A(1) - sg)));
            dy = dy * zz[jj] * sg;
          }
          s_dy[i] = dy;
          go[jj] = dy;  // from here on: dy
          dD += dy * uu[jj];
        }
      }
      __syncthreads();
      // backwards through the tile
      A sgB[kK], sgAh[kK];  // per step: sum over this lane's n of g B, of g A exp(dt A) h_{t-1}
#pragma unroll
      for (int i = kK - 1; i >= 0; --i) {
        const A dt = s_dt[i], dtu = s_dtu[i], dy = s_dy[i];
        A sb = A(0), sa = A(0);
#pragma unroll
        for (int s = 0; s < kS; ++s) {
          const int n = pl.q + s * kR;
          const A prev = i > 0 ? hs[i - 1][s] : hstart[s];
          const A a = as[i][s];
          const A Bn = sB[i * kNp + n];
          const A gn = gs[s] + dy * sC[i * kNp + n];  // dL/dh_t
          if (pl.has_row) {
            atomicAdd(sdC + i * kNp + n, dy * hs[i][s]);
            atomicAdd(sdB + i * kNp + n, gn * dtu);
          }
          const A ah = a * prev;
          dA[s] += gn * dt * ah;
          sb += gn * Bn;
          sa += gn * Ad[s] * ah;
          gs[s] = gn * a;  // dL/dh_{t-1} through the recurrence
        }
        sgB[i] = sb;
        sgAh[i] = sa;
      }
      reduce_scatter<kR, kK>(sgB, pl.lane);
      reduce_scatter<kR, kK>(sgAh, pl.lane);
      if (pl.owner) {
#pragma unroll
        for (int jj = 0; jj < P::kOut; ++jj) {
          const int i = pl.i_own + jj;
          const int64_t t = t0 + i;
          if (t >= tc1) break;
          const A dt = s_dt[i];
          gr.du[row * L + t] = T(go[jj] * Dd + dt * sgB[jj]);
          const A dd = (sgAh[jj] + uu[jj] * sgB[jj]) * dsp[jj];
          gr.ddelta[row * L + t] = T(dd);
          dbias += dd;
        }
      }
      __syncthreads();
      // the block's dB, dC of this tile into the gradient, then clear them
      for (int e = threadIdx.x; e < kK * kNp; e += blockDim.x) {
        const int i = e % kK, n = e / kK;
        const int64_t t = t0 + i;
        if (n < N && t < tc1) {
          atomicAdd(gr.dB + (bg * N + n) * L + t, sdB[i * kNp + n]);
          atomicAdd(gr.dC + (bg * N + n) * L + t, sdC[i * kNp + n]);
        }
        sdB[i * kNp + n] = sdC[i * kNp + n] = A(0);
      }
      __syncthreads();
    }
  }
  // per-row results; dD and the bias gradient summed over the row's lanes
#pragma unroll
  for (int off = kR / 2; off >= 1; off /= 2) {
    dD += __shfl_xor_sync(0xffffffffu, dD, off);
    dbias += __shfl_xor_sync(0xffffffffu, dbias, off);
  }
  if (pl.has_row) {
#pragma unroll
    for (int s = 0; s < kS; ++s) {
      const int64_t n = pl.q + s * kR;
      if (n < N) {
        gr.dh0[row * N + n] = T(gs[s]);
        gr.dA_part[row * N + n] = T(dA[s]);
      }
    }
    if (pl.q == 0) {
      gr.dD_part[row] = T(dD);
      gr.dbias_part[row] = T(dbias);
    }
  }
}

bool present(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

at::Tensor contiguous_or_empty(const c10::optional<at::Tensor>& t) {
  return present(t) ? t->contiguous() : at::Tensor();
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Calls f.template operator()<kR, kS, kK>() for the state size N (N <= 256).
template <typename F>
void dispatch_state_size(int64_t N, F&& f) {
  TORCH_CHECK(N >= 1 && N <= 256, "seqzoo::selective_scan (CUDA): state size N = ", N,
              " is outside the supported 1..256");
  if (N <= 4) {
    f.template operator()<4, 1, 16>();
  } else if (N <= 8) {
    f.template operator()<8, 1, 16>();
  } else if (N <= 16) {  // Mamba's default
    f.template operator()<16, 1, 16>();
  } else if (N <= 32) {
    f.template operator()<32, 1, 16>();
  } else if (N <= 64) {
    f.template operator()<32, 2, 8>();
  } else if (N <= 128) {
    f.template operator()<32, 4, 4>();
  } else {
    f.template operator()<32, 8, 2>();
  }
}

// Rows per block: all in one batch row and one group (they share B and C), so a power of
// two dividing D / G; at most 32 / kR per warp and kMaxWarps warps; fewer when the
// shared memory per row (smem_per_row) would pass smem_cap.
struct Launch {
  int rows_per_warp, warps;
  size_t smem;
};
Launch plan(int64_t per_group, int kR, size_t smem_fixed, size_t smem_per_row, size_t smem_cap) {
  int64_t rpb = 1;
  while (rpb * 2 <= int64_t(32 / kR) * kMaxWarps && per_group % (rpb * 2) == 0 &&
         smem_fixed + size_t(rpb * 2) * smem_per_row <= smem_cap) {
    rpb *= 2;
  }
  const int rpw = int(std::min<int64_t>(32 / kR, rpb));
  return Launch{rpw, int(rpb / rpw), smem_fixed + size_t(rpb) * smem_per_row};
}

void check_chunk(int64_t chunk) {
  TORCH_CHECK(chunk % kChunkMultiple == 0,
              "seqzoo::selective_scan (CUDA): the checkpoint interval chunk = ", chunk,
              " must be a multiple of ", kChunkMultiple,
              " (seqzoo.ops.selective_scan passes CHECKPOINT_CHUNK = 64)");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan_fwd_cuda(
    const at::Tensor& u_, const at::Tensor& delta_, const at::Tensor& A_, const at::Tensor& B_,
    const at::Tensor& C_, const c10::optional<at::Tensor>& D_,
    const c10::optional<at::Tensor>& z_, const c10::optional<at::Tensor>& bias_,
    const c10::optional<at::Tensor>& h0_, bool delta_softplus, int64_t chunk) {
  check_selective_scan_inputs(u_, delta_, A_, B_, C_, D_, z_, bias_, h0_, chunk);
  check_chunk(chunk);
  SEQZOO_CUDA_GUARD(u_.device());
  const int64_t Bsz = u_.size(0), D = u_.size(1), L = u_.size(2), N = A_.size(1);
  const int64_t G = B_.size(1);
  const int64_t nc = chunk > 0 ? (L + chunk - 1) / chunk : 0;
  auto out = at::empty({Bsz, D, L}, u_.options());
  auto last = present(h0_) ? h0_->clone(at::MemoryFormat::Contiguous)
                           : at::zeros({Bsz, D, N}, u_.options());
  auto ckpt = at::empty({Bsz, D, nc, N}, u_.options());
  if (L == 0 || Bsz * D == 0) return {out, last, ckpt};
  const auto u = u_.contiguous(), delta = delta_.contiguous(), A = A_.contiguous();
  const auto Bm = B_.contiguous(), Cm = C_.contiguous();
  const auto Dskip = contiguous_or_empty(D_), z = contiguous_or_empty(z_);
  const auto bias = contiguous_or_empty(bias_), h0 = contiguous_or_empty(h0_);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_fwd_cuda", [&] {
    using A_t = acc_t<scalar_t>;
    Params<scalar_t> p{u.data_ptr<scalar_t>(),   delta.data_ptr<scalar_t>(),
                       A.data_ptr<scalar_t>(),   Bm.data_ptr<scalar_t>(),
                       Cm.data_ptr<scalar_t>(),  ptr_or_null<scalar_t>(Dskip),
                       ptr_or_null<scalar_t>(z), ptr_or_null<scalar_t>(bias),
                       ptr_or_null<scalar_t>(h0), Bsz, D, L, N, G, chunk, nc, delta_softplus, 0};
    dispatch_state_size(N, [&]<int kR, int kS, int kK>() {
      const auto lp = plan(D / G, kR, sizeof(A_t) * 2 * kK * kR * kS, sizeof(A_t) * 2 * kK,
                           48 * 1024);
      p.rows_per_warp = lp.rows_per_warp;
      const int64_t rows_per_block = int64_t(lp.rows_per_warp) * lp.warps;
      cuda::launch(fwd_kernel<scalar_t, kR, kS, kK>, dim3(unsigned(Bsz * D / rows_per_block)),
                   dim3(32 * lp.warps), lp.smem, p, out.data_ptr<scalar_t>(),
                   last.data_ptr<scalar_t>(), nc > 0 ? ckpt.data_ptr<scalar_t>() : nullptr);
    });
  });
  return {out, last, ckpt};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor>
selective_scan_bwd_cuda(const at::Tensor& dout_, const c10::optional<at::Tensor>& dlast_,
                        const at::Tensor& u_, const at::Tensor& delta_, const at::Tensor& A_,
                        const at::Tensor& B_, const at::Tensor& C_,
                        const c10::optional<at::Tensor>& D_, const c10::optional<at::Tensor>& z_,
                        const c10::optional<at::Tensor>& bias_, const at::Tensor& ckpt_,
                        bool delta_softplus, int64_t chunk) {
  check_selective_scan_inputs(u_, delta_, A_, B_, C_, D_, z_, bias_, c10::nullopt, chunk);
  SEQZOO_CUDA_GUARD(u_.device());
  const int64_t Bsz = u_.size(0), D = u_.size(1), L = u_.size(2), N = A_.size(1);
  const int64_t G = B_.size(1);
  TORCH_CHECK(dout_.sizes() == u_.sizes(), "seqzoo::selective_scan_backward: grad of out ",
              dout_.sizes(), " must have u's shape ", u_.sizes());
  TORCH_CHECK(chunk > 0 || L == 0,
              "seqzoo::selective_scan_backward: the forward ran with chunk = 0 (no checkpoints); "
              "run it with chunk > 0 to differentiate");
  if (L > 0) check_chunk(chunk);
  const int64_t nc = chunk > 0 ? (L + chunk - 1) / chunk : 0;
  TORCH_CHECK(ckpt_.dim() == 4 && ckpt_.size(0) == Bsz && ckpt_.size(1) == D &&
                  ckpt_.size(2) == nc && ckpt_.size(3) == N,
              "seqzoo::selective_scan_backward: checkpoints must be (B, D, ceil(L / chunk), N) = (",
              Bsz, ", ", D, ", ", nc, ", ", N, "), got ", ckpt_.sizes());
  if (present(dlast_)) {
    TORCH_CHECK(dlast_->dim() == 3 && dlast_->size(0) == Bsz && dlast_->size(1) == D &&
                    dlast_->size(2) == N,
                "seqzoo::selective_scan_backward: grad of the last state must be (B, D, N), got ",
                dlast_->sizes());
  }
  const auto opts = u_.options();
  const auto acc_opts = opts.dtype(u_.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  auto du = at::empty({Bsz, D, L}, opts);
  auto ddelta = at::empty({Bsz, D, L}, opts);
  auto dz = present(z_) ? at::empty({Bsz, D, L}, opts) : at::empty({0}, opts);
  auto dA_part = at::zeros({Bsz, D, N}, opts);
  auto dD_part = at::zeros({Bsz, D}, opts);
  auto dbias_part = at::zeros({Bsz, D}, opts);
  auto dB = at::zeros({Bsz, G, N, L}, acc_opts);
  auto dC = at::zeros({Bsz, G, N, L}, acc_opts);
  at::Tensor dh0;
  if (L == 0 || Bsz * D == 0) {
    dh0 = present(dlast_) ? dlast_->to(u_.scalar_type()).clone(at::MemoryFormat::Contiguous)
                          : at::zeros({Bsz, D, N}, opts);
  } else {
    dh0 = at::empty({Bsz, D, N}, opts);
    const auto u = u_.contiguous(), delta = delta_.contiguous(), A = A_.contiguous();
    const auto Bm = B_.contiguous(), Cm = C_.contiguous();
    const auto Dskip = contiguous_or_empty(D_), z = contiguous_or_empty(z_);
    const auto bias = contiguous_or_empty(bias_);
    const auto dout = dout_.to(u.scalar_type()).contiguous();
    const auto ckpt = ckpt_.contiguous();
    const auto dlast = present(dlast_) ? dlast_->to(u.scalar_type()).contiguous() : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_bwd_cuda", [&] {
      using A_t = acc_t<scalar_t>;
      Params<scalar_t> p{u.data_ptr<scalar_t>(),   delta.data_ptr<scalar_t>(),
                         A.data_ptr<scalar_t>(),   Bm.data_ptr<scalar_t>(),
                         Cm.data_ptr<scalar_t>(),  ptr_or_null<scalar_t>(Dskip),
                         ptr_or_null<scalar_t>(z), ptr_or_null<scalar_t>(bias),
                         nullptr, Bsz, D, L, N, G, chunk, nc, delta_softplus, 0};
      const Grads<scalar_t> grads{du.data_ptr<scalar_t>(),
                                  ddelta.data_ptr<scalar_t>(),
                                  dz.numel() ? dz.data_ptr<scalar_t>() : nullptr,
                                  dA_part.data_ptr<scalar_t>(),
                                  dD_part.data_ptr<scalar_t>(),
                                  dbias_part.data_ptr<scalar_t>(),
                                  dh0.data_ptr<scalar_t>(),
                                  dB.data_ptr<A_t>(),
                                  dC.data_ptr<A_t>()};
      dispatch_state_size(N, [&]<int kR, int kS, int kK>() {
        constexpr int kNp = kR * kS;
        const size_t per_row = sizeof(A_t) * (3 * kK + size_t(chunk / kK) * kNp);
        const auto lp = plan(D / G, kR, sizeof(A_t) * 4 * kK * kNp, per_row, 96 * 1024);
        TORCH_CHECK(lp.smem <= 200 * 1024, "seqzoo::selective_scan_backward (CUDA): chunk = ", chunk,
                    " needs ", lp.smem, " bytes of shared memory per block; use a smaller chunk");
        p.rows_per_warp = lp.rows_per_warp;
        const int64_t rows_per_block = int64_t(lp.rows_per_warp) * lp.warps;
        cuda::launch(bwd_kernel<scalar_t, kR, kS, kK>, dim3(unsigned(Bsz * D / rows_per_block)),
                     dim3(32 * lp.warps), lp.smem, p, dout.data_ptr<scalar_t>(),
                     ptr_or_null<scalar_t>(dlast), ckpt.data_ptr<scalar_t>(), grads);
      });
    });
  }
  return {du,
          ddelta,
          dA_part.sum(0),
          dB.to(u_.scalar_type()),
          dC.to(u_.scalar_type()),
          dD_part.sum(0),
          dz,
          dbias_part.sum(0),
          dh0};
}

}  // namespace
}  // namespace seqzoo

TORCH_LIBRARY_IMPL(seqzoo, CUDA, m) {
  m.impl("selective_scan", &seqzoo::selective_scan_fwd_cuda);
  m.impl("selective_scan_backward", &seqzoo::selective_scan_bwd_cuda);
}
