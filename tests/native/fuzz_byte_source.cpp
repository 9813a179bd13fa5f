// Fuzz target for the input decoders (byte_source.hpp): gzip members and zstd frames (with
// skippable frames between them) made here from random text, read back whole in reads of random
// size and compared with the text, then mutated (flipped, cut, spliced bytes) and read again.
// Reading must give bytes or throw SourceError naming the file; the sanitizers report anything
// else. zstd input is made with ZSTD_compress from libzstd.so.1 when it can be loaded.
// With clang: -fsanitize=fuzzer,address,undefined -DMIXSIEVE_LIBFUZZER gives a libFuzzer binary.
#include <dlfcn.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "mixsieve/byte_source.hpp"

using mixsieve::io::ByteSource;
using mixsieve::io::SourceError;

namespace {

// One scratch file, rewritten for each input: sources read paths, not memory.
const std::string& scratch_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    std::string p = std::string(dir && *dir ? dir : "/tmp") + "/mixsieve_fuzz_io_" + std::to_string(::getpid());
    return p;
  }();
  return path;
}

void write_scratch(const std::string& data) {
  std::FILE* f = std::fopen(scratch_path().c_str(), "wb");
  if (!f || std::fwrite(data.data(), 1, data.size(), f) != data.size() || std::fclose(f) != 0) {
    std::perror("mixsieve_fuzz_io: scratch file");
    std::exit(2);
  }
}

// The scratch file decoded in reads of random size; false when it throws SourceError.
bool decode(std::mt19937_64& rng, std::string& out) {
  out.clear();
  try {
    auto source = ByteSource::open(scratch_path());
    std::vector<char> buf((1 << 20) + 17);
    for (;;) {
      const std::size_t n = rng() % 3 ? 1 + rng() % 64 : 1 + rng() % buf.size();
      const std::size_t got = source->read(buf.data(), n);
      if (got > n) std::abort();
      if (got == 0) break;
      out.append(buf.data(), got);
    }
    if (source->raw_bytes_read() > source->raw_size()) std::abort();
  } catch (const SourceError& e) {
    if (std::strncmp(e.what(), scratch_path().c_str(), scratch_path().size()) != 0) std::abort();
    return false;
  }
  return true;
}

std::string random_text(std::mt19937_64& rng) {
  static const char* words[] = {"the ", "data ", "\xc3\xa9t\xc3\xa9 ", "{\"text\": ", "\n", "0123456789"};
  std::string s;
  const std::size_t target = rng() % 8 ? rng() % 5000 : rng() % 300000;
  while (s.size() < target) {
    if (rng() % 16 == 0) {
      s += static_cast<char>(rng());
    } else {
      s += words[rng() % 6];
    }
  }
  return s;
}

#ifdef MIXSIEVE_HAVE_ZLIB
std::string gzip_member(const std::string& data, int level) {
  z_stream zs{};
  if (deflateInit2(&zs, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  std::string out(deflateBound(&zs, static_cast<uLong>(data.size())), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = static_cast<uInt>(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}
#endif

struct ZstdCompressor {
  std::size_t (*bound)(std::size_t) = nullptr;
  std::size_t (*compress)(void*, std::size_t, const void*, std::size_t, int) = nullptr;
  unsigned (*is_error)(std::size_t) = nullptr;
};

const ZstdCompressor& zstd_compressor() {
  static const ZstdCompressor z = [] {
    ZstdCompressor c;
    if (!mixsieve::io::zstd_available()) return c;
    void* lib = ::dlopen("libzstd.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return c;
    c.bound = reinterpret_cast<decltype(c.bound)>(::dlsym(lib, "ZSTD_compressBound"));
    c.compress = reinterpret_cast<decltype(c.compress)>(::dlsym(lib, "ZSTD_compress"));
    c.is_error = reinterpret_cast<decltype(c.is_error)>(::dlsym(lib, "ZSTD_isError"));
    if (!c.bound || !c.compress || !c.is_error) c = ZstdCompressor{};
    return c;
  }();
  return z;
}

std::string zstd_frame(const std::string& data, int level) {
  const ZstdCompressor& z = zstd_compressor();
  std::string out(z.bound(data.size()), '\0');
  const std::size_t n = z.compress(out.data(), out.size(), data.data(), data.size(), level);
  if (z.is_error(n)) std::abort();
  out.resize(n);
  return out;
}

std::string skippable_frame(std::mt19937_64& rng) {
  const std::uint32_t size = static_cast<std::uint32_t>(rng() % 40);
  std::string f(8 + size, '\0');
  const std::uint32_t magic = 0x184D2A50u + static_cast<std::uint32_t>(rng() % 16);
  for (int i = 0; i < 4; ++i) {
    f[i] = static_cast<char>(magic >> (8 * i));
    f[4 + i] = static_cast<char>(size >> (8 * i));
  }
  for (std::uint32_t i = 0; i < size; ++i) f[8 + i] = static_cast<char>(rng());
  return f;
}

// A valid compressed stream and what it decodes to; false when neither format can be made here.
bool valid_stream(std::mt19937_64& rng, std::string& raw, std::string& plain) {
  const bool zstd = zstd_compressor().compress != nullptr;
#ifdef MIXSIEVE_HAVE_ZLIB
  const bool gzip = true;
#else
  const bool gzip = false;
#endif
  if (!zstd && !gzip) return false;
  const bool use_zstd = zstd && (!gzip || rng() % 2);
  raw.clear();
  plain.clear();
  const int parts = 1 + static_cast<int>(rng() % 3);
  for (int p = 0; p < parts; ++p) {
    const std::string text = random_text(rng);
    plain += text;
    if (use_zstd) {
      if (rng() % 3 == 0) raw += skippable_frame(rng);
      raw += zstd_frame(text, 1 + static_cast<int>(rng() % 9));
    } else {
#ifdef MIXSIEVE_HAVE_ZLIB
      raw += gzip_member(text, static_cast<int>(rng() % 10));
#endif
    }
  }
  return true;
}

void mutate(std::mt19937_64& rng, std::string& s) {
  const int edits = 1 + static_cast<int>(rng() % 6);
  for (int e = 0; e < edits; ++e) {
    switch (rng() % 4) {
      case 0:
        if (!s.empty()) s[rng() % s.size()] = static_cast<char>(rng());
        break;
      case 1:
        s.resize(rng() % (s.size() + 1));
        break;
      case 2: {
        std::string piece(rng() % 24, '\0');
        for (char& c : piece) c = static_cast<char>(rng());
        s.insert(rng() % (s.size() + 1), piece);
        break;
      }
      default:
        if (!s.empty()) s[rng() % s.size()] ^= static_cast<char>(1u << (rng() % 8));
        break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::mt19937_64 rng(size);
  write_scratch(std::string(reinterpret_cast<const char*>(data), size));
  std::string out;
  decode(rng, out);
  return 0;
}

#ifndef MIXSIEVE_LIBFUZZER
int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 3000;
  std::mt19937_64 rng(20261128);
  std::string raw, plain, out;
  long valid = 0;
  for (long it = 0; it < iterations; ++it) {
    if (!valid_stream(rng, raw, plain)) {
      std::string s(rng() % 600, '\0');
      for (char& c : s) c = static_cast<char>(rng());
      LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
      continue;
    }
    if (it % 4 == 0) {  // the valid stream reads back exactly
      write_scratch(raw);
      if (!decode(rng, out) || out != plain) {
        std::fprintf(stderr, "mixsieve_fuzz_io: a valid stream of %zu bytes did not read back\n", raw.size());
        return 1;
      }
      ++valid;
    }
    mutate(rng, raw);
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(raw.data()), raw.size());
  }
  std::remove(scratch_path().c_str());
  std::printf("mixsieve_fuzz_io: %ld inputs (%ld valid streams checked), gzip %s, zstd %s, no crash\n", iterations,
              valid,
#ifdef MIXSIEVE_HAVE_ZLIB
              "yes",
#else
              "no",
#endif
              zstd_compressor().compress ? "yes" : "no");
  return 0;
}
#endif
