// The CUDA soft-cap sampler (../soft_cap.cu, launches rewritten for cuda_runtime.h here) runs
// on the host against the CPU's soft_cap_sample (mixsieve/soft_cap.hpp): counts and picks must
// be the same bytes, and errors the same messages. The cases cover several segments of 65,536
// items with n not a multiple of 16, float32 and float64 scores, bands widened within a
// batch, the direct path (from the first band, and after bands: the candidates found below lo
// kept, every other item keyed lo + E / w), reweighing (penalty * counts far past exp's
// range), penalties past 37 on blocks with far-apart weights (block sums must never go below
// zero: the GPU finds a point's block by binary search over their running sums), small n and
// total = 0; a counting wrapper around the CPU backend checks that each case takes the path
// it is meant to. The device buffers come from cudaMallocAsync or from a given allocator
// (DeviceMemory, as torch's in Python): all of them go back, also when the allocator fails.
// Prints "OK" and exits 0 when everything agrees. Built and run by
// tests/test_soft_cap_cuda_emulated.py.
#include "check.h"
#include <cuda_runtime.h>  // the emulation's

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mixsieve/soft_cap.hpp"
#include "soft_cap_cuda.hpp"

using i64 = std::int64_t;
namespace sc = mixsieve::soft_cap_detail;


// The paths a run took, seen through the CPU backend.
struct Paths {
  long batches = 0, rounds = 0, wide_batches = 0, direct = 0, direct_after_bands = 0, weighs = 0;
};

template <class B>
struct Counting {
  B& be;
  Paths& p;
  long batch_rounds = 0;
  std::size_t first_bad_score() { return be.first_bad_score(); }
  double score(std::size_t i) { return be.score(i); }
  mixsieve::SoftCapWeighing weigh(double penalty) {
    ++p.weighs;
    return be.weigh(penalty);
  }
  double total_weight() { return be.total_weight(); }
  void begin_batch(std::size_t b) {
    ++p.batches;
    batch_rounds = 0;
    be.begin_batch(b);
  }
  mixsieve::SoftCapRound race_round(std::uint64_t key, double lo, double hi) {
    ++p.rounds;
    if (++batch_rounds == 2) ++p.wide_batches;
    return be.race_round(key, lo, hi);
  }
  std::size_t direct(std::uint64_t key, double lo) {
    ++p.direct;
    if (lo > 0.0) ++p.direct_after_bands;
    return be.direct(key, lo);
  }
  mixsieve::SoftCapPicks pick(std::size_t b, i64 done, double decay) { return be.pick(b, done, decay); }
};

struct Result {
  std::vector<i64> counts, picks;
  std::string error;
  std::vector<std::pair<std::string, std::uint64_t>> trace;  // every scalar the batch loop saw, as bits
  mixsieve::SoftCapTrace recorder() {
    return [this](const char* what, double v) {
      std::uint64_t b;
      std::memcpy(&b, &v, sizeof b);
      trace.emplace_back(what, b);
    };
  }
};

// The CPU's result: through soft_cap_sample, or (paths given) through the same steps with the
// batch loop's scalars recorded and the paths counted.
template <class S>
Result cpu(const std::vector<S>& s, i64 total, double penalty, i64 batch, std::uint64_t seed, unsigned threads,
           Paths* paths = nullptr) {
  Result r;
  r.counts.assign(s.size(), -1);
  r.picks.assign(static_cast<std::size_t>(total > 0 ? total : 0), -1);
  try {
    if (paths) {
      mixsieve::soft_cap_check(penalty, batch, total);
      std::fill(r.counts.begin(), r.counts.end(), 0);
      sc::CpuSoftCap<S> be(s.data(), s.size(), threads, r.counts.data(), r.picks.data());
      Counting<sc::CpuSoftCap<S>> counting{be, *paths};
      if (total > 0) mixsieve::soft_cap_drive(s.size(), total, penalty, batch, seed, counting, nullptr, r.recorder());
    } else {
      mixsieve::soft_cap_sample(s.data(), s.size(), total, penalty, batch, seed, threads, r.counts.data(),
                                r.picks.data());
    }
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  return r;
}

template <class S>
Result gpu(const std::vector<S>& s, i64 total, double penalty, i64 batch, std::uint64_t seed, bool with_picks,
           const mixsieve::soft_cap_cuda::DeviceMemory& memory = {}) {
  Result r;
  r.counts.assign(s.size(), -1);
  r.picks.assign(static_cast<std::size_t>(total), -1);
  try {
    mixsieve::soft_cap_cuda::sample(s.data(), std::is_same_v<S, float>, s.size(), total, penalty, batch, seed,
                                    r.counts.data(), with_picks ? r.picks.data() : nullptr, nullptr, nullptr,
                                    r.recorder(), memory);
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  return r;
}

template <class S>
void compare(const char* name, const std::vector<S>& s, i64 total, double penalty, i64 batch, std::uint64_t seed,
             Paths* expect = nullptr) {
  Paths local;
  Paths& paths = expect ? *expect : local;
  const Result want = cpu(s, total, penalty, batch, seed, 2, &paths);
  const Result got = gpu(s, total, penalty, batch, seed, true);
  const Result plain = cpu(s, total, penalty, batch, seed, 1);
  CHECK(got.error == want.error && plain.error == want.error, "%s: errors differ: cuda '%s', cpu '%s'", name,
        got.error.c_str(), want.error.c_str());
  if (!want.error.empty()) {
    std::printf("%s: both raise '%s'\n", name, want.error.c_str());
    return;
  }
  // the scalars behind every decision: totals, found counts, cuts, removed weight, noise
  CHECK(got.trace == want.trace, "%s: the batch loops saw different scalars (%zu vs %zu)", name, got.trace.size(),
        want.trace.size());
  for (std::size_t k = 0; k < got.trace.size() && k < want.trace.size(); ++k) {
    if (got.trace[k] != want.trace[k]) {
      std::printf("  first difference at %zu: %s\n", k, want.trace[k].first.c_str());
      break;
    }
  }
  CHECK(got.counts == want.counts, "%s: counts differ", name);
  CHECK(got.picks == want.picks, "%s: picks differ", name);
  const Result counts_only = gpu(s, total, penalty, batch, seed, false);
  CHECK(counts_only.counts == want.counts, "%s: counts without picks differ", name);
  CHECK(plain.counts == want.counts && plain.picks == want.picks, "%s: soft_cap_sample (1 thread) differs", name);
  i64 sum = 0;
  for (i64 c : want.counts) sum += c;
  CHECK(sum == total, "%s: counts sum to %lld", name, static_cast<long long>(sum));
  std::printf(
      "%s: n=%zu identical (%zu scalars); batches %ld rounds %ld widened %ld direct %ld (after bands %ld) weighs "
      "%ld\n",
      name, s.size(), want.trace.size(), paths.batches, paths.rounds, paths.wide_batches, paths.direct,
      paths.direct_after_bands, paths.weighs);
}

// An allocator standing in for torch's: counts what is out, and fails on its `fail_at`-th call.
struct CountingMemory {
  long calls = 0, out = 0, fail_at = -1;
  std::size_t bytes_out = 0, peak = 0;
  std::vector<std::pair<void*, std::size_t>> live;
  mixsieve::soft_cap_cuda::DeviceMemory memory() {
    return {[this](std::size_t bytes) -> void* {
              if (++calls == fail_at) throw std::runtime_error("allocator: out of memory");
              void* p = std::malloc(bytes);
              live.emplace_back(p, bytes);
              ++out;
              bytes_out += bytes;
              peak = std::max(peak, bytes_out);
              return p;
            },
            [this](void* p) {
              for (auto& e : live) {
                if (e.first == p) {
                  bytes_out -= e.second;
                  e = live.back();
                  live.pop_back();
                  --out;
                  std::free(p);
                  return;
                }
              }
              ++failures;
              std::printf("FAIL: put of a pointer the allocator did not give\n");
            }};
  }
};

// Block sums, which the GPU's binary search needs non-decreasing running sums of, never go
// below zero whatever the weights and factors: random blocks with weights up to 2^-60 apart,
// items picked in random order with factors from exp(-0.1) to 0 (penalty past 745).
void check_block_sums_stay_nonnegative() {
  {  // the smallest case: a light item next to a heavy one that is picked first (penalty 40)
    double pref[2] = {1e-17, 1e-17 + 1.0};
    const double decay = mixsieve::pm_exp(-40.0);
    sc::scale_in_block(pref, 2, 1, decay);
    sc::scale_in_block(pref, 2, 0, decay);
    CHECK(pref[1] >= 0.0, "block sum below zero after picks: %g", pref[1]);
  }
  std::mt19937_64 r(11);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  long negative = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    const std::size_t len = 1 + r() % 16;
    double pref[16], acc = 0.0;
    for (std::size_t q = 0; q < len; ++q) pref[q] = acc += std::ldexp(u(r), -static_cast<int>(r() % 61));
    for (int pick = 0; pick < 24; ++pick) {
      const double factor = pick % 3 == 0 ? 0.0 : mixsieve::pm_exp(-(0.1 + 60.0 * u(r)));
      const double before = pref[len - 1];
      const double delta = sc::scale_in_block(pref, len, r() % len, factor);
      negative += pref[len - 1] < 0.0 || delta < 0.0 || before - delta != pref[len - 1];
    }
  }
  CHECK(negative == 0, "%ld picks left a block sum below zero (or removed what the block sum did not lose)",
        negative);
}

template <class S>
std::vector<S> normal_scores(std::size_t n, double sd, unsigned seed) {
  std::mt19937_64 r(seed);
  std::normal_distribution<double> d(0.0, sd);
  std::vector<S> s(n);
  for (auto& x : s) x = static_cast<S>(d(r));
  return s;
}

int main() {
  const std::size_t seg = sc::kSegmentBlocks * sc::kBlock;
  {  // three segments (the last partial, n not a multiple of 16); the first batch widens its band
    Paths p;
    const auto s = normal_scores<double>(2 * seg + 18'883, 3.0, 1);
    compare("three segments f64", s, 9000, 0.3, 3000, 7, &p);
    CHECK(p.wide_batches > 0 && p.direct == 0, "three segments: no widened band");
  }
  {
    Paths p;
    const auto s = normal_scores<float>(2 * seg + 5, 1.0, 2);
    compare("three segments f32", s, 4000, 0.15, 2000, 11, &p);
  }
  {  // batches nearly as large as the population, scores far apart: direct keys
    Paths p;
    compare("direct", std::vector<double>{-15.0, 15.0, 0.0, 5.0, -5.0}, 80, 0.1, 4, 0, &p);
    CHECK(p.direct > 0, "direct: the direct path was not taken");
  }
  {  // a light item not found by the bands: direct keys after them (lo > 0), the heavy item's
     // key kept; penalty past exp's range makes every batch start afresh
    Paths p;
    compare("direct after bands, n = 2", std::vector<double>{0.0, std::log(2.62e-4)}, 2 * 40, 1e300, 2, 3, &p);
    CHECK(p.direct_after_bands > 0 && p.direct_after_bands < p.batches,
          "direct after bands, n = 2: %ld of %ld batches", p.direct_after_bands, p.batches);
  }
  {  // the same on two segments: the bands' candidates in both, merged with the new keys by item
    Paths p;
    std::vector<double> s = normal_scores<double>(seg + 3001, 0.3, 12);
    for (std::size_t i = 0; i < s.size(); i += 997) s[i] = -9.0;  // light items everywhere
    compare("direct after bands, two segments", s, 2 * (static_cast<i64>(s.size()) - 40), 0.2,
            static_cast<i64>(s.size()) - 40, 4, &p);
    CHECK(p.direct_after_bands > 0, "direct after bands, two segments: not taken");
  }
  {  // penalty * counts far past exp's range: reweighing
    const auto s = normal_scores<double>(1000, 1.0, 3);
    const double penalties[] = {100.0, 60.0, 1e300};
    const i64 totals[] = {1100, 2000, 1500}, batches[] = {100, 1000, 250};
    for (int k = 0; k < 3; ++k) {
      Paths p;
      compare("reweighing", s, totals[k], penalties[k], batches[k], 0, &p);
      CHECK(p.weighs > 1, "reweighing: no reweighing (penalty %g)", penalties[k]);
    }
  }
  {  // many small batches on one segment; small n
    Paths p;
    compare("small batches", normal_scores<double>(5000, 2.5, 4), 700, 0.2, 7, 5, &p);
    compare("n = 1", std::vector<double>{0.5}, 5, 0.5, 1, 1);
    compare("n = 16", normal_scores<double>(16, 1.0, 5), 40, 0.5, 3, 2);
    compare("n = 17", normal_scores<float>(17, 1.0, 6), 40, 0.5, 16, 3);
    compare("total = 0", normal_scores<double>(100, 1.0, 7), 0, 0.5, 3, 2);
    compare("batch > total", normal_scores<double>(100, 1.0, 8), 7, 0.5, 50, 9);
  }
  {  // penalties past 37 on blocks of far-apart weights: a pick removes an item's whole rounded
     // weight, more than its block may hold
    check_block_sums_stay_nonnegative();
    std::vector<double> s = normal_scores<double>(3000, 1.0, 13);
    for (std::size_t i = 0; i < s.size(); ++i) s[i] += i % 16 == 3 ? 12.0 : (i % 16 == 2 ? -27.0 : 0.0);
    const double penalties[] = {40.0, 45.0};
    for (int k = 0; k < 2; ++k) compare("penalty past 37, far-apart weights", s, 3000, penalties[k], 150, 6 + k);
  }
  {  // buffers from a given allocator: the same result, everything given back, also on failure
    const auto s = normal_scores<double>(seg + 999, 2.0, 14);
    const Result want = cpu(s, 6000, 0.3, 2000, 5, 1);
    CountingMemory m;
    const Result got = gpu(s, 6000, 0.3, 2000, 5, true, m.memory());
    CHECK(got.error.empty() && got.counts == want.counts && got.picks == want.picks,
          "allocator: the result differs ('%s')", got.error.c_str());
    CHECK(m.calls > 10 && m.out == 0, "allocator: %ld calls, %ld blocks not given back", m.calls, m.out);
    std::printf("allocator: %ld blocks taken (peak %zu bytes), all given back\n", m.calls, m.peak);
    for (long fail_at : {1L, 5L, m.calls}) {
      CountingMemory f;
      f.fail_at = fail_at;
      const Result bad = gpu(s, 6000, 0.3, 2000, 5, true, f.memory());
      CHECK(bad.error == "allocator: out of memory" && f.out == 0,
            "allocator failing at call %ld: error '%s', %ld blocks not given back", fail_at, bad.error.c_str(), f.out);
    }
  }
  {  // errors: the same messages
    std::vector<double> s = normal_scores<double>(3000, 1.0, 9);
    s[2500] = NAN;
    s[2700] = INFINITY;
    compare("non-finite", s, 10, 0.5, 2, 0);
    compare("unrepresentable", std::vector<double>{0.0, -800.0, -900.0}, 2, 0.5, 2, 0);
    compare("bad penalty", std::vector<double>{0.0, 1.0}, 2, -1.0, 1, 0);
  }
  if (failures) {
    std::printf("%d failures\n", failures);
    return 1;
  }
  std::printf("OK\n");
  return 0;
}
