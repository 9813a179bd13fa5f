// One JSON object per line: validate the whole line and pull out the top-level fields we need
// (the text, and optionally an id) without building a document tree. Accepts what Python's
// json.loads accepts (including NaN, Infinity and -Infinity; the last of duplicate keys wins),
// and rejects control characters inside strings, as json.loads does by default.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "mixsieve/unicode.hpp"

namespace mixsieve {

struct JsonField {
  bool found = false;
  bool is_string = false;
  std::size_t begin = 0, end = 0;  // the raw JSON value: line[begin, end)
  std::string decoded;             // for strings: the UTF-8 text with escapes resolved
  bool bad_utf8 = false;           // raw ill-formed UTF-8 inside the string (replaced by U+FFFD)
};

struct JsonLine {
  bool ok = false;
  std::size_t error_at = 0;  // byte offset of the problem
  std::string error;
  JsonField text, id;
};

namespace json_detail {

class Scanner {
 public:
  Scanner(std::string_view s, std::string_view text_field, std::string_view id_field, JsonLine& out)
      : s_(s), tf_(text_field), idf_(id_field), out_(out) {}

  bool run() {
    ws();
    if (!object(0)) return false;
    ws();
    if (p_ != s_.size()) return fail("unexpected data after the JSON object");
    return true;
  }

 private:
  static constexpr int kMaxDepth = 1000;

  bool fail(const char* msg) {
    if (out_.error.empty()) {
      out_.error = msg;
      out_.error_at = p_;
    }
    return false;
  }
  bool eof() const { return p_ >= s_.size(); }

  // Length of the run of plain string bytes at p_: printable ASCII (0x20..0x7F) other than
  // '"' and '\\', which a string holds as they are. 16 bytes at a time with SSE2 (every x86-64
  // has it); a signed compare with 0x1F rejects control bytes and every byte >= 0x80 at once.
  std::size_t plain_run() const {
    const char* const b = s_.data() + p_;
    const char* const e = s_.data() + s_.size();
    const char* q = b;
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), ctl = _mm_set1_epi8(0x1F);
    while (e - q >= 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q));
      const __m128i special = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash));
      const int plain = _mm_movemask_epi8(_mm_andnot_si128(special, _mm_cmpgt_epi8(v, ctl)));
      if (plain != 0xFFFF) return static_cast<std::size_t>(q - b) + static_cast<std::size_t>(__builtin_ctz(~plain & 0xFFFF));
      q += 16;
    }
#endif
    for (; q < e; ++q) {
      const auto c = static_cast<unsigned char>(*q);
      if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') break;
    }
    return static_cast<std::size_t>(q - b);
  }
  char peek() const { return s_[p_]; }
  void ws() {
    while (!eof() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) ++p_;
  }

  bool object(int depth) {
    if (eof() || peek() != '{') return fail("expected a JSON object '{'");
    if (depth > kMaxDepth) return fail("nesting too deep");
    ++p_;
    ws();
    if (!eof() && peek() == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      ws();
      std::string key;
      bool key_bad = false;
      if (eof() || peek() != '"') return fail("expected a string key");
      if (!string(&key, &key_bad)) return false;
      ws();
      if (eof() || peek() != ':') return fail("expected ':' after a key");
      ++p_;
      ws();
      JsonField* target = nullptr;
      if (depth == 0) {
        if (key == tf_) target = &out_.text;
        else if (!idf_.empty() && key == idf_) target = &out_.id;
      }
      const std::size_t begin = p_;
      if (target && !eof() && peek() == '"') {
        JsonField f;
        f.found = f.is_string = true;
        if (!string(&f.decoded, &f.bad_utf8)) return false;
        f.begin = begin;
        f.end = p_;
        *target = std::move(f);  // the last duplicate key wins, as in json.loads
      } else {
        if (!value(depth + 1)) return false;
        if (target) {
          *target = JsonField{};
          target->found = true;
          target->begin = begin;
          target->end = p_;
        }
      }
      ws();
      if (eof()) return fail("unterminated object");
      if (peek() == ',') {
        ++p_;
        continue;
      }
      if (peek() == '}') {
        ++p_;
        return true;
      }
      return fail("expected ',' or '}'");
    }
  }

  bool array(int depth) {
    if (depth > kMaxDepth) return fail("nesting too deep");
    ++p_;  // '['
    ws();
    if (!eof() && peek() == ']') {
      ++p_;
      return true;
    }
    for (;;) {
      ws();
      if (!value(depth + 1)) return false;
      ws();
      if (eof()) return fail("unterminated array");
      if (peek() == ',') {
        ++p_;
        continue;
      }
      if (peek() == ']') {
        ++p_;
        return true;
      }
      return fail("expected ',' or ']'");
    }
  }

  bool literal(std::string_view word) {
    if (s_.substr(p_, word.size()) != word) return fail("invalid literal");
    p_ += word.size();
    return true;
  }

  bool number() {
    const std::size_t start = p_;
    if (!eof() && peek() == '-') ++p_;
    if (!eof() && peek() == 'I') return literal("Infinity");
    if (eof() || !(peek() >= '0' && peek() <= '9')) {
      p_ = start;
      return fail("invalid number");
    }
    if (peek() == '0') {
      ++p_;
    } else {
      while (!eof() && peek() >= '0' && peek() <= '9') ++p_;
    }
    if (!eof() && peek() == '.') {
      ++p_;
      if (eof() || !(peek() >= '0' && peek() <= '9')) return fail("invalid number: digits expected after '.'");
      while (!eof() && peek() >= '0' && peek() <= '9') ++p_;
    }
    if (!eof() && (peek() == 'e' || peek() == 'E')) {
      ++p_;
      if (!eof() && (peek() == '+' || peek() == '-')) ++p_;
      if (eof() || !(peek() >= '0' && peek() <= '9')) return fail("invalid number: digits expected in exponent");
      while (!eof() && peek() >= '0' && peek() <= '9') ++p_;
    }
    return true;
  }

  bool value(int depth) {
    if (eof()) return fail("expected a value");
    switch (peek()) {
      case '{':
        return object(depth);
      case '[':
        return array(depth);
      case '"':
        return string(nullptr, nullptr);
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      case 'N':
        return literal("NaN");
      case 'I':
        return literal("Infinity");
      default:
        return number();
    }
  }

  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  bool hex4(std::uint32_t& v) {
    if (p_ + 4 > s_.size()) return fail("truncated \\u escape");
    v = 0;
    for (int i = 0; i < 4; ++i) {
      const int h = hex(s_[p_ + static_cast<std::size_t>(i)]);
      if (h < 0) return fail("invalid \\u escape");
      v = (v << 4) | static_cast<std::uint32_t>(h);
    }
    p_ += 4;
    return true;
  }

  static void put(std::string* out, std::uint32_t cp) {
    if (!out) return;
    char buf[4];
    out->append(buf, static_cast<std::size_t>(put_utf8(buf, cp) - buf));
  }

  // A string at p_ ('"'); decoded into *out when out is not null. Lone surrogates (which
  // json.loads keeps as lone surrogate code points) become U+FFFD; so does raw ill-formed
  // UTF-8, which sets *bad_utf8.
  bool string(std::string* out, bool* bad_utf8) {
    ++p_;  // opening quote
    // The decoded text is rarely longer than the rest of the line: one allocation, not a
    // doubling series (which would peak near twice a huge document's size).
    if (out) out->reserve(out->size() + (s_.size() - p_));
    for (;;) {
      if (eof()) return fail("unterminated string");
      if (const std::size_t run = plain_run(); run > 0) {
        if (out) out->append(s_.data() + p_, run);
        p_ += run;
        continue;
      }
      const auto c = static_cast<unsigned char>(peek());
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c < 0x20) return fail("control character in a string (must be escaped)");
      if (c == '\\') {
        ++p_;
        if (eof()) return fail("unterminated string");
        const char e = peek();
        ++p_;
        switch (e) {
          case '"': if (out) out->push_back('"'); break;
          case '\\': if (out) out->push_back('\\'); break;
          case '/': if (out) out->push_back('/'); break;
          case 'b': if (out) out->push_back('\b'); break;
          case 'f': if (out) out->push_back('\f'); break;
          case 'n': if (out) out->push_back('\n'); break;
          case 'r': if (out) out->push_back('\r'); break;
          case 't': if (out) out->push_back('\t'); break;
          case 'u': {
            std::uint32_t cp;
            if (!hex4(cp)) return false;
            if (cp >= 0xD800 && cp <= 0xDBFF && p_ + 6 <= s_.size() && s_[p_] == '\\' && s_[p_ + 1] == 'u') {
              const std::size_t save = p_;
              p_ += 2;
              std::uint32_t lo;
              if (!hex4(lo)) return false;
              if (lo >= 0xDC00 && lo <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
              } else {
                p_ = save;  // not a pair: the high surrogate stands alone
                cp = kReplacementChar;
              }
            } else if (cp >= 0xD800 && cp <= 0xDFFF) {
              cp = kReplacementChar;
            }
            put(out, cp);
            break;
          }
          default:
            --p_;
            return fail("invalid escape in a string");
        }
        continue;
      }
      if (c < 0x80) {
        if (out) out->push_back(static_cast<char>(c));
        ++p_;
        continue;
      }
      const auto* q = reinterpret_cast<const unsigned char*>(s_.data()) + p_;
      const auto* end = reinterpret_cast<const unsigned char*>(s_.data()) + s_.size();
      const auto* start = q;
      bool valid;
      decode_utf8_checked(q, end, valid);
      const std::size_t len = static_cast<std::size_t>(q - start);
      if (!valid && bad_utf8) *bad_utf8 = true;
      if (out) {
        if (valid) {
          out->append(reinterpret_cast<const char*>(start), len);
        } else {
          put(out, kReplacementChar);
        }
      }
      p_ += len;
    }
  }

  std::string_view s_, tf_, idf_;
  JsonLine& out_;
  std::size_t p_ = 0;
};

}  // namespace json_detail

// Parses one line holding one JSON object; fills `out` (ok, the fields, or an error and its
// byte offset).
inline void parse_json_line(std::string_view line, std::string_view text_field, std::string_view id_field,
                            JsonLine& out) {
  out = JsonLine{};
  json_detail::Scanner sc(line, text_field, id_field, out);
  out.ok = sc.run();
}

}  // namespace mixsieve
