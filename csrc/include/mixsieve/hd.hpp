// MIXSIEVE_HD marks functions that the CPU kernels and their CUDA twins (csrc/cuda/) both call:
// __host__ __device__ under nvcc, always inlined everywhere. Keeping each kernel's per-element
// arithmetic in such functions is what makes the CPU and the GPU give the same bytes. Write
// `MIXSIEVE_HD inline` for a free function in a header (the macro does not say inline, so that
// `MIXSIEVE_HD inline constexpr` stays valid).
#pragma once

#if defined(__CUDACC__)
#define MIXSIEVE_HD __host__ __device__ __attribute__((always_inline))
#elif defined(__GNUC__)
#define MIXSIEVE_HD __attribute__((always_inline))
#else
#define MIXSIEVE_HD
#endif
