// The keyed A-Res sampler on CUDA (sampling.cu): weighted_sample(method="ares",
// replace=False) on device weights, giving the CPU's ids and keys (same order, same bits).
// This header is what the binding (bind_sampling.cpp, compiled by the host compiler) sees: no
// CUDA types. Pointers are device pointers; `stream` is a cudaStream_t (torch's current
// stream).
//
// Unlike the mixup launchers this one synchronises with the host: it must learn whether the
// weights are valid, how many are positive and how many candidates the scan kept before it
// can size the sort. It waits for the stream once after the scan (twice when the scan is
// redone, see AresRun), then enqueues the sort and the output and returns without waiting for
// them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mixsieve {
namespace sampling_cuda {

// How a call ended. Done: ids_out[0, k) and keys_out[0, k) will hold the sample once the
// stream gets there. The others wrote nothing.
enum class AresStatus : int {
  Done = 0,
  BadWeight = 1,       // weights[bad_index] = bad_value is negative, NaN or infinite (the first such)
  TooFewPositive = 2,  // fewer than k weights are positive (positive says how many)
  NeedsHost = 3,       // keys leave the normal double range: run the CPU path (ares_wide.hpp) instead
};

struct AresResult {
  AresStatus status = AresStatus::Done;
  std::int64_t bad_index = -1;
  double bad_value = 0.0;
  std::int64_t positive = 0;  // weights > 0 (valid weights only)
  // What ran, for tests and benchmarks: scans (1, or 2 after a retry), whether the last one
  // kept every positive weight (dense, no floor), the candidates it kept.
  int scans = 0;
  bool dense = false;
  std::int64_t candidates = 0;
  std::size_t allocated = 0;  // bytes that did not fit in the workspace (cudaMallocAsync)
};

// Test hooks: force the paths that random weights almost never take.
struct AresTuning {
  int mode = 0;            // 0: choose; 1: dense (no floor); 2: floored (sparse) even where dense would be chosen
  bool use_floor = false;  // use `floor` instead of the estimate (sparse scans)
  double floor = 0.0;
  std::int64_t capacity = 0;        // > 0: candidate buffer of the first sparse scan
  std::int64_t min_candidates = 0;  // > 0: instead of 16384, the fewest candidates a floor aims at
};

// Bytes of device workspace that ares_sample takes when its first scan suffices (the usual
// case), for these n, k and tuning; nothing is launched. Needs the device current (cub asks
// it about its limits).
const char* ares_workspace_bytes(std::int64_t n, std::int64_t k, std::size_t* bytes,
                                 const AresTuning* tuning = nullptr);

// The k items with the largest keys pm_log(u_id) / w_id (AresKeys(seed)), best first, ties by
// lower id: ids_out[k] (int64) and keys_out[k] (float64, may be null). w: n float32 (f32) or
// float64 weights. Temporary buffers come from `workspace` (ares_workspace_bytes of them:
// e.g. a torch tensor, which torch's allocator caches between calls), and from
// cudaMallocAsync on the stream for what does not fit (any part, with workspace == nullptr).
// Returns nullptr or the CUDA error message; *result says how it ended.
const char* ares_sample(const void* w, bool f32, std::int64_t n, std::int64_t k, std::uint64_t seed,
                        std::int64_t* ids_out, double* keys_out, void* workspace, std::size_t workspace_bytes,
                        void* stream, AresResult* result, const AresTuning* tuning = nullptr);

}  // namespace sampling_cuda
}  // namespace mixsieve
