// Host emulation of the CUDA features the mixup kernels use, for checking their logic on a
// machine without a GPU (tests/test_mixup_cuda_emulated.py). Not part of any build.
//
// A launch (kernel<<<grid, threads, 0, s>>>(...), rewritten by the test into emu_launch) runs
// its blocks one after another on `threads` host threads; __syncthreads is a barrier,
// __shared__ variables are statics (one block runs at a time), __shfl_xor_sync exchanges
// through a slot per thread, atomicAdd is an atomic_ref add. Each block is checked to have
// every thread pass the same number of barriers. What this cannot see: warp scheduling,
// the memory model, alignment faults, the device compiler, the static runtime next to torch's.
#pragma once

#include <atomic>
#include <barrier>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static

typedef int cudaError_t;
constexpr cudaError_t cudaSuccess = 0;
typedef void* cudaStream_t;

struct uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

struct EmuDim {
  unsigned x = 0, y = 1, z = 1;
};
inline thread_local EmuDim threadIdx, blockIdx;
inline EmuDim blockDim, gridDim;

inline std::barrier<>* emu_barrier = nullptr;
inline thread_local long emu_syncs = 0;
inline std::vector<double> emu_slots;
inline long emu_launches = 0;

inline void __syncthreads() {
  ++emu_syncs;
  emu_barrier->arrive_and_wait();
}

template <class T>
T __shfl_xor_sync(unsigned, T x, int lane_mask) {
  __syncthreads();
  emu_slots[threadIdx.x] = static_cast<double>(x);  // float and double values round-trip exactly
  __syncthreads();
  return static_cast<T>(emu_slots[threadIdx.x ^ static_cast<unsigned>(lane_mask)]);
}

template <class T>
T atomicAdd(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_add(v);
}

template <class K, class... A>
void emu_launch(K kernel, unsigned grid, unsigned threads, A... args) {
  if (grid == 0 || threads == 0 || threads > 1024) throw std::runtime_error("bad launch configuration");
  ++emu_launches;
  gridDim.x = grid;
  blockDim.x = threads;
  emu_slots.assign(threads, 0.0);
  std::barrier<> bar(threads);
  emu_barrier = &bar;
  std::vector<long> counts(threads);
  std::atomic<bool> uneven{false};
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      threadIdx.x = t;
      for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b;
        emu_syncs = 0;
        kernel(args...);
        counts[t] = emu_syncs;
        bar.arrive_and_wait();  // the block is done
        if (t == 0) {
          for (unsigned u = 1; u < threads; ++u) uneven = uneven || counts[u] != counts[0];
        }
        bar.arrive_and_wait();
      }
    });
  }
  for (auto& th : pool) th.join();
  if (uneven) throw std::runtime_error("threads of a block passed different numbers of __syncthreads");
}

inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated CUDA error"; }
inline cudaError_t cudaMemsetAsync(void* p, int v, std::size_t n, cudaStream_t) {
  std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMallocAsync(void** p, std::size_t n, cudaStream_t) {
  *p = std::malloc(n ? n : 1);
  return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 0;
  return 1;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDriverGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
