// UTF-8 decoding and the character classes behind mixsieve's text normalisation.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace mixsieve {

namespace unicode_detail {
#include "mixsieve/unicode_tables.inc"

// Lookup tables for the Basic Multilingual Plane, built once; astral code points fall back
// to binary search over the generated ranges.
struct BmpTables {
  std::vector<std::uint8_t> is_word;   // 65536 flags
  std::vector<std::uint16_t> lower;    // 65536 code points
  BmpTables() : is_word(0x10000, 0), lower(0x10000) {
    for (std::uint32_t c = 0; c < 0x10000; ++c) lower[c] = static_cast<std::uint16_t>(c);
    for (const auto& r : kWordRanges) {
      for (std::uint32_t c = r[0]; c <= r[1] && c < 0x10000; ++c) is_word[c] = 1;
    }
    for (const auto& p : kLowerPairs) {
      if (p[0] < 0x10000) lower[p[0]] = static_cast<std::uint16_t>(p[1]);
    }
  }
};

inline const BmpTables& bmp() {
  static const BmpTables tables;
  return tables;
}

}  // namespace unicode_detail

inline const char* unicode_version() { return MIXSIEVE_UNICODE_VERSION; }

// True when `cp` belongs to a word: general category L (letters), M (marks) or N (numbers).
inline bool is_word_char(std::uint32_t cp) {
  using namespace unicode_detail;
  if (cp < 0x10000) return bmp().is_word[cp] != 0;
  const auto* first = std::begin(kWordRanges);
  const auto* last = std::end(kWordRanges);
  const auto* it = std::upper_bound(first, last, cp,
                                    [](std::uint32_t v, const std::uint32_t(&r)[2]) { return v < r[0]; });
  return it != first && cp <= (*(it - 1))[1];
}

// Simple one-to-one lower-case mapping (the code point itself when there is none).
inline std::uint32_t to_lower(std::uint32_t cp) {
  using namespace unicode_detail;
  if (cp < 0x10000) return bmp().lower[cp];
  const auto* first = std::begin(kLowerPairs);
  const auto* last = std::end(kLowerPairs);
  const auto* it = std::lower_bound(first, last, cp,
                                    [](const std::uint32_t(&p)[2], std::uint32_t v) { return p[0] < v; });
  return (it != last && (*it)[0] == cp) ? (*it)[1] : cp;
}

inline constexpr std::uint32_t kReplacementChar = 0xFFFD;

// Decodes one code point at `p` (p < end). Invalid input yields U+FFFD and consumes the
// maximal subpart of an ill-formed sequence (at least one byte), as Python's
// `bytes.decode("utf-8", "replace")` does, so both agree on where the next character starts.
inline std::uint32_t decode_utf8(const unsigned char*& p, const unsigned char* end) {
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

// Writes cp as UTF-8 at w (room for 4 bytes) and returns the position after it.
inline char* put_utf8(char* w, std::uint32_t cp) {
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
