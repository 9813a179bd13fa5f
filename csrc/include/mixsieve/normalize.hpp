// Text normalisation and shingling: the single definition of which shingles a document has.
// tests/oracles.py restates these rules in plain Python; the two must agree bit for bit.
//
// Rules: UTF-8 is decoded (ill-formed bytes become U+FFFD, as Python's "replace" does).
// A word is a maximal run of characters of general category L, M or N; every other
// character (punctuation, symbols, spaces, controls, U+FFFD) separates words. Word characters
// are lower-cased with the simple one-to-one mapping. The normalised text is the words joined
// by one ASCII space. Word shingles are `ngram` consecutive words joined by one space; char
// shingles are `ngram` consecutive code points of the normalised text. A text with fewer
// units than `ngram` has one shingle (all of it); a text with no words has none.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "mixsieve/unicode.hpp"

namespace mixsieve {

enum class Unit : int { Word = 0, Char = 1 };

struct Normalized {
  std::vector<char> text;               // normalised UTF-8 bytes (capacity reused)
  std::size_t size = 0;                 // bytes used in `text`
  std::vector<std::size_t> word_start;  // byte offset of each word
  std::vector<std::size_t> word_end;    // one past each word's last byte
};

namespace normalize_detail {

// For ASCII bytes: the lower-cased byte for letters and digits, 0 for separators.
struct AsciiTable {
  unsigned char map[128];
  constexpr AsciiTable() : map() {
    for (int c = 0; c < 128; ++c) {
      const bool digit = c >= '0' && c <= '9';
      const bool lower = c >= 'a' && c <= 'z';
      const bool upper = c >= 'A' && c <= 'Z';
      map[c] = static_cast<unsigned char>(upper ? c + 32 : (digit || lower) ? c : 0);
    }
  }
};
inline constexpr AsciiTable kAscii{};

}  // namespace normalize_detail

inline void normalize(const char* data, std::size_t len, Normalized& out) {
  // Lower-casing can lengthen a character by at most half (2 -> 3 bytes), plus separators.
  if (out.text.size() < 2 * len + 4) out.text.resize(2 * len + 4);
  out.word_start.clear();
  out.word_end.clear();
  char* const base = out.text.data();
  char* w = base;
  bool in_word = false;
  const auto* p = reinterpret_cast<const unsigned char*>(data);
  const auto* const end = p + len;
  auto begin_word = [&] {
    if (!out.word_start.empty()) *w++ = ' ';
    out.word_start.push_back(static_cast<std::size_t>(w - base));
    in_word = true;
  };
  auto end_word = [&] {
    out.word_end.push_back(static_cast<std::size_t>(w - base));
    in_word = false;
  };
  while (p < end) {
    const unsigned char b = *p;
    if (b < 0x80) {
      ++p;
      const unsigned char c = normalize_detail::kAscii.map[b];
      if (c) {
        if (!in_word) begin_word();
        *w++ = static_cast<char>(c);
      } else if (in_word) {
        end_word();
      }
      continue;
    }
    const std::uint32_t cp = decode_utf8(p, end);
    if (is_word_char(cp)) {
      if (!in_word) begin_word();
      std::uint32_t lc = to_lower(cp);
      if (lc < 0x800) {
        *w++ = static_cast<char>(0xC0 | (lc >> 6));
        *w++ = static_cast<char>(0x80 | (lc & 0x3F));
      } else if (lc < 0x10000) {
        *w++ = static_cast<char>(0xE0 | (lc >> 12));
        *w++ = static_cast<char>(0x80 | ((lc >> 6) & 0x3F));
        *w++ = static_cast<char>(0x80 | (lc & 0x3F));
      } else {
        *w++ = static_cast<char>(0xF0 | (lc >> 18));
        *w++ = static_cast<char>(0x80 | ((lc >> 12) & 0x3F));
        *w++ = static_cast<char>(0x80 | ((lc >> 6) & 0x3F));
        *w++ = static_cast<char>(0x80 | (lc & 0x3F));
      }
    } else if (in_word) {
      end_word();
    }
  }
  if (in_word) end_word();
  out.size = static_cast<std::size_t>(w - base);
}

// Byte offsets of every code point of the normalised text, plus a final `size` sentinel.
inline void codepoint_offsets(const Normalized& norm, std::vector<std::size_t>& offsets) {
  offsets.clear();
  const char* t = norm.text.data();
  for (std::size_t i = 0; i < norm.size; ++i) {
    if ((static_cast<unsigned char>(t[i]) & 0xC0) != 0x80) offsets.push_back(i);
  }
  offsets.push_back(norm.size);
}

// Calls fn(ptr, len) once for every shingle of the normalised text.
template <class Fn>
void for_each_shingle(const Normalized& norm, Unit unit, int ngram, std::vector<std::size_t>& scratch,
                      Fn&& fn) {
  const char* t = norm.text.data();
  const std::size_t n = static_cast<std::size_t>(ngram);
  if (unit == Unit::Word) {
    const std::size_t words = norm.word_start.size();
    if (words == 0) return;
    if (words < n) {
      fn(t, norm.size);
      return;
    }
    for (std::size_t i = 0; i + n <= words; ++i) {
      const std::size_t s = norm.word_start[i];
      fn(t + s, norm.word_end[i + n - 1] - s);
    }
  } else {
    if (norm.size == 0) return;
    codepoint_offsets(norm, scratch);
    const std::size_t cps = scratch.size() - 1;
    if (cps < n) {
      fn(t, norm.size);
      return;
    }
    for (std::size_t i = 0; i + n <= cps; ++i) {
      fn(t + scratch[i], scratch[i + n] - scratch[i]);
    }
  }
}

}  // namespace mixsieve
