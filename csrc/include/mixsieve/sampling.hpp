// Weighted sampling without replacement (successive sampling: A-Res keys keyed by item id,
// A-ExpJ exponential jumps), inclusion-probability-proportional sampling (Chao with exact
// certainty items), and with-replacement draws. Keys live in log space: log(u) / w. Weights
// anywhere in the float range, subnormal to 1e308: A-Res orders keys that leave the double
// range exactly (ares_wide.hpp); the other samplers rescale weights by a power of two
// (weight_scale.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mixsieve/ares_keys.hpp"
#include "mixsieve/ares_wide.hpp"
#include "mixsieve/parallel.hpp"
#include "mixsieve/rng.hpp"
#include "mixsieve/weight_scale.hpp"

namespace mixsieve {

inline constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// A sampled item: larger keys win; equal keys (practically never) fall back to the lower id,
// so every order below is total and deterministic.
struct Keyed {
  double key;
  std::int64_t id;
};
// A function object, not a function, so that sorts and heaps inline the comparison.
struct Better {
  bool operator()(const Keyed& a, const Keyed& b) const { return a.key > b.key || (a.key == b.key && a.id < b.id); }
};
inline constexpr Better better{};

// The best `keep` items of v, best first, in v (resized to them): the same result as a full
// std::sort with `better` and a truncation. Large inputs are spread over ~n/4 buckets by a
// monotone linear map of the key (equal keys share a bucket); only the buckets that hold the
// best `keep` items are then sorted. About three passes over the data, no selection step,
// instead of a selection plus a comparison sort.
inline void best_sorted(std::vector<Keyed>& v, std::size_t keep) {
  const std::size_t n = v.size();
  keep = std::min(keep, n);
  double lo = 0.0, hi = 0.0;
  bool finite = true;
  if (n > 0) lo = hi = v[0].key;
  for (const Keyed& x : v) {
    finite &= std::isfinite(x.key);
    lo = std::min(lo, x.key);
    hi = std::max(hi, x.key);
  }
  const std::size_t buckets = n / 4;
  const double scale = hi > lo ? static_cast<double>(buckets) / (hi - lo) : 0.0;
  if (n <= 4096 || !finite || !std::isfinite(scale) || scale == 0.0) {
    if (keep < n) std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(keep), v.end(), better);
    v.resize(keep);
    std::sort(v.begin(), v.end(), better);
    return;
  }
  auto bucket = [&](const Keyed& x) {  // best (largest) keys go to bucket 0
    return std::min(buckets - 1, static_cast<std::size_t>((hi - x.key) * scale));
  };
  std::vector<std::size_t> start(buckets + 1, 0);
  for (const Keyed& x : v) ++start[bucket(x) + 1];
  for (std::size_t b = 0; b < buckets; ++b) start[b + 1] += start[b];
  std::size_t used = 0;  // buckets that hold the best `keep` items
  while (used < buckets && start[used] < keep) ++used;
  std::vector<Keyed> out(start[used]);
  {
    std::vector<std::size_t> fill(start.begin(), start.begin() + static_cast<std::ptrdiff_t>(used));
    for (const Keyed& x : v) {
      const std::size_t b = bucket(x);
      if (b < used) out[fill[b]++] = x;
    }
  }
  for (std::size_t b = 0; b < used; ++b) {
    Keyed* const first = out.data() + start[b];
    Keyed* const last = out.data() + start[b + 1];
    if (last - first > 32) {
      std::sort(first, last, better);
      continue;
    }
    for (Keyed* i = first + 1; i < last; ++i) {  // insertion sort: a bucket holds ~4 items
      const Keyed x = *i;
      Keyed* j = i;
      for (; j > first && better(x, j[-1]); --j) *j = j[-1];
      *j = x;
    }
  }
  out.resize(keep);
  v.swap(out);
}

// All of v, best first.
inline void sort_best_first(std::vector<Keyed>& v) { best_sorted(v, v.size()); }

// The k best items seen so far, as a heap whose front is the worst kept item.
class TopK {
 public:
  explicit TopK(std::size_t k) : k_(k) {}  // grows as items arrive: unused reservoirs cost nothing

  std::size_t capacity() const { return k_; }
  std::size_t size() const { return heap_.size(); }
  bool full() const { return heap_.size() >= k_; }
  // Keys at or below this cannot enter (-inf while not full).
  double threshold() const { return full() ? (k_ ? heap_.front().key : std::numeric_limits<double>::infinity()) : kNegInf; }

  void offer(const Keyed& it) {
    if (k_ == 0) return;
    if (!full()) {
      heap_.push_back(it);
      std::push_heap(heap_.begin(), heap_.end(), better);
    } else if (better(it, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), better);
      heap_.back() = it;
      std::push_heap(heap_.begin(), heap_.end(), better);
    }
  }

  void merge(const TopK& other) {
    for (const Keyed& it : other.heap_) offer(it);
  }

  // Best first: the order of successive sampling.
  std::vector<Keyed> sorted() const {
    std::vector<Keyed> out(heap_);
    sort_best_first(out);
    return out;
  }
  const std::vector<Keyed>& items() const { return heap_; }
  void clear() { heap_.clear(); }
  // Every key times a power of two: the order, and so the heap, stays as it is.
  void scale_keys(const PowerScale& by) {
    for (Keyed& it : heap_) it.key = by(it.key);
  }
  bool all_normal() const {
    for (const Keyed& it : heap_) {
      if (!normal_key(it.key)) return false;
    }
    return true;
  }

 private:
  std::size_t k_;
  std::vector<Keyed> heap_;
};

// The k best items of many offers, for scans: candidates above a threshold are buffered and,
// when 2k have piled up, cut back to the best k with a linear-time selection, which raises the
// threshold. O(1) amortised per candidate, against O(log k) for a heap.
class BestK {
 public:
  explicit BestK(std::size_t k) : k_(k) {}

  std::size_t capacity() const { return k_; }
  // Keys below this cannot be among the best k (-inf until k items have been kept).
  double threshold() const { return t_; }

  void offer(const Keyed& it) {
    if (k_ == 0 || it.key < t_) return;
    buf_.push_back(it);
    if (buf_.size() >= 2 * k_ + 64) cut();
  }

  void merge(const BestK& other) {
    reserve(buf_.size() + other.buf_.size());
    for (const Keyed& it : other.buf_) offer(it);
  }

  // The best k, best first.
  std::vector<Keyed> sorted() const {
    std::vector<Keyed> out(buf_);
    best_sorted(out, k_);
    return out;
  }
  const std::vector<Keyed>& items() {
    cut();
    return buf_;
  }
  std::size_t size() const { return std::min(buf_.size(), k_); }
  void reserve(std::size_t candidates) { buf_.reserve(std::min(candidates, 2 * k_ + 64)); }
  void clear() {
    buf_.clear();
    t_ = kNegInf;
  }

 private:
  void cut() {
    if (buf_.size() <= k_) return;
    std::nth_element(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(k_ - 1), buf_.end(), better);
    buf_.resize(k_);
    t_ = buf_[k_ - 1].key;  // the worst kept key
  }

  std::size_t k_;
  std::vector<Keyed> buf_;
  double t_ = kNegInf;
};

// Index of the first weight that is negative, NaN or infinite, or -1; counts positive weights
// and finds the largest and the smallest positive one (for weight_exponent). The main pass has
// no early exit, so it vectorises; the index is searched only on failure.
template <class W>
std::int64_t first_bad_weight(const W* w, std::size_t n, std::size_t* positive, double* largest = nullptr,
                              double* smallest = nullptr) {
  std::size_t pos = 0;
  bool ok = true;
  W mx = W(0), mn = std::numeric_limits<W>::infinity();
  for (std::size_t i = 0; i < n; ++i) {
    const W v = w[i];
    ok &= (v >= W(0)) & (v <= std::numeric_limits<W>::max());
    pos += v > W(0);
    mx = v > mx ? v : mx;
    mn = (v > W(0)) & (v < mn) ? v : mn;
  }
  if (positive) *positive = pos;
  if (largest) *largest = static_cast<double>(mx);
  if (smallest) *smallest = static_cast<double>(mn);
  if (ok) return -1;
  for (std::size_t i = 0; i < n; ++i) {
    if (!(w[i] >= W(0) && w[i] <= std::numeric_limits<W>::max())) return static_cast<std::int64_t>(i);
  }
  return -1;
}

// Candidates whose double key could not be ordered exactly (see ares_wide.hpp): keys that
// underflowed to a subnormal or zero (weights near 1e308) and keys that overflowed to -inf
// (weights far below the others). ares_scan leaves them out of `top` and counts them here.
struct OutOfRange {
  std::size_t tiny = 0;  // would beat every normal key: the double sample is wrong
  std::size_t huge = 0;  // below every normal key: harmless once k normal keys are kept
};

// A-Res with keys log(u_id) / w (AresKeys): offers every item of w[0..n) with id ids[i] (or
// base + i) to `top`, validating the weights in the same pass. A vectorised first pass marks
// the few items of each block of 256 whose bound u - 1 >= log(u) could reach the threshold;
// only those get a logarithm. Keys below floor are skipped too (a bound known from
// elsewhere). Returns -1, or stops at the first weight that is negative, NaN or infinite and
// returns its index (`top` may then hold part of the batch).
template <class W, class Top>
std::int64_t ares_scan(const W* w, std::size_t n, const std::int64_t* ids, std::int64_t base, const AresKeys& keys,
                       Top& top, double floor = kNegInf, OutOfRange* range = nullptr) {
  double t = std::max(top.threshold(), floor);
  constexpr std::size_t kBlock = 256;
  constexpr std::size_t kAhead = 8;  // blocks: the loop computes too much for the hardware prefetcher alone
  // Without ids, the vector pass wants blocks that start at an id that is a multiple of 16.
  std::size_t i0 = 0;
  std::size_t head = ids ? 0 : (16 - (static_cast<std::uint64_t>(base) & 15)) & 15;
  while (i0 < n) {
    std::size_t cnt = std::min(kBlock, n - i0);
    if (head) {
      cnt = std::min(cnt, head);
      head = 0;
    } else if (cnt >= 16) {
      cnt &= ~std::size_t{15};
    }
    if (i0 + (kAhead + 1) * kBlock <= n) {
      const char* ahead = reinterpret_cast<const char*>(w + i0 + kAhead * kBlock);
      for (std::size_t b = 0; b < kBlock * sizeof(W); b += 64) __builtin_prefetch(ahead + b);
    }
    const W* wb = w + i0;
    const std::int64_t* ib = ids ? ids + i0 : nullptr;
    const std::int64_t bb = base + static_cast<std::int64_t>(i0);
    FirstPass pass;
    ares_first_pass(wb, ib, bb, cnt, keys, ares_pass_threshold(t), pass);
    if (pass.invalid) {
      std::size_t j = 0;
      while (j + 1 < cnt && ares_detail::valid_weight(static_cast<double>(wb[j]))) ++j;
      return static_cast<std::int64_t>(i0 + j);
    }
    // The marked items' keys first (independent, so their logarithms overlap), then the offers;
    // .key holds the weight until the key replaces it.
    Keyed cand[kBlock];
    std::size_t nc = 0;
    for (std::size_t q = 0; q < 4; ++q) {
      for (std::uint64_t m = pass.may[q]; m; m &= m - 1) {
        const std::size_t j = 64 * q + static_cast<std::size_t>(__builtin_ctzll(m));
        cand[nc++] = {static_cast<double>(wb[j]), ib ? ib[j] : bb + static_cast<std::int64_t>(j)};
      }
    }
    for (std::size_t c = 0; c < nc; ++c) cand[c].key = keys.key(cand[c].id, cand[c].key);
    for (std::size_t c = 0; c < nc; ++c) {
      if (cand[c].key < t) continue;
      if (!normal_key(cand[c].key)) {
        if (range) ++(cand[c].key == kNegInf ? range->huge : range->tiny);
        continue;
      }
      top.offer(cand[c]);
      t = std::max(top.threshold(), floor);
    }
    i0 += cnt;
  }
  return -1;
}

// A floor below the k-th best key, from the items at a stride (their exact keys): about
// 1.15 k items of the whole array lie above it. -inf when the sample is too small to tell.
template <class W>
double ares_estimate_floor(const W* w, std::size_t n, const std::int64_t* ids, std::int64_t base, const AresKeys& keys,
                           std::size_t k, unsigned threads = 1) {
  // Whole 256-item blocks, one every `stride` blocks: contiguous reads, vectorised flags. The
  // sample is sized for ~2048 keys above the floor (relative error ~2%, against a 15% margin);
  // when that would mean reading more than an eighth of the array, the floor is not worth it.
  constexpr std::size_t kRun = 256;
  const double want = 2048.0 * static_cast<double>(n) / (1.15 * static_cast<double>(k));
  if (want > static_cast<double>(n) / 8 || want < 4 * 4096) return kNegInf;
  const std::size_t stride = std::max<std::size_t>(2, static_cast<std::size_t>(static_cast<double>(n) / want));
  const std::size_t runs = n / (kRun * stride);
  if (runs * kRun < 4 * 4096) return kNegInf;
  const std::size_t sampled = runs * kRun;
  const auto q = static_cast<std::size_t>(1.15 * static_cast<double>(k) * static_cast<double>(sampled) /
                                          static_cast<double>(n)) + 1;
  // One sample heap per thread over its share of the runs; the q-th best key of the union
  // does not depend on how the runs were shared out.
  const std::size_t parts = std::max<unsigned>(1, threads);
  std::vector<BestK> samples(parts, BestK(q));
  parallel_for(parts, threads, 1, [&](std::size_t p0, std::size_t p1) {
    for (std::size_t part = p0; part < p1; ++part) {
      for (std::size_t r = part * runs / parts; r < (part + 1) * runs / parts; ++r) {
        const std::size_t s = r * kRun * stride;
        ares_scan(w + s, kRun, ids ? ids + s : nullptr, base + static_cast<std::int64_t>(s), keys, samples[part]);
      }
    }
  });
  for (std::size_t part = 1; part < parts; ++part) samples[0].merge(samples[part]);
  return samples[0].size() >= q ? samples[0].sorted().back().key : kNegInf;
}

// The k best A-Res keys of a whole array into `into`, on `threads` threads (one chunk each),
// validating as it goes: merged into `into` only if every weight is valid, so a bad batch
// leaves a reservoir untouched (returns -1, or the index of the first invalid weight). An
// empty `into` with large k first estimates a floor from a strided sample, so the scan
// handles ~1.15 k candidates instead of k (1 + ln(n / k)); if the floor turns out too high
// the scan is repeated without it. The result never depends on the floor or the thread count.
// With `best_first` (for a one-shot sample; `into` is then left empty), each chunk sorts its
// own best k on its thread and the sorted lists are merged into *best_first: the best k of
// all, best first.
// Returns kNeedsWideKeys, leaving `into` untouched, when double keys cannot give the exact
// sample: a key underflowed (weights near 1e308), or fewer than k normal keys exist and some
// overflowed to -inf (weights spanning more than the double range). Use ares_wide_scan then.
inline constexpr std::int64_t kNeedsWideKeys = -2;

template <class W>
std::int64_t ares_select(const W* w, std::size_t n, const std::int64_t* ids, std::int64_t base, const AresKeys& keys,
                         BestK& into, unsigned threads, std::vector<Keyed>* best_first = nullptr) {
  if (threads == 0) threads = available_cores();
  const std::size_t k = into.capacity();
  const double floor =
      (into.size() == 0 && k >= 2048) ? ares_estimate_floor(w, n, ids, base, keys, k, threads) : into.threshold();
  for (double fl : {floor, kNegInf}) {
    const std::size_t chunks = n < (std::size_t{1} << 16) ? 1 : threads;
    const std::size_t grain = (n + chunks - 1) / chunks;
    std::vector<BestK> tops(chunks, BestK(k));
    if (fl > kNegInf) {  // ~1.15 k candidates in all
      for (BestK& t : tops) t.reserve(static_cast<std::size_t>(1.3 * static_cast<double>(k) / static_cast<double>(chunks)));
    }
    std::vector<std::int64_t> bad(chunks);
    std::vector<OutOfRange> range(chunks);
    std::vector<std::vector<Keyed>> lists(best_first ? chunks : 0);
    parallel_for(chunks, threads, 1, [&](std::size_t c0, std::size_t c1) {
      for (std::size_t c = c0; c < c1; ++c) {
        const std::size_t s = std::min(n, c * grain), e = std::min(n, s + grain);
        bad[c] = ares_scan(w + s, e - s, ids ? ids + s : nullptr, base + static_cast<std::int64_t>(s), keys, tops[c],
                           std::max(fl, into.threshold()), &range[c]);
        if (bad[c] >= 0) bad[c] += static_cast<std::int64_t>(s);
        if (best_first && bad[c] < 0) lists[c] = tops[c].sorted();
      }
    });
    std::size_t found = 0;
    bool tiny = false, huge = false;
    for (std::size_t c = 0; c < chunks; ++c) {
      if (bad[c] >= 0) return bad[c];
      found += tops[c].size();
      tiny |= range[c].tiny > 0;
      huge |= range[c].huge > 0;
    }
    if (tiny) return kNeedsWideKeys;
    if (fl != kNegInf && fl > into.threshold() && found < k) {
      // Short of k: the floor was too high, or fewer than k weights are positive (then every
      // one of them was kept). Only a count tells, and it is rarely needed.
      std::size_t positive = 0;
      first_bad_weight(w, n, &positive);
      if (found < positive) continue;
    }
    if (huge && into.size() + found < k) return kNeedsWideKeys;
    if (!best_first) {
      for (const BestK& t : tops) into.merge(t);
      return -1;
    }
    best_first->swap(lists[0]);
    for (std::size_t c = 1; c < chunks; ++c) {
      std::vector<Keyed> both(best_first->size() + lists[c].size());
      std::merge(best_first->begin(), best_first->end(), lists[c].begin(), lists[c].end(), both.begin(), better);
      both.resize(std::min(both.size(), k));
      best_first->swap(both);
    }
    return -1;
  }
  return -1;  // not reached: the pass without a floor always returns
}

// One-pass A-ExpJ (Efraimidis & Spirakis 2006) in log space. Each random number is keyed by
// (seed, purpose, id of the item it is drawn for), so the sample depends on the sequence of
// items only -- not on how it was cut into batches -- and shards with the same seed but
// disjoint ids draw independent numbers.
// Weights are used as w * 2^-exponent() (PowerScale): 0 for ordinary weights, set by the
// caller from the largest weight otherwise (rescale_to), so that neither the keys nor the
// jumps over the cumulative weight leave the double range. exact() tells whether they did.
class ExpJReservoir {
 public:
  ExpJReservoir(std::size_t k, std::uint64_t seed)
      : top_(k),
        fill_key_(stream_key(seed, Stream::ExpJ, 0)),
        jump_key_(stream_key(seed, Stream::ExpJ, 1)),
        cond_key_(stream_key(seed, Stream::ExpJ, 2)),
        merge_key_(stream_key(seed, Stream::ExpJ, 3)) {}

  // Weights must be finite and >= 0 (validated by the caller).
  template <class W>
  void add(const W* w, std::size_t n, const std::int64_t* ids, std::int64_t base) {
    if (scale_.exponent() == 0) {
      add_scaled(w, n, ids, base, [](W x) { return static_cast<double>(x); });
    } else {
      const PowerScale sc = scale_;
      add_scaled(w, n, ids, base, [sc](W x) { return sc(static_cast<double>(x)); });
    }
  }

  // Uses weights * 2^-e from now on: kept keys are multiplied by 2^(e - exponent()) and the
  // pending jump by the inverse, exactly while they stay normal numbers.
  void rescale_to(int e) {
    const int d = e - scale_.exponent();
    if (d == 0) return;
    top_.scale_keys(PowerScale(-d));
    skip_ = PowerScale(d)(skip_);
    scale_ = PowerScale(e);
  }
  int exponent() const { return scale_.exponent(); }
  // False when a kept key left the normal range or a positive weight vanished at this scale
  // while the reservoir was filling: the sample can no longer be ordered exactly.
  bool exact() const { return !lost_ && top_.all_normal(); }

  // Exact merge (top-k of the union of keys); the jump is memoryless and is redrawn. Both
  // reservoirs must use the same exponent (rescale_to the larger one first).
  void merge(const ExpJReservoir& other) {
    top_.merge(other.top_);
    lost_ |= other.lost_;
    if (top_.full()) {
      const std::vector<Keyed>& h = top_.items();
      redraw_jump(merge_key_, h.front().id ^ static_cast<std::int64_t>(other.top_.size()));
    }
  }

  // The sample, best first, with keys in the units of the weights given: log(u) / w, each
  // kept key times 2^-exponent(), rounded once (-0.0, subnormal or -inf where it leaves the
  // double range, as ares returns its wide keys).
  std::vector<Keyed> sample() const {
    std::vector<Keyed> out = top_.sorted();
    if (scale_.exponent() != 0) {
      for (Keyed& it : out) it.key = std::ldexp(it.key, -scale_.exponent());
    }
    return out;
  }
  // top() holds keys of the scaled weights: log(u) / (w * 2^-exponent()).
  TopK& top() { return top_; }
  const TopK& top() const { return top_; }
  double skip() const { return skip_; }
  void restore(double skip, int exponent) {
    skip_ = skip;
    scale_ = PowerScale(exponent);
  }

 private:
  template <class W, class Scale>
  void add_scaled(const W* w, std::size_t n, const std::int64_t* ids, std::int64_t base, Scale scaled) {
    std::size_t i = 0;
    auto id_of = [&](std::size_t j) { return ids ? ids[j] : base + static_cast<std::int64_t>(j); };
    for (; i < n && !top_.full(); ++i) {
      const double wi = scaled(w[i]);
      if (!(wi > 0.0)) {
        lost_ |= w[i] > W(0);
        continue;
      }
      const std::int64_t id = id_of(i);
      top_.offer({std::log(uniform(fill_key_, id)) / wi, id});
      if (top_.full()) redraw_jump(jump_key_, id);
    }
    if (top_.capacity() == 0) return;
    double skip = skip_;
    while (i < n) {
      // The hot loop: subtract weights until the jump is used up (zero weights subtract 0).
      while (i < n && (skip -= scaled(w[i])) > 0.0) ++i;
      if (i == n) break;
      // Item i replaces the worst key; its key is drawn conditioned to exceed the threshold.
      const double wi = scaled(w[i]);
      const std::int64_t id = id_of(i);
      const double log_t = top_.threshold();
      const double k = std::log1p(std::expm1(wi * log_t) * uniform(cond_key_, id)) / wi;
      top_.offer({std::max(k, std::nextafter(log_t, 0.0)), id});
      redraw_jump(jump_key_, id);
      skip = skip_;
      ++i;
    }
    skip_ = skip;
  }

  static double uniform(std::uint64_t key, std::int64_t id) {
    return open_unit(stream_bits(key, static_cast<std::uint64_t>(id)));
  }
  void redraw_jump(std::uint64_t key, std::int64_t id) {
    const double log_t = top_.threshold();
    // Exp(1) / |log T|: the weight to skip before the next replacement.
    skip_ = log_t < 0.0 ? std::log(uniform(key, id)) / log_t : std::numeric_limits<double>::infinity();
  }

  TopK top_;
  std::uint64_t fill_key_, jump_key_, cond_key_, merge_key_;
  double skip_ = 0.0;
  PowerScale scale_;
  bool lost_ = false;
};

// Chao's (1982) list-sequential scheme with exact certainty items: after any prefix of total
// weight W the inclusion probability of item j is min(1, c * w_j) with sum k. The entering and
// eviction draws of an item are keyed by its id, so batch boundaries do not matter.
// Sums stay in range: the weight of everything outside the certain set is kept apart (so a
// heavy certain item never swallows it by cancellation), and weights are held as
// w * 2^-exponent(), with the exponent raised when a weight would otherwise make the sums
// overflow (weight_scale.hpp). At most k items are ever kept.
class ChaoReservoir {
 public:
  struct Slot {
    std::int64_t id;
    double w;  // scaled: w * 2^-exponent()
  };

  ChaoReservoir(std::size_t k, std::uint64_t seed)
      : k_(k), enter_key_(stream_key(seed, Stream::PpsEnter)), evict_key_(stream_key(seed, Stream::PpsEvict)) {}

  template <class W>
  void add(const W* w, std::size_t n, const std::int64_t* ids, std::int64_t base) {
    for (std::size_t i = 0; i < n; ++i) {
      const double wi = static_cast<double>(w[i]);
      if (wi > 0.0) feed(ids ? ids[i] : base + static_cast<std::int64_t>(i), wi);
    }
  }

  // The sample by id, each with its current inclusion probability (1 for certain items).
  std::vector<Keyed> sample() const {
    std::vector<Keyed> out;
    out.reserve(a_.size() + c_items_.size());
    for (const Slot& s : a_) out.push_back({1.0, s.id});
    for (const Slot& s : c_items_) out.push_back({std::min(1.0, c_ * s.w), s.id});
    std::sort(out.begin(), out.end(), [](const Keyed& a, const Keyed& b) { return a.id < b.id; });
    return out;
  }
  const std::vector<Slot>& certain() const { return a_; }   // heaviest first
  const std::vector<Slot>& ordinary() const { return c_items_; }
  // Scaled weight of every item seen that is not certain now (ordinary, evicted or dropped).
  double outside() const { return out_ + out_comp_; }
  double total() const {
    double t = outside();
    for (const Slot& s : a_) t += s.w;
    return t;
  }
  double scale() const { return c_; }
  int exponent() const { return scale_.exponent(); }
  std::size_t capacity() const { return k_; }
  // False once the sample had to choose among weights that vanished against the largest one
  // (weights spanning more than the double range): the inclusion probabilities are then wrong.
  bool exact() const { return !unresolved_; }
  void restore(std::vector<Slot> a, std::vector<Slot> c, double outside, double scale, int exponent) {
    a_ = std::move(a);
    c_items_ = std::move(c);
    out_ = outside;
    out_comp_ = 0.0;
    c_ = scale;
    scale_ = PowerScale(exponent);
    seen_positive_ = !a_.empty() || !c_items_.empty() || outside > 0.0;
  }

 private:
  void add_outside(double w) {  // Neumaier summation: small weights after large ones still count
    const double t = out_ + w;
    out_comp_ += std::fabs(out_) >= std::fabs(w) ? (out_ - t) + w : (w - t) + out_;
    out_ = t;
  }

  void insert_certain(const Slot& s) {
    auto it = std::upper_bound(a_.begin(), a_.end(), s, [](const Slot& x, const Slot& y) {
      return x.w > y.w || (x.w == y.w && x.id < y.id);
    });
    a_.insert(it, s);
  }

  // Weights * 2^-e from now on (e above the current exponent): held weights shrink, c grows.
  void rescale_to(int e) {
    const int d = e - scale_.exponent();
    const PowerScale down(d), up(-d);
    for (Slot& s : a_) s.w = down(s.w);
    for (Slot& s : c_items_) s.w = down(s.w);
    out_ = down(out_);
    out_comp_ = down(out_comp_);
    c_ = up(c_);
    scale_ = PowerScale(e);
  }

  void feed(std::int64_t id, double raw) {
    // The first positive weight, or one that would push the sums towards overflow, sets the
    // exponent; ordinary weights keep exponent 0 and the arithmetic of an unscaled sampler.
    if (!seen_positive_) {
      const int e = weight_exponent(raw);
      if (e != 0) rescale_to(e);
      seen_positive_ = true;
    }
    double w = scale_.exponent() == 0 ? raw : scale_(raw);
    if (w >= 0x1p257) {  // ilogb(raw) - exponent() > kOrdinaryExponent
      rescale_to(std::ilogb(raw));
      w = scale_(raw);
    }
    if (a_.size() + c_items_.size() < k_) {
      insert_certain({id, w});
      return;
    }
    // Certain items form a prefix of A ∪ {x} sorted by weight: position j (0-based) is certain
    // when w_j (k - j) >= the weight of positions >= j plus everything outside. That test is
    // monotone in j, so scan from the light end and stop at the first certain item. Positions
    // >= k are never certain, so at most k items are.
    const Slot x{id, w};
    const auto heavier = [](const Slot& p, const Slot& q) { return p.w > q.w || (p.w == q.w && p.id < q.id); };
    const std::size_t px = static_cast<std::size_t>(
        std::upper_bound(a_.begin(), a_.end(), x, heavier) - a_.begin());  // x's place in the merged order
    const std::size_t m = a_.size() + 1;
    auto at = [&](std::size_t j) -> const Slot& { return j < px ? a_[j] : (j == px ? x : a_[j - 1]); };
    const double outside = out_ + out_comp_;
    double suffix = 0.0;  // weight of merged positions >= j
    std::size_t j = m;
    while (j > 0) {
      const Slot& s = at(j - 1);
      if (s.w * static_cast<double>(k_ - (j - 1)) >= outside + suffix + s.w) {
        // Passes with equality only when the rest weighs nothing: not a certainty then.
        if (s.w > 0.0 && j - 1 < k_) break;
      }
      suffix += s.w;
      --j;
    }
    const std::size_t certain_count = j;  // merged positions [0, j) are certain
    const double rest = outside + suffix;
    c_ = rest > 0.0 ? static_cast<double>(k_ - certain_count) / rest : 0.0;
    // Slots left over for items whose weights all vanished at this scale (below 2^-1074 of the
    // largest): their probabilities cannot be told apart in doubles.
    unresolved_ |= rest == 0.0 && certain_count < k_;
    const bool x_certain = px < certain_count;
    // A items that lost certainty: merged positions >= j other than x.
    std::vector<Slot>& lost = scratch_;
    lost.clear();
    const std::size_t keep_a = x_certain ? certain_count - 1 : certain_count;
    for (std::size_t q = keep_a; q < a_.size(); ++q) lost.push_back(a_[q]);
    a_.resize(keep_a);
    for (const Slot& s : lost) add_outside(s.w);
    if (!x_certain) add_outside(w);
    const double p_enter = x_certain ? 1.0 : std::min(1.0, c_ * w);
    const double u = open_unit(stream_bits(enter_key_, static_cast<std::uint64_t>(id)));
    if (u < p_enter) {
      // Evict one: an item of `lost` with probability (1 - c w_j) / p_enter, else a uniform
      // ordinary item (using the rest of the same uniform number).
      const double v = open_unit(stream_bits(evict_key_, static_cast<std::uint64_t>(id)));
      double acc = 0.0;
      std::size_t victim = lost.size();
      for (std::size_t q = 0; q < lost.size(); ++q) {
        acc += std::max(0.0, 1.0 - c_ * lost[q].w) / p_enter;
        if (v < acc) {
          victim = q;
          break;
        }
      }
      if (victim < lost.size()) {
        lost.erase(lost.begin() + static_cast<std::ptrdiff_t>(victim));
      } else if (!c_items_.empty()) {
        const double r = acc < 1.0 ? (v - acc) / (1.0 - acc) : 0.0;
        std::size_t q = static_cast<std::size_t>(r * static_cast<double>(c_items_.size()));
        q = std::min(q, c_items_.size() - 1);
        c_items_[q] = c_items_.back();
        c_items_.pop_back();
      } else if (!lost.empty()) {  // rounding left no ordinary item: drop the likeliest leaver
        lost.pop_back();
      }
      if (x_certain) {
        insert_certain(x);
      } else {
        c_items_.push_back(x);
      }
    }
    c_items_.insert(c_items_.end(), lost.begin(), lost.end());
  }

  std::size_t k_;
  std::uint64_t enter_key_, evict_key_;
  std::vector<Slot> a_;        // certain items, heaviest first
  std::vector<Slot> c_items_;  // ordinary items
  std::vector<Slot> scratch_;
  double out_ = 0.0, out_comp_ = 0.0;
  double c_ = 0.0;
  PowerScale scale_;
  bool seen_positive_ = false;
  bool unresolved_ = false;
};

// k i.i.d. draws with probability w_i / W (inverse CDF over the prefix sums), in draw order,
// written straight into out[0..k). Memory: the n prefix sums, nothing proportional to k.
// `largest` is the largest weight: when it lies outside the ordinary range the prefix sums are
// taken over w * 2^-e (weight_exponent), so they neither overflow nor lose the bits of
// subnormal weights.
template <class W>
void sample_with_replacement(const W* w, std::size_t n, std::size_t k, std::uint64_t seed, std::int64_t* out,
                             double largest = 0.0) {
  std::vector<double> cdf(n);
  double acc = 0.0;
  const PowerScale sc(weight_exponent(largest));
  if (sc.exponent() == 0) {
    for (std::size_t i = 0; i < n; ++i) cdf[i] = acc += static_cast<double>(w[i]);
  } else {
    for (std::size_t i = 0; i < n; ++i) cdf[i] = acc += sc(static_cast<double>(w[i]));
  }
  const std::uint64_t key = stream_key(seed, Stream::WithReplacement);
  for (std::size_t j = 0; j < k; ++j) {
    const double target = open_unit(stream_bits(key, j)) * acc;
    std::size_t i = static_cast<std::size_t>(std::upper_bound(cdf.begin(), cdf.end(), target) - cdf.begin());
    if (i >= n) i = n - 1;
    while (i > 0 && !(cdf[i] > cdf[i - 1])) --i;  // rounding at the top end never lands on a zero weight
    out[j] = static_cast<std::int64_t>(i);
  }
}

}  // namespace mixsieve
