// mixsieve-dedup: near-duplicate removal for JSONL / text corpora, one native command.
// Reads every input into memory (decompressing gzip), computes MinHash signatures on all
// cores straight from the parsed text, clusters with the same LSH + union-find code as
// mixsieve.dedup (so results agree exactly), and writes the kept records byte for byte.
// Exit codes: 0 success, 1 bad input, 2 usage.
#ifdef MIXSIEVE_HAVE_ZLIB
#include <zlib.h>
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <charconv>
#include <cmath>
#include <csignal>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mixsieve/jsonl.hpp"
#include "mixsieve/lsh.hpp"
#include "mixsieve/minhash.hpp"
#include "mixsieve/parallel.hpp"
#include "mixsieve/union_find.hpp"
#include "mixsieve/xxh64.hpp"

#ifndef MIXSIEVE_VERSION
#define MIXSIEVE_VERSION "0.0.0"
#endif

namespace fs = std::filesystem;
using namespace mixsieve;

namespace {

constexpr int kExitOk = 0, kExitInput = 1, kExitUsage = 2;

// Standard descriptors the caller left closed (`>&-`). They are opened on /dev/null at start,
// so no file this run opens takes their number (an output given fd 1 would otherwise share it
// with anything written to standard output); writing to or reading from a closed one is an
// error, not a silent /dev/null.
bool g_stdin_closed = false, g_stdout_closed = false;

bool open_standard_descriptors() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    const int got = ::open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (got != fd) return false;  // open takes the lowest free number: this one
    if (fd == 0) g_stdin_closed = true;
    if (fd == 1) g_stdout_closed = true;
  }
  return true;
}

const char* kHelp = R"(usage: mixsieve-dedup INPUT... -o OUT [options]

Remove near-duplicate documents (MinHash + LSH, verified, union-find clusters; the lowest
document of each cluster is kept). Kept records are written byte for byte, in input order.
All input is held in memory: expect the (decompressed) input size plus about 1 KB per document.

inputs:
  INPUT                 files or directories (walked recursively in sorted order); '-' is stdin.
                        gzip input is detected and decompressed (any name, e.g. .jsonl.gz);
                        for zstd/xz/bzip2, decompress into stdin: zstd -dc f.zst | mixsieve-dedup -
                        A UTF-8 byte order mark at the start of a file or line is ignored.
                        A directory that contributes no file is an error (exit 2).
  --format F            jsonl (default): one JSON object per line, text in --text-field;
                        lines: one document per line of plain text;
                        file: one document per file (output: one JSON line {"file", "text"} each).
                        Directories contribute *.jsonl/*.json/*.ndjson (jsonl), *.txt (lines),
                        or every file (file), each optionally .gz.
  --text-field NAME     JSON field holding the text (default: text)
  --id-field NAME       JSON field identifying a record, copied into the report

output:
  -o, --output OUT      kept records; '-' (or /dev/stdout) is stdout. Files are written to an
                        unnamed temporary file in OUT's folder (or a hidden name removed on
                        SIGINT/SIGTERM where the file system lacks O_TMPFILE), synced, and moved
                        into place when complete: a killed run leaves no partial file. Two
                        outputs, or an output and an input, that are the same file are refused
                        (exit 2); files in an INPUT directory that are this run's outputs are not
                        read. A device or FIFO is written in place; a symbolic link is written
                        through (the file it leads to is replaced).
  --report FILE         one JSON line per removed document: file, line, id, what it duplicates
                        (file/line/id, or index_key for a document of --index), and jaccard
  --index FILE          deduplicate against an index saved by an earlier run or by
                        mixsieve.LSHIndex.save (created if missing and --update-index is given).
                        The index records its hasher (num-perm, ngram, unit, seed): flags left
                        out are taken from it, flags that differ are refused (exit 2). An index
                        that records no hasher needs --ngram, --unit and --seed.
  --update-index        write FILE back, extended with this run's kept documents

MinHash / LSH:
  --threshold T         Jaccard threshold in (0, 1) (default 0.8)
  --num-perm K          permutations (default 128)
  --ngram N             shingle width (default 5)
  --unit word|char      shingle unit (default word; char for text without spaces)
  --bands B --rows R    LSH banding (default: chosen from the threshold)
  --seed S              hash seed (default 1)

running:
  --threads N           threads (default: all cores)
  --on-error fail|skip  bad records: stop with file:line (default), or count them, report them
                        on stderr and pass them through to the output unchanged
  --invalid-utf8 fail|replace
                        ill-formed UTF-8 in a text: a bad record (default) or replaced by U+FFFD
  --progress            progress on stderr (default: only when stderr is a terminal)
  --quiet               no progress and no summary
  -h, --help            this help;  --version  the version

exit status: 0 success, 1 bad input (with file:line) or an unwritable output, 2 usage
(including out-of-range numbers and outputs that are the same file as another path).
)";

struct Options {
  std::vector<std::string> inputs;
  std::string output, report, index;
  std::string format = "jsonl", text_field = "text", id_field;
  bool update_index = false;
  double threshold = 0.8;
  int num_perm = 128, ngram = 5, bands = 0, rows = 0;
  Unit unit = Unit::Word;
  std::uint64_t seed = 1;
  unsigned threads = 0;
  bool skip_errors = false, replace_utf8 = false;
  int progress = -1;  // -1 auto, 0 off, 1 on
  bool quiet = false;
  // Which hasher flags were given explicitly (checked against an index's metadata).
  bool set_ngram = false, set_unit = false, set_seed = false, set_num_perm = false, set_threshold = false;
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A whole decimal integer in [lo, hi]; anything else (sign, junk, overflow) is a usage error
// naming the flag.
std::uint64_t parse_integer(const std::string& flag, const std::string& v, std::uint64_t lo, std::uint64_t hi) {
  std::uint64_t x = 0;
  const char* end = v.data() + v.size();
  const auto [ptr, ec] = std::from_chars(v.data(), end, x);
  if (v.empty() || ec != std::errc() || ptr != end || x < lo || x > hi) {
    throw UsageError(flag + ": '" + v + "' is not an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                     "]");
  }
  return x;
}

double parse_fraction(const std::string& flag, const std::string& v) {
  try {
    std::size_t used = 0;
    const double x = std::stod(v, &used);
    if (used == v.size() && std::isfinite(x) && x > 0.0 && x < 1.0) return x;
  } catch (const std::exception&) {
  }
  throw UsageError(flag + ": '" + v + "' is not a number in (0, 1)");
}

constexpr std::uint64_t kMaxSmall = 1 << 16;  // num-perm, ngram, bands, rows, threads

void check_banding(const Options& o, int num_perm) {
  if (o.bands > 0 && static_cast<long long>(o.bands) * o.rows > num_perm) {
    throw UsageError("--bands * --rows = " + std::to_string(o.bands) + " * " + std::to_string(o.rows) + " = " +
                     std::to_string(static_cast<long long>(o.bands) * o.rows) + " exceeds --num-perm " +
                     std::to_string(num_perm));
  }
}

Options parse_args(int argc, char** argv) {
  Options o;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UsageError(a + " needs a value");
      return args[++i];
    };
    if (a == "-h" || a == "--help") {
      std::fputs(kHelp, stdout);
      std::exit(kExitOk);
    } else if (a == "--version") {
      std::printf("mixsieve-dedup %s\n", MIXSIEVE_VERSION);
      std::exit(kExitOk);
    } else if (a == "-o" || a == "--output") {
      o.output = value();
      if (o.output.empty()) throw UsageError(a + ": an empty output path");
    } else if (a == "--report") {
      o.report = value();
      if (o.report.empty()) throw UsageError(a + ": an empty output path");
    } else if (a == "--index") {
      o.index = value();
      if (o.index.empty()) throw UsageError(a + ": an empty path");
    } else if (a == "--update-index") {
      o.update_index = true;
    } else if (a == "--format") {
      o.format = value();
      if (o.format != "jsonl" && o.format != "lines" && o.format != "file") {
        throw UsageError("--format must be jsonl, lines or file, got '" + o.format + "'");
      }
    } else if (a == "--text-field") {
      o.text_field = value();
    } else if (a == "--id-field") {
      o.id_field = value();
    } else if (a == "--threshold") {
      o.threshold = parse_fraction(a, value());
      o.set_threshold = true;
    } else if (a == "--num-perm") {
      o.num_perm = static_cast<int>(parse_integer(a, value(), 1, kMaxSmall));
      o.set_num_perm = true;
    } else if (a == "--ngram") {
      o.ngram = static_cast<int>(parse_integer(a, value(), 1, kMaxSmall));
      o.set_ngram = true;
    } else if (a == "--unit") {
      const std::string u = value();
      if (u != "word" && u != "char") throw UsageError("--unit must be word or char, got '" + u + "'");
      o.unit = u == "word" ? Unit::Word : Unit::Char;
      o.set_unit = true;
    } else if (a == "--bands") {
      o.bands = static_cast<int>(parse_integer(a, value(), 1, kMaxSmall));
    } else if (a == "--rows") {
      o.rows = static_cast<int>(parse_integer(a, value(), 1, kMaxSmall));
    } else if (a == "--seed") {
      o.seed = parse_integer(a, value(), 0, UINT64_MAX);
      o.set_seed = true;
    } else if (a == "--threads") {
      o.threads = static_cast<unsigned>(parse_integer(a, value(), 1, kMaxSmall));
    } else if (a == "--on-error") {
      const std::string v = value();
      if (v != "fail" && v != "skip") throw UsageError("--on-error must be fail or skip");
      o.skip_errors = v == "skip";
    } else if (a == "--invalid-utf8") {
      const std::string v = value();
      if (v != "fail" && v != "replace") throw UsageError("--invalid-utf8 must be fail or replace");
      o.replace_utf8 = v == "replace";
    } else if (a == "--progress") {
      o.progress = 1;
    } else if (a == "--quiet") {
      o.quiet = true;
      o.progress = 0;
    } else if (a.size() > 1 && a[0] == '-' && a != "-") {
      throw UsageError("unknown option " + a);
    } else {
      o.inputs.push_back(a);
    }
  }
  if (o.inputs.empty()) throw UsageError("no INPUT given");
  if (o.output.empty()) throw UsageError("-o OUT is required");
  if ((o.bands > 0) != (o.rows > 0)) throw UsageError("--bands and --rows go together");
  // With --index, num_perm may come from the index: bands * rows is checked once it is known.
  if (o.index.empty()) check_banding(o, o.num_perm);
  if (o.update_index && o.index.empty()) throw UsageError("--update-index needs --index FILE");
  return o;
}

// ---- reading ----

struct Input {
  std::string name;  // as shown in messages and reports
  std::string data;  // whole content, decompressed
};

bool has_suffix(const std::string& s, std::string_view suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

bool wanted_in_directory(const std::string& path, const std::string& format) {
  std::string p = has_suffix(path, ".gz") ? path.substr(0, path.size() - 3) : path;
  if (format == "jsonl") return has_suffix(p, ".jsonl") || has_suffix(p, ".json") || has_suffix(p, ".ndjson");
  if (format == "lines") return has_suffix(p, ".txt");
  return true;
}

std::string gunzip(const std::string& name, const std::string& raw) {
#ifndef MIXSIEVE_HAVE_ZLIB
  (void)raw;
  throw InputError(name + ": gzip input, but this mixsieve-dedup was built without zlib");
#else
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw InputError(name + ": cannot start gzip decoder");
  std::string out;
  out.resize(std::max<std::size_t>(raw.size() * 4, 1 << 16));
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  zs.avail_in = static_cast<uInt>(std::min<std::size_t>(raw.size(), UINT32_MAX));
  std::size_t fed = zs.avail_in;
  std::size_t produced = 0;
  int rc;
  do {
    if (produced == out.size()) out.resize(out.size() * 2);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + produced);
    zs.avail_out = static_cast<uInt>(std::min<std::size_t>(out.size() - produced, UINT32_MAX));
    const std::size_t before = zs.avail_out;
    rc = inflate(&zs, Z_NO_FLUSH);
    produced += before - zs.avail_out;
    if (zs.avail_in == 0 && fed < raw.size()) {
      const std::size_t more = std::min<std::size_t>(raw.size() - fed, UINT32_MAX);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()) + fed);
      zs.avail_in = static_cast<uInt>(more);
      fed += more;
    }
    if (rc == Z_STREAM_END && (zs.avail_in > 0 || fed < raw.size())) {
      inflateReset(&zs);  // concatenated gzip members
      rc = Z_OK;
    }
  } while (rc == Z_OK || (rc == Z_BUF_ERROR && zs.avail_out == 0));
  inflateEnd(&zs);
  if (rc != Z_STREAM_END) throw InputError(name + ": corrupt or truncated gzip data");
  out.resize(produced);
  return out;
#endif
}

std::string read_all(const std::string& path) {
  if (path == "-") {
    std::string data;
    char buf[1 << 16];
    std::size_t got;
    while ((got = std::fread(buf, 1, sizeof(buf), stdin)) > 0) data.append(buf, got);
    if (std::ferror(stdin)) throw InputError("-: cannot read standard input");
    return data;
  }
  // Sized from fstat and read in place: no growth by doubling, so a file costs its size.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw InputError(path + ": cannot read (" + (S_ISDIR(st.st_mode) ? "is a directory" : std::strerror(errno)) + ")");
  }
  std::string data;
  if (S_ISREG(st.st_mode)) data.reserve(static_cast<std::size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const std::size_t room = data.capacity() - data.size();
    if (S_ISREG(st.st_mode) && room > 0) {
      const std::size_t old = data.size();
      data.resize(data.capacity());
      const ssize_t got = ::read(fd, data.data() + old, room);
      if (got < 0 && errno == EINTR) {
        data.resize(old);
        continue;
      }
      if (got < 0) {
        ::close(fd);
        throw InputError(path + ": read error (" + std::strerror(errno) + ")");
      }
      data.resize(old + static_cast<std::size_t>(got));
      if (got == 0) break;
      continue;
    }
    const ssize_t got = ::read(fd, buf, sizeof(buf));  // the file grew, or is not regular
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      ::close(fd);
      throw InputError(path + ": read error (" + std::strerror(errno) + ")");
    }
    if (got == 0) break;
    data.append(buf, static_cast<std::size_t>(got));
  }
  ::close(fd);
  return data;
}

bool starts_with_bytes(const std::string& s, std::initializer_list<unsigned char> magic) {
  if (s.size() < magic.size()) return false;
  std::size_t i = 0;
  for (unsigned char m : magic) {
    if (static_cast<unsigned char>(s[i++]) != m) return false;
  }
  return true;
}

// gzip data (by its magic bytes, whatever the name) decompressed; other compressed formats
// named with a way to feed them; anything else as it is.
std::string maybe_gunzip(const std::string& name, std::string raw) {
  if (starts_with_bytes(raw, {0x1F, 0x8B})) return gunzip(name, raw);
  const char* other = starts_with_bytes(raw, {0x28, 0xB5, 0x2F, 0xFD})         ? "zstd"
                      : starts_with_bytes(raw, {0xFD, '7', 'z', 'X', 'Z', 0x00}) ? "xz"
                      : starts_with_bytes(raw, {'B', 'Z', 'h'})                  ? "bzip2"
                                                                                 : nullptr;
  if (other) {
    const std::string tool = other;
    throw InputError(name + ": " + tool + "-compressed input, which mixsieve-dedup does not decompress (only gzip); "
                     "feed it through standard input, e.g. " + tool + " -dc " + (name == "-" ? "FILE" : name) +
                     " | mixsieve-dedup - -o OUT ...");
  }
  return raw;
}

// Names of standard output: '-' and the system's names for descriptor 1. Written as standard
// output (not renamed over: /dev/stdout is a link that must stay one).
bool is_stdout_name(const std::string& path) {
  return path == "-" || path == "/dev/stdout" || path == "/dev/fd/1" || path == "/proc/self/fd/1";
}

// The absolute path a path leads to, symbolic links followed (the last component's too, also
// when its target does not exist yet: a dangling link leads to the file it would create).
std::string resolve_links(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::absolute(path, ec);
  if (ec) return path;
  for (int hops = 0; hops < 40; ++hops) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) break;
    const fs::path target = fs::read_symlink(p, ec);
    if (ec) break;
    p = target.is_absolute() ? target : p.parent_path() / target;
  }
  const fs::path canon = fs::weakly_canonical(p, ec);
  return (ec ? p : canon).lexically_normal().string();
}

// Which file a path names: device and inode when it exists, else the absolute path with '.',
// '..' and symbolic links resolved. Two paths name the same file when these agree.
struct FileId {
  bool exists = false;
  dev_t dev = 0;
  ino_t ino = 0;
  std::string canon;
  bool same(const FileId& o) const { return exists && o.exists ? dev == o.dev && ino == o.ino : canon == o.canon; }
};

// Standard output: whatever descriptor 1 is (file, pipe, terminal), so that a path naming the
// same file or pipe (/dev/stdout when the name is not recognised, /proc/PID/fd/1, the file
// stdout is redirected to) counts as standard output.
FileId stdout_id() {
  FileId id;
  struct stat st {};
  if (::fstat(1, &st) == 0) {
    id.exists = true;
    id.dev = st.st_dev;
    id.ino = st.st_ino;
  }
  id.canon = "<standard output>";
  return id;
}

FileId file_id(const std::string& path) {
  if (is_stdout_name(path)) return stdout_id();
  FileId id;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    id.exists = true;
    id.dev = st.st_dev;
    id.ino = st.st_ino;
  }
  id.canon = resolve_links(path);
  return id;
}

struct Path {
  std::string name;  // as given (messages)
  std::string what;  // "-o", "--report", "--index", "input"
  FileId id;
};

// The input files, folders expanded (recursively, sorted). Files of a folder that are one of
// `outputs` are left out: a run never reads what it writes.
std::vector<std::string> expand_inputs(const Options& o, const std::vector<Path>& outputs) {
  std::vector<std::string> paths;
  for (const std::string& in : o.inputs) {
    std::error_code ec;
    if (in != "-" && fs::is_directory(in, ec)) {
      std::vector<std::string> found;
      for (auto it = fs::recursive_directory_iterator(in, ec); !ec && it != fs::recursive_directory_iterator();
           it.increment(ec)) {
        if (!it->is_regular_file(ec) || !wanted_in_directory(it->path().string(), o.format)) continue;
        const FileId id = file_id(it->path().string());
        bool is_output = false;
        for (const Path& out : outputs) is_output = is_output || out.id.same(id);
        if (!is_output) found.push_back(it->path().string());
      }
      if (ec) throw InputError(in + ": cannot read directory (" + ec.message() + ")");
      if (found.empty()) {
        throw UsageError(in + ": no input files in this directory (" +
                         (o.format == "jsonl"   ? std::string("*.jsonl, *.json, *.ndjson, optionally .gz")
                          : o.format == "lines" ? std::string("*.txt, optionally .gz")
                                                : std::string("any file")) +
                         " for --format " + o.format + ")");
      }
      std::sort(found.begin(), found.end());
      paths.insert(paths.end(), found.begin(), found.end());
    } else {
      if (in != "-" && !fs::exists(in, ec)) throw InputError(in + ": no such file or directory");
      paths.push_back(in);
    }
  }
  return paths;
}

std::vector<Input> read_inputs(const std::vector<std::string>& paths, unsigned threads) {
  std::vector<Input> inputs(paths.size());
  // Read (and decompress) files in parallel: I/O and inflate dominate for .gz corpora.
  parallel_for(paths.size(), threads, 1, [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) {
      inputs[i].name = paths[i];
      if (paths[i] != "-") inputs[i].data = maybe_gunzip(paths[i], read_all(paths[i]));
    }
  });
  for (Input& in : inputs) {  // standard input is read on this thread
    if (in.name == "-" && g_stdin_closed) throw InputError("-: standard input is closed");
    if (in.name == "-") in.data = maybe_gunzip("-", read_all("-"));
  }
  return inputs;
}

// A record: bytes [begin, end) of an input (end includes the line's newline, if any).
struct Record {
  std::uint32_t input;
  std::uint64_t line;  // 1-based; 0 for --format file
  std::size_t begin, end;
  bool blank = false;  // whitespace-only line: passed through, not a document
  std::uint8_t bom = 0;  // bytes of a UTF-8 byte order mark opening the record (not its text)
};

bool bom_at(const std::string& d, std::size_t pos) {
  return d.size() >= pos + 3 && static_cast<unsigned char>(d[pos]) == 0xEF &&
         static_cast<unsigned char>(d[pos + 1]) == 0xBB && static_cast<unsigned char>(d[pos + 2]) == 0xBF;
}

std::vector<Record> split_records(const std::vector<Input>& inputs, const std::string& format) {
  std::vector<Record> recs;
  for (std::uint32_t f = 0; f < inputs.size(); ++f) {
    const std::string& d = inputs[f].data;
    if (format == "file") {
      recs.push_back({f, 0, 0, d.size(), false, static_cast<std::uint8_t>(bom_at(d, 0) ? 3 : 0)});
      continue;
    }
    std::size_t pos = 0;
    std::uint64_t line = 0;
    while (pos < d.size()) {
      const std::size_t nl = d.find('\n', pos);
      const std::size_t end = nl == std::string::npos ? d.size() : nl + 1;
      ++line;
      const std::uint8_t bom = bom_at(d, pos) && pos + 3 <= end ? 3 : 0;
      bool blank = format == "jsonl";
      for (std::size_t i = pos + bom; blank && i < end; ++i) {
        const char c = d[i];
        blank = c == ' ' || c == '\t' || c == '\r' || c == '\n';
      }
      recs.push_back({f, line, pos, end, blank, bom});
      pos = end;
    }
  }
  return recs;
}

// A record's text: without a leading byte order mark, and for lines without the line end.
std::string_view content(const std::vector<Input>& in, const Record& r) {
  std::string_view s(in[r.input].data.data() + r.begin + r.bom, r.end - r.begin - r.bom);
  if (r.line == 0) return s;  // --format file: the whole file is the text
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    if (*p < 0x80) {
      ++p;
      continue;
    }
    bool ok;
    decode_utf8_checked(p, end, ok);
    if (!ok) return false;
  }
  return true;
}

// ---- JSON output helpers ----

// A JSON string literal; ill-formed UTF-8 is written as U+FFFD, so the output is always valid.
std::string json_string(std::string_view s) {
  std::string out = "\"";
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* const end = p + s.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c >= 0x80) {
      const auto* start = p;
      bool ok;
      decode_utf8_checked(p, end, ok);
      if (ok) {
        out.append(reinterpret_cast<const char*>(start), static_cast<std::size_t>(p - start));
      } else {
        out += "\\ufffd";
      }
      continue;
    }
    ++p;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

// ---- output files ----
//
// Written to an unnamed file (O_TMPFILE) in the destination folder, which vanishes with the
// process however it dies; when complete it is synced, linked under a unique hidden name and
// renamed over the destination (atomic), then the folder is synced. Where the file system
// has no O_TMPFILE the hidden name is created up front instead, and removed by the SIGINT /
// SIGTERM / SIGHUP / SIGPIPE handler (only SIGKILL or a power cut can leave it). '-' writes
// to standard output. MIXSIEVE_DEDUP_NO_TMPFILE=1 forces the named fallback (for tests).

constexpr int kMaxTempNames = 8;
// Hidden names that exist right now, for the signal handler (async-signal-safe: fixed buffers,
// a flag per slot, unlink only).
char g_temp_names[kMaxTempNames][4096];
volatile std::sig_atomic_t g_temp_used[kMaxTempNames];

extern "C" void remove_temps_and_die(int sig) {
  for (int i = 0; i < kMaxTempNames; ++i) {
    if (g_temp_used[i]) ::unlink(g_temp_names[i]);
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

// A signal the caller ignores (nohup, trap '' HUP, a shell's background job) stays ignored.
void install_cleanup_handlers() {
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) {
    struct sigaction old {};
    if (::sigaction(sig, nullptr, &old) == 0 && !(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_IGN) continue;
    struct sigaction sa {};
    sa.sa_handler = remove_temps_and_die;
    sigemptyset(&sa.sa_mask);
    for (int other : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) sigaddset(&sa.sa_mask, other);
    ::sigaction(sig, &sa, nullptr);
  }
}

class TempName {
 public:
  TempName() = default;
  TempName(const TempName&) = delete;
  TempName& operator=(const TempName&) = delete;
  ~TempName() { release(true); }
  // Registers `name` (about to be created) for removal on a signal.
  void hold(const std::string& name) {
    if (name.size() >= sizeof(g_temp_names[0])) throw InputError(name + ": path too long");
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 0; i < kMaxTempNames; ++i) {
      if (!g_temp_used[i]) {
        std::memcpy(g_temp_names[i], name.c_str(), name.size() + 1);
        g_temp_used[i] = 1;
        slot_ = i;
        break;
      }
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (slot_ < 0) throw std::logic_error("too many temporary files");
    name_ = name;
  }
  // Forgets the name; removes the file unless it was renamed into place.
  void release(bool remove) {
    if (slot_ < 0) return;
    if (remove) ::unlink(name_.c_str());
    g_temp_used[slot_] = 0;
    slot_ = -1;
  }
  const std::string& name() const { return name_; }

 private:
  int slot_ = -1;
  std::string name_;
};

// The output's name as it appears in its hidden temporary name: whole when short, else its first
// 100 bytes (not splitting a UTF-8 character) and a hash of the whole, so that the hidden name
// stays within NAME_MAX (255 bytes) for any output name that fits.
std::string hidden_stem(const std::string& base) {
  constexpr std::size_t kKeep = 100;
  if (base.size() <= kKeep) return base;
  std::size_t cut = kKeep;
  while (cut > 0 && (static_cast<unsigned char>(base[cut]) & 0xC0) == 0x80) --cut;
  char hash[24];
  std::snprintf(hash, sizeof(hash), "~%08llx",
                static_cast<unsigned long long>(xxh64(base.data(), base.size(), 0) & 0xFFFFFFFFULL));
  return base.substr(0, cut) + hash;
}

// .NAME.mixsieve-tmp.PID.N.T: unique (process id, a counter, the clock), recognisable, at most
// 1 + 109 + 14 + 3 * 20 + 2 bytes.
std::string unique_hidden_name(const fs::path& dir, const std::string& base) {
  static std::atomic<unsigned> counter{0};
  const auto t = static_cast<unsigned long long>(std::chrono::steady_clock::now().time_since_epoch().count());
  return (dir / ("." + hidden_stem(base) + ".mixsieve-tmp." + std::to_string(::getpid()) + "." +
                 std::to_string(counter++) + "." + std::to_string(t % 1000000007ULL)))
      .string();
}

class OutputFile {
 public:
  // Opens the output now (so an unwritable destination is reported before any work).
  explicit OutputFile(const std::string& path) : path_(path) {
    if (is_stdout_name(path)) {
      if (g_stdout_closed) throw InputError(path + ": standard output is closed");
      is_stdout_ = true;
      fd_ = 1;
      return;
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
      // A device, FIFO or socket is written in place: renaming over it would replace it.
      fd_ = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
      if (fd_ < 0) fail_open();
      in_place_ = true;
      return;
    }
    // A symbolic link is written through: the file it leads to is replaced, the link stays.
    target_ = resolve_links(path);
    const fs::path p(target_);
    dir_ = p.has_parent_path() ? p.parent_path().string() : ".";
    base_ = p.filename().string();
    const char* force_named = std::getenv("MIXSIEVE_DEDUP_NO_TMPFILE");
#ifdef O_TMPFILE
    // The finished file is named through /proc/self/fd (linkat): without /proc, use a name.
    if (!(force_named && std::strcmp(force_named, "1") == 0) && ::access("/proc/self/fd", X_OK) == 0) {
      fd_ = ::open(dir_.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
      if (fd_ >= 0) {
        unnamed_ = true;
        return;
      }
      if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL && errno != ENOSYS) fail_open();
    }
#endif
    const std::string tmp = unique_hidden_name(dir_, base_);
    temp_.hold(tmp);
    fd_ = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0) {
      temp_.release(false);
      fail_open();
    }
  }
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  ~OutputFile() {
    if (fd_ >= 0 && !is_stdout_) ::close(fd_);
  }

  void write(std::string_view s) {
    if (s.size() >= (1u << 20)) {  // a big record goes straight out, not through a copy
      flush();
      write_all(s.data(), s.size());
      return;
    }
    buf_.append(s.data(), s.size());
    if (buf_.size() >= (1u << 20)) flush();
  }

  void commit() {
    flush();
    if (is_stdout_) return;
    if (in_place_) {
      const int fd = fd_;
      fd_ = -1;
      if (::close(fd) != 0 && errno != EINTR) fail("write error");
      return;
    }
    if (::fsync(fd_) != 0) fail("cannot sync");
    if (unnamed_) {
      // Give the unnamed file a hidden name, then rename it over the destination.
      const std::string tmp = unique_hidden_name(dir_, base_);
      temp_.hold(tmp);
      const std::string proc = "/proc/self/fd/" + std::to_string(fd_);
      if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, tmp.c_str(), AT_SYMLINK_FOLLOW) != 0) {
        temp_.release(false);
        fail("cannot link the finished file into its folder");
      }
    }
    if (::rename(temp_.name().c_str(), target_.c_str()) != 0) fail("cannot rename into place");
    temp_.release(false);
    ::close(fd_);
    fd_ = -1;
    const int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

 private:
  [[noreturn]] void fail_open() const { throw InputError(path_ + ": cannot write (" + std::strerror(errno) + ")"); }
  [[noreturn]] void fail(const char* what) const {
    throw InputError(path_ + ": " + what + " (" + std::strerror(errno) + ")");
  }
  void flush() {
    write_all(buf_.data(), buf_.size());
    buf_.clear();
  }
  void write_all(const char* p, std::size_t n) {
    std::size_t off = 0;
    while (off < n) {
      const ssize_t w = ::write(fd_, p + off, n - off);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail("write error");
      off += static_cast<std::size_t>(w);
    }
  }

  std::string path_, target_, dir_, base_, buf_;  // target_: path_ with symbolic links followed
  int fd_ = -1;
  bool is_stdout_ = false;  // '-': standard output, never a number test (a temporary can be fd 1)
  bool in_place_ = false;   // not a regular file (device, FIFO, socket): written where it is
  bool unnamed_ = false;
  TempName temp_;
};

// Minimal reader of flat metadata written by LSHIndex.save / this tool: the raw JSON value of
// a top-level field, or empty.
std::string meta_field(const std::string& meta, const std::string& field) {
  JsonLine j;
  parse_json_line(meta, field, "", j);
  if (!j.ok || !j.text.found) return {};
  return j.text.is_string ? j.text.decoded : meta.substr(j.text.begin, j.text.end - j.text.begin);
}

struct Progress {
  bool on;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
};

const char* unit_name(Unit u) { return u == Unit::Word ? "word" : "char"; }

// The shortest decimal that reads back as exactly x (two different doubles never print alike).
std::string shortest(double x) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), x);
  if (ec != std::errc()) {
    std::snprintf(buf, sizeof(buf), "%.17g", x);
    return buf;
  }
  return std::string(buf, end);
}

// This run's documents get the keys after the index's largest (from 0 for a new index). An
// index whose largest key leaves no room for n more below 2^63 is refused (exit 2): the keys
// would wrap around.
std::int64_t first_new_key(const std::vector<std::int64_t>& old_keys, std::size_t n, const std::string& index) {
  if (n == 0) return 0;
  std::int64_t largest = -1;
  for (std::int64_t key : old_keys) largest = std::max(largest, key);
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  const std::uint64_t room = largest < 0 ? static_cast<std::uint64_t>(kMax) + 1 : static_cast<std::uint64_t>(kMax - largest);
  if (n > room) {
    throw UsageError("the index " + index + " holds key " + std::to_string(largest) + ": no room after it for the " +
                     std::to_string(n) + " keys of this run's documents (they follow the index's largest key, " +
                     "at most " + std::to_string(kMax) + ")");
  }
  return largest < 0 ? 0 : largest + 1;
}

// Refuses (exit 2) two outputs, or an output and an input, that are the same file, before any
// work. The index with --update-index is read and then rewritten: that one pair is allowed.
void check_paths(const Options& o, const std::vector<Path>& outputs, const std::vector<std::string>& inputs) {
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    for (std::size_t j = i + 1; j < outputs.size(); ++j) {
      if (outputs[i].id.same(outputs[j].id)) {
        throw UsageError(outputs[i].what + " " + outputs[i].name + " and " + outputs[j].what + " " +
                         outputs[j].name + " are the same file; give each output its own file");
      }
    }
  }
  std::vector<Path> ins;
  for (const std::string& in : inputs) {
    if (in != "-") ins.push_back({in, "input", file_id(in)});
  }
  if (!o.index.empty() && !o.update_index) ins.push_back({o.index, "--index", file_id(o.index)});
  for (const Path& out : outputs) {
    for (const Path& in : ins) {
      if (!out.id.same(in.id)) continue;
      throw UsageError(out.what + " " + out.name + " and " + in.what + " " + in.name +
                       " are the same file: an output is also an input; inputs are never overwritten");
    }
  }
}

int run(const Options& o) {
  Progress prog{o.progress == 1 || (o.progress == -1 && ::isatty(2))};
  std::error_code ec;
  if (!o.index.empty() && fs::is_directory(o.index, ec)) {
    throw UsageError("--index " + o.index + " is a directory; give the index file's path");
  }
  // Every path is resolved and compared before anything is read or written.
  std::vector<Path> outputs;
  outputs.push_back({o.output, "-o", file_id(o.output)});
  if (!o.report.empty()) outputs.push_back({o.report, "--report", file_id(o.report)});
  if (o.update_index) {
    if (is_stdout_name(o.index)) throw UsageError("--index must name a file, not standard output");
    outputs.push_back({o.index, "--index", file_id(o.index)});
  }
  for (const Path& out : outputs) {
    if (!is_stdout_name(out.name) && fs::is_directory(out.name, ec)) {
      throw UsageError(out.what + " " + out.name + " is a directory; give a file name");
    }
  }
  const std::vector<std::string> paths = expand_inputs(o, outputs);
  check_paths(o, outputs, paths);
  install_cleanup_handlers();
  // Outputs are opened now, so an unwritable one is reported before the work.
  OutputFile out(o.output);
  std::optional<OutputFile> rep;
  if (!o.report.empty()) rep.emplace(o.report);
  std::optional<OutputFile> idx_out;
  if (o.update_index) idx_out.emplace(o.index);

  // Index: an earlier run's, or a new one.
  // The earlier index is parsed once into `idx`, the clustering index (old rows first).
  std::string meta;
  std::optional<LSHIndex<std::uint32_t>> idx;
  std::string old_bytes;
  Options p = o;
  if (!o.index.empty() && fs::exists(o.index, ec)) {
    old_bytes = read_all(o.index);
    HasherParams hp;
    std::uint32_t version = 0;
    try {
      if (LSHIndex<std::uint32_t>::peek_width(old_bytes.data(), old_bytes.size()) != 4) {
        throw IndexFormatError("index holds uint64 signatures; mixsieve-dedup uses uint32");
      }
      idx.emplace(LSHIndex<std::uint32_t>::from_bytes(old_bytes.data(), old_bytes.size(), &meta, &hp, &version));
    } catch (const IndexFormatError& e) {
      throw InputError(o.index + ": " + e.what());
    }
    if (!hp.known && version == 1) {  // an older mixsieve-dedup wrote its hasher into the metadata
      const std::string ng = meta_field(meta, "ngram"), un = meta_field(meta, "unit"), sd = meta_field(meta, "seed");
      if (!ng.empty() && !sd.empty() && (un == "word" || un == "char")) {
        try {
          hp.ngram = static_cast<std::uint32_t>(parse_integer("ngram", ng, 1, kMaxSmall));
          hp.seed = parse_integer("seed", sd, 0, UINT64_MAX);
          hp.unit = un == "char" ? Unit::Char : Unit::Word;
          hp.scheme = 1;
          hp.known = true;
        } catch (const UsageError&) {
        }
      }
    }
    const LSHParams& ip = idx->params();
    auto conflict = [&](bool set, const std::string& flag, const std::string& mine, const std::string& theirs) {
      if (set && mine != theirs) {
        throw UsageError(flag + " " + mine + " differs from the index " + o.index + ", made with " + flag + " " +
                         theirs + "; leave " + flag + " out to use the index's");
      }
    };
    conflict(o.set_num_perm, "--num-perm", std::to_string(o.num_perm), std::to_string(ip.num_perm));
    if (o.set_threshold && o.threshold != ip.threshold) {  // exact: 0.8000001 is not the index's 0.8
      throw UsageError("--threshold " + shortest(o.threshold) + " differs from the index " + o.index +
                       ", made with --threshold " + shortest(ip.threshold) + "; leave --threshold out to use the index's");
    }
    conflict(o.bands > 0, "--bands", std::to_string(o.bands), std::to_string(ip.bands));
    conflict(o.rows > 0, "--rows", std::to_string(o.rows), std::to_string(ip.rows));
    p.num_perm = ip.num_perm;
    p.threshold = ip.threshold;
    p.bands = ip.bands;
    p.rows = ip.rows;
    if (hp.known) {
      if (hp.scheme != kSignatureScheme) {
        throw UsageError("the index " + o.index + " holds signatures of scheme " + std::to_string(hp.scheme) +
                         ", this mixsieve-dedup makes scheme " + std::to_string(kSignatureScheme) +
                         " (normalisation or hashing changed): rebuild the index from its documents");
      }
      conflict(o.set_ngram, "--ngram", std::to_string(o.ngram), std::to_string(hp.ngram));
      conflict(o.set_unit, "--unit", unit_name(o.unit), unit_name(hp.unit));
      conflict(o.set_seed, "--seed", std::to_string(o.seed), std::to_string(hp.seed));
      p.ngram = static_cast<int>(hp.ngram);
      p.unit = hp.unit;
      p.seed = hp.seed;
    } else if (!(o.set_ngram && o.set_unit && o.set_seed)) {
      throw UsageError("the index " + o.index +
                       " does not record the hasher that made its signatures (saved by LSHIndex.save without "
                       "hasher=): give --ngram, --unit and --seed as used for it");
    }
  } else if (!o.index.empty() && !o.update_index) {
    throw InputError(o.index + ": no such index file (add --update-index to create it)");
  }
  check_banding(o, p.num_perm);
  std::vector<Input> inputs = read_inputs(paths, o.threads);
  std::vector<Record> recs = split_records(inputs, o.format);
  const std::int64_t next_key = first_new_key(idx ? idx->keys() : std::vector<std::int64_t>{}, recs.size(), o.index);
  std::size_t total_bytes = 0;
  for (const Input& in : inputs) total_bytes += in.data.size();
  if (p.bands == 0) std::tie(p.bands, p.rows) = optimal_bands(p.threshold, p.num_perm);

  // Signatures, straight from the parsed text, on all cores.
  MinHashConfig cfg;
  cfg.num_perm = p.num_perm;
  cfg.ngram = p.ngram;
  cfg.unit = p.unit;
  cfg.seed = p.seed;
  const MinHasher<std::uint32_t> hasher(cfg);
  const std::size_t n = recs.size(), k = static_cast<std::size_t>(p.num_perm);
  std::vector<std::uint32_t> sigs(n * k);
  std::vector<std::string> errors(n);
  std::vector<std::string> ids(n);
  std::atomic<std::size_t> done{0};
  std::atomic<bool> finished{false};
  std::thread reporter;
  if (prog.on) {
    reporter = std::thread([&] {
      while (!finished.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        const double s = prog.seconds();
        const std::size_t d = done.load();
        std::fprintf(stderr, "\rmixsieve-dedup: signatures %zu/%zu documents, %.1f MB/s   ", d, n,
                     n ? static_cast<double>(total_bytes) * static_cast<double>(d) / static_cast<double>(n) / s / 1e6
                       : 0.0);
        std::fflush(stderr);
      }
    });
  }
  parallel_for(n, o.threads, 256, [&](std::size_t b, std::size_t e) {
    MinHashWorkspace<std::uint32_t> ws;
    JsonLine jl;
    for (std::size_t i = b; i < e; ++i) {
      std::uint32_t* sig = sigs.data() + i * k;
      const Record& r = recs[i];
      std::string_view text;
      bool bad_utf8 = false;
      if (r.blank) {
        std::fill(sig, sig + k, UINT32_MAX);
        continue;
      }
      if (o.format == "jsonl") {
        parse_json_line(content(inputs, r), o.text_field, o.id_field, jl);
        if (!jl.ok) {
          errors[i] = "malformed JSON at byte " + std::to_string(jl.error_at + 1) + ": " + jl.error;
        } else if (!jl.text.found) {
          errors[i] = "no field '" + o.text_field + "'";
        } else if (!jl.text.is_string) {
          errors[i] = "field '" + o.text_field + "' is not a string";
        } else {
          text = jl.text.decoded;
          bad_utf8 = jl.text.bad_utf8;
          if (jl.id.found) {
            const std::string_view line = content(inputs, r);
            ids[i] = std::string(line.substr(jl.id.begin, jl.id.end - jl.id.begin));
          }
        }
      } else {
        text = content(inputs, r);
        bad_utf8 = !valid_utf8(text);
      }
      if (errors[i].empty() && bad_utf8 && !o.replace_utf8) {
        errors[i] = "invalid UTF-8 in the text (use --invalid-utf8 replace to accept it)";
      }
      if (errors[i].empty()) {
        hasher.signature(text.data(), text.size(), sig, ws);
      } else {
        std::fill(sig, sig + k, UINT32_MAX);  // never matched: kept and passed through
      }
      done.fetch_add(1, std::memory_order_relaxed);
    }
  });
  finished = true;
  if (reporter.joinable()) {
    reporter.join();
    std::fputc('\n', stderr);
  }
  auto where = [&](const Record& r) {
    return inputs[r.input].name + (r.line ? ":" + std::to_string(r.line) : std::string());
  };
  std::size_t bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (errors[i].empty()) continue;
    if (!o.skip_errors) throw InputError(where(recs[i]) + ": " + errors[i]);
    if (bad < 20) std::fprintf(stderr, "mixsieve-dedup: skipped %s: %s\n", where(recs[i]).c_str(), errors[i].c_str());
    ++bad;
  }
  if (bad > 20) std::fprintf(stderr, "mixsieve-dedup: ... and %zu more bad records\n", bad - 20);

  // Clusters over old index rows (positions 0..m-1) and this run's documents (m..m+n-1).
  LSHParams lp;
  lp.num_perm = p.num_perm;
  lp.bands = p.bands;
  lp.rows = p.rows;
  lp.threshold = p.threshold;
  if (!idx) idx.emplace(lp);
  const std::size_t m = idx->size();
  std::vector<std::int64_t> keys(n), dup_pos(n);
  std::vector<float> sim(n);
  for (std::size_t i = 0; i < n; ++i) keys[i] = next_key + static_cast<std::int64_t>(i);
  UnionFind uf(m + n);
  idx->add_clustered(sigs.data(), n, keys.data(), dup_pos.data(), sim.data(), uf);
  std::vector<char> keep(n);
  std::size_t kept = 0, clusters = 0;
  for (std::size_t i = 0; i < n; ++i) {
    keep[i] = uf.find(static_cast<std::uint32_t>(m + i)) == m + i;
    kept += keep[i];
  }
  {
    std::vector<char> big(m + n, 0);
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t root = uf.find(static_cast<std::uint32_t>(m + i));
      if (!keep[i] && !big[root]) {
        big[root] = 1;
        ++clusters;
      }
    }
  }

  // Outputs.
  for (std::size_t i = 0; i < n; ++i) {
    if (!keep[i]) continue;
    const Record& r = recs[i];
    if (o.format == "file") {
      const std::string_view text = content(inputs, r);
      out.write("{\"file\": " + json_string(inputs[r.input].name) + ", \"text\": " + json_string(text) + "}\n");
    } else {
      const std::string_view rec(inputs[r.input].data.data() + r.begin, r.end - r.begin);
      out.write(rec);
      // A file's last line may lack its newline: end it here, or it would run into the next
      // record (from the next file) on the same output line.
      if (rec.empty() || rec.back() != '\n') out.write("\n");
    }
  }
  if (rep) {
    for (std::size_t i = 0; i < n; ++i) {
      if (keep[i]) continue;
      const Record& r = recs[i];
      std::int64_t target = dup_pos[i];
      double j = sim[i];
      if (target < 0) {  // joined only through later documents: report its cluster's kept one
        target = uf.find(static_cast<std::uint32_t>(m + i));
        j = jaccard_estimate(sigs.data() + i * k, idx->signature(static_cast<std::size_t>(target)), k);
      }
      std::string line = "{\"file\": " + json_string(inputs[r.input].name) + ", \"line\": " +
                         (r.line ? std::to_string(r.line) : "null") + ", \"id\": " + (ids[i].empty() ? "null" : ids[i]) +
                         ", \"duplicate_of\": ";
      if (static_cast<std::size_t>(target) < m) {
        line += "{\"index_key\": " + std::to_string(idx->keys()[static_cast<std::size_t>(target)]) + "}";
      } else {
        const std::size_t t = static_cast<std::size_t>(target) - m;
        const Record& tr = recs[t];
        line += "{\"file\": " + json_string(inputs[tr.input].name) + ", \"line\": " +
                (tr.line ? std::to_string(tr.line) : "null") + ", \"id\": " + (ids[t].empty() ? "null" : ids[t]) + "}";
      }
      char buf[64];
      std::snprintf(buf, sizeof(buf), ", \"jaccard\": %.4f}\n", j);
      rep->write(line + buf);
    }
  }
  if (idx_out) {
    // A clean copy of the earlier index (the clustering one is capped and holds removed rows).
    LSHIndex<std::uint32_t> updated = old_bytes.empty()
                                          ? LSHIndex<std::uint32_t>(lp)
                                          : LSHIndex<std::uint32_t>::from_bytes(old_bytes.data(), old_bytes.size(), nullptr);
    std::vector<std::uint32_t> kept_sigs;
    std::vector<std::int64_t> kept_keys;
    for (std::size_t i = 0; i < n; ++i) {
      if (!keep[i] || !errors[i].empty() || recs[i].blank) continue;
      kept_sigs.insert(kept_sigs.end(), sigs.begin() + static_cast<std::ptrdiff_t>(i * k),
                       sigs.begin() + static_cast<std::ptrdiff_t>((i + 1) * k));
      kept_keys.push_back(keys[i]);
    }
    // Kept documents are not near-duplicates of each other or of the old rows (that is what
    // clustering decided), so they are stored without searching: O(bands) each.
    updated.append(kept_sigs.data(), kept_keys.size(), kept_keys.data());
    HasherParams hp;
    hp.known = true;
    hp.ngram = static_cast<std::uint32_t>(p.ngram);
    hp.unit = p.unit;
    hp.seed = p.seed;
    // The metadata keeps the user's (an index saved from Python) and, for older readers, the hasher.
    std::string m2 = meta.empty() ? "{}" : meta;
    char hasher_json[200];
    std::snprintf(hasher_json, sizeof(hasher_json),
                  "{\"dtype\": \"uint32\", \"ngram\": %d, \"num_perm\": %d, \"seed\": %llu, \"unit\": \"%s\"}",
                  p.ngram, p.num_perm, static_cast<unsigned long long>(p.seed), unit_name(p.unit));
    if (meta.empty()) m2 = hasher_json;
    const std::vector<char> bytes = updated.to_bytes(m2, hp);
    idx_out->write(std::string_view(bytes.data(), bytes.size()));
  }
  out.commit();
  if (rep) rep->commit();
  if (idx_out) idx_out->commit();
  if (!o.quiet) {
    const double s = prog.seconds();
    std::fprintf(stderr,
                 "mixsieve-dedup: %zu documents (%.1f MB) from %zu inputs: kept %zu, removed %zu in %zu clusters%s, "
                 "%.2f s (%.1f MB/s)\n",
                 n, static_cast<double>(total_bytes) / 1e6, inputs.size(), kept, n - kept, clusters,
                 bad ? (", " + std::to_string(bad) + " bad records passed through").c_str() : "", s,
                 static_cast<double>(total_bytes) / 1e6 / std::max(s, 1e-9));
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  // With no descriptor to report on, a message could land in an output: stop silently.
  if (!open_standard_descriptors()) return kExitInput;
  try {
    const Options o = parse_args(argc, argv);
    return run(o);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "mixsieve-dedup: %s\n(see mixsieve-dedup --help)\n", e.what());
    return kExitUsage;
  } catch (const InputError& e) {
    std::fprintf(stderr, "mixsieve-dedup: %s\n", e.what());
    return kExitInput;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "mixsieve-dedup: out of memory\n");
    return kExitInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mixsieve-dedup: %s\n", e.what());
    return kExitInput;
  }
}
