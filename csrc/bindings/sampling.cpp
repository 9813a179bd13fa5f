// Bindings of the sampling kernels: weights arrive as 1-D C-contiguous float32/float64 arrays
// (the Python layer converts anything else once), are validated here, and the work runs
// without the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <mutex>
#include <optional>
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
  double largest = 0.0;  // the largest and the smallest positive weight (after a validating scan)
  double smallest = 0.0;
  const void* ptr = nullptr;
};

std::string format_value(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::int64_t scan_weights(Weights& w) {
  py::gil_scoped_release release;
  if (w.f32) return first_bad_weight(static_cast<const float*>(w.ptr), w.n, &w.positive, &w.largest, &w.smallest);
  return first_bad_weight(static_cast<const double*>(w.ptr), w.n, &w.positive, &w.largest, &w.smallest);
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

// Wide keys as doubles (rounded: -0.0, subnormal or -inf where they leave the range).
std::vector<Keyed> to_keyed(const std::vector<WideKey>& items) {
  std::vector<Keyed> out(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) out[i] = {wide_to_double(items[i]), items[i].id};
  return out;
}

// The whole text of a file, or nothing when it cannot be read.
std::optional<std::string> read_text(const char* path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  std::ostringstream os;
  os << f.rdbuf();
  if (f.bad()) return std::nullopt;
  return os.str();
}

// A byte count written as a plain number (cgroup files); nothing for "max", an empty or an
// unreadable file.
std::optional<double> parse_bytes(const std::optional<std::string>& text) {
  if (!text) return std::nullopt;
  std::istringstream is(*text);
  std::string word;
  if (!(is >> word) || word.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return std::stod(word);
}

// Bytes of memory this process can still use, from the texts of the files that tell (each
// absent when unreadable): MemAvailable of /proc/meminfo, else `physical`; no more than what a
// cgroup limit leaves (v2: memory.max - memory.current; v1: memory.limit_in_bytes -
// memory.usage_in_bytes; a limit without a readable usage counts whole). Infinity when
// nothing is known.
double available_from(const std::optional<std::string>& meminfo, const std::optional<std::string>& v2_max,
                      const std::optional<std::string>& v2_current, const std::optional<std::string>& v1_limit,
                      const std::optional<std::string>& v1_usage, double physical) {
  double avail = physical;
  if (meminfo) {
    std::istringstream is(*meminfo);
    std::string line;
    while (std::getline(is, line)) {
      std::istringstream ls(line);
      std::string name;
      double kb = 0.0;
      if (ls >> name >> kb && name == "MemAvailable:") {
        avail = kb * 1024.0;
        break;
      }
    }
  }
  auto limit = [&](const std::optional<std::string>& max, const std::optional<std::string>& used) {
    if (const std::optional<double> l = parse_bytes(max)) {
      avail = std::min(avail, std::max(0.0, *l - parse_bytes(used).value_or(0.0)));
    }
  };
  limit(v2_max, v2_current);
  limit(v1_limit, v1_usage);
  return avail;
}

double available_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
  const double physical = pages > 0 && size > 0 ? static_cast<double>(pages) * static_cast<double>(size)
                                                : std::numeric_limits<double>::infinity();
  return available_from(read_text("/proc/meminfo"), read_text("/sys/fs/cgroup/memory.max"),
                        read_text("/sys/fs/cgroup/memory.current"),
                        read_text("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
                        read_text("/sys/fs/cgroup/memory/memory.usage_in_bytes"), physical);
}

// Refuses, with MemoryError, an allocation of `bytes` that the machine (or the container's
// memory limit) cannot hold, rather
// than letting the kernel kill the process once the pages are touched.
void check_fits(double bytes, const std::string& what) {
  if (bytes < 0x1p28) return;  // 256 MB: not worth reading /proc on every small call
  const double avail = available_bytes();
  if (bytes > avail || bytes > 0x1p62) {
    std::ostringstream os;
    os.precision(3);
    os << what << " needs " << static_cast<unsigned long long>(std::min(bytes, 0x1p63)) << " bytes ("
       << bytes / 1e9 << " GB), more than the " << avail / 1e9 << " GB of memory available";
    PyErr_SetString(PyExc_MemoryError, os.str().c_str());
    throw py::error_already_set();
  }
}

const char* const kPpsRange =
    "method='pps' cannot give these inclusion probabilities: the weights span more than the double range "
    "(the sample needs items lighter than 2^-1074 times the largest weight)";
const char* const kExpjRange =
    "method='expj' cannot order these weights: they span more than the double range within one sample "
    "(largest / smallest kept weight beyond ~2^1000); use method='ares', which orders keys exactly at any range";

class PyReservoir {
 public:
  PyReservoir(std::size_t k, std::uint64_t seed, int method)
      : k_(k), seed_(seed), method_(static_cast<Method>(method)), ares_(k), wide_(k), expj_(k, seed), pps_(k, seed) {}

  void add(const py::array& weights, const py::object& ids_in, unsigned threads) {
    Weights w = check_weights(weights, "weights", method_ != Method::Ares);
    py::array_t<std::int64_t> holder;
    const std::int64_t* ids = check_ids(ids_in, w.n, holder);
    std::int64_t bad = -1;
    bool out_of_range = false, pps_out_of_range = false;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mu_);
      const auto base = static_cast<std::int64_t>(seen_);
      with_weights(w, [&](auto* p) {
        switch (method_) {
          case Method::Ares:
            if (!wide_mode_) bad = ares_select(p, w.n, ids, base, AresKeys(seed_), ares_, threads);
            if (bad == kNeedsWideKeys || wide_mode_) {
              to_wide();
              bad = ares_wide_scan(p, w.n, ids, base, AresKeys(seed_), wide_, threads);
            }
            break;
          case Method::ExpJ: {
            // The first positive batch sets the scale, a far heavier one raises it. A batch whose
            // weights all lie within 2^256 of the scale cannot leave the normal range; any other
            // is tried on a copy, so that a refused batch changes nothing.
            int target = expj_.exponent();
            if (w.positive > 0) {
              if (!expj_started_) {
                target = weight_exponent(w.largest);
              } else if (std::ilogb(w.largest) - target > kOrdinaryExponent) {
                target = std::ilogb(w.largest);
              }
            }
            const bool risky = w.positive > 0 && (target != expj_.exponent() ||
                                                  std::ilogb(w.largest) - target > kOrdinaryExponent ||
                                                  std::ilogb(w.smallest) - target < -kOrdinaryExponent);
            if (!risky) {
              expj_.add(p, w.n, ids, base);
              break;
            }
            ExpJReservoir trial = expj_;
            trial.rescale_to(target);
            trial.add(p, w.n, ids, base);
            if (!trial.exact()) {
              out_of_range = true;
              return;
            }
            expj_ = std::move(trial);
            break;
          }
          case Method::Pps: {
            // Only a batch spanning far more than the ordinary range can lose resolution:
            // that one is tried on a copy, so that a refused batch changes nothing.
            const int e = pps_.exponent();
            const bool risky = w.positive > 0 && (std::ilogb(w.largest) - std::ilogb(w.smallest) > 900 ||
                                                  std::abs(std::ilogb(w.largest) - e) > 900 ||
                                                  std::abs(std::ilogb(w.smallest) - e) > 900);
            if (!risky) {
              pps_.add(p, w.n, ids, base);
              break;
            }
            ChaoReservoir trial = pps_;
            trial.add(p, w.n, ids, base);
            if (!trial.exact()) {
              pps_out_of_range = true;
              return;
            }
            pps_ = std::move(trial);
            break;
          }
        }
      });
      if (bad < 0 && !out_of_range && !pps_out_of_range) {
        if (!ids && w.n > 0) {  // remember the default ids used, to refuse merging shards that reuse them
          default_lo_ = std::min(default_lo_, base);
          default_hi_ = std::max(default_hi_, base + static_cast<std::int64_t>(w.n));
        }
        if (method_ == Method::ExpJ && w.positive > 0) expj_started_ = true;
        seen_ += w.n;
      }
    }
    raise_if_bad(w, "weights", bad);
    if (out_of_range) throw py::value_error(kExpjRange);
    if (pps_out_of_range) throw py::value_error(kPpsRange);
  }

  void merge(PyReservoir& other) {
    if (&other == this) throw py::value_error("cannot merge a reservoir with itself");
    if (other.method_ != method_ || other.k_ != k_ || other.seed_ != seed_) {
      throw py::value_error("merge needs reservoirs with the same k, seed and method");
    }
    if (method_ == Method::Pps) {
      throw py::value_error(
          "pps (Chao) reservoirs have no exact merge; use method='ares' or 'expj' for sharded streams");
    }
    std::scoped_lock lock(mu_, other.mu_);
    // Shards must hold different items: the same id twice would enter the sample twice.
    if (default_lo_ < default_hi_ && other.default_lo_ < other.default_hi_ && default_lo_ < other.default_hi_ &&
        other.default_lo_ < default_hi_) {
      const std::int64_t id = std::max(default_lo_, other.default_lo_);
      throw py::value_error("both reservoirs used the default ids (running positions), so id " + std::to_string(id) +
                            " names an item of each; give each shard its own ids, e.g. add(weights, ids=global "
                            "positions)");
    }
    std::vector<std::int64_t> mine = kept_ids(), theirs = other.kept_ids();
    std::sort(mine.begin(), mine.end());
    for (std::int64_t id : theirs) {
      if (std::binary_search(mine.begin(), mine.end(), id)) {
        throw py::value_error("both reservoirs hold id " + std::to_string(id) +
                              "; shards must have disjoint ids (pass ids= to add)");
      }
    }
    if (method_ == Method::Ares) {
      if (wide_mode_ || other.wide_mode_) {
        to_wide();
        if (other.wide_mode_) {
          wide_.merge(other.wide_);
        } else {
          for (const Keyed& it : other.ares_.sorted()) wide_.offer(wide_from_double(it.key, it.id));
        }
      } else {
        ares_.merge(other.ares_);
      }
    } else {
      ExpJReservoir a = expj_, b = other.expj_;
      const int e = std::max(a.exponent(), b.exponent());
      a.rescale_to(e);
      b.rescale_to(e);
      a.merge(b);
      if (!a.exact()) throw py::value_error(kExpjRange);
      expj_ = a;
      expj_started_ |= other.expj_started_;
    }
    if (other.default_lo_ < other.default_hi_) {
      default_lo_ = std::min(default_lo_, other.default_lo_);
      default_hi_ = std::max(default_hi_, other.default_hi_);
    }
    seen_ += other.seen_;
  }

  // (ids, keys) best first; for pps the "keys" are the current inclusion probabilities.
  py::tuple items() {
    std::lock_guard<std::mutex> lock(mu_);
    return to_arrays(sorted_items());
  }

  py::dict state() {
    std::lock_guard<std::mutex> lock(mu_);
    py::dict d;
    d["seen"] = seen_;
    if (default_lo_ < default_hi_) d["default_ids"] = py::make_tuple(default_lo_, default_hi_);
    if (method_ == Method::Pps) {
      py::list a, c;
      for (const auto& s : pps_.certain()) a.append(py::make_tuple(s.id, s.w));
      for (const auto& s : pps_.ordinary()) c.append(py::make_tuple(s.id, s.w));
      d["certain"] = a;
      d["ordinary"] = c;
      d["total"] = pps_.total();
      d["outside"] = pps_.outside();
      d["scale"] = pps_.scale();
      d["exponent"] = pps_.exponent();
      return d;
    }
    py::list items;
    if (method_ == Method::Ares && wide_mode_) {
      d["wide"] = true;  // items are (id, -frac, exp): key = -frac * 2^exp
      for (const WideKey& it : wide_.items()) items.append(py::make_tuple(it.id, -it.frac, it.exp));
    } else if (method_ == Method::ExpJ && expj_.exponent() != 0) {
      // Keys of rescaled weights: the key of the weights given is the kept key times
      // 2^-exponent, which a double may not hold, so as (id, -frac, exp), exactly.
      d["wide"] = true;
      for (const Keyed& it : expj_.top().items()) {
        const WideKey k = wide_from_double(it.key, it.id);
        items.append(py::make_tuple(it.id, -k.frac, k.exp - expj_.exponent()));
      }
    } else {
      for (const Keyed& it : (method_ == Method::Ares ? ares_.items() : expj_.top().items())) {
        items.append(py::make_tuple(it.id, it.key));
      }
    }
    d["items"] = items;
    if (method_ == Method::ExpJ) {
      d["skip"] = expj_.skip();
      d["exponent"] = expj_.exponent();
    }
    return d;
  }

  void restore(const py::dict& d) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto seen = d["seen"].cast<std::uint64_t>();
    std::int64_t lo = std::numeric_limits<std::int64_t>::max(), hi = std::numeric_limits<std::int64_t>::min();
    if (d.contains("default_ids")) {
      auto r = d["default_ids"].cast<py::sequence>();
      if (r.size() != 2) throw py::value_error("default_ids must be [first, end]");
      lo = r[0].cast<std::int64_t>();
      hi = r[1].cast<std::int64_t>();
    }
    if (method_ == Method::Pps) {
      std::vector<ChaoReservoir::Slot> a, c;
      double sum_a = 0.0;
      for (auto h : d["certain"].cast<py::list>()) {
        auto t = h.cast<py::sequence>();
        a.push_back({t[0].cast<std::int64_t>(), t[1].cast<double>()});
        sum_a += a.back().w;
      }
      for (auto h : d["ordinary"].cast<py::list>()) {
        auto t = h.cast<py::sequence>();
        c.push_back({t[0].cast<std::int64_t>(), t[1].cast<double>()});
      }
      if (a.size() + c.size() > k_) throw py::value_error("state holds more items than k");
      // States written before "outside" existed hold only the total.
      const double outside = d.contains("outside") ? d["outside"].cast<double>() : d["total"].cast<double>() - sum_a;
      const int exponent = d.contains("exponent") ? d["exponent"].cast<int>() : 0;
      if (std::abs(exponent) > 2200) throw py::value_error("state exponent out of range");
      pps_.restore(std::move(a), std::move(c), outside, d["scale"].cast<double>(), exponent);
    } else {
      auto items = d["items"].cast<py::list>();
      if (items.size() > k_) throw py::value_error("state holds more items than k");
      const bool wide = d.contains("wide") && d["wide"].cast<bool>();
      // expj keeps the keys of its rescaled weights, log(u) / (w * 2^-exponent). States of
      // version 2 hold the keys of the weights given; version 1 held the kept keys as they were.
      const int exponent = method_ == Method::ExpJ && d.contains("exponent") ? d["exponent"].cast<int>() : 0;
      if (std::abs(exponent) > 2200) throw py::value_error("state exponent out of range");
      const int version = d.contains("version") ? d["version"].cast<int>() : 2;
      const int shift = version >= 2 ? exponent : 0;
      BestK ares(k_);
      WideTopK wide_top(k_);
      ExpJReservoir expj(k_, seed_);
      for (auto h : items) {
        auto t = h.cast<py::sequence>();
        if (wide) {
          if (t.size() != 3) throw py::value_error("wide state items must be [id, -frac, exp]");
          const WideKey it{-t[1].cast<double>(), t[2].cast<int>(), t[0].cast<std::int64_t>()};
          if (!(it.frac >= 0.5 && it.frac < 1.0)) throw py::value_error("state holds a wide key with frac outside [0.5, 1)");
          if (std::abs(it.exp) > 1 << 20) throw py::value_error("state holds a wide key with exp out of range");
          if (method_ == Method::Ares) {
            wide_top.offer(it);
            continue;
          }
          const Keyed kept{-std::ldexp(it.frac, it.exp + exponent), it.id};
          if (!normal_key(kept.key)) throw py::value_error("state holds an expj key out of range for its exponent");
          expj.top().offer(kept);
          continue;
        }
        const Keyed it{t[1].cast<double>(), t[0].cast<std::int64_t>()};
        if (!normal_key(it.key)) throw py::value_error("state holds a key outside (-inf, 0) or not a normal number");
        if (method_ == Method::Ares) {
          ares.offer(it);
        } else {
          const Keyed kept{std::ldexp(it.key, shift), it.id};
          if (!normal_key(kept.key)) throw py::value_error("state holds an expj key out of range for its exponent");
          expj.top().offer(kept);
        }
      }
      if (method_ == Method::ExpJ) {
        expj.restore(d["skip"].cast<double>(), exponent);
        expj_ = expj;
        expj_started_ = expj_.top().size() > 0 || exponent != 0;
      } else {
        ares_ = ares;
        wide_ = wide_top;
        wide_mode_ = wide;
      }
    }
    seen_ = seen;
    default_lo_ = lo;
    default_hi_ = hi;
  }

  std::size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    switch (method_) {
      case Method::Ares:
        return wide_mode_ ? wide_.size() : ares_.size();
      case Method::ExpJ:
        return expj_.top().size();
      default:
        return pps_.certain().size() + pps_.ordinary().size();
    }
  }

 private:
  std::vector<Keyed> sorted_items() {
    if (method_ == Method::Pps) return pps_.sample();
    if (method_ == Method::Ares) return wide_mode_ ? to_keyed(wide_.sorted()) : ares_.sorted();
    return expj_.sample();
  }
  std::vector<std::int64_t> kept_ids() {
    std::vector<std::int64_t> out;
    for (const Keyed& it : sorted_items()) out.push_back(it.id);
    return out;
  }
  // From double keys to wide keys, for good (exact: every kept double key is normal).
  void to_wide() {
    if (wide_mode_) return;
    for (const Keyed& it : ares_.sorted()) wide_.offer(wide_from_double(it.key, it.id));
    ares_.clear();
    wide_mode_ = true;
  }

  std::size_t k_;
  std::uint64_t seed_;
  Method method_;
  std::uint64_t seen_ = 0;
  // The hull [lo, hi) of the default ids this reservoir's items used (empty: lo >= hi).
  std::int64_t default_lo_ = std::numeric_limits<std::int64_t>::max();
  std::int64_t default_hi_ = std::numeric_limits<std::int64_t>::min();
  BestK ares_;
  WideTopK wide_;
  bool wide_mode_ = false;
  ExpJReservoir expj_;
  bool expj_started_ = false;  // a positive weight has set the expj scale
  ChaoReservoir pps_;
  std::mutex mu_;
};

}  // namespace

void bind_sampling(py::module_& m) {
  // Test hook: the memory check of replace=True, on given file texts (None: unreadable).
  m.def(
      "_available_memory",
      [](const std::optional<std::string>& meminfo, const std::optional<std::string>& v2_max,
         const std::optional<std::string>& v2_current, const std::optional<std::string>& v1_limit,
         const std::optional<std::string>& v1_usage,
         double physical) { return available_from(meminfo, v2_max, v2_current, v1_limit, v1_usage, physical); },
      py::arg("meminfo"), py::arg("v2_max"), py::arg("v2_current"), py::arg("v1_limit"), py::arg("v1_usage"),
      py::arg("physical"),
      "Bytes available given the texts of /proc/meminfo and the cgroup v2 and v1 memory files.");
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
      [](const py::array& weights, std::int64_t k, std::uint64_t seed, bool replace, int method, int threads,
         bool return_keys) {
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
        if (replace) {
          // The draws go straight into the result: 8 bytes per draw (16 with keys), plus the
          // n prefix sums.
          check_fits(8.0 * static_cast<double>(kk) * (return_keys ? 2.0 : 1.0) + 8.0 * static_cast<double>(w.n),
                     "k=" + std::to_string(k) + " draws with replacement");
          py::array_t<std::int64_t> ids(kk);
          std::int64_t* out = ids.mutable_data();
          {
            py::gil_scoped_release release;
            with_weights(w, [&](auto* p) { sample_with_replacement(p, w.n, kk, seed, out, w.largest); });
          }
          py::array_t<double> keys(return_keys ? kk : 0);
          std::fill(keys.mutable_data(), keys.mutable_data() + keys.size(), std::nan(""));
          return py::tuple(py::make_tuple(ids, keys));
        }
        std::int64_t bad = -1;
        std::vector<Keyed> out;
        {
          py::gil_scoped_release release;
          // Exact A-Res with wide keys: for weights whose double keys leave the range.
          auto wide = [&](auto* p) {
            WideTopK top(kk);
            bad = ares_wide_scan(p, w.n, nullptr, 0, AresKeys(seed), top, nt);
            out = to_keyed(top.sorted());
          };
          with_weights(w, [&](auto* p) {
            switch (static_cast<Method>(method)) {
              case Method::Ares: {
                BestK top(kk);
                bad = ares_select(p, w.n, nullptr, 0, AresKeys(seed), top, nt, &out);
                if (bad == kNeedsWideKeys) wide(p);
                w.positive = out.size();  // min(k, positive weights)
                break;
              }
              case Method::ExpJ: {
                // Scaled by a power of two when the weights are far from 1; if some kept key
                // still leaves the normal range (weights spanning more than the double range),
                // the same distribution comes from exact A-Res.
                ExpJReservoir r(kk, seed);
                r.rescale_to(weight_exponent(w.largest));
                r.add(p, w.n, nullptr, 0);
                if (r.exact()) {
                  out = r.sample();
                } else {
                  wide(p);
                }
                break;
              }
              case Method::Pps: {
                ChaoReservoir r(kk, seed);
                r.add(p, w.n, nullptr, 0);
                if (!r.exact()) {
                  bad = kNeedsWideKeys;  // reported below, with the GIL
                  break;
                }
                out = r.sample();
                break;
              }
            }
          });
        }
        if (static_cast<Method>(method) == Method::Pps && bad == kNeedsWideKeys) throw py::value_error(kPpsRange);
        if (fused) {
          raise_if_bad(w, "weights", bad);
          check_positive();
        }
        return to_arrays(out);
      },
      py::arg("weights"), py::arg("k"), py::arg("seed"), py::arg("replace"), py::arg("method"), py::arg("threads"),
      py::arg("return_keys") = true);

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
        // Ctrl-C: between batches (about every 100 ms) the kernel briefly takes the GIL back to
        // run Python's signal handlers; an exception they raise (KeyboardInterrupt) stops it.
        auto interrupted = [] {
          py::gil_scoped_acquire acquire;
          return PyErr_CheckSignals() != 0;
        };
        auto run = [&](auto* s) {  // the kernel validates the scores in its first pass
          try {
            py::gil_scoped_release release;
            soft_cap_sample(s, n, total, penalty, batch_size, seed, nt, counts.mutable_data(),
                            return_indices ? picks.mutable_data() : nullptr, interrupted);
          } catch (const SoftCapInterrupted&) {
            throw py::error_already_set();  // the error the signal handler set, with the GIL held
          }
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
