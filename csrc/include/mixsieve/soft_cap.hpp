// Soft Cap Sampling (FLYT, Shechter & Carmon 2025) in its exact reformulation: each batch is
// a without-replacement sample of b items from softmax(scores - penalty * counts), taken as
// the b smallest exponential-race keys E_i / w_i (w_i = exp(s_i - max s), E_i ~ Exp(1)); every
// picked item's weight is then multiplied by exp(-penalty). The keys below a threshold are
// generated directly as a Poisson process over the cumulative weight (race_points), so a
// batch costs O(n / 16 + b), not O(n). The threshold grows band by band until b items are
// found; when a band would hold more than 4n + 4096 points, the items not found below the
// band's start lo get their keys directly, lo + E_i / w_i (the exponential's memorylessness
// makes that their exact law given what the bands showed), and the batch costs O(n).
//
// The rule, which the CPU (CpuSoftCap below) and the CUDA backend (csrc/cuda/soft_cap.cu)
// both follow to the bit, is written so that its sequential parts are short and many:
// - Weights live as per-block prefix sums (blocks of 16 items, summed in item order).
// - The items are cut into segments of 4096 blocks (65,536 items; their number grows with n,
//   never with the thread count). Each segment is its own Poisson process with its own range
//   of counters of one random stream per (batch, round): its positions are running sums of
//   exponential spacings, walked along its block sums in block order.
// - Every total is a sum in a fixed order: a segment's weight is its block sums added in
//   block order, the total weight is the segment weights added in segment order; the weight
//   removed by a batch's picks is, per block, its picks' removals in item order, then per
//   segment those block sums in block order, then the segment sums in segment order.
// - log and exp, wherever their bits matter (spacings, arrival times, weights, exp(-penalty),
//   the direct keys), are pm_log and pm_exp (portable_math.hpp), the same on CPU and GPU; the
//   per-item and per-point arithmetic is in the MIXSIEVE_HD functions below, which both call;
//   the batch / round / band / direct / reweighing decisions are made once, in soft_cap_drive,
//   from scalars both backends compute alike.
// Output for a given seed therefore differs from mixsieve 0.1.0 (16 fixed segments, libm).
//
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

#include "mixsieve/hd.hpp"
#include "mixsieve/parallel.hpp"
#include "mixsieve/portable_math.hpp"
#include "mixsieve/rng.hpp"

namespace mixsieve {

struct RaceKey {
  double key;  // E / w: smaller is picked first
  std::int64_t id;
};
inline bool race_before(const RaceKey& a, const RaceKey& b) { return a.key < b.key || (a.key == b.key && a.id < b.id); }

namespace soft_cap_detail {

inline constexpr std::size_t kBlock = 16;            // 2 cache lines of prefix sums per point
inline constexpr std::size_t kSegmentBlocks = 4096;  // one Poisson process each
inline constexpr std::uint64_t kMaxRounds = 256;     // bands (x4 each) tried per batch
// A segment's counters: [sg << 40, (sg + 1) << 40), two per point (spacing, arrival time).
inline constexpr int kSegmentCounterBits = 40;

// ---- the per-element arithmetic, shared with the CUDA kernels ----

// The stream of round `round` of batch `batch` (rounds < 256) and the direct keys' stream of
// `batch` (sub-stream 256): distinct for every batch below 2^55.
MIXSIEVE_HD inline std::uint64_t round_key(std::uint64_t seed, std::uint64_t batch, std::uint64_t round) {
  return stream_key(seed, Stream::SoftCap, batch * 512 + round);
}
MIXSIEVE_HD inline std::uint64_t direct_key(std::uint64_t seed, std::uint64_t batch) {
  return stream_key(seed, Stream::SoftCap, batch * 512 + 256);
}

// The gap before point j of segment sg, in weight units: Exp(rate).
MIXSIEVE_HD inline double race_spacing(std::uint64_t key, std::uint64_t sg, std::uint64_t j, double rate) {
  return -pm_log(open_unit(stream_bits(key, (sg << kSegmentCounterBits) + 2 * j))) / rate;
}
// The arrival time of point j of segment sg: uniform on the band [lo, lo + rate).
MIXSIEVE_HD inline double race_time(std::uint64_t key, std::uint64_t sg, std::uint64_t j, double lo, double rate) {
  return lo + open_unit(stream_bits(key, (sg << kSegmentCounterBits) + 2 * j + 1)) * rate;
}

// The item of a block (prefix sums pref[0, len)) whose weight interval [pref[i-1], pref[i])
// holds x, or -1. Rounding can put x at or past the block's end (the last item takes it) or on
// an item of weight 0 (the nearest positive item below takes it; none: -1).
MIXSIEVE_HD inline int item_in_block(const double* pref, std::size_t len, double x) {
  std::size_t below = 0;  // prefix values <= x (branch-free)
  for (std::size_t q = 0; q < len; ++q) below += pref[q] <= x;
  std::size_t i = below < len - 1 ? below : len - 1;
  while (i > 0 && pref[i] <= pref[i - 1]) --i;
  if (!(pref[i] > (i ? pref[i - 1] : 0.0))) return -1;
  return static_cast<int>(i);
}

MIXSIEVE_HD inline double item_weight_in_block(const double* pref, std::size_t q) {
  return pref[q] - (q ? pref[q - 1] : 0.0);
}

// w[q] *= factor (factor < 1) in a block of len prefix sums; returns the weight removed (0 when
// none: weights only ever shrink, so block sums stay upper bounds). The caller subtracts it
// from the block's sum, which mirrors pref[len - 1].
// An item's weight is a rounded difference of two prefix sums, so once factor rounds 1 - factor
// to 1 (penalty above ~37) delta can exceed what the block still holds (a light item next to a
// heavy one that was picked first), and the block sum would go below zero. It is clamped to
// pref[len - 1] instead: block sums never decrease below 0, so the running sums of a segment's
// block sums never decrease, which is what lets the GPU find a point's block by binary search
// where the CPU walks (both give the first block whose running sum exceeds the point).
MIXSIEVE_HD inline double scale_in_block(double* pref, std::size_t len, std::size_t q, double factor) {
  double delta = item_weight_in_block(pref, q) * (1.0 - factor);
  if (delta > pref[len - 1]) delta = pref[len - 1];
  if (!(delta > 0.0)) return 0.0;
  for (std::size_t j = q; j < len; ++j) pref[j] -= delta;
  return delta;
}

// a_i = (s_i - max s) - penalty * (counts_i - min counts): exact for the least-picked items
// however large penalty * counts grows.
MIXSIEVE_HD inline double adjusted_score(double s, double top, std::int64_t count, std::int64_t least,
                                         double penalty) {
  const double a = s - top;
  return count == least ? a : a - penalty * static_cast<double>(count - least);
}
MIXSIEVE_HD inline double item_weight(double adjusted, double offset) { return pm_exp(adjusted - offset); }

// The direct path's key of item i (weight w > 0) not found below lo: lo + E_i / w, E_i keyed by
// the item. Given that its key is not below lo, that is its exact conditional law (the
// exponential distribution forgets lo); lo = 0 gives E_i / w bit for bit.
MIXSIEVE_HD inline double direct_race_key(std::uint64_t key, std::uint64_t i, double w, double lo) {
  return lo + -pm_log(open_unit(stream_bits(key, i))) / w;
}

// How much further than hi the next band of a batch reaches: as far as the items found so far
// suggest b need (an underestimate: heavy items collect repeated points as a band widens),
// at least 1.5x and at most 4x.
inline double next_band(std::size_t b, std::size_t found) {
  if (found == 0) return 4.0;
  return std::min(4.0, std::max(1.5, 1.25 * static_cast<double>(b) / static_cast<double>(found)));
}

// Race points of one segment and round: 16x the largest expected count (see soft_cap_drive's
// direct switch), and never past the segment's counter range.
inline std::size_t max_race_points(std::size_t n) {
  return std::min<std::size_t>(4 * (4 * n + 4096) + 4096, (std::size_t{1} << (kSegmentCounterBits - 1)) - 1);
}
inline const char* too_many_points() { return "soft_cap_sample: internal error: too many race points"; }

}  // namespace soft_cap_detail

// Thrown when the `interrupted` callback asks to stop (e.g. Ctrl-C in Python).
struct SoftCapInterrupted {};

struct SoftCapWeighing {
  std::size_t positive;  // items with a weight > 0
  double total;          // the total weight (segment weights in segment order)
};
struct SoftCapRound {
  std::size_t found;  // distinct candidates so far in this batch
  double weight;      // the total weight the round walked
};
struct SoftCapPicks {
  double cut;      // the b-th smallest key
  double removed;  // weight the picks removed
  double noise;    // sum over the picks of their block's sum at the last (re)weighing
};

// The batch loop, shared by the CPU and the CUDA backend: every decision that changes the
// output (reweighing, the first band, the next band, the switch to direct keys, the errors)
// is made here from the scalars the backend returns. A Backend provides:
//   std::size_t first_bad_score()  the first non-finite score (n when none)
//   double score(std::size_t i)
//   SoftCapWeighing weigh(double penalty)  (re)computes every weight from the adjusted scores
//   double total_weight()                  of the current weights
//   void begin_batch(std::size_t b)
//   SoftCapRound race_round(std::uint64_t key, double lo, double hi)  adds the items whose
//       first arrival lies in the band [lo, hi) to the batch's candidates (earlier ones keep
//       their key)
//   std::size_t direct(std::uint64_t key, double lo)  keeps the candidates (every item whose key
//       is below lo) and adds every other item with weight > 0, keyed lo + E_i / w_i (the
//       candidates so far are exact; the others' keys, given that they are not below lo, are
//       lo plus a fresh exponential race); returns the number of candidates
//   SoftCapPicks pick(std::size_t b, std::int64_t done, double decay)  counts the b smallest
//       (key, id), writes them to picks[done, done + b) in key order, multiplies their
//       weights by decay
// `trace`, when set, sees every scalar a backend returns, in order (tests compare the
// backends' sequences bit for bit).
using SoftCapTrace = std::function<void(const char* what, double value)>;

template <class Backend>
void soft_cap_drive(std::size_t n, std::int64_t total, double penalty, std::int64_t batch_size, std::uint64_t seed,
                    Backend& be, const std::function<bool()>& interrupted, const SoftCapTrace& trace = nullptr) {
  using namespace soft_cap_detail;
  auto note = [&](const char* what, double value) {
    if (trace) trace(what, value);
  };
  const std::size_t bad = be.first_bad_score();
  if (bad < n) {
    throw std::invalid_argument("scores[" + std::to_string(bad) + "] = " + std::to_string(be.score(bad)) +
                                " is not finite");
  }
  const std::size_t b_max = static_cast<std::size_t>(std::min<std::int64_t>(batch_size, total));
  auto weigh = [&] {
    const SoftCapWeighing w = be.weigh(penalty);
    note("weigh positive", static_cast<double>(w.positive));
    note("weigh total", w.total);
    if (w.positive < b_max) {
      throw std::invalid_argument("a batch needs " + std::to_string(b_max) + " distinct items but only " +
                                  std::to_string(w.positive) +
                                  " have a representable weight exp(adjusted score - max adjusted score) > 0 (fewer"
                                  " items than batch_size, or adjusted scores spanning more than ~700)");
    }
    return w.total;
  };
  double reference_weight = weigh();  // total weight after the last (re)weighing
  const double decay = pm_exp(-penalty);
  // When a band would hold far more points than there are items (b close to the number of
  // items with weights far apart: the last item needed is a light one), every item not found
  // yet gets its key directly instead, in O(n): the same exponential race, continued past lo
  // on another random stream. The candidates found below lo are kept: whether a batch switches
  // depends on its own draws, and redrawing every key after a switch would bias the picks.
  const double direct_limit = 4.0 * static_cast<double>(n) + 4096.0;
  double guess = 0.0;
  double last_weight = reference_weight;  // total weight at the start of the last batch
  double removed = 0.0;                   // weight the last batch's picks removed
  double noise = 0.0;  // sum over picks since the (re)weighing of their block's weight then
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
      const double weight = be.total_weight();
      note("total weight", weight);
      guess = 1.25 * static_cast<double>(b) / weight;  // about 1.25 b points expected
      known_weight = weight;
    }
    // Candidates: every item whose key is below hi, found band by band until there are b.
    be.begin_batch(b);
    double lo = 0.0, hi = guess;
    bool direct = false;
    for (std::uint64_t round = 0;; ++round) {
      if (round >= kMaxRounds || !std::isfinite(hi)) {
        throw std::runtime_error("soft_cap_sample: no finite threshold found");
      }
      if ((hi - lo) * known_weight > direct_limit) {
        direct = true;
        break;
      }
      const SoftCapRound r = be.race_round(round_key(seed, batch, round), lo, hi);
      note("round found", static_cast<double>(r.found));
      note("round weight", r.weight);
      if (round == 0) {
        last_weight = r.weight;
        known_weight = last_weight;
      }
      if (r.found >= b) break;
      lo = hi;
      hi *= next_band(b, r.found);
    }
    if (direct) {
      last_weight = be.total_weight();
      const std::size_t found = be.direct(direct_key(seed, batch), lo);
      note("direct weight", last_weight);
      note("direct found", static_cast<double>(found));
      if (found < b) {
        throw std::invalid_argument("a batch needs " + std::to_string(b) + " distinct items but only " +
                                    std::to_string(found) + " have a weight > 0 left");
      }
    }
    const SoftCapPicks p = be.pick(b, done, decay);
    note("cut", p.cut);
    note("removed", p.removed);
    note("noise", p.noise);
    removed = p.removed;
    noise += p.noise;
    // Picked weights only shrink, so keys rise: aim a little above this batch's cut.
    guess = p.cut * (1.1 + 2.0 / std::sqrt(static_cast<double>(b)));
    done += static_cast<std::int64_t>(b);
  }
}

namespace soft_cap_detail {

// The CPU backend of soft_cap_drive. Segments are walked in parallel; each writes only its
// own slots, and every sum over segments is taken afterwards in segment order, so the result
// does not depend on the thread count.
template <class S>
class CpuSoftCap {
 public:
  CpuSoftCap(const S* scores, std::size_t n, unsigned threads, std::int64_t* counts, std::int64_t* picks)
      : scores_(scores),
        n_(n),
        threads_(threads),
        counts_(counts),
        picks_(picks),
        blocks_((n + kBlock - 1) / kBlock),
        segments_((blocks_ + kSegmentBlocks - 1) / kSegmentBlocks),
        max_points_(max_race_points(n)),
        seg_cand_(segments_),
        seg_pts_(segments_),
        seg_tmp_(segments_),
        seg_scratch_(segments_),
        seg_weight_(segments_),
        seg_removed_(segments_),
        seg_noise_(segments_),
        seg_count_(segments_) {}

  std::size_t first_bad_score() {
    const std::size_t chunks = (n_ + kGrain - 1) / kGrain;
    std::vector<double> chunk_max(chunks, -std::numeric_limits<double>::infinity());
    std::vector<std::size_t> chunk_bad(chunks, n_);  // first non-finite score of each chunk
    parallel_for(chunks, threads_, 1, [&](std::size_t c0, std::size_t c1) {
      for (std::size_t c = c0; c < c1; ++c) {
        for (std::size_t i = c * kGrain; i < std::min(n_, (c + 1) * kGrain); ++i) {
          const double v = static_cast<double>(scores_[i]);
          if (!std::isfinite(v) && chunk_bad[c] == n_) chunk_bad[c] = i;
          chunk_max[c] = std::max(chunk_max[c], v);
        }
      }
    });
    top_ = -std::numeric_limits<double>::infinity();
    for (double m : chunk_max) top_ = std::max(top_, m);
    for (std::size_t bad : chunk_bad) {
      if (bad < n_) return bad;
    }
    return n_;
  }
  double score(std::size_t i) const { return static_cast<double>(scores_[i]); }

  SoftCapWeighing weigh(double penalty) {
    const std::size_t chunks = (n_ + kGrain - 1) / kGrain;
    std::vector<std::int64_t> chunk_min(chunks, std::numeric_limits<std::int64_t>::max());
    parallel_for(chunks, threads_, 1, [&](std::size_t c0, std::size_t c1) {
      for (std::size_t c = c0; c < c1; ++c) {
        for (std::size_t i = c * kGrain; i < std::min(n_, (c + 1) * kGrain); ++i) {
          chunk_min[c] = std::min(chunk_min[c], counts_[i]);
        }
      }
    });
    std::int64_t least = std::numeric_limits<std::int64_t>::max();
    for (std::int64_t m : chunk_min) least = std::min(least, m);
    auto adjusted = [&](std::size_t i) {
      return adjusted_score(static_cast<double>(scores_[i]), top_, counts_[i], least, penalty);
    };
    std::vector<double> adjusted_max(chunks, -std::numeric_limits<double>::infinity());
    parallel_for(chunks, threads_, 1, [&](std::size_t c0, std::size_t c1) {
      for (std::size_t c = c0; c < c1; ++c) {
        for (std::size_t i = c * kGrain; i < std::min(n_, (c + 1) * kGrain); ++i) {
          adjusted_max[c] = std::max(adjusted_max[c], adjusted(i));
        }
      }
    });
    double offset = -std::numeric_limits<double>::infinity();
    for (double m : adjusted_max) offset = std::max(offset, m);
    // The weights go straight into the prefix sums, one segment (= one grain) per task.
    pref_.resize(n_);
    block_sum_.resize(blocks_);
    parallel_for(segments_, threads_, 1, [&](std::size_t s0, std::size_t s1) {
      for (std::size_t sg = s0; sg < s1; ++sg) {
        std::size_t positive = 0;
        for (std::size_t blk = sg * kSegmentBlocks; blk < std::min(blocks_, (sg + 1) * kSegmentBlocks); ++blk) {
          const std::size_t e = std::min(n_, (blk + 1) * kBlock);
          double acc = 0.0;
          for (std::size_t i = blk * kBlock; i < e; ++i) {
            const double w = item_weight(adjusted(i), offset);
            positive += w > 0.0;
            pref_[i] = acc += w;
          }
          block_sum_[blk] = acc;
        }
        seg_count_[sg] = positive;
      }
    });
    block_ref_ = block_sum_;
    std::size_t positive = 0;
    for (std::size_t p : seg_count_) positive += p;
    return {positive, total_weight()};
  }

  double total_weight() {
    parallel_for(segments_, threads_, 16, [&](std::size_t s0, std::size_t s1) {
      for (std::size_t sg = s0; sg < s1; ++sg) {
        double acc = 0.0;
        for (std::size_t blk = sg * kSegmentBlocks; blk < std::min(blocks_, (sg + 1) * kSegmentBlocks); ++blk) {
          acc += block_sum_[blk];
        }
        seg_weight_[sg] = acc;
      }
    });
    return sum_in_order(seg_weight_);
  }

  void begin_batch(std::size_t b) {
    // Starting threads costs tens of microseconds a batch: small batches over few blocks run
    // on this thread (the result does not depend on it).
    batch_threads_ = blocks_ + 4 * b < (std::size_t{1} << 16) ? 1 : threads_;
    for (auto& c : seg_cand_) c.clear();
  }

  SoftCapRound race_round(std::uint64_t key, double lo, double hi) {
    parallel_for(segments_, batch_threads_, 1, [&](std::size_t s0, std::size_t s1) {
      for (std::size_t sg = s0; sg < s1; ++sg) {
        seg_weight_[sg] = race_points(sg, key, lo, hi);
        merge_earliest(seg_cand_[sg], seg_pts_[sg], seg_tmp_[sg]);
      }
    });
    std::size_t found = 0;
    for (const auto& c : seg_cand_) found += c.size();
    return {found, sum_in_order(seg_weight_)};
  }

  std::size_t direct(std::uint64_t key, double lo) {
    parallel_for(segments_, batch_threads_, 1, [&](std::size_t s0, std::size_t s1) {
      for (std::size_t sg = s0; sg < s1; ++sg) {
        // the candidates (by item) and the new keys, merged by item
        const std::vector<RaceKey>& cand = seg_cand_[sg];
        std::vector<RaceKey>& out = seg_tmp_[sg];
        out.clear();
        std::size_t a = 0;
        const std::size_t end = std::min(n_, (sg + 1) * kSegmentBlocks * kBlock);
        for (std::size_t i = sg * kSegmentBlocks * kBlock; i < end; ++i) {
          if (a < cand.size() && cand[a].id == static_cast<std::int64_t>(i)) {
            out.push_back(cand[a++]);
            continue;
          }
          const double wi = item_weight_in_block(pref_.data() + i / kBlock * kBlock, i % kBlock);
          if (!(wi > 0.0)) continue;
          out.push_back({direct_race_key(key, i, wi, lo), static_cast<std::int64_t>(i)});
        }
        seg_cand_[sg].swap(out);
      }
    });
    std::size_t found = 0;
    for (const auto& c : seg_cand_) found += c.size();
    return found;
  }

  SoftCapPicks pick(std::size_t b, std::int64_t done, double decay) {
    // The b-th smallest key, then the picks in item order: memory is touched in one
    // increasing sweep instead of at b random places.
    keys_.clear();
    for (const auto& c : seg_cand_) keys_.insert(keys_.end(), c.begin(), c.end());
    std::nth_element(keys_.begin(), keys_.begin() + static_cast<std::ptrdiff_t>(b - 1), keys_.end(), race_before);
    const RaceKey cut_item = keys_[b - 1];
    parallel_for(segments_, batch_threads_, 1, [&](std::size_t s0, std::size_t s1) {
      for (std::size_t sg = s0; sg < s1; ++sg) {
        double seg_removed = 0.0, seg_noise = 0.0, blk_removed = 0.0, blk_noise = 0.0;
        std::size_t current = blocks_;  // the block of the picks in blk_*
        for (const RaceKey& c : seg_cand_[sg]) {  // disjoint memory per segment, in item order
          if (race_before(cut_item, c)) continue;
          const auto i = static_cast<std::size_t>(c.id);
          const std::size_t blk = i / kBlock;
          if (blk != current) {
            if (current < blocks_) seg_removed += blk_removed, seg_noise += blk_noise;
            blk_removed = blk_noise = 0.0;
            current = blk;
          }
          ++counts_[i];
          const double delta =
              scale_in_block(pref_.data() + blk * kBlock, std::min(n_ - blk * kBlock, kBlock), i % kBlock, decay);
          block_sum_[blk] -= delta;
          blk_removed += delta;
          blk_noise += block_ref_[blk];
        }
        if (current < blocks_) seg_removed += blk_removed, seg_noise += blk_noise;
        seg_removed_[sg] = seg_removed;
        seg_noise_[sg] = seg_noise;
      }
    });
    if (picks_) {  // pick order: smallest key first (successive sampling)
      std::sort(keys_.begin(), keys_.begin() + static_cast<std::ptrdiff_t>(b), race_before);
      for (std::size_t j = 0; j < b; ++j) picks_[done + static_cast<std::int64_t>(j)] = keys_[j].id;
    }
    return {cut_item.key, sum_in_order(seg_removed_), sum_in_order(seg_noise_)};
  }

 private:
  static constexpr std::size_t kGrain = kSegmentBlocks * kBlock;

  // Point j of a segment is scratch[j]; its arrival time is drawn in phase 2.
  struct Point {
    std::size_t blk;
    double x;  // offset inside the block's weight
  };

  static double sum_in_order(const std::vector<double>& v) {
    double s = 0.0;
    for (double x : v) s += x;
    return s;
  }

  // Points of a unit-rate Poisson process on [0, weight of segment sg) x [lo, hi), in
  // increasing weight position, each mapped to the item whose weight interval holds it; an
  // item keeps its earliest time. The first arrival time of item i is then Exp(w_i)
  // restricted to [lo, hi): exactly the exponential-race keys below hi, found in
  // O(blocks + points) instead of O(items). Writes seg_pts_[sg] (sorted by item); returns the
  // segment's weight.
  double race_points(std::size_t sg, std::uint64_t key, double lo, double hi) {
    std::vector<Point>& scratch = seg_scratch_[sg];
    std::vector<RaceKey>& out = seg_pts_[sg];
    out.clear();
    scratch.clear();
    const double rate = hi - lo;
    // Phase 1: positions along the compact block sums only. The spacings are drawn 8 at a
    // time ahead of the walk (independent logarithms overlap; the walk's chain of additions
    // does not wait for each one).
    constexpr std::uint64_t kAheadSpacings = 8;
    double spacing[kAheadSpacings];
    auto draw = [&](std::uint64_t j0) {
      for (std::uint64_t q = 0; q < kAheadSpacings; ++q) spacing[q] = race_spacing(key, sg, j0 + q, rate);
    };
    std::uint64_t j = 0;
    draw(0);
    double next = spacing[0];
    double acc = 0.0;
    const std::size_t blk_end = std::min(blocks_, (sg + 1) * kSegmentBlocks);
    for (std::size_t blk = sg * kSegmentBlocks; blk < blk_end; ++blk) {
      const double end = acc + block_sum_[blk];
      while (next < end) {
        // The caller keeps the expected count far below this (the band times an upper bound of
        // the weight); only broken bookkeeping could reach it: fail instead of eating memory.
        if (scratch.size() >= max_points_) throw std::runtime_error(too_many_points());
        scratch.push_back({blk, next - acc});
        if (++j % kAheadSpacings == 0) draw(j);
        next += spacing[j % kAheadSpacings];
      }
      acc = end;
    }
    // Phase 2: the item inside each block, with the block's cache lines fetched ahead.
    constexpr std::size_t kAhead = 6;
    for (std::size_t p = 0; p < scratch.size(); ++p) {
      if (p + kAhead < scratch.size()) {
        const char* ahead = reinterpret_cast<const char*>(pref_.data() + scratch[p + kAhead].blk * kBlock);
        for (std::size_t line = 0; line < kBlock * sizeof(double); line += 64) __builtin_prefetch(ahead + line);
      }
      const Point& pt = scratch[p];
      const std::size_t first = pt.blk * kBlock;
      const int q = item_in_block(pref_.data() + first, std::min(n_ - first, kBlock), pt.x);
      if (q < 0) continue;
      const auto id = static_cast<std::int64_t>(first + static_cast<std::size_t>(q));
      const double tau = race_time(key, sg, p, lo, rate);
      if (!out.empty() && out.back().id == id) {
        out.back().key = std::min(out.back().key, tau);
      } else {
        out.push_back({tau, id});
      }
    }
    return acc;
  }

  // cand (sorted by item, times below the band) absorbs pts (sorted by item, times in the
  // band): an item already in cand keeps its earlier time.
  static void merge_earliest(std::vector<RaceKey>& cand, std::vector<RaceKey>& pts, std::vector<RaceKey>& tmp) {
    if (cand.empty()) {
      cand.swap(pts);  // pts is rebuilt by the next round
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

  const S* scores_;
  std::size_t n_;
  unsigned threads_;
  unsigned batch_threads_ = 1;
  std::int64_t* counts_;
  std::int64_t* picks_;
  std::size_t blocks_, segments_, max_points_;
  double top_ = 0.0;
  // Weights as per-block prefix sums: pref[i] = w[block start] + ... + w[i]. Item i owns
  // [pref[i-1], pref[i]) of its block. block_sum_ mirrors each block's last prefix (the same
  // subtractions keep the two bit-identical) in a compact array the walk streams through;
  // block_ref_ holds the block sums at the last (re)weighing (they bound the rounding noise).
  std::vector<double> pref_, block_sum_, block_ref_;
  std::vector<std::vector<RaceKey>> seg_cand_, seg_pts_, seg_tmp_;
  std::vector<std::vector<Point>> seg_scratch_;
  std::vector<double> seg_weight_, seg_removed_, seg_noise_;
  std::vector<std::size_t> seg_count_;
  std::vector<RaceKey> keys_;
};

}  // namespace soft_cap_detail

// Checks the arguments soft_cap_sample and its CUDA twin take (std::invalid_argument).
inline void soft_cap_check(double penalty, std::int64_t batch_size, std::int64_t total) {
  if (!(penalty > 0.0) || !std::isfinite(penalty)) throw std::invalid_argument("penalty must be a finite number > 0");
  if (batch_size < 1) throw std::invalid_argument("batch_size must be >= 1");
  if (total < 0) throw std::invalid_argument("total must be >= 0");
}

// Writes counts[n] (times each item was picked; sum == total) and, if picks is not null, the
// picked items in pick order (total entries). Throws std::invalid_argument on bad input,
// naming the first non-finite score. If `interrupted` is set it is called between batches
// about every 100 ms; when it returns true the run stops by throwing SoftCapInterrupted.
// The result depends on (scores, parameters, seed) only, not on `threads`, and equals the
// CUDA backend's (soft_cap_cuda.hpp) byte for byte.
template <class S>
void soft_cap_sample(const S* scores, std::size_t n, std::int64_t total, double penalty, std::int64_t batch_size,
                     std::uint64_t seed, unsigned threads, std::int64_t* counts, std::int64_t* picks,
                     const std::function<bool()>& interrupted = nullptr) {
  soft_cap_check(penalty, batch_size, total);
  if (threads == 0) threads = available_cores();
  std::fill(counts, counts + n, std::int64_t{0});
  if (total == 0) return;
  soft_cap_detail::CpuSoftCap<S> be(scores, n, threads, counts, picks);
  soft_cap_drive(n, total, penalty, batch_size, seed, be, interrupted);
}

}  // namespace mixsieve
