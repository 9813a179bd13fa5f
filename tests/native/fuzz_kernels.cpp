// Fuzz target for the byte-level parsers: the JSON-line scanner of mixsieve-dedup, text
// normalisation (arbitrary bytes, ill-formed UTF-8), MinHash over it, and the LSH index file
// loader (arbitrary and mutated files).
// With clang: -fsanitize=fuzzer,address,undefined gives a libFuzzer binary. Without it,
// main() below drives the same entry point with seeded random and mutated inputs, which is
// what the MIXSIEVE_SANITIZE build runs (target mixsieve_fuzz).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mixsieve/jsonl.hpp"
#include "mixsieve/lsh.hpp"
#include "mixsieve/minhash.hpp"

using namespace mixsieve;

namespace {

std::vector<char> sample_index_file() {
  MinHashConfig c;
  c.num_perm = 16;
  c.ngram = 2;
  MinHasher<std::uint32_t> h(c);
  MinHashWorkspace<std::uint32_t> ws;
  LSHParams p;
  p.num_perm = 16;
  p.bands = 4;
  p.rows = 4;
  p.threshold = 0.5;
  LSHIndex<std::uint32_t> idx(p);
  std::vector<std::uint32_t> sigs(16 * 8);
  for (int i = 0; i < 8; ++i) {
    const std::string doc = "document number " + std::to_string(i % 5) + " with a few words";
    h.signature(doc.data(), doc.size(), sigs.data() + 16 * i, ws);
  }
  std::vector<std::int64_t> dup(8);
  std::vector<float> sim(8);
  idx.add(sigs.data(), 8, nullptr, dup.data(), sim.data(), [](std::uint32_t, std::uint32_t, double) {});
  return idx.to_bytes("{\"k\": 1}");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const char* text = reinterpret_cast<const char*>(data);
  JsonLine line;
  parse_json_line(std::string_view(text, size), "text", "id", line);
  for (int unit = 0; unit < 2; ++unit) {
    MinHashConfig c;
    c.num_perm = 24;
    c.ngram = 1 + static_cast<int>(size % 5);
    c.unit = static_cast<Unit>(unit);
    MinHasher<std::uint32_t> h32(c);
    MinHasher<std::uint64_t> h64(c);
    MinHashWorkspace<std::uint32_t> w32;
    MinHashWorkspace<std::uint64_t> w64;
    std::uint32_t s32[24];
    std::uint64_t s64[24];
    h32.signature(text, size, s32, w32);
    h64.signature(text, size, s64, w64);
  }
  try {
    std::string meta;
    if (size >= 4 && LSHIndex<std::uint32_t>::peek_width(text, size) == 4) {
      auto idx = LSHIndex<std::uint32_t>::from_bytes(text, size, &meta);
      std::vector<std::uint32_t> q(static_cast<std::size_t>(idx.params().num_perm), 7);
      idx.query(q.data());
    } else {
      auto idx = LSHIndex<std::uint64_t>::from_bytes(text, size, &meta);
      std::vector<std::uint64_t> q(static_cast<std::size_t>(idx.params().num_perm), 7);
      idx.query(q.data());
    }
  } catch (const IndexFormatError&) {
  }
  return 0;
}

#ifndef MIXSIEVE_LIBFUZZER
int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 20000;
  std::mt19937_64 rng(20261126);
  const std::vector<char> good = sample_index_file();
  for (long it = 0; it < iterations; ++it) {
    std::vector<char> buf;
    switch (it % 4) {
      case 3: {  // JSON-ish lines: structure characters, escapes, UTF-8 pieces
        static const char* pieces[] = {"{", "}", "[", "]", "\"", ":", ",", "\\u", "\\", "d83d", "\\ude00",
                                       "text", "id", "1e5", "-", "null", "NaN", " ", "\xc3\xa9", "\xff"};
        const int count = static_cast<int>(rng() % 40);
        std::string s;
        for (int q = 0; q < count; ++q) s += pieces[rng() % 20];
        buf.assign(s.begin(), s.end());
        break;
      }
      case 0: {  // random bytes, biased towards UTF-8 lead/continuation bytes and ASCII
        buf.resize(rng() % 600);
        for (auto& b : buf) {
          const unsigned r = rng() % 4;
          b = static_cast<char>(r == 0 ? 0x80 + rng() % 0x80 : r == 1 ? 0xC0 + rng() % 0x40 : rng() % 0x80);
        }
        break;
      }
      case 1: {  // a valid index file, body mutated, checksum recomputed: exercises the rebuild
        buf = good;
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int f = 0; f < flips; ++f) buf[8 + rng() % (buf.size() - 16)] = static_cast<char>(rng());
        const std::uint64_t sum = xxh64(buf.data(), buf.size() - 8, LSHIndex<std::uint32_t>::kChecksumSeed);
        std::memcpy(buf.data() + buf.size() - 8, &sum, 8);
        break;
      }
      default: {  // a valid index file, mutated and truncated
        buf = good;
        const int flips = 1 + static_cast<int>(rng() % 6);
        for (int f = 0; f < flips; ++f) buf[rng() % buf.size()] = static_cast<char>(rng());
        if (rng() % 2) buf.resize(rng() % (buf.size() + 1));
        break;
      }
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(buf.data()), buf.size());
  }
  LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(good.data()), good.size());
  std::printf("mixsieve_fuzz: %ld inputs, no crash\n", iterations);
  return 0;
}
#endif
