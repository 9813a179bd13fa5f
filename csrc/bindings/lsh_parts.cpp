// Pieces of LSH clustering for distributed use (mixsieve.ray): the band keys of signatures, so
// that documents can be grouped by bucket across machines with the keys clustering uses.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common.hpp"
#include "mixsieve/lsh.hpp"

namespace mixsieve_bind {

namespace {

template <class T>
py::array_t<std::uint64_t> band_keys(const py::array_t<T, py::array::c_style>& sigs, int bands, int rows) {
  if (sigs.ndim() != 2) throw py::value_error("signatures must be a 2-D array [documents, num_perm]");
  const auto n = static_cast<std::size_t>(sigs.shape(0));
  const auto k = static_cast<std::size_t>(sigs.shape(1));
  if (bands < 1 || rows < 1 || static_cast<std::size_t>(bands) * static_cast<std::size_t>(rows) > k) {
    throw py::value_error("bands * rows must be >= 1 and at most num_perm (" + std::to_string(k) + "), got " +
                          std::to_string(bands) + " * " + std::to_string(rows));
  }
  py::array_t<std::uint64_t> out({n, static_cast<std::size_t>(bands)});
  std::uint64_t* o = out.mutable_data();
  const T* s = sigs.data();
  {
    py::gil_scoped_release release;
    for (std::size_t i = 0; i < n; ++i) {
      mixsieve::lsh_band_keys(s + i * k, bands, rows, o + i * static_cast<std::size_t>(bands));
    }
  }
  return out;
}

}  // namespace

void bind_lsh_parts(py::module_& m) {
  m.def("band_keys", &band_keys<std::uint32_t>, py::arg("signatures").noconvert(), py::arg("bands"),
        py::arg("rows"),
        "[n, bands] uint64 band keys of uint32 signatures [n, num_perm]: the bucket keys of LSH clustering "
        "(band b hashed with xxh64 seeded by b).");
  m.def("band_keys", &band_keys<std::uint64_t>, py::arg("signatures").noconvert(), py::arg("bands"),
        py::arg("rows"), "As above, for uint64 signatures.");
}

}  // namespace mixsieve_bind
