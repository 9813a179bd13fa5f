// mixsieve._core_cuda: the per-token mixup kernels on CUDA, for torch tensors. Like the CPU
// binding (csrc/bindings/mixup.cpp) it takes raw pointers (ints, 0 = None), sizes and dtype
// codes, and does not link libtorch; `threads` becomes `cuda_stream` (torch's
// current_stream().cuda_stream). Calls only enqueue work on that stream: no host sync. Sizes
// are checked here; values (ids, lambdas) are guarded in the kernels, which write NaN where
// the CPU kernels raise. This file is compiled by the host compiler; the kernels are in *.cu.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "bind.hpp"
#include "mixup_cuda.hpp"

namespace py = pybind11;
namespace mx = mixsieve::mixup;
namespace mc = mixsieve::mixup::cuda;
using Ptr = std::uintptr_t;

namespace {

template <class T>
T* as(Ptr p) {
  return reinterpret_cast<T*>(p);
}

void* stream_of(Ptr s) { return reinterpret_cast<void*>(s); }

void check(const char* err, const char* what) {
  if (err != nullptr) throw std::runtime_error(std::string(what) + ": CUDA error: " + err);
}

mx::Dtype dtype_of(int code) {
  if (code < 0 || code > 3) throw py::value_error("unknown float dtype code " + std::to_string(code));
  return static_cast<mx::Dtype>(code);
}

mc::Windows windows(Ptr xa, Ptr xb, Ptr lam, Ptr va, Ptr vb, std::int64_t batch, std::int64_t width, int policy) {
  if (batch < 0) throw py::value_error("batch size must be >= 0, got " + std::to_string(batch));
  if (width < 2) throw py::value_error("windows need T + 1 >= 2 tokens, got " + std::to_string(width));
  if (policy != 0 && policy != 1) throw py::value_error("unknown padding policy code " + std::to_string(policy));
  if (batch > 0 && (!xa || !xb || !lam)) throw py::value_error("xa, xb and lam must be given");
  // the deterministic backward sorts 2 B T contributions with 32-bit indices
  if (batch > (std::numeric_limits<std::int32_t>::max() / 2) / (width - 1)) {
    throw py::value_error("too many positions for the CUDA kernels: " + std::to_string(batch) + " x " +
                          std::to_string(width - 1));
  }
  return {as<const std::int64_t>(xa), as<const std::int64_t>(xb), as<const float>(lam),
          as<const std::uint8_t>(va),  as<const std::uint8_t>(vb), batch,
          width,                       static_cast<mx::Policy>(policy)};
}

void check_table(std::int64_t vocab, std::int64_t dim) {
  if (vocab < 1 || dim < 1) {
    throw py::value_error("the table must be [V, D] with V, D >= 1, got [" + std::to_string(vocab) + ", " +
                          std::to_string(dim) + "]");
  }
  if (vocab >= std::numeric_limits<std::uint32_t>::max()) {
    throw py::value_error("vocabulary too large for the CUDA kernels: " + std::to_string(vocab));
  }
}

}  // namespace

PYBIND11_MODULE(_core_cuda, m) {
  m.doc() = "mixsieve CUDA kernels (per-token mixup, MinHash, weighted and soft-cap sampling); raw device pointers, "
            "launched on a given stream";

  m.def(
      "mixup_lambda",
      [](Ptr out, std::int64_t n, double alpha, std::uint64_t seed, std::uint64_t stream, bool dominant,
         Ptr cuda_stream) {
        if (n < 0) throw py::value_error("n must be >= 0");
        if (n > 0 && !out) throw py::value_error("out must be given");
        if (!(alpha > 0) || alpha == std::numeric_limits<double>::infinity()) {
          throw py::value_error("alpha must be a finite number > 0, got " + std::to_string(alpha));
        }
        py::gil_scoped_release release;
        check(mc::fill_lambda(as<float>(out), n, mx::lambda_key(seed, stream), alpha, dominant,
                              stream_of(cuda_stream)),
              "mixup_lambda");
      },
      py::arg("out"), py::arg("n"), py::arg("alpha"), py::arg("seed"), py::arg("stream"), py::arg("dominant"),
      py::arg("cuda_stream"),
      "Fill out[0:n] (float32, on the device) with Beta(alpha, alpha) lambdas keyed by (seed, stream, i): "
      "the same bytes as mixsieve._core.mixup_lambda.");

  m.def(
      "mixup_embed_forward",
      [](Ptr weight, int dtype, std::int64_t vocab, std::int64_t dim, Ptr xa, Ptr xb, Ptr lam, Ptr va, Ptr vb,
         std::int64_t batch, std::int64_t width, int policy, Ptr out, Ptr cuda_stream) {
        check_table(vocab, dim);
        const mc::Windows w = windows(xa, xb, lam, va, vb, batch, width, policy);
        const mx::Dtype dt = dtype_of(dtype);
        if (!weight || (batch > 0 && !out)) throw py::value_error("weight and out must be given");
        py::gil_scoped_release release;
        check(mc::embed_forward(dt, as<const void>(weight), vocab, dim, w, as<void>(out), stream_of(cuda_stream)),
              "mixup_embed_forward");
      },
      py::arg("weight"), py::arg("dtype"), py::arg("vocab"), py::arg("dim"), py::arg("xa"), py::arg("xb"),
      py::arg("lam"), py::arg("va"), py::arg("vb"), py::arg("batch"), py::arg("width"), py::arg("policy"),
      py::arg("out"), py::arg("cuda_stream"),
      "Mixed input embeddings [B, T, D] in the table's dtype. A position whose lambda lies outside [0, 1] or "
      "that reads an id outside [0, V) gets a NaN row.");

  m.def(
      "mixup_embed_backward_workspace",
      [](std::int64_t batch, std::int64_t width, std::int64_t vocab) {
        check_table(vocab, 1);
        if (batch < 0 || width < 2) throw py::value_error("bad window shape");
        if (batch > (std::numeric_limits<std::int32_t>::max() / 2) / (width - 1)) {  // as windows() refuses
          throw py::value_error("too many positions for the CUDA kernels: " + std::to_string(batch) + " x " +
                                std::to_string(width - 1));
        }
        std::size_t bytes = 0;
        check(mc::embed_backward_workspace(batch, width, vocab, &bytes), "mixup_embed_backward_workspace");
        return bytes;
      },
      py::arg("batch"), py::arg("width"), py::arg("vocab"),
      "Bytes of device workspace mixup_embed_backward(deterministic=True) needs.");

  m.def(
      "mixup_embed_backward",
      [](Ptr grad_out, int dtype, std::int64_t vocab, std::int64_t dim, Ptr xa, Ptr xb, Ptr lam, Ptr va, Ptr vb,
         std::int64_t batch, std::int64_t width, int policy, Ptr grad_weight, bool deterministic, Ptr cuda_stream,
         Ptr workspace, std::size_t workspace_bytes) {
        check_table(vocab, dim);
        const mc::Windows w = windows(xa, xb, lam, va, vb, batch, width, policy);
        const mx::Dtype dt = dtype_of(dtype);
        if (!grad_weight || (batch > 0 && !grad_out)) throw py::value_error("grad_out and grad_weight must be given");
        py::gil_scoped_release release;
        check(mc::embed_backward(dt, as<const void>(grad_out), vocab, dim, w, as<void>(grad_weight), deterministic,
                                 as<void>(workspace), workspace_bytes, stream_of(cuda_stream)),
              "mixup_embed_backward");
      },
      py::arg("grad_out"), py::arg("dtype"), py::arg("vocab"), py::arg("dim"), py::arg("xa"), py::arg("xb"),
      py::arg("lam"), py::arg("va"), py::arg("vb"), py::arg("batch"), py::arg("width"), py::arg("policy"),
      py::arg("grad_weight"), py::arg("deterministic"), py::arg("cuda_stream"), py::arg("workspace") = 0,
      py::arg("workspace_bytes") = 0,
      "d loss / d E into grad_weight [V, D] (float32; float64 for a float64 table), every row overwritten "
      "(no zero-fill needed). deterministic=False: zero-fill then atomicAdd. deterministic=True: stable radix "
      "sort of the contributions by row, then one block per row sums them in (position, side) order, the "
      "CPU's order: bitwise equal to the CPU kernel. workspace: mixup_embed_backward_workspace() bytes on the "
      "device (0: cudaMallocAsync on the stream).");

  m.def(
      "mixup_ce",
      [](Ptr logits, int dtype, std::int64_t r0, std::int64_t n, std::int64_t vocab, Ptr xa, Ptr xb, Ptr lam, Ptr va,
         Ptr vb, std::int64_t batch, std::int64_t width, int policy, bool shifted, std::int64_t ignore_index,
         double eps, Ptr loss, Ptr lse, Ptr keep, Ptr gtok, Ptr grad, Ptr cuda_stream) {
        if (vocab < 1) throw py::value_error("the vocabulary size must be >= 1, got " + std::to_string(vocab));
        const mc::Windows w = windows(xa, xb, lam, va, vb, batch, width, policy);
        if (r0 < 0 || n < 0 || r0 + n > batch * (width - 1)) {
          throw py::value_error("positions [" + std::to_string(r0) + ", " + std::to_string(r0 + n) +
                                ") are outside the batch's " + std::to_string(batch * (width - 1)));
        }
        if (!(eps >= 0.0 && eps <= 1.0)) throw py::value_error("label_smoothing must lie in [0, 1]");
        const mx::Dtype dt = dtype_of(dtype);
        const bool forward = gtok == 0;
        if (n > 0 && (!logits || !lse || (forward && (!loss || !keep)) || (!forward && !grad))) {
          throw py::value_error("mixup_ce: a required buffer is missing");
        }
        mc::CeArgs a;
        a.logits = as<const void>(logits);
        a.r0 = r0;
        a.n = n;
        a.vocab = vocab;
        a.shifted = shifted;
        a.ignore_index = ignore_index;
        a.eps = eps;
        a.loss = as<void>(loss);
        a.lse = as<void>(lse);
        a.keep = as<void>(keep);
        a.gtok = as<const void>(gtok);
        a.grad = as<void>(grad);
        py::gil_scoped_release release;
        check(mc::cross_entropy(dt, a, w, stream_of(cuda_stream)), "mixup_ce");
      },
      py::arg("logits"), py::arg("dtype"), py::arg("r0"), py::arg("n"), py::arg("vocab"), py::arg("xa"), py::arg("xb"),
      py::arg("lam"), py::arg("va"), py::arg("vb"), py::arg("batch"), py::arg("width"), py::arg("policy"),
      py::arg("shifted"), py::arg("ignore_index"), py::arg("eps"), py::arg("loss"), py::arg("lse"), py::arg("keep"),
      py::arg("gtok"), py::arg("grad"), py::arg("cuda_stream"),
      "Two-target cross-entropy over positions [r0, r0 + n), as mixsieve._core.mixup_ce (lse: [n, 2], the row "
      "max and log sum exp(z - max)). A position with an ok "
      "target id outside [0, V) or a lambda outside [0, 1] gets a NaN loss and lse and a NaN gradient row.");

  mixsieve::cuda_bind::bind_minhash(m);
  mixsieve::cuda_bind::bind_sampling(m);
  mixsieve::cuda_bind::bind_soft_cap(m);

  m.def(
      "device_count",
      [] {
        const char* err = nullptr;
        const int n = mc::device_count(&err);
        return py::make_tuple(n, err == nullptr ? std::string() : std::string(err));
      },
      "(number of CUDA devices, error message of the CUDA runtime or '').");

  m.def("build_info", [] {
    py::dict d;
    d["cuda_runtime"] = mc::runtime_version();  // compiled-in (static) runtime, e.g. 13000
    d["cuda_driver"] = mc::driver_version();    // 0 without a driver
    d["architectures"] = MIXSIEVE_CUDA_ARCHITECTURES;
    d["kernels"] = "mixup (embedding, cross-entropy, lambdas), minhash signatures, weighted_sample (ares), soft_cap";
    return d;
  });
}
