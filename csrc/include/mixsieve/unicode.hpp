// UTF-8 decoding and the character classes behind mixsieve's text normalisation. The
// classification reads its tables through a view (UnicodeTables), so the CPU and the CUDA
// kernels (csrc/cuda/minhash.cu, over a device copy of the same bytes) run the same functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "mixsieve/hd.hpp"

namespace mixsieve {

namespace unicode_detail {
#include "mixsieve/unicode_tables.inc"
}  // namespace unicode_detail

inline const char* unicode_version() { return MIXSIEVE_UNICODE_VERSION; }

// Where the classification finds its tables: flags and lower-case mappings for the Basic
// Multilingual Plane, looked up directly, and for astral code points the generated ranges
// (binary search).
struct UnicodeTables {
  const std::uint8_t* bmp_word;      // 0x10000 flags: general category L, M or N
  const std::uint16_t* bmp_lower;    // 0x10000 simple lower-case mappings
  const std::uint32_t* word_ranges;  // n_ranges inclusive [first, last] pairs, sorted
  std::uint32_t n_ranges;
  const std::uint32_t* lower_pairs;  // n_pairs [code point, lower case] pairs, sorted
  std::uint32_t n_pairs;
};

// All the tables in one block of bytes (a CUDA device gets a copy of it), at fixed offsets.
struct UnicodeBlob {
  static constexpr std::uint32_t kRanges = sizeof(unicode_detail::kWordRanges) / (2 * sizeof(std::uint32_t));
  static constexpr std::uint32_t kPairs = sizeof(unicode_detail::kLowerPairs) / (2 * sizeof(std::uint32_t));
  static constexpr std::size_t kWordAt = 0;
  static constexpr std::size_t kLowerAt = 0x10000;
  static constexpr std::size_t kRangesAt = kLowerAt + 2 * 0x10000;
  static constexpr std::size_t kPairsAt = kRangesAt + 8 * std::size_t{kRanges};
  static constexpr std::size_t kBytes = kPairsAt + 8 * std::size_t{kPairs};

  // The blob's bytes, built from the generated tables.
  static std::vector<unsigned char> build() {
    using namespace unicode_detail;
    std::vector<unsigned char> blob(kBytes, 0);
    auto* lower = reinterpret_cast<std::uint16_t*>(blob.data() + kLowerAt);
    for (std::uint32_t c = 0; c < 0x10000; ++c) lower[c] = static_cast<std::uint16_t>(c);
    for (const auto& r : kWordRanges) {
      for (std::uint32_t c = r[0]; c <= r[1] && c < 0x10000; ++c) blob[kWordAt + c] = 1;
    }
    for (const auto& p : kLowerPairs) {
      if (p[0] < 0x10000) lower[p[0]] = static_cast<std::uint16_t>(p[1]);
    }
    std::memcpy(blob.data() + kRangesAt, kWordRanges, sizeof(kWordRanges));
    std::memcpy(blob.data() + kPairsAt, kLowerPairs, sizeof(kLowerPairs));
    return blob;
  }

  // The view of a blob at `base` (a host or a device address: only pointer arithmetic here).
  static UnicodeTables view(const void* base) {
    const auto* b = static_cast<const unsigned char*>(base);
    return {b + kWordAt,
            reinterpret_cast<const std::uint16_t*>(b + kLowerAt),
            reinterpret_cast<const std::uint32_t*>(b + kRangesAt),
            kRanges,
            reinterpret_cast<const std::uint32_t*>(b + kPairsAt),
            kPairs};
  }
};

// The CPU's tables, built once.
inline const UnicodeTables& host_unicode_tables() {
  static const std::vector<unsigned char> blob = UnicodeBlob::build();
  static const UnicodeTables view = UnicodeBlob::view(blob.data());
  return view;
}

// True when `cp` belongs to a word: general category L (letters), M (marks) or N (numbers).
MIXSIEVE_HD inline bool is_word_char(std::uint32_t cp, const UnicodeTables& t) {
  if (cp < 0x10000) return t.bmp_word[cp] != 0;
  std::uint32_t lo = 0, hi = t.n_ranges;  // the first range starting after cp
  while (lo < hi) {
    const std::uint32_t mid = (lo + hi) / 2;
    if (t.word_ranges[2 * mid] <= cp) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo > 0 && cp <= t.word_ranges[2 * (lo - 1) + 1];
}

// Simple one-to-one lower-case mapping (the code point itself when there is none).
MIXSIEVE_HD inline std::uint32_t to_lower(std::uint32_t cp, const UnicodeTables& t) {
  if (cp < 0x10000) return t.bmp_lower[cp];
  std::uint32_t lo = 0, hi = t.n_pairs;  // the first pair not below cp
  while (lo < hi) {
    const std::uint32_t mid = (lo + hi) / 2;
    if (t.lower_pairs[2 * mid] < cp) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo < t.n_pairs && t.lower_pairs[2 * lo] == cp ? t.lower_pairs[2 * lo + 1] : cp;
}

inline bool is_word_char(std::uint32_t cp) { return is_word_char(cp, host_unicode_tables()); }
inline std::uint32_t to_lower(std::uint32_t cp) { return to_lower(cp, host_unicode_tables()); }

inline constexpr std::uint32_t kReplacementChar = 0xFFFD;

// Decodes one code point at `p` (p < end). Invalid input yields U+FFFD and consumes the
// maximal subpart of an ill-formed sequence (at least one byte), as Python's
// `bytes.decode("utf-8", "replace")` does, so both agree on where the next character starts.
MIXSIEVE_HD inline std::uint32_t decode_utf8(const unsigned char*& p, const unsigned char* end) {
  const unsigned char b0 = *p++;
  if (b0 < 0x80) return b0;
  int need;
  std::uint32_t cp;
  unsigned char lo = 0x80, hi = 0xBF;  // valid range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return kReplacementChar;
  }
  for (int i = 0; i < need; ++i) {
    if (p == end) return kReplacementChar;
    const unsigned char b = *p;
    if (b < lo || b > hi) return kReplacementChar;
    lo = 0x80;
    hi = 0xBF;
    cp = (cp << 6) | (b & 0x3F);
    ++p;
  }
  return cp;
}

// decode_utf8, also saying whether the bytes were well-formed UTF-8 (a literal U+FFFD is; an
// ill-formed sequence, even one of three bytes such as a truncated 4-byte one, is not).
inline std::uint32_t decode_utf8_checked(const unsigned char*& p, const unsigned char* end, bool& ok) {
  const unsigned char* start = p;
  const std::uint32_t cp = decode_utf8(p, end);
  ok = cp != kReplacementChar || (p - start == 3 && start[0] == 0xEF && start[1] == 0xBF && start[2] == 0xBD);
  return cp;
}

// Bytes of cp in UTF-8 (what put_utf8 writes).
MIXSIEVE_HD inline int utf8_length(std::uint32_t cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

// Writes cp as UTF-8 at w (room for 4 bytes) and returns the position after it.
MIXSIEVE_HD inline char* put_utf8(char* w, std::uint32_t cp) {
  if (cp < 0x80) {
    *w++ = static_cast<char>(cp);
  } else if (cp < 0x800) {
    *w++ = static_cast<char>(0xC0 | (cp >> 6));
    *w++ = static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *w++ = static_cast<char>(0xE0 | (cp >> 12));
    *w++ = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *w++ = static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    *w++ = static_cast<char>(0xF0 | (cp >> 18));
    *w++ = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    *w++ = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    *w++ = static_cast<char>(0x80 | (cp & 0x3F));
  }
  return w;
}

}  // namespace mixsieve
