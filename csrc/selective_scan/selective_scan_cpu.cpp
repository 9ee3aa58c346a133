// CPU kernels of the selective scan: the S6 layer of Mamba (Gu & Dao 2023, "Mamba:
// Linear-Time Sequence Modeling with Selective State Spaces", Algorithm 2; recurrence
// eq. (2a)-(2b), with the simplified discretisation B̄ = ΔB of the reference code).
//
// Spec: seqzoo/ops/selective_scan/ref.py. For each batch row b and channel d:
//   dt_t = softplus?(delta_t + bias_d)                       (scalar per step)
//   h_t  = exp(dt_t A_d) ⊙ h_{t-1} + dt_t u_t B_t           (N-vector state)
//   y_t  = <C_t, h_t> + D_d u_t ,   out_t = y_t silu(z_t)
//
// Fusion: nothing of size (B, D, L, N) ever exists. The state lives in a small local array
// while a task walks t = 0..L-1 and only out_t is written. B and C are transposed once to
// (B, G, L, Np) (n contiguous, N padded to a multiple of the vector width). The decays use
// vmath::exp2 (exp(dt A) = 2^(dt A log2 e)), vectorised. Step sizes, gates and their
// derivatives are computed in short vectorised passes over blocks of `chunk` steps.
// Both directions put 8 (float) / 4 (double) channels of one group side by side, one in each
// vector lane, so the time loops have no horizontal sums: the forward's task owns one such
// lane block; the backward's task walks a run of them and keeps dB_t, dC_t (sums over the
// channels) per lane until it sums the lanes once at the end.
// Tasks are claimed dynamically by the threads (dynamic_parallel.h).
//
// Backward: the state's gradient runs backwards in time,
//   g_t = exp(dt_{t+1} A) ⊙ g_{t+1} + dy_t C_t ,   g_{L-1} starts from dL/dh_last,
// and every term of the input gradients needs h_{t-1}. The forward saved the state at the
// start of every chunk; the backward walks chunks last to first, recomputes the chunk's
// states and decays into (chunk, N) buffers, then runs the chunk in reverse. Memory is
// O(B D L) for the gradients plus O(B D N L / chunk) for the checkpoints.
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "common.h"
#include "dynamic_parallel.h"
#include "selective_scan/selective_scan.h"
#include "vec_math.h"

namespace seqzoo {

namespace {

// Time steps per vectorised pass when the forward keeps no checkpoints (chunk = 0).
constexpr int64_t kDefaultBlock = 64;

// Lanes of one 256-bit vector register: the forward puts this many channels side by side.
// N is padded up to a multiple of it (padded entries have A = B = C = 0, so they stay 0),
// and the common padded sizes are compile-time constants (see dispatch_state_size), so the
// loops over n have fixed trip counts and no remainder handling.
template <typename T>
constexpr int64_t kLanes = 32 / sizeof(T);

// Calls f(std::integral_constant<int64_t, Np>) for the padded sizes with a specialised
// kernel, f(std::integral_constant<int64_t, 0>) (size known at run time) for the others.
template <typename F>
void dispatch_state_size(int64_t Np, F&& f) {
  switch (Np) {
    case 4: f(std::integral_constant<int64_t, 4>{}); break;
    case 8: f(std::integral_constant<int64_t, 8>{}); break;
    case 16: f(std::integral_constant<int64_t, 16>{}); break;
    case 32: f(std::integral_constant<int64_t, 32>{}); break;
    case 64: f(std::integral_constant<int64_t, 64>{}); break;
    default: f(std::integral_constant<int64_t, 0>{}); break;
  }
}

// Rows (b, d) per task: enough work per task that threads are not woken for a handful of
// steps (a single decoding step runs on the calling thread).
inline int64_t rows_grain(int64_t L, int64_t Np) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, L * Np));
}

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// f(std::true_type{}) or f(std::false_type{}): a run-time flag as a template parameter.
template <typename F>
void dispatch_bool(bool flag, F&& f) {
  if (flag) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// Is every row of A (D, N) one value repeated? Then exp(dt A_dn) is the same for every n
// (Mamba-2's SSD: A is a scalar per head) and the kernels compute it once per step and
// channel instead of N times: the same numbers, N - 1 fewer exponentials.
inline bool rows_constant(const at::Tensor& A) {
  const auto Ac = A.contiguous();
  return at::equal(Ac, Ac.narrow(1, 0, 1).expand_as(Ac).contiguous());
}

// A (B, D, L) tensor read or written through its strides: rows (b, d) may be contiguous
// or, for a transposed view of a (B, L, D) tensor (Mamba's projections), channels may be.
template <typename T>
struct Strided {
  T* p = nullptr;
  int64_t sb = 0, sd = 0, sl = 0;
  T* row(int64_t b, int64_t d) const { return p + b * sb + d * sd; }
  explicit operator bool() const { return p != nullptr; }
};

template <typename T>
Strided<T> strided(const at::Tensor& t) {
  if (!t.defined() || t.numel() == 0) return {};
  return {t.data_ptr<std::remove_const_t<T>>(), t.stride(0), t.stride(1), t.stride(2)};
}

template <typename T>
struct ScanArgs {
  Strided<const T> u;      // (B, D, L)
  Strided<const T> delta;  // (B, D, L)
  const T* A;      // (D, N)
  const T* Bt;     // (B, G, L, Np)  B transposed so that n is contiguous, zero-padded to Np
  const T* Ct;     // (B, G, L, Np)
  const T* Dskip;  // (D,) or null
  Strided<const T> z;  // (B, D, L) or empty
  const T* bias;   // (D,) or null
  int64_t batch, dim, len, nstate, npad, groups, chunk;
  bool softplus;
  bool scalar_A;  // every row of A is one value repeated (Mamba-2's SSD): one decay per step

  int64_t group_of(int64_t d) const { return d / (dim / groups); }
  const T* B_row(int64_t b, int64_t d) const { return Bt + (b * groups + group_of(d)) * len * npad; }
  const T* C_row(int64_t b, int64_t d) const { return Ct + (b * groups + group_of(d)) * len * npad; }
  int64_t n_chunks() const { return (len + chunk - 1) / chunk; }
};

// dst[0:n] = src[0:n] (or zeros when src is null), dst[n:np] = 0.
template <typename T>
inline void load_padded(T* dst, const T* src, int64_t n, int64_t np) {
  for (int64_t i = 0; i < np; ++i) dst[i] = (src && i < n) ? src[i] : T(0);
}

// dt[i] = softplus?(delta[i] + bias) for i < n; with `grad`, also d dt / d delta.
template <typename T>
inline void step_sizes(const T* delta, T bias, bool softplus, int64_t n, T* dt, T* grad) {
  if (softplus) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) dt[i] = vmath::softplus(delta[i] + bias);
    if (grad) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) grad[i] = vmath::softplus_grad(delta[i] + bias);
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) dt[i] = delta[i] + bias;
    if (grad) std::fill(grad, grad + n, T(1));
  }
}

// The step sizes Δ_t (and, with `dspT`, d Δ_t / d delta_t) and the inputs u_t of steps
// t0 .. t0+nt-1 of channels d0 .. d0+lanes-1 in batch row b, transposed to [t][lane] (the
// lanes past `lanes` are left as they are: the callers zero them). `row`, `tmp`, `tmp2`:
// scratch of nt values.
template <typename T>
void load_chunk_lanes(const ScanArgs<T>& a, int64_t b, int64_t d0, int64_t lanes, int64_t t0, int64_t nt,
                      T* dtT, T* dspT, T* uT, T* row, T* tmp, T* tmp2) {
  constexpr int64_t W = kLanes<T>;
  for (int64_t j = 0; j < lanes; ++j) {
    const T* dl = a.delta.row(b, d0 + j) + t0 * a.delta.sl;
    const T* ur = a.u.row(b, d0 + j) + t0 * a.u.sl;
    for (int64_t i = 0; i < nt; ++i) row[i] = dl[i * a.delta.sl];
    step_sizes(row, a.bias ? a.bias[d0 + j] : T(0), a.softplus, nt, tmp, dspT ? tmp2 : nullptr);
    for (int64_t i = 0; i < nt; ++i) {
      dtT[i * W + j] = tmp[i];
      if (dspT) dspT[i * W + j] = tmp2[i];
      uT[i * W + j] = ur[i * a.u.sl];
    }
  }
}

// Forward. One task owns W = kLanes consecutive channels of one group (they share B_t and
// C_t) in one batch row, and puts one channel in each vector lane: the state is hT[n][lane],
// the step sizes and inputs of a chunk are transposed to [t][lane], and every operation
// of the time loop is a whole-vector one (no horizontal sums; B_t[n], C_t[n] broadcast).
// Lanes past the end of the group are padding with Δ = 0, u = 0: they stay 0.
// kNp: the padded state size when it is a compile-time constant, else 0 (then a.npad).
template <typename T, int64_t kNp, bool kScalarA>
void forward_kernel(const ScanArgs<T>& a, const T* h0, const Strided<T>& out, T* last, T* ckpt) {
  constexpr int64_t W = kLanes<T>;
  const int64_t L = a.len, N = a.nstate, Np = kNp > 0 ? kNp : a.npad, K = a.chunk;
  const int64_t nc = a.n_chunks();
  const int64_t per_group = a.dim / a.groups, blocks = (per_group + W - 1) / W;
  const int64_t grain = std::max<int64_t>(1, rows_grain(L, Np) / W);
  parallel_jobs(a.batch * a.groups * blocks, grain, [&](auto next_job) {
    std::vector<T> hT(Np * W), AT(Np * W), dtT(K * W), uT(K * W), yT(K * W), tmp(K), row_in(K);
    for (int64_t job; (job = next_job()) >= 0;) {  // job = (b * G + grp) * blocks + blk
      const int64_t blk = job % blocks, bg = job / blocks, b = bg / a.groups;
      const int64_t d0 = (bg % a.groups) * per_group + blk * W;
      const int64_t lanes = std::min(W, per_group - blk * W);
      const T* Bv = a.Bt + bg * L * Np;  // (L, Np), shared by the block's channels
      const T* Cv = a.Ct + bg * L * Np;
      T Dv[W] = {};
      for (int64_t n = 0; n < Np; ++n) {
        for (int64_t j = 0; j < W; ++j) {
          const int64_t row = b * a.dim + d0 + j;
          const bool real = j < lanes && n < N;
          AT[n * W + j] = real ? a.A[(d0 + j) * N + n] * T(vmath::kLog2e) : T(0);  // exp(x) = 2^(x log2 e)
          hT[n * W + j] = (real && h0) ? h0[row * N + n] : T(0);
        }
      }
      for (int64_t j = 0; j < lanes; ++j) Dv[j] = a.Dskip ? a.Dskip[d0 + j] : T(0);

      for (int64_t c = 0; c < nc; ++c) {
        const int64_t t0 = c * K, nt = std::min(K, L - t0);
        // the chunk's Δ and u, transposed to [t][lane]; checkpoint of the state before it
        std::fill(dtT.begin(), dtT.end(), T(0));
        std::fill(uT.begin(), uT.end(), T(0));
        load_chunk_lanes(a, b, d0, lanes, t0, nt, dtT.data(), static_cast<T*>(nullptr), uT.data(),
                         row_in.data(), tmp.data(), static_cast<T*>(nullptr));
        if (ckpt) {
          for (int64_t j = 0; j < lanes; ++j) {
            const int64_t row = b * a.dim + d0 + j;
            for (int64_t n = 0; n < N; ++n) ckpt[(row * nc + c) * N + n] = hT[n * W + j];
          }
        }
        for (int64_t i = 0; i < nt; ++i) {
          const T* Bt = Bv + (t0 + i) * Np;
          const T* Ct = Cv + (t0 + i) * Np;
          const T* dt = dtT.data() + i * W;
          const T* ut = uT.data() + i * W;
          T* h = hT.data();
          const T* Av = AT.data();
          // lanes outside, n inside: the compiler vectorises the outer loop, so the
          // accumulator of y stays in a register while n runs
#pragma omp simd
          for (int64_t j = 0; j < W; ++j) {
            const T dtj = dt[j], dtu = dtj * ut[j];
            T acc = Dv[j] * ut[j];
            const T d0j = kScalarA ? vmath::exp2(dtj * Av[j]) : T(0);  // one decay for every n
            for (int64_t n = 0; n < Np; ++n) {
              const T dn = kScalarA ? d0j : vmath::exp2(dtj * Av[n * W + j]);
              const T hn = dn * h[n * W + j] + dtu * Bt[n];  // eq. (2a)
              h[n * W + j] = hn;
              acc += Ct[n] * hn;  // eq. (2b)
            }
            yT[i * W + j] = acc;
          }
        }
        for (int64_t j = 0; j < lanes; ++j) {  // back to rows; out = y * silu(z)
          for (int64_t i = 0; i < nt; ++i) tmp[i] = yT[i * W + j];
          if (a.z) {
            const T* zr = a.z.row(b, d0 + j) + t0 * a.z.sl;
            for (int64_t i = 0; i < nt; ++i) row_in[i] = zr[i * a.z.sl];
            const T* z = row_in.data();
            T* y = tmp.data();
#pragma omp simd
            for (int64_t i = 0; i < nt; ++i) y[i] *= z[i] * vmath::sigmoid(z[i]);
          }
          T* y = out.row(b, d0 + j) + t0 * out.sl;
          for (int64_t i = 0; i < nt; ++i) y[i * out.sl] = tmp[i];
        }
      }
      for (int64_t j = 0; j < lanes; ++j) {
        for (int64_t n = 0; n < N; ++n) last[(b * a.dim + d0 + j) * N + n] = hT[n * W + j];
      }
    }
  });
}

// Gradient buffers. dB and dC are sums over the channels of a group, which different tasks
// own, so each task (b, g, part: a run of lane blocks) accumulates into its own (L, Np)
// slice of dB_part / dC_part (B, G, nparts, L, Np), summed over parts afterwards. dA, dD
// and dbias are sums over the batch: per-row partials (B, D, ...) summed afterwards.
template <typename T>
struct GradOut {
  Strided<T> du;      // (B, D, L)
  Strided<T> ddelta;  // (B, D, L)
  Strided<T> dz;      // (B, D, L) or empty
  T* dA_part;     // (B, D, N)
  T* dD_part;     // (B, D)
  T* dbias_part;  // (B, D)
  T* dh0;         // (B, D, N)
  T* dB_part;     // (B, G, nparts, L, Np)
  T* dC_part;     // (B, G, nparts, L, Np)
};

// Backward, in the forward's layout: W = kLanes channels of one group side by side in the
// vector lanes, so the time loops are whole-vector operations and the sums over n (for dΔ
// and du) are per-lane accumulators, not horizontal sums. dB_t and dC_t, sums over the
// channels, are accumulated per lane in an (L, Np, W) buffer while the task walks its run
// of lane blocks, and the lanes are summed once at the end. Padding lanes have Δ = u = 0,
// A = 0 and dy = 0: every gradient they touch stays 0.
template <typename T, int64_t kNp, bool kScalarA>
void backward_kernel(const ScanArgs<T>& a, const Strided<const T>& dout, const T* dlast, const T* ckpt,
                     int64_t nparts, const GradOut<T>& g_out) {
  constexpr int64_t W = kLanes<T>;
  const int64_t L = a.len, N = a.nstate, Np = kNp > 0 ? kNp : a.npad, K = a.chunk;
  const int64_t nc = a.n_chunks();
  const int64_t per_group = a.dim / a.groups, blocks = (per_group + W - 1) / W;
  const int64_t span = (blocks + nparts - 1) / nparts;  // lane blocks per task
  parallel_jobs(a.batch * a.groups * nparts, 1, [&](auto next_job) {
    // [n][lane]: state gradient, dA, A, A log2(e), the checkpointed state before the chunk
    std::vector<T> gT(Np * W), dAT(Np * W), AT(Np * W), A2T(Np * W), hcT(Np * W);
    std::vector<T> hs(K * Np * W), dec(K * Np * W);  // [i][n][lane]: the chunk's states, decays
    // [i][lane]: the chunk's step sizes, softplus', inputs, y, dy, du, dΔ
    std::vector<T> dtT(K * W), dspT(K * W), uT(K * W), yT(K * W), dyT(K * W), duT(K * W), ddT(K * W);
    std::vector<T> dBacc(L * Np * W), dCacc(L * Np * W);  // [t][n][lane]
    std::vector<T> tmp(K), tmp2(K), row_in(K), row_z(K);
    for (int64_t job; (job = next_job()) >= 0;) {  // job = (b * G + grp) * nparts + part
      const int64_t part = job % nparts, bg = job / nparts;
      const int64_t b = bg / a.groups, grp = bg % a.groups;
      const int64_t blk_lo = part * span, blk_hi = std::min(blocks, blk_lo + span);
      const T* Bv = a.Bt + bg * L * Np;  // (L, Np), shared by the group's channels
      const T* Cv = a.Ct + bg * L * Np;
      std::fill(dBacc.begin(), dBacc.end(), T(0));
      std::fill(dCacc.begin(), dCacc.end(), T(0));
      for (int64_t blk = blk_lo; blk < blk_hi; ++blk) {
        const int64_t d0 = grp * per_group + blk * W;
        const int64_t lanes = std::min(W, per_group - blk * W);
        T Dv[W] = {}, dDv[W] = {}, dbv[W] = {};
        for (int64_t n = 0; n < Np; ++n) {
          for (int64_t j = 0; j < W; ++j) {
            const bool real = j < lanes && n < N;
            const T A = real ? a.A[(d0 + j) * N + n] : T(0);
            AT[n * W + j] = A;
            A2T[n * W + j] = A * T(vmath::kLog2e);  // exp(dt A) = 2^(dt A log2 e)
            gT[n * W + j] = (real && dlast) ? dlast[(b * a.dim + d0 + j) * N + n] : T(0);
            dAT[n * W + j] = T(0);
          }
        }
        for (int64_t j = 0; j < lanes; ++j) Dv[j] = a.Dskip ? a.Dskip[d0 + j] : T(0);

        for (int64_t c = nc - 1; c >= 0; --c) {
          const int64_t t0 = c * K, nt = std::min(K, L - t0);
          // the chunk's Δ, softplus', u and the state before it, transposed to lanes
          std::fill(dtT.begin(), dtT.end(), T(0));
          std::fill(dspT.begin(), dspT.end(), T(0));
          std::fill(uT.begin(), uT.end(), T(0));
          std::fill(dyT.begin(), dyT.end(), T(0));
          std::fill(hcT.begin(), hcT.end(), T(0));
          load_chunk_lanes(a, b, d0, lanes, t0, nt, dtT.data(), dspT.data(), uT.data(), row_in.data(),
                           tmp.data(), tmp2.data());
          for (int64_t j = 0; j < lanes; ++j) {
            const int64_t row = b * a.dim + d0 + j;
            for (int64_t n = 0; n < N; ++n) hcT[n * W + j] = ckpt[(row * nc + c) * N + n];
          }

          // 1. recompute the chunk's decays exp(dt A), states h_t and pre-gate outputs y_t
          for (int64_t i = 0; i < nt; ++i) {
            const T* Bt = Bv + (t0 + i) * Np;
            const T* Ct = Cv + (t0 + i) * Np;
            const T* hp = i > 0 ? hs.data() + (i - 1) * Np * W : hcT.data();
            T* hi = hs.data() + i * Np * W;
            T* di = dec.data() + i * Np * W;
            const T* dt = dtT.data() + i * W;
            const T* ut = uT.data() + i * W;
            const T* A2 = A2T.data();
            alignas(64) T d0[W];  // with kScalarA: the one decay of each lane
            if constexpr (kScalarA) {
#pragma omp simd
              for (int64_t j = 0; j < W; ++j) d0[j] = vmath::exp2(dt[j] * A2[j]);
            }
#pragma omp simd
            for (int64_t j = 0; j < W; ++j) {
              const T dtj = dt[j], dtu = dtj * ut[j];
              T acc = Dv[j] * ut[j];
              for (int64_t n = 0; n < Np; ++n) {
                const T dn = kScalarA ? d0[j] : vmath::exp2(dtj * A2[n * W + j]);
                const T hn = dn * hp[n * W + j] + dtu * Bt[n];  // eq. (2a)
                di[n * W + j] = dn;
                hi[n * W + j] = hn;
                acc += Ct[n] * hn;  // eq. (2b)
              }
              yT[i * W + j] = acc;
            }
          }

          // 2. through the gate, per row: dy = dout silu(z), dz = dout y silu'(z)
          for (int64_t j = 0; j < lanes; ++j) {
            const T* gor = dout.row(b, d0 + j) + t0 * dout.sl;
            for (int64_t i = 0; i < nt; ++i) row_in[i] = gor[i * dout.sl];
            if (a.z) {
              const T* zr = a.z.row(b, d0 + j) + t0 * a.z.sl;
              for (int64_t i = 0; i < nt; ++i) {
                row_z[i] = zr[i * a.z.sl];
                tmp[i] = yT[i * W + j];
              }
              const T *go = row_in.data(), *z = row_z.data(), *y = tmp.data();
              T* dy = tmp2.data();
              T* dzv = row_z.data();  // overwritten in place by dz
#pragma omp simd
              for (int64_t i = 0; i < nt; ++i) {
                const T zi = z[i], s = vmath::sigmoid(zi);
                dy[i] = go[i] * zi * s;
                dzv[i] = go[i] * y[i] * s * (T(1) + zi * (T(1) - s));
              }
              T* dz = g_out.dz.row(b, d0 + j) + t0 * g_out.dz.sl;
              for (int64_t i = 0; i < nt; ++i) {
                dyT[i * W + j] = dy[i];
                dz[i * g_out.dz.sl] = dzv[i];
              }
            } else {
              for (int64_t i = 0; i < nt; ++i) dyT[i * W + j] = row_in[i];
            }
          }

          // 3. the chunk in reverse: g_t = dL/dh_t, carried back through the decay
          for (int64_t i = nt - 1; i >= 0; --i) {
            const int64_t t = t0 + i;
            const T* Bt = Bv + t * Np;
            const T* Ct = Cv + t * Np;
            const T* di = dec.data() + i * Np * W;
            const T* hi = hs.data() + i * Np * W;
            const T* hp = i > 0 ? hs.data() + (i - 1) * Np * W : hcT.data();
            T* dBt = dBacc.data() + t * Np * W;
            T* dCt = dCacc.data() + t * Np * W;
            T* g = gT.data();
            T* dA = dAT.data();
            const T* A = AT.data();
            const T* dt = dtT.data() + i * W;
            const T* ut = uT.data() + i * W;
            const T* dy = dyT.data() + i * W;
            const T* dsp = dspT.data() + i * W;
            T* du = duT.data() + i * W;
            T* dd = ddT.data() + i * W;
#pragma omp simd
            for (int64_t j = 0; j < W; ++j) {
              const T dyj = dy[j], uj = ut[j], dtj = dt[j], dtu = dtj * uj;
              T s_ddt = T(0), s_gB = T(0);
              for (int64_t n = 0; n < Np; ++n) {
                const T gn = g[n * W + j] + dyj * Ct[n];
                dCt[n * W + j] += dyj * hi[n * W + j];
                const T ahp = di[n * W + j] * hp[n * W + j];  // exp(dt A) h_{t-1}
                s_ddt += gn * (A[n * W + j] * ahp + Bt[n] * uj);
                dA[n * W + j] += dtj * gn * ahp;
                dBt[n * W + j] += gn * dtu;
                s_gB += gn * Bt[n];
                g[n * W + j] = gn * di[n * W + j];  // carried to h_{t-1}
              }
              du[j] = dyj * Dv[j] + dtj * s_gB;
              dd[j] = s_ddt * dsp[j];  // through softplus to delta
              dDv[j] += dyj * uj;
            }
          }

          // 4. back to rows
          for (int64_t j = 0; j < lanes; ++j) {
            T* du = g_out.du.row(b, d0 + j) + t0 * g_out.du.sl;
            T* dd = g_out.ddelta.row(b, d0 + j) + t0 * g_out.ddelta.sl;
            T acc = T(0);
            for (int64_t i = 0; i < nt; ++i) {
              du[i * g_out.du.sl] = duT[i * W + j];
              dd[i * g_out.ddelta.sl] = ddT[i * W + j];
              acc += ddT[i * W + j];
            }
            dbv[j] += acc;
          }
        }
        for (int64_t j = 0; j < lanes; ++j) {
          const int64_t row = b * a.dim + d0 + j;
          for (int64_t n = 0; n < N; ++n) {
            g_out.dh0[row * N + n] = gT[n * W + j];
            g_out.dA_part[row * N + n] = dAT[n * W + j];
          }
          g_out.dD_part[row] = dDv[j];
          g_out.dbias_part[row] = dbv[j];
        }
      }
      // the lanes' dB, dC summed into this task's slice
      T* dBp = g_out.dB_part + job * L * Np;
      T* dCp = g_out.dC_part + job * L * Np;
      for (int64_t k = 0; k < L * Np; ++k) {
        T sb = T(0), sc = T(0);
#pragma omp simd reduction(+ : sb, sc)
        for (int64_t j = 0; j < W; ++j) {
          sb += dBacc[k * W + j];
          sc += dCacc[k * W + j];
        }
        dBp[k] = sb;
        dCp[k] = sc;
      }
    }
  });
}

bool present(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

at::Tensor contiguous_or_empty(const c10::optional<at::Tensor>& t) {
  return present(t) ? t->contiguous() : at::Tensor();
}

template <typename T>
const T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// (B, G, N, L) -> (B, G, L, Np), zero-padded in the last dim.
at::Tensor transpose_padded(const at::Tensor& m, int64_t Np) {
  auto out = at::zeros({m.size(0), m.size(1), m.size(3), Np}, m.options());
  out.narrow(3, 0, m.size(2)).copy_(m.transpose(2, 3));
  return out;
}

// Parts (runs of lane blocks) per (batch, group) in the backward: enough tasks for every
// thread, few enough that the per-part dB/dC partial sums stay small.
int64_t backward_parts(int64_t batch, int64_t groups, int64_t lane_blocks) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t want = (4 * threads + batch * groups - 1) / (batch * groups);
  return std::max<int64_t>(1, std::min<int64_t>({want, lane_blocks, 8}));
}

}  // namespace

void check_selective_scan_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                 const at::Tensor& Bm, const at::Tensor& Cm,
                                 const c10::optional<at::Tensor>& Dskip,
                                 const c10::optional<at::Tensor>& z,
                                 const c10::optional<at::Tensor>& bias,
                                 const c10::optional<at::Tensor>& h0, int64_t chunk) {
  TORCH_CHECK(u.dim() == 3, "seqzoo::selective_scan: u must be (B, D, L), got ", u.sizes());
  const int64_t Bsz = u.size(0), D = u.size(1), L = u.size(2);
  TORCH_CHECK(delta.sizes() == u.sizes(), "seqzoo::selective_scan: delta ", delta.sizes(),
              " must have u's shape ", u.sizes());
  TORCH_CHECK(A.dim() == 2 && A.size(0) == D, "seqzoo::selective_scan: A must be (D, N) with D = ",
              D, ", got ", A.sizes());
  const int64_t N = A.size(1);
  for (const at::Tensor* m : {&Bm, &Cm}) {
    TORCH_CHECK(m->dim() == 4 && m->size(0) == Bsz && m->size(2) == N && m->size(3) == L,
                "seqzoo::selective_scan: B and C must be (B, G, N, L) = (", Bsz, ", G, ", N, ", ",
                L, "), got ", m->sizes());
  }
  TORCH_CHECK(Bm.size(1) == Cm.size(1), "seqzoo::selective_scan: B and C have different group "
              "counts (", Bm.size(1), " vs ", Cm.size(1), ")");
  const int64_t G = Bm.size(1);
  TORCH_CHECK(G >= 1 && D % G == 0, "seqzoo::selective_scan: the group count G = ", G,
              " must divide D = ", D);
  TORCH_CHECK(chunk >= 0, "seqzoo::selective_scan: chunk must be >= 0, got ", chunk);
  const auto dtype = u.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "seqzoo::selective_scan: the compiled kernel computes in float32 or float64, got ",
              dtype);
  auto same = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.scalar_type() == dtype, "seqzoo::selective_scan: ", name, " has dtype ",
                t.scalar_type(), " but u has ", dtype);
    TORCH_CHECK(t.device() == u.device(), "seqzoo::selective_scan: ", name, " is on ",
                t.device(), " but u is on ", u.device());
  };
  same(delta, "delta");
  same(A, "A");
  same(Bm, "B");
  same(Cm, "C");
  if (present(Dskip)) {
    same(*Dskip, "D");
    TORCH_CHECK(Dskip->dim() == 1 && Dskip->size(0) == D, "seqzoo::selective_scan: D must be (",
                D, ",), got ", Dskip->sizes());
  }
  if (present(bias)) {
    same(*bias, "delta_bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == D,
                "seqzoo::selective_scan: delta_bias must be (", D, ",), got ", bias->sizes());
  }
  if (present(z)) {
    same(*z, "z");
    TORCH_CHECK(z->sizes() == u.sizes(), "seqzoo::selective_scan: z ", z->sizes(),
                " must have u's shape ", u.sizes());
  }
  if (present(h0)) {
    same(*h0, "initial_state");
    TORCH_CHECK(h0->dim() == 3 && h0->size(0) == Bsz && h0->size(1) == D && h0->size(2) == N,
                "seqzoo::selective_scan: initial_state must be (B, D, N) = (", Bsz, ", ", D, ", ",
                N, "), got ", h0->sizes());
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> selective_scan_fwd_cpu(
    const at::Tensor& u_, const at::Tensor& delta_, const at::Tensor& A_, const at::Tensor& B_,
    const at::Tensor& C_, const c10::optional<at::Tensor>& D_,
    const c10::optional<at::Tensor>& z_, const c10::optional<at::Tensor>& bias_,
    const c10::optional<at::Tensor>& h0_, bool delta_softplus, int64_t chunk) {
  check_selective_scan_inputs(u_, delta_, A_, B_, C_, D_, z_, bias_, h0_, chunk);
  const int64_t Bsz = u_.size(0), D = u_.size(1), L = u_.size(2), N = A_.size(1);
  const int64_t G = B_.size(1);
  const int64_t K = chunk > 0 ? chunk : kDefaultBlock;
  const int64_t nc = chunk > 0 ? (L + K - 1) / K : 0;
  auto out = empty_in_layout_of(present(z_) ? *z_ : u_, Bsz, D, L, u_.options());  // out follows z, else u
  auto last = present(h0_) ? h0_->clone(at::MemoryFormat::Contiguous)
                           : at::zeros({Bsz, D, N}, u_.options());
  auto ckpt = at::empty({Bsz, D, nc, N}, u_.options());
  if (L == 0 || Bsz == 0 || D == 0) return {out, last, ckpt};

  const auto A = A_.contiguous();  // u, delta, z: read through their strides
  const auto Dskip = contiguous_or_empty(D_);
  const auto z = present(z_) ? *z_ : at::Tensor();
  const auto bias = contiguous_or_empty(bias_), h0 = contiguous_or_empty(h0_);
  AT_DISPATCH_FLOATING_TYPES(u_.scalar_type(), "selective_scan_fwd_cpu", [&] {
    const int64_t Np = round_up(N, kLanes<scalar_t>);
    const auto Bt = transpose_padded(B_, Np);  // (B, G, L, Np)
    const auto Ct = transpose_padded(C_, Np);
    const ScanArgs<scalar_t> args{strided<const scalar_t>(u_),  strided<const scalar_t>(delta_),
                                  A.data_ptr<scalar_t>(),  Bt.data_ptr<scalar_t>(),
                                  Ct.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(Dskip),
                                  strided<const scalar_t>(z), ptr_or_null<scalar_t>(bias),
                                  Bsz, D, L, N, Np, G, K, delta_softplus,
                                  rows_constant(A)};
    dispatch_state_size(Np, [&](auto np) {
      dispatch_bool(args.scalar_A, [&](auto scalar_a) {
        forward_kernel<scalar_t, decltype(np)::value, decltype(scalar_a)::value>(
            args, ptr_or_null<scalar_t>(h0), strided<scalar_t>(out), last.data_ptr<scalar_t>(),
            nc > 0 ? ckpt.data_ptr<scalar_t>() : nullptr);
      });
    });
  });
  return {out, last, ckpt};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor>
selective_scan_bwd_cpu(const at::Tensor& dout_, const c10::optional<at::Tensor>& dlast_,
                       const at::Tensor& u_, const at::Tensor& delta_, const at::Tensor& A_,
                       const at::Tensor& B_, const at::Tensor& C_,
                       const c10::optional<at::Tensor>& D_, const c10::optional<at::Tensor>& z_,
                       const c10::optional<at::Tensor>& bias_, const at::Tensor& ckpt_,
                       bool delta_softplus, int64_t chunk) {
  check_selective_scan_inputs(u_, delta_, A_, B_, C_, D_, z_, bias_, c10::nullopt, chunk);
  const int64_t Bsz = u_.size(0), D = u_.size(1), L = u_.size(2), N = A_.size(1);
  const int64_t G = B_.size(1);
  TORCH_CHECK(dout_.sizes() == u_.sizes(), "seqzoo::selective_scan_backward: grad of out ",
              dout_.sizes(), " must have u's shape ", u_.sizes());
  TORCH_CHECK(chunk > 0 || L == 0,
              "seqzoo::selective_scan_backward: the forward ran with chunk = 0 (no checkpoints); "
              "run it with chunk > 0 to differentiate");
  const int64_t K = chunk > 0 ? chunk : kDefaultBlock;
  const int64_t nc = (L + K - 1) / K;
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
  // every entry is written by the kernel; each gradient in its input's layout
  auto du = empty_in_layout_of(u_, Bsz, D, L, opts);
  auto ddelta = empty_in_layout_of(delta_, Bsz, D, L, opts);
  auto dz = present(z_) ? empty_in_layout_of(*z_, Bsz, D, L, opts) : at::empty({0}, opts);
  auto dh0 = present(dlast_) ? dlast_->to(u_.scalar_type()).clone(at::MemoryFormat::Contiguous)
                             : at::zeros({Bsz, D, N}, opts);
  const int64_t per_group = D / G;
  auto dA_part = at::zeros({Bsz, D, N}, opts);
  auto dD_part = at::zeros({Bsz, D}, opts);
  auto dbias_part = at::zeros({Bsz, D}, opts);
  at::Tensor dB, dC;

  AT_DISPATCH_FLOATING_TYPES(u_.scalar_type(), "selective_scan_bwd_cpu", [&] {
    const int64_t Np = round_up(N, kLanes<scalar_t>);
    const int64_t nparts = backward_parts(Bsz, G, (per_group + kLanes<scalar_t> - 1) / kLanes<scalar_t>);
    auto dB_part = at::zeros({Bsz, G, nparts, L, Np}, opts);
    auto dC_part = at::zeros({Bsz, G, nparts, L, Np}, opts);
    if (L > 0 && Bsz > 0 && D > 0) {
      const auto A = A_.contiguous();  // u, delta, z, dout: read through their strides
      const auto Bt = transpose_padded(B_, Np);  // (B, G, L, Np)
      const auto Ct = transpose_padded(C_, Np);
      const auto Dskip = contiguous_or_empty(D_);
      const auto z = present(z_) ? *z_ : at::Tensor();
      const auto bias = contiguous_or_empty(bias_);
      const auto dout = dout_.to(u_.scalar_type());
      const auto ckpt = ckpt_.contiguous();
      const auto dlast = present(dlast_) ? dlast_->to(u_.scalar_type()).contiguous() : at::Tensor();
      const ScanArgs<scalar_t> args{strided<const scalar_t>(u_),  strided<const scalar_t>(delta_),
                                    A.data_ptr<scalar_t>(),  Bt.data_ptr<scalar_t>(),
                                    Ct.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(Dskip),
                                    strided<const scalar_t>(z), ptr_or_null<scalar_t>(bias),
                                    Bsz, D, L, N, Np, G, K, delta_softplus,
                                    rows_constant(A)};
      const GradOut<scalar_t> grads{strided<scalar_t>(du),        strided<scalar_t>(ddelta),
                                    strided<scalar_t>(dz),
                                    dA_part.data_ptr<scalar_t>(), dD_part.data_ptr<scalar_t>(),
                                    dbias_part.data_ptr<scalar_t>(), dh0.data_ptr<scalar_t>(),
                                    dB_part.data_ptr<scalar_t>(), dC_part.data_ptr<scalar_t>()};
      dispatch_state_size(Np, [&](auto np) {
        dispatch_bool(args.scalar_A, [&](auto scalar_a) {
          backward_kernel<scalar_t, decltype(np)::value, decltype(scalar_a)::value>(
              args, strided<const scalar_t>(dout), ptr_or_null<scalar_t>(dlast),
              ckpt.data_ptr<scalar_t>(), nparts, grads);
        });
      });
    }
    // partial sums -> gradients; dB, dC back to the (B, G, N, L) layout of the inputs
    dB = dB_part.narrow(4, 0, N).sum(2).transpose(2, 3).contiguous();
    dC = dC_part.narrow(4, 0, N).sum(2).transpose(2, 3).contiguous();
  });
  auto dA = dA_part.sum(0);
  return {du, ddelta, dA, dB, dC, dD_part.sum(0), dz, dbias_part.sum(0), dh0};
}

}  // namespace seqzoo
