// Counter-based randomness: every random value is a pure function of (seed, counter), never
// of global state or call order, so results do not depend on threads or batching.
#pragma once

#include <cstdint>
#include <cstring>

#include "mixsieve/hd.hpp"

namespace mixsieve {

// SplitMix64's constants (Steele, Lea, Flood 2014): the counter step and the two multipliers
// of the output function. Vector kernels that compute the same function use them too.
inline constexpr std::uint64_t kSplitMixGamma = 0x9E3779B97F4A7C15ULL;
inline constexpr std::uint64_t kSplitMixMul1 = 0xBF58476D1CE4E5B9ULL;
inline constexpr std::uint64_t kSplitMixMul2 = 0x94D049BB133111EBULL;

// The SplitMix64 output function: a bijective 64-bit mixer.
MIXSIEVE_HD inline constexpr std::uint64_t splitmix64_mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * kSplitMixMul1;
  z = (z ^ (z >> 27)) * kSplitMixMul2;
  return z ^ (z >> 31);
}

// The i-th output of a SplitMix64 stream started at `seed` (i = 0 is the first output).
MIXSIEVE_HD inline constexpr std::uint64_t splitmix64_at(std::uint64_t seed, std::uint64_t i) {
  return splitmix64_mix(seed + (i + 1) * kSplitMixGamma);
}

}  // namespace mixsieve

namespace mixsieve {

// Streams of the sampling kernels: each kind of random draw has its own, so no two kernels
// (or two uses inside one) ever reuse a number.
enum class Stream : std::uint64_t {
  AresKey = 1,
  ExpJ = 2,
  PpsEnter = 3,
  PpsEvict = 4,
  WithReplacement = 5,
  SoftCap = 6,
  MixChoice = 7,
  MixShuffle = 8,
  BufferShuffle = 9,
};

// The key of stream `s` under `seed`: counter i of that stream is splitmix64_mix(key + (i+1)*gamma).
MIXSIEVE_HD inline constexpr std::uint64_t stream_key(std::uint64_t seed, Stream s, std::uint64_t sub = 0) {
  return splitmix64_mix(seed ^ splitmix64_mix(static_cast<std::uint64_t>(s) * 0xD1B54A32D192ED03ULL +
                                              sub * 0x8CB92BA72F3D8DD7ULL));
}

MIXSIEVE_HD inline constexpr std::uint64_t stream_bits(std::uint64_t key, std::uint64_t i) { return splitmix64_at(key, i); }

// Uniform on the open interval (0, 1): (2m + 1) * 2^-53 for the top 52 bits m, never 0 (log)
// and never 1 (log of log). Built by bit-cast, not an int-to-double conversion, so loops
// over it vectorise on any x86-64; the subtraction is exact.
MIXSIEVE_HD inline double open_unit(std::uint64_t bits) {
  const std::uint64_t one_m = (bits >> 12) | 0x3FF0000000000000ULL;  // 1 + m * 2^-52
  double x;
  std::memcpy(&x, &one_m, sizeof(x));
  return x - 0x1.fffffffffffffp-1;  // - (1 - 2^-53)
}

}  // namespace mixsieve
