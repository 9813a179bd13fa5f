// Counter-based randomness: every random value is a pure function of (seed, counter), never
// of global state or call order, so results do not depend on threads or batching.
#pragma once

#include <cstdint>

namespace mixsieve {

// The SplitMix64 output function (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
inline constexpr std::uint64_t splitmix64_mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// The i-th output of a SplitMix64 stream started at `seed` (i = 0 is the first output).
inline constexpr std::uint64_t splitmix64_at(std::uint64_t seed, std::uint64_t i) {
  return splitmix64_mix(seed + (i + 1) * 0x9E3779B97F4A7C15ULL);
}

}  // namespace mixsieve
