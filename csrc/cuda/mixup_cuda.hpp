// Launchers of the per-token mixup kernels on a CUDA stream (mixup_kernels.cu). This header is
// what the binding (bindings.cpp, compiled by the host compiler) sees: no CUDA types, so the
// pybind11 side never goes through nvcc. Pointers are device pointers; `stream` is a
// cudaStream_t (torch's current stream). Each launcher only enqueues work: no host sync.
// It returns nullptr, or the CUDA error message of a failed launch.
//
// Values are never trusted: an id outside [0, V) or a lambda outside [0, 1] (NaN included)
// does not make a kernel read or write out of bounds; the affected output row (forward
// embedding, logit gradient) or loss is NaN instead. The Python layer checks values when asked.
#pragma once

#include <cstddef>
#include <cstdint>

#include "mixsieve/mixup_math.hpp"

namespace mixsieve {
namespace mixup {
namespace cuda {

// Token windows [B, T1] in device memory (the struct the CPU kernels use).
using mixup::Windows;

const char* fill_lambda(float* out, std::int64_t n, std::uint64_t key, double alpha, bool dominant, void* stream);

const char* embed_forward(Dtype dtype, const void* weight, std::int64_t vocab, std::int64_t dim, const Windows& w,
                          void* out, void* stream);

// Bytes of device workspace the deterministic backward needs (sort buffers and cub's scratch).
const char* embed_backward_workspace(std::int64_t batch, std::int64_t width, std::int64_t vocab,
                                     std::size_t* bytes);

// grad_weight [V, D] (float32, float64 for a float64 table) is overwritten, every row: the
// atomic path zero-fills it on the stream first, the deterministic one writes each row once.
// The deterministic path uses `workspace` (at least embed_backward_workspace bytes); with
// workspace == nullptr it allocates one with cudaMallocAsync on the stream.
const char* embed_backward(Dtype dtype, const void* grad_out, std::int64_t vocab, std::int64_t dim, const Windows& w,
                           void* grad_weight, bool deterministic, void* workspace, std::size_t workspace_bytes,
                           void* stream);

struct CeArgs {
  const void* logits;  // row r0 of the flat [B*T, V] logits
  std::int64_t r0, n, vocab;
  bool shifted;
  std::int64_t ignore_index;
  double eps;
  void* loss;        // [n] (float32, float64 for float64 logits) forward
  void* lse;         // [n, 2] row max and log sum exp(z - max): forward writes, backward reads
  void* keep;        // [n] forward
  const void* gtok;  // [n] backward; nullptr: forward
  void* grad;        // [n, V] in the logits' type, may alias logits; nullptr: no gradient
};
const char* cross_entropy(Dtype dtype, const CeArgs& a, const Windows& w, void* stream);

// Devices the CUDA runtime sees (0 with *error set when it cannot initialise), its version.
int device_count(const char** error);
int runtime_version();
int driver_version();

}  // namespace cuda
}  // namespace mixup
}  // namespace mixsieve
