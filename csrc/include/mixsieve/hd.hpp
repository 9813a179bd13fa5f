// MIXSIEVE_HD marks functions that the CPU kernels and their CUDA twins (csrc/cuda/) both call:
// __host__ __device__ under nvcc (and under the host emulation of the CUDA kernels, which
// defines those words away), nothing in a plain C++ build. Keeping each kernel's per-element
// arithmetic in such functions is what makes the CPU and the GPU give the same bytes.
#pragma once

#if defined(__CUDACC__) || defined(MIXSIEVE_CUDA_EMULATION)
#define MIXSIEVE_HD __host__ __device__
#else
#define MIXSIEVE_HD
#endif
