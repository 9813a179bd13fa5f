// mixsieve-dedup: near-duplicate removal for JSONL / text corpora, one native command.
// Reads every input into memory (decompressing gzip), computes MinHash signatures on all
// cores straight from the parsed text, clusters with the same LSH + union-find code as
// mixsieve.dedup (so results agree exactly), and writes the kept records byte for byte.
// Exit codes: 0 success, 1 bad input, 2 usage.
#ifdef MIXSIEVE_HAVE_ZLIB
#include <zlib.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <unistd.h>

#include "mixsieve/jsonl.hpp"
#include "mixsieve/lsh.hpp"
#include "mixsieve/minhash.hpp"
#include "mixsieve/parallel.hpp"
#include "mixsieve/union_find.hpp"

#ifndef MIXSIEVE_VERSION
#define MIXSIEVE_VERSION "0.0.0"
#endif

namespace fs = std::filesystem;
using namespace mixsieve;

namespace {

constexpr int kExitOk = 0, kExitInput = 1, kExitUsage = 2;

const char* kHelp = R"(usage: mixsieve-dedup INPUT... -o OUT [options]

Remove near-duplicate documents (MinHash + LSH, verified, union-find clusters; the lowest
document of each cluster is kept). Kept records are written byte for byte, in input order.
All input is held in memory: expect the (decompressed) input size plus about 1 KB per document.

inputs:
  INPUT                 files or directories (walked recursively in sorted order); '-' is stdin.
                        gzip input is detected and decompressed (any name, e.g. .jsonl.gz).
  --format F            jsonl (default): one JSON object per line, text in --text-field;
                        lines: one document per line of plain text;
                        file: one document per file (output: one JSON line {"file", "text"} each).
                        Directories contribute *.jsonl/*.json/*.ndjson (jsonl), *.txt (lines),
                        or every file (file), each optionally .gz.
  --text-field NAME     JSON field holding the text (default: text)
  --id-field NAME       JSON field identifying a record, copied into the report

output:
  -o, --output OUT      kept records (written to a temporary name, renamed when complete)
  --report FILE         one JSON line per removed document: file, line, id, what it duplicates
                        (file/line/id, or index_key for a document of --index), and jaccard
  --index FILE          deduplicate against an index saved by an earlier run or by
                        mixsieve.LSHIndex.save (created if missing and --update-index is given)
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

exit status: 0 success, 1 bad input (with file:line), 2 usage.
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

template <class T>
T parse_number(const std::string& flag, const std::string& v) {
  try {
    std::size_t used = 0;
    if constexpr (std::is_same_v<T, double>) {
      const double x = std::stod(v, &used);
      if (used == v.size()) return x;
    } else {
      const long long x = std::stoll(v, &used);
      if (used == v.size() && x >= 0) return static_cast<T>(x);
    }
  } catch (const std::exception&) {
  }
  throw UsageError(flag + ": invalid value '" + v + "'");
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
    } else if (a == "--report") {
      o.report = value();
    } else if (a == "--index") {
      o.index = value();
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
      o.threshold = parse_number<double>(a, value());
      o.set_threshold = true;
      if (!(o.threshold > 0.0 && o.threshold < 1.0)) throw UsageError("--threshold must be in (0, 1)");
    } else if (a == "--num-perm") {
      o.num_perm = parse_number<int>(a, value());
      o.set_num_perm = true;
      if (o.num_perm < 1 || o.num_perm > 65536) throw UsageError("--num-perm must be in [1, 65536]");
    } else if (a == "--ngram") {
      o.ngram = parse_number<int>(a, value());
      o.set_ngram = true;
      if (o.ngram < 1) throw UsageError("--ngram must be >= 1");
    } else if (a == "--unit") {
      const std::string u = value();
      if (u != "word" && u != "char") throw UsageError("--unit must be word or char, got '" + u + "'");
      o.unit = u == "word" ? Unit::Word : Unit::Char;
      o.set_unit = true;
    } else if (a == "--bands") {
      o.bands = parse_number<int>(a, value());
    } else if (a == "--rows") {
      o.rows = parse_number<int>(a, value());
    } else if (a == "--seed") {
      o.seed = parse_number<std::uint64_t>(a, value());
      o.set_seed = true;
    } else if (a == "--threads") {
      o.threads = parse_number<unsigned>(a, value());
      if (o.threads == 0) throw UsageError("--threads must be >= 1");
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
  if (o.bands > 0 && static_cast<long long>(o.bands) * o.rows > o.num_perm) {
    throw UsageError("--bands * --rows exceeds --num-perm");
  }
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
  std::ifstream f(path, std::ios::binary);
  if (!f) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw InputError(path + ": read error");
  return data;
}

// gzip data (by its magic bytes, whatever the name) decompressed; anything else as it is.
std::string maybe_gunzip(const std::string& name, std::string raw) {
  const bool gz = raw.size() >= 2 && static_cast<unsigned char>(raw[0]) == 0x1F && static_cast<unsigned char>(raw[1]) == 0x8B;
  return gz ? gunzip(name, raw) : raw;
}

std::vector<Input> read_inputs(const Options& o) {
  std::vector<std::string> paths;
  for (const std::string& in : o.inputs) {
    std::error_code ec;
    if (in != "-" && fs::is_directory(in, ec)) {
      std::vector<std::string> found;
      for (auto it = fs::recursive_directory_iterator(in, ec); !ec && it != fs::recursive_directory_iterator();
           it.increment(ec)) {
        if (it->is_regular_file(ec) && wanted_in_directory(it->path().string(), o.format)) {
          found.push_back(it->path().string());
        }
      }
      if (ec) throw InputError(in + ": cannot read directory (" + ec.message() + ")");
      std::sort(found.begin(), found.end());
      paths.insert(paths.end(), found.begin(), found.end());
    } else {
      if (in != "-" && !fs::exists(in, ec)) throw InputError(in + ": no such file or directory");
      paths.push_back(in);
    }
  }
  std::vector<Input> inputs(paths.size());
  // Read (and decompress) files in parallel: I/O and inflate dominate for .gz corpora.
  parallel_for(paths.size(), o.threads, 1, [&](std::size_t b, std::size_t e) {
    for (std::size_t i = b; i < e; ++i) {
      inputs[i].name = paths[i];
      if (paths[i] != "-") inputs[i].data = maybe_gunzip(paths[i], read_all(paths[i]));
    }
  });
  for (Input& in : inputs) {  // standard input is read on this thread
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
};

std::vector<Record> split_records(const std::vector<Input>& inputs, const std::string& format) {
  std::vector<Record> recs;
  for (std::uint32_t f = 0; f < inputs.size(); ++f) {
    const std::string& d = inputs[f].data;
    if (format == "file") {
      recs.push_back({f, 0, 0, d.size(), false});
      continue;
    }
    std::size_t pos = 0;
    std::uint64_t line = 0;
    while (pos < d.size()) {
      const std::size_t nl = d.find('\n', pos);
      const std::size_t end = nl == std::string::npos ? d.size() : nl + 1;
      ++line;
      bool blank = format == "jsonl";
      for (std::size_t i = pos; blank && i < end; ++i) {
        const char c = d[i];
        blank = c == ' ' || c == '\t' || c == '\r' || c == '\n';
      }
      recs.push_back({f, line, pos, end, blank});
      pos = end;
    }
  }
  return recs;
}

std::string_view content(const std::vector<Input>& in, const Record& r) {
  std::string_view s(in[r.input].data.data() + r.begin, r.end - r.begin);
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

// ---- output files: a temporary name in the same folder, renamed when complete ----

class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path) : path_(path) {
    const fs::path p(path);
    const std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
    tmp_ = (fs::path(dir) / ("." + p.filename().string() + ".mixsieve-tmp." + std::to_string(::getpid()))).string();
    f_ = std::fopen(tmp_.c_str(), "wb");
    if (!f_) throw InputError(path + ": cannot write (" + std::strerror(errno) + ")");
    std::setvbuf(f_, nullptr, _IOFBF, 1 << 20);
  }
  ~AtomicFile() {
    if (f_) {
      std::fclose(f_);
      std::remove(tmp_.c_str());
    }
  }
  void write(std::string_view s) {
    if (std::fwrite(s.data(), 1, s.size(), f_) != s.size()) throw InputError(path_ + ": write error");
  }
  void commit() {
    if (std::fflush(f_) != 0 || std::fclose(f_) != 0) {
      f_ = nullptr;
      std::remove(tmp_.c_str());
      throw InputError(path_ + ": write error");
    }
    f_ = nullptr;
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
      std::remove(tmp_.c_str());
      throw InputError(path_ + ": cannot rename into place (" + std::strerror(errno) + ")");
    }
  }

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
};

bool same_file(const std::string& a, const std::string& b) {
  if (a == "-" || b == "-") return false;
  std::error_code ec;
  if (fs::exists(a, ec) && fs::exists(b, ec)) return fs::equivalent(a, b, ec);
  return fs::weakly_canonical(a, ec) == fs::weakly_canonical(b, ec);
}

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

int run(const Options& o) {
  Progress prog{o.progress == 1 || (o.progress == -1 && ::isatty(2))};
  for (const std::string& in : o.inputs) {
    for (const std::string* out : {&o.output, &o.report}) {
      if (!out->empty() && same_file(*out, in)) {
        throw UsageError("output " + *out + " is also an input; inputs are never overwritten");
      }
    }
  }
  std::vector<Input> inputs = read_inputs(o);
  std::vector<Record> recs = split_records(inputs, o.format);
  std::size_t total_bytes = 0;
  for (const Input& in : inputs) total_bytes += in.data.size();

  // Index: an earlier run's, or a new one.
  // The earlier index is parsed once into `idx`, the clustering index (old rows first).
  std::string meta;
  std::optional<LSHIndex<std::uint32_t>> idx;
  std::string old_bytes;
  Options p = o;
  if (!o.index.empty() && fs::exists(o.index)) {
    old_bytes = read_all(o.index);
    try {
      if (LSHIndex<std::uint32_t>::peek_width(old_bytes.data(), old_bytes.size()) != 4) {
        throw IndexFormatError("index holds uint64 signatures; mixsieve-dedup uses uint32");
      }
      idx.emplace(LSHIndex<std::uint32_t>::from_bytes(old_bytes.data(), old_bytes.size(), &meta));
    } catch (const IndexFormatError& e) {
      throw InputError(o.index + ": " + e.what());
    }
    const LSHParams& ip = idx->params();
    auto conflict = [&](bool set, bool differs, const std::string& what) {
      if (set && differs) throw UsageError(what + " differs from the index " + o.index + "; leave it out");
    };
    conflict(o.set_num_perm, ip.num_perm != o.num_perm, "--num-perm");
    conflict(o.set_threshold, ip.threshold != o.threshold, "--threshold");
    p.num_perm = ip.num_perm;
    p.threshold = ip.threshold;
    p.bands = ip.bands;
    p.rows = ip.rows;
    const std::string ng = meta_field(meta, "ngram"), un = meta_field(meta, "unit"), sd = meta_field(meta, "seed");
    if (!ng.empty()) {
      conflict(o.set_ngram, std::to_string(o.ngram) != ng, "--ngram");
      p.ngram = std::stoi(ng);
    }
    if (!un.empty()) {
      conflict(o.set_unit, (o.unit == Unit::Word ? "word" : "char") != un, "--unit");
      p.unit = un == "char" ? Unit::Char : Unit::Word;
    }
    if (!sd.empty()) {
      conflict(o.set_seed, std::to_string(o.seed) != sd, "--seed");
      p.seed = std::stoull(sd);
    }
  } else if (!o.index.empty() && !o.update_index) {
    throw InputError(o.index + ": no such index file (add --update-index to create it)");
  }
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
        if (o.format == "file") text = std::string_view(inputs[r.input].data);
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
  std::int64_t next_key = 0;
  for (std::int64_t key : idx->keys()) next_key = std::max(next_key, key + 1);
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
  AtomicFile out(o.output);
  for (std::size_t i = 0; i < n; ++i) {
    if (!keep[i]) continue;
    const Record& r = recs[i];
    if (o.format == "file") {
      std::string_view text = inputs[r.input].data;
      out.write("{\"file\": " + json_string(inputs[r.input].name) + ", \"text\": " + json_string(text) + "}\n");
    } else {
      out.write(std::string_view(inputs[r.input].data.data() + r.begin, r.end - r.begin));
    }
  }
  std::optional<AtomicFile> rep;
  if (!o.report.empty()) {
    rep.emplace(o.report);
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
  std::optional<AtomicFile> idx_out;
  if (o.update_index) {
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
    std::vector<std::int64_t> dp(kept_keys.size());
    std::vector<float> sm(kept_keys.size());
    updated.add(kept_sigs.data(), kept_keys.size(), kept_keys.data(), dp.data(), sm.data(),
                [](std::uint32_t, std::uint32_t, double) {});
    char m2[200];
    std::snprintf(m2, sizeof(m2), "{\"dtype\": \"uint32\", \"ngram\": %d, \"num_perm\": %d, \"seed\": %llu, \"unit\": \"%s\"}",
                  p.ngram, p.num_perm, static_cast<unsigned long long>(p.seed), p.unit == Unit::Word ? "word" : "char");
    const std::vector<char> bytes = updated.to_bytes(m2);
    idx_out.emplace(o.index);
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
