// The pieces of mixsieve._core_cuda, one registration function per kernel family, each in its
// own bind_*.cpp (compiled by the host compiler, like bindings.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace mixsieve {
namespace cuda_bind {

void bind_minhash(pybind11::module_& m);   // bind_minhash.cpp: MinHash signatures from text
void bind_sampling(pybind11::module_& m);  // bind_sampling.cpp: keyed A-Res weighted_sample
void bind_soft_cap(pybind11::module_& m);  // bind_soft_cap.cpp: soft-cap sampling

}  // namespace cuda_bind
}  // namespace mixsieve
