// What the CUDA kernels of seqzoo share: launching on torch's current stream with an error
// check, the device guard, and loads/stores that convert fp16/bf16 to the fp32 arithmetic.
//
// With -DSEQZOO_CUDA_EMULATION (tests only: tests/test_cuda_sources.py) the same sources
// compile with g++ against csrc/cuda/emulation.h and their kernels run on the CPU.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/complex.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

#ifdef SEQZOO_CUDA_EMULATION
#include "cuda/emulation.h"
#define SEQZOO_CUDA_GUARD(device) (void)(device)
// dynamic shared memory of the running block, as an array of `type`
#define SEQZOO_DYNAMIC_SMEM(type, name) type* name = reinterpret_cast<type*>(::emu::dynamic_smem())
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define SEQZOO_CUDA_GUARD(device) const c10::cuda::CUDAGuard seqzoo_device_guard_(device)
#define SEQZOO_DYNAMIC_SMEM(type, name)                  \
  extern __shared__ __align__(16) unsigned char name##_raw_[]; \
  type* name = reinterpret_cast<type*>(name##_raw_)
#endif

namespace seqzoo::cuda {

// Launch `kernel` on torch's current stream and check the launch. Dynamic shared memory
// above the default 48 KB is allowed by raising the kernel's limit first.
template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem_bytes, Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
#ifdef SEQZOO_CUDA_EMULATION
  ::emu::launch(kernel, grid, block, smem_bytes, std::forward<Args>(args)...);
#else
  if (smem_bytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem_bytes)));
  }
  kernel<<<grid, block, smem_bytes, c10::cuda::getCurrentCUDAStream()>>>(
      std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

// Streaming multiprocessors of the current device (the emulation pretends to have 132, an H100/H200).
inline int sm_count() {
#ifdef SEQZOO_CUDA_EMULATION
  return 132;
#else
  int n = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  return n;
#endif
}

// The arithmetic type of a storage type: float for fp16/bf16/fp32, double for fp64.
template <typename T>
using acc_t = at::opmath_type<T>;

template <typename T>
__device__ __forceinline__ acc_t<T> load(const T* p) {
  return static_cast<acc_t<T>>(*p);
}
template <typename T, typename A>
__device__ __forceinline__ void store(T* p, A v) {
  *p = static_cast<T>(v);
}

// Vectors of 16 bytes: kVec<T> elements of T move in one load or store.
template <typename T>
constexpr int kVec = 16 / sizeof(T);

template <typename T>
struct alignas(16) Vec {
  T v[kVec<T>];
};

// True when p is 16-byte aligned (vector loads and stores through it are legal).
template <typename T>
__host__ __device__ __forceinline__ bool aligned16(const T* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }
__device__ __forceinline__ double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

// Pause inside a spin-wait on another block's flag (fewer polls of the same L2 line).
__device__ __forceinline__ void spin_pause() {
#if defined(SEQZOO_CUDA_EMULATION) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700)
  __nanosleep(32);
#endif
}

// A load that bypasses L1 (which is not coherent between SMs): for values another block
// published behind a flag during this kernel.
template <typename T>
__device__ __forceinline__ T load_cg(const T* p) {
  return __ldcg(p);
}
template <typename R>
__device__ __forceinline__ c10::complex<R> load_cg(const c10::complex<R>* p) {
  const R* r = reinterpret_cast<const R*>(p);
  return c10::complex<R>(__ldcg(r), __ldcg(r + 1));
}

// Complex conjugate that is the identity on real types.
template <typename T>
__device__ __forceinline__ T conj(T x) {
  return x;
}
template <typename R>
__device__ __forceinline__ c10::complex<R> conj(c10::complex<R> x) {
  return c10::complex<R>(x.real(), -x.imag());
}

// warp-wide sum (every lane gets it)
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = 16; off >= 1; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

}  // namespace seqzoo::cuda
