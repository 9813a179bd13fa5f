// mixsieve._core: the one binding layer. Each function checks dtype, shape and contiguity,
// raises ValueError/TypeError naming the bad value, takes raw pointers and releases the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "common.hpp"
#include "texts.hpp"
#include "mixsieve/byte_source.hpp"
#include "mixsieve/mixup.hpp"
#include "mixsieve/cpu.hpp"
#include "mixsieve/jsonl.hpp"
#include "mixsieve/lsh.hpp"
#include "mixsieve/minhash.hpp"
#include "mixsieve/mixture.hpp"
#include "mixsieve/sampling.hpp"
#include "mixsieve/parallel.hpp"
#include "mixsieve/xxh64.hpp"

namespace py = pybind11;
using namespace mixsieve;

namespace {

using mixsieve_bind::thread_count;

// None (unknown) or (ngram, unit, seed, scheme) -> HasherParams.
HasherParams hasher_params(const py::object& t) {
  HasherParams hp;
  if (t.is_none()) return hp;
  const auto tup = t.cast<std::tuple<std::uint32_t, int, std::uint64_t, std::uint32_t>>();
  hp.known = true;
  hp.ngram = std::get<0>(tup);
  const int unit = std::get<1>(tup);
  if (hp.ngram < 1 || hp.ngram > (1u << 16)) throw py::value_error("hasher ngram must be in [1, 65536]");
  if (unit != 0 && unit != 1) throw py::value_error("hasher unit must be 0 (word) or 1 (char)");
  hp.unit = static_cast<Unit>(unit);
  hp.seed = std::get<2>(tup);
  hp.scheme = std::get<3>(tup);
  return hp;
}

py::object hasher_tuple(const HasherParams& hp) {
  if (!hp.known) return py::none();
  return py::make_tuple(hp.ngram, static_cast<int>(hp.unit), hp.seed, hp.scheme);
}

using mixsieve_bind::collect_texts;
using mixsieve_bind::TextBatch;
using mixsieve_bind::text_view;

template <class T>
py::array_t<T> signatures_impl(const MinHasher<T>& hasher, const py::handle& texts, int threads) {
  TextBatch batch = collect_texts(texts);
  const std::size_t n = batch.views.size();
  const std::size_t k = static_cast<std::size_t>(hasher.config().num_perm);
  py::array_t<T> out({n, k});
  T* dst = out.mutable_data();
  const unsigned nt = thread_count(threads);
  {
    py::gil_scoped_release release;
    parallel_for(n, nt, 64, [&](std::size_t begin, std::size_t end) {
      MinHashWorkspace<T> ws;
      for (std::size_t i = begin; i < end; ++i) {
        hasher.signature(batch.views[i].data(), batch.views[i].size(), dst + i * k, ws);
      }
    });
  }
  return out;
}

// Signatures and the 128-bit digests of the normalised texts ([n, 2] uint64: lo, hi), the
// exact-duplicate test of dedup (equal digests: equal normalised text).
template <class T>
py::tuple signatures_digests_impl(const MinHasher<T>& hasher, const py::handle& texts, int threads) {
  TextBatch batch = collect_texts(texts);
  const std::size_t n = batch.views.size();
  const std::size_t k = static_cast<std::size_t>(hasher.config().num_perm);
  py::array_t<T> out({n, k});
  py::array_t<std::uint64_t> digests({n, std::size_t{2}});
  T* dst = out.mutable_data();
  std::uint64_t* dig = digests.mutable_data();
  const unsigned nt = thread_count(threads);
  {
    py::gil_scoped_release release;
    parallel_for(n, nt, 64, [&](std::size_t begin, std::size_t end) {
      MinHashWorkspace<T> ws;
      Digest128 d;
      for (std::size_t i = begin; i < end; ++i) {
        hasher.signature_digest(batch.views[i].data(), batch.views[i].size(), dst + i * k, ws, d,
                                [](const Digest128&, T*) { return false; });
        dig[2 * i] = d.lo;
        dig[2 * i + 1] = d.hi;
      }
    });
  }
  return py::make_tuple(out, digests);
}

// A C-contiguous 2-D signature matrix of T with `num_perm` columns (1-D: one row).
template <class T>
py::array_t<T, py::array::c_style> checked_signatures(const py::array& a, std::size_t num_perm, const char* name) {
  if (!py::isinstance<py::array_t<T>>(a)) {
    throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(a.dtype())) + ", expected " +
                         (sizeof(T) == 4 ? "uint32" : "uint64"));
  }
  if (a.ndim() != 1 && a.ndim() != 2) {
    throw py::value_error(std::string(name) + " must be 1-D or 2-D, got " + std::to_string(a.ndim()) + "-D");
  }
  const std::size_t cols = static_cast<std::size_t>(a.shape(a.ndim() - 1));
  if (cols != num_perm) {
    throw py::value_error(std::string(name) + " has " + std::to_string(cols) + " columns, expected num_perm=" +
                          std::to_string(num_perm));
  }
  return py::array_t<T, py::array::c_style>::ensure(a);
}

std::size_t rows_of(const py::array& a) { return a.ndim() == 1 ? 1 : static_cast<std::size_t>(a.shape(0)); }

template <class T>
class PyLSHIndex {
 public:
  explicit PyLSHIndex(const LSHParams& p) : idx_(p) {}
  explicit PyLSHIndex(LSHIndex<T>&& idx) : idx_(std::move(idx)) {}

  py::tuple add(const py::array& sigs_in, const py::object& keys_in) {
    auto sigs = checked_signatures<T>(sigs_in, k(), "signatures");
    const std::size_t n = rows_of(sigs);
    py::array_t<std::int64_t, py::array::c_style> keys;
    const std::int64_t* kp = nullptr;
    std::vector<std::int64_t> default_keys;
    if (!keys_in.is_none()) {
      keys = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(keys_in);
      if (!keys || keys.ndim() != 1 || static_cast<std::size_t>(keys.shape(0)) != n) {
        throw py::value_error("keys must be a 1-D integer array with one key per signature row (" +
                              std::to_string(n) + ")");
      }
      kp = keys.data();
    }
    py::array_t<std::int64_t> dup_key(n);
    py::array_t<std::int64_t> dup_pos(n);
    py::array_t<float> sim(n);
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mu_);
      idx_.add(sigs.data(), n, kp, dup_pos.mutable_data(), sim.mutable_data(),
               [](std::uint32_t, std::uint32_t, double) {});
      std::int64_t* dk = dup_key.mutable_data();
      const std::int64_t* dp = dup_pos.data();
      for (std::size_t i = 0; i < n; ++i) dk[i] = dp[i] >= 0 ? idx_.keys()[static_cast<std::size_t>(dp[i])] : -1;
    }
    return py::make_tuple(dup_key, dup_pos, sim);
  }

  py::array_t<std::int64_t> query(const py::array& sig_in) {
    auto sig = checked_signatures<T>(sig_in, k(), "signature");
    if (sig.ndim() != 1) throw py::value_error("query takes one signature (a 1-D array)");
    std::vector<std::int64_t> keys;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mu_);
      for (std::uint32_t pos : idx_.query(sig.data())) keys.push_back(idx_.keys()[pos]);
    }
    py::array_t<std::int64_t> out(keys.size());
    std::copy(keys.begin(), keys.end(), out.mutable_data());
    return out;
  }

  py::bytes to_bytes(const std::string& meta, const py::object& hasher) {
    std::vector<char> buf;
    const HasherParams hp = hasher_params(hasher);
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mu_);
      buf = idx_.to_bytes(meta, hp);
    }
    return py::bytes(buf.data(), buf.size());
  }

  py::array_t<std::int64_t> keys() {
    std::lock_guard<std::mutex> lock(mu_);
    py::array_t<std::int64_t> out(idx_.size());
    std::copy(idx_.keys().begin(), idx_.keys().end(), out.mutable_data());
    return out;
  }

  py::array_t<T> signatures() {
    std::lock_guard<std::mutex> lock(mu_);
    py::array_t<T> out({idx_.size(), k()});
    if (idx_.size()) std::copy(idx_.signature(0), idx_.signature(0) + idx_.size() * k(), out.mutable_data());
    return out;
  }

  std::size_t size() const { return idx_.size(); }
  const LSHParams& params() const { return idx_.params(); }

 private:
  std::size_t k() const { return static_cast<std::size_t>(idx_.params().num_perm); }
  LSHIndex<T> idx_;
  std::mutex mu_;
};

template <class T>
void bind_width(py::module_& m, const char* hasher_name, const char* index_name) {
  py::class_<MinHasher<T>>(m, hasher_name)
      .def(py::init([](int num_perm, int ngram, int unit, std::uint64_t seed) {
             MinHashConfig c;
             c.num_perm = num_perm;
             c.ngram = ngram;
             c.unit = static_cast<Unit>(unit);
             c.seed = seed;
             return MinHasher<T>(c);
           }),
           py::arg("num_perm"), py::arg("ngram"), py::arg("unit"), py::arg("seed"))
      .def("signatures", &signatures_impl<T>, py::arg("texts"), py::arg("threads") = 0)
      .def("signatures_digests", &signatures_digests_impl<T>, py::arg("texts"), py::arg("threads") = 0)
      .def_property_readonly("a", [](const MinHasher<T>& h) { return py::array_t<T>(h.a().size(), h.a().data()); })
      .def_property_readonly("b", [](const MinHasher<T>& h) { return py::array_t<T>(h.b().size(), h.b().data()); });

  py::class_<PyLSHIndex<T>>(m, index_name)
      .def(py::init([](int num_perm, int bands, int rows, double threshold, bool verify, bool match_empty) {
             LSHParams p;
             p.num_perm = num_perm;
             p.bands = bands;
             p.rows = rows;
             p.threshold = threshold;
             p.verify = verify;
             p.match_empty = match_empty;
             return std::make_unique<PyLSHIndex<T>>(p);
           }),
           py::arg("num_perm"), py::arg("bands"), py::arg("rows"), py::arg("threshold"), py::arg("verify"),
           py::arg("match_empty"))
      .def("add", &PyLSHIndex<T>::add, py::arg("signatures"), py::arg("keys") = py::none())
      .def("query", &PyLSHIndex<T>::query, py::arg("signature"))
      .def("to_bytes", &PyLSHIndex<T>::to_bytes, py::arg("meta"), py::arg("hasher") = py::none())
      .def("keys", &PyLSHIndex<T>::keys)
      .def("signatures", &PyLSHIndex<T>::signatures)
      .def("__len__", &PyLSHIndex<T>::size)
      .def("params",
           [](const PyLSHIndex<T>& idx) {
             const LSHParams& p = idx.params();
             py::dict d;
             d["num_perm"] = p.num_perm;
             d["bands"] = p.bands;
             d["rows"] = p.rows;
             d["threshold"] = p.threshold;
             d["verify"] = p.verify;
             d["match_empty"] = p.match_empty;
             return d;
           })
      .def_static(
          "from_bytes",
          [](const py::buffer& data) {
            py::buffer_info info = data.request();
            const char* p = static_cast<const char*>(info.ptr);
            const std::size_t len = static_cast<std::size_t>(info.size * info.itemsize);
            std::string meta;
            HasherParams hp;
            std::uint32_t version = 0;
            std::unique_ptr<PyLSHIndex<T>> out;
            {
              py::gil_scoped_release release;
              out = std::make_unique<PyLSHIndex<T>>(LSHIndex<T>::from_bytes(p, len, &meta, &hp, &version));
            }
            return py::make_tuple(std::move(out), py::bytes(meta), hasher_tuple(hp), version);
          },
          py::arg("data"));

  m.def(
      "cluster_signatures",
      [](const py::array_t<T>& sigs_in, int bands, int rows, double threshold, bool verify, bool match_empty) {
        if (sigs_in.ndim() != 2) throw py::value_error("signatures must be a 2-D array");
        auto sigs = py::array_t<T, py::array::c_style>::ensure(sigs_in);
        const std::size_t n = static_cast<std::size_t>(sigs.shape(0));
        LSHParams p;
        p.num_perm = static_cast<int>(sigs.shape(1));
        p.bands = bands;
        p.rows = rows;
        p.threshold = threshold;
        p.verify = verify;
        p.match_empty = match_empty;
        py::array_t<std::int64_t> cluster(n), dup_pos(n);
        py::array_t<float> sim(n);
        std::uint64_t comparisons = 0, refused = 0;
        {
          py::gil_scoped_release release;
          // Ctrl-C: run Python's signal handlers now and then (with the GIL, briefly); a handler
          // that raises (KeyboardInterrupt) stops the clustering with that exception.
          comparisons = cluster_signatures(sigs.data(), n, p, cluster.mutable_data(), dup_pos.mutable_data(),
                                           sim.mutable_data(), &refused, [] {
                                             py::gil_scoped_acquire acquire;
                                             if (PyErr_CheckSignals() != 0) throw py::error_already_set();
                                           });
        }
        return py::make_tuple(cluster, dup_pos, sim, comparisons, refused);
      },
      py::arg("signatures").noconvert(), py::arg("bands"), py::arg("rows"), py::arg("threshold"), py::arg("verify"),
      py::arg("match_empty"));

  m.def(
      "jaccard",
      [](const py::array_t<T>& a_in, const py::array_t<T>& b_in) {
        if (a_in.ndim() != b_in.ndim() || a_in.ndim() < 1 || a_in.ndim() > 2) {
          throw py::value_error("signatures must both be 1-D or both 2-D");
        }
        for (py::ssize_t d = 0; d < a_in.ndim(); ++d) {
          if (a_in.shape(d) != b_in.shape(d)) throw py::value_error("signature shapes differ");
        }
        auto a = py::array_t<T, py::array::c_style>::ensure(a_in);
        auto b = py::array_t<T, py::array::c_style>::ensure(b_in);
        const std::size_t k = static_cast<std::size_t>(a.shape(a.ndim() - 1));
        const std::size_t n = rows_of(a);
        py::array_t<double> out(n);
        double* o = out.mutable_data();
        {
          py::gil_scoped_release release;
          for (std::size_t i = 0; i < n; ++i) o[i] = jaccard_estimate(a.data() + i * k, b.data() + i * k, k);
        }
        return out;
      },
      py::arg("a").noconvert(), py::arg("b").noconvert());
}

// A whole input through ByteSource, read chunk_size bytes at a time (the test hooks below).
struct DecodedSource {
  std::string data;
  std::string format;
  std::uint64_t raw_bytes_read = 0, raw_size = 0;
};

DecodedSource decode_source(const std::string& path, std::size_t chunk_size) {
  if (chunk_size == 0) throw py::value_error("chunk_size must be >= 1");
  DecodedSource out;
  try {
    py::gil_scoped_release release;
    auto source = io::ByteSource::open(path);
    std::vector<char> chunk(chunk_size);
    while (const std::size_t got = source->read(chunk.data(), chunk.size())) out.data.append(chunk.data(), got);
    out.format = source->format();
    out.raw_bytes_read = source->raw_bytes_read();
    out.raw_size = source->raw_size();
  } catch (const io::SourceError& e) {
    throw py::value_error(e.what());
  }
  return out;
}

std::string decompression_info() {
#ifdef MIXSIEVE_HAVE_ZLIB
  std::string text = std::string("gzip (zlib ") + zlibVersion() + "), ";
#else
  std::string text = "no gzip (built without zlib), ";
#endif
  std::string why;
  return text + (io::zstd_available(&why) ? "zstd (libzstd, loaded at run time)" : "no zstd: " + why);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "mixsieve native kernels (see the mixsieve package for the documented API)";
  py::register_exception<IndexFormatError>(m, "IndexFormatError", PyExc_ValueError);

  mixsieve_bind::bind_sampling(m);
  mixsieve_bind::bind_mixture(m);
  mixsieve_bind::bind_mixup(m);
  mixsieve_bind::bind_lsh_parts(m);
  bind_width<std::uint32_t>(m, "MinHasher32", "LSHIndex32");
  bind_width<std::uint64_t>(m, "MinHasher64", "LSHIndex64");

  m.def(
      "xxh64",
      [](const py::bytes& data, std::uint64_t seed) {
        std::string_view v = data;
        return xxh64(v.data(), v.size(), seed);
      },
      py::arg("data"), py::arg("seed") = 0);
  m.def(
      "_xxh64_pair",
      [](const py::bytes& data, std::uint64_t seed0, std::uint64_t seed1) {
        std::string_view v = data;
        std::uint64_t out[2];
        xxh64_pair(v.data(), v.size(), seed0, seed1, out);
        return py::make_tuple(out[0], out[1]);
      },
      py::arg("data"), py::arg("seed0"), py::arg("seed1"));
  m.def(
      "normalize_text",
      [](const py::handle& text) {
        std::string_view v = text_view(text, 0);
        Normalized norm;
        normalize(v.data(), v.size(), norm);
        return py::str(norm.text.data(), norm.size);
      },
      py::arg("text"));
  m.def(
      "shingles",
      [](const py::handle& text, int unit, int ngram) {
        if (ngram < 1) throw py::value_error("ngram must be >= 1");
        std::string_view v = text_view(text, 0);
        Normalized norm;
        normalize(v.data(), v.size(), norm);
        std::vector<std::size_t> scratch;
        py::list out;
        for_each_shingle(norm, static_cast<Unit>(unit), ngram, scratch,
                         [&](const char* p, std::size_t n) { out.append(py::bytes(p, n)); });
        return out;
      },
      py::arg("text"), py::arg("unit"), py::arg("ngram"));
  m.attr("SIGNATURE_SCHEME") = kSignatureScheme;
  m.attr("BUCKET_CAP") = LSHIndex<std::uint32_t>::kBucketCap;
  m.attr("CLUSTER_CAP") = LSHIndex<std::uint32_t>::kClusterCap;
  m.def("optimal_bands", &optimal_bands, py::arg("threshold"), py::arg("num_perm"), py::arg("fp_weight") = 0.5,
        py::arg("fn_weight") = 0.5, py::call_guard<py::gil_scoped_release>());
  m.def("index_width", [](const py::buffer& data) {
    py::buffer_info info = data.request();
    return LSHIndex<std::uint32_t>::peek_width(static_cast<const char*>(info.ptr),
                                               static_cast<std::size_t>(info.size * info.itemsize));
  });
  m.def(
      "parse_json_line",
      [](const py::bytes& line, const std::string& text_field, const std::string& id_field) {
        std::string_view v = line;
        JsonLine j;
        {
          py::gil_scoped_release release;
          parse_json_line(v, text_field, id_field, j);
        }
        if (!j.ok) throw py::value_error("byte " + std::to_string(j.error_at) + ": " + j.error);
        auto field = [&](const JsonField& f) -> py::object {
          if (!f.found) return py::none();
          if (f.is_string) return py::make_tuple(py::bytes(f.decoded), f.bad_utf8);
          return py::bytes(std::string(v.substr(f.begin, f.end - f.begin)));
        };
        return py::make_tuple(field(j.text), field(j.id));
      },
      py::arg("line"), py::arg("text_field"), py::arg("id_field") = "",
      "Validate one JSON-object line; (text, id): (decoded UTF-8 bytes, had_bad_utf8) for a string, the raw "
      "JSON bytes for another value, None if absent. Raises ValueError with the byte offset.");
  m.def(
      "_minhash_force_path",
      [](int level) {
        if (level < -1 || level > 2) throw py::value_error("level must be -1 (auto), 0, 1 or 2");
        const int old = minhash_forced_level();
        minhash_forced_level() = level;
        return old;
      },
      py::arg("level"),
      "Test hook: force the MinHash kernels' vector level (0 scalar, 1 AVX2, 2 AVX-512; -1 auto), capped at "
      "what the CPU runs. Returns the previous setting.");
  m.def("_minhash_simd_level", &minhash_cpu_level);
  m.def(
      "_decompress_file",
      [](const std::string& path, std::size_t chunk_size) {
        DecodedSource s = decode_source(path, chunk_size);
        return py::bytes(s.data);
      },
      py::arg("path"), py::kw_only(), py::arg("chunk_size") = std::size_t{1} << 20,
      "Test hook: the whole content of path ('-': standard input) as mixsieve-dedup reads it, gzip and zstd "
      "decompressed, read chunk_size bytes at a time. Raises ValueError for unreadable or corrupt input.");
  m.def(
      "_source_info",
      [](const std::string& path, std::size_t chunk_size) {
        DecodedSource s = decode_source(path, chunk_size);
        return py::make_tuple(s.format, s.data.size(), s.raw_bytes_read, s.raw_size);
      },
      py::arg("path"), py::kw_only(), py::arg("chunk_size") = std::size_t{1} << 20,
      "Test hook: read all of path; (format, decompressed bytes, raw bytes consumed, raw size).");
  m.def("build_info", [] {
    py::dict d;
#if defined(__clang__)
    d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    d["compiler"] = std::string("gcc ") + __VERSION__;
#else
    d["compiler"] = "unknown";
#endif
    d["simd"] = std::string(vector_level_name(minhash_cpu_level())) + " (minhash); " + vector_level_name(ares_isa()) + " (sampling); " +
                vector_level_name(MixSchedule::simd_isa()) + " (mixing); " +
                vector_level_name(mixup::ce_isa_available()) + " (mixup)";
    d["cores"] = available_cores();
    d["unicode"] = unicode_version();
    d["decompression"] = decompression_info();
#ifdef MIXSIEVE_SANITIZE
    d["sanitize"] = true;
#else
    d["sanitize"] = false;
#endif
    // "cuda" is added by mixsieve.info: the CUDA kernels are the optional module _core_cuda
    return d;
  });
}
