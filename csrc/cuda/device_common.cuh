// Device helpers shared by the CUDA mixup kernels (mixup_embed.cu, mixup_ce.cu): window
// indexing and the padding policy on the device, value guards, 16-byte packs, launch helpers.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "mixup_cuda.hpp"

namespace mixsieve {
namespace mixup {
namespace cuda {
namespace detail {

using i64 = std::int64_t;

// ---------------------------------------------------------------------------------------------
// Windows and values

__device__ __forceinline__ bool a_valid(const Windows& w, i64 i) { return w.va == nullptr || w.va[i] != 0; }
__device__ __forceinline__ bool b_valid(const Windows& w, i64 i) { return w.vb == nullptr || w.vb[i] != 0; }
__device__ __forceinline__ TokenMix token(const Windows& w, i64 i) {
  return effective_lambda(w.lam[i], a_valid(w, i), b_valid(w, i), w.policy);
}
__device__ __forceinline__ bool lam_ok(float l) { return l >= 0.0f && l <= 1.0f; }  // false for NaN
__device__ __forceinline__ bool id_ok(i64 id, i64 vocab) { return id >= 0 && id < vocab; }
// Window index of position r = b * T + t.
__device__ __forceinline__ i64 window_index(const Windows& w, i64 r) {
  const i64 steps = w.width - 1;
  return (r / steps) * w.width + r % steps;
}

template <class M>
__device__ __forceinline__ M quiet_nan();
template <>
__device__ __forceinline__ float quiet_nan<float>() {
  return f32_from_bits(0x7FC00000u);
}
template <>
__device__ __forceinline__ double quiet_nan<double>() {
  return f64_from_bits(0x7FF8000000000000ULL);
}

__device__ __forceinline__ float expm(float x) { return fast_expf(x); }  // as the CPU kernels
__device__ __forceinline__ double expm(double x) { return exp(x); }
__device__ __forceinline__ float logm(float x) { return logf(x); }
__device__ __forceinline__ double logm(double x) { return log(x); }

// 16 bytes of elements, for vectorised loads and stores of aligned rows.
template <class T>
union Pack {
  uint4 u;
  T e[16 / sizeof(T)];
};

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

inline const char* last_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

inline unsigned grid_for(i64 items, i64 cap = i64(1) << 20) {
  return static_cast<unsigned>(items < cap ? items : cap);
}

}  // namespace detail
}  // namespace cuda
}  // namespace mixup
}  // namespace mixsieve
