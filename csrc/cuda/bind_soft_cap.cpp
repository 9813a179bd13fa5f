// mixsieve._core_cuda: soft_cap_sample on CUDA (see bind.hpp). Takes device pointers (ints)
// and torch's stream; checks sizes and parameters here (ValueError naming the argument), the
// scores on the device. Unlike the mixup calls it returns only when the results are written:
// the batch loop runs on the host and waits for the stream (soft_cap_cuda.hpp). Its buffers
// come from the Python callables alloc / free when given (torch's caching allocator), each
// call taking the GIL back for the moment.
#include <Python.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "bind.hpp"
#include "mixsieve/soft_cap.hpp"
#include "soft_cap_cuda.hpp"

namespace py = pybind11;

namespace mixsieve {
namespace cuda_bind {

void bind_soft_cap(py::module_& m) {
  m.def(
      "soft_cap_sample",
      [](std::uintptr_t scores, bool f32, std::int64_t n, std::int64_t total, double penalty, std::int64_t batch_size,
         std::uint64_t seed, std::uintptr_t counts, std::uintptr_t picks, std::uintptr_t cuda_stream,
         const py::object& alloc, const py::object& give_back) {
        if (n < 0) throw py::value_error("n must be >= 0, got " + std::to_string(n));
        if (n >= (std::int64_t{1} << 31)) {
          throw py::value_error("soft_cap_sample on CUDA takes fewer than 2**31 scores, got " + std::to_string(n));
        }
        if (n > 0 && (!scores || !counts)) throw py::value_error("scores and counts must be given");
        soft_cap_check(penalty, batch_size, total);  // std::invalid_argument: ValueError
        if (total > 0 && n == 0) throw py::value_error("total > 0 picks need at least one score");
        if (total > 0 && batch_size > n && total > n) {
          throw py::value_error("batch_size=" + std::to_string(batch_size) + " exceeds the " + std::to_string(n) +
                                " examples: a batch samples without replacement");
        }
        if (alloc.is_none() != give_back.is_none()) throw py::value_error("alloc and free must be given together");
        soft_cap_cuda::DeviceMemory memory;
        if (!alloc.is_none()) {  // alloc and free outlive the call: they are its arguments
          memory.get = [&alloc](std::size_t bytes) {
            py::gil_scoped_acquire acquire;
            return reinterpret_cast<void*>(alloc(bytes).cast<std::uintptr_t>());
          };
          memory.put = [&give_back](void* p) {
            py::gil_scoped_acquire acquire;
            give_back(reinterpret_cast<std::uintptr_t>(p));
          };
        }
        // Ctrl-C: between batches (about every 100 ms) the loop briefly takes the GIL back to
        // run Python's signal handlers; an exception they raise (KeyboardInterrupt) stops it.
        auto interrupted = [] {
          py::gil_scoped_acquire acquire;
          return PyErr_CheckSignals() != 0;
        };
        try {
          py::gil_scoped_release release;
          soft_cap_cuda::sample(reinterpret_cast<const void*>(scores), f32, static_cast<std::size_t>(n), total,
                                penalty, batch_size, seed, reinterpret_cast<std::int64_t*>(counts),
                                reinterpret_cast<std::int64_t*>(picks), reinterpret_cast<void*>(cuda_stream),
                                interrupted, nullptr, memory);
        } catch (const SoftCapInterrupted&) {
          throw py::error_already_set();  // the error the signal handler set, with the GIL held
        }
      },
      py::arg("scores"), py::arg("f32"), py::arg("n"), py::arg("total"), py::arg("penalty"), py::arg("batch_size"),
      py::arg("seed"), py::arg("counts"), py::arg("picks"), py::arg("cuda_stream"), py::arg("alloc") = py::none(),
      py::arg("free") = py::none(),
      "Soft-cap sampling on the device: scores (n float32 if f32, else float64) -> counts (int64 [n], "
      "overwritten) and, if picks != 0, the picks in pick order (int64 [total]); the same bytes as "
      "mixsieve._core.soft_cap_sample for the same seed. Returns when they are written (waits for cuda_stream). "
      "ValueError with the CPU's messages for bad parameters and scores. alloc(nbytes) -> device pointer and "
      "free(pointer), given together, supply the device buffers (e.g. from torch's caching allocator); without "
      "them the buffers come from cudaMallocAsync on cuda_stream.");
}

}  // namespace cuda_bind
}  // namespace mixsieve
