// The CUDA A-Res sampler (csrc/cuda/sampling.cu, launches rewritten for cuda_runtime.h here)
// runs on the host against the CPU's ares_select (sampling.hpp, the path of
// mixsieve.weighted_sample), on float32 and float64 weights:
//   random weights, zeros, equal weights and two exactly equal keys, sizes that are not a
//   multiple of a block or a tile, k = 0, 1, the number of positive weights, every scan
//   (dense, floored with the estimated floor, a floor too high, a buffer too small):
//   the same ids in the same order and the same key bits;
//   bad weights: the first bad index and its value; k above the positive count: that count;
//   keys out of the double range: NeedsHost exactly when the CPU needs wide keys.
// Prints "OK" and exits 0 when everything agrees. Built and run by
// tests/test_sampling_cuda_emulated.py.
#include "check.h"
#include <cuda_runtime.h>  // the emulation's

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "mixsieve/sampling.hpp"
#include "sampling_cuda.hpp"

namespace sc = mixsieve::sampling_cuda;
using mixsieve::AresKeys;
using mixsieve::Keyed;
using i64 = std::int64_t;

static int cases = 0;

std::uint64_t bits(double x) {
  std::uint64_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}

// The CPU's answer: -1 (sample in out), the first bad index, or kNeedsWideKeys.
template <class W>
i64 cpu_sample(const std::vector<W>& w, i64 k, std::uint64_t seed, std::vector<Keyed>& out) {
  mixsieve::BestK top(static_cast<std::size_t>(k));
  out.clear();
  return mixsieve::ares_select(w.data(), w.size(), nullptr, 0, AresKeys(seed), top, 1, &out);
}

struct Gpu {
  sc::AresResult r;
  std::vector<i64> ids;
  std::vector<double> keys;
};

// Every other call gets the workspace ares_workspace_bytes asks for; a one-scan call must
// then allocate nothing. The others allocate everything.
static bool with_workspace = false;

template <class W>
Gpu gpu_sample(const std::vector<W>& w, i64 k, std::uint64_t seed, const sc::AresTuning& tune) {
  Gpu g;
  g.ids.assign(static_cast<std::size_t>(k), -7);
  g.keys.assign(static_cast<std::size_t>(k), 7.0);
  const i64 n = static_cast<i64>(w.size());
  with_workspace = !with_workspace;
  std::size_t bytes = 0;
  const char* err = with_workspace ? sc::ares_workspace_bytes(n, k, &bytes, &tune) : nullptr;
  CHECK(err == nullptr, "workspace bytes: %s", err ? err : "");
  std::vector<unsigned char> ws(bytes);
  err = sc::ares_sample(w.data(), sizeof(W) == 4, n, k, seed, g.ids.data(), g.keys.data(),
                        with_workspace ? ws.data() : nullptr, bytes, nullptr, &g.r, &tune);
  CHECK(err == nullptr, "CUDA error %s", err ? err : "");
  if (with_workspace && g.r.scans <= 1 && g.r.status == sc::AresStatus::Done) {
    CHECK(g.r.allocated == 0, "n=%lld k=%lld: %zu bytes allocated beside a workspace of %zu", (long long)n,
          (long long)k, g.r.allocated, bytes);
  }
  if (!with_workspace && g.r.scans >= 1) CHECK(g.r.allocated > 0, "nothing allocated without a workspace");
  return g;
}

// One comparison: same sample or same verdict. Returns the GPU's result for path checks.
template <class W>
sc::AresResult compare(const char* what, const std::vector<W>& w, i64 k, std::uint64_t seed,
                       const sc::AresTuning& tune = {}) {
  ++cases;
  std::vector<Keyed> cpu;
  const i64 verdict = cpu_sample(w, k, seed, cpu);
  const Gpu g = gpu_sample(w, k, seed, tune);
  const char* dt = sizeof(W) == 4 ? "f32" : "f64";
  const i64 n = static_cast<i64>(w.size());
  if (verdict >= 0) {
    CHECK(g.r.status == sc::AresStatus::BadWeight && g.r.bad_index == verdict &&
              bits(g.r.bad_value) == bits(static_cast<double>(w[verdict])),
          "%s %s n=%lld k=%lld: bad weight at %lld, GPU status %d index %lld", what, dt, (long long)n, (long long)k,
          (long long)verdict, (int)g.r.status, (long long)g.r.bad_index);
    return g.r;
  }
  i64 positive = 0;
  for (W x : w) positive += x > W(0);
  if (verdict == mixsieve::kNeedsWideKeys) {
    CHECK(g.r.status == sc::AresStatus::NeedsHost, "%s %s n=%lld k=%lld: CPU needs wide keys, GPU status %d", what, dt,
          (long long)n, (long long)k, (int)g.r.status);
    return g.r;
  }
  if (static_cast<i64>(cpu.size()) < k) {
    CHECK(g.r.status == sc::AresStatus::TooFewPositive && g.r.positive == positive && positive == (i64)cpu.size(),
          "%s %s n=%lld k=%lld: %lld positive, GPU status %d positive %lld", what, dt, (long long)n, (long long)k,
          (long long)positive, (int)g.r.status, (long long)g.r.positive);
    return g.r;
  }
  CHECK(g.r.status == sc::AresStatus::Done, "%s %s n=%lld k=%lld: GPU status %d", what, dt, (long long)n,
        (long long)k, (int)g.r.status);
  if (g.r.status != sc::AresStatus::Done) return g.r;
  CHECK(g.r.positive == positive, "%s: positive %lld vs %lld", what, (long long)g.r.positive, (long long)positive);
  for (i64 j = 0; j < k; ++j) {
    const Keyed& c = cpu[static_cast<std::size_t>(j)];
    if (g.ids[j] != c.id || bits(g.keys[j]) != bits(c.key)) {
      CHECK(false, "%s %s n=%lld k=%lld seed=%llu: item %lld GPU (%lld, %.17g) CPU (%lld, %.17g)", what, dt,
            (long long)n, (long long)k, (unsigned long long)seed, (long long)j, (long long)g.ids[j], g.keys[j],
            (long long)c.id, c.key);
      break;
    }
  }
  return g.r;
}

template <class W>
std::vector<W> lognormal(i64 n, unsigned seed, double zeros = 0.0) {
  std::mt19937_64 r(seed);
  std::lognormal_distribution<double> ln(0.0, 2.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<W> w(static_cast<std::size_t>(n));
  for (W& x : w) x = u(r) < zeros ? W(0) : static_cast<W>(ln(r));
  return w;
}

template <class W>
i64 positives(const std::vector<W>& w) {
  i64 p = 0;
  for (W x : w) p += x > W(0);
  return p;
}

sc::AresTuning dense() {
  sc::AresTuning t;
  t.mode = 1;
  return t;
}
// Floored with the estimated floor, aimed at `target` candidates (small inputs would go dense).
sc::AresTuning floored(i64 target) {
  sc::AresTuning t;
  t.mode = 2;
  t.min_candidates = target;
  return t;
}

template <class W>
void random_weights() {
  const char* dt = sizeof(W) == 4 ? "f32" : "f64";
  // Sizes around the tile (1024 float64 / 2048 float32 items) and the sample's runs (256).
  for (i64 n : {1, 17, 255, 1025, 2049, 5003}) {
    const auto w = lognormal<W>(n, static_cast<unsigned>(n), 0.25);
    const i64 pos = positives(w);
    for (i64 k : {i64(0), i64(1), std::min<i64>(pos, 10), pos, pos + 1}) {
      compare("auto", w, k, 11);
      compare("dense", w, k, 12, dense());
      compare("floored", w, k, 13, floored(std::max<i64>(64, 2 * k)));
    }
  }
  // Floored scans over many seeds: the estimated floor keeps every winner in one scan.
  const auto w = lognormal<W>(6000, 5, 0.1);
  int single = 0;
  for (std::uint64_t seed = 0; seed < 6; ++seed) {
    const sc::AresResult r = compare("floored seeds", w, 100, seed, floored(300));
    CHECK(!r.dense && r.candidates >= 100 && r.candidates < 1500, "%s floored: dense %d candidates %lld", dt,
          (int)r.dense, (long long)r.candidates);
    single += r.scans == 1;
  }
  CHECK(single == 6, "%s: only %d of 6 floored samples took one scan", dt, single);
  // A floor aimed at more candidates than there are items: no sample, floor -inf, every
  // positive weight a candidate (the rank asked for lies beyond the sample).
  const auto few = lognormal<W>(1100, 12, 0.2);
  const sc::AresResult r = compare("target above n", few, 800, 1, floored(2000));
  CHECK(!r.dense && r.scans == 1 && r.candidates == positives(few), "%s target above n: dense %d scans %d cand %lld",
        dt, (int)r.dense, r.scans, (long long)r.candidates);
}

template <class W>
void retries() {
  const char* dt = sizeof(W) == 4 ? "f32" : "f64";
  const auto w = lognormal<W>(3000, 77, 0.2);
  // A floor above every key: no candidate, so the scan is redone without a floor.
  sc::AresTuning high;
  high.mode = 2;
  high.use_floor = true;
  high.floor = -1e-300;
  sc::AresResult r = compare("floor too high", w, 40, 3, high);
  CHECK(r.scans == 2 && r.dense, "%s floor too high: scans %d dense %d", dt, r.scans, (int)r.dense);
  // A low floor and a small buffer: redone with a buffer of the size counted...
  sc::AresTuning low = high;
  low.floor = -0.2;
  low.capacity = 50;
  r = compare("buffer too small", w, 40, 3, low);
  CHECK(r.scans == 2 && !r.dense && r.candidates > 50 && r.candidates <= 1500,
        "%s buffer too small: scans %d dense %d cand %lld", dt, r.scans, (int)r.dense, (long long)r.candidates);
  // ... or, when more than half the items are candidates, without a floor.
  low.floor = -1e300;
  r = compare("floor too low", w, 40, 3, low);
  CHECK(r.scans == 2 && r.dense && r.candidates == positives(w), "%s floor too low: scans %d dense %d cand %lld", dt,
        r.scans, (int)r.dense, (long long)r.candidates);
  // A buffer smaller than k that still holds fewer candidates than k after the floor.
  low.floor = -1.0;
  low.capacity = 3;
  compare("small buffer, floor", w, 40, 4, low);
  // A crowded tile (more candidates than a block stages in shared memory).
  low.floor = -1e300;
  low.capacity = 0;
  r = compare("crowded tile", w, 2000, 5, low);
  CHECK(r.scans == 1 && !r.dense, "%s crowded: scans %d dense %d", dt, r.scans, (int)r.dense);
}

// Equal weights (keys still differ), and, in float64, two items whose keys are equal to the
// bit: the lower id comes first. (A float32 weight rarely makes a key equal to another.)
template <class W>
void ties() {
  std::vector<W> w(1500, W(1));
  compare("equal weights", w, 1500, 21);
  compare("equal weights", w, 37, 21, floored(200));
}

void exact_tie() {
  // Item i has weight 1 and key L_i; item j gets the weight near L_j / L_i that makes its
  // key exactly L_i. Both beat every other key (those weights are tiny). i lies in tile 1 and
  // j in tile 3 (1024 items a tile): with the emulation's 3 blocks, block 0 gathers tile 3
  // before block 1 gathers tile 1, so the candidates arrive with j first.
  const AresKeys keys(21);
  std::vector<double> t(4500, 1e-30);  // keys below -1e14
  bool found = false;
  for (i64 i = 1100; i < 1140 && !found; ++i) {
    const i64 j = i + 2000;
    const double ki = keys.key(i, 1.0);
    double wj = keys.key(j, 1.0) / ki;
    for (int step = 0; step < 4 && !found; ++step, wj = std::nextafter(wj, 0.0)) {
      for (double c : {wj, std::nextafter(wj, 10.0), std::nextafter(std::nextafter(wj, 10.0), 10.0)}) {
        if (!found && keys.key(j, c) == ki) {
          t[i] = 1.0;
          t[j] = c;
          found = true;
        }
      }
    }
  }
  CHECK(found, "no exact key tie constructed");
  for (auto tune : {sc::AresTuning{}, dense(), floored(100)}) compare("tie", t, 2, 21, tune);
}

template <class W>
void bad_weights() {
  const W nan = std::numeric_limits<W>::quiet_NaN(), inf = std::numeric_limits<W>::infinity();
  for (auto tune : {sc::AresTuning{}, dense(), floored(64)}) {
    auto w = lognormal<W>(2100, 9);
    w[1777] = W(-1);
    compare("negative", w, 5, 1, tune);
    w[300] = nan;
    compare("nan before negative", w, 5, 1, tune);
    w[2] = -inf;
    compare("-inf first", w, 0, 1, tune);  // k = 0 still validates
    w[2] = inf;
    compare("inf", w, 5000, 1, tune);  // a bad weight wins over k too large
    w.assign(5, W(0));
    w[4] = -nan;
    compare("-nan last", w, 1, 1, tune);
  }
}

template <class W>
void too_few() {
  auto w = lognormal<W>(1200, 4, 0.5);
  const i64 pos = positives(w);
  for (auto tune : {sc::AresTuning{}, dense(), floored(64)}) {
    compare("k = positive", w, pos, 2, tune);
    compare("k > positive", w, pos + 1, 2, tune);
  }
  std::vector<W> zeros(300, W(0));
  compare("all zero", zeros, 1, 2);
  compare("all zero, k = 0", zeros, 0, 2);
  std::vector<W> none;
  compare("empty", none, 0, 2);
  compare("empty, k = 1", none, 1, 2);
}

// float64 only: weights whose keys leave the double range.
void out_of_range() {
  for (auto tune : {sc::AresTuning{}, dense(), floored(64)}) {
    // 1e308: a key that underflows (tiny), whatever k
    std::vector<double> w = lognormal<double>(1300, 8);
    w[1000] = 1e308;
    for (i64 k : {1, 5, 1300}) compare("huge weight", w, k, 3, tune);
    // 1e-320: keys that overflow to -inf; harmless while k normal keys exist
    w = lognormal<double>(1300, 8, 0.3);
    for (i64 i = 0; i < 1300; i += 7) w[i] = 1e-320;
    i64 normal_keys = 0;
    const AresKeys keys(3);
    for (i64 i = 0; i < 1300; ++i) {
      if (w[i] > 0 && mixsieve::normal_key(keys.key(i, w[i]))) ++normal_keys;
    }
    for (i64 k : {i64(1), normal_keys, normal_keys + 1, positives(w)}) compare("tiny weights", w, k, 3, tune);
  }
  // The docstring's example: the whole range.
  compare("whole range", std::vector<double>{1e-320, 1.0, 1e308}, 3, 0);
  compare("whole range, k = 2", std::vector<double>{1e-320, 1.0, 1e308}, 2, 0);
  compare("subnormal and one", std::vector<double>{1e-320, 1.0}, 2, 0);
  compare("subnormal and one, k = 1", std::vector<double>{1e-320, 1.0}, 1, 0);
}

// float32 extremes stay in range: the smallest subnormal and the largest float.
void float32_extremes() {
  auto w = lognormal<float>(1100, 6);
  w[3] = std::numeric_limits<float>::denorm_min();
  w[500] = std::numeric_limits<float>::max();
  w[501] = std::numeric_limits<float>::min();
  for (auto tune : {sc::AresTuning{}, dense(), floored(64)}) {
    for (i64 k : {1, 3, 1100}) compare("f32 extremes", w, k, 7, tune);
  }
}

int main() {
  random_weights<double>();
  random_weights<float>();
  retries<double>();
  retries<float>();
  ties<double>();
  ties<float>();
  exact_tie();
  bad_weights<double>();
  bad_weights<float>();
  too_few<double>();
  too_few<float>();
  out_of_range();
  float32_extremes();
  std::printf("%d cases, %ld launches\n", cases, emu_launches);
  if (failures) {
    std::printf("%d failures\n", failures);
    return 1;
  }
  std::printf("OK\n");
  return 0;
}
