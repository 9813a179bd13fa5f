// xxh64: the base hash of every shingle and band key. Written from the public xxHash
// specification; tests check it bit for bit against the `xxhash` Python package. The CUDA
// MinHash kernels call these same functions (MIXSIEVE_HD).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "mixsieve/hd.hpp"

namespace mixsieve {

namespace xxh64_detail {

inline constexpr std::uint64_t kP1 = 0x9E3779B185EBCA87ULL;
inline constexpr std::uint64_t kP2 = 0xC2B2AE3D27D4EB4FULL;
inline constexpr std::uint64_t kP3 = 0x165667B19E3779F9ULL;
inline constexpr std::uint64_t kP4 = 0x85EBCA77C2B2AE63ULL;
inline constexpr std::uint64_t kP5 = 0x27D4EB2F165667C5ULL;

MIXSIEVE_HD inline std::uint64_t rotl(std::uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// Unaligned little-endian loads; memcpy compiles to a single mov on x86-64.
MIXSIEVE_HD inline std::uint64_t load64(const unsigned char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
MIXSIEVE_HD inline std::uint32_t load32(const unsigned char* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

MIXSIEVE_HD inline std::uint64_t round(std::uint64_t acc, std::uint64_t input) {
  acc += input * kP2;
  acc = rotl(acc, 31);
  return acc * kP1;
}

MIXSIEVE_HD inline std::uint64_t merge_round(std::uint64_t acc, std::uint64_t val) {
  acc ^= round(0, val);
  return acc * kP1 + kP4;
}

MIXSIEVE_HD inline std::uint64_t avalanche(std::uint64_t h) {
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

}  // namespace xxh64_detail

// The 64-bit xxHash of `len` bytes at `data` with `seed`.
MIXSIEVE_HD inline std::uint64_t xxh64(const void* data, std::size_t len, std::uint64_t seed) {
  using namespace xxh64_detail;
  const auto* p = static_cast<const unsigned char*>(data);
  const unsigned char* const end = p + len;
  std::uint64_t h;
  if (len >= 32) {
    std::uint64_t v1 = seed + kP1 + kP2;
    std::uint64_t v2 = seed + kP2;
    std::uint64_t v3 = seed;
    std::uint64_t v4 = seed - kP1;
    const unsigned char* const limit = end - 32;
    do {
      v1 = round(v1, load64(p));
      v2 = round(v2, load64(p + 8));
      v3 = round(v3, load64(p + 16));
      v4 = round(v4, load64(p + 24));
      p += 32;
    } while (p <= limit);
    h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
    h = merge_round(h, v1);
    h = merge_round(h, v2);
    h = merge_round(h, v3);
    h = merge_round(h, v4);
  } else {
    h = seed + kP5;
  }
  h += static_cast<std::uint64_t>(len);
  while (p + 8 <= end) {
    h ^= round(0, load64(p));
    h = rotl(h, 27) * kP1 + kP4;
    p += 8;
  }
  if (p + 4 <= end) {
    h ^= static_cast<std::uint64_t>(load32(p)) * kP1;
    h = rotl(h, 23) * kP2 + kP3;
    p += 4;
  }
  while (p < end) {
    h ^= static_cast<std::uint64_t>(*p) * kP5;
    h = rotl(h, 11) * kP1;
    ++p;
  }
  return avalanche(h);
}

// xxh64 of the same bytes under two seeds, in one pass: out[0] = xxh64(data, len, seed0),
// out[1] = xxh64(data, len, seed1). The two chains are independent, so the processor overlaps
// them: about the cost of one call, not two.
MIXSIEVE_HD inline void xxh64_pair(const void* data, std::size_t len, std::uint64_t seed0, std::uint64_t seed1,
                       std::uint64_t out[2]) {
  using namespace xxh64_detail;
  const auto* p = static_cast<const unsigned char*>(data);
  const unsigned char* const end = p + len;
  std::uint64_t h[2];
  const std::uint64_t seeds[2] = {seed0, seed1};
  if (len >= 32) {
    std::uint64_t v[2][4];
    for (int j = 0; j < 2; ++j) {
      v[j][0] = seeds[j] + kP1 + kP2;
      v[j][1] = seeds[j] + kP2;
      v[j][2] = seeds[j];
      v[j][3] = seeds[j] - kP1;
    }
    const unsigned char* const limit = end - 32;
    do {
      const std::uint64_t a = load64(p), b = load64(p + 8), c = load64(p + 16), d = load64(p + 24);
      for (int j = 0; j < 2; ++j) {
        v[j][0] = round(v[j][0], a);
        v[j][1] = round(v[j][1], b);
        v[j][2] = round(v[j][2], c);
        v[j][3] = round(v[j][3], d);
      }
      p += 32;
    } while (p <= limit);
    for (int j = 0; j < 2; ++j) {
      std::uint64_t x = rotl(v[j][0], 1) + rotl(v[j][1], 7) + rotl(v[j][2], 12) + rotl(v[j][3], 18);
      for (int q = 0; q < 4; ++q) x = merge_round(x, v[j][q]);
      h[j] = x;
    }
  } else {
    h[0] = seed0 + kP5;
    h[1] = seed1 + kP5;
  }
  for (int j = 0; j < 2; ++j) h[j] += static_cast<std::uint64_t>(len);
  while (p + 8 <= end) {
    const std::uint64_t k1 = round(0, load64(p));
    for (int j = 0; j < 2; ++j) h[j] = rotl(h[j] ^ k1, 27) * kP1 + kP4;
    p += 8;
  }
  if (p + 4 <= end) {
    const std::uint64_t k1 = static_cast<std::uint64_t>(load32(p)) * kP1;
    for (int j = 0; j < 2; ++j) h[j] = rotl(h[j] ^ k1, 23) * kP2 + kP3;
    p += 4;
  }
  while (p < end) {
    const std::uint64_t k1 = static_cast<std::uint64_t>(*p) * kP5;
    for (int j = 0; j < 2; ++j) h[j] = rotl(h[j] ^ k1, 11) * kP1;
    ++p;
  }
  out[0] = avalanche(h[0]);
  out[1] = avalanche(h[1]);
}

// xxh64 of exactly N bytes: the same function with the length known at compile time, so its
// loops unroll and its length branches fold away (for callers that group inputs by length).
template <std::size_t N>
MIXSIEVE_HD inline std::uint64_t xxh64_fixed(const void* data, std::uint64_t seed) {
  return xxh64(data, N, seed);
}

}  // namespace mixsieve
