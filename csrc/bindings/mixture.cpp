// Bindings of the mixing schedule (MixtureDataset's core): chunks of (source, item) pairs, the
// order map-style sources are read in, the gather of a piece, and the slots of the iterable
// shuffle buffer.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common.hpp"
#include "mixsieve/mixture.hpp"

namespace mixsieve_bind {

using namespace mixsieve;

namespace {

using I64 = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>;
using F64 = py::array_t<double, py::array::c_style | py::array::forcecast>;

void check_length(const py::array& a, py::ssize_t n, const char* name) {
  if (a.ndim() != 1 || a.shape(0) != n) {
    throw py::value_error(std::string(name) + " must be 1-D of length " + std::to_string(n));
  }
}

void set_weights(MixSchedule& s, const F64& w) {
  check_length(w, s.num_sources(), "weights");
  const int bad = s.set_weights(w.data());
  if (bad == s.num_sources()) throw py::value_error("weights are all zero; at least one must be > 0");
  if (bad >= 0) {
    throw py::value_error("weights[" + std::to_string(bad) + "] = " + std::to_string(w.data()[bad]) +
                          " is not a finite number >= 0");
  }
}

py::tuple fill(MixSchedule& s, std::int64_t n, const py::object& caps_obj) {
  if (n < 0) throw py::value_error("n must be >= 0");
  I64 caps;
  const std::int64_t* caps_ptr = nullptr;
  if (!caps_obj.is_none()) {
    caps = caps_obj.cast<I64>();
    check_length(caps, s.num_sources(), "caps");
    caps_ptr = caps.data();
  }
  py::array_t<std::int32_t> src(n);
  py::array_t<std::int64_t> item(n);
  std::int64_t got = 0;
  {
    py::gil_scoped_release release;
    got = s.fill(n, src.mutable_data(), item.mutable_data(), caps_ptr);
  }
  if (got < n) {
    src.resize({got});
    item.resize({got});
  }
  return py::make_tuple(src, item);
}

py::dict state(const MixSchedule& s) {
  py::dict d;
  d["position"] = s.position();
  d["segment_start"] = s.segment_start();
  d["weights"] = s.weights();
  d["counts"] = s.counts();
  d["segment_counts"] = s.segment_counts();
  return d;
}

void restore(MixSchedule& s, std::int64_t position, std::int64_t segment_start, const F64& w, const I64& counts,
             const I64& seg_counts) {
  const py::ssize_t k = s.num_sources();
  check_length(w, k, "weights");
  check_length(counts, k, "counts");
  check_length(seg_counts, k, "segment_counts");
  if (position < segment_start || segment_start < 0) throw py::value_error("need 0 <= segment_start <= position");
  std::int64_t seg_total = 0;
  for (py::ssize_t d = 0; d < k; ++d) {
    if (counts.data()[d] < seg_counts.data()[d] || seg_counts.data()[d] < 0) {
      throw py::value_error("counts must be >= segment_counts >= 0");
    }
    seg_total += seg_counts.data()[d];
  }
  if (seg_total != position - segment_start) {
    throw py::value_error("segment_counts must sum to position - segment_start");
  }
  try {
    s.restore(position, segment_start, w.data(), counts.data(), seg_counts.data());
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

// out[i] = the index of the items[i]-th item (over all epochs) of a source of n items, in the
// order the mixture reads it (see SourceOrder).
py::array_t<std::int64_t> source_indices(const I64& items, std::int64_t n, std::uint64_t seed, std::uint64_t source_key,
                                         bool shuffle) {
  if (n < 1) throw py::value_error("n must be >= 1");
  const py::ssize_t m = items.size();
  const std::int64_t* it = items.data();
  for (py::ssize_t i = 0; i < m; ++i) {
    if (it[i] < 0) throw py::value_error("items[" + std::to_string(i) + "] is negative");
  }
  py::array_t<std::int64_t> out(m);
  std::int64_t* o = out.mutable_data();
  py::gil_scoped_release release;
  SourceOrder order(static_cast<std::uint64_t>(n), seed, source_key, shuffle);
  for (py::ssize_t i = 0; i < m; ++i) o[i] = static_cast<std::int64_t>(order(static_cast<std::uint64_t>(it[i])));
  return out;
}

// Slots in [0, size) for items start .. start+count-1 of one epoch of an iterable source.
py::array_t<std::int64_t> buffer_slots(std::uint64_t seed, std::uint64_t source_key, std::uint64_t epoch,
                                       std::int64_t start, std::int64_t count, std::int64_t size) {
  if (count < 0 || start < 0 || size < 1) throw py::value_error("need start >= 0, count >= 0, size >= 1");
  py::array_t<std::int64_t> out(count);
  std::int64_t* o = out.mutable_data();
  const std::uint64_t key = stream_bits(stream_key(seed, Stream::BufferShuffle, source_key), epoch);
  for (std::int64_t i = 0; i < count; ++i) {
    const std::uint64_t bits = stream_bits(key, static_cast<std::uint64_t>(start + i));
    o[i] = static_cast<std::int64_t>((static_cast<unsigned __int128>(bits) * static_cast<std::uint64_t>(size)) >> 64);
  }
  return out;
}

// One piece of the stream, gathered in one pass: for position i of source d = src[i], its item
// number k = item[i] maps to an index of that source (SourceOrder),
// through table[d] when the source is filtered/repeated, and the value is read straight from a
// Python list (lists[d]), or taken in order from prefetched[d] (an object array the Python layer
// filled for other kinds of sources). Returns (names, values) as two lists.
py::tuple gather_piece(const py::array_t<std::int32_t, py::array::c_style>& src,
                       const py::array_t<std::int64_t, py::array::c_style>& item, const py::list& lists,
                       const py::list& tables, const py::list& prefetched, const py::list& names,
                       const py::array_t<std::int64_t, py::array::c_style>& sizes, bool shuffle,
                       std::uint64_t seed, const py::array_t<std::uint64_t, py::array::c_style>& keys) {
  const py::ssize_t n = src.size();
  const auto k = static_cast<std::size_t>(names.size());
  if (item.size() != n) throw py::value_error("src and item differ in length");
  if (lists.size() != k || tables.size() != k || prefetched.size() != k || static_cast<std::size_t>(sizes.size()) != k ||
      static_cast<std::size_t>(keys.size()) != k) {
    throw py::value_error("one list, table, prefetched entry, size and key per source needed");
  }
  struct Src {
    PyObject* list = nullptr;
    const std::int64_t* table = nullptr;
    py::ssize_t table_len = 0;
    PyObject** pre = nullptr;
    py::ssize_t pre_len = 0, pre_used = 0;
    std::int64_t size = 0;
    SourceOrder order{1, 0, 0, false};
  };
  std::vector<Src> ss(k);
  std::vector<py::object> hold;
  for (std::size_t d = 0; d < k; ++d) {
    Src& x = ss[d];
    x.size = sizes.data()[d];
    if (x.size >= 1) x.order = SourceOrder(static_cast<std::uint64_t>(x.size), seed, keys.data()[d], shuffle);
    py::handle l = lists[d];
    if (!l.is_none()) {
      if (!PyList_Check(l.ptr())) throw py::type_error("lists entries must be lists or None");
      x.list = l.ptr();
    }
    py::handle t = tables[d];
    if (!t.is_none()) {
      auto arr = py::array_t<std::int64_t, py::array::c_style>::ensure(t);
      if (!arr) throw py::type_error("tables entries must be int64 arrays or None");
      x.table = arr.data();
      x.table_len = arr.size();
      hold.push_back(arr);
    }
    py::handle p = prefetched[d];
    if (!p.is_none()) {
      py::array arr = py::reinterpret_borrow<py::array>(p);
      if (arr.dtype().kind() != 'O' || arr.ndim() != 1 || !(arr.flags() & py::array::c_style)) {
        throw py::type_error("prefetched entries must be 1-D contiguous object arrays or None");
      }
      x.pre = static_cast<PyObject**>(arr.mutable_data());
      x.pre_len = arr.shape(0);
      hold.push_back(arr);
    }
  }
  const std::int32_t* s = src.data();
  const std::int64_t* it = item.data();
  // Pass 1 finds where each value lives (and asks for that list slot); pass 2 takes the
  // values, asking for each object a few positions ahead: a shuffled read of a big list is
  // one cache miss for the slot and one for the object's reference count, and this way they
  // overlap instead of coming one after the other.
  std::vector<PyObject**> where(static_cast<std::size_t>(n));
  for (py::ssize_t i = 0; i < n; ++i) {
    const std::int32_t d = s[i];
    if (d < 0 || static_cast<std::size_t>(d) >= k) throw py::value_error("source index out of range");
    Src& x = ss[static_cast<std::size_t>(d)];
    if (x.pre != nullptr) {
      if (x.pre_used >= x.pre_len) throw py::value_error("a source has fewer prefetched values than positions");
      where[static_cast<std::size_t>(i)] = &x.pre[x.pre_used++];
      continue;
    }
    if (x.list == nullptr || x.size < 1 || it[i] < 0) throw py::value_error("no data for a position");
    std::int64_t idx = static_cast<std::int64_t>(x.order(static_cast<std::uint64_t>(it[i])));
    if (x.table != nullptr) {
      if (idx >= x.table_len) throw py::value_error("table shorter than the source size");
      idx = x.table[idx];
    }
    if (idx < 0 || idx >= PyList_GET_SIZE(x.list)) {
      throw py::index_error("source list changed size while mixing (index " + std::to_string(idx) + ")");
    }
    PyObject** slot = &reinterpret_cast<PyListObject*>(x.list)->ob_item[idx];
    __builtin_prefetch(slot);
    where[static_cast<std::size_t>(i)] = slot;
  }
  constexpr py::ssize_t kAhead = 8;
  py::list values(n), out_names(n);
  for (py::ssize_t i = 0; i < n; ++i) {
    if (i + kAhead < n) __builtin_prefetch(*where[static_cast<std::size_t>(i + kAhead)], 1);
    PyObject* v = *where[static_cast<std::size_t>(i)];
    Py_INCREF(v);
    PyList_SET_ITEM(values.ptr(), i, v);
    PyObject* nm = PyList_GET_ITEM(names.ptr(), s[i]);
    Py_INCREF(nm);
    PyList_SET_ITEM(out_names.ptr(), i, nm);
  }
  return py::make_tuple(out_names, values);
}

}  // namespace

void bind_mixture(py::module_& m) {
  py::class_<MixSchedule>(m, "MixSchedule")
      .def(py::init([](int num_sources, bool exact, std::uint64_t seed) {
             if (num_sources < 1) throw py::value_error("a mixture needs at least one source");
             return MixSchedule(num_sources, exact, seed);
           }),
           py::arg("num_sources"), py::arg("exact"), py::arg("seed"))
      .def("set_weights", &set_weights, py::arg("weights"))
      .def("fill", &fill, py::arg("n"), py::arg("caps") = py::none())
      .def("state", &state)
      .def("restore", &restore, py::arg("position"), py::arg("segment_start"), py::arg("weights"), py::arg("counts"),
           py::arg("segment_counts"))
      .def_property_readonly("position", &MixSchedule::position)
      .def_property_readonly("num_sources", &MixSchedule::num_sources);
  m.def("source_indices", &source_indices, py::arg("items"), py::arg("n"), py::arg("seed"), py::arg("source_key"),
        py::arg("shuffle"));
  m.def("gather_piece", &gather_piece, py::arg("src"), py::arg("item"), py::arg("lists"), py::arg("tables"),
        py::arg("prefetched"), py::arg("names"), py::arg("sizes"), py::arg("shuffle"), py::arg("seed"),
        py::arg("keys"));
  m.def("buffer_slots", &buffer_slots, py::arg("seed"), py::arg("source_key"), py::arg("epoch"), py::arg("start"),
        py::arg("count"), py::arg("size"));
}

}  // namespace mixsieve_bind
