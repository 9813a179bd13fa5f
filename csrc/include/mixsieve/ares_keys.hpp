// A-Res keys log(u_id) / w_id with u_id a pure function of (seed, item id), and the first
// pass of a scan: which items of a block may beat a threshold, decided without a logarithm.
// AresKeys and the per-item bounds are MIXSIEVE_HD: the CUDA sampler (csrc/cuda/sampling.cu)
// computes its keys with them, so both backends give the same bits.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

// The vector first pass is host code for x86-64 only; nvcc compiles this header for the
// device side of the CUDA sampler and needs none of it.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#include <immintrin.h>
#define MIXSIEVE_ARES_X86 1
#endif

#include "mixsieve/cpu.hpp"
#include "mixsieve/hd.hpp"
#include "mixsieve/portable_math.hpp"
#include "mixsieve/rng.hpp"

namespace mixsieve {

// u_id has 52 random bits. The top 32 are one half of a SplitMix64 output shared by the two
// ids that differ only in bit 3 (the id with bit 3 clear takes the high half), the low 20
// come from a second stream keyed by the id alone. Every u_id is uniform on (0, 1) and
// independent of the others. The sharing halves the hashing of a scan's first pass, which
// needs only the top bits: u_id < (top + 1) * 2^-32.
class AresKeys {
 public:
  MIXSIEVE_HD explicit AresKeys(std::uint64_t seed)
      : top_key_(stream_key(seed, Stream::AresKey, 0)), low_key_(stream_key(seed, Stream::AresKey, 1)) {}

  // The counter of the SplitMix64 output that holds the top bits of id (and of id ^ 8).
  MIXSIEVE_HD static constexpr std::uint64_t pair_counter(std::uint64_t id) { return ((id >> 4) << 3) | (id & 7); }

  MIXSIEVE_HD std::uint64_t top_key() const { return top_key_; }

  MIXSIEVE_HD std::uint32_t top(std::uint64_t id) const {
    const std::uint64_t h = stream_bits(top_key_, pair_counter(id));
    return static_cast<std::uint32_t>((id & 8) ? h : h >> 32);
  }

  MIXSIEVE_HD double uniform(std::int64_t id) const {
    const auto u = static_cast<std::uint64_t>(id);
    return open_unit((std::uint64_t{top(u)} << 32) | (stream_bits(low_key_, u) >> 32));
  }

  // log through pm_log (portable_math.hpp): the CUDA sampler computes the same bits.
  MIXSIEVE_HD double key(std::int64_t id, double w) const { return pm_log(uniform(id)) / w; }

 private:
  std::uint64_t top_key_, low_key_;
};

// (top + 1) * 2^-32 - 1, exactly: an upper bound on u - 1 >= log(u) for every u with these
// top bits. Computed as (1 + top * 2^-32) - (2 - 2^-32), the form the vector kernels use.
MIXSIEVE_HD inline double ares_excess(std::uint32_t top) {
  const std::uint64_t bits = (std::uint64_t{top} << 20) | 0x3FF0000000000000ULL;
  double one_m;
  std::memcpy(&one_m, &bits, sizeof(one_m));
  return one_m - (2.0 - 0x1p-32);
}

// The threshold the first pass compares against: a hair below t, so that rounding in t * w,
// the logarithm and the division can never reject an item whose computed key reaches t.
MIXSIEVE_HD inline double ares_pass_threshold(double t) { return t * (1.0 + 0x1p-40); }

// What the first pass learned about a block of up to 256 items. Marks need no separate test
// for w > 0: with tf <= 0, a weight that is zero, negative or NaN makes tf * w >= 0 or NaN,
// which no excess (<= 0) exceeds.
struct FirstPass {
  std::uint64_t may[4] = {0, 0, 0, 0};  // bit j: item j may reach t
  bool invalid = false;                 // some weight is negative, NaN or infinite
};

namespace ares_detail {

MIXSIEVE_HD inline bool valid_weight(double w) { return w >= 0.0 && w <= std::numeric_limits<double>::max(); }

// The reference: any ids, any count, any alignment. tf = ares_pass_threshold(t). Whole
// groups of 16 aligned ids hash once per pair, as the vector kernels do.
template <class W>
void first_pass_scalar(const W* w, const std::int64_t* ids, std::int64_t base, std::size_t cnt,
                       const AresKeys& keys, double tf, FirstPass& out) {
  auto judge = [&](std::size_t j, std::uint32_t top) {
    const double wi = static_cast<double>(w[j]);
    out.invalid |= !valid_weight(wi);
    if (ares_excess(top) > tf * wi) out.may[j / 64] |= std::uint64_t{1} << (j % 64);
  };
  std::size_t j = 0;
  if (!ids && (static_cast<std::uint64_t>(base) & 15) == 0) {
    const std::uint64_t c0 = static_cast<std::uint64_t>(base) / 2;  // ids base + 16g + r, + 8 share c0 + 8g + r
    for (; j + 16 <= cnt; j += 16) {
      for (std::size_t r = 0; r < 8; ++r) {
        const std::uint64_t h = stream_bits(keys.top_key(), c0 + j / 2 + r);
        judge(j + r, static_cast<std::uint32_t>(h >> 32));
        judge(j + 8 + r, static_cast<std::uint32_t>(h));
      }
    }
  }
  for (; j < cnt; ++j) {
    judge(j, keys.top(static_cast<std::uint64_t>(ids ? ids[j] : base + static_cast<std::int64_t>(j))));
  }
}

#ifdef MIXSIEVE_ARES_X86
constexpr std::uint64_t kTopField = 0x000FFFFFFFF00000ULL;  // mantissa bits 51..20: where top goes
constexpr std::uint64_t kOne = 0x3FF0000000000000ULL;

// ---- AVX-512: 8 lanes, 64-bit multiplies, compare masks ----
#define MIXSIEVE_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl"), always_inline)) inline

MIXSIEVE_AVX512 __m512i mix8(__m512i z) {
  z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 30));
  z = _mm512_mullo_epi64(z, _mm512_set1_epi64(static_cast<long long>(kSplitMixMul1)));
  z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 27));
  z = _mm512_mullo_epi64(z, _mm512_set1_epi64(static_cast<long long>(kSplitMixMul2)));
  return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}
// (top + 1) * 2^-32 - 1 from lanes whose bits 51..20 hold top (other bits are masked off).
MIXSIEVE_AVX512 __m512d excess8(__m512i top_at_20) {
  const __m512i one_m = _mm512_ternarylogic_epi64(top_at_20, _mm512_set1_epi64(static_cast<long long>(kTopField)),
                                                  _mm512_set1_epi64(static_cast<long long>(kOne)), 0xEA);  // a&b|c
  return _mm512_sub_pd(_mm512_castsi512_pd(one_m), _mm512_set1_pd(2.0 - 0x1p-32));
}
MIXSIEVE_AVX512 __m512d load8(const double* w) { return _mm512_loadu_pd(w); }
MIXSIEVE_AVX512 __m512d load8(const float* w) { return _mm512_cvtps_pd(_mm256_loadu_ps(w)); }

// 8 weights against their excess: bits of `may`; ANDs validity into ok.
MIXSIEVE_AVX512 unsigned judge8(__m512d wv, __m512d ex, __m512d tfv, unsigned& ok) {
  ok &= _mm512_mask_cmp_pd_mask(_mm512_cmp_pd_mask(wv, _mm512_setzero_pd(), _CMP_GE_OQ), wv,
                                _mm512_set1_pd(std::numeric_limits<double>::max()), _CMP_LE_OQ);
  return _mm512_cmp_pd_mask(ex, _mm512_mul_pd(tfv, wv), _CMP_GT_OQ);
}

// cnt a multiple of 16, at most 256; without ids, base must be a multiple of 16.
template <class W>
__attribute__((target("avx512f,avx512dq,avx512vl"))) void first_pass_avx512(const W* w, const std::int64_t* ids,
                                                                             std::int64_t base, std::size_t cnt,
                                                                             const AresKeys& keys, double tf,
                                                                             FirstPass& out) {
  const __m512d tfv = _mm512_set1_pd(tf);
  const __m512i key = _mm512_set1_epi64(static_cast<long long>(keys.top_key()));
  const __m512i gamma = _mm512_set1_epi64(static_cast<long long>(kSplitMixGamma));
  unsigned ok = 0xFF;
  if (!ids) {
    // Ids base + 16g + r and base + 16g + 8 + r (r < 8) share counter base/2 + 8g + r.
    const auto c0 = static_cast<std::uint64_t>(base) / 2;
    __m512i x = _mm512_add_epi64(
        _mm512_set1_epi64(static_cast<long long>(keys.top_key() + (c0 + 1) * kSplitMixGamma)),
        _mm512_mullo_epi64(_mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), gamma));
    const __m512i step = _mm512_set1_epi64(static_cast<long long>(8 * kSplitMixGamma));
    for (std::size_t g = 0; g < cnt / 16; ++g) {
      const __m512i h = mix8(x);
      x = _mm512_add_epi64(x, step);
      const unsigned lo8 = judge8(load8(w + 16 * g), excess8(_mm512_srli_epi64(h, 12)), tfv, ok);
      const unsigned hi8 = judge8(load8(w + 16 * g + 8), excess8(_mm512_slli_epi64(h, 20)), tfv, ok);
      out.may[g / 4] |= static_cast<std::uint64_t>(lo8 | (hi8 << 8)) << (16 * (g % 4));
    }
  } else {
    const __m512i seven = _mm512_set1_epi64(7), eight = _mm512_set1_epi64(8), one = _mm512_set1_epi64(1);
    for (std::size_t q = 0; q < cnt / 8; ++q) {
      const __m512i id = _mm512_loadu_si512(ids + 8 * q);
      const __m512i ctr = _mm512_ternarylogic_epi64(_mm512_slli_epi64(_mm512_srli_epi64(id, 4), 3), id, seven,
                                                    0xF8);  // a | (b & c)
      const __m512i h = mix8(_mm512_add_epi64(key, _mm512_mullo_epi64(_mm512_add_epi64(ctr, one), gamma)));
      const __mmask8 low_half = _mm512_test_epi64_mask(id, eight);
      const __m512i top = _mm512_mask_blend_epi64(low_half, _mm512_srli_epi64(h, 12), _mm512_slli_epi64(h, 20));
      const unsigned m = judge8(load8(w + 8 * q), excess8(top), tfv, ok);
      out.may[q / 8] |= static_cast<std::uint64_t>(m) << (8 * (q % 8));
    }
  }
  out.invalid |= ok != 0xFF;
}
#undef MIXSIEVE_AVX512

// ---- AVX2: 4 lanes; 64-bit multiplies from three 32-bit ones ----
#define MIXSIEVE_AVX2 __attribute__((target("avx2,fma"), always_inline)) inline

MIXSIEVE_AVX2 __m256i mul4(__m256i a, std::uint64_t c) {
  const __m256i lo = _mm256_mul_epu32(a, _mm256_set1_epi64x(static_cast<long long>(c)));
  const __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), _mm256_set1_epi64x(static_cast<long long>(c))),
                                         _mm256_mul_epu32(a, _mm256_set1_epi64x(static_cast<long long>(c >> 32))));
  return _mm256_add_epi64(lo, _mm256_slli_epi64(cross, 32));
}
MIXSIEVE_AVX2 __m256i mix4(__m256i z) {
  z = mul4(_mm256_xor_si256(z, _mm256_srli_epi64(z, 30)), kSplitMixMul1);
  z = mul4(_mm256_xor_si256(z, _mm256_srli_epi64(z, 27)), kSplitMixMul2);
  return _mm256_xor_si256(z, _mm256_srli_epi64(z, 31));
}
MIXSIEVE_AVX2 __m256d excess4(__m256i top_at_20) {
  const __m256i one_m = _mm256_or_si256(_mm256_and_si256(top_at_20, _mm256_set1_epi64x(static_cast<long long>(kTopField))),
                                        _mm256_set1_epi64x(static_cast<long long>(kOne)));
  return _mm256_sub_pd(_mm256_castsi256_pd(one_m), _mm256_set1_pd(2.0 - 0x1p-32));
}
MIXSIEVE_AVX2 __m256d load4(const double* w) { return _mm256_loadu_pd(w); }
MIXSIEVE_AVX2 __m256d load4(const float* w) { return _mm256_cvtps_pd(_mm_loadu_ps(w)); }

MIXSIEVE_AVX2 unsigned judge4(__m256d wv, __m256d ex, __m256d tfv, __m256d& ok) {
  ok = _mm256_and_pd(ok, _mm256_and_pd(_mm256_cmp_pd(wv, _mm256_setzero_pd(), _CMP_GE_OQ),
                                       _mm256_cmp_pd(wv, _mm256_set1_pd(std::numeric_limits<double>::max()), _CMP_LE_OQ)));
  return static_cast<unsigned>(_mm256_movemask_pd(_mm256_cmp_pd(ex, _mm256_mul_pd(tfv, wv), _CMP_GT_OQ)));
}

template <class W>
__attribute__((target("avx2,fma"))) void first_pass_avx2(const W* w, const std::int64_t* ids, std::int64_t base,
                                                          std::size_t cnt, const AresKeys& keys, double tf,
                                                          FirstPass& out) {
  const __m256d tfv = _mm256_set1_pd(tf);
  __m256d ok = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
  if (!ids) {
    const auto c0 = static_cast<std::uint64_t>(base) / 2;
    const std::uint64_t x0 = keys.top_key() + (c0 + 1) * kSplitMixGamma;
    __m256i xa = _mm256_set_epi64x(static_cast<long long>(x0 + 3 * kSplitMixGamma), static_cast<long long>(x0 + 2 * kSplitMixGamma),
                                   static_cast<long long>(x0 + kSplitMixGamma), static_cast<long long>(x0));
    __m256i xb = _mm256_add_epi64(xa, _mm256_set1_epi64x(static_cast<long long>(4 * kSplitMixGamma)));
    const __m256i step = _mm256_set1_epi64x(static_cast<long long>(8 * kSplitMixGamma));
    for (std::size_t g = 0; g < cnt / 16; ++g) {
      const __m256i ha = mix4(xa), hb = mix4(xb);  // counters of items r and 8 + r, r = 0..3 and 4..7
      xa = _mm256_add_epi64(xa, step);
      xb = _mm256_add_epi64(xb, step);
      const W* wg = w + 16 * g;
      unsigned m = judge4(load4(wg), excess4(_mm256_srli_epi64(ha, 12)), tfv, ok);
      m |= judge4(load4(wg + 4), excess4(_mm256_srli_epi64(hb, 12)), tfv, ok) << 4;
      m |= judge4(load4(wg + 8), excess4(_mm256_slli_epi64(ha, 20)), tfv, ok) << 8;
      m |= judge4(load4(wg + 12), excess4(_mm256_slli_epi64(hb, 20)), tfv, ok) << 12;
      out.may[g / 4] |= static_cast<std::uint64_t>(m) << (16 * (g % 4));
    }
  } else {
    const __m256i key = _mm256_set1_epi64x(static_cast<long long>(keys.top_key()));
    const __m256i seven = _mm256_set1_epi64x(7), eight = _mm256_set1_epi64x(8), one = _mm256_set1_epi64x(1);
    for (std::size_t q = 0; q < cnt / 4; ++q) {
      const __m256i id = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ids + 4 * q));
      const __m256i ctr = _mm256_or_si256(_mm256_slli_epi64(_mm256_srli_epi64(id, 4), 3), _mm256_and_si256(id, seven));
      const __m256i h = mix4(_mm256_add_epi64(key, mul4(_mm256_add_epi64(ctr, one), kSplitMixGamma)));
      const __m256i high_half = _mm256_cmpeq_epi64(_mm256_and_si256(id, eight), _mm256_setzero_si256());
      const __m256i top = _mm256_blendv_epi8(_mm256_slli_epi64(h, 20), _mm256_srli_epi64(h, 12), high_half);
      const unsigned m = judge4(load4(w + 4 * q), excess4(top), tfv, ok);
      out.may[q / 16] |= static_cast<std::uint64_t>(m) << (4 * (q % 16));
    }
  }
  out.invalid |= _mm256_movemask_pd(ok) != 0xF;
}
#undef MIXSIEVE_AVX2
#endif  // MIXSIEVE_ARES_X86

}  // namespace ares_detail

// A cap on the level used, so that tests can run every path on one machine.
inline std::atomic<int>& ares_isa_cap() {
  static std::atomic<int> cap{2};
  return cap;
}
// 2: AVX-512, 1: AVX2, 0: the scalar reference.
inline int ares_isa() { return std::min(cpu_vector_level(), ares_isa_cap().load(std::memory_order_relaxed)); }

// The first pass over items j < cnt <= 256 (ids[j], or base + j), against tf =
// ares_pass_threshold(t): an item that is not marked in out.may has a key below t.
// Bit-identical on every instruction set.
template <class W>
void ares_first_pass(const W* w, const std::int64_t* ids, std::int64_t base, std::size_t cnt, const AresKeys& keys,
                     double tf, FirstPass& out) {
#ifdef MIXSIEVE_ARES_X86
  const bool aligned = ids || (static_cast<std::uint64_t>(base) & 15) == 0;
  if (aligned && cnt % 16 == 0) {
    switch (ares_isa()) {
      case 2:
        return ares_detail::first_pass_avx512(w, ids, base, cnt, keys, tf, out);
      case 1:
        return ares_detail::first_pass_avx2(w, ids, base, cnt, keys, tf, out);
      default:
        break;
    }
  }
#endif
  ares_detail::first_pass_scalar(w, ids, base, cnt, keys, tf, out);
}

}  // namespace mixsieve
