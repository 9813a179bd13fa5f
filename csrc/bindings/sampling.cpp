// Bindings of the sampling kernels: weights arrive as 1-D C-contiguous float32/float64 arrays
// (the Python layer converts anything else once), are validated here, and the work runs
// without the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "common.hpp"
#include "mixsieve/parallel.hpp"
#include "mixsieve/sampling.hpp"
#include "mixsieve/soft_cap.hpp"

namespace mixsieve_bind {

using namespace mixsieve;

namespace {

enum class Method { Ares = 0, ExpJ = 1, Pps = 2 };

// A validated view of a weights array: float32 or float64, 1-D, C-contiguous.
struct Weights {
  py::array arr;
  bool f32 = false;
  std::size_t n = 0;
  std::size_t positive = 0;
  const void* ptr = nullptr;
};

std::string format_value(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::int64_t scan_weights(Weights& w) {
  py::gil_scoped_release release;
  if (w.f32) return first_bad_weight(static_cast<const float*>(w.ptr), w.n, &w.positive);
  return first_bad_weight(static_cast<const double*>(w.ptr), w.n, &w.positive);
}

void raise_if_bad(const Weights& w, const char* name, std::int64_t bad) {
  if (bad < 0) return;
  const double v = w.f32 ? static_cast<double>(static_cast<const float*>(w.ptr)[bad])
                         : static_cast<const double*>(w.ptr)[bad];
  const char* what = std::isnan(v) ? "NaN" : (std::isinf(v) ? "infinite" : "negative");
  throw py::value_error(std::string(name) + "[" + std::to_string(bad) + "] = " + format_value(v) + " is " + what +
                        "; weights must be finite and >= 0");
}

// Checks dtype and layout; `validate` also scans the values (ares validates inside its scan).
Weights check_weights(const py::array& a, const char* name, bool validate = true) {
  Weights w;
  if (a.ndim() != 1) throw py::value_error(std::string(name) + " must be 1-D, got " + std::to_string(a.ndim()) + "-D");
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
  if (py::isinstance<py::array_t<float>>(a)) {
    w.f32 = true;
  } else if (!py::isinstance<py::array_t<double>>(a)) {
    throw py::type_error(std::string(name) + " must be float32 or float64, got " + std::string(py::str(a.dtype())));
  }
  w.arr = a;
  w.n = static_cast<std::size_t>(a.shape(0));
  w.ptr = a.data();
  if (validate) raise_if_bad(w, name, scan_weights(w));
  return w;
}

// Calls fn(typed_pointer) with the weights' element type.
template <class Fn>
void with_weights(const Weights& w, Fn&& fn) {
  if (w.f32) {
    fn(static_cast<const float*>(w.ptr));
  } else {
    fn(static_cast<const double*>(w.ptr));
  }
}

const std::int64_t* check_ids(const py::object& ids, std::size_t n, py::array_t<std::int64_t>& holder) {
  if (ids.is_none()) return nullptr;
  holder = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(ids);
  if (!holder || holder.ndim() != 1 || static_cast<std::size_t>(holder.shape(0)) != n) {
    throw py::value_error("ids must be a 1-D integer array of the same length as weights (" + std::to_string(n) + ")");
  }
  return holder.data();
}

py::tuple to_arrays(const std::vector<Keyed>& items) {
  py::array_t<std::int64_t> ids(items.size());
  py::array_t<double> keys(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    ids.mutable_data()[i] = items[i].id;
    keys.mutable_data()[i] = items[i].key;
  }
  return py::make_tuple(ids, keys);
}

class PyReservoir {
 public:
  PyReservoir(std::size_t k, std::uint64_t seed, int method)
      : k_(k), seed_(seed), method_(static_cast<Method>(method)), ares_(k), expj_(k, seed), pps_(k, seed) {}

  void add(const py::array& weights, const py::object& ids_in, unsigned threads) {
    Weights w = check_weights(weights, "weights", method_ != Method::Ares);
    py::array_t<std::int64_t> holder;
    const std::int64_t* ids = check_ids(ids_in, w.n, holder);
    std::int64_t bad = -1;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mu_);
      const auto base = static_cast<std::int64_t>(seen_);
      with_weights(w, [&](auto* p) {
        switch (method_) {
          case Method::Ares:
            bad = ares_select(p, w.n, ids, base, AresKeys(seed_), ares_, threads);
            break;
          case Method::ExpJ:
            expj_.add(p, w.n, ids, base);
            break;
          case Method::Pps:
            pps_.add(p, w.n, ids, base);
            break;
        }
      });
      if (bad < 0) seen_ += w.n;
    }
    raise_if_bad(w, "weights", bad);
  }

  void merge(PyReservoir& other) {
    if (&other == this) throw py::value_error("cannot merge a reservoir with itself");
    if (other.method_ != method_ || other.k_ != k_ || other.seed_ != seed_) {
      throw py::value_error("merge needs reservoirs with the same k, seed and method");
    }
    std::scoped_lock lock(mu_, other.mu_);
    switch (method_) {
      case Method::Ares:
        ares_.merge(other.ares_);
        break;
      case Method::ExpJ:
        expj_.merge(other.expj_);
        break;
      case Method::Pps:
        throw py::value_error(
            "pps (Chao) reservoirs have no exact merge; use method='ares' or 'expj' for sharded streams");
    }
    seen_ += other.seen_;
  }

  // (ids, keys) best first; for pps the "keys" are the current inclusion probabilities.
  py::tuple items() {
    std::lock_guard<std::mutex> lock(mu_);
    if (method_ == Method::Pps) return to_arrays(pps_.sample());
    return to_arrays(method_ == Method::Ares ? ares_.sorted() : expj_.top().sorted());
  }

  py::dict state() {
    std::lock_guard<std::mutex> lock(mu_);
    py::dict d;
    d["seen"] = seen_;
    if (method_ == Method::Pps) {
      py::list a, c;
      for (const auto& s : pps_.certain()) a.append(py::make_tuple(s.id, s.w));
      for (const auto& s : pps_.ordinary()) c.append(py::make_tuple(s.id, s.w));
      d["certain"] = a;
      d["ordinary"] = c;
      d["total"] = pps_.total();
      d["scale"] = pps_.scale();
      return d;
    }
    py::list items;
    for (const Keyed& it : (method_ == Method::Ares ? ares_.items() : expj_.top().items())) {
      items.append(py::make_tuple(it.id, it.key));
    }
    d["items"] = items;
    if (method_ == Method::ExpJ) d["skip"] = expj_.skip();
    return d;
  }

  void restore(const py::dict& d) {
    std::lock_guard<std::mutex> lock(mu_);
    seen_ = d["seen"].cast<std::uint64_t>();
    if (method_ == Method::Pps) {
      std::vector<ChaoReservoir::Slot> a, c;
      for (auto h : d["certain"].cast<py::list>()) {
        auto t = h.cast<py::sequence>();
        a.push_back({t[0].cast<std::int64_t>(), t[1].cast<double>()});
      }
      for (auto h : d["ordinary"].cast<py::list>()) {
        auto t = h.cast<py::sequence>();
        c.push_back({t[0].cast<std::int64_t>(), t[1].cast<double>()});
      }
      if (a.size() + c.size() > k_) throw py::value_error("state holds more items than k");
      pps_.restore(std::move(a), std::move(c), d["total"].cast<double>(), d["scale"].cast<double>());
      return;
    }
    auto items = d["items"].cast<py::list>();
    if (items.size() > k_) throw py::value_error("state holds more items than k");
    ares_.clear();
    expj_.top().clear();
    for (auto h : items) {
      auto t = h.cast<py::sequence>();
      const Keyed it{t[1].cast<double>(), t[0].cast<std::int64_t>()};
      if (!std::isfinite(it.key) || it.key > 0.0) throw py::value_error("state holds a key outside (-inf, 0]");
      if (method_ == Method::Ares) {
        ares_.offer(it);
      } else {
        expj_.top().offer(it);
      }
    }
    if (method_ == Method::ExpJ) expj_.restore(d["skip"].cast<double>());
  }

  std::size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    switch (method_) {
      case Method::Ares:
        return ares_.size();
      case Method::ExpJ:
        return expj_.top().size();
      default:
        return pps_.certain().size() + pps_.ordinary().size();
    }
  }

 private:
  std::size_t k_;
  std::uint64_t seed_;
  Method method_;
  std::uint64_t seen_ = 0;
  BestK ares_;
  ExpJReservoir expj_;
  ChaoReservoir pps_;
  std::mutex mu_;
};

}  // namespace

void bind_sampling(py::module_& m) {
  // Test hook: every instruction set of the A-Res first pass must give the same bytes.
  m.def(
      "_cap_sampling_simd",
      [](int level) {
        if (level < 0 || level > 2) throw py::value_error("level must be 0 (scalar), 1 (avx2) or 2 (avx512)");
        const int previous = ares_isa_cap().exchange(level);
        return py::make_tuple(previous, cpu_vector_level());
      },
      py::arg("level"),
      "Caps the A-Res first pass at `level` (0 scalar, 1 AVX2, 2 AVX-512); returns (previous cap, detected).");
  m.def(
      "weighted_sample",
      [](const py::array& weights, std::int64_t k, std::uint64_t seed, bool replace, int method, int threads) {
        if (k < 0) throw py::value_error("k must be >= 0, got " + std::to_string(k));
        const bool fused = !replace && static_cast<Method>(method) == Method::Ares;
        Weights w = check_weights(weights, "weights", !fused);
        const auto kk = static_cast<std::size_t>(k);
        auto check_positive = [&] {
          if (!replace && w.positive < kk) {
            throw py::value_error("k=" + std::to_string(k) + " exceeds the " + std::to_string(w.positive) +
                                  " items with positive weight (sampling without replacement)");
          }
          if (replace && k > 0 && w.positive == 0) throw py::value_error("all weights are zero");
        };
        if (!fused) check_positive();
        const unsigned nt = thread_count(threads);
        std::int64_t bad = -1;
        std::vector<Keyed> out;
        std::vector<std::int64_t> drawn;
        {
          py::gil_scoped_release release;
          with_weights(w, [&](auto* p) {
            if (replace) {
              drawn.resize(kk);
              sample_with_replacement(p, w.n, kk, seed, drawn.data());
              return;
            }
            switch (static_cast<Method>(method)) {
              case Method::Ares: {
                BestK top(kk);
                bad = ares_select(p, w.n, nullptr, 0, AresKeys(seed), top, nt, &out);
                w.positive = out.size();  // min(k, positive weights)
                break;
              }
              case Method::ExpJ: {
                ExpJReservoir r(kk, seed);
                r.add(p, w.n, nullptr, 0);
                out = r.top().sorted();
                break;
              }
              case Method::Pps: {
                ChaoReservoir r(kk, seed);
                r.add(p, w.n, nullptr, 0);
                out = r.sample();
                break;
              }
            }
          });
        }
        if (fused) {
          raise_if_bad(w, "weights", bad);
          check_positive();
        }
        if (replace) {
          py::array_t<std::int64_t> ids(kk);
          py::array_t<double> keys(kk);
          std::copy(drawn.begin(), drawn.end(), ids.mutable_data());
          std::fill(keys.mutable_data(), keys.mutable_data() + kk, std::nan(""));
          return py::tuple(py::make_tuple(ids, keys));
        }
        return to_arrays(out);
      },
      py::arg("weights"), py::arg("k"), py::arg("seed"), py::arg("replace"), py::arg("method"), py::arg("threads"));

  py::class_<PyReservoir>(m, "WeightedReservoir")
      .def(py::init<std::size_t, std::uint64_t, int>(), py::arg("k"), py::arg("seed"), py::arg("method"))
      .def("add", &PyReservoir::add, py::arg("weights"), py::arg("ids"), py::arg("threads"))
      .def("merge", &PyReservoir::merge, py::arg("other"))
      .def("items", &PyReservoir::items)
      .def("state", &PyReservoir::state)
      .def("restore", &PyReservoir::restore, py::arg("state"))
      .def("__len__", &PyReservoir::size);

  m.def(
      "soft_cap_sample",
      [](const py::array& scores_in, std::int64_t total, double penalty, std::int64_t batch_size, std::uint64_t seed,
         int threads, bool return_indices) {
        if (scores_in.ndim() != 1) throw py::value_error("scores must be 1-D");
        if (!py::isinstance<py::array_t<double>>(scores_in) && !py::isinstance<py::array_t<float>>(scores_in)) {
          throw py::type_error("scores must be float32 or float64");
        }
        const std::size_t n = static_cast<std::size_t>(scores_in.shape(0));
        py::array_t<std::int64_t> counts(n);
        py::array_t<std::int64_t> picks(return_indices ? std::max<std::int64_t>(total, 0) : 0);
        const unsigned nt = thread_count(threads);
        auto run = [&](auto* s) {  // the kernel validates the scores in its first pass
          py::gil_scoped_release release;
          soft_cap_sample(s, n, total, penalty, batch_size, seed, nt, counts.mutable_data(),
                          return_indices ? picks.mutable_data() : nullptr);
        };
        if (py::isinstance<py::array_t<float>>(scores_in)) {
          auto a = py::array_t<float, py::array::c_style>::ensure(scores_in);
          run(a.data());
        } else {
          auto a = py::array_t<double, py::array::c_style>::ensure(scores_in);
          run(a.data());
        }
        return py::make_tuple(counts, picks);
      },
      py::arg("scores"), py::arg("total"), py::arg("penalty"), py::arg("batch_size"), py::arg("seed"),
      py::arg("threads"), py::arg("return_indices"));
}

}  // namespace mixsieve_bind
