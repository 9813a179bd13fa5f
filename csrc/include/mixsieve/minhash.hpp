// MinHash signatures: xxh64 of each shingle, then k fixed-width affine bijections
// pi_k(x) = a_k * x + b_k (mod 2^32 or 2^64, a_k odd) and the minimum per slot.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "mixsieve/cpu.hpp"
#include "mixsieve/hd.hpp"
#include "mixsieve/normalize.hpp"
#include "mixsieve/rng.hpp"
#include "mixsieve/xxh64.hpp"

namespace mixsieve {

// The per-shingle arithmetic of a signature, shared with the CUDA kernels (csrc/cuda/minhash.cu).

// 32-bit slot input: fold the 64-bit shingle hash so both halves count.
MIXSIEVE_HD inline std::uint32_t fold32(std::uint64_t h) { return static_cast<std::uint32_t>(h ^ (h >> 32)); }

// A shingle's hash as the input x of the slot permutations: fold32'd for 32-bit slots.
template <class T>
MIXSIEVE_HD inline T slot_input(std::uint64_t h) {
  if constexpr (sizeof(T) == 4) {
    return fold32(h);
  } else {
    return h;
  }
}

// The slot value of input x under pi(x) = a * x + b (mod 2^width).
template <class T>
MIXSIEVE_HD inline T permuted(T a, T x, T b) {
  return static_cast<T>(a * x + b);
}

namespace minhash_detail {

template <class T>
void permute_min_scalar(const T* x, std::size_t n, const T* a, const T* b, std::size_t k, T* sig) {
  for (std::size_t i = 0; i < n; ++i) {
    const T xi = x[i];
    for (std::size_t j = 0; j < k; ++j) {
      const T v = permuted(a[j], xi, b[j]);
      sig[j] = v < sig[j] ? v : sig[j];
    }
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MIXSIEVE_HAVE_AVX2_PATH 1
// Slots in blocks of 64 (eight 8-lane accumulators kept in registers across all shingles).
__attribute__((target("avx2"))) inline void permute_min_u32_avx2(const std::uint32_t* x, std::size_t n,
                                                                 const std::uint32_t* a,
                                                                 const std::uint32_t* b, std::size_t k,
                                                                 std::uint32_t* sig) {
  std::size_t j = 0;
  for (; j + 64 <= k; j += 64) {
    __m256i acc[8];
    for (int q = 0; q < 8; ++q) acc[q] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sig + j + 8 * q));
    for (std::size_t i = 0; i < n; ++i) {
      const __m256i xi = _mm256_set1_epi32(static_cast<int>(x[i]));
      for (int q = 0; q < 8; ++q) {
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + j + 8 * q));
        const __m256i bv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + j + 8 * q));
        acc[q] = _mm256_min_epu32(acc[q], _mm256_add_epi32(_mm256_mullo_epi32(av, xi), bv));
      }
    }
    for (int q = 0; q < 8; ++q) _mm256_storeu_si256(reinterpret_cast<__m256i*>(sig + j + 8 * q), acc[q]);
  }
  for (; j + 8 <= k; j += 8) {
    __m256i acc = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sig + j));
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + j));
    const __m256i bv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + j));
    for (std::size_t i = 0; i < n; ++i) {
      const __m256i xi = _mm256_set1_epi32(static_cast<int>(x[i]));
      acc = _mm256_min_epu32(acc, _mm256_add_epi32(_mm256_mullo_epi32(av, xi), bv));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(sig + j), acc);
  }
  if (j < k) permute_min_scalar(x, n, a + j, b + j, k - j, sig + j);
}

#define MIXSIEVE_HAVE_AVX512_PATH 1
#define MIXSIEVE_MH512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw"))) inline

// u64 slots in blocks of Q * 8 lanes: a, b and the minima of a block stay in registers
// (3 * Q of the 32 zmm) across all shingles; the last partial vector is masked. (u32 slots
// stay on the AVX2 kernel: on AVX-512 they measured no faster end to end, 16-lane multiplies
// lower the clock the rest of the pipeline runs at.)
template <int Q>
MIXSIEVE_MH512 void permute_min_block_u64_avx512(const std::uint64_t* x, std::size_t n, const std::uint64_t* a,
                                                 const std::uint64_t* b, std::uint64_t* sig, __mmask8 tail) {
  __m512i av[Q], bv[Q], acc[Q];
  for (int q = 0; q < Q; ++q) {
    const __mmask8 m = q == Q - 1 ? tail : static_cast<__mmask8>(0xFF);
    av[q] = _mm512_maskz_loadu_epi64(m, a + 8 * q);
    bv[q] = _mm512_maskz_loadu_epi64(m, b + 8 * q);
    acc[q] = _mm512_maskz_loadu_epi64(m, sig + 8 * q);
  }
  for (std::size_t i = 0; i < n; ++i) {
    const __m512i xi = _mm512_set1_epi64(static_cast<long long>(x[i]));
    for (int q = 0; q < Q; ++q) acc[q] = _mm512_min_epu64(acc[q], _mm512_add_epi64(_mm512_mullo_epi64(av[q], xi), bv[q]));
  }
  for (int q = 0; q < Q; ++q) {
    _mm512_mask_storeu_epi64(sig + 8 * q, q == Q - 1 ? tail : static_cast<__mmask8>(0xFF), acc[q]);
  }
}

MIXSIEVE_MH512 void permute_min_u64_avx512(const std::uint64_t* x, std::size_t n, const std::uint64_t* a,
                                           const std::uint64_t* b, std::size_t k, std::uint64_t* sig) {
  std::size_t j = 0;
  for (; j + 64 <= k; j += 64) permute_min_block_u64_avx512<8>(x, n, a + j, b + j, sig + j, 0xFF);
  for (; j + 8 <= k; j += 8) permute_min_block_u64_avx512<1>(x, n, a + j, b + j, sig + j, 0xFF);
  if (j < k) {
    permute_min_block_u64_avx512<1>(x, n, a + j, b + j, sig + j, static_cast<__mmask8>((1u << (k - j)) - 1));
  }
}
#endif

using Span = std::pair<std::size_t, std::size_t>;

template <class T>
void hash_bucket_any(const char* text, const Span* spans, std::size_t n, std::uint64_t seed, T* x) {
  for (std::size_t i = 0; i < n; ++i) x[i] = slot_input<T>(xxh64(text + spans[i].first, spans[i].second, seed));
}

// Shingles of exactly N bytes: xxh64 with the length a constant.
template <class T, std::size_t N>
void hash_bucket_fixed(const char* text, const Span* spans, std::size_t n, std::uint64_t seed, T* x) {
  for (std::size_t i = 0; i < n; ++i) x[i] = slot_input<T>(xxh64_fixed<N>(text + spans[i].first, seed));
}

inline constexpr std::size_t kFixedLengths = 96;

template <class T>
using HashBucketFn = void (*)(const char*, const Span*, std::size_t, std::uint64_t, T*);

template <class T, std::size_t... N>
constexpr std::array<HashBucketFn<T>, sizeof...(N)> hash_bucket_table(std::index_sequence<N...>) {
  return {&hash_bucket_fixed<T, N>...};
}

template <class T>
inline constexpr std::array<HashBucketFn<T>, kFixedLengths> kHashBucket =
    hash_bucket_table<T>(std::make_index_sequence<kFixedLengths>{});

}  // namespace minhash_detail

// Version of everything that turns text into signature slots: the normalisation and its Unicode
// tables, shingling, the shingle hash, fold32 and the permutation parameters. Index files
// record it; bump it whenever a change makes old signatures differ from new ones.
inline constexpr std::uint32_t kSignatureScheme = 1;

struct MinHashConfig {
  int num_perm = 128;
  int ngram = 5;
  Unit unit = Unit::Word;
  std::uint64_t seed = 1;
};

// A 128-bit digest of a document's normalised text: two xxh64 chains (different seeds) over
// 4 KiB blocks of the normalised byte stream, then the tail and the total length. Fed piece by
// piece as normalisation proceeds; the value does not depend on how the stream is split.
// Documents with equal digests have equal normalised text (up to a 2^-128-scale collision),
// hence equal signatures: the exact-duplicate test of dedup.
struct Digest128 {
  std::uint64_t lo = 0, hi = 0;
  bool operator==(const Digest128& o) const { return lo == o.lo && hi == o.hi; }
};

// The digest's steps, shared by StreamDigest and the CUDA kernels (which digest a whole
// normalised text at once: digest_text).
namespace digest_detail {
inline constexpr std::size_t kBlock = 4096;
MIXSIEVE_HD inline void start(std::uint64_t h[2]) {
  h[0] = 0x6D69787369657665ULL;  // "mixsieve"
  h[1] = 0x6578616374646F63ULL;  // "exactdoc"
}
MIXSIEVE_HD inline void block(const char* p, std::uint64_t h[2]) {
  std::uint64_t out[2];
  xxh64_pair(p, kBlock, h[0], h[1] ^ 0xA0761D6478BD642FULL, out);
  h[0] = out[0];
  h[1] = out[1];
}
// The tail (fewer than kBlock bytes) and the total length of the text.
MIXSIEVE_HD inline void finish(const char* tail, std::size_t fill, std::uint64_t total, const std::uint64_t h[2],
                               std::uint64_t out[2]) {
  xxh64_pair(tail, fill, h[0] ^ total, h[1] + total * 0x9E3779B97F4A7C15ULL, out);
}
}  // namespace digest_detail

// The digest of `n` bytes of normalised text given at once: out = {lo, hi}.
MIXSIEVE_HD inline void digest_text(const char* p, std::size_t n, std::uint64_t out[2]) {
  std::uint64_t h[2];
  digest_detail::start(h);
  std::size_t at = 0;
  for (; n - at >= digest_detail::kBlock; at += digest_detail::kBlock) digest_detail::block(p + at, h);
  digest_detail::finish(p + at, n - at, n, h, out);
}

class StreamDigest {
 public:
  static constexpr std::size_t kBlock = digest_detail::kBlock;
  void reset() {
    fill_ = 0;
    total_ = 0;
    digest_detail::start(h_);
  }
  void update(const char* p, std::size_t n) {
    total_ += n;
    if (fill_ > 0) {
      const std::size_t take = std::min(n, kBlock - fill_);
      std::memcpy(buf_ + fill_, p, take);
      fill_ += take;
      p += take;
      n -= take;
      if (fill_ < kBlock) return;
      digest_detail::block(buf_, h_);
      fill_ = 0;
    }
    for (; n >= kBlock; p += kBlock, n -= kBlock) digest_detail::block(p, h_);
    if (n > 0) std::memcpy(buf_, p, n);
    fill_ = n;
  }
  Digest128 finish() const {
    std::uint64_t h[2];
    digest_detail::finish(buf_, fill_, total_, h_, h);
    return Digest128{h[0], h[1]};
  }

 private:
  char buf_[kBlock];
  std::size_t fill_ = 0;
  std::uint64_t total_ = 0, h_[2] = {0, 0};
};

// Per-thread scratch space, reused across documents so the hot loop does not allocate.
template <class T>
struct MinHashWorkspace {
  Normalized norm;
  std::vector<std::size_t> offsets;
  std::vector<std::pair<std::size_t, std::size_t>> spans;  // (offset, length) of each shingle
  std::vector<std::pair<std::size_t, std::size_t>> sorted;  // spans grouped by length
  std::vector<T> x;
  StreamDigest digest;
};

// T is std::uint32_t or std::uint64_t (the signature's slot type).
template <class T>
class MinHasher {
  static_assert(std::is_same_v<T, std::uint32_t> || std::is_same_v<T, std::uint64_t>);

 public:
  explicit MinHasher(const MinHashConfig& cfg) : cfg_(cfg) {
    if (cfg.num_perm < 1) throw std::invalid_argument("num_perm must be >= 1");
    if (cfg.ngram < 1) throw std::invalid_argument("ngram must be >= 1");
    a_.resize(cfg.num_perm);
    b_.resize(cfg.num_perm);
    for (int k = 0; k < cfg.num_perm; ++k) {
      const std::uint64_t a = splitmix64_at(cfg.seed, 2 * static_cast<std::uint64_t>(k)) | 1ULL;
      const std::uint64_t b = splitmix64_at(cfg.seed, 2 * static_cast<std::uint64_t>(k) + 1);
      a_[k] = static_cast<T>(a);  // low bits: still odd, so pi_k is a bijection
      b_[k] = static_cast<T>(b);
    }
  }

  const MinHashConfig& config() const { return cfg_; }
  const std::vector<T>& a() const { return a_; }
  const std::vector<T>& b() const { return b_; }

  // Text is normalised, shingled and hashed in pieces of about kPiece bytes: a piece's
  // shingles are folded into the slot minima before the next piece is read, and only the
  // normalised text later shingles still need (the last ngram - 1 units) is kept. The
  // working set is O(kPiece + longest shingle), not O(document): a 50 MB document needs a few
  // MB beyond its own bytes. The result equals hashing all shingles at once (the minimum
  // ignores order).
  static constexpr std::size_t kPiece = std::size_t{1} << 16;

  // Writes the num_perm slots of one document's signature to `out`. A document without
  // shingles gets every slot equal to the maximum value of T.
  void signature(const char* data, std::size_t len, T* out, MinHashWorkspace<T>& ws) const {
    signature_impl<false>(data, len, out, ws, nullptr, [](const Digest128&, T*) { return false; });
  }

  // The signature and the digest of the normalised text. For a document normalised in one
  // piece (up to kPiece bytes) the digest is known before any shingle is hashed:
  // reuse(digest, out) may then fill `out` with the signature of an earlier document with that
  // digest and return true, and the shingles are not hashed at all (exact duplicates skip the
  // sketch). Returns whether `out` came from reuse.
  template <class Reuse>
  bool signature_digest(const char* data, std::size_t len, T* out, MinHashWorkspace<T>& ws, Digest128& digest,
                        Reuse&& reuse) const {
    return signature_impl<true>(data, len, out, ws, &digest, reuse);
  }

 private:
  template <bool kDigest, class Reuse>
  bool signature_impl(const char* data, std::size_t len, T* out, MinHashWorkspace<T>& ws, Digest128* digest,
                      Reuse&& reuse) const {
    const std::size_t k = static_cast<std::size_t>(cfg_.num_perm);
    const std::size_t n = static_cast<std::size_t>(cfg_.ngram);
    for (std::size_t j = 0; j < k; ++j) out[j] = std::numeric_limits<T>::max();
    Normalized& norm = ws.norm;
    normalize_begin(norm);
    ws.offsets.clear();
    std::size_t next = 0;     // window index of the first unit of the next shingle
    std::size_t scanned = 0;  // char unit: window bytes already split into code points
    bool emitted = false;
    std::size_t pos = 0;
    if constexpr (kDigest) ws.digest.reset();
    do {
      const std::size_t end = len - pos <= kPiece ? len : utf8_cut(data, len, pos + kPiece);
      const std::size_t fed = norm.size;  // normalised bytes before this piece: already digested
      normalize_append(data + pos, end - pos, norm);
      const bool first = pos == 0;
      pos = end;
      const bool last = pos == len;
      if (last) normalize_end(norm);
      if constexpr (kDigest) {
        ws.digest.update(norm.text.data() + fed, norm.size - fed);
        if (last) *digest = ws.digest.finish();
        if (first && last && reuse(*digest, out)) return true;
      }
      ws.spans.clear();
      if (cfg_.unit == Unit::Word) {
        for (; next + n <= norm.words; ++next) {
          const std::size_t s0 = norm.word_start[next];
          ws.spans.emplace_back(s0, norm.word_end[next + n - 1] - s0);
        }
        if (last && !emitted && ws.spans.empty() && norm.words > 0) ws.spans.emplace_back(0, norm.size);
      } else {
        const char* t = norm.text.data();
        for (; scanned < norm.size; ++scanned) {
          if ((static_cast<unsigned char>(t[scanned]) & 0xC0) != 0x80) ws.offsets.push_back(scanned);
        }
        const std::size_t cps = ws.offsets.size();
        for (; next + n <= cps; ++next) {
          const std::size_t stop = next + n < cps ? ws.offsets[next + n] : norm.size;
          ws.spans.emplace_back(ws.offsets[next], stop - ws.offsets[next]);
        }
        if (last && !emitted && ws.spans.empty() && cps > 0) ws.spans.emplace_back(0, norm.size);
      }
      emitted = emitted || !ws.spans.empty();
      hash_spans(norm.text.data(), ws, out);
      if (last || next == 0) continue;
      // Keep only what later shingles need.
      if (cfg_.unit == Unit::Word) {
        const std::size_t from = next < norm.words || norm.in_word ? norm.word_start[next] : norm.size;
        normalize_drop_front(norm, from, next);
      } else {
        const std::size_t cps = ws.offsets.size();
        const std::size_t from = next < cps ? ws.offsets[next] : norm.size;
        std::memmove(norm.text.data(), norm.text.data() + from, norm.size - from);
        norm.size -= from;
        ws.offsets.erase(ws.offsets.begin(), ws.offsets.begin() + static_cast<std::ptrdiff_t>(next));
        for (std::size_t& o : ws.offsets) o -= from;
        scanned = norm.size;
        norm.words = 0;  // char shingles do not use the word table; keep it valid and small
        if (norm.in_word) norm.word_start[0] = 0;
      }
      next = 0;
    } while (pos < len);
    return false;
  }

 public:

  // Minimum over the permuted values of pre-computed slot inputs (fold32'd for uint32).
  void permute_min(const T* x, std::size_t n, T* out) const {
    const std::size_t k = static_cast<std::size_t>(cfg_.num_perm);
    for (std::size_t j = 0; j < k; ++j) out[j] = std::numeric_limits<T>::max();
    permute_min_into(x, n, out);
  }

 private:
  // Hashes the shingles ws.spans of `text` and folds them into the slot minima `out`. Spans
  // are hashed grouped by length (a counting sort): the slot minimum ignores order, and equal
  // lengths keep xxh64's length-dependent branches predictable, which roughly halves hashing
  // time on text.
  void hash_spans(const char* text, MinHashWorkspace<T>& ws, T* out) const {
    const std::size_t count = ws.spans.size();
    if (count == 0) return;
    constexpr std::size_t kLenBuckets = 128;  // longer shingles share the last bucket
    std::size_t start[kLenBuckets + 1] = {};
    for (const auto& sp : ws.spans) ++start[std::min(sp.second, kLenBuckets - 1) + 1];
    for (std::size_t b = 1; b <= kLenBuckets; ++b) start[b] += start[b - 1];
    if (ws.sorted.size() < count) ws.sorted.resize(count);
    for (const auto& sp : ws.spans) ws.sorted[start[std::min(sp.second, kLenBuckets - 1)]++] = sp;
    if (ws.x.size() < count) ws.x.resize(count);
    const std::uint64_t seed = cfg_.seed;
    T* x = ws.x.data();
    // After the scatter, start[b] is the end of bucket b. Buckets below kFixedLengths hash
    // with xxh64 specialised to their length (no length branches, loops unrolled).
    std::size_t i = 0;
    for (std::size_t b = 0; b < kLenBuckets; ++b) {
      const std::size_t stop = start[b];
      if (i == stop) continue;
      if (b < minhash_detail::kFixedLengths) {
        minhash_detail::kHashBucket<T>[b](text, ws.sorted.data() + i, stop - i, seed, x + i);
      } else {
        minhash_detail::hash_bucket_any(text, ws.sorted.data() + i, stop - i, seed, x + i);
      }
      i = stop;
    }
    permute_min_into(x, count, out);
  }

  // Folds the permuted values of x into the slot minima `out`.
  void permute_min_into(const T* x, std::size_t n, T* out) const {
    const std::size_t k = static_cast<std::size_t>(cfg_.num_perm);
#ifdef MIXSIEVE_HAVE_AVX2_PATH
    const int level = minhash_level();
    if constexpr (std::is_same_v<T, std::uint32_t>) {
      if (level >= 1) {
        minhash_detail::permute_min_u32_avx2(x, n, a_.data(), b_.data(), k, out);
        return;
      }
    } else {
      if (level == 2) {
        minhash_detail::permute_min_u64_avx512(x, n, a_.data(), b_.data(), k, out);
        return;
      }
    }
#endif
    minhash_detail::permute_min_scalar(x, n, a_.data(), b_.data(), k, out);
  }

 private:
  MinHashConfig cfg_;
  std::vector<T> a_, b_;
};

// Fraction of equal slots: the MinHash estimate of the Jaccard similarity.
template <class T>
inline double jaccard_estimate(const T* x, const T* y, std::size_t k) {
  std::size_t eq = 0;
  for (std::size_t j = 0; j < k; ++j) eq += x[j] == y[j];
  return k ? static_cast<double>(eq) / static_cast<double>(k) : 0.0;
}

template <class T>
inline bool is_empty_signature(const T* x, std::size_t k) {
  for (std::size_t j = 0; j < k; ++j) {
    if (x[j] != std::numeric_limits<T>::max()) return false;
  }
  return true;
}

}  // namespace mixsieve
