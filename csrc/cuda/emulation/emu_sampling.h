// Host emulation of what the A-Res sampler (sampling.cu) uses beyond cuda_runtime.h: atomicMin
// on 64-bit words, host/device copies and stream synchronisation (the emulated stream runs
// every call at once, so a copy is a memcpy and a synchronisation does nothing).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstring>

#include "cuda_runtime.h"

enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };

template <class T>
T atomicMin(T* p, T v) {
  std::atomic_ref<T> r(*p);
  T old = r.load();
  while (v < old && !r.compare_exchange_weak(old, v)) {
  }
  return old;
}

inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t n, cudaMemcpyKind, cudaStream_t) {
  std::memmove(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
