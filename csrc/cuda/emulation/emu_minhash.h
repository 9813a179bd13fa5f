// What the MinHash kernels (../minhash.cu) use beyond cuda_runtime.h, emulated on the host for
// tests/test_minhash_cuda_emulated.py: cub::DeviceScan's exclusive scans (a sequential loop;
// cub's own scan is not what is under test, the kernels' use of its results is) and atomicMin
// on 32- and 64-bit words (a compare-and-swap loop).
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <type_traits>

namespace cub {
struct DeviceScan {
  template <class In, class Out, class Op, class V>
  static cudaError_t ExclusiveScan(void* temp, std::size_t& bytes, In in, Out out, Op op, V init, int n,
                                   cudaStream_t = nullptr) {
    if (temp == nullptr) {
      bytes = 64;
      return cudaSuccess;
    }
    if (bytes < 64) return 1;
    V acc = init;
    for (int i = 0; i < n; ++i) {
      const V x = in[i];  // in may equal out
      out[i] = acc;
      acc = op(acc, x);
    }
    return cudaSuccess;
  }

  struct Plus {
    template <class V>
    V operator()(const V& x, const V& y) const {
      return x + y;
    }
  };

  template <class In, class Out>
  static cudaError_t ExclusiveSum(void* temp, std::size_t& bytes, In in, Out out, int n, cudaStream_t s = nullptr) {
    using V = std::remove_cv_t<std::remove_reference_t<decltype(in[0])>>;
    return ExclusiveScan(temp, bytes, in, out, Plus{}, V{}, n, s);
  }
};
}  // namespace cub

template <class T>
T emu_atomic_min(T* p, T v) {
  std::atomic_ref<T> r(*p);
  T old = r.load();
  while (v < old && !r.compare_exchange_weak(old, v)) {
  }
  return old;
}
inline unsigned atomicMin(unsigned* p, unsigned v) { return emu_atomic_min(p, v); }
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) { return emu_atomic_min(p, v); }
