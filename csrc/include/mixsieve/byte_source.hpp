// Input bytes of a file or of standard input, decompressed on the fly when the first bytes say
// gzip (zlib, when the target is built with MIXSIEVE_HAVE_ZLIB) or zstd (libzstd.so.1, opened
// with dlopen on first use, so neither the build nor the wheel needs zstd). The format comes from
// the magic bytes, never from the name. A source reads with read(2) in 1 MiB blocks and holds that
// block plus its decoder: about 1 MiB for gzip, 1 MiB plus the frame's window for zstd (8 MiB at
// `zstd -19`, refused beyond 128 MiB as libzstd does by default). One source belongs to one
// thread at a time; separate sources may be read on separate threads.
#pragma once

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>

#ifdef MIXSIEVE_HAVE_ZLIB
#include <zlib.h>
#endif

namespace mixsieve::io {

// Any failure to read or decode an input; the message starts with the path: "PATH: ...".
struct SourceError : std::runtime_error {
  using runtime_error::runtime_error;
};

namespace detail {

// The raw bytes of a file ("-": standard input, left open), read in blocks of kBlock.
class RawInput {
 public:
  static constexpr std::size_t kBlock = std::size_t{1} << 20;

  explicit RawInput(const std::string& path) : path_(path) {
    if (path == "-") {
      fd_ = STDIN_FILENO;
    } else {
      fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd_ < 0) throw SourceError(path + ": cannot open (" + std::strerror(errno) + ")");
      owns_fd_ = true;
    }
    struct stat st {};
    if (::fstat(fd_, &st) == 0) {
      if (S_ISDIR(st.st_mode)) {
        close_fd();
        throw SourceError(path + ": cannot read (is a directory)");
      }
      if (S_ISREG(st.st_mode)) {
        // Standard input may be a file opened part way through: what is left of it.
        const off_t at = ::lseek(fd_, 0, SEEK_CUR);
        if (at >= 0 && at <= st.st_size) size_ = static_cast<std::uint64_t>(st.st_size - at);
#ifdef POSIX_FADV_SEQUENTIAL
        ::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
      }
    }
    buf_.reset(new char[kBlock]);
  }
  ~RawInput() { close_fd(); }
  RawInput(const RawInput&) = delete;
  RawInput& operator=(const RawInput&) = delete;

  const std::string& path() const { return path_; }
  const char* data() const { return buf_.get() + pos_; }
  std::size_t available() const { return end_ - pos_; }
  void consume(std::size_t k) { pos_ += k; }

  // With nothing buffered: the next block. False at the end of the input (and from then on).
  bool refill() {
    pos_ = end_ = 0;
    end_ = read_some(buf_.get(), kBlock);
    return end_ > 0;
  }

  // At least k (<= kBlock) bytes buffered, unless the input ends first; for the magic bytes.
  void fill_to(std::size_t k) {
    if (pos_ > 0) {
      std::memmove(buf_.get(), buf_.get() + pos_, end_ - pos_);
      end_ -= pos_;
      pos_ = 0;
    }
    while (end_ < k && !eof_) end_ += read_some(buf_.get() + end_, kBlock - end_);
  }

  // With nothing buffered: up to n bytes straight into out (no copy through the block).
  std::size_t read_direct(char* out, std::size_t n) { return read_some(out, n); }

  std::uint64_t consumed() const { return total_ - (end_ - pos_); }
  std::uint64_t size() const { return size_; }

 private:
  // One read(2), retried on EINTR; 0 only at the end.
  std::size_t read_some(char* out, std::size_t n) {
    if (eof_ || n == 0) return 0;
    n = std::min<std::size_t>(n, std::size_t{1} << 30);  // Linux moves at most ~2 GiB per call
    for (;;) {
      const ssize_t got = ::read(fd_, out, n);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) throw SourceError(path_ + ": read error (" + std::strerror(errno) + ")");
      if (got == 0) eof_ = true;
      total_ += static_cast<std::uint64_t>(got);
      return static_cast<std::size_t>(got);
    }
  }
  void close_fd() {
    if (owns_fd_ && fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  std::string path_;
  int fd_ = -1;
  bool owns_fd_ = false;
  bool eof_ = false;
  std::unique_ptr<char[]> buf_;
  std::size_t pos_ = 0, end_ = 0;
  std::uint64_t total_ = 0, size_ = 0;
};

// The part of libzstd's stable ABI we call (zstd.h, "streaming decompression", since v1.0).
struct ZstdInBuffer {
  const void* src;
  std::size_t size;
  std::size_t pos;
};
struct ZstdOutBuffer {
  void* dst;
  std::size_t size;
  std::size_t pos;
};
struct ZstdApi {
  void* (*create_dstream)() = nullptr;
  std::size_t (*free_dstream)(void*) = nullptr;
  std::size_t (*init_dstream)(void*) = nullptr;
  std::size_t (*decompress_stream)(void*, ZstdOutBuffer*, ZstdInBuffer*) = nullptr;
  unsigned (*is_error)(std::size_t) = nullptr;
  const char* (*error_name)(std::size_t) = nullptr;
  bool loaded = false;
  std::string why;  // when not loaded: dlerror's text
};

template <typename Fn>
void bind_symbol(void* lib, const char* name, Fn& fn, std::string& why) {
  fn = reinterpret_cast<Fn>(::dlsym(lib, name));
  if (!fn && why.empty()) why = std::string("no symbol ") + name;
}

// Loaded once per process, on first use, whichever thread gets there first (a function-local
// static is initialised exactly once). The library stays loaded: sources may outlive any caller.
inline const ZstdApi& zstd_api() {
  static const ZstdApi api = [] {
    ZstdApi a;
    const char* env = std::getenv("MIXSIEVE_ZSTD_LIBRARY");
    const std::string name = env && *env ? env : "libzstd.so.1";
    void* lib = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* err = ::dlerror();
      a.why = err ? err : name + ": cannot be loaded";
      return a;
    }
    bind_symbol(lib, "ZSTD_createDStream", a.create_dstream, a.why);
    bind_symbol(lib, "ZSTD_freeDStream", a.free_dstream, a.why);
    bind_symbol(lib, "ZSTD_initDStream", a.init_dstream, a.why);
    bind_symbol(lib, "ZSTD_decompressStream", a.decompress_stream, a.why);
    bind_symbol(lib, "ZSTD_isError", a.is_error, a.why);
    bind_symbol(lib, "ZSTD_getErrorName", a.error_name, a.why);
    if (!a.why.empty()) {
      a.why = name + ": " + a.why;
      ::dlclose(lib);
      return a;
    }
    a.loaded = true;
    return a;
  }();
  return api;
}

// Upper bound on decoder calls in a row that neither take input nor give output; both decoders
// stop on their own well before it, this only guards against a loop on a decoder bug.
constexpr int kMaxIdleCalls = 64;

}  // namespace detail

// True when libzstd could be loaded (the first call loads it; thread-safe). Otherwise false, with
// the loader's reason in *why.
inline bool zstd_available(std::string* why = nullptr) {
  const detail::ZstdApi& api = detail::zstd_api();
  if (why) *why = api.why;
  return api.loaded;
}

class ByteSource {
 public:
  // path "-" is standard input. gzip (1F 8B, concatenated members too) and zstd (28 B5 2F FD or a
  // skippable frame first; concatenated and skippable frames too) are decompressed; xz and bzip2
  // are refused with a way to pipe them in; anything else is read as it is.
  static std::unique_ptr<ByteSource> open(const std::string& path);
  virtual ~ByteSource() = default;
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  // Up to n decompressed bytes into buf; 0 only at the end (or when n is 0). Corrupt or truncated
  // data throws SourceError.
  virtual std::size_t read(char* buf, std::size_t n) = 0;
  virtual const char* format() const = 0;  // "plain" | "gzip" | "zstd"
  // Bytes of the file handed to the decoder so far (for progress against raw_size).
  std::uint64_t raw_bytes_read() const { return raw_->consumed(); }
  // The file's size from fstat; 0 when unknown (a pipe, a terminal).
  std::uint64_t raw_size() const { return raw_->size(); }

 protected:
  explicit ByteSource(std::unique_ptr<detail::RawInput> raw) : raw_(std::move(raw)) {}
  const std::string& path() const { return raw_->path(); }

  std::unique_ptr<detail::RawInput> raw_;
};

namespace detail {

class PlainSource final : public ByteSource {
 public:
  explicit PlainSource(std::unique_ptr<RawInput> raw) : ByteSource(std::move(raw)) {}
  const char* format() const override { return "plain"; }
  std::size_t read(char* buf, std::size_t n) override {
    if (n == 0) return 0;
    if (raw_->available() == 0) {
      if (n >= RawInput::kBlock) return raw_->read_direct(buf, n);
      if (!raw_->refill()) return 0;
    }
    const std::size_t k = std::min(n, raw_->available());
    std::memcpy(buf, raw_->data(), k);
    raw_->consume(k);
    return k;
  }
};

// The loop both decoders share: feed the decoder what has been read, return what it produced.
// A stream is a series of units (gzip members, zstd frames); the input may end only after a
// whole unit. A decoder that neither takes input nor gives output kMaxIdleCalls times in a row
// is reported instead of looping.
class DecoderSource : public ByteSource {
 public:
  std::size_t read(char* buf, std::size_t n) final {
    if (n == 0) return 0;
    int idle = 0;
    for (;;) {
      if (raw_->available() == 0) raw_->refill();
      const bool input_ended = raw_->available() == 0;
      if (unit_done_) {
        if (input_ended) return 0;
        next_unit();
        unit_done_ = false;
      }
      // At the end of the input the decoder still runs: output held back by a full buffer.
      const Step st = step(buf, n);
      raw_->consume(st.taken);
      unit_done_ = st.unit_done;
      if (st.produced > 0) return st.produced;
      if (unit_done_) continue;
      if (input_ended) throw corrupt(std::string("the input ends inside a ") + unit_name_);
      if (st.taken == 0 && ++idle > kMaxIdleCalls) throw corrupt("the decoder makes no progress");
      if (st.taken > 0) idle = 0;
    }
  }

 protected:
  DecoderSource(std::unique_ptr<RawInput> raw, const char* unit_name)
      : ByteSource(std::move(raw)), unit_name_(unit_name) {}
  struct Step {
    std::size_t taken, produced;
    bool unit_done;
  };
  // One decoder call on raw_'s available bytes into buf (throws for corrupt data).
  virtual Step step(char* buf, std::size_t n) = 0;
  virtual void next_unit() {}  // before decoding the unit after a finished one
  SourceError corrupt(const std::string& why) const {
    return SourceError(path() + ": corrupt or truncated " + format() + " data (" + why + ")");
  }

 private:
  const char* unit_name_;
  bool unit_done_ = false;
};

#ifdef MIXSIEVE_HAVE_ZLIB
class GzipSource final : public DecoderSource {
 public:
  explicit GzipSource(std::unique_ptr<RawInput> raw) : DecoderSource(std::move(raw), "member") {
    if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) throw SourceError(path() + ": cannot start the gzip decoder");
  }
  ~GzipSource() override { inflateEnd(&zs_); }
  const char* format() const override { return "gzip"; }

 private:
  Step step(char* buf, std::size_t n) override {
    zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw_->data()));
    zs_.avail_in = static_cast<uInt>(std::min<std::size_t>(raw_->available(), UINT_MAX));
    zs_.next_out = reinterpret_cast<Bytef*>(buf);
    zs_.avail_out = static_cast<uInt>(std::min<std::size_t>(n, UINT_MAX));
    const uInt in_before = zs_.avail_in, out_before = zs_.avail_out;
    const int rc = inflate(&zs_, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END) {
      throw corrupt(zs_.msg ? zs_.msg : "zlib error " + std::to_string(rc));
    }
    return {in_before - zs_.avail_in, out_before - zs_.avail_out, rc == Z_STREAM_END};
  }
  void next_unit() override { inflateReset(&zs_); }  // the next of concatenated members

  z_stream zs_{};
};
#endif

class ZstdSource final : public DecoderSource {
 public:
  ZstdSource(std::unique_ptr<RawInput> raw, const ZstdApi& api) : DecoderSource(std::move(raw), "frame"), api_(api) {
    ds_ = api_.create_dstream();
    if (!ds_) throw SourceError(path() + ": cannot start the zstd decoder (out of memory)");
    const std::size_t rc = api_.init_dstream(ds_);
    if (api_.is_error(rc)) {
      api_.free_dstream(ds_);
      throw SourceError(path() + ": cannot start the zstd decoder (" + api_.error_name(rc) + ")");
    }
  }
  ~ZstdSource() override { api_.free_dstream(ds_); }
  const char* format() const override { return "zstd"; }

 private:
  // The stream decoder moves from one frame to the next by itself: no next_unit.
  Step step(char* buf, std::size_t n) override {
    ZstdInBuffer in{raw_->data(), raw_->available(), 0};
    ZstdOutBuffer out{buf, n, 0};
    const std::size_t rc = api_.decompress_stream(ds_, &out, &in);
    if (api_.is_error(rc)) throw decode_error(rc);
    return {in.pos, out.pos, rc == 0};  // 0: a frame fully decoded and flushed
  }

  SourceError decode_error(std::size_t rc) const {
    const char* name = api_.error_name(rc);
    // A frame made with --long or --ultra asks for a window past libzstd's default limit (128 MiB);
    // its memory is the caller's choice, made outside.
    if (std::strstr(name, "too much memory")) {
      const std::string shown = path() == "-" ? "FILE" : path();
      return SourceError(path() + ": zstd data that declares a decoding window over 128 MiB (written by zstd --long "
                         "or --ultra, or corrupt: " + name + "); decompress first: zstd -dc --long=31 " + shown +
                         " | mixsieve-dedup - ...");
    }
    return corrupt(name);
  }

  const ZstdApi& api_;
  void* ds_ = nullptr;
};

inline bool starts_with(const RawInput& raw, std::initializer_list<unsigned char> magic) {
  if (raw.available() < magic.size()) return false;
  return std::equal(magic.begin(), magic.end(), reinterpret_cast<const unsigned char*>(raw.data()));
}

}  // namespace detail

inline std::unique_ptr<ByteSource> ByteSource::open(const std::string& path) {
  auto raw = std::make_unique<detail::RawInput>(path);
  raw->fill_to(10);
  const auto* b = reinterpret_cast<const unsigned char*>(raw->data());
  const std::size_t have = raw->available();
  const std::string pipe_name = path == "-" ? "FILE" : path;

  if (detail::starts_with(*raw, {0x1F, 0x8B})) {
#ifdef MIXSIEVE_HAVE_ZLIB
    return std::make_unique<detail::GzipSource>(std::move(raw));
#else
    throw SourceError(path + ": gzip-compressed input, but this build of mixsieve has no zlib; rebuild it with zlib "
                      "(apt install zlib1g-dev / dnf install zlib-devel) or decompress first: gzip -dc " +
                      pipe_name + " | mixsieve-dedup - ...");
#endif
  }
  // A zstd frame, or a skippable frame (magic 0x184D2A50..0x184D2A5F, little-endian) ahead of one.
  const bool zstd = detail::starts_with(*raw, {0x28, 0xB5, 0x2F, 0xFD}) ||
                    (have >= 4 && (b[0] & 0xF0) == 0x50 && b[1] == 0x2A && b[2] == 0x4D && b[3] == 0x18);
  if (zstd) {
    const detail::ZstdApi& api = detail::zstd_api();
    if (!api.loaded) {
      throw SourceError(path + ": zstd-compressed input needs libzstd.so.1, which could not be loaded (" + api.why +
                        "); install it (apt install libzstd1 / dnf install libzstd) or decompress first: zstd -dc " +
                        pipe_name + " | mixsieve-dedup - ...");
    }
    return std::make_unique<detail::ZstdSource>(std::move(raw), api);
  }
  // bzip2: "BZh", the block size 1-9, then a block's or the end's 48-bit magic (pi or sqrt(pi)).
  const bool bzip2 = have >= 10 && b[0] == 'B' && b[1] == 'Z' && b[2] == 'h' && b[3] >= '1' && b[3] <= '9' &&
                     (std::memcmp(b + 4, "\x31\x41\x59\x26\x53\x59", 6) == 0 ||
                      std::memcmp(b + 4, "\x17\x72\x45\x38\x50\x90", 6) == 0);
  const char* other = detail::starts_with(*raw, {0xFD, '7', 'z', 'X', 'Z', 0x00}) ? "xz" : bzip2 ? "bzip2" : nullptr;
  if (other) {
    const std::string tool = other;
    throw SourceError(path + ": " + tool + "-compressed input, which mixsieve does not decompress (only gzip and zstd); "
                      "feed it through standard input, e.g. " + tool + " -dc " + pipe_name +
                      " | mixsieve-dedup - -o OUT ...");
  }
  return std::make_unique<detail::PlainSource>(std::move(raw));
}

}  // namespace mixsieve::io
