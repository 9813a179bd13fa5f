// soft_cap_sample on CUDA (soft_cap.cu). This header is what the binding (bind_soft_cap.cpp,
// compiled by the host compiler) sees: no CUDA types.
//
// Unlike the mixup launchers this is not a single enqueue: the batch loop is soft_cap_drive
// (mixsieve/soft_cap.hpp), the one the CPU runs, making each decision on the host from a few
// scalars the device computes, so the function waits for `stream` at the points soft_cap.cu
// lists and returns when counts and picks are written. Errors are therefore thrown, as the
// CPU's are: std::invalid_argument with the CPU's messages (bad parameters, the first
// non-finite score, a batch that cannot find b items with weight > 0), std::runtime_error for
// CUDA errors, SoftCapInterrupted when `interrupted` returns true (checked between batches
// about every 100 ms).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace mixsieve {
namespace soft_cap_cuda {

// Where the call's device buffers come from. The band buffers grow with what a batch finds, so
// they are taken as needed (up to ~56 bytes per race point of a band; see docs/gpu.md), not
// sized up front. get(bytes) returns device memory usable on `stream` or throws; put(p) gives
// it back (called once per pointer, the last time when the call ends, also on an error; it
// must not throw). The Python layer passes torch's caching allocator, so that the memory torch
// holds cached serves these buffers too. When get is empty: cudaMallocAsync / cudaFreeAsync on
// `stream` (the device's default pool, which another allocator's cache does not give back to;
// running out raises an error that says so and names the bytes).
struct DeviceMemory {
  std::function<void*(std::size_t)> get;
  std::function<void(void*)> put;
};

// scores: n float32 (f32) or float64 values; counts: int64 [n]; picks: int64 [total] or
// nullptr; all device pointers. stream: a cudaStream_t. Same bytes as the CPU's
// soft_cap_sample for the same arguments and seed. n must be below 2^31 (cub's sizes).
// trace: see soft_cap_drive (tests).
void sample(const void* scores, bool f32, std::size_t n, std::int64_t total, double penalty, std::int64_t batch_size,
            std::uint64_t seed, std::int64_t* counts, std::int64_t* picks, void* stream,
            const std::function<bool()>& interrupted = nullptr,
            const std::function<void(const char*, double)>& trace = nullptr, const DeviceMemory& memory = {});

}  // namespace soft_cap_cuda
}  // namespace mixsieve
