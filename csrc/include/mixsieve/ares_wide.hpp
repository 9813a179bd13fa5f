// A-Res keys beyond the double range. The key log(u) / w of a weight near 1e308 underflows to
// a subnormal or zero and that of a subnormal weight overflows to -inf, so equal doubles would
// stand for different keys. A WideKey holds the same quotient as -frac * 2^exp with frac in
// [0.5, 1) and an int exponent: it orders every pair of keys exactly, and wherever the double
// key is a normal number the two agree bit for bit (frexp of the double gives the same pair),
// so a sample can move from double keys to wide keys without changing.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "mixsieve/ares_keys.hpp"
#include "mixsieve/parallel.hpp"

namespace mixsieve {

struct WideKey {
  double frac;  // |key| = frac * 2^exp, frac in [0.5, 1)
  int exp;
  std::int64_t id;
};

// Larger keys (smaller magnitudes) first; equal keys fall back to the lower id, as `better`.
struct WideBetter {
  bool operator()(const WideKey& a, const WideKey& b) const {
    if (a.exp != b.exp) return a.exp < b.exp;
    if (a.frac != b.frac) return a.frac < b.frac;
    return a.id < b.id;
  }
};
inline constexpr WideBetter wide_better{};

// The key log_u / w (log_u < 0, w > 0 finite): the correctly rounded quotient of the two
// mantissas, with the exponents added apart, so nothing over- or underflows.
inline WideKey wide_key(double log_u, double w, std::int64_t id) {
  int ee = 0, ew = 0;
  const double fe = std::frexp(-log_u, &ee);
  const double fw = std::frexp(w, &ew);
  double q = fe / fw;  // in (0.5, 2)
  int e = ee - ew;
  while (q >= 1.0) {
    q *= 0.5;
    ++e;
  }
  return {q, e, id};
}

// A double key that is a normal number, as a wide key (exact).
inline WideKey wide_from_double(double key, std::int64_t id) {
  int e = 0;
  const double q = std::frexp(-key, &e);
  return {q, e, id};
}

// The key rounded to a double: -0.0, a subnormal or -inf where it leaves the double range.
inline double wide_to_double(const WideKey& k) { return -std::ldexp(k.frac, k.exp); }

// The k best wide keys, as a heap whose front is the worst kept key.
class WideTopK {
 public:
  explicit WideTopK(std::size_t k) : k_(k) {}

  std::size_t capacity() const { return k_; }
  std::size_t size() const { return heap_.size(); }

  void offer(const WideKey& it) {
    if (k_ == 0) return;
    if (heap_.size() < k_) {
      heap_.push_back(it);
      std::push_heap(heap_.begin(), heap_.end(), wide_better);
    } else if (wide_better(it, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), wide_better);
      heap_.back() = it;
      std::push_heap(heap_.begin(), heap_.end(), wide_better);
    }
  }
  void merge(const WideTopK& other) {
    for (const WideKey& it : other.heap_) offer(it);
  }
  std::vector<WideKey> sorted() const {
    std::vector<WideKey> out(heap_);
    std::sort(out.begin(), out.end(), wide_better);
    return out;
  }
  const std::vector<WideKey>& items() const { return heap_; }
  void clear() { heap_.clear(); }

 private:
  std::size_t k_;
  std::vector<WideKey> heap_;
};

// Offers every positive weight of w[0..n) (id ids[i], or base + i) to `top` with its wide key,
// on `threads` threads (a heap per chunk, merged at the end: the result does not depend on the
// thread count). Every item gets a logarithm: this path is for weights that leave the double
// range, not for speed. Returns -1, or the index of the first weight that is negative, NaN or
// infinite (then `top` is left untouched).
template <class W>
std::int64_t ares_wide_scan(const W* w, std::size_t n, const std::int64_t* ids, std::int64_t base,
                            const AresKeys& keys, WideTopK& top, unsigned threads) {
  if (threads == 0) threads = available_cores();
  const std::size_t chunks = n < (std::size_t{1} << 14) ? 1 : threads;
  const std::size_t grain = (n + chunks - 1) / chunks;
  std::vector<WideTopK> tops(chunks, WideTopK(top.capacity()));
  std::vector<std::int64_t> bad(chunks, -1);
  parallel_for(chunks, threads, 1, [&](std::size_t c0, std::size_t c1) {
    for (std::size_t c = c0; c < c1; ++c) {
      const std::size_t s = std::min(n, c * grain), e = std::min(n, s + grain);
      for (std::size_t i = s; i < e; ++i) {
        const double wi = static_cast<double>(w[i]);
        if (!ares_detail::valid_weight(wi)) {
          bad[c] = static_cast<std::int64_t>(i);
          break;
        }
        if (!(wi > 0.0)) continue;
        const std::int64_t id = ids ? ids[i] : base + static_cast<std::int64_t>(i);
        tops[c].offer(wide_key(pm_log(keys.uniform(id)), wi, id));
      }
    }
  });
  for (std::int64_t b : bad) {
    if (b >= 0) return b;
  }
  for (const WideTopK& t : tops) top.merge(t);
  return -1;
}

}  // namespace mixsieve
