// Shared helpers of the binding files (one pybind11 module, mixsieve._core).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

namespace mixsieve_bind {

namespace py = pybind11;

inline unsigned thread_count(int threads) {
  if (threads < 0) {
    throw py::value_error("threads must be >= 0 (0 or None: all cores), got " + std::to_string(threads));
  }
  return static_cast<unsigned>(threads);
}

void bind_sampling(py::module_& m);
void bind_mixture(py::module_& m);
void bind_mixup(py::module_& m);
void bind_lsh_parts(py::module_& m);

}  // namespace mixsieve_bind
