// Double-precision log and exp written out in basic IEEE-754 operations (+, -, *, /, bit casts),
// each rounded once, so that the CPU and the GPU compute them to the same bits. libm and CUDA's
// math library each round log and exp their own way (both within an ulp or so, not always to
// the same double), which would let a lambda (mixup), a key log(u) / w (A-Res) or a race
// weight (soft-cap) differ between the two backends. Every kernel whose output must match
// across backends calls these.
//
// No fused multiply-add: on the device the _rn intrinsics forbid contraction; on the host the
// kernels are compiled with -ffp-contract=off for baseline x86-64 (CMakeLists.txt).
// Accuracy: within 2 ulp for every finite input (tests/test_portable_math.py checks 10^6
// inputs against a 40-digit decimal reference).
#pragma once

#include <cstdint>
#include <cstring>

#include "mixsieve/hd.hpp"

namespace mixsieve {

MIXSIEVE_HD inline std::uint64_t f64_bits(double x) {
#if defined(__CUDA_ARCH__)
  return static_cast<std::uint64_t>(__double_as_longlong(x));
#else
  std::uint64_t u;
  std::memcpy(&u, &x, sizeof(u));
  return u;
#endif
}

MIXSIEVE_HD inline double f64_from_bits(std::uint64_t u) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(u));
#else
  double x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
#endif
}

// +infinity, as a bit pattern (HUGE_VAL is not a device constant everywhere).
MIXSIEVE_HD inline double pm_inf() { return f64_from_bits(0x7FF0000000000000ULL); }

MIXSIEVE_HD inline double dmul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
MIXSIEVE_HD inline double dadd(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
MIXSIEVE_HD inline double ddiv(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
MIXSIEVE_HD inline double dsqrt(double a) {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(a);
#else
  return __builtin_sqrt(a);  // IEEE correctly rounded, like __dsqrt_rn
#endif
}

// Natural log, within 2 ulps for finite x > 0 (what the kernels pass); -inf for 0, NaN for
// negative numbers and NaN, +inf for +inf.
// x = 2^k * m with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172,
// summed as the atanh series to s^23 (the next term is below 2^-60 of the result).
MIXSIEVE_HD inline double pm_log(double x) {
  if (!(x > 0.0)) return x == 0.0 ? -pm_inf() : f64_from_bits(0x7FF8000000000000ULL);
  if (x == pm_inf()) return x;
  std::uint64_t u = f64_bits(x);
  int k = 0;
  if ((u >> 52) == 0) {  // subnormal: scale into the normal range first
    x = dmul(x, 18014398509481984.0);  // 2^54
    u = f64_bits(x);
    k = -54;
  }
  k += static_cast<int>((u >> 52) & 0x7FF) - 1023;
  double m = f64_from_bits((u & 0x000FFFFFFFFFFFFFULL) | 0x3FF0000000000000ULL);  // [1, 2)
  if (m > 1.4142135623730951) {
    m = dmul(m, 0.5);
    ++k;
  }
  const double s = ddiv(dadd(m, -1.0), dadd(m, 1.0));
  const double s2 = dmul(s, s);
  double poly = 1.0 / 23.0;
  poly = dadd(dmul(poly, s2), 1.0 / 21.0);
  poly = dadd(dmul(poly, s2), 1.0 / 19.0);
  poly = dadd(dmul(poly, s2), 1.0 / 17.0);
  poly = dadd(dmul(poly, s2), 1.0 / 15.0);
  poly = dadd(dmul(poly, s2), 1.0 / 13.0);
  poly = dadd(dmul(poly, s2), 1.0 / 11.0);
  poly = dadd(dmul(poly, s2), 1.0 / 9.0);
  poly = dadd(dmul(poly, s2), 1.0 / 7.0);
  poly = dadd(dmul(poly, s2), 1.0 / 5.0);
  poly = dadd(dmul(poly, s2), 1.0 / 3.0);
  // log m = 2s + 2s^3 * poly
  const double log_m = dadd(dmul(2.0, s), dmul(dmul(2.0, dmul(s, s2)), poly));
  // k * ln 2 in two parts (the high part has 32 significant bits, so k * hi is exact)
  const double ln2_hi = 6.93147180369123816490e-01;
  const double ln2_lo = 1.90821492927058770002e-10;
  const double kd = static_cast<double>(k);
  return dadd(dmul(kd, ln2_hi), dadd(log_m, dmul(kd, ln2_lo)));
}

// e^x within 2 ulps; 0 below -745.2, +inf above 709.78.
MIXSIEVE_HD inline double pm_exp(double x) {
  if (x != x) return x;
  if (x < -745.2) return 0.0;
  if (x > 709.78) return f64_from_bits(0x7FF0000000000000ULL);
  // k = round(x / ln 2); r = x - k ln 2 in [-0.347, 0.347]
  const double t = dmul(x, 1.4426950408889634);
  const double kd = t >= 0 ? static_cast<double>(static_cast<long long>(dadd(t, 0.5)))
                           : -static_cast<double>(static_cast<long long>(dadd(-t, 0.5)));
  const double ln2_hi = 6.93147180369123816490e-01;
  const double ln2_lo = 1.90821492927058770002e-10;
  const double r = dadd(dadd(x, -dmul(kd, ln2_hi)), -dmul(kd, ln2_lo));
  // Taylor series to r^14 / 14! (the next term is below 2^-60)
  double poly = 1.0 / 87178291200.0;  // 1/14!
  const double inv_fact[14] = {1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                               1.0 / 362880.0,     1.0 / 40320.0,     1.0 / 5040.0,     1.0 / 720.0,
                               1.0 / 120.0,        1.0 / 24.0,        1.0 / 6.0,        0.5,
                               1.0,                1.0};
  for (int i = 0; i < 14; ++i) poly = dadd(dmul(poly, r), inv_fact[i]);
  // scale by 2^k in two steps so that k down to -1075 and up to 1024 stay exact
  const int k = static_cast<int>(kd);
  const int k1 = k / 2;
  const int k2 = k - k1;
  const double p1 = f64_from_bits(static_cast<std::uint64_t>(1023 + k1) << 52);
  const double p2 = f64_from_bits(static_cast<std::uint64_t>(1023 + k2) << 52);
  return dmul(dmul(poly, p1), p2);
}

}  // namespace mixsieve
