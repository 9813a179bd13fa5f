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
#include <cstring>
#include <vector>

#include "mixsieve/cpu.hpp"
#include "mixsieve/hd.hpp"
#include "mixsieve/unicode.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define MIXSIEVE_HAVE_ASCII_BLOCKS 1
#endif

namespace mixsieve {

enum class Unit : int { Word = 0, Char = 1 };

struct Normalized {
  std::vector<char> text;               // normalised UTF-8 bytes (capacity reused)
  std::size_t size = 0;                 // bytes used in `text`
  std::vector<std::size_t> word_start;  // byte offset of each word (first `words` entries)
  std::vector<std::size_t> word_end;    // one past each word's last byte
  std::size_t words = 0;                // complete words (a word still open starts at word_start[words])
  // Streaming state (normalize_append): inside a word at the end of the text so far; a word
  // has been written (the next one is preceded by a space, even if the window dropped it).
  bool in_word = false;
  bool started = false;
};

// One code point: the step every normalisation takes outside the ASCII fast paths below (the
// CPU's code-point loop and the CUDA kernels, csrc/cuda/minhash.cu, both call it). Decodes the
// code point at p (p < end), advances p past it and returns it lower-cased when it belongs to
// a word, else 0 (a separator: no word character is, or lower-cases to, U+0000).
MIXSIEVE_HD inline std::uint32_t next_word_char(const unsigned char*& p, const unsigned char* end,
                                                const UnicodeTables& t) {
  const unsigned c = *p;
  if (c < 0x80) {
    ++p;
    const unsigned low = c | 0x20u;  // maps A-Z onto a-z
    if (low - 'a' < 26u) return low;
    return c - '0' < 10u ? c : 0u;
  }
  const std::uint32_t cp = decode_utf8(p, end);
  return is_word_char(cp, t) ? to_lower(cp, t) : 0u;
}

#if defined(__SSE2__)
#define MIXSIEVE_HAVE_SSE2_SCAN 1
// Masks for 16 bytes: bit i of `word` is set for an ASCII letter or digit, bit i of `high` for
// a byte >= 0x80. OR-ing 0x20 maps A-Z onto a-z and leaves digits unchanged.
struct Scan16 {
  __m128i lowered;
  unsigned word;
  unsigned high;
};

inline Scan16 scan16(const unsigned char* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i low = _mm_or_si128(v, _mm_set1_epi8(0x20));
  // Signed compares: bytes >= 0x80 are negative and fall outside both ranges.
  const __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(low, _mm_set1_epi8('a' - 1)),
                                       _mm_cmplt_epi8(low, _mm_set1_epi8('z' + 1)));
  const __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('0' - 1)),
                                      _mm_cmplt_epi8(v, _mm_set1_epi8('9' + 1)));
  return {low, static_cast<unsigned>(_mm_movemask_epi8(_mm_or_si128(letter, digit))),
          static_cast<unsigned>(_mm_movemask_epi8(v))};
}
#endif

#ifdef MIXSIEVE_HAVE_ASCII_BLOCKS
namespace normalize_detail {

// The ASCII fast path: whole blocks of 32 (AVX2) or 64 (AVX-512) bytes below 0x80 at once. A
// block gives a word mask (letters and digits); each word in it is copied lower-cased with one
// vector load and store, so the cost is a few instructions per word and the branches taken
// per block, not per byte. A block holding a byte >= 0x80 is left to the code-point loop.
// Each path stops `Bytes` bytes before the end of the input, so a word's vector load from
// its first byte stays inside the input; stores go up to Bytes past the write position.
struct BlockState {
  const unsigned char* p;
  char* w;
  std::size_t nw;
  bool in_word, started;
};

// Emits the words of one block of BYTES bytes given its word mask WORD (bit i: byte i is a
// word byte) and state st; COPY(s) stores the lower-cased bytes from block offset s on at st.w.
// A macro, not a function taking a functor: GCC does not inline a vector-target functor into
// a function without that target.
#define MIXSIEVE_EMIT_BLOCK(Mask, BYTES, WORD, COPY)                                    \
  do {                                                                                  \
    const Mask word_ = (WORD);                                                          \
    const Mask prev_ = static_cast<Mask>((word_ << 1) | static_cast<Mask>(st.in_word)); \
    Mask starts_ = static_cast<Mask>(word_ & ~prev_);                                   \
    Mask ends_ = static_cast<Mask>(~word_ & prev_); /* bit e: a word ended before e */  \
    if (st.in_word) {                                                                   \
      const unsigned e_ = ends_ ? ctz_(ends_) : (BYTES);                                \
      COPY(0u);                                                                         \
      st.w += e_;                                                                       \
      if (ends_) {                                                                      \
        we[st.nw++] = static_cast<std::size_t>(st.w - base);                            \
        st.in_word = false;                                                             \
        ends_ &= static_cast<Mask>(ends_ - 1);                                          \
      }                                                                                 \
    }                                                                                   \
    while (starts_) {                                                                   \
      const unsigned s_ = ctz_(starts_);                                                \
      starts_ &= static_cast<Mask>(starts_ - 1);                                        \
      *st.w = ' ';                                                                      \
      st.w += st.started;                                                               \
      st.started = true;                                                                \
      ws[st.nw] = static_cast<std::size_t>(st.w - base);                                \
      const unsigned e_ = ends_ ? ctz_(ends_) : (BYTES);                                \
      COPY(s_);                                                                         \
      st.w += e_ - s_;                                                                  \
      if (ends_) {                                                                      \
        we[st.nw++] = static_cast<std::size_t>(st.w - base);                            \
        ends_ &= static_cast<Mask>(ends_ - 1);                                          \
      } else {                                                                          \
        st.in_word = true;                                                              \
      }                                                                                 \
    }                                                                                   \
    st.p += (BYTES);                                                                    \
  } while (0)

inline unsigned ctz_(std::uint32_t m) { return static_cast<unsigned>(__builtin_ctz(m)); }
inline unsigned ctz_(std::uint64_t m) { return static_cast<unsigned>(__builtin_ctzll(m)); }

__attribute__((target("avx2"), always_inline)) inline __m256i lower_ascii_avx2(__m256i v, __m256i& word) {
  const __m256i low = _mm256_or_si256(v, _mm256_set1_epi8(0x20));
  // Signed compares: bytes >= 0x80 are negative and fall outside both ranges.
  const __m256i letter = _mm256_and_si256(_mm256_cmpgt_epi8(low, _mm256_set1_epi8('a' - 1)),
                                          _mm256_cmpgt_epi8(_mm256_set1_epi8('z' + 1), low));
  const __m256i digit = _mm256_and_si256(_mm256_cmpgt_epi8(v, _mm256_set1_epi8('0' - 1)),
                                         _mm256_cmpgt_epi8(_mm256_set1_epi8('9' + 1), v));
  word = _mm256_or_si256(letter, digit);
  return low;  // OR-ing 0x20 maps A-Z onto a-z and leaves digits unchanged
}

__attribute__((target("avx2"))) inline void ascii_blocks_avx2(BlockState& st, const unsigned char* end, char* base,
                                                              std::size_t* ws, std::size_t* we) {
  while (end - st.p >= 64) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(st.p));
    if (_mm256_movemask_epi8(v)) return;
    __m256i wv;
    lower_ascii_avx2(v, wv);
    const auto word = static_cast<std::uint32_t>(_mm256_movemask_epi8(wv));
    const unsigned char* const p = st.p;
#define MIXSIEVE_COPY32(s)                                                                       \
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(st.w),                                          \
                      lower_ascii_avx2(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + (s))), wv))
    MIXSIEVE_EMIT_BLOCK(std::uint32_t, 32, word, MIXSIEVE_COPY32);
#undef MIXSIEVE_COPY32
  }
}

#define MIXSIEVE_NORM512 __attribute__((target("avx512f,avx512bw"))) inline
__attribute__((target("avx512f,avx512bw"), always_inline)) inline __m512i lower_ascii_avx512(__m512i v, std::uint64_t& word) {
  const __m512i low = _mm512_or_si512(v, _mm512_set1_epi8(0x20));
  const __mmask64 letter = _mm512_cmplt_epu8_mask(_mm512_sub_epi8(low, _mm512_set1_epi8('a')), _mm512_set1_epi8(26));
  const __mmask64 digit = _mm512_cmplt_epu8_mask(_mm512_sub_epi8(v, _mm512_set1_epi8('0')), _mm512_set1_epi8(10));
  word = static_cast<std::uint64_t>(letter | digit);
  return low;
}

MIXSIEVE_NORM512 void ascii_blocks_avx512(BlockState& st, const unsigned char* end, char* base, std::size_t* ws,
                                          std::size_t* we) {
  while (end - st.p >= 128) {
    const __m512i v = _mm512_loadu_si512(st.p);
    if (_mm512_movepi8_mask(v)) return;
    std::uint64_t word;
    lower_ascii_avx512(v, word);
    std::uint64_t scratch;
    const unsigned char* const p = st.p;
#define MIXSIEVE_COPY64(s) _mm512_storeu_si512(st.w, lower_ascii_avx512(_mm512_loadu_si512(p + (s)), scratch))
    MIXSIEVE_EMIT_BLOCK(std::uint64_t, 64, word, MIXSIEVE_COPY64);
#undef MIXSIEVE_COPY64
  }
}

}  // namespace normalize_detail
#endif

inline void normalize_begin(Normalized& out) {
  out.size = 0;
  out.words = 0;
  out.in_word = false;
  out.started = false;
}

// Normalises `len` more bytes of a text, appending to `out` (a word open at the end of the
// previous piece continues). Pieces must be cut where no UTF-8 sequence is split: before a
// byte that is not a continuation byte, or after three continuation bytes.
inline void normalize_append(const char* data, std::size_t len, Normalized& out) {
  const UnicodeTables& uni = host_unicode_tables();
  // Lower-casing can lengthen a character by at most half (2 -> 3 bytes), and the vector
  // paths store up to 64 bytes past their write position; a text of `len` bytes has at most
  // (len + 1) / 2 words, plus the one left open by the previous piece.
  if (out.text.size() < out.size + 2 * len + 64) out.text.resize(out.size + 2 * len + 64);
  if (out.word_start.size() < out.words + len / 2 + 2) {
    out.word_start.resize(out.words + len / 2 + 2);
    out.word_end.resize(out.words + len / 2 + 2);
  }
  char* const base = out.text.data();
  std::size_t* const ws = out.word_start.data();
  std::size_t* const we = out.word_end.data();
  std::size_t nw = out.words;
  char* w = base + out.size;
  bool in_word = out.in_word;
  bool started = out.started;
  const auto* p = reinterpret_cast<const unsigned char*>(data);
  const auto* const end = p + len;
#ifdef MIXSIEVE_HAVE_ASCII_BLOCKS
  const int level = minhash_level();
  const std::size_t block = level == 2 ? 64 : 32;
  std::size_t skip = block;                           // grows while blocks keep failing
  const unsigned char* retry = level > 0 ? p : end;  // where the block path may run next
#endif
  while (p < end) {
#ifdef MIXSIEVE_HAVE_ASCII_BLOCKS
    if (p >= retry) {
      normalize_detail::BlockState st{p, w, nw, in_word, started};
      if (level == 2) {
        normalize_detail::ascii_blocks_avx512(st, end, base, ws, we);
      } else {
        normalize_detail::ascii_blocks_avx2(st, end, base, ws, we);
      }
      // Stopped at a block with a non-ASCII byte, or near the end: the code-point loop takes
      // this block before the next try, and in text that is mostly not ASCII, more of them.
      skip = st.p != p ? block : (skip < 1024 ? 2 * skip : skip);
      p = st.p;
      w = st.w;
      nw = st.nw;
      in_word = st.in_word;
      started = st.started;
      retry = static_cast<std::size_t>(end - p) > skip ? p + skip : end;
      if (p >= end) break;
    }
#endif
#ifdef MIXSIEVE_HAVE_SSE2_SCAN
    // Whole ASCII words and separator runs, 16 bytes at a time; a non-ASCII byte drops to
    // the one-code-point step below.
    if (end - p >= 16) {
      const Scan16 s = scan16(p);
      if (in_word) {
        const unsigned stop = ~s.word & 0xFFFFu;
        const unsigned r = stop ? static_cast<unsigned>(__builtin_ctz(stop)) : 16u;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(w), s.lowered);
        w += r;
        p += r;
        if (r == 16) continue;
        if (!((s.high >> r) & 1u)) {
          we[nw++] = static_cast<std::size_t>(w - base);
          in_word = false;
          continue;
        }
      } else {
        const unsigned any = s.word | s.high;
        if (!any) {
          p += 16;
          continue;
        }
        const unsigned i = static_cast<unsigned>(__builtin_ctz(any));
        p += i;
        if (!((s.high >> i) & 1u)) {
          if (started) *w++ = ' ';
          started = true;
          ws[nw] = static_cast<std::size_t>(w - base);
          in_word = true;
          continue;
        }
      }
    }
#endif
    // One code point.
    const std::uint32_t cp = next_word_char(p, end, uni);
    if (cp != 0) {
      if (!in_word) {
        if (started) *w++ = ' ';
        started = true;
        ws[nw] = static_cast<std::size_t>(w - base);
        in_word = true;
      }
      w = put_utf8(w, cp);
    } else if (in_word) {
      we[nw++] = static_cast<std::size_t>(w - base);
      in_word = false;
    }
  }
  out.words = nw;
  out.size = static_cast<std::size_t>(w - base);
  out.in_word = in_word;
  out.started = started;
}

// Closes a word left open at the end of the text.
inline void normalize_end(Normalized& out) {
  if (out.in_word) out.word_end[out.words++] = out.size;
  out.in_word = false;
}

inline void normalize(const char* data, std::size_t len, Normalized& out) {
  normalize_begin(out);
  normalize_append(data, len, out);
  normalize_end(out);
}

// Drops the normalised text before byte `from` and the words before `first_word` (which must
// start at or after `from`; an open word must too), keeping the rest at the front. For
// streaming: memory stays bounded by what later shingles still need.
inline void normalize_drop_front(Normalized& out, std::size_t from, std::size_t first_word) {
  if (from == 0 && first_word == 0) return;
  std::memmove(out.text.data(), out.text.data() + from, out.size - from);
  out.size -= from;
  const std::size_t keep = out.words - first_word + (out.in_word ? 1 : 0);
  for (std::size_t i = 0; i < keep; ++i) {
    out.word_start[i] = out.word_start[first_word + i] - from;
    if (i + first_word < out.words) out.word_end[i] = out.word_end[first_word + i] - from;
  }
  out.words -= first_word;
}

// Where a text of `len` bytes may be cut near `at` (<= len) without splitting a UTF-8
// sequence: the first position from `at` on before a non-continuation byte, at most 3 bytes on.
// (The CUDA kernels cut documents into segments by the same rule.)
MIXSIEVE_HD inline std::size_t utf8_cut(const char* data, std::size_t len, std::size_t at) {
  for (int i = 0; i < 3 && at < len && (static_cast<unsigned char>(data[at]) & 0xC0) == 0x80; ++i) ++at;
  return at;
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
    const std::size_t words = norm.words;
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
