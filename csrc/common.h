// Small helpers shared by the CPU kernels.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/complex.h>

namespace seqzoo {

// Complex conjugate that is the identity on real types (std::conj would promote a real
// to std::complex, which is not what the kernels want).
template <typename T>
inline T conj_if_complex(T x) {
  return x;
}
template <typename T>
inline c10::complex<T> conj_if_complex(c10::complex<T> x) {
  return c10::complex<T>(x.real(), -x.imag());
}

// Width of the channel block one task owns: as wide as possible (long contiguous rows are
// what the prefetcher likes) while still giving every thread a few tasks.
inline int64_t channel_block(int64_t batch, int64_t channels, int64_t max_block) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t blk = std::min<int64_t>(channels, max_block);
  while (blk > 16 && batch * ((channels + blk - 1) / blk) < 4 * threads) {
    blk = (blk + 1) / 2;
  }
  // keep blocks a multiple of 16 elements so vector loads stay aligned to the row start
  if (blk < channels) blk = std::max<int64_t>(16, (blk + 15) / 16 * 16);
  return std::min(blk, channels);
}

// The layout rule of the kernels that take (B, D, L) sequences (selective scan, causal
// conv): a tensor is "channel-last" when its channels are contiguous (a transposed view of a
// (B, L, D) tensor: stride 1 over D, not over L). Outputs are allocated in an input's layout,
// so such views go through without transposed copies; seqzoo/ops/_layout.py is the same rule
// for the fake kernels.
inline bool channel_last(const at::Tensor& t) { return t.stride(1) == 1 && t.stride(2) != 1; }

inline at::Tensor empty_in_layout_of(const at::Tensor& like, int64_t B, int64_t D, int64_t L,
                                     const at::TensorOptions& opts) {
  return channel_last(like) ? at::empty({B, L, D}, opts).transpose(1, 2) : at::empty({B, D, L}, opts);
}

}  // namespace seqzoo
