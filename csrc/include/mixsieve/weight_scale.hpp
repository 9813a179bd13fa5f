// Power-of-two rescaling of weights, for the samplers whose arithmetic would otherwise leave
// the double range: sums of weights near 1e308 overflow, keys log(u) / w of weights near
// 1e308 underflow, and subnormal weights keep only a few bits through a division. Multiplying
// every weight by the same power of two changes no probability and, while every quantity
// stays a normal double, rounds exactly as before, so results keep their bytes. Weights whose
// largest value lies in the ordinary range are never rescaled.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace mixsieve {

// Largest values in [2^-kOrdinaryExponent, 2^kOrdinaryExponent] are used as they are.
inline constexpr int kOrdinaryExponent = 256;

// w * 2^-e in two exact steps: 2^-e alone is not a double for |e| > 1022.
class PowerScale {
 public:
  explicit PowerScale(int e = 0) : e_(e), f1_(std::ldexp(1.0, -(e / 2))), f2_(std::ldexp(1.0, -(e - e / 2))) {}
  int exponent() const { return e_; }
  double operator()(double w) const { return w * f1_ * f2_; }

 private:
  int e_;
  double f1_, f2_;
};

// The exponent e that brings a largest weight `max` into [1, 2) by w * 2^-e, or 0 when `max`
// is in the ordinary range (or not a positive finite number).
inline int weight_exponent(double max) {
  if (!(max > 0.0) || !(max <= std::numeric_limits<double>::max())) return 0;
  const int e = std::ilogb(max);
  return (e > kOrdinaryExponent || e < -kOrdinaryExponent) ? e : 0;
}

// A key log(u) / w that the double comparisons can order exactly: finite and normal.
inline bool normal_key(double key) { return key <= -std::numeric_limits<double>::min() && key > -std::numeric_limits<double>::infinity(); }

}  // namespace mixsieve
