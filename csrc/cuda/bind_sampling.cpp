// mixsieve._core_cuda: keyed A-Res weighted sampling on device weights (sampling.cu). Takes raw
// device pointers and torch's stream like the mixup functions; raises the CPU binding's
// ValueErrors (csrc/bindings/sampling.cpp) with the same text for bad weights and k too large.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

#include "bind.hpp"
#include "sampling_cuda.hpp"

namespace py = pybind11;
namespace scu = mixsieve::sampling_cuda;
using Ptr = std::uintptr_t;

namespace mixsieve {
namespace cuda_bind {

namespace {

// As the CPU binding writes a value (format_value there).
std::string format_value(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

scu::AresTuning tuning(int mode, bool use_floor, double floor, std::int64_t capacity, std::int64_t min_candidates) {
  if (mode < 0 || mode > 2) throw py::value_error("mode must be 0, 1 or 2, got " + std::to_string(mode));
  if (capacity < 0 || min_candidates < 0) throw py::value_error("capacity and min_candidates must be >= 0");
  scu::AresTuning t;
  t.mode = mode;
  t.use_floor = use_floor;
  t.floor = floor;
  t.capacity = capacity;
  t.min_candidates = min_candidates;
  return t;
}

}  // namespace

void bind_sampling(py::module_& m) {
  m.def(
      "ares_workspace_bytes",
      [](std::int64_t n, std::int64_t k, int mode, bool use_floor, double floor, std::int64_t capacity,
         std::int64_t min_candidates) {
        if (n < 0 || k < 0) throw py::value_error("n and k must be >= 0");
        const scu::AresTuning tune = tuning(mode, use_floor, floor, capacity, min_candidates);
        std::size_t bytes = 0;
        const char* err = scu::ares_workspace_bytes(n, k, &bytes, &tune);
        if (err != nullptr) throw std::runtime_error(std::string("ares_workspace_bytes: CUDA error: ") + err);
        return bytes;
      },
      py::arg("n"), py::arg("k"), py::arg("mode") = 0, py::arg("use_floor") = false, py::arg("floor") = 0.0,
      py::arg("capacity") = 0, py::arg("min_candidates") = 0,
      "Bytes of device workspace ares_sample takes on its usual path (one scan) for these n, k and paths; "
      "launches nothing (call with the device current).");

  m.def(
      "ares_sample",
      [](Ptr weights, bool f32, std::int64_t n, std::int64_t k, std::uint64_t seed, Ptr ids_out, Ptr keys_out,
         Ptr workspace, std::size_t workspace_bytes, Ptr cuda_stream, int mode, bool use_floor, double floor,
         std::int64_t capacity, std::int64_t min_candidates) {
        if (n < 0) throw py::value_error("n must be >= 0, got " + std::to_string(n));
        if (k < 0) throw py::value_error("k must be >= 0, got " + std::to_string(k));
        if (n > 0 && !weights) throw py::value_error("weights must be given");
        if (k > 0 && !ids_out) throw py::value_error("ids_out must be given");
        const scu::AresTuning tune = tuning(mode, use_floor, floor, capacity, min_candidates);
        scu::AresResult r;
        const char* err = nullptr;
        {
          py::gil_scoped_release release;
          err = scu::ares_sample(reinterpret_cast<const void*>(weights), f32, n, k, seed,
                                 reinterpret_cast<std::int64_t*>(ids_out), reinterpret_cast<double*>(keys_out),
                                 reinterpret_cast<void*>(workspace), workspace ? workspace_bytes : 0,
                                 reinterpret_cast<void*>(cuda_stream), &r, &tune);
        }
        if (err != nullptr) throw std::runtime_error(std::string("weighted_sample: CUDA error: ") + err);
        if (r.status == scu::AresStatus::BadWeight) {
          const double v = r.bad_value;
          const char* what = std::isnan(v) ? "NaN" : (std::isinf(v) ? "infinite" : "negative");
          throw py::value_error("weights[" + std::to_string(r.bad_index) + "] = " + format_value(v) + " is " + what +
                                "; weights must be finite and >= 0");
        }
        if (r.status == scu::AresStatus::TooFewPositive) {
          throw py::value_error("k=" + std::to_string(k) + " exceeds the " + std::to_string(r.positive) +
                                " items with positive weight (sampling without replacement)");
        }
        py::dict info;
        info["done"] = r.status == scu::AresStatus::Done;
        info["positive"] = r.positive;
        info["scans"] = r.scans;
        info["dense"] = r.dense;
        info["candidates"] = r.candidates;
        info["allocated"] = r.allocated;
        return info;
      },
      py::arg("weights"), py::arg("f32"), py::arg("n"), py::arg("k"), py::arg("seed"), py::arg("ids_out"),
      py::arg("keys_out"), py::arg("workspace"), py::arg("workspace_bytes"), py::arg("cuda_stream"),
      py::arg("mode") = 0, py::arg("use_floor") = false, py::arg("floor") = 0.0, py::arg("capacity") = 0,
      py::arg("min_candidates") = 0,
      "Keyed A-Res sample of k of n device weights (float32 if f32, else float64): ids_out[k] (int64) and, if "
      "keys_out != 0, keys_out[k] (float64) get the CPU's ids and keys, best first. Waits for the stream once "
      "(twice on a retry) to read the scan's counters; the sort and the output are left enqueued. Temporary "
      "buffers come from workspace (ares_workspace_bytes of them; 0: none) and cudaMallocAsync beyond it. Raises "
      "ValueError as the CPU binding does (bad weight, k above the positive count). Returns a dict: done (False: "
      "keys leave the double range or too many items to sort, nothing written: use the CPU path), positive, "
      "scans, dense, candidates, allocated (bytes beyond the workspace). mode (1: no floor, 2: floored), "
      "use_floor/floor, capacity and min_candidates force paths for tests.");
}

}  // namespace cuda_bind
}  // namespace mixsieve
