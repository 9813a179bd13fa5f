// Per-element arithmetic of the per-token mixup kernels, shared by the CPU kernels
// (mixup.hpp) and the CUDA kernels (csrc/cuda/): every function here is __host__ __device__,
// so the two backends compute the same formulas and CI checks them without a GPU.
//
// The operator (docs/mixup.md): two token windows xa, xb [B, T+1] with validity masks va, vb
// and one lambda per token. A padding policy turns (lambda, va, vb) into an effective lambda and
// a keep mask; the input at step t is mixed with the lambda of token t, the two targets at step t
// are weighted by the lambda of token t+1 ("shifted") or of token t ("same").
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "mixsieve/hd.hpp"
#include "mixsieve/portable_math.hpp"

namespace mixsieve {
namespace mixup {

// The double-precision helpers live in portable_math.hpp (shared with the samplers).
using mixsieve::dadd;
using mixsieve::ddiv;
using mixsieve::dmul;
using mixsieve::dsqrt;
using mixsieve::f64_bits;
using mixsieve::f64_from_bits;
using mixsieve::pm_exp;
using mixsieve::pm_log;

// ---------------------------------------------------------------------------------------------
// Bit casts and the 16-bit float formats (round to nearest even, NaN kept quiet).

MIXSIEVE_HD inline std::uint32_t f32_bits(float x) {
#if defined(__CUDA_ARCH__)
  return static_cast<std::uint32_t>(__float_as_uint(x));
#else
  return __builtin_bit_cast(std::uint32_t, x);
#endif
}

MIXSIEVE_HD inline float f32_from_bits(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  return __builtin_bit_cast(float, u);
#endif
}


MIXSIEVE_HD inline float bf16_to_f32(std::uint16_t h) { return f32_from_bits(static_cast<std::uint32_t>(h) << 16); }

MIXSIEVE_HD inline std::uint16_t f32_to_bf16(float x) {
  const std::uint32_t u = f32_bits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);  // NaN
  const std::uint32_t rounded = u + 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(rounded >> 16);
}

MIXSIEVE_HD inline float f16_to_f32(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1Fu;
  std::uint32_t mant = h & 0x3FFu;
  if (exp == 0x1Fu) return f32_from_bits(sign | 0x7F800000u | (mant << 13));  // inf / NaN
  if (exp != 0) return f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return f32_from_bits(sign);
  // subnormal half: value mant * 2^-24, exactly representable in float
  const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
  return sign ? -v : v;
}

MIXSIEVE_HD inline std::uint16_t f32_to_f16(float x) {
  const std::uint32_t u = f32_bits(x);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u);  // NaN
  if (a >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // rounds to inf
  if (a >= 0x38800000u) {                                                   // normal half
    const std::uint32_t r = a + 0xFFFu + ((a >> 13) & 1u) - (112u << 23);
    return static_cast<std::uint16_t>(sign | (r >> 13));
  }
  if (a < 0x33000000u) return sign;  // below half the smallest subnormal: +-0
  // subnormal half: shift the full significand, round to nearest even
  const std::uint32_t e = a >> 23;
  const std::uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
  const std::uint32_t shift = 126u - e;  // 14..24
  const std::uint32_t half_bit = 1u << (shift - 1);
  std::uint32_t q = m >> shift;
  const std::uint32_t rest = m & ((1u << shift) - 1u);
  if (rest > half_bit || (rest == half_bit && (q & 1u))) ++q;
  return static_cast<std::uint16_t>(sign | q);
}

// Element types of the float tensors: the codes the Python layer passes.
enum class Dtype : int { F32 = 0, F64 = 1, BF16 = 2, F16 = 3 };

template <class T>
struct Elem;  // load/store with math in float (16/32-bit) or double (64-bit)
template <>
struct Elem<float> {
  using math = float;
  MIXSIEVE_HD static float load(const float* p, std::int64_t i) { return p[i]; }
  MIXSIEVE_HD static void store(float* p, std::int64_t i, float v) { p[i] = v; }
};
template <>
struct Elem<double> {
  using math = double;
  MIXSIEVE_HD static double load(const double* p, std::int64_t i) { return p[i]; }
  MIXSIEVE_HD static void store(double* p, std::int64_t i, double v) { p[i] = v; }
};
struct bf16_t {
  std::uint16_t bits;
};
struct f16_t {
  std::uint16_t bits;
};
template <>
struct Elem<bf16_t> {
  using math = float;
  MIXSIEVE_HD static float load(const bf16_t* p, std::int64_t i) { return bf16_to_f32(p[i].bits); }
  MIXSIEVE_HD static void store(bf16_t* p, std::int64_t i, float v) { p[i].bits = f32_to_bf16(v); }
};
template <>
struct Elem<f16_t> {
  using math = float;
  MIXSIEVE_HD static float load(const f16_t* p, std::int64_t i) { return f16_to_f32(p[i].bits); }
  MIXSIEVE_HD static void store(f16_t* p, std::int64_t i, float v) { p[i].bits = f32_to_f16(v); }
};

// ---------------------------------------------------------------------------------------------
// Lambda ~ Beta(alpha, alpha), one per element, from a counter-based stream: element i of a
// draw uses only splitmix64 outputs keyed by (key, i), so the value of an element does not
// depend on the shape, the thread count or the device.

MIXSIEVE_HD inline std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

struct ElementStream {
  std::uint64_t key;
  std::uint64_t n = 0;
  MIXSIEVE_HD std::uint64_t next() {
    ++n;
    return mix64(key + n * 0x9E3779B97F4A7C15ULL);
  }
  // uniform on (0, 1): (2m + 1) 2^-53 for the top 52 bits m
  MIXSIEVE_HD double open_unit() {
    const std::uint64_t one_m = (next() >> 12) | 0x3FF0000000000000ULL;
    return dadd(f64_from_bits(one_m), -0x1.fffffffffffffp-1);  // - (1 - 2^-53)
  }
};

// A standard normal by Marsaglia's polar method (no trigonometry, so no libm differences).
MIXSIEVE_HD inline double normal(ElementStream& rng) {
  for (int tries = 0; tries < 1000; ++tries) {
    const double u = dadd(dmul(2.0, rng.open_unit()), -1.0);
    const double v = dadd(dmul(2.0, rng.open_unit()), -1.0);
    const double s = dadd(dmul(u, u), dmul(v, v));
    if (s < 1.0 && s > 0.0) return dmul(u, dsqrt(ddiv(dmul(-2.0, pm_log(s)), s)));
  }
  return 0.0;  // unreachable in practice: each try is accepted with probability pi/4
}

// log of a Gamma(a, 1) variate for a >= 1 by Marsaglia and Tsang (2000): d = a - 1/3,
// c = 1/sqrt(9d), v = (1 + c x)^3, accept when log u < x^2/2 + d - d v + d log v.
MIXSIEVE_HD inline double log_gamma_ge1(double a, ElementStream& rng) {
  const double d = dadd(a, -1.0 / 3.0);
  const double c = ddiv(1.0, dsqrt(dmul(9.0, d)));
  for (int tries = 0; tries < 1000; ++tries) {
    const double x = normal(rng);
    double v = dadd(1.0, dmul(c, x));
    if (v <= 0.0) continue;
    v = dmul(dmul(v, v), v);
    const double u = rng.open_unit();
    const double log_v = pm_log(v);
    const double bound = dadd(dadd(dmul(0.5, dmul(x, x)), d), dadd(-dmul(d, v), dmul(d, log_v)));
    if (pm_log(u) < bound) return dadd(pm_log(d), log_v);
  }
  return pm_log(dadd(a, -1.0 / 3.0));  // unreachable in practice (acceptance >= 0.95)
}

// log Gamma(a, 1) for any a > 0: for a < 1, Gamma(a) = Gamma(a + 1) * U^(1/a), in log space so
// that tiny a (U^(1/a) far below the smallest double) still compares correctly.
MIXSIEVE_HD inline double log_gamma(double a, ElementStream& rng) {
  if (a >= 1.0) return log_gamma_ge1(a, rng);
  const double g = log_gamma_ge1(dadd(a, 1.0), rng);
  return dadd(g, ddiv(pm_log(rng.open_unit()), a));
}

// Below this alpha, Beta(alpha, alpha) is a fair coin on {0, 1} to within float resolution.
constexpr double kBernoulliAlpha = 1e-3;

// Lambda of element `index` of the draw keyed by `key` (see lambda_key): Beta(alpha, alpha),
// rounded to float and clamped into [0, 1]; with `dominant`, max(lambda, 1 - lambda).
MIXSIEVE_HD inline float sample_lambda(std::uint64_t key, std::uint64_t index, double alpha, bool dominant) {
  ElementStream rng{mix64(key + (index + 1) * 0xD1B54A32D192ED03ULL)};
  float lam;
  if (alpha <= kBernoulliAlpha) {
    lam = (rng.next() >> 63) ? 1.0f : 0.0f;
  } else {
    // lambda = X / (X + Y) = 1 / (1 + exp(log Y - log X))
    const double lx = log_gamma(alpha, rng);
    const double ly = log_gamma(alpha, rng);
    const double diff = dadd(ly, -lx);
    double l;
    if (diff > 0) {
      const double e = pm_exp(-diff);  // in [0, 1): lambda = e / (1 + e)
      l = ddiv(e, dadd(1.0, e));
    } else {
      l = ddiv(1.0, dadd(1.0, pm_exp(diff)));
    }
    lam = static_cast<float>(l);
  }
  lam = lam < 0.0f ? 0.0f : (lam > 1.0f ? 1.0f : lam);
  if (dominant && lam < 0.5f) lam = 1.0f - lam;
  return lam;
}

// The key of a lambda draw: the user's seed and a stream number (e.g. the batch index).
MIXSIEVE_HD inline std::uint64_t lambda_key(std::uint64_t seed, std::uint64_t stream) {
  return mix64(mix64(seed ^ 0x6D69787570ULL) + mix64(stream + 0x9E3779B97F4A7C15ULL));
}

// ---------------------------------------------------------------------------------------------
// The padding policy: effective lambda and keep mask of one token.

enum class Policy : int { Union = 0, AOnly = 1 };

struct TokenMix {
  float lam;  // weight of a's token (1 - lam: b's)
  bool keep;  // the position takes part at all
};

// Union: both valid -> lambda; only a -> 1; only b -> 0; neither -> dropped.
// a-only (SeqMix): a invalid -> dropped; b invalid -> 1.
MIXSIEVE_HD inline TokenMix effective_lambda(float lam, bool va, bool vb, Policy policy) {
  if (va && vb) return {lam, true};
  if (va) return {1.0f, true};
  if (vb && policy == Policy::Union) return {0.0f, true};
  return {0.0f, false};
}

// Token windows [B, T1] (T1 = T + 1), row-major: int64 ids, float32 lambdas and optional uint8
// validity masks (nullptr: all valid), in host or device memory.
struct Windows {
  const std::int64_t* xa;
  const std::int64_t* xb;
  const float* lam;
  const std::uint8_t* va;  // nullptr: every token of a is valid
  const std::uint8_t* vb;
  std::int64_t batch;  // B
  std::int64_t width;  // T1 = T + 1 (>= 2)
  Policy policy;

  MIXSIEVE_HD std::int64_t steps() const { return width - 1; }
  MIXSIEVE_HD bool a_valid(std::int64_t i) const { return va == nullptr || va[i] != 0; }
  MIXSIEVE_HD bool b_valid(std::int64_t i) const { return vb == nullptr || vb[i] != 0; }
  MIXSIEVE_HD TokenMix token(std::int64_t i) const { return effective_lambda(lam[i], a_valid(i), b_valid(i), policy); }
};

// ---------------------------------------------------------------------------------------------
// Two-target cross-entropy of one position.

struct TargetMix {
  float omega;  // weight of target a (1 - omega: target b)
  bool keep;    // the position contributes to the loss
};

// omega from the effective lambda of the target token; a target that is padding or equals
// ignore_index is dropped and the other gets all the weight; both dropped -> position dropped.
MIXSIEVE_HD inline TargetMix target_weight(float omega, bool a_ok, bool b_ok) {
  if (a_ok && b_ok) return {omega, true};
  if (a_ok) return {1.0f, true};
  if (b_ok) return {0.0f, true};
  return {0.0f, false};
}

// The loss of one kept position from its row's max m and log_sum = log sum_v exp(z_v - m)
// (kept apart: m + log_sum would round away log_sum's low bits when |m| is large), the two
// target logits and the mean logit (label smoothing eps):
//   log_sum + (1 - eps) (omega (m - z_a) + (1 - omega) (m - z_b)) + eps (m - mean(z)),
// which is lse - (1 - eps)(omega z_a + (1 - omega) z_b) - eps mean(z). A term whose weight is
// 0 is left out, so an unused target or, with eps = 0, a -inf logit adds no 0 * inf.
template <class M>
MIXSIEVE_HD inline M token_loss(M m, M log_sum, M za, M zb, M mean_z, M omega, M eps) {
  M nll = 0;
  if (omega != M(0)) nll += omega * (m - za);
  if (omega != M(1)) nll += (M(1) - omega) * (m - zb);
  M loss = log_sum + (M(1) - eps) * nll;
  if (eps > M(0)) loss += eps * (m - mean_z);
  return loss;
}

// d loss / d z_v of one kept position, scaled by g (the upstream gradient of that position):
//   g (p_v - (1 - eps)(omega [v = a] + (1 - omega) [v = b]) - eps / V),
// with p_v = exp((z_v - m) - log_sum) (see token_loss).
template <class M>
MIXSIEVE_HD inline M logit_grad(M p, bool is_a, bool is_b, M omega, M eps, M eps_over_v, M g) {
  M target = eps_over_v;
  if (is_a) target += (M(1) - eps) * omega;
  if (is_b) target += (M(1) - eps) * (M(1) - omega);
  return g * (p - target);
}

// The core of fast_expf for a float or a GCC vector of floats (the CPU kernels' lanes), so both
// do the same operations: t = x log2(e) + 1.5 * 2^23 (adding 1.5 * 2^23 rounds to an integer n),
// r = x - n ln 2 in two parts, and e^r as a degree-7 polynomial.
template <class F>
MIXSIEVE_HD inline F expf_poly(F xc, F& t) {
  t = xc * 1.44269504088896341f + 12582912.0f;
  const F n = t - 12582912.0f;
  const F r = (xc - n * 0.693145751953125f) - n * 1.42860682030941723e-06f;
  F p = r * (1.0f / 5040.0f) + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p;
}

// e^x in float for the softmax: a degree-7 polynomial after reduction by ln 2 (about 2 ulp),
// written with selects only, so that loops over it vectorise; 0 below -86.5 (and for -inf),
// +inf above 88.7. NaN gives an unspecified value: callers detect NaN rows themselves.
MIXSIEVE_HD inline float fast_expf(float x) {
  const float hi = 88.7f, lo = -86.5f;
  float xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  float t;
  const float p = expf_poly(xc, t);
  // t = 1.5 * 2^23 + n exactly, so its significand field holds 2^22 + n; n is in [-125, 128]
  const std::int32_t ni = static_cast<std::int32_t>(f32_bits(t) & 0x7FFFFFu) - 0x400000;
  const float scale = f32_from_bits(static_cast<std::uint32_t>(ni + 126) << 23);  // 2^(n-1)
  float y = (p * scale) * 2.0f;
  y = x < lo ? 0.0f : y;
  y = x > hi ? f32_from_bits(0x7F800000u) : y;
  return y;
}

// The softmax probability of logit z in a row with max m and log_sum = log sum exp(z_v - m):
// exp((z - m) - log_sum), with fast_expf in float and exp in double.
MIXSIEVE_HD inline float softmax_p(float z, float m, float log_sum) { return fast_expf((z - m) - log_sum); }
MIXSIEVE_HD inline double softmax_p(double z, double m, double log_sum) { return exp((z - m) - log_sum); }

// One element of the mixed embedding: keep * (lam E[a] + (1 - lam) E[b]).
template <class M>
MIXSIEVE_HD inline M mix_element(M ea, M eb, M lam) {
  return lam * ea + (M(1) - lam) * eb;
}

}  // namespace mixup
}  // namespace mixsieve
