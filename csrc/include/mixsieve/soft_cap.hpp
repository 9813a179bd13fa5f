// Soft Cap Sampling (FLYT, Shechter & Carmon 2025) in its exact reformulation: each batch is
// a without-replacement sample of b items from softmax(scores - penalty * counts), taken as
// the b smallest exponential-race keys E_i / w_i (w_i = exp(s_i - max s), E_i ~ Exp(1)); every
// picked item's weight is then multiplied by exp(-penalty). The keys below a threshold are
// generated directly as a Poisson process over the cumulative weight (race_points), so a
// batch costs O(n / 16 + b), not O(n).
// Weights are relative to a running offset. Picks update the prefix sums by subtraction, which
// leaves rounding noise of ~2^-52 of the block's weight at its last (re)weighing per pick. At
// the start of every batch the total weight left is compared with that accumulated noise bound
// and with the total after the last (re)weighing: once it falls below 2^24 times the noise
// bound or below 2^-30 of that total, every weight is recomputed as
// exp((s_i - max s) - penalty * (counts_i - min counts) - offset), offset the largest such
// value, so the largest weight is 1 again. The picks never run out of exponent range or
// precision however large penalty or counts * penalty grows.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "mixsieve/parallel.hpp"
#include "mixsieve/rng.hpp"

namespace mixsieve {

struct RaceKey {
  double key;  // E / w: smaller is picked first
  std::int64_t id;
};
inline bool race_before(const RaceKey& a, const RaceKey& b) { return a.key < b.key || (a.key == b.key && a.id < b.id); }

namespace soft_cap_detail {

inline constexpr std::size_t kBlock = 16;  // 2 cache lines of prefix sums per point

// Weights as per-block prefix sums: pref[i] = w[block start] + ... + w[i]. Item i owns
// [pref[i-1], pref[i]) of its block. block_sum mirrors each block's last prefix (the same
// subtractions keep the two bit-identical) in a compact array the walk can stream through.
struct BlockPrefix {
  std::vector<double> pref;
  std::vector<double> block_sum;
  std::size_t blocks() const { return block_sum.size(); }
  void build(const std::vector<double>& w, unsigned threads) {
    pref.resize(w.size());
    block_sum.resize((w.size() + kBlock - 1) / kBlock);
    parallel_for(block_sum.size(), threads, 4096, [&](std::size_t b0, std::size_t b1) {
      for (std::size_t blk = b0; blk < b1; ++blk) {
        const std::size_t e = std::min(w.size(), (blk + 1) * kBlock);
        double acc = 0.0;
        for (std::size_t i = blk * kBlock; i < e; ++i) pref[i] = acc += w[i];
        block_sum[blk] = acc;
      }
    });
  }
  double weight(std::size_t i) const { return pref[i] - (i % kBlock ? pref[i - 1] : 0.0); }
  // w[i] *= factor (w[i] > 0, factor < 1); returns the weight removed.
  double scale(std::size_t i, double factor) {
    const double delta = weight(i) * (1.0 - factor);
    if (!(delta > 0.0)) return 0.0;  // weights only ever shrink: block sums stay upper bounds
    const std::size_t e = std::min(pref.size(), (i / kBlock + 1) * kBlock);
    for (std::size_t j = i; j < e; ++j) pref[j] -= delta;
    block_sum[i / kBlock] -= delta;
    return delta;
  }
};

struct Point {
  std::size_t blk;
  double x;    // offset inside the block's weight
  double tau;  // arrival time
};

// Points of a unit-rate Poisson process on [0, weight of blocks [blk_begin, blk_end)) x
// [lo, hi), in increasing weight position, each mapped to the item whose weight interval
// holds it; an item keeps its earliest time. The first arrival time of item i is then Exp(w_i)
// restricted to [lo, hi): exactly the exponential-race keys below hi, found in
// O(blocks + points) instead of O(items). Returns the weight of the blocks.
inline double race_points(const BlockPrefix& bp, std::size_t blk_begin, std::size_t blk_end, double lo, double hi,
                        std::uint64_t key, std::vector<Point>& scratch, std::vector<RaceKey>& out,
                        std::size_t max_points) {
  out.clear();
  scratch.clear();
  const double rate = hi - lo;
  std::uint64_t c = 0;
  auto uniform = [&] { return open_unit(stream_bits(key, c++)); };
  // Phase 1: positions along the compact block sums only.
  double next = -std::log(uniform()) / rate;
  double acc = 0.0;
  for (std::size_t blk = blk_begin; blk < blk_end; ++blk) {
    const double end = acc + bp.block_sum[blk];
    while (next < end) {
      // The caller keeps the expected count far below this (the band times an upper bound of
      // the weight); only broken bookkeeping could reach it: fail instead of eating memory.
      if (scratch.size() >= max_points) {
        throw std::runtime_error("soft_cap_sample: internal error: too many race points");
      }
      scratch.push_back({blk, next - acc, lo + uniform() * rate});
      next += -std::log(uniform()) / rate;
    }
    acc = end;
  }
  const double weight = acc;
  // Phase 2: the item inside each block, with the block's cache lines fetched ahead.
  const std::size_t n = bp.pref.size();
  constexpr std::size_t kAhead = 6;
  for (std::size_t j = 0; j < scratch.size(); ++j) {
    if (j + kAhead < scratch.size()) {
      const char* p = reinterpret_cast<const char*>(bp.pref.data() + scratch[j + kAhead].blk * kBlock);
      for (std::size_t line = 0; line < kBlock * sizeof(double); line += 64) __builtin_prefetch(p + line);
    }
    const Point& pt = scratch[j];
    const std::size_t first = pt.blk * kBlock;
    const std::size_t len = std::min(n, first + kBlock) - first;
    const double* pref = bp.pref.data() + first;
    std::size_t below = 0;  // prefix values <= x: the item index in the block (branch-free)
    for (std::size_t q = 0; q < len; ++q) below += pref[q] <= pt.x;
    std::size_t i = std::min(below, len - 1);
    while (i > 0 && pref[i] <= pref[i - 1]) --i;  // rounding: never a zero-weight item
    if (!(pref[i] > (i ? pref[i - 1] : 0.0))) continue;
    const auto id = static_cast<std::int64_t>(first + i);
    if (!out.empty() && out.back().id == id) {
      out.back().key = std::min(out.back().key, pt.tau);
    } else {
      out.push_back({pt.tau, id});
    }
  }
  return weight;
}

// Fixed number of independent segments of the item range (never the thread count).
inline constexpr std::size_t kSegments = 16;

// cand (sorted by item, times below the band) absorbs pts (sorted by item, times in the band):
// an item already in cand keeps its earlier time.
inline void merge_earliest(std::vector<RaceKey>& cand, const std::vector<RaceKey>& pts, std::vector<RaceKey>& tmp) {
  if (cand.empty()) {
    cand = pts;
    return;
  }
  tmp.clear();
  std::size_t a = 0, q = 0;
  while (a < cand.size() || q < pts.size()) {
    if (q == pts.size() || (a < cand.size() && cand[a].id <= pts[q].id)) {
      if (q < pts.size() && cand[a].id == pts[q].id) ++q;
      tmp.push_back(cand[a++]);
    } else {
      tmp.push_back(pts[q++]);
    }
  }
  cand.swap(tmp);
}

}  // namespace soft_cap_detail

// Thrown when the `interrupted` callback asks to stop (e.g. Ctrl-C in Python).
struct SoftCapInterrupted {};

// Writes counts[n] (times each item was picked; sum == total) and, if picks is not null, the
// picked items in pick order (total entries). Throws std::invalid_argument on bad input,
// naming the first non-finite score. If `interrupted` is set it is called between batches
// about every 100 ms; when it returns true the run stops by throwing SoftCapInterrupted.
// The result depends on (scores, parameters, seed) only, not on `threads`.
template <class S>
void soft_cap_sample(const S* scores, std::size_t n, std::int64_t total, double penalty, std::int64_t batch_size,
                     std::uint64_t seed, unsigned threads, std::int64_t* counts, std::int64_t* picks,
                     const std::function<bool()>& interrupted = nullptr) {
  using namespace soft_cap_detail;
  if (!(penalty > 0.0) || !std::isfinite(penalty)) throw std::invalid_argument("penalty must be a finite number > 0");
  if (batch_size < 1) throw std::invalid_argument("batch_size must be >= 1");
  if (total < 0) throw std::invalid_argument("total must be >= 0");
  if (threads == 0) threads = available_cores();
  std::fill(counts, counts + n, std::int64_t{0});
  if (total == 0) return;
  // Weights exp(s - max s), computed in parallel chunks (the one O(n) pass with a transcendental).
  const std::size_t grain = std::size_t{1} << 16;
  const std::size_t chunks = (n + grain - 1) / grain;
  std::vector<double> chunk_max(chunks, -std::numeric_limits<double>::infinity());
  std::vector<std::size_t> chunk_bad(chunks, n);  // first non-finite score of each chunk
  parallel_for(chunks, threads, 1, [&](std::size_t c0, std::size_t c1) {
    for (std::size_t c = c0; c < c1; ++c) {
      for (std::size_t i = c * grain; i < std::min(n, (c + 1) * grain); ++i) {
        const double v = static_cast<double>(scores[i]);
        if (!std::isfinite(v) && chunk_bad[c] == n) chunk_bad[c] = i;
        chunk_max[c] = std::max(chunk_max[c], v);
      }
    }
  });
  for (std::size_t bad : chunk_bad) {
    if (bad < n) {
      throw std::invalid_argument("scores[" + std::to_string(bad) + "] = " +
                                  std::to_string(static_cast<double>(scores[bad])) + " is not finite");
    }
  }
  const double top = *std::max_element(chunk_max.begin(), chunk_max.end());
  const std::size_t b_max = static_cast<std::size_t>(std::min<std::int64_t>(batch_size, total));
  BlockPrefix bp;
  std::vector<double> block_ref;  // block sums at the last (re)weighing: bound the rounding noise
  // Weights exp(a_i - max_j a_j) with a_i = (s_i - max s) - penalty * (counts_i - min counts):
  // exact for the least-picked items however large penalty * counts grows (the first time:
  // exp(s_i - max s)). Returns the total weight.
  auto weigh = [&]() {
    std::vector<std::int64_t> chunk_min(chunks, std::numeric_limits<std::int64_t>::max());
    parallel_for(chunks, threads, 1, [&](std::size_t c0, std::size_t c1) {
      for (std::size_t c = c0; c < c1; ++c) {
        for (std::size_t i = c * grain; i < std::min(n, (c + 1) * grain); ++i) {
          chunk_min[c] = std::min(chunk_min[c], counts[i]);
        }
      }
    });
    const std::int64_t least = *std::min_element(chunk_min.begin(), chunk_min.end());
    auto adjusted = [&](std::size_t i) {
      const double a = static_cast<double>(scores[i]) - top;
      return counts[i] == least ? a : a - penalty * static_cast<double>(counts[i] - least);
    };
    std::vector<double> adjusted_max(chunks, -std::numeric_limits<double>::infinity());
    parallel_for(chunks, threads, 1, [&](std::size_t c0, std::size_t c1) {
      for (std::size_t c = c0; c < c1; ++c) {
        for (std::size_t i = c * grain; i < std::min(n, (c + 1) * grain); ++i) {
          adjusted_max[c] = std::max(adjusted_max[c], adjusted(i));
        }
      }
    });
    const double offset = *std::max_element(adjusted_max.begin(), adjusted_max.end());
    std::vector<double> w(n);
    std::vector<std::size_t> chunk_pos(chunks, 0);
    parallel_for(chunks, threads, 1, [&](std::size_t c0, std::size_t c1) {
      for (std::size_t c = c0; c < c1; ++c) {
        for (std::size_t i = c * grain; i < std::min(n, (c + 1) * grain); ++i) {
          w[i] = std::exp(adjusted(i) - offset);
          chunk_pos[c] += w[i] > 0.0;
        }
      }
    });
    std::size_t positive = 0;
    for (std::size_t p : chunk_pos) positive += p;
    if (positive < b_max) {
      throw std::invalid_argument("a batch needs " + std::to_string(b_max) + " distinct items but only " +
                                  std::to_string(positive) +
                                  " have a representable weight exp(adjusted score - max adjusted score) > 0 (fewer"
                                  " items than batch_size, or adjusted scores spanning more than ~700)");
    }
    bp.build(w, threads);  // weights live in the prefix sums from here on
    block_ref = bp.block_sum;
    double weight = 0.0;
    for (double x : bp.block_sum) weight += x;
    return weight;
  };
  double reference_weight = weigh();  // total weight after the last (re)weighing
  const double decay = std::exp(-penalty);
  std::vector<RaceKey> keys;
  const std::size_t segments = std::min<std::size_t>(kSegments, bp.blocks());
  std::vector<std::size_t> seg_begin(segments + 1);
  for (std::size_t sg = 0; sg <= segments; ++sg) seg_begin[sg] = sg * bp.blocks() / segments;
  std::vector<std::vector<RaceKey>> seg_cand(segments), seg_pts(segments), seg_tmp(segments);
  std::vector<std::vector<Point>> seg_scratch(segments);
  std::vector<double> seg_weight(segments, 0.0), seg_removed(segments, 0.0), seg_noise(segments, 0.0);
  double guess = 0.0;
  double last_weight = reference_weight;  // total weight at the start of the last batch
  double removed = 0.0;                   // weight the last batch's picks removed
  double noise = 0.0;  // sum over picks since the (re)weighing of their block's weight then
  // Race points per segment and round: 16x the largest expected count (see `direct`).
  const std::size_t max_points = 4 * (4 * n + 4096) + 4096;
  std::int64_t done = 0;
  auto last_check = std::chrono::steady_clock::now();
  for (std::uint64_t batch = 0; done < total; ++batch) {
    if (interrupted) {
      const auto now = std::chrono::steady_clock::now();
      if (now - last_check >= std::chrono::milliseconds(100)) {
        last_check = now;
        if (interrupted()) throw SoftCapInterrupted{};
      }
    }
    const std::size_t b = static_cast<std::size_t>(std::min<std::int64_t>(batch_size, total - done));
    // Starting threads costs tens of microseconds a batch: small batches over few blocks run
    // on this thread (the result does not depend on it).
    const unsigned batch_threads = bp.blocks() + 4 * b < (std::size_t{1} << 16) ? 1 : threads;
    // The total weight left, up to rounding noise <= ~2^-47 * noise (16 prefix entries per
    // pick, each off by <= 2^-53 of its block's weight at the reweighing).
    const double left = last_weight - removed;
    if (batch > 0 && (left < 0x1p-30 * reference_weight || left < 0x1p-24 * noise)) {
      reference_weight = weigh();  // start again from the adjusted scores
      last_weight = reference_weight;
      noise = 0.0;
      guess = 0.0;
    }
    removed = 0.0;
    double known_weight = last_weight;  // an upper bound: weights only shrink between (re)weighings
    if (batch == 0 || !(guess > 0.0) || !std::isfinite(guess)) {
      double weight = 0.0;
      for (double x : bp.block_sum) weight += x;
      guess = 1.25 * static_cast<double>(b) / weight;  // about 1.25 b points expected
      known_weight = weight;
    }
    // Candidates: every item whose key is below hi, found band by band until there are b.
    // The item range is cut into fixed segments, each its own Poisson process with its own
    // random stream, walked in parallel; the result does not depend on the thread count.
    // When a band would hold far more points than there are items (b close to the number of
    // items with weights far apart: the last item needed is a light one), every item gets its
    // key directly instead, in O(n): the same exponential race, another random stream.
    for (auto& c : seg_cand) c.clear();
    double lo = 0.0, hi = guess;
    bool direct = false;
    for (std::uint64_t round = 0;; ++round) {
      if (round >= 256 || !std::isfinite(hi)) throw std::runtime_error("soft_cap_sample: no finite threshold found");
      if ((hi - lo) * known_weight > 4.0 * static_cast<double>(n) + 4096.0) {
        direct = true;
        break;
      }
      parallel_for(segments, batch_threads, 1, [&](std::size_t s0, std::size_t s1) {
        for (std::size_t sg = s0; sg < s1; ++sg) {
          const std::uint64_t key = stream_key(seed, Stream::SoftCap, (batch * 256 + round) * kSegments + sg);
          seg_weight[sg] =
              race_points(bp, seg_begin[sg], seg_begin[sg + 1], lo, hi, key, seg_scratch[sg], seg_pts[sg], max_points);
          merge_earliest(seg_cand[sg], seg_pts[sg], seg_tmp[sg]);
        }
      });
      if (round == 0) {
        last_weight = 0.0;
        for (double x : seg_weight) last_weight += x;
        known_weight = last_weight;
      }
      std::size_t found = 0;
      for (const auto& c : seg_cand) found += c.size();
      if (found >= b) break;
      lo = hi;
      hi *= 4.0;
    }
    if (direct) {
      last_weight = 0.0;
      for (double x : bp.block_sum) last_weight += x;
      parallel_for(segments, batch_threads, 1, [&](std::size_t s0, std::size_t s1) {
        for (std::size_t sg = s0; sg < s1; ++sg) {
          const std::uint64_t key = stream_key(seed, Stream::SoftCap, (std::uint64_t{1} << 62) + batch);
          std::vector<RaceKey>& cand = seg_cand[sg];
          cand.clear();
          const std::size_t end = std::min(n, seg_begin[sg + 1] * kBlock);
          for (std::size_t i = seg_begin[sg] * kBlock; i < end; ++i) {
            const double wi = bp.weight(i);
            if (!(wi > 0.0)) continue;
            cand.push_back({-std::log(open_unit(stream_bits(key, i))) / wi, static_cast<std::int64_t>(i)});
          }
        }
      });
      std::size_t found = 0;
      for (const auto& c : seg_cand) found += c.size();
      if (found < b) {
        throw std::invalid_argument("a batch needs " + std::to_string(b) + " distinct items but only " +
                                    std::to_string(found) + " have a weight > 0 left");
      }
    }
    // The b-th smallest key, then the picks in item order: memory is touched in one
    // increasing sweep instead of at b random places.
    keys.clear();
    for (const auto& c : seg_cand) keys.insert(keys.end(), c.begin(), c.end());
    std::nth_element(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(b - 1), keys.end(), race_before);
    const RaceKey cut_item = keys[b - 1];
    const double cut = cut_item.key;
    parallel_for(segments, batch_threads, 1, [&](std::size_t s0, std::size_t s1) {
      for (std::size_t sg = s0; sg < s1; ++sg) {
        seg_removed[sg] = seg_noise[sg] = 0.0;
        for (const RaceKey& c : seg_cand[sg]) {  // disjoint memory per segment
          if (race_before(cut_item, c)) continue;
          const auto i = static_cast<std::size_t>(c.id);
          ++counts[i];
          seg_removed[sg] += bp.scale(i, decay);
          seg_noise[sg] += block_ref[i / kBlock];
        }
      }
    });
    for (std::size_t sg = 0; sg < segments; ++sg) {  // fixed order: independent of threads
      removed += seg_removed[sg];
      noise += seg_noise[sg];
    }
    if (picks) {  // pick order: smallest key first (successive sampling)
      std::sort(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(b), race_before);
      for (std::size_t j = 0; j < b; ++j) picks[done + static_cast<std::int64_t>(j)] = keys[j].id;
    }
    // Picked weights only shrink, so keys rise: aim a little above this batch's cut.
    guess = cut * 1.25;
    done += static_cast<std::int64_t>(b);
  }
}

}  // namespace mixsieve
