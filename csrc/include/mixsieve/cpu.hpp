// Run-time CPU feature detection: the wheel targets baseline x86-64 and picks wider paths here.
#pragma once

namespace mixsieve {

inline bool cpu_has_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
#else
  return false;
#endif
}

inline const char* simd_level() { return cpu_has_avx2() ? "avx2" : "scalar"; }

}  // namespace mixsieve
