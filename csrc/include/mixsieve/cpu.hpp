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

// The vector level the hand-written kernels may use: 2 = AVX-512 (F, DQ, VL), 1 = AVX2 with
// FMA, 0 = neither (or not x86-64).
inline int cpu_vector_level() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const int level = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                                   __builtin_cpu_supports("avx512vl")
                               ? 2
                               : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0);
  return level;
#else
  return 0;
#endif
}

// The widest MinHash path (tokeniser and permutation min) this CPU runs: 2 = AVX-512 (F, DQ,
// VL, BW), 1 = AVX2, 0 = scalar. All give the same bytes; tests force each with minhash_forced_level().
inline int minhash_cpu_level() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const int level =
      cpu_vector_level() == 2 && __builtin_cpu_supports("avx512bw") ? 2 : (cpu_has_avx2() ? 1 : 0);
  return level;
#else
  return 0;
#endif
}

// Test hook: -1 picks the widest level; 0, 1 or 2 force one (capped at what the CPU runs).
inline int& minhash_forced_level() {
  static int level = -1;
  return level;
}

inline int minhash_level() {
  const int f = minhash_forced_level();
  return f < 0 ? minhash_cpu_level() : (f < minhash_cpu_level() ? f : minhash_cpu_level());
}

inline const char* vector_level_name(int level) { return level == 2 ? "avx512" : level == 1 ? "avx2" : "scalar"; }

}  // namespace mixsieve
