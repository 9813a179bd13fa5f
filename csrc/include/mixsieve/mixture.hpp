// The mixing schedule: which source fills each global position of a mixed stream, and which
// item of that source it takes. Two modes:
//   exact  - Tijdeman's "chairman assignment" over targets T_d(n), the integral of the weights
//            (docs/mixing.md has the rule and its proofs): at position n a source is eligible if
//            taking it keeps it less than one sample ahead (c_d + 1 - T_d(n) < 1); among the
//            eligible, the earliest deadline (when T_d reaches c_d + 1) wins, ties to the lowest
//            index. With static weights every prefix holds each source within one sample of
//            w_d * n. Megatron's max-deficit rule is not bounded by one sample.
//   random - i.i.d. choices by inverse CDF of a counter-based uniform keyed by (seed, position),
//            so a choice never depends on how positions were split into chunks.
// A weight change starts a new segment at the current position and carries each source's lag
// into it: base_d = c_d - T_d at the segment start, so within the segment the rule sees the
// effective count base_d + (segment count) against w_d * (segment position).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

#include "mixsieve/cpu.hpp"
#include "mixsieve/rng.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MIXSIEVE_MIX_SIMD 1
#else
#define MIXSIEVE_MIX_SIMD 0
#endif

namespace mixsieve {

// A keyed bijection of [0, n) (a balanced Feistel network on the next even power of two, with
// cycle walking): the order in which a map-style source is read in one epoch, in O(1) memory.
class IndexPermutation {
 public:
  IndexPermutation(std::uint64_t n, std::uint64_t key) : n_(n) {
    unsigned bits = 2;
    while (bits < 64 && (std::uint64_t{1} << bits) < n) bits += 2;
    half_ = bits / 2;
    mask_ = (std::uint64_t{1} << half_) - 1;
    for (std::uint64_t r = 0; r < 4; ++r) round_keys_[r] = splitmix64_at(key, r) | 1;
  }

  std::uint64_t operator()(std::uint64_t x) const {
    if (n_ <= 1) return 0;
    do {
      x = encrypt(x);
    } while (x >= n_);  // the domain is < 4n, so on average fewer than 4 rounds of walking
    return x;
  }

  // out[i] = (*this)(x0 + i) for i < m (m <= 64, x0 + m <= n): the four rounds run over all m
  // values at once, so their multiplications overlap instead of waiting on each other; the
  // values that leave [0, n) are encrypted again together (cycle walking, as in operator()).
  void batch(std::uint64_t x0, int m, std::uint64_t* out) const {
    if (n_ <= 1) {
      for (int i = 0; i < m; ++i) out[i] = 0;
      return;
    }
    for (int i = 0; i < m; ++i) out[i] = x0 + static_cast<std::uint64_t>(i);
    encrypt_all(out, m);
    int todo[64];
    int t = 0;
    for (int i = 0; i < m; ++i) {  // without branches: about a third walk when n is just past a power of 4
      todo[t] = i;
      t += out[i] >= n_ ? 1 : 0;
    }
    std::uint64_t walk[64];
    while (t > 0) {
      for (int j = 0; j < t; ++j) walk[j] = out[todo[j]];
      encrypt_all(walk, t);
      int left = 0;
      for (int j = 0; j < t; ++j) {
        out[todo[j]] = walk[j];
        todo[left] = todo[j];
        left += walk[j] >= n_ ? 1 : 0;
      }
      t = left;
    }
  }

 private:
  void encrypt_all(std::uint64_t* x, int m) const {
#if MIXSIEVE_MIX_SIMD
    if (cpu_vector_level() == 2) {
      rounds_avx512(x, m);
      return;
    }
#endif
    rounds(x, m);
  }

  // encrypt() over x[0..m), structure of arrays (one copy the compiler may vectorise with
  // AVX-512's 64-bit multiply, one portable); the same arithmetic either way.
#define MIXSIEVE_FEISTEL_ROUNDS(NAME, ATTR)                                                                 \
  ATTR void NAME(std::uint64_t* x, int m) const {                                                            \
    std::uint64_t left[64], right[64];                                                                        \
    const unsigned half = half_;                                                                              \
    const std::uint64_t mask = mask_;                                                                         \
    for (int i = 0; i < m; ++i) {                                                                             \
      left[i] = x[i] >> half;                                                                                 \
      right[i] = x[i] & mask;                                                                                 \
    }                                                                                                         \
    for (int round = 0; round < 4; ++round) {                                                                 \
      const std::uint64_t key = round_keys_[round];                                                           \
      for (int i = 0; i < m; ++i) {                                                                           \
        const std::uint64_t f = (((right[i] ^ key) * 0xD6E8FEB86659FD93ULL) >> (64 - half)) & mask;           \
        const std::uint64_t next = left[i] ^ f;                                                               \
        left[i] = right[i];                                                                                   \
        right[i] = next;                                                                                      \
      }                                                                                                       \
    }                                                                                                         \
    for (int i = 0; i < m; ++i) x[i] = (left[i] << half) | right[i];                                          \
  }
  MIXSIEVE_FEISTEL_ROUNDS(rounds, )
#if MIXSIEVE_MIX_SIMD
  MIXSIEVE_FEISTEL_ROUNDS(rounds_avx512, __attribute__((target("avx512f,avx512dq,avx512vl"))))
#endif
#undef MIXSIEVE_FEISTEL_ROUNDS

 public:

 private:
  std::uint64_t encrypt(std::uint64_t x) const {
    std::uint64_t left = x >> half_, right = x & mask_;
    for (std::uint64_t round = 0; round < 4; ++round) {
      // round function: the top bits of a keyed multiply (one multiplication per round)
      const std::uint64_t f = (((right ^ round_keys_[round]) * 0xD6E8FEB86659FD93ULL) >> (64 - half_)) & mask_;
      const std::uint64_t next = left ^ f;
      left = right;
      right = next;
    }
    return (left << half_) | right;
  }

  std::uint64_t n_, mask_;
  std::uint64_t round_keys_[4];
  unsigned half_;
};

// The key of the permutation of one source in one epoch.
inline std::uint64_t shuffle_key(std::uint64_t seed, std::uint64_t source_key, std::uint64_t epoch) {
  return stream_bits(stream_key(seed, Stream::MixShuffle, source_key), epoch);
}

// The order a source of n items is read in: its k-th item (k = 0, 1, 2, ... over all epochs) is
// index perm_e(k mod n) of epoch e = k / n when shuffled, else k mod n. The permutation of the
// current epoch is kept, so consecutive items cost one Feistel evaluation each.
class SourceOrder {
 public:
  SourceOrder(std::uint64_t n, std::uint64_t seed, std::uint64_t source_key, bool shuffle)
      : n_(n), seed_(seed), key_(source_key), shuffle_(shuffle), perm_(n, shuffle_key(seed, source_key, 0)) {}

  std::uint64_t operator()(std::uint64_t k) {
    std::uint64_t offset = 0, epoch = 0;
    if (k == next_k_) {  // the item after the last one asked for: no division
      offset = next_offset_;
      epoch = next_epoch_;
    } else {
      offset = k % n_;
      epoch = k / n_;
    }
    next_k_ = k + 1;
    next_offset_ = offset + 1;
    next_epoch_ = epoch;
    if (next_offset_ == n_) {
      next_offset_ = 0;
      ++next_epoch_;
    }
    if (!shuffle_) return offset;
    if (epoch != epoch_) {
      perm_ = IndexPermutation(n_, shuffle_key(seed_, key_, epoch));
      epoch_ = epoch;
    }
    return perm_(offset);
  }

  // out[i] = (*this)(k + i) for i < m (m <= 64), a batch of permutation lookups at a time.
  void batch(std::uint64_t k, int m, std::uint64_t* out) {
    int i = 0;
    while (i < m) {
      const std::uint64_t at = k + static_cast<std::uint64_t>(i);
      const std::uint64_t offset = at % n_, epoch = at / n_;
      const int run = static_cast<int>(std::min<std::uint64_t>(static_cast<std::uint64_t>(m - i), n_ - offset));
      if (!shuffle_) {
        for (int j = 0; j < run; ++j) out[i + j] = offset + static_cast<std::uint64_t>(j);
      } else {
        if (epoch != epoch_) {
          perm_ = IndexPermutation(n_, shuffle_key(seed_, key_, epoch));
          epoch_ = epoch;
        }
        perm_.batch(offset, run, out + i);
      }
      i += run;
    }
  }

 private:
  std::uint64_t n_, seed_, key_;
  bool shuffle_;
  std::uint64_t epoch_ = 0;
  std::uint64_t next_k_ = 0, next_offset_ = 0, next_epoch_ = 0;
  IndexPermutation perm_;
};

// Token mode: the length in tokens of each item of a source, in the order the mixture reads it.
// slots[j] is the length of the item at epoch slot j (after filters and repeats); the k-th item of
// the source (over all epochs) sits at slot order(k), as MixtureDataset reads it.
// One source's item lengths (epoch slot order): a read-only array whose memory `data` keeps
// alive (a vector, or in the bindings a memory-mapped file shared by processes), with its
// mean, smallest and largest value computed once.
struct LengthTable {
  std::shared_ptr<const std::int32_t> data;
  std::size_t size = 0;
  double mean = 1.0;
  std::int32_t lo = 0, hi = 0;

  static LengthTable from(std::vector<std::int32_t> v) {
    auto owned = std::make_shared<const std::vector<std::int32_t>>(std::move(v));
    LengthTable t;
    t.data = std::shared_ptr<const std::int32_t>(owned, owned->data());
    t.size = owned->size();
    t.summarise();
    return t;
  }

  void summarise() {
    double sum = 0.0;
    lo = size ? data.get()[0] : 0;
    hi = lo;
    for (std::size_t i = 0; i < size; ++i) {
      const std::int32_t x = data.get()[i];
      sum += static_cast<double>(x);
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
    mean = size ? sum / static_cast<double>(size) : 0.0;
  }
};

struct TokenLengths {
  LengthTable table;
  SourceOrder order{1, 0, 0, false};
  double mean = 1.0;  // mean length of an item (random mode draws sources by weight / mean)

  std::int64_t of(std::int64_t k) {
    return table.data.get()[static_cast<std::size_t>(order(static_cast<std::uint64_t>(k)))];
  }

  // The length of item k when a source's items are asked for in order (the schedule's case):
  // lengths are read kAhead items at a time, their slots computed in one tight loop and their
  // cache lines fetched together, so that a large shuffled source does not stall on a cache miss
  // per item. A pure function of k: copies of a schedule give the same lengths.
  std::int64_t next(std::int64_t k) {
    if (k < buf_k || k >= buf_k + kAhead) refill(k);
    return buf[static_cast<std::size_t>(k - buf_k)];
  }

 private:
  static constexpr int kAhead = 32;

  // Reads the lengths of items k .. k + kAhead - 1, whose slots were found and fetched one
  // refill earlier when the items come in order, and fetches the next batch's.
  void refill(std::int64_t k) {
    const std::int32_t* data = table.data.get();
    if (k != ahead_k) order.batch(static_cast<std::uint64_t>(k), kAhead, ahead.data());
    for (int j = 0; j < kAhead; ++j) buf[static_cast<std::size_t>(j)] = data[ahead[static_cast<std::size_t>(j)]];
    buf_k = k;
    ahead_k = k + kAhead;
    order.batch(static_cast<std::uint64_t>(ahead_k), kAhead, ahead.data());
    for (int j = 0; j < kAhead; ++j) __builtin_prefetch(data + ahead[static_cast<std::size_t>(j)]);
  }

  std::int64_t buf_k = -(std::int64_t{1} << 62), ahead_k = -1;
  std::array<std::int32_t, kAhead> buf{};
  std::array<std::uint64_t, kAhead> ahead{};
};

class MixSchedule {
 public:
  MixSchedule(int num_sources, bool exact, std::uint64_t seed)
      : k_(num_sources),
        exact_(exact),
        key_(stream_key(seed, Stream::MixChoice)),
        w_(num_sources, 0.0),
        inv_w_(num_sources, 0.0),
        cdf_(num_sources, 0.0),
        release_(num_sources, std::numeric_limits<double>::infinity()),
        deadline_(num_sources, std::numeric_limits<double>::infinity()),
        base_(num_sources, 0.0),
        tlen_(static_cast<std::size_t>(num_sources)),
        tok_(num_sources, 0),
        seg_tok_(num_sources, 0),
        next_len_(num_sources, 1.0),
        seg_counts_(num_sources, 0),
        counts_(num_sources, 0) {
    if (num_sources < 1) throw std::invalid_argument("a mixture needs at least one source");
  }

  // Which vector scan this CPU gets: 2 = AVX-512, 1 = AVX2, 0 = none (scalar scan and tree).
  static int simd_isa() { return MIXSIEVE_MIX_SIMD ? cpu_vector_level() : 0; }

  int num_sources() const { return k_; }
  std::int64_t position() const { return position_; }
  std::int64_t segment_start() const { return seg_start_; }
  const std::vector<double>& weights() const { return w_; }
  const std::vector<std::int64_t>& counts() const { return counts_; }
  const std::vector<std::int64_t>& segment_counts() const { return seg_counts_; }
  // c_d - T_d at the segment start (exact mode; zeros in random mode), in tokens in token mode.
  const std::vector<double>& carry() const { return base_; }
  // Token mode: weights are shares of tokens. tokens_served()[d] counts the tokens of the items
  // given to d so far; segment_tokens() those since the last weight change.
  bool token_mode() const { return tokens_; }
  // Token mode needs every source's lengths before it runs.
  bool tokens_complete() const {
    return std::all_of(tlen_.begin(), tlen_.end(), [](const TokenLengths& t) { return t.table.data != nullptr; });
  }
  const std::vector<std::int64_t>& tokens_served() const { return tok_; }
  const std::vector<std::int64_t>& segment_tokens() const { return seg_tok_; }
  std::int64_t total_tokens() const { return total_tok_; }
  const TokenLengths& token_lengths(int d) const { return tlen_[static_cast<std::size_t>(d)]; }
  // The source a fill stopped at because it had reached its cap (-1 if none yet).
  int blocked() const { return blocked_; }

  // Switches to token mode (call for every source, before the first weights): item k of source
  // d is `table[order(k)]` tokens long, order as in SourceOrder(n, seed, source_key, shuffle).
  void set_token_lengths(int d, LengthTable table, std::uint64_t seed, std::uint64_t source_key, bool shuffle) {
    if (table.data == nullptr || table.size == 0) throw std::invalid_argument("a source needs at least one item length");
    TokenLengths& t = tlen_[static_cast<std::size_t>(d)];
    t = TokenLengths{};  // nothing read ahead from a table set before
    t.mean = table.mean > 0.0 ? table.mean : 1.0;
    t.order = SourceOrder(table.size, seed, source_key, shuffle);
    t.table = std::move(table);
    tokens_ = true;
    next_len_[static_cast<std::size_t>(d)] = static_cast<double>(t.next(counts_[static_cast<std::size_t>(d)]));
    reset_times();
  }

  // Test hook: which exact-mode scan fill uses. -1 automatic; 0 scalar scan; 1 AVX2 scan;
  // 2 AVX-512 scan; 3 tournament tree. A forced vector level the CPU lacks falls back to auto.
  static int& forced_path() {
    static int path = -1;
    return path;
  }

  // New weights from the current position on. Returns -1 if they are valid, else the index of
  // the first bad one (negative / NaN / inf), or k_ if they are all zero.
  int set_weights(const double* w) { return set_weights(w, true); }

 private:
  // normalise=false keeps already-normalised weights bit for bit (a restored state must make
  // exactly the choices the saved one would have).
  int set_weights(const double* w, bool normalise) {
    double total = 0.0;
    for (int d = 0; d < k_; ++d) {
      if (!(w[d] >= 0.0) || w[d] == std::numeric_limits<double>::infinity()) return d;
      total += w[d];
    }
    if (!(total > 0.0)) return k_;
    // Weights whose sum overflows (near 1e308) or is subnormal are first scaled by a power of two
    // (exact), so that the shares keep their precision; ordinary weights are divided as given.
    std::vector<double> scaled;
    if (normalise && !(total >= std::numeric_limits<double>::min() && total < std::numeric_limits<double>::infinity())) {
      double most = 0.0;
      for (int d = 0; d < k_; ++d) most = std::max(most, w[d]);
      int e = 0;
      std::frexp(most, &e);
      scaled.resize(static_cast<std::size_t>(k_));
      total = 0.0;
      for (int d = 0; d < k_; ++d) total += (scaled[static_cast<std::size_t>(d)] = std::ldexp(w[d], -e));
      w = scaled.data();
    }
    if (total == std::numeric_limits<double>::infinity()) return k_;
    // computed aside and committed only when valid: a rejected call leaves the schedule as it was
    std::vector<double> nw(static_cast<std::size_t>(k_)), ninv(nw.size()), ncdf(nw.size());
    double acc = 0.0;
    int last = -1;
    for (int d = 0; d < k_; ++d) {
      double v = normalise ? w[d] / total : w[d];
      double inv = v > 0.0 ? 1.0 / v : 0.0;
      if (inv == std::numeric_limits<double>::infinity()) v = inv = 0.0;  // a share below ~1e-308: never due
      if (v > 0.0) last = d;
      nw[d] = v;
      ninv[d] = inv;
      acc += v;
      ncdf[d] = acc;
    }
    if (last < 0) return k_;  // every share underflowed
    if (tokens_ && !exact_) {  // random token mode: draw d with probability w_d / mean_d (normalised)
      double q = 0.0;
      for (int d = 0; d < k_; ++d) q += nw[d] / tlen_[static_cast<std::size_t>(d)].mean;
      double a = 0.0;
      for (int d = 0; d < k_; ++d) ncdf[d] = (a += nw[d] / tlen_[static_cast<std::size_t>(d)].mean / q);
    }
    ncdf[static_cast<std::size_t>(last)] = 2.0;  // the last positive source takes what rounding left over
    if (exact_) carry_lags();
    w_.swap(nw);
    inv_w_.swap(ninv);
    cdf_.swap(ncdf);
    seg_start_ = position_;
    seg_start_tok_ = total_tok_;
    for (auto& c : seg_counts_) c = 0;
    for (auto& c : seg_tok_) c = 0;
    reset_times();
    return -1;
  }

  // The lag carried into a new segment: base_d = c_d - T_d now, where T_d grew by w_d per
  // position of the segment that ends here. A source whose weight becomes zero keeps its lag, so
  // T_d stays the integral of its weight and it resumes from there if its weight comes back.
  void carry_lags() {
    if (tokens_) {
      const double len = static_cast<double>(total_tok_ - seg_start_tok_);
      for (int d = 0; d < k_; ++d) base_[d] = base_[d] + static_cast<double>(seg_tok_[d]) - w_[d] * len;
      return;
    }
    const double len = static_cast<double>(position_ - seg_start_);
    for (int d = 0; d < k_; ++d) base_[d] = base_[d] + static_cast<double>(seg_counts_[d]) - w_[d] * len;
  }

 public:
  // Restores a state written by the accessors above (weights already normalised).
  // tokens / seg_tokens: token mode's counts (may be null otherwise).
  void restore(std::int64_t position, std::int64_t seg_start, const double* w, const std::int64_t* counts,
               const std::int64_t* seg_counts, const double* carry = nullptr, const std::int64_t* tokens = nullptr,
               const std::int64_t* seg_tokens = nullptr) {
    position_ = seg_start;
    if (set_weights(w, false) >= 0) throw std::invalid_argument("restored weights are invalid");
    position_ = position;
    seg_start_ = seg_start;
    for (int d = 0; d < k_; ++d) {
      counts_[d] = counts[d];
      seg_counts_[d] = seg_counts[d];
      base_[d] = (exact_ && carry != nullptr) ? carry[d] : 0.0;
    }
    restore_tokens(tokens, seg_tokens);
    reset_times();
  }

  // An ended stream keeps only its position and counts.
  void restore_counts(std::int64_t position, const std::int64_t* counts, const std::int64_t* tokens = nullptr) {
    position_ = seg_start_ = position;
    for (int d = 0; d < k_; ++d) {
      counts_[d] = counts[d];
      seg_counts_[d] = 0;
      base_[d] = 0.0;
    }
    restore_tokens(tokens, nullptr);
  }

 private:
  void restore_tokens(const std::int64_t* tokens, const std::int64_t* seg_tokens) {
    total_tok_ = 0;
    std::int64_t seg_total = 0;
    for (int d = 0; d < k_; ++d) {
      tok_[d] = tokens != nullptr ? tokens[d] : 0;
      seg_tok_[d] = seg_tokens != nullptr ? seg_tokens[d] : 0;
      total_tok_ += tok_[d];
      seg_total += seg_tok_[d];
      if (tokens_) next_len_[d] = static_cast<double>(tlen_[static_cast<std::size_t>(d)].next(counts_[d]));
    }
    seg_start_tok_ = total_tok_ - seg_total;
  }

 public:

  // Generates up to n positions: src[i] is the source of position position()+i and item[i] the
  // running index of that source's items (0, 1, 2, ... over the whole stream). caps (may be null;
  // a negative cap means none): stops before a position whose source has already given caps[d]
  // items. Returns the number generated.
  std::int64_t fill(std::int64_t n, std::int32_t* src, std::int64_t* item, const std::int64_t* caps) {
    if (exact_ && tokens_) return fill_tokens(n, src, item, caps);
    if (exact_) return fill_exact(n, src, item, caps);
    return fill_random(n, src, item, caps);
  }

 private:
  // Source d is eligible at segment position n (1-based) once n > release_d = c_d / w_d, and due
  // at deadline_d = (c_d + 1) / w_d. Both are kept per source and change only for the source
  // taken, so a position costs a scan of K (scalar or vector) or O(log K) tree work (many);
  // every path compares the same doubles and makes the same choices.
  void reset_times() {
    for (int d = 0; d < k_; ++d) {
      const double c = base_[d] + static_cast<double>(tokens_ ? seg_tok_[d] : seg_counts_[d]);
      const double next = tokens_ ? next_len_[d] : 1.0;
      release_[d] = w_[d] > 0.0 ? c * inv_w_[d] : std::numeric_limits<double>::infinity();
      deadline_[d] = w_[d] > 0.0 ? (c + next) * inv_w_[d] : std::numeric_limits<double>::infinity();
    }
    tree_valid_ = false;
  }

  void take(int d, std::int32_t* src, std::int64_t* item, std::int64_t i) {
    src[i] = d;
    item[i] = counts_[d]++;
    const double c = base_[d] + static_cast<double>(++seg_counts_[d]);
    release_[d] = c * inv_w_[d];
    deadline_[d] = (c + 1.0) * inv_w_[d];
    ++position_;
  }

  int largest_deficit(double pos) const {
    int best = 0;
    double most = -std::numeric_limits<double>::infinity();
    for (int d = 0; d < k_; ++d) {
      if (!(w_[d] > 0.0)) continue;
      const double deficit = w_[d] * pos - (base_[d] + static_cast<double>(seg_counts_[d]));
      if (deficit > most) {
        most = deficit;
        best = d;
      }
    }
    return best;
  }

  bool capped(int d, const std::int64_t* caps) const {
    return caps != nullptr && caps[d] >= 0 && counts_[d] >= caps[d];
  }

  std::int64_t fill_exact(std::int64_t n, std::int32_t* src, std::int64_t* item, const std::int64_t* caps) {
    const int forced = forced_path();
    if (forced == 0 && k_ <= kVecLimit) return fill_exact_scan(n, src, item, caps);
    if (forced == 3) return fill_exact_heap(n, src, item, caps);
#if MIXSIEVE_MIX_SIMD
    if (forced == 2 && simd_isa() >= 2 && k_ <= kVecLimit) return fill_exact_vec8(n, src, item, caps);
    if (forced == 1 && simd_isa() >= 1 && k_ <= kVecLimit) return fill_exact_vec4(n, src, item, caps);
    if (k_ > kVecFrom && k_ <= kVecLimit) {
      if (simd_isa() == 2) return fill_exact_vec8(n, src, item, caps);
      if (simd_isa() == 1) return fill_exact_vec4(n, src, item, caps);
    }
#endif
    if (k_ > kScanLimit) return fill_exact_heap(n, src, item, caps);
    return fill_exact_scan(n, src, item, caps);
  }

  // The scan over up to kScanLimit sources, one at a time: the earliest deadline among the
  // eligible, ties to the lowest index (strict <).
  static int pick1(const double* rel, const double* due, int k, double pos) {
    int best = -1;
    double best_due = kInf;
    for (int d = 0; d < k; ++d) {  // without branches: which source wins changes often
      const bool take = (rel[d] < pos) & (due[d] < best_due);
      best_due = take ? due[d] : best_due;
      best = take ? d : best;
    }
    return best;
  }

  // The loop around a pick: the scalar one, and one copy per instruction set for the vector
  // picks (a function can only inline intrinsics of its own target). Local copies of the
  // state: the output pointers may alias members as far as the compiler knows.
#define MIXSIEVE_FILL(NAME, ATTR, L, PICK)                                                                   \
  ATTR std::int64_t NAME(std::int64_t n, std::int32_t* src, std::int64_t* item, const std::int64_t* caps) {   \
    alignas(64) double rel[kVecLimit], due[kVecLimit];                                                        \
    double inv_w[kVecLimit], base[kVecLimit];                                                                  \
    std::int64_t seg[kVecLimit], cnt[kVecLimit];                                                               \
    const int k = k_;                                                                                          \
    const int padded = (k + (L)-1) / (L) * (L);                                                                \
    for (int d = 0; d < padded; ++d) {                                                                         \
      const bool real = d < k; /* padding lanes are never eligible */                                         \
      rel[d] = real ? release_[d] : kInf;                                                                      \
      due[d] = real ? deadline_[d] : kInf;                                                                     \
      inv_w[d] = real ? inv_w_[d] : 0.0;                                                                       \
      base[d] = real ? base_[d] : 0.0;                                                                         \
      seg[d] = real ? seg_counts_[d] : 0;                                                                      \
      cnt[d] = real ? counts_[d] : 0;                                                                          \
    }                                                                                                          \
    double pos = static_cast<double>(position_ - seg_start_);                                                  \
    std::int64_t i = 0;                                                                                        \
    for (; i < n; ++i) {                                                                                       \
      pos += 1.0;                                                                                              \
      int best = PICK(rel, due, padded, pos);                                                                  \
      if (best < 0) { /* rounding guard, as in the scan */                                                    \
        for (int d = 0; d < k; ++d) seg_counts_[d] = seg[d];                                                   \
        best = largest_deficit(pos);                                                                           \
      }                                                                                                        \
      if (caps != nullptr && caps[best] >= 0 && cnt[best] >= caps[best]) {                                    \
        blocked_ = best;                                                                                       \
        break;                                                                                                 \
      }                                                                                                        \
      src[i] = best;                                                                                           \
      item[i] = cnt[best]++;                                                                                   \
      const double c = base[best] + static_cast<double>(++seg[best]);                                          \
      rel[best] = c * inv_w[best];                                                                             \
      due[best] = (c + 1.0) * inv_w[best];                                                                     \
    }                                                                                                          \
    for (int d = 0; d < k; ++d) {                                                                              \
      release_[d] = rel[d];                                                                                    \
      deadline_[d] = due[d];                                                                                   \
      seg_counts_[d] = seg[d];                                                                                 \
      counts_[d] = cnt[d];                                                                                     \
    }                                                                                                          \
    position_ += i;                                                                                            \
    return i;                                                                                                  \
  }
  MIXSIEVE_FILL(fill_exact_scan, , 1, pick1)
#if MIXSIEVE_MIX_SIMD
  MIXSIEVE_FILL(fill_exact_vec8, __attribute__((target("avx512f"))), 8, pick8)
  MIXSIEVE_FILL(fill_exact_vec4, __attribute__((target("avx2"))), 4, pick4)

  // The scan, a vector of L sources at a time (L = 8: AVX-512, 4: AVX2): per position, the
  // smallest deadline among eligible lanes, then the first lane holding it. The same choice
  // as the scalar scan (the minimum is exact; the first index wins ties).
  __attribute__((target("avx512f"))) static inline int pick8(const double* rel, const double* due, int padded, double pos) {
    const __m512d p = _mm512_set1_pd(pos);
    __m512d acc = _mm512_set1_pd(kInf);
    for (int v = 0; v < padded; v += 8) {
      const __mmask8 ok = _mm512_cmp_pd_mask(_mm512_load_pd(rel + v), p, _CMP_LT_OQ);
      acc = _mm512_mask_min_pd(acc, ok, acc, _mm512_load_pd(due + v));
    }
    const double mn = _mm512_reduce_min_pd(acc);
    if (!(mn < kInf)) return -1;
    const __m512d m = _mm512_set1_pd(mn);
    for (int v = 0; v < padded; v += 8) {
      const __mmask8 hit = _mm512_cmp_pd_mask(_mm512_load_pd(rel + v), p, _CMP_LT_OQ) &
                           _mm512_cmp_pd_mask(_mm512_load_pd(due + v), m, _CMP_EQ_OQ);
      if (hit) return v + __builtin_ctz(hit);
    }
    return -1;
  }

  __attribute__((target("avx2"))) static inline int pick4(const double* rel, const double* due, int padded, double pos) {
    const __m256d p = _mm256_set1_pd(pos);
    const __m256d inf = _mm256_set1_pd(kInf);
    __m256d acc = inf;
    for (int v = 0; v < padded; v += 4) {
      const __m256d ok = _mm256_cmp_pd(_mm256_load_pd(rel + v), p, _CMP_LT_OQ);
      acc = _mm256_min_pd(acc, _mm256_blendv_pd(inf, _mm256_load_pd(due + v), ok));
    }
    __m128d lo = _mm_min_pd(_mm256_castpd256_pd128(acc), _mm256_extractf128_pd(acc, 1));
    lo = _mm_min_sd(lo, _mm_unpackhi_pd(lo, lo));
    const double mn = _mm_cvtsd_f64(lo);
    if (!(mn < kInf)) return -1;
    const __m256d m = _mm256_set1_pd(mn);
    for (int v = 0; v < padded; v += 4) {
      const __m256d hit = _mm256_and_pd(_mm256_cmp_pd(_mm256_load_pd(rel + v), p, _CMP_LT_OQ),
                                        _mm256_cmp_pd(_mm256_load_pd(due + v), m, _CMP_EQ_OQ));
      const int bits = _mm256_movemask_pd(hit);
      if (bits) return v + __builtin_ctz(static_cast<unsigned>(bits));
    }
    return -1;
  }
#endif
#undef MIXSIEVE_FILL

  // Many sources: a tournament tree holds the eligible sources' (deadline, index), so the
  // winner is at the root and a change costs log K compares along one path; sources wait for
  // their release in a ring of buckets by release position (a heap for releases further
  // ahead than the ring). Same choices as the scan: (deadline, lowest index) among r_d < pos.
  static constexpr std::int64_t kRing = 1024;

  // Node `node` takes the better of its children: the smaller deadline, then the lower index
  // (an empty child has deadline +inf and index INT_MAX).
  void tree_pull(std::size_t node) {
    const std::size_t l = 2 * node, r = l + 1;
    const bool right = tval_[r] < tval_[l] || (tval_[r] == tval_[l] && win_[r] < win_[l]);
    win_[node] = right ? win_[r] : win_[l];
    tval_[node] = right ? tval_[r] : tval_[l];
  }

  void tree_set(int d, bool eligible) {
    std::size_t node = leaves_ + static_cast<std::size_t>(d);
    win_[node] = eligible ? d : kNone;
    tval_[node] = eligible ? deadline_[d] : kInf;
    for (node >>= 1; node >= 1; node >>= 1) tree_pull(node);
  }

  // The first position (1-based, in the segment) at which d is eligible: the least integer > r_d.
  std::int64_t release_position(int d) const { return static_cast<std::int64_t>(std::floor(release_[d])) + 1; }

  void wait_for_release(int d, std::int64_t at) {
    if (at - ring_pos_ < kRing) {
      const auto slot = static_cast<std::size_t>(at & (kRing - 1));
      next_[static_cast<std::size_t>(d)] = head_[slot];
      head_[slot] = d;
    } else {
      far_.emplace_back(at, d);
      std::push_heap(far_.begin(), far_.end(), std::greater<>());
    }
  }

  void build_tree() {
    leaves_ = 1;
    while (leaves_ < static_cast<std::size_t>(k_)) leaves_ <<= 1;
    win_.assign(2 * leaves_, kNone);
    tval_.assign(2 * leaves_, kInf);
    head_.assign(static_cast<std::size_t>(kRing), -1);
    next_.assign(static_cast<std::size_t>(k_), -1);
    far_.clear();
    const std::int64_t pos = position_ - seg_start_ + 1;
    ring_pos_ = pos;
    for (int d = 0; d < k_; ++d) {
      if (!(w_[d] > 0.0)) continue;
      const std::int64_t at = release_position(d);
      if (at <= pos) {
        win_[leaves_ + static_cast<std::size_t>(d)] = d;
        tval_[leaves_ + static_cast<std::size_t>(d)] = deadline_[d];
      } else {
        wait_for_release(d, at);
      }
    }
    for (std::size_t node = leaves_ - 1; node >= 1; --node) tree_pull(node);
    tree_valid_ = true;
  }

  // Moves the sources released at segment position pos (and any earlier) into the tree.
  void release_until(std::int64_t pos) {
    while (ring_pos_ <= pos) {
      const auto slot = static_cast<std::size_t>(ring_pos_ & (kRing - 1));
      for (int d = head_[slot]; d >= 0;) {
        const int nx = next_[static_cast<std::size_t>(d)];
        tree_set(d, true);
        d = nx;
      }
      head_[slot] = -1;
      ++ring_pos_;
      // far releases that now fit in the ring
      while (!far_.empty() && far_.front().first - ring_pos_ < kRing) {
        const auto [at, d] = far_.front();
        std::pop_heap(far_.begin(), far_.end(), std::greater<>());
        far_.pop_back();
        if (at < ring_pos_) {
          tree_set(d, true);
        } else {
          wait_for_release(d, at);
        }
      }
    }
  }

  std::int64_t fill_exact_heap(std::int64_t n, std::int32_t* src, std::int64_t* item, const std::int64_t* caps) {
    if (!tree_valid_) build_tree();
    std::int64_t i = 0;
    for (; i < n; ++i) {
      const std::int64_t pos = position_ - seg_start_ + 1;
      release_until(pos);
      int best = win_[1];
      const bool guard = best == kNone;
      if (guard) best = largest_deficit(static_cast<double>(pos));  // rounding guard, as in the scan
      if (capped(best, caps)) {
        blocked_ = best;
        break;
      }
      take(best, src, item, i);
      if (guard) {
        build_tree();
        continue;
      }
      const std::int64_t at = release_position(best);
      if (at <= pos + 1) {
        tree_set(best, true);  // its new deadline; eligible again at the next position
      } else {
        tree_set(best, false);
        wait_for_release(best, at);
      }
    }
    return i;
  }

  std::int64_t fill_random(std::int64_t n, std::int32_t* src, std::int64_t* item, const std::int64_t* caps) {
    const int k = k_;
    const double* cdf = cdf_.data();
    std::int64_t i = 0;
    for (; i < n; ++i) {
      const double u = open_unit(stream_bits(key_, static_cast<std::uint64_t>(position_)));
      int d = 0;
      if (k > 16) {  // the first d with u < cdf[d], by bisection (the same d as the scan)
        d = static_cast<int>(std::upper_bound(cdf, cdf + k - 1, u) - cdf);
      } else {
        while (d < k - 1 && !(u < cdf[d])) ++d;
      }
      if (caps != nullptr && caps[d] >= 0 && counts_[d] >= caps[d]) {
        blocked_ = d;
        break;
      }
      src[i] = d;
      item[i] = counts_[d]++;
      ++seg_counts_[d];
      ++position_;
      if (tokens_) serve_tokens(d);
    }
    return i;
  }

  // ---- token mode, exact: weighted fair queueing over tokens (WF2Q) ----
  // Within a segment of constant weights, with m tokens served in it so far, source d is
  // eligible when its virtual start c_d / w_d <= m (c_d = carried lag + its tokens in the
  // segment), and due at its virtual finish (c_d + L_d) / w_d, L_d the length of its next item.
  // Among the eligible the earliest finish wins, ties to the lowest index. docs/mixing.md proves
  // that with static weights every prefix holds |tokens_d - w_d * tokens| <= the longest item.
  // `r <= m` is tested as `r < above(m)`, so the sample mode's scans (strict <) serve as they are.
  static double above(double m) {  // the next double after m >= 0
    std::uint64_t bits = 0;
    std::memcpy(&bits, &m, sizeof bits);
    ++bits;
    std::memcpy(&m, &bits, sizeof bits);
    return m;
  }

  int largest_token_deficit(double m) const {
    int best = 0;
    double most = -std::numeric_limits<double>::infinity();
    for (int d = 0; d < k_; ++d) {
      if (!(w_[d] > 0.0)) continue;
      const double deficit = w_[d] * m - (base_[d] + static_cast<double>(seg_tok_[d]));
      if (deficit > most) {
        most = deficit;
        best = d;
      }
    }
    return best;
  }

  // Gives position i to d (caps already checked) and updates its release and deadline in rel/due.
  // Counts the tokens of the item d was just given (its count already moved on) and reads the
  // length of its next one.
  void serve_tokens(int d) {
    const auto len = static_cast<std::int64_t>(next_len_[d]);
    tok_[d] += len;
    seg_tok_[d] += len;
    total_tok_ += len;
    next_len_[d] = static_cast<double>(tlen_[static_cast<std::size_t>(d)].next(counts_[d]));
  }

  void take_tokens(int d, std::int32_t* src, std::int64_t* item, std::int64_t i, double* rel, double* due) {
    src[i] = d;
    item[i] = counts_[d]++;
    ++seg_counts_[d];
    serve_tokens(d);
    const double next = next_len_[d];
    const double c = base_[d] + static_cast<double>(seg_tok_[d]);
    rel[d] = c * inv_w_[d];
    due[d] = (c + next) * inv_w_[d];
    ++position_;
  }

  std::int64_t fill_tokens(std::int64_t n, std::int32_t* src, std::int64_t* item, const std::int64_t* caps) {
    if (k_ > kVecLimit) return fill_tokens_many(n, src, item, caps);
    const int forced = forced_path();
#if MIXSIEVE_MIX_SIMD
    if (forced == 2 && simd_isa() >= 2) return fill_tokens_vec8(n, src, item, caps);
    if (forced == 1 && simd_isa() >= 1) return fill_tokens_vec4(n, src, item, caps);
    if (forced < 0 && k_ > kVecFrom && simd_isa() == 2) return fill_tokens_vec8(n, src, item, caps);
    if (forced < 0 && k_ > kVecFrom && simd_isa() == 1) return fill_tokens_vec4(n, src, item, caps);
#endif
    (void)forced;
    return fill_tokens_scan(n, src, item, caps);
  }

  // Above kVecLimit sources: the scalar scan on the members (token mode has no tree: a source's
  // release is a token count, not a position, so the release ring does not apply).
  std::int64_t fill_tokens_many(std::int64_t n, std::int32_t* src, std::int64_t* item, const std::int64_t* caps) {
    std::int64_t i = 0;
    for (; i < n; ++i) {
      const double m = static_cast<double>(total_tok_ - seg_start_tok_);
      int best = pick1(release_.data(), deadline_.data(), k_, above(m));
      if (best < 0) best = largest_token_deficit(m);  // rounding guard
      if (capped(best, caps)) {
        blocked_ = best;
        break;
      }
      take_tokens(best, src, item, i, release_.data(), deadline_.data());
    }
    tree_valid_ = false;
    return i;
  }

  // Up to kVecLimit sources: the state in local arrays (the outputs may alias members as far as
  // the compiler knows), one copy per scan (scalar, AVX2, AVX-512), as in sample mode.
#define MIXSIEVE_FILL_TOKENS(NAME, ATTR, L, PICK)                                                           \
  ATTR std::int64_t NAME(std::int64_t n, std::int32_t* src, std::int64_t* item, const std::int64_t* caps) {   \
    alignas(64) double rel[kVecLimit], due[kVecLimit];                                                        \
    double inv_w[kVecLimit], base[kVecLimit], next[kVecLimit];                                                 \
    std::int64_t seg[kVecLimit], segc[kVecLimit], cnt[kVecLimit], tok[kVecLimit];                              \
    const int k = k_;                                                                                          \
    const int padded = (k + (L)-1) / (L) * (L);                                                                \
    for (int d = 0; d < padded; ++d) {                                                                         \
      const bool real = d < k; /* padding lanes are never eligible */                                         \
      rel[d] = real ? release_[d] : kInf;                                                                      \
      due[d] = real ? deadline_[d] : kInf;                                                                     \
      inv_w[d] = real ? inv_w_[d] : 0.0;                                                                       \
      base[d] = real ? base_[d] : 0.0;                                                                         \
      next[d] = real ? next_len_[d] : 0.0;                                                                     \
      seg[d] = real ? seg_tok_[d] : 0;                                                                         \
      segc[d] = real ? seg_counts_[d] : 0;                                                                     \
      cnt[d] = real ? counts_[d] : 0;                                                                          \
      tok[d] = real ? tok_[d] : 0;                                                                             \
    }                                                                                                          \
    TokenLengths* tl = tlen_.data();                                                                           \
    const double* w = w_.data();                                                                               \
    std::int64_t total = total_tok_;                                                                           \
    const std::int64_t seg0 = seg_start_tok_;                                                                  \
    std::int64_t i = 0;                                                                                        \
    for (; i < n; ++i) {                                                                                       \
      const double m = static_cast<double>(total - seg0);                                                      \
      int best = PICK(rel, due, padded, above(m));                                                             \
      if (best < 0) { /* rounding guard: the largest w_d m - c_d */                                           \
        double most = -kInf;                                                                                   \
        for (int d = 0; d < k; ++d) {                                                                          \
          const double deficit = w[d] * m - (base[d] + static_cast<double>(seg[d]));                           \
          if (w[d] > 0.0 && deficit > most) {                                                                  \
            most = deficit;                                                                                    \
            best = d;                                                                                          \
          }                                                                                                    \
        }                                                                                                      \
      }                                                                                                        \
      if (caps != nullptr && caps[best] >= 0 && cnt[best] >= caps[best]) {                                    \
        blocked_ = best;                                                                                       \
        break;                                                                                                 \
      }                                                                                                        \
      src[i] = best;                                                                                           \
      item[i] = cnt[best]++;                                                                                   \
      ++segc[best];                                                                                            \
      const auto len = static_cast<std::int64_t>(next[best]);                                                  \
      tok[best] += len;                                                                                        \
      seg[best] += len;                                                                                        \
      total += len;                                                                                            \
      const auto nl = static_cast<double>(tl[best].next(cnt[best]));                                           \
      next[best] = nl;                                                                                         \
      const double c = base[best] + static_cast<double>(seg[best]);                                            \
      rel[best] = c * inv_w[best];                                                                             \
      due[best] = (c + nl) * inv_w[best];                                                                      \
    }                                                                                                          \
    for (int d = 0; d < k; ++d) {                                                                              \
      release_[d] = rel[d];                                                                                    \
      deadline_[d] = due[d];                                                                                   \
      next_len_[d] = next[d];                                                                                  \
      seg_tok_[d] = seg[d];                                                                                    \
      seg_counts_[d] = segc[d];                                                                                \
      counts_[d] = cnt[d];                                                                                     \
      tok_[d] = tok[d];                                                                                        \
    }                                                                                                          \
    total_tok_ = total;                                                                                        \
    position_ += i;                                                                                            \
    tree_valid_ = false;                                                                                       \
    return i;                                                                                                  \
  }
  MIXSIEVE_FILL_TOKENS(fill_tokens_scan, , 1, pick1)
#if MIXSIEVE_MIX_SIMD
  MIXSIEVE_FILL_TOKENS(fill_tokens_vec8, __attribute__((target("avx512f"))), 8, pick8)
  MIXSIEVE_FILL_TOKENS(fill_tokens_vec4, __attribute__((target("avx2"))), 4, pick4)
#endif
#undef MIXSIEVE_FILL_TOKENS

  int k_;
  bool exact_;
  std::uint64_t key_;
  static constexpr int kScanLimit = 16;  // without a vector scan: above this the tree is faster
  static constexpr int kVecFrom = 10;    // the vector scan beats the scalar scan above this
  static constexpr int kVecLimit = 128;  // and the tree up to about here
  static constexpr double kInf = std::numeric_limits<double>::infinity();
  std::vector<double> w_, inv_w_, cdf_, release_, deadline_, base_;
  // the tournament tree and release ring of the many-source path
  std::size_t leaves_ = 1;
  static constexpr int kNone = std::numeric_limits<int>::max();
  std::vector<int> win_, head_, next_;
  std::vector<double> tval_;
  std::vector<std::pair<std::int64_t, int>> far_;
  std::int64_t ring_pos_ = 0;
  bool tree_valid_ = false;
  // token mode
  bool tokens_ = false;
  std::vector<TokenLengths> tlen_;
  std::vector<std::int64_t> tok_, seg_tok_;
  std::vector<double> next_len_;  // the length of each source's next item
  std::int64_t total_tok_ = 0, seg_start_tok_ = 0;
  int blocked_ = -1;
  std::vector<std::int64_t> seg_counts_, counts_;
  std::int64_t position_ = 0, seg_start_ = 0;
};

}  // namespace mixsieve
