// mixsieve-dedup: near-duplicate removal for JSONL / text corpora, one native command.
// Streams the inputs twice with bounded memory. Pass 1 reads them in chunks of whole records
// (gzip and zstd decompressed as they come, several files at once), computes MinHash
// signatures on all cores straight from the parsed text and appends them to an unnamed
// temporary file. Clustering then runs the same LSH + union-find code as mixsieve.dedup (so
// results agree exactly) over that file through a memory map, and pass 2 reads the inputs
// again and writes the kept records byte for byte. Memory: the LSH tables (a few hundred
// bytes per document) plus a few chunks, whatever the size of the text.
// Exit codes: 0 success, 1 bad input, 2 usage.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <charconv>
#include <cmath>
#include <csignal>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mixsieve/byte_source.hpp"
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
Inputs are streamed twice (signatures, then output); memory is a few hundred bytes per
document (the LSH tables) plus a few 4 MB chunks per thread, not the size of the text.
Signatures wait in a temporary file (num-perm x 4 bytes per document, see --tmp-dir).

inputs:
  INPUT                 files or directories (walked recursively in sorted order); '-' is stdin.
                        gzip and zstd input is detected by its bytes and decompressed (any
                        name, e.g. .jsonl.gz, .jsonl.zst; zstd needs the system's libzstd.so.1,
                        loaded when first needed); for xz/bzip2, decompress into stdin:
                        xz -dc f.xz | mixsieve-dedup - ...  Standard input is copied to a
                        temporary file first (it is read twice).
                        A UTF-8 byte order mark at the start of a file or line is ignored.
                        A directory that contributes no file is an error (exit 2).
  --format F            jsonl (default): one JSON object per line, text in --text-field;
                        lines: one document per line of plain text;
                        file: one document per file (output: one JSON line {"file", "text"} each).
                        Directories contribute *.jsonl/*.json/*.ndjson (jsonl), *.txt (lines),
                        or every file (file), each optionally .gz or .zst.
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
                        (file/line/id, or index_key for a document of --index), jaccard, and
                        exact (true when its normalised text equals an earlier document's)
  --index FILE          deduplicate against an index saved by an earlier run or by
                        mixsieve.LSHIndex.save (created if missing and --update-index is given).
                        The index records its hasher (num-perm, ngram, unit, seed): flags left
                        out are taken from it, flags that differ are refused (exit 2). An index
                        that records no hasher needs --ngram, --unit and --seed.
  --update-index        write FILE back, extended with this run's kept documents (this holds the
                        whole index in memory: its signatures, num-perm x 4 bytes per row)

MinHash / LSH:
  --threshold T         Jaccard threshold in (0, 1) (default 0.8)
  --num-perm K          permutations (default 128)
  --ngram N             shingle width (default 5)
  --unit word|char      shingle unit (default word; char for text without spaces)
  --bands B --rows R    LSH banding (default: chosen from the threshold)
  --seed S              hash seed (default 1)

running:
  --threads N           threads (default: all cores)
  --tmp-dir DIR         folder for the signature file and a copy of standard input (default:
                        $TMPDIR, else /tmp); unnamed, so gone however the run ends. On a
                        tmpfs (often /tmp) it takes memory: point it at a disk for big corpora
  --on-error fail|skip  bad records: stop with file:line (default), or count them, report them
                        on stderr and pass them through to the output unchanged
  --invalid-utf8 fail|replace
                        ill-formed UTF-8 in a text: a bad record (default) or replaced by U+FFFD
  --progress            a progress line on stderr per phase (signatures: MB, documents, MB/s,
                        time left; clustering; writing); default: when stderr is a terminal
  --quiet               no progress and no summary
  -h, --help            this help;  --version  the version

exit status: 0 success, 1 bad input (with file:line) or an unwritable output, 2 usage
(including out-of-range numbers and outputs that are the same file as another path).
)";

struct Options {
  std::vector<std::string> inputs;
  std::string output, report, index, tmp_dir;
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
    } else if (a == "--tmp-dir") {
      o.tmp_dir = value();
      if (o.tmp_dir.empty()) throw UsageError(a + ": an empty path");
    } else if (a == "--update-index") {
      o.update_index = true;
    } else if (a == "--format") {
      o.format = value();
      if (o.format != "jsonl" && o.format != "lines" && o.format != "file") {
        throw UsageError("--format must be jsonl, lines or file, got '" + o.format + "'");
      }
    } else if (a == "--text-field") {
      o.text_field = value();
      if (o.text_field.empty()) throw UsageError("--text-field: an empty field name");
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
  if (std::count(o.inputs.begin(), o.inputs.end(), std::string("-")) > 1) {
    throw UsageError("'-' (standard input) is given more than once; it can be read only once");
  }
  if (o.output.empty()) throw UsageError("-o OUT is required");
  if ((o.bands > 0) != (o.rows > 0)) throw UsageError("--bands and --rows go together");
  // With --index, num_perm may come from the index: bands * rows is checked once it is known.
  if (o.index.empty()) check_banding(o, o.num_perm);
  if (o.update_index && o.index.empty()) throw UsageError("--update-index needs --index FILE");
  return o;
}

// ---- reading ----

struct Record {
  std::uint64_t line;  // 1-based; 0 for --format file
  std::size_t begin, end;  // bytes [begin, end) of its chunk (end includes the line's newline, if any)
  bool blank = false;  // whitespace-only line: passed through, not a document
  std::uint8_t bom = 0;  // bytes of a UTF-8 byte order mark opening the record (not its text)
};

bool has_suffix(const std::string& s, std::string_view suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

bool wanted_in_directory(const std::string& path, const std::string& format) {
  std::string p = path;
  if (has_suffix(p, ".gz")) p.resize(p.size() - 3);
  else if (has_suffix(p, ".zst")) p.resize(p.size() - 4);
  if (format == "jsonl") return has_suffix(p, ".jsonl") || has_suffix(p, ".json") || has_suffix(p, ".ndjson");
  if (format == "lines") return has_suffix(p, ".txt");
  return true;
}

// The whole of a small file (the --index file), as it is.
std::string read_all(const std::string& path) {
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
    const ssize_t got = ::read(fd, buf, sizeof(buf));
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

bool bom_at(const std::string& d, std::size_t pos) {
  return d.size() >= pos + 3 && static_cast<unsigned char>(d[pos]) == 0xEF &&
         static_cast<unsigned char>(d[pos + 1]) == 0xBB && static_cast<unsigned char>(d[pos + 2]) == 0xBF;
}

// A record's text: without a leading byte order mark, and for lines without the line end.
std::string_view content(const std::string& data, const Record& r) {
  std::string_view s(data.data() + r.begin + r.bom, r.end - r.begin - r.bom);
  if (r.line == 0) return s;  // --format file: the whole file is the text
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
  return s;
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
                         (o.format == "jsonl"   ? std::string("*.jsonl, *.json, *.ndjson, optionally .gz or .zst")
                          : o.format == "lines" ? std::string("*.txt, optionally .gz or .zst")
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

// ---- streaming input ----
//
// Inputs are read twice: once for the signatures, once to write the kept records. Each pass
// reads an input in chunks of whole records (about kChunkBytes of decompressed text; a longer
// record makes a longer chunk), so memory holds a few chunks, never an input. Both passes
// split records the same way; the second checks that every chunk hashes as it did the first time.

constexpr std::size_t kChunkBytes = std::size_t{4} << 20;
constexpr std::size_t kReadBytes = std::size_t{1} << 20;
constexpr std::size_t kMaxRecords = std::size_t{1} << 14;  // records per chunk

struct Chunk {
  std::uint32_t input = 0;
  std::uint64_t seq = 0;  // order within the input
  std::string data;
  std::vector<Record> recs;
  std::exception_ptr error;  // a read error, raised when the chunk's turn comes (input order)
  std::uint64_t raw_bytes = 0;  // bytes of the file (compressed, if it is) this chunk consumed
  std::uint64_t hash = 0;  // of data and the record count, made by ChunkPipeline (both passes)
  // Filled by the signature pass:
  std::vector<std::uint32_t> sigs;   // num_perm slots per document (records of kind kDoc), in order
  std::vector<Digest128> digests;    // per document
  std::vector<std::uint8_t> kind;    // per record: kDoc, kBlank, kBad
  std::vector<std::pair<std::size_t, std::string>> errors;  // (record, message)
};
constexpr std::uint8_t kDoc = 0, kBlank = 1, kBad = 2;

class InputReader {
 public:
  // `path` is what to open (a spooled copy of standard input is opened as /proc/self/fd/N);
  // `name` is how messages and reports call it.
  InputReader(const std::string& path, const std::string& name, std::uint32_t index, const std::string& format)
      : path_(path), name_(name), index_(index), format_(format) {
    try {
      src_ = io::ByteSource::open(path);
    } catch (const io::SourceError& e) {
      throw InputError(rename(e.what(), path));
    }
  }

  // The next chunk, or false after the last one. Throws InputError for unreadable data.
  bool next(Chunk& c) {
    if (done_) return false;
    c.input = index_;
    c.seq = seq_;
    c.recs.clear();
    c.data.clear();
    // One allocation for the usual chunk (the string would otherwise double past it).
    c.data.reserve(std::max(kChunkBytes, carry_.size()) + kReadBytes);
    c.data.append(carry_);
    carry_.clear();
    const std::uint64_t raw0 = src_->raw_bytes_read();
    std::size_t scan = 0;  // bytes of c.data already searched for a newline
    std::size_t cut = std::string::npos;
    const bool whole = format_ == "file";
    for (;;) {
      if (!whole && c.data.size() >= kChunkBytes) {
        cut = last_newline(c.data, scan);
        if (cut != std::string::npos) break;
        scan = c.data.size();
      }
      const std::size_t old = c.data.size();
      c.data.resize(old + kReadBytes);
      std::size_t got;
      try {
        got = src_->read(c.data.data() + old, kReadBytes);
      } catch (const io::SourceError& e) {
        c.data.resize(old);
        throw InputError(rename(e.what(), path_));
      }
      c.data.resize(old + got);
      if (got == 0) {
        eof_ = true;
        break;
      }
    }
    if (cut != std::string::npos && cut + 1 < c.data.size()) {
      carry_.assign(c.data, cut + 1, std::string::npos);
      c.data.resize(cut + 1);
    }
    c.raw_bytes = src_->raw_bytes_read() - raw0;
    if (c.data.empty() && !(whole && seq_ == 0)) {  // nothing left (an empty input has no records)
      done_ = true;
      return false;
    }
    ++seq_;
    const std::size_t stop = split(c);
    if (stop < c.data.size()) {  // kMaxRecords reached: the rest waits for the next chunk
      carry_.insert(0, c.data, stop, std::string::npos);
      c.data.resize(stop);
    }
    if (eof_ && carry_.empty()) done_ = true;
    return true;
  }

 private:
  // The last newline at or after `from` (only the bytes not searched before: a long record
  // read 1 MB at a time is scanned once, not once per read).
  static std::size_t last_newline(const std::string& d, std::size_t from) {
    if (from >= d.size()) return std::string::npos;
    const void* p = ::memrchr(d.data() + from, '\n', d.size() - from);
    return p ? static_cast<std::size_t>(static_cast<const char*>(p) - d.data()) : std::string::npos;
  }
  // Messages of the byte source name the path it opened: name the input as the user did.
  std::string rename(const std::string& msg, const std::string& path) const {
    if (path != name_ && msg.compare(0, path.size(), path) == 0) return name_ + msg.substr(path.size());
    return msg;
  }
  // Splits c.data into records, at most kMaxRecords (so that a chunk of short lines or blank
  // lines costs bounded memory too); returns where the last record taken ends.
  std::size_t split(Chunk& c) {
    const std::string& d = c.data;
    if (format_ == "file") {
      c.recs.push_back({0, 0, d.size(), false, static_cast<std::uint8_t>(bom_at(d, 0) ? 3 : 0)});
      return d.size();
    }
    std::size_t pos = 0;
    while (pos < d.size() && c.recs.size() < kMaxRecords) {
      const std::size_t nl = d.find('\n', pos);
      const std::size_t end = nl == std::string::npos ? d.size() : nl + 1;
      const std::uint8_t bom = bom_at(d, pos) && pos + 3 <= end ? 3 : 0;
      bool blank = format_ == "jsonl";
      for (std::size_t i = pos + bom; blank && i < end; ++i) {
        const char ch = d[i];
        blank = ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
      }
      c.recs.push_back({++line_, pos, end, blank, bom});
      pos = end;
    }
    return pos;
  }

  std::unique_ptr<io::ByteSource> src_;
  std::string path_, name_;
  std::uint32_t index_;
  std::string format_;
  std::string carry_;  // bytes after the last whole record of the previous chunk
  std::uint64_t seq_ = 0, line_ = 0;
  bool eof_ = false, done_ = false;
};

// An unnamed temporary file in `dir` (the signature spill file, copies of pipes), gone however
// the process ends.
int open_temp(const std::string& dir, const char* what) {
    int fd = -1;
#ifdef O_TMPFILE
    fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) return fd;
#endif
    // Without O_TMPFILE: a hidden name, removed at once (a signal in between can leave it).
    std::string tmpl = (fs::path(dir) / ".mixsieve-dedup.XXXXXX").string();
    fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
    if (fd < 0) throw InputError(std::string("cannot create the ") + what + " in " + dir + " (" + std::strerror(errno) +
                                 "); set --tmp-dir to a writable folder");
    ::unlink(tmpl.c_str());
    return fd;
}

void write_fd(int fd, const char* p, std::size_t n, const char* what) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw InputError(std::string("cannot write the ") + what + " (" + std::strerror(errno) + "); set --tmp-dir to a folder with room");
    p += w;
    n -= static_cast<std::size_t>(w);
  }
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
  // A file-size limit (ulimit -f) makes write() fail with EFBIG, reported as a write error with
  // the usual cleanup, instead of killing the process on the spot.
  ::signal(SIGXFSZ, SIG_IGN);
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

// ---- pass 1: signatures ----

// Digests of the documents seen so far (exact duplicates): open addressing over (lo, hi),
// 16 bytes a slot, at most half full. Freed with the pass's stage.
class DigestSet {
 public:
  // False if the digest was there already.
  bool insert(const Digest128& d) {
    if (2 * (used_ + 1) > slots_.size()) grow();
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t s = d.lo & mask;; s = (s + 1) & mask) {
      Digest128& slot = slots_[s];
      if (slot.lo == 0 && slot.hi == 0) {
        slot = nonzero(d);
        ++used_;
        return true;
      }
      if (slot == nonzero(d)) return false;
    }
  }

 private:
  static Digest128 nonzero(const Digest128& d) { return d.lo == 0 && d.hi == 0 ? Digest128{1, 0} : d; }
  void grow() {
    std::vector<Digest128> old;
    old.swap(slots_);
    slots_.assign(std::max<std::size_t>(1024, old.size() * 2), Digest128{});
    used_ = 0;
    for (const Digest128& d : old) {
      if (d.lo != 0 || d.hi != 0) insert(d);
    }
  }
  std::vector<Digest128> slots_;
  std::size_t used_ = 0;
};

// What pass 1 leaves for clustering and pass 2.
struct Scan {
  std::uint64_t records = 0;       // documents, blank lines and bad records
  std::size_t bad = 0, exact = 0;
  std::uint64_t text_bytes = 0;    // decompressed bytes of all inputs
  std::vector<std::uint64_t> records_per_input;
  std::vector<std::uint64_t> chunk_hashes;  // in commit order
  std::vector<std::uint64_t> exact_bits;  // bit i: record i's normalised text equals an earlier one's
  // The documents with shingles (the clustered rows), in order: each one's record number.
  // Blank lines, bad records and documents without words are not rows: they are always kept
  // and cost nothing in the spill file or the LSH index.
  std::vector<std::int64_t> row_records;
  int spill_fd = -1;               // num_perm uint32 slots per row, in row order
};

struct Live {  // progress counters, updated by the workers
  std::atomic<std::uint64_t> raw{0}, text{0}, docs{0}, rows{0}, written{0}, total{0}, written_bytes{0};
  std::atomic<std::uint64_t> text_total{0}, raw_total{0};
  std::atomic<unsigned> threads{0};  // threads pass 1 actually ran on
  std::atomic<int> phase{-1};  // -1 copying a pipe, 0 signatures, 1 clustering, 2 writing
};

// Reads all inputs in chunks on `threads` threads, hands each chunk to stage.process (on the
// thread that read it, in any order) and then to stage.commit (one at a time, in input order:
// input 0's chunks in order, then input 1's, ...). Threads take chunks from the lowest input
// not being read, several inputs at once (parallel decompression); inputs past the one being
// committed wait while `threads + 2` chunks are in flight, so memory stays at a few chunks
// whatever the order in which threads finish. Chunks are reused, buffers and all. A read or
// process error is raised when its chunk's turn to commit comes (input order).
template <class Stage>
class ChunkPipeline {
 public:
  ChunkPipeline(const std::vector<std::string>& open_paths, const std::vector<std::string>& names,
                const std::string& format, unsigned threads, Live& live, Stage& stage)
      : paths_(open_paths), names_(names), format_(format), live_(live), stage_(stage) {
    const std::size_t n = paths_.size();
    readers_.resize(n);
    state_.assign(n, kIdle);
    chunks_.assign(n, 0);
    threads_ = threads ? threads : available_cores();  // --threads left out: all cores
    limit_ = static_cast<std::size_t>(threads_) + 2;
  }

  void run() {
    std::vector<std::thread> pool;
    // Threads the system refuses (limits on processes or memory) leave the work to fewer.
    for (unsigned t = 1; t < threads_; ++t) {
      try {
        pool.emplace_back([this] { work(); });
      } catch (const std::system_error&) {
        break;
      }
    }
    live_.threads = static_cast<unsigned>(pool.size()) + 1;
    work();
    for (std::thread& th : pool) th.join();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  static constexpr int kIdle = 0, kBusy = 1, kDone = 2;
  static constexpr std::size_t kNone = std::numeric_limits<std::size_t>::max();

  void work() {
    typename Stage::Scratch scratch;
    for (;;) {
      std::size_t f;
      std::unique_ptr<Chunk> chunk;
      {
        std::unique_lock<std::mutex> lk(m_);
        for (;;) {
          if (stop_ || commit_input_ >= paths_.size()) return;
          f = pick();
          if (f != kNone) break;
          cv_.wait(lk);
        }
        state_[f] = kBusy;
        ++in_flight_;
        if (!pool_.empty()) {
          chunk = std::move(pool_.back());
          pool_.pop_back();
        }
      }
      if (!chunk) chunk = std::make_unique<Chunk>();
      bool got = false;
      std::exception_ptr err;
      try {
        if (!readers_[f]) {
          readers_[f] = std::make_unique<InputReader>(paths_[f], names_[f], static_cast<std::uint32_t>(f), format_);
        }
        got = readers_[f]->next(*chunk);
      } catch (...) {
        err = std::current_exception();
      }
      {
        // The input is free for its next chunk while this one is processed.
        std::lock_guard<std::mutex> lk(m_);
        if (err) {
          chunk->input = static_cast<std::uint32_t>(f);
          chunk->seq = chunks_[f];
          chunk->error = err;
          got = true;
        }
        if (got) {
          chunks_[f] = chunk->seq + 1;
          live_.raw += chunk->raw_bytes;
        } else {
          --in_flight_;
          pool_.push_back(std::move(chunk));
        }
        state_[f] = got && !err ? kIdle : kDone;
        if (state_[f] == kDone) readers_[f].reset();  // closes the file now
        cv_.notify_all();
      }
      if (got && !err) {
        try {
          // Compared between the passes: an input that changed in between is caught.
          chunk->hash = xxh64(chunk->data.data(), chunk->data.size(), chunk->recs.size());
          stage_.process(*chunk, scratch);
        } catch (...) {
          chunk->error = std::current_exception();
        }
      }
      std::lock_guard<std::mutex> lk(m_);
      if (got) done_.emplace(std::make_pair(chunk->input, chunk->seq), std::move(chunk));
      commit_ready();
      cv_.notify_all();
    }
  }

  // The input to read a chunk of (see the class comment), or kNone.
  // Only the chunk next in commit order is read past the limit (so the pass always moves on).
  std::size_t pick() const {
    for (std::size_t f = commit_input_; f < paths_.size(); ++f) {
      if (state_[f] != kIdle) continue;
      const bool next_to_commit = f == commit_input_ && chunks_[f] == commit_seq_;
      if (in_flight_ >= limit_ && !next_to_commit) return kNone;
      return f;
    }
    return kNone;
  }

  // Commits the chunks that are next in input order (called with m_ held).
  void commit_ready() {
    while (!stop_ && commit_input_ < paths_.size()) {
      const auto it = done_.find(std::make_pair(static_cast<std::uint32_t>(commit_input_), commit_seq_));
      if (it == done_.end()) {
        if (state_[commit_input_] == kDone && commit_seq_ >= chunks_[commit_input_]) {
          try {
            stage_.input_done(commit_input_);
          } catch (...) {
            error_ = std::current_exception();
            stop_ = true;
            return;
          }
          ++commit_input_;
          commit_seq_ = 0;
          continue;
        }
        return;
      }
      std::unique_ptr<Chunk> c = std::move(it->second);
      done_.erase(it);
      --in_flight_;
      ++commit_seq_;
      try {
        if (c->error) std::rethrow_exception(c->error);
        stage_.commit(*c);
      } catch (...) {
        error_ = std::current_exception();
        stop_ = true;
        return;
      }
      // A chunk grown by a giant record gives its memory back.
      if (c->data.capacity() > 2 * (kChunkBytes + kReadBytes)) std::string().swap(c->data);
      if (c->errors.capacity() > kMaxRecords) decltype(c->errors)().swap(c->errors);
      c->error = nullptr;
      c->errors.clear();
      pool_.push_back(std::move(c));
    }
  }

  const std::vector<std::string>& paths_;
  const std::vector<std::string>& names_;
  const std::string format_;
  Live& live_;
  Stage& stage_;
  unsigned threads_ = 1;
  std::size_t limit_ = 3;

  std::mutex m_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<InputReader>> readers_;
  std::vector<int> state_;
  std::vector<std::uint64_t> chunks_;  // chunks read so far per input (all of them once kDone)
  std::map<std::pair<std::uint32_t, std::uint64_t>, std::unique_ptr<Chunk>> done_;
  std::vector<std::unique_ptr<Chunk>> pool_;
  std::size_t commit_input_ = 0;
  std::uint64_t commit_seq_ = 0;
  std::size_t in_flight_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

// Pass 2's stage: nothing to do out of order; commit writes.
template <class Commit, class Done>
struct WriteStage {
  struct Scratch {};
  Commit& commit_fn;
  Done& done_fn;
  void process(Chunk&, Scratch&) {}
  void commit(Chunk& c) { commit_fn(c); }
  void input_done(std::size_t f) { done_fn(f); }
};

// Pass 1's stage: signatures and digests of a chunk's records (process), then in input order
// errors raised or counted, signatures appended to the spill file, exact duplicates marked
// (commit).
class SignatureStage {
 public:
  struct Scratch {
    MinHashWorkspace<std::uint32_t> ws;
    JsonLine jl;
    std::unordered_map<std::uint64_t, std::size_t> seen;
  };

  SignatureStage(const Options& o, const std::vector<std::string>& names, const MinHasher<std::uint32_t>& hasher,
                 Scan& scan, Live& live)
      : o_(o), names_(names), hasher_(hasher), scan_(scan), live_(live),
        k_(static_cast<std::size_t>(hasher.config().num_perm)) {
    scan_.records_per_input.assign(names.size(), 0);
  }

  // Identical normalised texts inside a chunk are sketched once.
  void process(Chunk& c, Scratch& s) {
    const std::size_t n = c.recs.size();
    c.errors.clear();
    c.sigs.clear();
    c.digests.clear();
    c.kind.assign(n, kDoc);
    s.seen.clear();
    for (std::size_t i = 0; i < n; ++i) {
      const Record& r = c.recs[i];
      if (r.blank) {
        c.kind[i] = kBlank;
        continue;
      }
      std::string_view text;
      bool bad_utf8 = false;
      std::string err;
      if (o_.format == "jsonl") {
        JsonLine& jl = s.jl;
        parse_json_line(content(c.data, r), o_.text_field, "", jl);
        if (!jl.ok) {
          err = "malformed JSON at byte " + std::to_string(jl.error_at + 1) + ": " + jl.error;
        } else if (!jl.text.found) {
          err = "no field '" + o_.text_field + "'";
        } else if (!jl.text.is_string) {
          err = "field '" + o_.text_field + "' is not a string";
        } else {
          text = jl.text.decoded;
          bad_utf8 = jl.text.bad_utf8;
        }
      } else {
        text = content(c.data, r);
        bad_utf8 = !valid_utf8(text);
      }
      if (err.empty() && bad_utf8 && !o_.replace_utf8) {
        err = "invalid UTF-8 in the text (use --invalid-utf8 replace to accept it)";
      }
      if (!err.empty()) {
        c.kind[i] = kBad;  // never matched: kept and passed through
        c.errors.emplace_back(i, std::move(err));
        continue;
      }
      const std::size_t d = c.digests.size();
      c.digests.emplace_back();
      c.sigs.resize((d + 1) * k_);
      std::uint32_t* sig = c.sigs.data() + d * k_;
      hasher_.signature_digest(text.data(), text.size(), sig, s.ws, c.digests[d],
                                         [&](const Digest128& dg, std::uint32_t* out) {
                                           const auto it = s.seen.find(dg.lo);
                                           if (it == s.seen.end() || !(c.digests[it->second] == dg)) return false;
                                           std::memcpy(out, c.sigs.data() + it->second * k_, k_ * sizeof(std::uint32_t));
                                           return true;
                                         });
      s.seen.emplace(c.digests[d].lo, d);
    }
    live_.docs.fetch_add(c.digests.size(), std::memory_order_relaxed);
    live_.text.fetch_add(c.data.size(), std::memory_order_relaxed);
  }

  void commit(Chunk& c) {
    const std::string& name = names_[c.input];
    std::size_t e = 0, d = 0, rows = 0;  // d: documents of the chunk; rows: those with shingles
    for (std::size_t r = 0; r < c.recs.size(); ++r) {
      const std::uint64_t g = scan_.records + r;
      if (c.kind[r] == kBad) {
        while (c.errors[e].first != r) ++e;
        const std::string where = name + (c.recs[r].line ? ":" + std::to_string(c.recs[r].line) : std::string());
        if (!o_.skip_errors) throw InputError(where + ": " + c.errors[e].second);
        if (scan_.bad < 20) std::fprintf(stderr, "mixsieve-dedup: skipped %s: %s\n", where.c_str(), c.errors[e].second.c_str());
        ++scan_.bad;
        continue;
      }
      if (c.kind[r] != kDoc) continue;
      const std::size_t j = d++;
      // Documents without shingles never match (match_empty is off): like blank lines they are
      // kept, are not rows and take no room in the spill file; not exact duplicates either.
      if (is_empty_signature(c.sigs.data() + j * k_, k_)) continue;
      if (rows != j) std::memcpy(c.sigs.data() + rows * k_, c.sigs.data() + j * k_, k_ * sizeof(std::uint32_t));
      ++rows;
      scan_.row_records.push_back(static_cast<std::int64_t>(g));
      if (!digests_.insert(c.digests[j])) {
        if (scan_.exact_bits.size() <= g / 64) scan_.exact_bits.resize(g / 64 + 1, 0);
        scan_.exact_bits[g / 64] |= std::uint64_t{1} << (g % 64);
        ++scan_.exact;
      }
    }
    write_fd(scan_.spill_fd, reinterpret_cast<const char*>(c.sigs.data()), rows * k_ * sizeof(std::uint32_t),
             "signature spill file");
    scan_.records += c.recs.size();
    scan_.records_per_input[c.input] += c.recs.size();
    scan_.chunk_hashes.push_back(c.hash);
    scan_.text_bytes += c.data.size();
  }

  void input_done(std::size_t) {}

 private:
  const Options& o_;
  const std::vector<std::string>& names_;
  const MinHasher<std::uint32_t>& hasher_;
  Scan& scan_;
  Live& live_;
  const std::size_t k_;
  DigestSet digests_;
};

// A progress line on stderr (a terminal, or --progress), redrawn twice a second: the phase,
// bytes and documents so far, the rate and, where the input size is known, the time left.
class ProgressLine {
 public:
  ProgressLine(bool on, Live& live) : live_(live) {
    if (!on) return;
    thread_ = std::thread([this] {
      std::unique_lock<std::mutex> lk(m_);
      while (!cv_.wait_for(lk, std::chrono::milliseconds(500), [this] { return stopped_; })) draw();
    });
  }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;
  ~ProgressLine() { stop(); }

  void stop() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> lk(m_);
      stopped_ = true;
    }
    cv_.notify_all();
    thread_.join();
    std::fputc('\n', stderr);
  }

 private:
  void draw() {
    const auto now = std::chrono::steady_clock::now();
    const int phase = live_.phase.load();
    if (phase != phase_) {  // each phase's rate and time left count from its start
      phase_ = phase;
      since_ = now;
    }
    const double s = std::max(std::chrono::duration<double>(now - since_).count(), 1e-9);
    auto eta = [s](double done, double total) {
      char b[64] = "";
      if (total > 0 && done > 0) {
        const double left = s * (total - done) / done;
        std::snprintf(b, sizeof(b), ", %.0f%%, about %.0f s left", 100.0 * done / total, left > 0 ? left : 0.0);
      }
      return std::string(b);
    };
    char line[256];
    if (phase < 0) {
      const double raw = static_cast<double>(live_.raw.load());
      std::snprintf(line, sizeof(line), "copying a pipe to the temporary folder: %.1f MB, %.1f MB/s", raw / 1e6,
                    raw / 1e6 / s);
    } else if (phase == 0) {
      const double raw = static_cast<double>(live_.raw.load()), text = static_cast<double>(live_.text.load());
      std::snprintf(line, sizeof(line), "signatures: %.1f MB of text, %llu documents, %.1f MB/s%s", text / 1e6,
                    static_cast<unsigned long long>(live_.docs.load()), text / 1e6 / s,
                    eta(raw, static_cast<double>(live_.raw_total.load())).c_str());
    } else if (phase == 1) {
      const double rows = static_cast<double>(std::min(live_.rows.load(), live_.total.load()));
      std::snprintf(line, sizeof(line), "clustering: %.0f of %llu documents, %.0f documents/s%s", rows,
                    static_cast<unsigned long long>(live_.total.load()), rows / s,
                    eta(rows, static_cast<double>(live_.total.load())).c_str());
    } else {
      const double bytes = static_cast<double>(live_.written_bytes.load());
      std::snprintf(line, sizeof(line), "writing: %.1f MB of %.1f MB, %.1f MB/s%s", bytes / 1e6,
                    static_cast<double>(live_.text_total.load()) / 1e6, bytes / 1e6 / s,
                    eta(bytes, static_cast<double>(live_.text_total.load())).c_str());
    }
    std::fprintf(stderr, "\rmixsieve-dedup: %-110s", line);
    std::fflush(stderr);
  }

  int phase_ = -2;
  std::chrono::steady_clock::time_point since_;
  Live& live_;
  std::thread thread_;
  std::mutex m_;
  std::condition_variable cv_;
  bool stopped_ = false;
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

// Peak resident memory of this program: VmHWM of /proc/self/status, which starts afresh at
// exec (getrusage's ru_maxrss keeps the peak of the process before exec: a large parent that
// forked us would show through). Falls back to ru_maxrss without /proc.
std::uint64_t peak_rss_bytes() {
  if (FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    while (std::fgets(line, sizeof(line), f)) {
      unsigned long long kb = 0;
      if (std::sscanf(line, "VmHWM: %llu kB", &kb) == 1) {
        std::fclose(f);
        return kb * 1024;
      }
    }
    std::fclose(f);
  }
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<std::uint64_t>(ru.ru_maxrss) * 1024;
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
  if (p.bands == 0) std::tie(p.bands, p.rows) = optimal_bands(p.threshold, p.num_perm);
  const std::string tmp_dir = !o.tmp_dir.empty()                                ? o.tmp_dir
                              : std::getenv("TMPDIR") && *std::getenv("TMPDIR") ? std::string(std::getenv("TMPDIR"))
                                                                                : std::string("/tmp");
  {
    struct stat st {};
    if (::stat(tmp_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      throw UsageError((o.tmp_dir.empty() ? "the temporary folder " + tmp_dir + " (from $TMPDIR or the default)"
                                          : "--tmp-dir " + tmp_dir) +
                       " is not a folder; give --tmp-dir a folder with room for the signatures");
    }
  }
  Live live;
  ProgressLine progress(prog.on, live);
  // Standard input, pipes and other inputs that are not regular files cannot be read twice:
  // each is copied (as it comes, compressed or not) to an unnamed temporary file, read by both
  // passes.
  std::vector<std::string> open_paths = paths;
  std::vector<int> spools;
  for (std::string& path : open_paths) {
    int in = 0;
    if (path == "-") {
      if (g_stdin_closed) throw InputError("-: standard input is closed");
    } else {
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0 || S_ISREG(st.st_mode)) continue;  // (a missing file fails later)
      in = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (in < 0) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
    }
    const int fd = open_temp(tmp_dir, "copy of a non-seekable input");
    spools.push_back(fd);
    std::vector<char> buf(kReadBytes);
    for (;;) {
      const ssize_t got = ::read(in, buf.data(), buf.size());
      if (got > 0) live.raw += static_cast<std::uint64_t>(got);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) {
        const std::string why = std::strerror(errno);
        if (in != 0) ::close(in);
        throw InputError(path + ": cannot read (" + why + ")");
      }
      if (got == 0) break;
      write_fd(fd, buf.data(), static_cast<std::size_t>(got), "copy of a non-seekable input");
    }
    if (in != 0) ::close(in);
    path = "/proc/self/fd/" + std::to_string(fd);
  }

  // Pass 1: signatures on all cores, spilled to an unnamed temporary file in record order.
  MinHashConfig cfg;
  cfg.num_perm = p.num_perm;
  cfg.ngram = p.ngram;
  cfg.unit = p.unit;
  cfg.seed = p.seed;
  const MinHasher<std::uint32_t> hasher(cfg);
  const std::size_t k = static_cast<std::size_t>(p.num_perm);
  Scan scan;
  scan.spill_fd = open_temp(tmp_dir, "signature spill file");
  std::uint64_t raw_total = 0;
  for (const std::string& path : open_paths) {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) raw_total += static_cast<std::uint64_t>(st.st_size);
  }
  live.raw = 0;
  live.raw_total = raw_total;
  live.phase = 0;
  {
    SignatureStage stage(o, paths, hasher, scan, live);
    ChunkPipeline<SignatureStage>(open_paths, paths, o.format, o.threads, live, stage).run();
  }
  const std::uint64_t records = scan.records;
  const std::size_t n = scan.row_records.size();  // documents: the clustered rows
  const std::uint64_t total_bytes = scan.text_bytes;
  live.total = n;
  live.text_total = total_bytes;
  if (scan.bad > 20) std::fprintf(stderr, "mixsieve-dedup: ... and %zu more bad records\n", scan.bad - 20);
  // Keys: this run's record numbers after the index's largest key (records, not documents, as
  // in earlier versions: a record's key does not depend on which other records are blank).
  const std::int64_t next_key =
      first_new_key(idx ? idx->keys() : std::vector<std::int64_t>{}, static_cast<std::size_t>(records), o.index);
  std::vector<std::int64_t>& keys = scan.row_records;  // becomes the rows' keys
  for (std::int64_t& key : keys) key += next_key;
  auto record_of = [&](std::size_t row) { return static_cast<std::uint64_t>(keys[row] - next_key); };

  // The signatures, read back through a memory map; pages already used are dropped from this
  // process every few thousand rows (they stay in the page cache), so resident memory holds
  // the LSH tables, not the signatures.
  const std::size_t spill_bytes = n * k * sizeof(std::uint32_t);
  const std::uint32_t* sigs = nullptr;
  void* map = nullptr;
  if (spill_bytes > 0) {
    map = ::mmap(nullptr, spill_bytes, PROT_READ, MAP_SHARED, scan.spill_fd, 0);
    if (map == MAP_FAILED) throw InputError(std::string("cannot map the signature spill file (") + std::strerror(errno) + ")");
    sigs = static_cast<const std::uint32_t*>(map);
  }
  auto drop_pages = [&] {
    if (map) ::madvise(map, spill_bytes, MADV_DONTNEED);
  };

  // Clusters over old index rows (positions 0..m-1) and this run's documents (m..m+n-1).
  const double t_sig = prog.seconds();
  live.phase = 1;
  LSHParams lp;
  lp.num_perm = p.num_perm;
  lp.bands = p.bands;
  lp.rows = p.rows;
  lp.threshold = p.threshold;
  if (!idx) idx.emplace(lp);
  idx->continue_over(sigs);
  const std::size_t m = idx->size();
  std::vector<std::int64_t> dup_pos(n);
  std::vector<float> sim(n);
  if (m + n >= std::numeric_limits<std::uint32_t>::max() - 1) {
    throw InputError("too many documents: " + std::to_string(m + n) + " (with the index's rows); one run clusters at most " +
                     std::to_string(std::numeric_limits<std::uint32_t>::max() - 2) + " rows");
  }
  UnionFind uf(m + n);
  idx->interrupt_check = [&] {
    live.rows += LSHIndex<std::uint32_t>::kCheckEvery;
    drop_pages();
  };
  idx->add_clustered(sigs, n, keys.data(), dup_pos.data(), sim.data(), uf);
  idx->interrupt_check = nullptr;
  live.rows = n;
  // Per record: kept (blank lines and bad records always), a report target.
  std::vector<std::uint64_t> keep((records + 63) / 64, ~std::uint64_t{0}), target_bits;
  auto bit = [](const std::vector<std::uint64_t>& v, std::uint64_t i) {
    return i / 64 < v.size() && ((v[i / 64] >> (i % 64)) & 1u) != 0;
  };
  auto set_bit = [](std::vector<std::uint64_t>& v, std::uint64_t i) { v[i / 64] |= std::uint64_t{1} << (i % 64); };
  std::size_t kept = 0, clusters = 0;
  {
    std::vector<char> big(m + n, 0);
    for (std::size_t j = 0; j < n; ++j) {
      const std::uint32_t root = uf.find(static_cast<std::uint32_t>(m + j));
      if (root == m + j) {
        ++kept;
        continue;
      }
      const std::uint64_t i = record_of(j);
      keep[i / 64] &= ~(std::uint64_t{1} << (i % 64));
      if (!big[root]) {
        big[root] = 1;
        ++clusters;
      }
    }
  }
  // What the report names for each removed document: an earlier verified near-duplicate, or
  // (joined only through later documents) its cluster's kept document, with the estimate.
  if (rep) {
    target_bits.assign((records + 63) / 64, 0);
    for (std::size_t j = 0; j < n; ++j) {
      if (bit(keep, record_of(j))) continue;
      if (dup_pos[j] < 0) {
        dup_pos[j] = uf.find(static_cast<std::uint32_t>(m + j));
        sim[j] = static_cast<float>(jaccard_estimate(sigs + j * k, idx->signature(static_cast<std::size_t>(dup_pos[j])), k));
      }
      if (static_cast<std::size_t>(dup_pos[j]) >= m) set_bit(target_bits, record_of(static_cast<std::size_t>(dup_pos[j]) - m));
    }
  }
  std::vector<std::int64_t> old_keys;
  if (rep && m > 0) old_keys.assign(idx->keys().begin(), idx->keys().begin() + static_cast<std::ptrdiff_t>(m));
  if (idx_out) {
    // A clean copy of the earlier index (the clustering one is capped and holds removed rows),
    // extended with the kept documents. Kept documents are not near-duplicates of each other
    // or of the old rows (that is what clustering decided), so they are stored without
    // searching: O(bands) each.
    idx.reset();
    LSHIndex<std::uint32_t> updated = old_bytes.empty()
                                          ? LSHIndex<std::uint32_t>(lp)
                                          : LSHIndex<std::uint32_t>::from_bytes(old_bytes.data(), old_bytes.size(), nullptr);
    std::string().swap(old_bytes);
    std::vector<std::uint32_t> batch;
    std::vector<std::int64_t> batch_keys;
    auto flush = [&] {
      updated.append(batch.data(), batch_keys.size(), batch_keys.data());
      batch.clear();
      batch_keys.clear();
    };
    for (std::size_t j = 0; j < n; ++j) {
      const std::uint32_t* s = sigs + j * k;
      if (!bit(keep, record_of(j)) || is_empty_signature(s, k)) continue;  // documents without words: never indexed
      batch.insert(batch.end(), s, s + k);
      batch_keys.push_back(keys[j]);
      if (batch_keys.size() == 4096) flush();
    }
    flush();
    drop_pages();
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
  idx.reset();
  if (map) ::munmap(map, spill_bytes);
  ::close(scan.spill_fd);

  // Pass 2: the inputs again, in order; kept records are written byte for byte.
  const double t_cluster = prog.seconds();
  live.phase = 2;
  struct Named {
    std::uint32_t input;
    std::uint64_t line;
    std::string id;
  };
  // Report targets met so far, by record: an entry per target (a kept or removed document that
  // a removed one names), with its id's JSON text.
  std::unordered_map<std::uint64_t, Named> named;
  JsonLine jl;  // commits run one at a time
  auto record_id = [&](const Chunk& c, const Record& r) -> std::string {
    if (o.id_field.empty() || o.format != "jsonl") return {};
    const std::string_view line = content(c.data, r);
    parse_json_line(line, o.text_field, o.id_field, jl);
    if (!jl.ok || !jl.id.found) return {};
    return std::string(line.substr(jl.id.begin, jl.id.end - jl.id.begin));
  };
  auto where_json = [&](std::uint32_t input, std::uint64_t line, const std::string& id) {
    return "\"file\": " + json_string(paths[input]) + ", \"line\": " + (line ? std::to_string(line) : "null") +
           ", \"id\": " + (id.empty() ? "null" : id);
  };
  std::uint64_t g = 0;            // records committed so far
  std::size_t row = 0;            // documents committed so far
  std::size_t chunk_no = 0;       // chunks committed so far
  std::uint64_t in_input = 0;     // records of the input being committed
  auto changed = [&](std::size_t f) {
    return InputError(paths[f] + ": changed while mixsieve-dedup was running (its bytes differ from the first "
                      "read); nothing was written");
  };
  auto commit = [&](Chunk& c) {
    const std::size_t f = c.input;
    in_input += c.recs.size();
    if (chunk_no >= scan.chunk_hashes.size() || scan.chunk_hashes[chunk_no] != c.hash ||
        in_input > scan.records_per_input[f]) {
      throw changed(f);
    }
    ++chunk_no;
    for (const Record& r : c.recs) {
      const std::uint64_t i = g++;
      const bool is_row = row < n && record_of(row) == i;
      const std::size_t j = is_row ? row++ : 0;
      if (bit(keep, i)) {
        if (o.format == "file") {
          out.write("{\"file\": " + json_string(paths[f]) + ", \"text\": " + json_string(content(c.data, r)) + "}\n");
        } else {
          const std::string_view rec(c.data.data() + r.begin, r.end - r.begin);
          out.write(rec);
          // A file's last line may lack its newline: end it here, or it would run into the
          // next record (from the next file) on the same output line.
          if (rec.empty() || rec.back() != '\n') out.write("\n");
        }
      }
      if (!rep || (bit(keep, i) && !bit(target_bits, i))) continue;
      // A report target can itself be removed (an earlier near-duplicate of a removed one).
      const std::string id = record_id(c, r);
      if (bit(target_bits, i)) named.emplace(i, Named{static_cast<std::uint32_t>(f), r.line, id});
      if (bit(keep, i)) continue;
      std::string line = "{" + where_json(static_cast<std::uint32_t>(f), r.line, id) + ", \"duplicate_of\": ";
      const auto t = static_cast<std::size_t>(dup_pos[j]);
      if (t < m) {
        line += "{\"index_key\": " + std::to_string(old_keys[t]) + "}";
      } else {
        const auto it = named.find(record_of(t - m));
        line += it == named.end() ? std::string("null")  // cannot happen: targets come first
                                  : "{" + where_json(it->second.input, it->second.line, it->second.id) + "}";
      }
      char buf[96];
      std::snprintf(buf, sizeof(buf), ", \"jaccard\": %.4f, \"exact\": %s}\n", static_cast<double>(sim[j]),
                    bit(scan.exact_bits, i) ? "true" : "false");
      rep->write(line + buf);
    }
    live.written += c.recs.size();
    live.written_bytes += c.data.size();
  };
  auto input_done = [&](std::size_t f) {
    if (in_input != scan.records_per_input[f]) throw changed(f);
    in_input = 0;
  };
  {
    WriteStage<decltype(commit), decltype(input_done)> stage{commit, input_done};
    ChunkPipeline<decltype(stage)>(open_paths, paths, o.format, o.threads, live, stage).run();
  }
  if (chunk_no != scan.chunk_hashes.size()) throw InputError("an input changed while mixsieve-dedup was running");
  for (int fd : spools) ::close(fd);
  progress.stop();
  const double t_write = prog.seconds();
  out.commit();
  if (rep) rep->commit();
  if (idx_out) idx_out->commit();
  if (!o.quiet) {
    const double s = prog.seconds();
    std::string extra;
    if (scan.exact) extra += ", " + std::to_string(scan.exact) + " of them exact duplicates";
    if (scan.bad) extra += ", " + std::to_string(scan.bad) + " bad records passed through";
    std::fprintf(stderr,
                 "mixsieve-dedup: %zu documents (%.1f MB) from %zu inputs: kept %zu, removed %zu in %zu clusters%s, "
                 "%.2f s on %u threads (%.1f MB/s; signatures %.2f s, clustering %.2f s, writing %.2f s), "
                 "peak memory %.0f MB\n",
                 n, static_cast<double>(total_bytes) / 1e6, paths.size(), kept, n - kept, clusters, extra.c_str(), s,
                 live.threads.load(), static_cast<double>(total_bytes) / 1e6 / std::max(s, 1e-9),
                 t_sig, t_cluster - t_sig, t_write - t_cluster, static_cast<double>(peak_rss_bytes()) / 1e6);
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
