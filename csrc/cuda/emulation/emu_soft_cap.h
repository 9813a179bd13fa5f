// What the soft-cap kernels (../soft_cap.cu) need from the CUDA runtime and cub beyond
// cuda_runtime.h and the radix-sort stand-in: copies, stream waits and an exclusive scan, on
// host memory (emulated device memory is host memory), and the out-of-memory code. Included by soft_cap.cu under
// MIXSIEVE_CUDA_EMULATION only.
#pragma once

#include <cstddef>
#include <cstring>

constexpr cudaError_t cudaErrorMemoryAllocation = 2;  // the runtime's code; the emulated malloc never fails

enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };

inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t n, cudaMemcpyKind, cudaStream_t) {
  if (n) std::memmove(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

namespace cub {
struct DeviceScan {
  template <class In, class Out, class N>
  static cudaError_t ExclusiveSum(void* temp, std::size_t& bytes, In in, Out out, N n, cudaStream_t = nullptr) {
    if (temp == nullptr) {
      bytes = 64;
      return cudaSuccess;
    }
    if (bytes < 64) return 1;
    auto acc = decltype(+in[0]){0};
    for (N i = 0; i < n; ++i) {
      const auto v = in[i];
      out[i] = acc;
      acc += v;
    }
    return cudaSuccess;
  }
};
}  // namespace cub
