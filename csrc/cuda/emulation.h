// Runs seqzoo's CUDA kernels on the CPU, for testing on a machine without a GPU.
//
// Not part of the library: only tests/test_cuda_sources.py compiles the *_cuda.cu files
// with g++ and -DSEQZOO_CUDA_EMULATION, which makes csrc/cuda/compat.cuh include this
// header instead of the CUDA runtime. Every block of a launch runs in turn; each CUDA
// thread of the block is a fiber (ucontext) that runs until it reaches a synchronisation
// point (__syncthreads, a warp shuffle or __syncwarp) and waits there until every thread
// it synchronises with (the block, or the lanes of its warp that have not exited) has
// arrived. This checks what a GPU run would check about indexing, tiling, barriers,
// shuffles and the host code around the launches, with the kernels' own source:
//   - dynamic shared memory is filled with NaN bytes before each block, so a read of an
//     element no thread wrote shows up in the results;
//   - a shuffle with a full mask after some lanes of the warp returned, and a deadlock
//     (threads waiting at different barriers), stop the launch with an error.
// What it cannot check: races between threads that a missing barrier would cause on a GPU
// only by timing, memory ordering between blocks, and speed.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};
using cudaStream_t = void*;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
// one copy per kernel instantiation, shared by the fibers of the running block
#define __shared__ static

namespace emu {

enum class Wait { kNone, kBlock, kWarp, kDone };

struct Fiber {
  ucontext_t ctx;
  uint3 tid;
  int lane = 0, warp = 0;
  Wait wait = Wait::kNone;
  alignas(16) unsigned char slot[16];  // the value this lane offers in a shuffle
};

struct State {
  dim3 grid, block;
  uint3 bidx{0, 0, 0};
  std::vector<Fiber> fibers;
  std::vector<std::vector<char>> stacks;
  std::vector<double> dyn_smem;  // double: 8-byte aligned storage
  ucontext_t scheduler;
  Fiber* cur = nullptr;
  std::function<void()> body;
  std::string error;
};

inline State& state() {
  static State s;
  return s;
}

inline void fail(const std::string& msg) {
  if (state().error.empty()) state().error = msg;
}

inline void trampoline() {
  State& s = state();
  try {
    s.body();
  } catch (const std::exception& e) {  // an exception must not unwind past the fiber's stack
    fail(e.what());
  }
  s.cur->wait = Wait::kDone;
  // returning resumes uc_link (the scheduler)
}

// Stop here until the threads this one synchronises with have arrived.
inline void arrive(Wait kind) {
  State& s = state();
  Fiber* me = s.cur;
  me->wait = kind;
  swapcontext(&me->ctx, &s.scheduler);
  s.cur = me;
}

inline void run_block() {
  State& s = state();
  const int n = static_cast<int>(s.fibers.size());
  for (int i = 0; i < n; ++i) {
    Fiber& f = s.fibers[i];
    f.wait = Wait::kNone;
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = s.stacks[i].data();
    f.ctx.uc_stack.ss_size = s.stacks[i].size();
    f.ctx.uc_link = &s.scheduler;
    makecontext(&f.ctx, trampoline, 0);
  }
  for (;;) {
    bool ran = false;
    for (int i = 0; i < n; ++i) {
      if (s.fibers[i].wait != Wait::kNone) continue;
      s.cur = &s.fibers[i];
      swapcontext(&s.scheduler, &s.fibers[i].ctx);
      ran = true;
    }
    // release the barriers every participant has reached
    bool all_done = true, block_ready = true;
    for (auto& f : s.fibers) {
      if (f.wait != Wait::kDone) all_done = false;
      if (f.wait != Wait::kDone && f.wait != Wait::kBlock) block_ready = false;
    }
    if (all_done) return;
    bool released = false;
    if (block_ready) {
      for (auto& f : s.fibers)
        if (f.wait == Wait::kBlock) f.wait = Wait::kNone, released = true;
    }
    for (int w = 0; w * 32 < n; ++w) {
      bool warp_ready = true, any = false;
      for (int i = w * 32; i < std::min(n, w * 32 + 32); ++i) {
        const Wait k = s.fibers[i].wait;
        if (k != Wait::kDone && k != Wait::kWarp) warp_ready = false;
        if (k == Wait::kWarp) any = true;
      }
      if (warp_ready && any) {
        for (int i = w * 32; i < std::min(n, w * 32 + 32); ++i)
          if (s.fibers[i].wait == Wait::kWarp) s.fibers[i].wait = Wait::kNone, released = true;
      }
    }
    if (!ran && !released) {
      fail("deadlock: threads of a block wait at different barriers (a __syncthreads or a "
           "shuffle that not every thread reaches)");
      return;
    }
  }
}

template <typename... KArgs, typename... Args>
void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem_bytes, Args&&... args) {
  State& s = state();
  s.error.clear();
  s.grid = grid;
  s.block = block;
  const unsigned n = block.x * block.y * block.z;
  if (n == 0 || n > 1024) throw std::runtime_error("emulated launch: bad block size");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) throw std::runtime_error("emulated launch: empty grid");
  s.fibers.assign(n, Fiber{});
  if (s.stacks.size() < n) s.stacks.resize(n);
  for (auto& st : s.stacks) st.resize(256 * 1024);
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = s.fibers[i];
    f.tid = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
    f.lane = static_cast<int>(i % 32);
    f.warp = static_cast<int>(i / 32);
  }
  std::tuple<std::decay_t<KArgs>...> bound(std::forward<Args>(args)...);
  s.body = [&] { std::apply(kernel, bound); };
  s.dyn_smem.assign((smem_bytes + 7) / 8, 0.0);
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        s.bidx = uint3{bx, by, bz};
        std::memset(s.dyn_smem.data(), 0xff, s.dyn_smem.size() * sizeof(double));  // NaN
        run_block();
        if (!s.error.empty()) {
          throw std::runtime_error("emulated kernel, block (" + std::to_string(bx) + ", " +
                                   std::to_string(by) + ", " + std::to_string(bz) + "): " + s.error);
        }
      }
}

inline void* dynamic_smem() { return state().dyn_smem.data(); }

// A spin-wait on another block's result: blocks run one after the other here, so a wait
// that does not end at once never ends.
inline void spin() {
  static thread_local long spins = 0;
  if (++spins > 1000000) {
    spins = 0;
    throw std::runtime_error("a block spins forever waiting for another block (look-back on a flag never set)");
  }
}

template <typename T>
T shuffle(unsigned mask, T v, int src, int width) {
  static_assert(sizeof(T) <= 16, "shuffle of a type wider than 16 bytes");
  State& s = state();
  Fiber* me = s.cur;
  if (mask == 0xffffffffu) {
    const int base = me->warp * 32;
    for (int i = base; i < std::min<int>(base + 32, static_cast<int>(s.fibers.size())); ++i)
      if (s.fibers[i].wait == Wait::kDone) fail("shuffle with a full mask after a lane of the warp returned");
  }
  std::memcpy(me->slot, &v, sizeof(T));
  arrive(Wait::kWarp);
  const int seg = me->lane & ~(width - 1);
  const int from = me->warp * 32 + seg + (src & (width - 1));
  T r;
  if (from >= static_cast<int>(s.fibers.size()) || s.fibers[from].wait == Wait::kDone) {
    fail("shuffle reads a lane that returned or does not exist");
    r = v;
  } else {
    std::memcpy(&r, s.fibers[from].slot, sizeof(T));
  }
  arrive(Wait::kWarp);  // nobody overwrites its slot before every lane has read
  return r;
}

}  // namespace emu

#define threadIdx (::emu::state().cur->tid)
#define blockIdx (::emu::state().bidx)
#define blockDim (::emu::state().block)
#define gridDim (::emu::state().grid)
constexpr int warpSize = 32;

inline void __syncthreads() { ::emu::arrive(::emu::Wait::kBlock); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::emu::arrive(::emu::Wait::kWarp); }
inline void __threadfence() {}
template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return ::emu::shuffle(mask, v, src, width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::emu::shuffle(mask, v, (::emu::state().cur->lane ^ lane_mask), width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = ::emu::state().cur->lane & (width - 1);
  return ::emu::shuffle(mask, v, lane >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : lane, width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = ::emu::state().cur->lane & (width - 1);
  return ::emu::shuffle(mask, v, lane + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane, width);
}
template <typename T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <typename T>
T atomicExch(T* p, T v) {
  const T old = *p;
  *p = v;
  return old;
}
template <typename T>
T __ldcg(const T* p) {
  return *p;
}
inline void __nanosleep(unsigned) { ::emu::spin(); }

inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
using std::max;
using std::min;
