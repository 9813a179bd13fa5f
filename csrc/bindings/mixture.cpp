// Bindings of the mixing schedule (MixtureDataset's core): the plan (the schedule's whole state:
// policy, changes, drops, caps) and its kernel, the order map-style sources are read in, the
// gather of a piece, and the slots of the iterable shuffle buffer.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "common.hpp"
#include "mixsieve/mix_plan.hpp"
#include "mixsieve/mixture.hpp"
#include "mixsieve/xxh64.hpp"

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

// Positions stay below 2^62, so that sums of positions and counts never overflow.
constexpr std::int64_t kMaxPosition = std::int64_t{1} << 62;

void check_position(std::int64_t pos, const char* what) {
  if (pos < 0 || pos >= kMaxPosition) {
    throw py::value_error(std::string(what) + " must be in [0, 2**62), got " + std::to_string(pos));
  }
}

// A lag c_d - T_d after n positions is at most n in size (neither side exceeds n); a saved lag
// beyond that (or not finite) is corrupt.
// In token mode the lag is in tokens, and `position` is the tokens served.
void check_carry(const F64& carry, int k, std::int64_t position) {
  for (int d = 0; d < k; ++d) {
    if (!(std::fabs(carry.data()[d]) <= static_cast<double>(position) + 1.0)) {
      throw py::value_error("carry[" + std::to_string(d) + "] = " + std::to_string(carry.data()[d]) +
                            " is not a lag this schedule can have at position " + std::to_string(position));
    }
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
             const I64& seg_counts, const py::object& carry_obj) {
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
  F64 carry;
  if (!carry_obj.is_none()) {
    carry = carry_obj.cast<F64>();
    check_length(carry, k, "carry");
    check_carry(carry, static_cast<int>(k), position);
  }
  try {
    s.restore(position, segment_start, w.data(), counts.data(), seg_counts.data(),
              carry_obj.is_none() ? nullptr : carry.data());
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

// ---- the plan ----

void require_lengths(const MixPlan& p) {
  if (p.kernel().token_mode() && !p.kernel().tokens_complete()) {
    throw py::value_error("token mode needs set_token_lengths for every source");
  }
}

// One source's item lengths in tokens (epoch slot order), shared by every plan that reads it.
// An int32 C-contiguous array (a memory-mapped file shared by workers) is used in place, kept
// alive by a reference the table holds; other integer arrays are checked and copied.
using TokenTable = LengthTable;

TokenTable make_token_table(const py::array& arr) {
  if (arr.ndim() != 1 || arr.size() < 1) throw py::value_error("lengths must be a non-empty 1-D array");
  if (arr.dtype().kind() != 'i' && arr.dtype().kind() != 'u') {
    throw py::type_error("lengths must be integers, got dtype " + std::string(py::str(arr.dtype())));
  }
  auto bad = [](py::ssize_t i, const std::string& v) {
    return py::value_error("lengths[" + std::to_string(i) + "] = " + v + " is not in [0, 2**31)");
  };
  if (arr.dtype().kind() == 'i' && arr.itemsize() == 4 && (arr.flags() & py::array::c_style) &&
      py::dtype::of<std::int32_t>().is(arr.dtype())) {
    const auto* p = static_cast<const std::int32_t*>(arr.data());
    for (py::ssize_t i = 0; i < arr.size(); ++i) {
      if (p[i] < 0) throw bad(i, std::to_string(p[i]));
    }
    auto* keep = new py::object(arr);
    TokenTable t;
    t.data = std::shared_ptr<const std::int32_t>(p, [keep](const std::int32_t*) {
      py::gil_scoped_acquire gil;  // a plan may be freed wherever; the reference needs the GIL
      delete keep;
    });
    t.size = static_cast<std::size_t>(arr.size());
    t.summarise();
    return t;
  }
  if (arr.dtype().kind() == 'u' && arr.dtype().itemsize() == 8) {  // values >= 2^63 would wrap: check them first
    const auto u = py::array_t<std::uint64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
    for (py::ssize_t i = 0; i < u.size(); ++i) {
      if (u.data()[i] > 0x7FFFFFFFu) throw bad(i, std::to_string(u.data()[i]));
    }
  }
  const auto x = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
  std::vector<std::int32_t> v(static_cast<std::size_t>(x.size()));
  const std::int64_t* p = x.data();
  for (py::ssize_t i = 0; i < x.size(); ++i) {
    if (p[i] < 0 || p[i] > 0x7FFFFFFF) throw bad(i, std::to_string(p[i]));
    v[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(p[i]);
  }
  return TokenTable::from(std::move(v));
}

py::array_t<std::int32_t> token_table_array(const TokenTable& t) {
  py::array_t<std::int32_t> a(static_cast<py::ssize_t>(t.size));
  std::copy(t.data.get(), t.data.get() + t.size, a.mutable_data());
  return a;
}

std::vector<double> weights_arg(const py::handle& h, int k, const char* name) {
  F64 w = py::cast<F64>(h);
  check_length(w, k, name);
  return std::vector<double>(w.data(), w.data() + k);
}

void raise_bad_weights(int bad, int k, const std::vector<double>& w, const std::string& what) {
  if (bad == k) throw py::value_error(what + " are all zero; at least one must be > 0");
  throw py::value_error(what + "[" + std::to_string(bad) + "] = " + std::to_string(w[static_cast<std::size_t>(bad)]) +
                        " is not a finite number >= 0");
}

WeightCurve make_curve(const I64& points, const py::list& vectors, bool linear, std::int64_t every, int k) {
  WeightCurve c;
  if (points.ndim() != 1 || points.size() < 1 || static_cast<std::size_t>(points.size()) != vectors.size()) {
    throw py::value_error("a curve needs one weight vector per point, and at least one point");
  }
  if (every < 1) throw py::value_error("every must be >= 1");
  c.points.assign(points.data(), points.data() + points.size());
  if (c.points[0] != 0) throw py::value_error("the first point must be at position 0");
  for (std::size_t i = 1; i < c.points.size(); ++i) {
    if (c.points[i] <= c.points[i - 1]) throw py::value_error("points must increase strictly");
  }
  for (const auto& v : vectors) {
    std::vector<double> w = weights_arg(v, k, "curve weights");
    const int bad = check_weights(w.data(), k);
    if (bad >= 0) raise_bad_weights(bad, k, w, "curve weights");
    c.vectors.push_back(std::move(w));
  }
  c.linear = linear;
  c.every = every;
  return c;
}

template <class T>
py::array_t<T> to_array(const std::vector<T>& v) {
  py::array_t<T> a(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

py::dict plan_state(const MixPlan& p) {
  py::dict d = state(p.kernel());
  d["carry"] = p.kernel().carry();
  d["policy"] = p.policy();
  py::list dropped;
  for (int i = 0; i < p.num_sources(); ++i) {
    if (p.dropped()[static_cast<std::size_t>(i)]) dropped.append(i);
  }
  d["dropped"] = dropped;
  d["left"] = p.left();
  d["tokens"] = p.kernel().tokens_served();
  d["segment_tokens"] = p.kernel().segment_tokens();
  d["lengths"] = p.lengths();
  d["ended"] = p.ended();
  py::list changes;
  for (const auto& c : p.changes()) changes.append(py::make_tuple(c.first, c.second));
  d["changes"] = changes;
  return d;
}

// The caller (python/mixsieve/mixture/checkpoint.py) has checked the types; this checks
// lengths, ranges and consistency.
void plan_restore(MixPlan& p, const py::dict& st) {
  require_lengths(p);
  const int k = p.num_sources();
  const auto position = st["position"].cast<std::int64_t>();
  const auto seg_start = st["segment_start"].cast<std::int64_t>();
  check_position(position, "position");
  if (position < seg_start || seg_start < 0) throw py::value_error("need 0 <= segment_start <= position");
  const F64 weights = st["weights"].cast<F64>(), carry = st["carry"].cast<F64>();
  const I64 counts = st["counts"].cast<I64>(), seg_counts = st["segment_counts"].cast<I64>();
  const I64 lengths = st["lengths"].cast<I64>();
  check_length(weights, k, "weights");
  check_length(carry, k, "carry");
  check_length(counts, k, "counts");
  check_length(seg_counts, k, "segment_counts");
  check_length(lengths, k, "lengths");
  const std::vector<double> policy = weights_arg(st["policy"], k, "policy");
  const bool ended = st["ended"].cast<bool>();
  std::vector<char> dropped(static_cast<std::size_t>(k), 0);
  for (const auto& h : st["dropped"].cast<py::list>()) {
    const auto d = h.cast<std::int64_t>();
    if (d < 0 || d >= k) throw py::value_error("dropped source " + std::to_string(d) + " is out of range");
    if (p.on_exhausted() == MixPlan::kCycle && p.epoch_caps()[static_cast<std::size_t>(d)] < 0) {
      throw py::value_error("a cycling mixture never drops a source without max_epochs");
    }
    dropped[static_cast<std::size_t>(d)] = 1;
  }
  // token counts and where sources left (states from before token mode have neither)
  const bool tokens = p.kernel().token_mode();
  std::vector<std::int64_t> tok(static_cast<std::size_t>(k), 0), seg_tok(tok), left(static_cast<std::size_t>(k), -1);
  if (tokens && (!st.contains("tokens") || !st.contains("segment_tokens"))) {
    throw py::value_error("a token-mode state needs 'tokens' and 'segment_tokens'");
  }
  if (tokens) {
    const I64 t = st["tokens"].cast<I64>(), sg = st["segment_tokens"].cast<I64>();
    check_length(t, k, "tokens");
    check_length(sg, k, "segment_tokens");
    std::int64_t sum = 0;
    for (int d = 0; d < k; ++d) {
      tok[static_cast<std::size_t>(d)] = t.data()[d];
      seg_tok[static_cast<std::size_t>(d)] = sg.data()[d];
      if (!(t.data()[d] >= sg.data()[d] && sg.data()[d] >= 0)) throw py::value_error("need tokens >= segment_tokens >= 0");
      if (t.data()[d] >= kMaxPosition || __builtin_add_overflow(sum, t.data()[d], &sum) || sum >= kMaxPosition) {
        throw py::value_error("tokens must sum to less than 2**62");
      }
      // n items of a source hold between n * (its shortest) and n * (its longest) tokens
      const TokenLengths& lens = p.kernel().token_lengths(d);
      const auto within = [&](std::int64_t n, std::int64_t got) {
        const __int128 lo = static_cast<__int128>(n) * lens.table.lo, hi = static_cast<__int128>(n) * lens.table.hi;
        return got >= lo && got <= hi;
      };
      if (!within(counts.data()[d], t.data()[d]) || !within(seg_counts.data()[d], sg.data()[d])) {
        throw py::value_error("tokens[" + std::to_string(d) + "] / segment_tokens[" + std::to_string(d) +
                              "] are not what its counts of items of lengths " + std::to_string(lens.table.lo) + ".." +
                              std::to_string(lens.table.hi) + " can hold");
      }
    }
  }
  const bool has_left = st.contains("left");
  if (has_left) {
    const I64 l = st["left"].cast<I64>();
    check_length(l, k, "left");
    for (int d = 0; d < k; ++d) {
      const std::int64_t at = l.data()[d];
      if (at < -1 || at > position || (at >= 0) != (dropped[static_cast<std::size_t>(d)] != 0)) {
        throw py::value_error("left[" + std::to_string(d) + "] = " + std::to_string(at) +
                              " must be the position where a dropped source left (<= position), -1 otherwise");
      }
      left[static_cast<std::size_t>(d)] = at;
    }
  }
  std::int64_t seg_total = 0;
  for (int d = 0; d < k; ++d) {
    if (counts.data()[d] < seg_counts.data()[d] || seg_counts.data()[d] < 0) {
      throw py::value_error("counts must be >= segment_counts >= 0");
    }
    if (lengths.data()[d] < -1) throw py::value_error("lengths must be >= -1");
    seg_total += seg_counts.data()[d];
  }
  if (!ended && seg_total != position - seg_start) {
    throw py::value_error("segment_counts must sum to position - segment_start");
  }
  std::vector<std::pair<std::int64_t, std::vector<double>>> changes;
  for (const auto& h : st["changes"].cast<py::list>()) {
    const auto pair = h.cast<py::sequence>();
    if (pair.size() != 2) throw py::value_error("each change is [position, weights]");
    changes.emplace_back(pair[0].cast<std::int64_t>(), weights_arg(pair[1], k, "change weights"));
    check_position(changes.back().first, "a change's position");
  }
  std::int64_t served = 0;  // token mode: the longest item is < 2^31 tokens (the sum is checked above)
  for (int d = 0; d < k; ++d) served += tok[static_cast<std::size_t>(d)];
  check_carry(carry, k, tokens ? served + 2147483647 : position);
  std::int64_t total = 0;
  double wsum = 0.0;
  for (int d = 0; d < k; ++d) {
    total += counts.data()[d];
    wsum += weights.data()[d];
    if (counts.data()[d] > position) throw py::value_error("counts[" + std::to_string(d) + "] exceeds the position");
  }
  if (total != position) {
    throw py::value_error("counts sum to " + std::to_string(total) + ", not to the position " + std::to_string(position));
  }
  if (!ended && !(std::fabs(wsum - 1.0) < 1e-9)) throw py::value_error("weights must be normalised (sum to 1)");
  MixPlan q(p);  // restored aside: a rejected state leaves the plan as it was
  try {
    q.restore(position, seg_start, weights.data(), counts.data(), seg_counts.data(), carry.data(), policy.data(),
              dropped, lengths.data(), ended, std::move(changes), tok.data(), seg_tok.data(),
              has_left ? left.data() : nullptr);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  p = std::move(q);
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

// Views base[starts[i] : starts[i] + lengths[i]] of a 1-D contiguous array, as a list: the items
// of a token-sequence source (IndexedTokenSource), made in one call instead of one numpy call
// per item. The views share base's memory and its read-only flag.
py::list sequence_views(const py::array& base, const I64& starts, const I64& lengths) {
  if (base.ndim() != 1 || !(base.flags() & py::array::c_style)) throw py::value_error("base must be a 1-D contiguous array");
  if (starts.ndim() != 1 || lengths.ndim() != 1 || starts.size() != lengths.size()) {
    throw py::value_error("starts and lengths must be 1-D of one length");
  }
  const py::ssize_t n = starts.size(), size = base.shape(0), item = base.itemsize();
  const auto* data = static_cast<const char*>(base.data());
  const std::int64_t *st = starts.data(), *ln = lengths.data();
  for (py::ssize_t i = 0; i < n; ++i) {
    if (st[i] < 0 || ln[i] < 0 || st[i] > size || ln[i] > size - st[i]) {
      throw py::index_error("sequence " + std::to_string(i) + " [" + std::to_string(st[i]) + ", +" + std::to_string(ln[i]) +
                            ") lies outside the token buffer of " + std::to_string(size));
    }
  }
  py::list out(n);
  const py::dtype dt = base.dtype();
  for (py::ssize_t i = 0; i < n; ++i) {
    py::array v(dt, {static_cast<py::ssize_t>(ln[i])}, {item}, data + st[i] * item, base);
    PyList_SET_ITEM(out.ptr(), i, v.release().ptr());
  }
  return out;
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
           py::arg("segment_counts"), py::arg("carry") = py::none())
      .def_property_readonly("position", &MixSchedule::position)
      .def_property_readonly("num_sources", &MixSchedule::num_sources);
  py::class_<TokenTable>(m, "TokenTable",
                         "Item lengths in tokens of one source (int32), shared by the plans that read it.")
      .def(py::init(&make_token_table), py::arg("lengths"))
      .def("__len__", [](const TokenTable& t) { return t.size; })
      .def("array", &token_table_array)
      .def(
          "digest", [](const TokenTable& t) { return xxh64(t.data.get(), t.size * sizeof(std::int32_t), 0); },
          "xxh64 of the lengths (int32, little-endian), for telling tables apart in a checkpoint")
      .def(py::pickle([](const TokenTable& t) { return py::make_tuple(token_table_array(t)); },
                      [](const py::tuple& st) { return make_token_table(st[0].cast<py::array>()); }));
  py::class_<MixPlan>(m, "MixPlan")
      .def(py::init([](int k, bool exact, std::uint64_t seed, int on_exhausted, const I64& fixed_caps) {
             if (k < 1) throw py::value_error("a mixture needs at least one source");
             if (on_exhausted < 0 || on_exhausted > 2) throw py::value_error("on_exhausted must be 0, 1 or 2");
             check_length(fixed_caps, k, "fixed_caps");
             return MixPlan(k, exact, seed, on_exhausted,
                            std::vector<std::int64_t>(fixed_caps.data(), fixed_caps.data() + k));
           }),
           py::arg("num_sources"), py::arg("exact"), py::arg("seed"), py::arg("on_exhausted"), py::arg("fixed_caps"))
      .def(
          "set_curve",
          [](MixPlan& p, const I64& points, const py::list& vectors, bool linear, std::int64_t every) {
            p.set_curve(make_curve(points, vectors, linear, every, p.num_sources()));
          },
          py::arg("points"), py::arg("vectors"), py::arg("linear"), py::arg("every"))
      .def(
          "start",
          [](MixPlan& p, const py::object& policy) {
            require_lengths(p);
            std::vector<double> w(static_cast<std::size_t>(p.num_sources()), 1.0);
            if (!policy.is_none()) w = weights_arg(policy, p.num_sources(), "weights");
            const int bad = p.start(w.data());
            if (bad >= 0) raise_bad_weights(bad, p.num_sources(), w, "weights");
          },
          py::arg("policy"))
      .def(
          "add_change",
          [](MixPlan& p, std::int64_t pos, const py::object& w_obj) {
            check_position(pos, "position");
            const std::vector<double> w = weights_arg(w_obj, p.num_sources(), "weights");
            const int bad = p.add_change(pos, w.data());
            if (bad == -2) {
              throw py::value_error("position " + std::to_string(pos) + " has already been generated (the schedule is at " +
                                    std::to_string(p.position()) + ")");
            }
            if (bad >= 0) raise_bad_weights(bad, p.num_sources(), w, "weights");
          },
          py::arg("position"), py::arg("weights"))
      .def(
          "set_length",
          [](MixPlan& p, int d, std::int64_t n) {
            if (d < 0 || d >= p.num_sources() || n < 0) throw py::value_error("need 0 <= source < k and length >= 0");
            p.set_length(d, n);
          },
          py::arg("source"), py::arg("length"))
      .def(
          "fill",
          [](MixPlan& p, std::int64_t n, std::int64_t end) {
            if (n < 0) throw py::value_error("n must be >= 0");
            require_lengths(p);
            py::array_t<std::int32_t> src(n);
            py::array_t<std::int64_t> item(n);
            std::int64_t got = 0;
            {
              // the Python engine serialises every use of one plan (a lock around fill and
              // add_change), so other threads may run meanwhile
              py::gil_scoped_release release;
              got = p.fill(n, end, src.mutable_data(), item.mutable_data());
            }
            if (got < n) {
              src.resize({got});
              item.resize({got});
            }
            return py::make_tuple(src, item);
          },
          py::arg("n"), py::arg("end") = -1)
      .def(
          "set_token_lengths",
          [](MixPlan& p, int d, const TokenTable& t, std::uint64_t source_key, bool shuffle) {
            if (d < 0 || d >= p.num_sources()) throw py::value_error("source out of range");
            if (p.started()) throw py::value_error("set token lengths before the plan starts");
            p.set_token_lengths(d, t, source_key, shuffle);
          },
          py::arg("source"), py::arg("lengths"), py::arg("source_key"), py::arg("shuffle"))
      .def(
          "set_epoch_caps",
          [](MixPlan& p, const I64& caps) {
            check_length(caps, p.num_sources(), "epoch caps");
            for (py::ssize_t d = 0; d < caps.size(); ++d) {
              if (caps.data()[d] < -1) throw py::value_error("epoch caps must be >= -1");
            }
            p.set_epoch_caps(std::vector<std::int64_t>(caps.data(), caps.data() + caps.size()));
          },
          py::arg("caps"))
      .def(
          "item_lengths",
          [](const MixPlan& p, const py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>& src,
             const I64& item) {
            // the length in tokens of each (source, item) pair, as the plan counts them
            if (src.size() != item.size()) throw py::value_error("src and item differ in length");
            const int k = p.num_sources();
            std::vector<TokenLengths> t;
            require_lengths(p);
            if (p.kernel().token_mode()) {
              for (int d = 0; d < k; ++d) t.push_back(p.kernel().token_lengths(d));
            }
            py::array_t<std::int64_t> out(src.size());
            std::int64_t* o = out.mutable_data();
            for (py::ssize_t i = 0; i < src.size(); ++i) {
              const std::int32_t d = src.data()[i];
              if (d < 0 || d >= k || item.data()[i] < 0) throw py::value_error("source or item out of range");
              o[i] = t.empty() ? 1 : t[static_cast<std::size_t>(d)].of(item.data()[i]);
            }
            return out;
          },
          py::arg("src"), py::arg("item"))
      .def(
          "simulate",
          [](MixPlan& p, std::int64_t n, std::int64_t window, const I64& sizes) {
            if (n < 0 || n >= kMaxPosition) throw py::value_error("n must be in [0, 2**62)");
            if (window < 1) throw py::value_error("window must be >= 1");
            check_length(sizes, p.num_sources(), "sizes");
            require_lengths(p);
            const std::vector<std::int64_t> sz(sizes.data(), sizes.data() + sizes.size());
            SimulateResult r;
            bool interrupted = false;
            {
              py::gil_scoped_release release;
              // Ctrl-C reaches a long dry run: signals are checked between chunks
              r = p.simulate(n, window, sz, [&interrupted] {
                py::gil_scoped_acquire gil;
                interrupted = PyErr_CheckSignals() != 0;
                return !interrupted;
              });
            }
            if (interrupted) throw py::error_already_set();
            const auto k = static_cast<py::ssize_t>(p.num_sources());
            const auto windows = static_cast<py::ssize_t>(r.window_sizes.size());
            auto matrix = [&](const auto& v) {
              using T = typename std::decay_t<decltype(v)>::value_type;
              py::array_t<T> a({windows, k});
              std::copy(v.begin(), v.end(), a.mutable_data());
              return a;
            };
            py::list events;
            for (const PlanLog& e : r.events) {
              events.append(py::make_tuple(e.position, e.kind, e.source, e.weights));
            }
            py::array_t<std::int64_t> epochs({static_cast<py::ssize_t>(r.epoch_events.size() / 3), py::ssize_t{3}});
            std::copy(r.epoch_events.begin(), r.epoch_events.end(), epochs.mutable_data());
            py::dict out;
            out["counts"] = matrix(r.counts);
            out["tokens"] = matrix(r.tokens);
            out["weight_sums"] = matrix(r.weight_sums);
            out["window_sizes"] = to_array(r.window_sizes);
            out["events"] = events;
            out["epoch_events"] = epochs;
            out["generated"] = r.generated;
            return out;
          },
          py::arg("n"), py::arg("window"), py::arg("sizes"),
          "A dry run of the next n positions (the plan advances): per window, samples, tokens and "
          "summed weights per source, and the events (see MixPlan::simulate).")
      .def("state", &plan_state)
      .def("restore", &plan_restore, py::arg("state"))
      .def("copy", [](const MixPlan& p) { return MixPlan(p); })
      .def_property_readonly("position", &MixPlan::position)
      .def_property_readonly("ended", &MixPlan::ended)
      .def_property_readonly("weights", [](const MixPlan& p) { return to_array(p.kernel().weights()); })
      .def_property_readonly("next_weights", [](const MixPlan& p) { return to_array(p.next_weights()); })
      .def_property_readonly("counts", [](const MixPlan& p) { return to_array(p.kernel().counts()); })
      .def_property_readonly("tokens", [](const MixPlan& p) { return to_array(p.kernel().tokens_served()); })
      .def_property_readonly("token_mode", [](const MixPlan& p) { return p.kernel().token_mode(); })
      .def_property_readonly("left", [](const MixPlan& p) { return to_array(p.left()); })
      .def_property_readonly("num_sources", &MixPlan::num_sources);
  m.def(
      "curve_at",
      [](const I64& points, const py::list& vectors, bool linear, std::int64_t every, std::int64_t position) {
        if (position < 0) throw py::value_error("position must be >= 0");
        const py::ssize_t k = vectors.empty() ? 0 : py::cast<F64>(vectors[0]).size();
        return to_array(make_curve(points, vectors, linear, every, static_cast<int>(k)).at(position));
      },
      py::arg("points"), py::arg("vectors"), py::arg("linear"), py::arg("every"), py::arg("position"));
  m.def(
      "curve_next_change",
      [](const I64& points, const py::list& vectors, bool linear, std::int64_t every, std::int64_t position) {
        const py::ssize_t k = vectors.empty() ? 0 : py::cast<F64>(vectors[0]).size();
        const std::int64_t c = make_curve(points, vectors, linear, every, static_cast<int>(k)).next_change(position);
        return c < 0 ? py::object(py::none()) : py::object(py::int_(c));
      },
      py::arg("points"), py::arg("vectors"), py::arg("linear"), py::arg("every"), py::arg("position"));
  m.def(
      "_mix_force_path",
      [](int path) {
        if (path < -1 || path > 3) throw py::value_error("path must be -1 (auto), 0, 1, 2 or 3");
        const int old = MixSchedule::forced_path();
        MixSchedule::forced_path() = path;
        return old;
      },
      py::arg("path"), "Test hook: force the exact scan (0 scalar, 1 AVX2, 2 AVX-512, 3 tree; -1 auto).");
  m.def("_mix_simd_level", &MixSchedule::simd_isa);
  m.def("source_indices", &source_indices, py::arg("items"), py::arg("n"), py::arg("seed"), py::arg("source_key"),
        py::arg("shuffle"));
  m.def("gather_piece", &gather_piece, py::arg("src"), py::arg("item"), py::arg("lists"), py::arg("tables"),
        py::arg("prefetched"), py::arg("names"), py::arg("sizes"), py::arg("shuffle"), py::arg("seed"),
        py::arg("keys"));
  m.def("sequence_views", &sequence_views, py::arg("base"), py::arg("starts"), py::arg("lengths"));
  m.def("buffer_slots", &buffer_slots, py::arg("seed"), py::arg("source_key"), py::arg("epoch"), py::arg("start"),
        py::arg("count"), py::arg("size"));
}

}  // namespace mixsieve_bind
