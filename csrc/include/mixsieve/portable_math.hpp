// log and exp written out in basic IEEE-754 double operations (+, -, *, /, comparisons, bit
// casts), so that the CPU and the GPU compute them to the same bits. libm and CUDA's libdevice
// each round log and exp their own way (both within an ulp or so, not always to the same
// double), which would let a key log(u) / w, and with it a sample, differ between the two
// backends. Every sampler whose output must match across backends (A-Res keys, soft-cap race
// keys and weights) calls these instead.
//
// Identity needs each operation rounded once: the translation units that use them are built
// without contraction of a * b + c into fused multiply-adds (-ffp-contract=off on the host,
// --fmad=false for nvcc; see CMakeLists.txt). Accuracy: within 2 ulp of the true value for
// every normal input (tests/test_portable_math.py checks 10^6 inputs against Python's math
// module and a 60-digit decimal reference), which is all a random key needs.
//
// pm_log: x = 2^e * m with m in [sqrt(2)/2, sqrt(2)), then log(m) = 2 atanh(s), s = (m-1)/(m+1),
// |s| < 0.1716, as 2s + s * R(s^2) with R the atanh Taylor series to the s^24 term (truncation
// below 2^-60), and e * log(2) added in two parts (Cody and Waite), hi exact in the product.
// pm_exp: x = k log(2) + r, |r| <= log(2)/2, exp(r) by its Taylor series to r^13 (truncation
// below 2^-57), scaled by 2^k in exact steps (two for results that are subnormal).
#pragma once

#include <cstdint>
#include <cstring>

#include "mixsieve/hd.hpp"

namespace mixsieve {

namespace pm_detail {

MIXSIEVE_HD inline std::uint64_t bits_of(double x) {
  std::uint64_t b;
  std::memcpy(&b, &x, sizeof(b));
  return b;
}
MIXSIEVE_HD inline double from_bits(std::uint64_t b) {
  double x;
  std::memcpy(&x, &b, sizeof(x));
  return x;
}
// 2^e for -1022 <= e <= 1023, exactly.
MIXSIEVE_HD inline double inf() { return from_bits(0x7FF0000000000000ULL); }
MIXSIEVE_HD inline double nan() { return from_bits(0x7FF8000000000000ULL); }
MIXSIEVE_HD inline double pow2(int e) { return from_bits(static_cast<std::uint64_t>(e + 1023) << 52); }

// log(2) = kLn2Hi + kLn2Lo; kLn2Hi has 21 significant bits, so e * kLn2Hi is exact for |e| < 2^32.
constexpr double kLn2Hi = 0x1.62e42p-1;
constexpr double kLn2Lo = 0x1.fdf473de6af28p-22;
constexpr double kInvLn2 = 0x1.71547652b82fep+0;
constexpr double kSqrt2 = 0x1.6a09e667f3bcdp+0;

}  // namespace pm_detail

// The natural logarithm: -inf for 0, NaN for negative numbers and NaN, +inf for +inf.
MIXSIEVE_HD inline double pm_log(double x) {
  using namespace pm_detail;
  if (!(x > 0.0)) return x == 0.0 ? -inf() : nan();
  if (x == inf()) return x;
  std::uint64_t b = bits_of(x);
  int e = static_cast<int>(b >> 52) - 1023;
  if (e == -1023) {  // subnormal: scale by 2^54 first (exact)
    b = bits_of(x * 0x1p54);
    e = static_cast<int>(b >> 52) - 1023 - 54;
  }
  double m = from_bits((b & 0x000FFFFFFFFFFFFFULL) | 0x3FF0000000000000ULL);  // [1, 2)
  if (m > kSqrt2) {
    m *= 0.5;  // exact
    ++e;
  }
  const double f = m - 1.0;  // exact (Sterbenz)
  const double s = f / (2.0 + f);
  const double z = s * s;
  // R(z) = sum_{j >= 1} 2 z^j / (2j + 1), j <= 12
  double r = 0x1.47ae147ae147bp-4;  // 2/25
  r = r * z + 0x1.642c8590b2164p-4;  // 2/23
  r = r * z + 0x1.8618618618618p-4;  // 2/21
  r = r * z + 0x1.af286bca1af28p-4;  // 2/19
  r = r * z + 0x1.e1e1e1e1e1e1ep-4;  // 2/17
  r = r * z + 0x1.1111111111111p-3;  // 2/15
  r = r * z + 0x1.3b13b13b13b14p-3;  // 2/13
  r = r * z + 0x1.745d1745d1746p-3;  // 2/11
  r = r * z + 0x1.c71c71c71c71cp-3;  // 2/9
  r = r * z + 0x1.2492492492492p-2;  // 2/7
  r = r * z + 0x1.999999999999ap-2;  // 2/5
  r = r * z + 0x1.5555555555555p-1;  // 2/3
  r = r * z;
  const double de = static_cast<double>(e);
  return de * kLn2Hi + ((2.0 * s + s * r) + de * kLn2Lo);
}

// e^x: 0 below -745.14, +inf above 709.79, NaN for NaN.
MIXSIEVE_HD inline double pm_exp(double x) {
  using namespace pm_detail;
  if (x != x) return x;
  if (x > 709.782712893384) return inf();
  if (x < -745.1332191019412) return 0.0;
  // k = nearest integer to x / log(2), found by truncation of a value kept positive
  const double t = x * kInvLn2;
  int k = static_cast<int>(t >= 0.0 ? t + 0.5 : t - 0.5);
  const double dk = static_cast<double>(k);
  const double r = (x - dk * kLn2Hi) - dk * kLn2Lo;
  double p = 0x1.6124613a86d09p-33;  // 1/13!
  p = p * r + 0x1.1eed8eff8d898p-29;  // 1/12!
  p = p * r + 0x1.ae64567f544e4p-26;  // 1/11!
  p = p * r + 0x1.27e4fb7789f5cp-22;  // 1/10!
  p = p * r + 0x1.71de3a556c734p-19;  // 1/9!
  p = p * r + 0x1.a01a01a01a01ap-16;  // 1/8!
  p = p * r + 0x1.a01a01a01a01ap-13;  // 1/7!
  p = p * r + 0x1.6c16c16c16c17p-10;  // 1/6!
  p = p * r + 0x1.1111111111111p-7;   // 1/5!
  p = p * r + 0x1.5555555555555p-5;   // 1/4!
  p = p * r + 0x1.5555555555555p-3;   // 1/3!
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;  // e^r, in (0.70, 1.42)
  if (k > 1023) return p * 2.0 * pow2(k - 1);
  if (k >= -1022) return p * pow2(k);
  return p * pow2(k + 54) * 0x1p-54;  // subnormal: one rounding, in the last step
}

}  // namespace mixsieve
