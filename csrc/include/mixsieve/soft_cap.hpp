// Soft Cap Sampling (FLYT, Shechter & Carmon 2025) in its exact reformulation: each batch is
// a without-replacement sample of b items from softmax(scores - penalty * counts), taken as
// the b smallest exponential-race keys E_i / w_i (w_i = exp(s_i - max s), E_i ~ Exp(1) drawn
// from (seed, batch, item)); every picked item's weight is then multiplied by exp(-penalty).
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "mixsieve/parallel.hpp"
#include "mixsieve/rng.hpp"

namespace mixsieve {

struct RaceKey {
  double key;  // E / w: smaller is picked first
  std::int64_t id;
};
inline bool race_before(const RaceKey& a, const RaceKey& b) { return a.key < b.key || (a.key == b.key && a.id < b.id); }

// Writes counts[n] (times each item was picked; sum == total) and, if picks is not null, the
// picked items in pick order (total entries). Throws std::invalid_argument on bad input.
template <class S>
void soft_cap_sample(const S* scores, std::size_t n, std::int64_t total, double penalty, std::int64_t batch_size,
                     std::uint64_t seed, unsigned threads, std::int64_t* counts, std::int64_t* picks) {
  if (!(penalty > 0.0) || !std::isfinite(penalty)) throw std::invalid_argument("penalty must be a finite number > 0");
  if (batch_size < 1) throw std::invalid_argument("batch_size must be >= 1");
  if (total < 0) throw std::invalid_argument("total must be >= 0");
  std::fill(counts, counts + n, std::int64_t{0});
  if (total == 0) return;
  double top = -std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i < n; ++i) top = std::max(top, static_cast<double>(scores[i]));
  std::vector<double> w(n);
  std::size_t positive = 0;
  for (std::size_t i = 0; i < n; ++i) {
    w[i] = std::exp(static_cast<double>(scores[i]) - top);
    positive += w[i] > 0.0;
  }
  const std::size_t b_max = static_cast<std::size_t>(std::min<std::int64_t>(batch_size, total));
  if (positive < b_max) {
    throw std::invalid_argument("a batch needs " + std::to_string(b_max) + " distinct items but only " +
                                std::to_string(positive) +
                                " have a representable weight exp(score - max score) > 0 (fewer items than batch_size,"
                                " or scores spanning more than ~700)");
  }
  const double decay = std::exp(-penalty);
  if (threads == 0) threads = available_cores();
  const std::size_t grain = std::max<std::size_t>(1 << 16, n / (8 * threads) + 1);
  const std::size_t chunks = (n + grain - 1) / grain;

  // A threshold T with at least b keys below it: first from exact keys of a strided sample,
  // later from the last batch's cut. Items are rejected without a logarithm when
  // 1 - u >= T * w, since E = -log(u) >= 1 - u.
  double guess = 0.0;
  std::vector<RaceKey> cand;
  std::vector<std::vector<RaceKey>> local(chunks);
  std::int64_t done = 0;
  for (std::uint64_t batch = 0; done < total; ++batch) {
    const std::size_t b = static_cast<std::size_t>(std::min<std::int64_t>(batch_size, total - done));
    const std::uint64_t key = stream_key(seed, Stream::SoftCap, batch);
    if (batch == 0) {
      const std::size_t m = std::min<std::size_t>(n, 50000);
      const std::size_t stride = n / m;
      std::vector<double> ks;
      ks.reserve(m);
      for (std::size_t j = 0; j < m; ++j) {
        const std::size_t i = j * stride;
        if (w[i] > 0.0) ks.push_back(-std::log(open_unit(stream_bits(key, i))) / w[i]);
      }
      if (ks.empty()) {
        guess = 1.0;
      } else {
        const std::size_t rank = std::min(ks.size() - 1, (b * ks.size()) / n * 2 + 16);
        std::nth_element(ks.begin(), ks.begin() + static_cast<std::ptrdiff_t>(rank), ks.end());
        guess = ks[rank];
      }
    }
    for (double t = guess;; t *= 4.0) {
      parallel_for(chunks, threads, 1, [&](std::size_t c0, std::size_t c1) {
        for (std::size_t c = c0; c < c1; ++c) {
          std::vector<RaceKey>& out = local[c];
          out.clear();
          const std::size_t end = std::min(n, (c + 1) * grain);
          for (std::size_t i = c * grain; i < end; ++i) {
            const double wi = w[i];
            const double u = open_unit(stream_bits(key, i));
            if (1.0 - u >= t * wi) continue;
            const double k = -std::log(u) / wi;
            if (k < t) out.push_back({k, static_cast<std::int64_t>(i)});
          }
        }
      });
      cand.clear();
      for (const auto& l : local) cand.insert(cand.end(), l.begin(), l.end());
      if (cand.size() >= b) break;
      if (!std::isfinite(t * 4.0)) throw std::runtime_error("soft_cap_sample: no finite threshold found");
    }
    std::nth_element(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(b - 1), cand.end(), race_before);
    std::sort(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(b), race_before);
    for (std::size_t j = 0; j < b; ++j) {
      const std::size_t i = static_cast<std::size_t>(cand[j].id);
      ++counts[i];
      w[i] *= decay;
      if (picks) picks[done + static_cast<std::int64_t>(j)] = cand[j].id;
    }
    // Picked weights only shrink, so keys rise: aim a little above this batch's cut.
    guess = cand[b - 1].key * 1.25;
    done += static_cast<std::int64_t>(b);
  }
}

}  // namespace mixsieve
