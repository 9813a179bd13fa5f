// Fuzz target for the byte-level parsers: the JSON-line scanner of mixsieve-dedup, text
// normalisation (arbitrary bytes, ill-formed UTF-8), MinHash over it (hashed in pieces, checked
// against hashing all shingles at once on long inputs), and the LSH index file loader
// (arbitrary and mutated files of format 1 and 2, with and without a hasher; a loaded index is
// then clustered into and appended to with random, possibly repeated keys). The seeded driver
// below also checks kernels against references: the mixing schedule and plan, the A-Res first
// pass on every instruction set against the scalar one, the bucketed best-k sort against
// std::sort, and the samplers on weights from the whole float range (PPS never keeps more than
// k items, wide keys agree with double keys, power-of-two scaling changes no sample, soft-cap
// counts add up).
// With clang: -fsanitize=fuzzer,address,undefined gives a libFuzzer binary. Without it,
// main() below drives the same entry point with seeded random and mutated inputs, which is
// what the MIXSIEVE_SANITIZE build runs (target mixsieve_fuzz).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mixsieve/jsonl.hpp"
#include "mixsieve/lsh.hpp"
#include "mixsieve/minhash.hpp"
#include "mixsieve/mix_plan.hpp"
#include "mixsieve/mixture.hpp"
#include "mixsieve/sampling.hpp"
#include "mixsieve/soft_cap.hpp"

using namespace mixsieve;

namespace {

// `variant`: 0 format 2 with a hasher, 1 format 2 without, 2 format 1 (the older header).
// `docs`: how many documents it holds (0: an index with no keys, whose arrays are empty).
std::vector<char> sample_index_file(int variant, int docs = 8) {
  MinHashConfig c;
  c.num_perm = 16;
  c.ngram = 2;
  MinHasher<std::uint32_t> h(c);
  MinHashWorkspace<std::uint32_t> ws;
  LSHParams p;
  p.num_perm = 16;
  p.bands = 4;
  p.rows = 4;
  p.threshold = 0.5;
  LSHIndex<std::uint32_t> idx(p);
  std::vector<std::uint32_t> sigs(16 * 8);
  for (int i = 0; i < 8; ++i) {
    const std::string doc = "document number " + std::to_string(i % 5) + " with a few words";
    h.signature(doc.data(), doc.size(), sigs.data() + 16 * i, ws);
  }
  std::vector<std::int64_t> dup(8);
  std::vector<float> sim(8);
  idx.add(sigs.data(), static_cast<std::size_t>(docs), nullptr, dup.data(), sim.data(),
          [](std::uint32_t, std::uint32_t, double) {});
  HasherParams hp;
  hp.known = variant == 0;
  hp.ngram = 2;
  hp.seed = 1;
  std::vector<char> bytes = idx.to_bytes("{\"k\": 1}", hp);
  if (variant == 2) {  // format 1: version 1, the header without the 24 bytes of hasher fields
    const std::uint32_t v1 = 1;
    std::memcpy(bytes.data() + 8, &v1, 4);
    bytes.erase(bytes.begin() + 56, bytes.begin() + 80);
    const std::uint64_t sum = xxh64(bytes.data(), bytes.size() - 8, LSHIndex<std::uint32_t>::kChecksumSeed);
    std::memcpy(bytes.data() + bytes.size() - 8, &sum, 8);
  }
  return bytes;
}

// Signature of a text with every shingle hashed at once (the definition), to compare with the
// piecewise MinHasher::signature.
template <class T>
void reference_signature(const MinHasher<T>& h, const char* text, std::size_t size, T* out) {
  Normalized norm;
  normalize(text, size, norm);
  std::vector<std::size_t> scratch;
  std::vector<T> x;
  for_each_shingle(norm, h.config().unit, h.config().ngram, scratch, [&](const char* p, std::size_t n) {
    const std::uint64_t v = xxh64(p, n, h.config().seed);
    if constexpr (std::is_same_v<T, std::uint32_t>) {
      x.push_back(fold32(v));
    } else {
      x.push_back(v);
    }
  });
  h.permute_min(x.data(), x.size(), out);
}

// A loaded index, clustered into (capped buckets, signature table) and appended to, with keys
// drawn from the input (repeats and -1 must be refused, never crash).
template <class T>
void exercise_index(LSHIndex<T> idx, const std::uint8_t* data, std::size_t size) {
  const std::size_t k = static_cast<std::size_t>(idx.params().num_perm);
  const std::size_t n = 1 + size % 70;
  std::vector<T> sigs(n * k);
  for (std::size_t i = 0; i < sigs.size(); ++i) sigs[i] = static_cast<T>(data[(i * 7) % size] % 3);
  std::vector<std::int64_t> keys(n);
  for (std::size_t i = 0; i < n; ++i) {
    keys[i] = static_cast<std::int64_t>(data[(i * 13) % size] % 5) - 1 + 1000 * static_cast<std::int64_t>(i % 2);
  }
  try {
    idx.append(sigs.data(), n, keys.data());
  } catch (const std::invalid_argument&) {
  }
  std::vector<std::int64_t> dup(n), fresh(n);
  std::vector<float> sim(n);
  for (std::size_t i = 0; i < n; ++i) fresh[i] = (std::int64_t{1} << 40) + static_cast<std::int64_t>(i);
  UnionFind uf(idx.size() + n);
  try {  // a mutated file may already hold one of these keys: refused, nothing added
    idx.add_clustered(sigs.data(), n, fresh.data(), dup.data(), sim.data(), uf);
  } catch (const std::invalid_argument&) {
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (dup[i] >= static_cast<std::int64_t>(idx.size())) std::abort();
  }
}

// The mixing schedule on weights, caps and restores taken from raw bytes (NaN, inf, negative,
// denormal and zero weights included); every choice must name a source with weight > 0 and
// below its cap. Also: the index permutation is a bijection for sizes taken from the input.
void fuzz_mixture(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return;
  const int k = 1 + data[0] % 160;  // every kernel path: scalar, vector scan, tournament tree
  std::vector<double> w(static_cast<std::size_t>(k));
  for (int d = 0; d < k; ++d) {
    std::uint64_t bits = 0;
    for (int b = 0; b < 8; ++b) bits = (bits << 8) | data[(1 + d * 8 + b) % size];
    double v;
    std::memcpy(&v, &bits, sizeof(v));
    w[static_cast<std::size_t>(d)] = (data[(d + 3) % size] & 1) ? v : static_cast<double>(data[(d + 5) % size] % 4);
  }
  std::vector<std::int64_t> caps(static_cast<std::size_t>(k));
  for (int d = 0; d < k; ++d) caps[static_cast<std::size_t>(d)] = static_cast<std::int64_t>(data[(d + 7) % size] % 50) - 10;
  for (int exact = 0; exact < 2; ++exact) {
    MixSchedule s(k, exact == 1, data[1]);
    if (s.set_weights(w.data()) >= 0) continue;  // rejected: nothing else to check
    std::vector<std::int32_t> src(300);
    std::vector<std::int64_t> item(300);
    const std::int64_t got = s.fill(300, src.data(), item.data(), (data[1] & 2) ? caps.data() : nullptr);
    for (std::int64_t i = 0; i < got; ++i) {
      const auto d = static_cast<std::size_t>(src[static_cast<std::size_t>(i)]);
      if (d >= static_cast<std::size_t>(k) || !(s.weights()[d] > 0.0)) std::abort();
    }
    const auto counts = s.counts();
    const auto seg = s.segment_counts();
    const auto weights = s.weights();
    MixSchedule r(k, exact == 1, data[1]);
    r.restore(s.position(), s.segment_start(), weights.data(), counts.data(), seg.data());
    std::vector<std::int32_t> a(50), b(50);
    std::vector<std::int64_t> ia(50), ib(50);
    if (s.fill(50, a.data(), ia.data(), nullptr) != r.fill(50, b.data(), ib.data(), nullptr) || a != b || ia != ib) {
      std::abort();  // a restored schedule must continue exactly
    }
  }
  const std::uint64_t n = 1 + (static_cast<std::uint64_t>(data[0]) << 8 | data[size - 1]) % 3000;
  IndexPermutation perm(n, data[1]);
  std::vector<char> seen(n, 0);
  for (std::uint64_t x = 0; x < n; ++x) {
    const std::uint64_t y = perm(x);
    if (y >= n || seen[y]) std::abort();
    seen[y] = 1;
  }
}

// The plan (policy, changes, caps, drops) on random weights from the whole double range, random
// changes and caps, in random fill sizes: sources in range, caps never exceeded, and a copy and a
// plan restored from the accessors continue exactly as the original.
double wild_weight(std::mt19937_64& rng) {
  static const double special[] = {0.0, 5e-324, 1e-320, 1e-300, 1e-12, 1.0, 3.0, 1e12, 1e300, 1.7e308};
  return rng() % 3 ? static_cast<double>(rng() % 1000) / 7.0 : special[rng() % 10];
}

void check_mix_plan(std::mt19937_64& rng) {
  const int k = 1 + static_cast<int>(rng() % 150);
  const int mode = static_cast<int>(rng() % 3);
  std::vector<std::int64_t> caps(static_cast<std::size_t>(k));
  for (auto& c : caps) c = rng() % 3 ? -1 : static_cast<std::int64_t>(1 + rng() % 40);
  MixPlan plan(k, rng() % 2, rng(), mode, caps);
  std::vector<double> w(static_cast<std::size_t>(k));
  for (auto& x : w) x = wild_weight(rng);
  if (plan.start(w.data()) >= 0) return;
  std::vector<std::int32_t> src(700);
  std::vector<std::int64_t> item(700);
  for (int round = 0; round < 6 && !plan.ended(); ++round) {
    for (int c = static_cast<int>(rng() % 4); c > 0; --c) {
      for (auto& x : w) x = wild_weight(rng);
      plan.add_change(plan.position() + static_cast<std::int64_t>(rng() % 300), w.data());  // may be refused
    }
    if (rng() % 4 == 0) {  // an iterable's end found: never before the items already read
      const int d = static_cast<int>(rng() % k);
      plan.set_length(d, plan.kernel().counts()[static_cast<std::size_t>(d)] + static_cast<std::int64_t>(rng() % 50));
    }
    const std::int64_t n = static_cast<std::int64_t>(rng() % 700);
    const std::int64_t got = plan.fill(n, -1, src.data(), item.data());
    if (got < 0 || got > n || (got < n && !plan.ended())) std::abort();
    for (std::int64_t i = 0; i < got; ++i) {
      if (src[static_cast<std::size_t>(i)] < 0 || src[static_cast<std::size_t>(i)] >= k) std::abort();
    }
    if (mode != MixPlan::kCycle) {
      for (int d = 0; d < k; ++d) {
        const std::int64_t cap = caps[static_cast<std::size_t>(d)] >= 0 ? caps[static_cast<std::size_t>(d)]
                                                                        : plan.lengths()[static_cast<std::size_t>(d)];
        if (cap >= 0 && plan.kernel().counts()[static_cast<std::size_t>(d)] > cap) std::abort();
      }
    }
  }
  if (plan.ended()) return;
  MixPlan copy(plan);
  std::vector<std::int32_t> a(200), b(200);
  std::vector<std::int64_t> ia(200), ib(200);
  const std::int64_t na = plan.fill(200, -1, a.data(), ia.data());
  const std::int64_t nb = copy.fill(200, -1, b.data(), ib.data());
  if (na != nb || a != b || ia != ib) std::abort();  // a copy continues exactly
}

// Token mode: random tables (lengths from 0 up, sizes near powers of four), epoch caps, weight
// changes with zeros, tables set twice, shuffled or not, on every scan the CPU has. The tokens
// the kernel counts must equal the lengths of the items it gave, looked up one at a time; a
// copy and a state restored mid-run must continue exactly.
void check_token_plan(std::mt19937_64& rng) {
  const int k = 1 + static_cast<int>(rng() % 140);
  const int mode = static_cast<int>(rng() % 3);
  const bool exact = rng() % 4 != 0, shuffle = rng() % 2;
  std::vector<std::int64_t> caps(static_cast<std::size_t>(k)), epoch_caps(caps.size());
  std::vector<LengthTable> tables;
  for (int d = 0; d < k; ++d) {
    static const std::size_t sizes[] = {1, 2, 3, 4, 5, 15, 16, 17, 63, 64, 65, 255, 256, 257, 1025};
    std::vector<std::int32_t> v(sizes[rng() % 15]);
    for (auto& x : v) x = static_cast<std::int32_t>(rng() % 5 == 0 ? rng() % 3 : rng() % 4097);
    v[0] += 1;  // no source without tokens
    tables.push_back(LengthTable::from(std::move(v)));
    caps[static_cast<std::size_t>(d)] = rng() % 3 ? -1 : static_cast<std::int64_t>(tables.back().size);
    epoch_caps[static_cast<std::size_t>(d)] = rng() % 4 ? -1 : static_cast<std::int64_t>(rng() % 600);
  }
  MixPlan plan(k, exact, rng(), mode, caps);
  for (int d = 0; d < k; ++d) {
    if (rng() % 5 == 0) plan.set_token_lengths(d, tables[static_cast<std::size_t>((d + 1) % k)], 7, shuffle);
    plan.set_token_lengths(d, tables[static_cast<std::size_t>(d)], static_cast<std::uint64_t>(d) * 31 + 1, shuffle);
  }
  plan.set_epoch_caps(epoch_caps);
  const int forced = static_cast<int>(rng() % 4) - 1;
  MixSchedule::forced_path() = forced;
  std::vector<double> w(static_cast<std::size_t>(k));
  for (auto& x : w) x = rng() % 4 ? wild_weight(rng) : 0.0;
  if (plan.start(w.data()) >= 0) {
    MixSchedule::forced_path() = -1;
    return;
  }
  // a dry run on a copy must count, window by window, what fill gives the plan itself
  {
    MixPlan dry(plan), real(plan);
    const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 3000), window = 1 + static_cast<std::int64_t>(rng() % 500);
    std::vector<std::int64_t> sizes(static_cast<std::size_t>(k));
    for (int d = 0; d < k; ++d) sizes[static_cast<std::size_t>(d)] = static_cast<std::int64_t>(tables[static_cast<std::size_t>(d)].size);
    const SimulateResult r = dry.simulate(n, window, sizes);
    std::vector<std::int32_t> s(static_cast<std::size_t>(n));
    std::vector<std::int64_t> it(static_cast<std::size_t>(n));
    const std::int64_t got = real.fill(n, -1, s.data(), it.data());
    if (got != r.generated) std::abort();
    std::vector<std::int64_t> counts(r.counts.size(), 0);
    for (std::int64_t i = 0; i < got; ++i) {
      ++counts[static_cast<std::size_t>(i / window) * static_cast<std::size_t>(k) + static_cast<std::size_t>(s[static_cast<std::size_t>(i)])];
    }
    if (counts != r.counts) std::abort();
    if (dry.kernel().tokens_served() != real.kernel().tokens_served()) std::abort();
  }
  std::vector<std::int32_t> src(900);
  std::vector<std::int64_t> item(900);
  std::vector<std::int64_t> tokens(static_cast<std::size_t>(k), 0);
  std::vector<TokenLengths> lookup(static_cast<std::size_t>(k));
  for (int d = 0; d < k; ++d) lookup[static_cast<std::size_t>(d)] = plan.kernel().token_lengths(d);
  for (int round = 0; round < 6 && !plan.ended(); ++round) {
    for (int c = static_cast<int>(rng() % 3); c > 0; --c) {
      for (auto& x : w) x = rng() % 4 ? wild_weight(rng) : 0.0;
      plan.add_change(plan.position() + static_cast<std::int64_t>(rng() % 300), w.data());
    }
    const std::int64_t n = static_cast<std::int64_t>(rng() % 900);
    const std::int64_t got = plan.fill(n, -1, src.data(), item.data());
    if (got < 0 || got > n || (got < n && !plan.ended())) std::abort();
    for (std::int64_t i = 0; i < got; ++i) {
      const auto d = static_cast<std::size_t>(src[static_cast<std::size_t>(i)]);
      if (d >= static_cast<std::size_t>(k)) std::abort();
      tokens[d] += lookup[d].of(item[static_cast<std::size_t>(i)]);
    }
    if (tokens != plan.kernel().tokens_served()) std::abort();
  }
  MixSchedule::forced_path() = -1;
  if (plan.ended()) return;
  MixPlan copy(plan);
  std::vector<std::int32_t> a(300), b(300);
  std::vector<std::int64_t> ia(300), ib(300);
  const std::int64_t na = plan.fill(300, -1, a.data(), ia.data());
  const std::int64_t nb = copy.fill(300, -1, b.data(), ib.data());
  if (na != nb || a != b || ia != ib) std::abort();  // a copy continues exactly
}

// best_sorted (bucketed) must equal a full std::sort with `better` and a truncation, on keys
// with many ties (including -0.0 and +0.0) and on spread-out keys.
void check_best_sorted(std::mt19937_64& rng) {
  const std::size_t n = 4097 + rng() % 30000;
  std::vector<Keyed> v(n);
  const bool ties = rng() % 2;
  for (std::size_t i = 0; i < n; ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1p-53;
    double key = ties ? -static_cast<double>(rng() % 50) * 0.25 : std::log(u + 1e-300) / (1.0 + static_cast<double>(rng() % 1000));
    if (ties && rng() % 50 == 0) key = (rng() % 2) ? 0.0 : -0.0;
    v[i] = {key, static_cast<std::int64_t>(rng() % (4 * n))};
  }
  const std::size_t keep = 1 + rng() % n;
  std::vector<Keyed> want = v;
  std::sort(want.begin(), want.end(), better);
  want.resize(keep);
  std::vector<Keyed> got = v;
  best_sorted(got, keep);
  if (got.size() != keep) std::abort();
  for (std::size_t i = 0; i < keep; ++i) {
    if (got[i].id != want[i].id || !(got[i].key == want[i].key)) std::abort();
  }
}

// The A-Res first pass: every instruction set marks exactly what the definition marks (each
// item's own top bits against the bound), and nothing that can reach the threshold goes
// unmarked -- checked with t set to the exact key of an item (which must then be marked), on
// weights from subnormal to 1e300, zeros, invalid values, float and double, aligned and
// unaligned ids, explicit ids.
template <class W>
void check_ares_first_pass_typed(std::mt19937_64& rng) {
  const std::size_t cnt = rng() % 2 ? 16 * (1 + rng() % 16) : 1 + rng() % 256;
  std::vector<W> w(cnt);
  std::vector<std::int64_t> ids(cnt);
  for (std::size_t j = 0; j < cnt; ++j) {
    const double u = (static_cast<double>(rng() >> 11) + 0.5) * 0x1p-53;
    double x = std::exp(12.0 * (u - 0.5));
    switch (rng() % 16) {
      case 0: x = 0.0; break;
      case 1: x = u * 1e-310; break;
      case 2: x = u * 1e300; break;
      case 3: x = rng() % 8 ? x : (rng() % 2 ? -x : std::nan("")); break;
      case 4: x = rng() % 8 ? x : std::numeric_limits<double>::infinity(); break;
      default: break;
    }
    w[j] = static_cast<W>(x);
    ids[j] = static_cast<std::int64_t>(rng());
  }
  const AresKeys keys(rng());
  const bool explicit_ids = rng() % 3 == 0;
  const std::int64_t base = static_cast<std::int64_t>(rng() % 2 ? (rng() >> 4) << 4 : rng() >> 1);
  const std::int64_t* ip = explicit_ids ? ids.data() : nullptr;
  auto id_of = [&](std::size_t j) { return ip ? ip[j] : base + static_cast<std::int64_t>(j); };
  auto positive = [&](std::size_t j) {
    const double x = static_cast<double>(w[j]);
    return x > 0.0 && x <= std::numeric_limits<double>::max();
  };
  double t = kNegInf;
  if (rng() % 4) {  // the exact key of a random item with a valid positive weight
    const std::size_t j = rng() % cnt;
    if (positive(j)) t = keys.key(id_of(j), static_cast<double>(w[j]));
  }
  // The definition, item by item: the top bits of each id's own u against the bound.
  FirstPass want;
  const double tf = ares_pass_threshold(t);
  for (std::size_t j = 0; j < cnt; ++j) {
    const double x = static_cast<double>(w[j]);
    want.invalid |= !(x >= 0.0 && x <= std::numeric_limits<double>::max());
    if (!(x > 0.0)) continue;
    if (ares_excess(keys.top(static_cast<std::uint64_t>(id_of(j)))) > tf * x) want.may[j / 64] |= std::uint64_t{1} << (j % 64);
  }
  for (std::size_t j = 0; j < cnt; ++j) {
    const bool marked = (want.may[j / 64] >> (j % 64)) & 1;
    if (positive(j) && keys.key(id_of(j), static_cast<double>(w[j])) >= t && !marked) std::abort();
  }
  const int previous = ares_isa_cap().load();
  for (int level = 0; level <= cpu_vector_level(); ++level) {
    ares_isa_cap() = level;
    FirstPass got;
    ares_first_pass(w.data(), ip, base, cnt, keys, tf, got);
    if (got.invalid != want.invalid) std::abort();
    for (int q = 0; q < 4; ++q) {
      if (got.may[q] != want.may[q]) std::abort();
    }
  }
  ares_isa_cap() = previous;
}

void check_ares_first_pass(std::mt19937_64& rng) {
  // The bound itself: (top + 1) * 2^-32 - 1, exactly, at the ends and in between.
  for (std::uint64_t top : {std::uint64_t{0}, std::uint64_t{0xFFFFFFFF}, rng() >> 32}) {
    const double exact = static_cast<double>(top + 1) * 0x1p-32 - 1.0;  // both steps are exact
    if (ares_excess(static_cast<std::uint32_t>(top)) != exact) std::abort();
  }
  if (rng() % 2) {
    check_ares_first_pass_typed<double>(rng);
  } else {
    check_ares_first_pass_typed<float>(rng);
  }
}

// A weight from anywhere in the float range: zero, subnormal, ordinary or near the maximum.
double any_weight(std::mt19937_64& rng) {
  const double u = (static_cast<double>(rng() >> 11) + 0.5) * 0x1p-53;
  switch (rng() % 6) {
    case 0: return 0.0;
    case 1: return std::ldexp(u, -1074 + static_cast<int>(rng() % 60));
    case 2: return std::ldexp(u, 1024 - static_cast<int>(rng() % 60));
    case 3: return std::ldexp(u, static_cast<int>(rng() % 2000) - 1000);
    default: return std::exp(8.0 * (u - 0.5));
  }
}

void check_samplers(std::mt19937_64& rng) {
  const std::size_t n = 1 + rng() % 60, k = rng() % 9;
  std::vector<double> w(n);
  std::size_t positive = 0;
  for (double& x : w) positive += (x = any_weight(rng)) > 0.0;
  // PPS: at most k items, exactly min(k, positive) unless it refused the range.
  ChaoReservoir pps(k, rng());
  for (std::size_t i = 0; i < n;) {
    const std::size_t len = 1 + rng() % (n - i);
    pps.add(w.data() + i, len, nullptr, static_cast<std::int64_t>(i));
    i += len;
  }
  const std::vector<Keyed> s = pps.sample();
  if (s.size() > k || (pps.exact() && s.size() != std::min(k, positive))) std::abort();
  for (const Keyed& it : s) {
    if (!(it.key >= 0.0 && it.key <= 1.0) || it.id < 0 || static_cast<std::size_t>(it.id) >= n ||
        !(w[static_cast<std::size_t>(it.id)] > 0.0)) {
      std::abort();
    }
  }
  // Wide keys order every pair as the exact quotient does, and equal frexp of a normal double key.
  const AresKeys keys(rng());
  std::vector<WideKey> wide;
  for (std::size_t i = 0; i < n; ++i) {
    if (!(w[i] > 0.0)) continue;
    const auto id = static_cast<std::int64_t>(i);
    const double key = keys.key(id, w[i]);
    const WideKey wk = wide_key(pm_log(keys.uniform(id)), w[i], id);
    if (!(wk.frac >= 0.5 && wk.frac < 1.0)) std::abort();
    if (normal_key(key)) {
      const WideKey d = wide_from_double(key, id);
      if (d.frac != wk.frac || d.exp != wk.exp || wide_to_double(wk) != key) std::abort();
    }
    wide.push_back(wk);
  }
  for (std::size_t a = 0; a + 1 < wide.size(); ++a) {
    const WideKey &x = wide[a], &y = wide[a + 1];
    // |key| = frac * 2^exp: compare as long doubles scaled into range.
    const long double lx = std::ldexp(static_cast<long double>(x.frac), x.exp - y.exp);
    const long double ly = static_cast<long double>(y.frac);
    if (wide_better(x, y) != (lx < ly || (lx == ly && x.id < y.id))) std::abort();
  }
  // ExpJ and with-replacement: weights times 2^e give the same sample as the weights.
  std::vector<double> base(n), scaled(n);
  const int e = static_cast<int>(rng() % 1800) - 900;
  for (std::size_t i = 0; i < n; ++i) {
    base[i] = static_cast<double>(rng() % 16);
    scaled[i] = std::ldexp(base[i], e);
  }
  ExpJReservoir a(k, 7), b(k, 7);
  b.rescale_to(weight_exponent(std::ldexp(15.0, e)));
  a.add(base.data(), n, nullptr, 0);
  b.add(scaled.data(), n, nullptr, 0);
  const auto sa = a.top().sorted(), sb = b.top().sorted();
  if (sa.size() != sb.size()) std::abort();
  for (std::size_t i = 0; i < sa.size(); ++i) {
    if (sa[i].id != sb[i].id) std::abort();
  }
  double largest = 0.0;
  first_bad_weight(w.data(), n, nullptr, &largest);
  if (positive > 0) {
    std::vector<std::int64_t> out(50);
    sample_with_replacement(w.data(), n, out.size(), rng(), out.data(), largest);
    for (std::int64_t i : out) {
      if (i < 0 || static_cast<std::size_t>(i) >= n || !(w[static_cast<std::size_t>(i)] > 0.0)) std::abort();
    }
  }
  // Soft-cap: counts add up to total, no count above the number of batches, even when
  // counts * penalty leaves exp's range; or a clear refusal.
  std::vector<double> scores(n);
  for (double& x : scores) x = static_cast<double>(static_cast<int>(rng() % 2001) - 1000) * 0.01;
  const std::int64_t batch = 1 + static_cast<std::int64_t>(rng() % n);
  const std::int64_t total = static_cast<std::int64_t>(rng() % 3000);
  const double penalty = rng() % 2 ? 0.15 : 5.0;
  std::vector<std::int64_t> counts(n);
  try {
    soft_cap_sample(scores.data(), n, total, penalty, batch, rng(), 1, counts.data(), nullptr);
    std::int64_t sum = 0;
    for (std::int64_t c : counts) {
      if (c < 0 || c > (total + batch - 1) / batch) std::abort();
      sum += c;
    }
    if (sum != total) std::abort();
  } catch (const std::invalid_argument&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const char* text = reinterpret_cast<const char*>(data);
  fuzz_mixture(data, size);
  JsonLine line;
  parse_json_line(std::string_view(text, size), "text", "id", line);
  for (int unit = 0; unit < 2; ++unit) {
    MinHashConfig c;
    c.num_perm = 24;
    c.ngram = 1 + static_cast<int>(size % 5);
    c.unit = static_cast<Unit>(unit);
    MinHasher<std::uint32_t> h32(c);
    MinHasher<std::uint64_t> h64(c);
    MinHashWorkspace<std::uint32_t> w32;
    MinHashWorkspace<std::uint64_t> w64;
    std::uint32_t s32[24], r32[24];
    std::uint64_t s64[24], r64[24];
    h32.signature(text, size, s32, w32);
    h64.signature(text, size, s64, w64);
    if (size > MinHasher<std::uint32_t>::kPiece) {  // long inputs: pieces must not change the result
      reference_signature(h32, text, size, r32);
      reference_signature(h64, text, size, r64);
      if (std::memcmp(s32, r32, sizeof(s32)) != 0 || std::memcmp(s64, r64, sizeof(s64)) != 0) {
        std::fprintf(stderr, "piecewise signature differs from the reference (size %zu, unit %d)\n", size, unit);
        std::abort();
      }
    }
  }
  try {
    std::string meta;
    HasherParams hp;
    std::uint32_t version = 0;
    if (size >= 4 && LSHIndex<std::uint32_t>::peek_width(text, size) == 4) {
      auto idx = LSHIndex<std::uint32_t>::from_bytes(text, size, &meta, &hp, &version);
      std::vector<std::uint32_t> q(static_cast<std::size_t>(idx.params().num_perm), 7);
      idx.query(q.data());
      if (idx.params().num_perm <= 4096) exercise_index(std::move(idx), data, size);
    } else {
      auto idx = LSHIndex<std::uint64_t>::from_bytes(text, size, &meta, &hp, &version);
      std::vector<std::uint64_t> q(static_cast<std::size_t>(idx.params().num_perm), 7);
      idx.query(q.data());
      if (idx.params().num_perm <= 4096) exercise_index(std::move(idx), data, size);
    }
    if (version != 1 && version != 2) std::abort();
  } catch (const IndexFormatError&) {
  }
  return 0;
}

#ifndef MIXSIEVE_LIBFUZZER
int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 20000;
  std::mt19937_64 rng(20261126);
  const std::vector<char> goods[3] = {sample_index_file(0), sample_index_file(1), sample_index_file(2)};
  for (int variant = 0; variant < 3; ++variant) {  // indexes with no keys: saved and loaded whole
    const std::vector<char> empty = sample_index_file(variant, 0);
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(empty.data()), empty.size());
    std::string meta;
    const auto idx = LSHIndex<std::uint32_t>::from_bytes(empty.data(), empty.size(), &meta);
    if (idx.size() != 0 || idx.to_bytes(meta).empty()) std::abort();
  }
  for (long it = 0; it < iterations; ++it) {
    if (it % 500 == 0) check_best_sorted(rng);
    if (it % 20 == 0) check_mix_plan(rng);
    if (it % 20 == 10) check_token_plan(rng);
    if (it % 20 == 0) check_samplers(rng);
    check_ares_first_pass(rng);
    std::vector<char> buf;
    const std::vector<char>& good = goods[(it / 4) % 3];
    if (it % 97 == 0) {  // a long text (several hashing pieces) built from random pieces
      // Word pieces (ASCII, 2-, 3- and 4-byte letters) four times as often as separators
      // (space, punctuation, ill-formed bytes, an emoji), so piece cuts fall inside words too.
      static const char* words[] = {"wo", "RD", "\xc3\xa9", "\xe6\x97\xa5", "\xf0\x90\x90\xb7", "1", "x"};
      static const char* seps[] = {" ", ".", "\xff", "\x80", "\xe6\x97", "\xf0\x9f\x98\x80", "\n"};
      std::string s;
      const std::size_t target = MinHasher<std::uint32_t>::kPiece + rng() % (3 * MinHasher<std::uint32_t>::kPiece);
      while (s.size() < target) s += rng() % 5 ? words[rng() % 7] : seps[rng() % 7];
      LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
    }
    switch (it % 4) {
      case 3: {  // JSON-ish lines: structure characters, escapes, UTF-8 pieces
        static const char* pieces[] = {"{", "}", "[", "]", "\"", ":", ",", "\\u", "\\", "d83d", "\\ude00",
                                       "text", "id", "1e5", "-", "null", "NaN", " ", "\xc3\xa9", "\xff"};
        const int count = static_cast<int>(rng() % 40);
        std::string s;
        for (int q = 0; q < count; ++q) s += pieces[rng() % 20];
        buf.assign(s.begin(), s.end());
        break;
      }
      case 0: {  // random bytes, biased towards UTF-8 lead/continuation bytes and ASCII
        buf.resize(rng() % 600);
        for (auto& b : buf) {
          const unsigned r = rng() % 4;
          b = static_cast<char>(r == 0 ? 0x80 + rng() % 0x80 : r == 1 ? 0xC0 + rng() % 0x40 : rng() % 0x80);
        }
        break;
      }
      case 1: {  // a valid index file, body mutated, checksum recomputed: exercises the rebuild
        buf = good;
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; ++f) buf[8 + rng() % (buf.size() - 16)] = static_cast<char>(rng());
        const std::uint64_t sum = xxh64(buf.data(), buf.size() - 8, LSHIndex<std::uint32_t>::kChecksumSeed);
        std::memcpy(buf.data() + buf.size() - 8, &sum, 8);
        break;
      }
      default: {  // a valid index file, mutated and truncated
        buf = good;
        const int flips = 1 + static_cast<int>(rng() % 6);
        for (int f = 0; f < flips; ++f) buf[rng() % buf.size()] = static_cast<char>(rng());
        if (rng() % 2) buf.resize(rng() % (buf.size() + 1));
        break;
      }
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(buf.data()), buf.size());
  }
  for (const std::vector<char>& good : goods) {
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(good.data()), good.size());
  }
  std::printf("mixsieve_fuzz: %ld inputs, no crash\n", iterations);
  return 0;
}
#endif
