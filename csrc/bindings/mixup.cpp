// Per-token mixup kernels for torch tensors on the CPU. The module does not link libtorch:
// the Python layer (mixsieve.mixup) checks shapes, dtypes, devices and contiguity and passes
// data pointers, sizes and dtype codes; these functions check the sizes once more, check the
// values (ids, lambdas) inside the kernels, and release the GIL around the work.
#include <cstdint>
#include <stdexcept>
#include <string>

#include <pybind11/numpy.h>

#include "common.hpp"
#include "mixsieve/mixup.hpp"

namespace mixsieve_bind {

namespace mx = mixsieve::mixup;
using Ptr = std::uintptr_t;

namespace {

template <class T>
T* as(Ptr p) {
  return reinterpret_cast<T*>(p);
}

mx::Dtype dtype_of(int code) {
  if (code < 0 || code > 3) throw py::value_error("unknown float dtype code " + std::to_string(code));
  return static_cast<mx::Dtype>(code);
}

mx::Windows windows(Ptr xa, Ptr xb, Ptr lam, Ptr va, Ptr vb, std::int64_t batch, std::int64_t width, int policy) {
  if (batch < 0) throw py::value_error("batch size must be >= 0, got " + std::to_string(batch));
  if (width < 2) throw py::value_error("windows need T + 1 >= 2 tokens, got " + std::to_string(width));
  if (policy != 0 && policy != 1) throw py::value_error("unknown padding policy code " + std::to_string(policy));
  if (batch > 0 && (!xa || !xb || !lam)) throw py::value_error("xa, xb and lam must be given");
  return {as<const std::int64_t>(xa), as<const std::int64_t>(xb), as<const float>(lam),
          as<const std::uint8_t>(va),  as<const std::uint8_t>(vb), batch,
          width,                       static_cast<mx::Policy>(policy)};
}

void check_table(std::int64_t vocab, std::int64_t dim) {
  if (vocab < 1 || dim < 1) {
    throw py::value_error("the table must be [V, D] with V, D >= 1, got [" + std::to_string(vocab) + ", " +
                          std::to_string(dim) + "]");
  }
}

template <class L>
void run_ce(Ptr logits, std::int64_t r0, std::int64_t n, const mx::Targets& tg, Ptr loss, Ptr lse, Ptr keep,
            Ptr gtok, Ptr grad, unsigned threads) {
  using M = typename mx::Elem<L>::math;
  mx::CeJob<L> job;
  job.logits = as<const L>(logits);
  job.r0 = r0;
  job.tg = &tg;
  job.loss = as<M>(loss);
  job.lse = as<M>(lse);
  job.keep = as<M>(keep);
  job.gtok = as<const M>(gtok);
  job.grad = as<L>(grad);
  mx::ce_run<L>(job, n, threads);
}

}  // namespace

void bind_mixup_checks(py::module_& m);

void bind_mixup(py::module_& m) {
  bind_mixup_checks(m);
  m.def(
      "mixup_lambda",
      [](Ptr out, std::int64_t n, double alpha, std::uint64_t seed, std::uint64_t stream, bool dominant,
         int threads) {
        if (n < 0) throw py::value_error("n must be >= 0");
        if (n > 0 && !out) throw py::value_error("out must be given");
        if (!(alpha > 0) || alpha == INFINITY) {
          throw py::value_error("alpha must be a finite number > 0, got " + std::to_string(alpha));
        }
        const unsigned t = thread_count(threads);
        py::gil_scoped_release release;
        mx::fill_lambda(as<float>(out), n, mx::lambda_key(seed, stream), alpha, dominant, t);
      },
      py::arg("out"), py::arg("n"), py::arg("alpha"), py::arg("seed"), py::arg("stream"), py::arg("dominant"),
      py::arg("threads") = 0, "Fill out[0:n] (float32) with Beta(alpha, alpha) lambdas keyed by (seed, stream, i).");

  m.def(
      "mixup_embed_forward",
      [](Ptr weight, int dtype, std::int64_t vocab, std::int64_t dim, Ptr xa, Ptr xb, Ptr lam, Ptr va, Ptr vb,
         std::int64_t batch, std::int64_t width, int policy, Ptr out, int threads) {
        check_table(vocab, dim);
        const mx::Windows w = windows(xa, xb, lam, va, vb, batch, width, policy);
        const unsigned t = thread_count(threads);
        if (!weight || (batch > 0 && !out)) throw py::value_error("weight and out must be given");
        py::gil_scoped_release release;
        switch (dtype_of(dtype)) {
          case mx::Dtype::F32: return mx::embed_forward(as<const float>(weight), vocab, dim, w, as<float>(out), t);
          case mx::Dtype::F64: return mx::embed_forward(as<const double>(weight), vocab, dim, w, as<double>(out), t);
          case mx::Dtype::BF16:
            return mx::embed_forward(as<const mx::bf16_t>(weight), vocab, dim, w, as<mx::bf16_t>(out), t);
          case mx::Dtype::F16:
            return mx::embed_forward(as<const mx::f16_t>(weight), vocab, dim, w, as<mx::f16_t>(out), t);
        }
      },
      py::arg("weight"), py::arg("dtype"), py::arg("vocab"), py::arg("dim"), py::arg("xa"), py::arg("xb"),
      py::arg("lam"), py::arg("va"), py::arg("vb"), py::arg("batch"), py::arg("width"), py::arg("policy"),
      py::arg("out"), py::arg("threads") = 0);

  m.def(
      "mixup_embed_backward",
      [](Ptr grad_out, int dtype, std::int64_t vocab, std::int64_t dim, Ptr xa, Ptr xb, Ptr lam, Ptr va, Ptr vb,
         std::int64_t batch, std::int64_t width, int policy, Ptr grad_weight, int threads) {
        check_table(vocab, dim);
        const mx::Windows w = windows(xa, xb, lam, va, vb, batch, width, policy);
        const unsigned t = thread_count(threads);
        if (!grad_weight || (batch > 0 && !grad_out)) throw py::value_error("grad_out and grad_weight must be given");
        py::gil_scoped_release release;
        // rows accumulate in float64 for a float64 table, else float32, and are stored in the
        // table's dtype (grad_weight has it)
        switch (dtype_of(dtype)) {
          case mx::Dtype::F32:
            return mx::embed_backward<float, float>(as<const float>(grad_out), vocab, dim, w, as<float>(grad_weight),
                                                    t);
          case mx::Dtype::F64:
            return mx::embed_backward<double, double>(as<const double>(grad_out), vocab, dim, w,
                                                      as<double>(grad_weight), t);
          case mx::Dtype::BF16:
            return mx::embed_backward<mx::bf16_t, float>(as<const mx::bf16_t>(grad_out), vocab, dim, w,
                                                         as<mx::bf16_t>(grad_weight), t);
          case mx::Dtype::F16:
            return mx::embed_backward<mx::f16_t, float>(as<const mx::f16_t>(grad_out), vocab, dim, w,
                                                        as<mx::f16_t>(grad_weight), t);
        }
      },
      py::arg("grad_out"), py::arg("dtype"), py::arg("vocab"), py::arg("dim"), py::arg("xa"), py::arg("xb"),
      py::arg("lam"), py::arg("va"), py::arg("vb"), py::arg("batch"), py::arg("width"), py::arg("policy"),
      py::arg("grad_weight"), py::arg("threads") = 0);

  m.def(
      "mixup_ce",
      [](Ptr logits, int dtype, std::int64_t r0, std::int64_t n, std::int64_t vocab, Ptr xa, Ptr xb, Ptr lam, Ptr va,
         Ptr vb, std::int64_t batch, std::int64_t width, int policy, bool shifted, std::int64_t ignore_index,
         double eps, Ptr loss, Ptr lse, Ptr keep, Ptr gtok, Ptr grad, int threads) {
        if (vocab < 1) throw py::value_error("the vocabulary size must be >= 1, got " + std::to_string(vocab));
        const mx::Windows w = windows(xa, xb, lam, va, vb, batch, width, policy);
        if (r0 < 0 || n < 0 || r0 + n > batch * (width - 1)) {
          throw py::value_error("positions [" + std::to_string(r0) + ", " + std::to_string(r0 + n) +
                                ") are outside the batch's " + std::to_string(batch * (width - 1)));
        }
        if (!(eps >= 0.0 && eps <= 1.0)) throw py::value_error("label_smoothing must lie in [0, 1]");
        const bool forward = gtok == 0;
        if (n > 0 && (!logits || !lse || (forward && (!loss || !keep)) || (!forward && !grad))) {
          throw py::value_error("mixup_ce: a required buffer is missing");
        }
        const unsigned t = thread_count(threads);
        const mx::Targets tg{w, shifted, ignore_index, vocab, eps};
        py::gil_scoped_release release;
        switch (dtype_of(dtype)) {
          case mx::Dtype::F32: return run_ce<float>(logits, r0, n, tg, loss, lse, keep, gtok, grad, t);
          case mx::Dtype::F64: return run_ce<double>(logits, r0, n, tg, loss, lse, keep, gtok, grad, t);
          case mx::Dtype::BF16: return run_ce<mx::bf16_t>(logits, r0, n, tg, loss, lse, keep, gtok, grad, t);
          case mx::Dtype::F16: return run_ce<mx::f16_t>(logits, r0, n, tg, loss, lse, keep, gtok, grad, t);
        }
      },
      py::arg("logits"), py::arg("dtype"), py::arg("r0"), py::arg("n"), py::arg("vocab"), py::arg("xa"), py::arg("xb"),
      py::arg("lam"), py::arg("va"), py::arg("vb"), py::arg("batch"), py::arg("width"), py::arg("policy"),
      py::arg("shifted"), py::arg("ignore_index"), py::arg("eps"), py::arg("loss"), py::arg("lse"), py::arg("keep"),
      py::arg("gtok"), py::arg("grad"), py::arg("threads") = 0,
      "Two-target cross-entropy over positions [r0, r0 + n). Forward (gtok = 0): per-position loss, lse "
      "and keep, and with grad the logit gradient for an upstream gradient of 1 (grad may be logits). "
      "Backward (gtok given): grad = gtok * d loss / d logits from the saved lse.");
}


void bind_mixup_checks(py::module_& m) {
  // Test hooks: the host side of the arithmetic the CUDA kernels share.
  m.def(
      "_mixup_force_isa",
      [](int isa) {
        if (isa < -1 || isa > 2) {
          throw py::value_error("isa must be -1 (auto), 0 (baseline), 1 (AVX2) or 2 (AVX-512)");
        }
        return mx::forced_isa().exchange(isa);
      },
      py::arg("isa"), "Test hook: force the cross-entropy row path (0 baseline, 1 AVX2, 2 AVX-512, -1 auto).");
  m.def("_mixup_isa", [] { return mx::ce_isa(); }, "The cross-entropy row path in use: 0 baseline, 1 AVX2, 2 AVX-512.");
  m.def(
      "_mixup_math",
      [](const std::string& fn, py::array_t<double, py::array::c_style | py::array::forcecast> x) {
        py::array_t<double> out(x.size());
        const double* in = x.data();
        double* o = out.mutable_data();
        for (py::ssize_t i = 0; i < x.size(); ++i) {
          if (fn == "log") o[i] = mixsieve::pm_log(in[i]);
          else if (fn == "exp") o[i] = mixsieve::pm_exp(in[i]);
          else if (fn == "expf") o[i] = mx::fast_expf(static_cast<float>(in[i]));
          else throw py::value_error("fn must be log, exp or expf");
        }
        return out;
      },
      py::arg("fn"), py::arg("x"), "Test hook: pm_log / pm_exp (double) or fast_expf (float) elementwise.");
  m.def(
      "_mixup_to_half",
      [](py::array_t<float, py::array::c_style | py::array::forcecast> x, bool bf16) {
        py::array_t<std::uint16_t> out(x.size());
        for (py::ssize_t i = 0; i < x.size(); ++i) {
          out.mutable_data()[i] = bf16 ? mx::f32_to_bf16(x.data()[i]) : mx::f32_to_f16(x.data()[i]);
        }
        return out;
      },
      py::arg("x"), py::arg("bf16"), "Test hook: float32 -> bfloat16 / float16 bits (round to nearest even).");
  m.def(
      "_mixup_from_half",
      [](py::array_t<std::uint16_t, py::array::c_style | py::array::forcecast> x, bool bf16) {
        py::array_t<float> out(x.size());
        for (py::ssize_t i = 0; i < x.size(); ++i) {
          out.mutable_data()[i] = bf16 ? mx::bf16_to_f32(x.data()[i]) : mx::f16_to_f32(x.data()[i]);
        }
        return out;
      },
      py::arg("x"), py::arg("bf16"), "Test hook: bfloat16 / float16 bits -> float32.");
}

}  // namespace mixsieve_bind
