// Runs the MinHash kernels of ../minhash.cu under the host emulation (cuda_runtime.h,
// emu_minhash.h) and compares them with the CPU's MinHasher byte for byte: every signature
// slot and every digest of the normalised text (Digest128), for both units and slot widths and
// several ngram / num_perm / seed choices. Documents: random code points from every plane,
// ill-formed UTF-8, separators, words longer than a segment, multibyte characters across
// segment boundaries, empty and separator-only documents, documents shorter than ngram, long
// documents (many segments, tiles and digest blocks), and many one-shingle documents packed
// into shared tiles. Also: offsets that do not start at 0, and offsets that disagree with the
// host's byte count (every slot at its maximum, digests 0). Prints OK and exits 0 when all agree.
// Built and run by tests/test_minhash_cuda_emulated.py.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "minhash_cuda.hpp"
#include "mixsieve/minhash.hpp"

namespace {

using namespace mixsieve;
namespace mc = mixsieve::minhash_cuda;

int failures = 0;

void fail(const std::string& what) {
  if (++failures <= 20) std::printf("MISMATCH %s\n", what.c_str());
}

void put(std::string& s, std::uint32_t cp) {
  char buf[4];
  s.append(buf, static_cast<std::size_t>(put_utf8(buf, cp) - buf));
}

// A code point drawn to exercise the tables: ASCII, Latin/Greek/Cyrillic with case, marks,
// CJK, separators of every kind, astral letters, digits and symbols, and unassigned ones.
std::uint32_t random_cp(std::mt19937_64& rng) {
  static const std::uint32_t picks[] = {
      'A',     'z',     '0',     ' ',     ',',     '\n',    0x00C0,  0x00DF,  0x0130,  0x0131,  0x023A,
      0x023E,  0x03A3,  0x03C2,  0x0410,  0x0451,  0x0301,  0x0663,  0x0E01,  0x2028,  0x3000,  0x4E2D,
      0xAC00,  0xFF21,  0xFFFD,  0x1D400, 0x1D7CE, 0x10400, 0x1E900, 0x20000, 0x1F600, 0xE0100, 0x10FFFF,
      0x2C65,  0x1E9E,  0x00B2,  0x2160,  0x00A0,  0x200B,  0xFEFF,  0x0000,  0x007F,  0x0085};
  switch (rng() % 6) {
    case 0:
    case 1: return picks[rng() % (sizeof(picks) / sizeof(picks[0]))];
    case 2: return static_cast<std::uint32_t>('a' + rng() % 26);
    case 3: return static_cast<std::uint32_t>(rng() % 0x800);
    case 4: {
      std::uint32_t cp = static_cast<std::uint32_t>(rng() % 0x10000);
      return cp >= 0xD800 && cp < 0xE000 ? 0x4E00 : cp;
    }
    default: {
      std::uint32_t cp = static_cast<std::uint32_t>(0x10000 + rng() % 0x100000);
      return cp;
    }
  }
}

// Ill-formed pieces: lone continuation bytes, truncated sequences, surrogates, overlongs,
// bytes that never occur in UTF-8, a 4-byte lead followed by too many continuations.
void put_bad(std::string& s, std::mt19937_64& rng) {
  static const char* bad[] = {"\x80",         "\xBF\xBF",     "\xC0\x80",     "\xC1\xBF",     "\xE0\x80\x80",
                              "\xED\xA0\x80", "\xE2\x82",     "\xF0\x9F\x98", "\xF4\x90\x80\x80", "\xF5",
                              "\xFF",         "\xFE\x80",     "\xF0\x80\x80\x80", "\xE1\x80\x80\x80\x80", "\xC3"};
  s += bad[rng() % (sizeof(bad) / sizeof(bad[0]))];
}

std::string random_doc(std::mt19937_64& rng, std::size_t cps) {
  std::string s;
  for (std::size_t i = 0; i < cps; ++i) {
    const unsigned r = static_cast<unsigned>(rng() % 100);
    if (r < 3) {
      put_bad(s, rng);
    } else if (r < 15) {
      s += ' ';
    } else {
      put(s, random_cp(rng));
    }
  }
  return s;
}

// Words and separators in mostly ASCII text, with multibyte words.
std::string wordy_doc(std::mt19937_64& rng, std::size_t words) {
  static const char* vocab[] = {"the", "Quick", "brown", "FOX", "jumps", "über", "naïve", "Ελλάδα", "москва",
                                "中文", "𝔘𝔫𝔦", "x", "a1", "2024", "İstanbul", "ǅ", "Ⱥ"};
  std::string s;
  for (std::size_t i = 0; i < words; ++i) {
    s += vocab[rng() % (sizeof(vocab) / sizeof(vocab[0]))];
    s += (rng() % 7 == 0) ? ", " : " ";
  }
  return s;
}

struct Corpus {
  std::vector<std::string> docs;
  std::string data;                   // all documents, after `lead` bytes of padding
  std::vector<std::int64_t> offsets;  // into data
  std::size_t lead = 0;
  void pack(std::size_t lead_bytes) {
    lead = lead_bytes;
    data.assign(lead, 'Q');
    offsets.clear();
    for (const auto& d : docs) {
      offsets.push_back(static_cast<std::int64_t>(data.size()));
      data += d;
    }
    offsets.push_back(static_cast<std::int64_t>(data.size()));
  }
};

Corpus make_corpus(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Corpus c;
  c.docs.push_back("");
  c.docs.push_back("  ,.!? ");
  c.docs.push_back("One");
  c.docs.push_back("One two");
  c.docs.push_back("\xFF\xFE");
  c.docs.push_back("É");
  for (int i = 0; i < 40; ++i) c.docs.push_back(random_doc(rng, 1 + rng() % 200));
  for (int i = 0; i < 30; ++i) c.docs.push_back(wordy_doc(rng, rng() % 12));
  for (int i = 0; i < 150; ++i) c.docs.push_back(i % 2 ? "solo" : "x y");  // one-shingle documents
  // words longer than a segment, multibyte characters on every byte position around 256
  std::string longword(1000, 'k');
  c.docs.push_back(longword + " tail " + longword);
  for (int shift = 0; shift < 4; ++shift) {
    std::string s(250 + shift, 'a');
    s += " ";
    for (int i = 0; i < 20; ++i) s += "中Ωé𝔘 ";
    s += random_doc(rng, 300);
    c.docs.push_back(s);
  }
  // a segment boundary right after a lone continuation, and inside ill-formed runs
  {
    std::string s(255, 'b');
    s += "\x80\x80\x80\x80\x80word";
    c.docs.push_back(s);
    std::string t(254, 'c');
    t += "\xF0\x9F\x98\x80\x80\x80 tail";
    c.docs.push_back(t);
    // a word character whose sequence ends before the boundary, then a lone continuation byte:
    // the code point before the segment is U+FFFD, not the word character
    std::string u(253, 'd');
    u += "\xC3\xA9\x80word";
    c.docs.push_back(u);
  }
  // every mix of ill-formed bytes, multibyte letters and ASCII around the first boundaries
  for (int i = 0; i < 48; ++i) {
    std::string s(248 + static_cast<std::size_t>(i % 12), 'e');
    for (int j = 0; j < 10; ++j) {
      switch (rng() % 4) {
        case 0: put_bad(s, rng); break;
        case 1: put(s, random_cp(rng)); break;
        case 2: s += static_cast<char>('a' + rng() % 26); break;
        default: s += "\xC3\xA9"; break;
      }
    }
    s += " word tail";
    c.docs.push_back(s + s);
  }
  // long documents: many segments, tiles and 4 KiB digest blocks (and past the CPU's 64 KiB pieces)
  c.docs.push_back(wordy_doc(rng, 15000));
  c.docs.push_back(random_doc(rng, 30000));
  std::shuffle(c.docs.begin() + 6, c.docs.end(), rng);
  return c;
}

struct Unicode {
  std::vector<unsigned char> blob = UnicodeBlob::build();
};

template <class T>
void check(const Corpus& c, const Unicode& uni, int unit, int ngram, int num_perm, std::uint64_t seed,
           bool with_digests, const char* label) {
  MinHashConfig cfg;
  cfg.num_perm = num_perm;
  cfg.ngram = ngram;
  cfg.unit = static_cast<Unit>(unit);
  cfg.seed = seed;
  const MinHasher<T> hasher(cfg);
  const std::size_t n = c.docs.size(), k = static_cast<std::size_t>(num_perm);

  mc::Params p{};
  p.width = sizeof(T) * 8;
  p.num_perm = num_perm;
  p.ngram = ngram;
  p.unit = unit;
  p.seed = seed;
  p.a = hasher.a().data();
  p.b = hasher.b().data();
  p.unicode = uni.blob.data();
  const std::int64_t text_bytes = c.offsets.back() - c.offsets.front();
  const mc::Texts t{reinterpret_cast<const unsigned char*>(c.data.data()), static_cast<std::int64_t>(c.data.size()),
                    c.offsets.data(), static_cast<std::int64_t>(n), text_bytes};
  std::size_t bytes = 0;
  if (const char* err = mc::workspace_bytes(static_cast<std::int64_t>(n), text_bytes, unit, &bytes)) {
    fail(std::string("workspace_bytes: ") + err);
    return;
  }
  std::vector<unsigned char> workspace(bytes);
  std::vector<T> out(n * k, 7);
  std::vector<std::uint64_t> digests(2 * n, 7);
  if (const char* err = mc::signatures(p, t, out.data(), with_digests ? digests.data() : nullptr, workspace.data(),
                                       workspace.size(), nullptr)) {
    fail(std::string("signatures: ") + err);
    return;
  }
  MinHashWorkspace<T> ws;
  std::vector<T> want(k);
  int bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    Digest128 d;
    hasher.signature_digest(c.docs[i].data(), c.docs[i].size(), want.data(), ws, d,
                            [](const Digest128&, T*) { return false; });
    const bool sig_ok = std::memcmp(want.data(), out.data() + i * k, k * sizeof(T)) == 0;
    const bool dig_ok = !with_digests || (digests[2 * i] == d.lo && digests[2 * i + 1] == d.hi);
    if ((!sig_ok || !dig_ok) && bad++ < 3) {
      fail(std::string(label) + ": document " + std::to_string(i) + " (" + std::to_string(c.docs[i].size()) +
           " bytes): " + (sig_ok ? "digest" : "signature") + " differs");
    }
  }
  std::printf("%-44s %zu documents, %lld bytes: %s\n", label, n, static_cast<long long>(text_bytes),
              bad ? "DIFFERENT" : "equal");
}

// Offsets that disagree with the byte count the host gave: nothing read out of bounds, every
// slot at its maximum, every digest 0.
void check_guard(const Corpus& c, const Unicode& uni) {
  MinHashConfig cfg;
  cfg.num_perm = 16;
  const MinHasher<std::uint32_t> hasher(cfg);
  mc::Params p{};
  p.width = 32;
  p.num_perm = 16;
  p.ngram = 5;
  p.unit = 0;
  p.seed = 1;
  p.a = hasher.a().data();
  p.b = hasher.b().data();
  p.unicode = uni.blob.data();
  const std::size_t n = c.docs.size();
  const std::int64_t text_bytes = c.offsets.back() - c.offsets.front();
  std::vector<std::int64_t> offsets = c.offsets;
  for (int variant = 0; variant < 3; ++variant) {
    std::int64_t claimed = text_bytes;
    std::int64_t data_bytes = static_cast<std::int64_t>(c.data.size());
    offsets = c.offsets;
    if (variant == 0) claimed = text_bytes / 2;               // more text than the workspace was sized for
    if (variant == 1) std::swap(offsets[3], offsets[n / 2]);  // decreasing offsets
    if (variant == 2) data_bytes -= 10;                       // past the end of the buffer
    const mc::Texts t{reinterpret_cast<const unsigned char*>(c.data.data()), data_bytes, offsets.data(),
                      static_cast<std::int64_t>(n), claimed};
    std::size_t bytes = 0;
    mc::workspace_bytes(static_cast<std::int64_t>(n), claimed, 0, &bytes);
    std::vector<unsigned char> workspace(bytes);
    std::vector<std::uint32_t> out(n * 16, 7);
    std::vector<std::uint64_t> digests(2 * n, 7);
    const char* err = mc::signatures(p, t, out.data(), digests.data(), workspace.data(), workspace.size(), nullptr);
    bool ok = err == nullptr;
    for (std::uint32_t v : out) ok = ok && v == std::numeric_limits<std::uint32_t>::max();
    for (std::uint64_t v : digests) ok = ok && v == 0;
    if (!ok) fail("bad offsets (variant " + std::to_string(variant) + ") were not refused");
    std::printf("bad offsets, variant %d: %s\n", variant, ok ? "refused" : "NOT refused");
  }
  // a workspace one byte short is refused with a message
  std::size_t bytes = 0;
  mc::workspace_bytes(static_cast<std::int64_t>(n), text_bytes, 0, &bytes);
  std::vector<unsigned char> workspace(bytes);
  std::vector<std::uint32_t> out(n * 16);
  const mc::Texts t{reinterpret_cast<const unsigned char*>(c.data.data()), static_cast<std::int64_t>(c.data.size()),
                    c.offsets.data(), static_cast<std::int64_t>(n), text_bytes};
  if (mc::signatures(p, t, out.data(), nullptr, workspace.data(), bytes - 1, nullptr) == nullptr) {
    fail("a short workspace was accepted");
  }
}

}  // namespace

int main() {
  const Unicode uni;
  Corpus c = make_corpus(20240601);
  c.pack(0);
  check<std::uint32_t>(c, uni, 0, 5, 128, 1, true, "word 5-grams, 128 x u32, seed 1");
  check<std::uint64_t>(c, uni, 0, 5, 128, 1, true, "word 5-grams, 128 x u64, seed 1");
  check<std::uint32_t>(c, uni, 1, 5, 64, 7, true, "char 5-grams, 64 x u32, seed 7");
  check<std::uint64_t>(c, uni, 1, 3, 130, 99, false, "char 3-grams, 130 x u64, seed 99");
  c.pack(37);  // offsets not starting at 0, odd alignment
  check<std::uint32_t>(c, uni, 0, 1, 200, 12345678901234ULL, true, "word 1-grams, 200 x u32, offsets from 37");
  check<std::uint64_t>(c, uni, 0, 7, 1, 3, true, "word 7-grams, 1 x u64, offsets from 37");
  check<std::uint32_t>(c, uni, 1, 1, 129, 5, true, "char 1-grams, 129 x u32, offsets from 37");
  Corpus small = make_corpus(7);
  small.docs.resize(6);  // only the edge cases
  small.pack(3);
  check<std::uint32_t>(small, uni, 0, 2, 8, 1, true, "edge documents, word 2-grams");
  check<std::uint64_t>(small, uni, 1, 2, 8, 1, true, "edge documents, char 2-grams");
  c.pack(0);
  check_guard(c, uni);
  if (failures) {
    std::printf("%d mismatches\n", failures);
    return 1;
  }
  std::printf("OK\n");
  return 0;
}
