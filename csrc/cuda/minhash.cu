// MinHash signatures from text on CUDA: the same bytes as the CPU's MinHasher (minhash.hpp).
// The per-code-point step (next_word_char: UTF-8 decoding with U+FFFD for ill-formed bytes, the
// word classes, lower-casing), put_utf8, utf8_cut, xxh64, fold32 and the permutations are the
// MIXSIEVE_HD functions the CPU calls, reading the same Unicode table bytes (a device copy of
// UnicodeBlob). What differs is only how the work is cut, and each cut is exact:
//
// 1. Segments. Every document is cut into segments of kSegment bytes, moved forward to a
//    code-point boundary by utf8_cut (the rule the CPU uses for its 64 KiB pieces), one thread
//    each: a 50 MB document is 200,000 threads, not one. A segment's first code point is
//    where the decoder of the whole document would start one, so decoding segments one by one
//    gives the whole document's code points; whether the code point before the segment is a
//    word character (word_char_before) is decided by decoding back from the nearest lead byte.
// 2. Counting pass: per segment, the bytes of its lower-cased word characters, the words that
//    start in it and its word characters. An exclusive scan over all segments places each
//    segment's output: the normalised text is the word characters with one space before every
//    word but a document's first, so the bytes before a segment are its word-character bytes
//    plus (words before it - 1) spaces, and the same for code points.
// 3. Writing pass: each segment decodes again and writes its normalised bytes and the offsets of
//    its words (word unit) or code points (char unit) where the scan says.
// 4. Shingles: the shingles of all documents form one sequence (a scan of the per-document
//    counts); a block takes kTile of them, hashes them into shared memory, then its threads,
//    one per slot, fold them into the minima of each document the tile touches. A document
//    inside one tile is written directly; one spread over tiles through atomicMin (the minimum
//    ignores order, so the bytes do not depend on the split). Small documents share tiles.
// 5. Digests (optional): one thread per document runs digest_text over its normalised text,
//    StreamDigest's chain over 4 KiB blocks.
//
// No host synchronisation: buffer sizes are bounds computed from the document count and the
// byte total (workspace_bytes), and kernels loop over what the scans found on the device.
#include <cstddef>
#include <cstdint>

#ifdef MIXSIEVE_CUDA_EMULATION
#include "emu_minhash.h"
#else
#include <cub/device/device_scan.cuh>
#endif

#include "minhash_cuda.hpp"
#include "mixsieve/minhash.hpp"
#include "mixsieve/normalize.hpp"
#include "mixsieve/unicode.hpp"

namespace mixsieve {
namespace minhash_cuda {
namespace {

using i64 = std::int64_t;
using u32 = std::uint32_t;

constexpr int kThreads = 128;     // every kernel's block
constexpr i64 kSegment = 256;     // text bytes per segment thread (before utf8_cut)
constexpr int kTile = 256;        // shingles per sketch block
constexpr i64 kMaxBlocks = 1 << 15;

// A segment's counts, and their running sums (a monoid under SegSum).
struct SegCount {
  i64 bytes;  // bytes of its lower-cased word characters
  i64 words;  // words that start in it
  i64 chars;  // word characters
};
struct SegSum {
  __host__ __device__ SegCount operator()(const SegCount& x, const SegCount& y) const {
    return {x.bytes + y.bytes, x.words + y.words, x.chars + y.chars};
  }
};

// Where a document's normalised text and units are, once counted.
struct DocInfo {
  i64 norm_base;  // first byte in Work::norm
  i64 unit_base;  // first entry in Work::ustart (and uend)
  u32 norm_size;  // bytes of normalised text
  u32 units;      // words (word unit) or code points (char unit)
};

// The workspace, carved up (see plan()).
struct Work {
  int* status;  // nonzero: the offsets disagree with the host's checks; the kernels write nothing
  i64* seg_count;  // [n + 1] segments per document
  i64* seg_base;   // [n + 1] first segment of each document (exclusive scan)
  SegCount* seg;   // [segcap + 1]
  SegCount* seg_pre;  // [segcap + 1] exclusive scan of seg
  DocInfo* docs;      // [n]
  i64* sh_count;      // [n + 1] shingles per document
  i64* sh_base;       // [n + 1] first shingle of each document
  unsigned char* norm;  // [normcap] normalised texts
  u32* ustart;  // [unitcap] start of each word / code point, relative to its document's text
  u32* uend;    // [unitcap] end of each word (word unit only)
  i64 segcap;
};

struct Sketch {
  const void* a;
  const void* b;
  int k, ngram, unit;
  std::uint64_t seed;
};

// ---------------------------------------------------------------------------------------------
// Device helpers

// The d in [lo, hi) with base[d] <= v < base[d + 1], given base[lo] <= v < base[hi].
__device__ __forceinline__ i64 doc_of(const i64* base, i64 lo, i64 hi, i64 v) {
  while (hi - lo > 1) {
    const i64 mid = lo + (hi - lo) / 2;
    if (base[mid] <= v) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

__device__ __forceinline__ i64 cut(const unsigned char* doc, i64 len, i64 at) {
  if (at >= len) return len;
  return static_cast<i64>(
      utf8_cut(reinterpret_cast<const char*>(doc), static_cast<std::size_t>(len), static_cast<std::size_t>(at)));
}

// Whether the code point that ends at `at` (0 < at, a code-point boundary) is a word character.
// The decoder never takes a lead byte as a continuation, so that code point starts at the last
// lead byte within 4 bytes before `at` if decoding from there ends exactly at `at`; otherwise
// the byte before `at` is a lone continuation byte, U+FFFD, a separator.
__device__ __forceinline__ bool word_char_before(const unsigned char* doc, i64 at, const UnicodeTables& u) {
  for (i64 k = 1; k <= 4 && k <= at; ++k) {
    if ((doc[at - k] & 0xC0) != 0x80) {
      const unsigned char* p = doc + at - k;
      const std::uint32_t cp = next_word_char(p, doc + at, u);
      return p == doc + at && cp != 0;
    }
  }
  return false;
}

struct Segment {
  const unsigned char* doc;
  i64 len, begin, end;  // the document's bytes; the segment is [begin, end)
  i64 d, first;         // its document and that document's first segment
};

__device__ __forceinline__ Segment segment_at(const Texts& t, const Work& w, i64 s) {
  Segment g;
  g.d = doc_of(w.seg_base, 0, t.n, s);
  g.first = w.seg_base[g.d];
  const i64 off = t.offsets[g.d];
  g.doc = t.data + off;
  g.len = t.offsets[g.d + 1] - off;
  const i64 j = s - g.first;
  g.begin = cut(g.doc, g.len, j * kSegment);
  g.end = cut(g.doc, g.len, (j + 1) * kSegment);
  return g;
}

__device__ __forceinline__ void atomic_min(std::uint32_t* p, std::uint32_t v) {
  atomicMin(reinterpret_cast<unsigned int*>(p), static_cast<unsigned int>(v));
}
__device__ __forceinline__ void atomic_min(std::uint64_t* p, std::uint64_t v) {
  atomicMin(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}

__device__ __forceinline__ i64 first_thread() { return static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ i64 all_threads() { return static_cast<i64>(gridDim.x) * blockDim.x; }

// ---------------------------------------------------------------------------------------------
// Kernels, in launch order

// Segments per document, and the checks of the offsets (any failure sets the status).
__global__ void __launch_bounds__(kThreads) count_segments(Texts t, Work w) {
  for (i64 d = first_thread(); d <= t.n; d += all_threads()) {
    if (d == t.n) {
      w.seg_count[d] = 0;
      const i64 first = t.offsets[0], last = t.offsets[t.n];
      if (first < 0 || last > t.data_bytes || last - first != t.text_bytes) *w.status = 1;
      continue;
    }
    const i64 len = t.offsets[d + 1] - t.offsets[d];
    if (len < 0 || len > kMaxDocumentBytes) {
      *w.status = 1;
      w.seg_count[d] = 0;
      continue;
    }
    w.seg_count[d] = (len + kSegment - 1) / kSegment;
  }
}

// Counting pass over segments [0, segcap]; those past the last real one count nothing.
__global__ void __launch_bounds__(kThreads) count_segment_text(Texts t, Work w, UnicodeTables u) {
  if (*w.status) return;
  const i64 total = w.seg_base[t.n];
  for (i64 s = first_thread(); s <= w.segcap; s += all_threads()) {
    SegCount c{0, 0, 0};
    if (s < total) {
      const Segment g = segment_at(t, w, s);
      const unsigned char* p = g.doc + g.begin;
      const unsigned char* const stop = g.doc + g.end;
      const unsigned char* const end = g.doc + g.len;
      bool in_word = g.begin > 0 && word_char_before(g.doc, g.begin, u);
      while (p < stop) {
        const std::uint32_t cp = next_word_char(p, end, u);
        if (cp != 0) {
          c.bytes += utf8_length(cp);
          c.chars += 1;
          c.words += in_word ? 0 : 1;
          in_word = true;
        } else {
          in_word = false;
        }
      }
    }
    w.seg[s] = c;
  }
}

// Per document: where its text and units go, and its shingle count (rules of MinHasher: fewer
// units than ngram give one shingle of all of it, none give none).
__global__ void __launch_bounds__(kThreads) finish_documents(Texts t, Work w, int unit, int ngram) {
  if (*w.status) return;
  for (i64 d = first_thread(); d <= t.n; d += all_threads()) {
    if (d == t.n) {
      w.sh_count[d] = 0;
      continue;
    }
    const SegCount a = w.seg_pre[w.seg_base[d]], b = w.seg_pre[w.seg_base[d + 1]];
    const i64 words = b.words - a.words;
    const i64 spaces = words > 0 ? words - 1 : 0;
    DocInfo di;
    di.norm_base = a.bytes + a.words;  // room for a space before every word
    di.norm_size = static_cast<u32>(b.bytes - a.bytes + spaces);
    const i64 units = unit == 0 ? words : b.chars - a.chars + spaces;
    di.unit_base = unit == 0 ? a.words : a.chars + a.words;
    di.units = static_cast<u32>(units);
    w.docs[d] = di;
    w.sh_count[d] = units >= ngram ? units - ngram + 1 : (units > 0 ? 1 : 0);
  }
}

// Writing pass: the normalised text of each segment and the offsets of its units.
__global__ void __launch_bounds__(kThreads) write_segment_text(Texts t, Work w, UnicodeTables u, int unit) {
  if (*w.status) return;
  const i64 total = w.seg_base[t.n];
  const bool words_unit = unit == 0;
  for (i64 s = first_thread(); s < total; s += all_threads()) {
    const Segment g = segment_at(t, w, s);
    const DocInfo di = w.docs[g.d];
    const SegCount a = w.seg_pre[g.first], c = w.seg_pre[s];
    const i64 words_before = c.words - a.words;
    const i64 spaces_before = words_before > 0 ? words_before - 1 : 0;
    i64 pos = c.bytes - a.bytes + spaces_before;
    i64 word = di.unit_base + words_before;                             // the next word's entry
    i64 ch = di.unit_base + (c.chars - a.chars) + spaces_before;        // the next code point's
    char* const out = reinterpret_cast<char*>(w.norm + di.norm_base);
    const unsigned char* p = g.doc + g.begin;
    const unsigned char* const stop = g.doc + g.end;
    const unsigned char* const end = g.doc + g.len;
    bool in_word = g.begin > 0 && word_char_before(g.doc, g.begin, u);
    bool started = words_before > 0;
    while (p < stop) {
      const std::uint32_t cp = next_word_char(p, end, u);
      if (cp != 0) {
        if (!in_word) {
          if (started) {
            if (!words_unit) w.ustart[ch++] = static_cast<u32>(pos);
            out[pos++] = ' ';
          }
          started = true;
          if (words_unit) w.ustart[word++] = static_cast<u32>(pos);
          in_word = true;
        }
        if (!words_unit) w.ustart[ch++] = static_cast<u32>(pos);
        pos = put_utf8(out + pos, cp) - out;
      } else if (in_word) {
        if (words_unit) w.uend[word - 1] = static_cast<u32>(pos);
        in_word = false;
      }
    }
    if (words_unit && in_word && g.end == g.len) w.uend[word - 1] = static_cast<u32>(pos);
  }
}

__global__ void __launch_bounds__(kThreads) digest_documents(Texts t, Work w, std::uint64_t* digests) {
  const bool bad = *w.status != 0;
  for (i64 d = first_thread(); d < t.n; d += all_threads()) {
    std::uint64_t h[2] = {0, 0};
    if (!bad) {
      const DocInfo di = w.docs[d];
      digest_text(reinterpret_cast<const char*>(w.norm + di.norm_base), di.norm_size, h);
    }
    digests[2 * d] = h[0];
    digests[2 * d + 1] = h[1];
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) sketch_tiles(Texts t, Work w, Sketch sk, T* out) {
  __shared__ T x[kTile];
  __shared__ i64 tile_docs[2];
  if (*w.status) return;
  const T* const a = static_cast<const T*>(sk.a);
  const T* const b = static_cast<const T*>(sk.b);
  const i64 total = w.sh_base[t.n];
  const i64 tiles = (total + kTile - 1) / kTile;
  for (i64 tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const i64 g0 = tile * kTile;
    const i64 g1 = total - g0 < kTile ? total : g0 + kTile;
    if (threadIdx.x == 0) {
      tile_docs[0] = doc_of(w.sh_base, 0, t.n, g0);
      tile_docs[1] = doc_of(w.sh_base, tile_docs[0], t.n, g1 - 1);
    }
    __syncthreads();
    const i64 d0 = tile_docs[0], d1 = tile_docs[1];
    // Hash: thread i takes shingles i, i + kThreads, ... of the tile.
    for (i64 i = threadIdx.x; i < g1 - g0; i += blockDim.x) {
      const i64 d = doc_of(w.sh_base, d0, d1 + 1, g0 + i);
      const DocInfo di = w.docs[d];
      const i64 first = g0 + i - w.sh_base[d];
      const i64 units = di.units;
      const i64 last = units >= sk.ngram ? first + sk.ngram - 1 : units - 1;
      const u32* const us = w.ustart + di.unit_base;
      const u32 begin = us[first];
      const u32 stop = sk.unit == 0 ? w.uend[di.unit_base + last] : (last + 1 < units ? us[last + 1] : di.norm_size);
      x[i] = slot_input<T>(xxh64(w.norm + di.norm_base + begin, stop - begin, sk.seed));
    }
    __syncthreads();
    // Fold: thread j takes slots j, j + kThreads, ... of each document in the tile.
    for (i64 d = d0; d <= d1; ++d) {
      const i64 s0 = w.sh_base[d], s1 = w.sh_base[d + 1];
      const i64 i0 = (s0 > g0 ? s0 : g0) - g0, i1 = (s1 < g1 ? s1 : g1) - g0;
      if (i0 >= i1) continue;
      const bool whole = s0 >= g0 && s1 <= g1;
      T* const sig = out + d * sk.k;
      for (int j = threadIdx.x; j < sk.k; j += blockDim.x) {
        const T aj = a[j], bj = b[j];
        T m = static_cast<T>(~T(0));
        for (i64 i = i0; i < i1; ++i) {
          const T v = permuted(aj, x[i], bj);
          m = v < m ? v : m;
        }
        if (whole) {
          sig[j] = m;
        } else {
          atomic_min(sig + j, m);
        }
      }
    }
    __syncthreads();
  }
}

// ---------------------------------------------------------------------------------------------
// Host side

inline const char* error_text(cudaError_t err) { return err == cudaSuccess ? nullptr : cudaGetErrorString(err); }

inline unsigned blocks_for(i64 items) {
  const i64 blocks = (items + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

inline std::size_t round_up(std::size_t x) { return (x + 255) / 256 * 256; }

// The workspace's pieces, each a bound that holds for any n documents of text_bytes bytes:
//   segments    sum ceil(len / kSegment) <= text_bytes / kSegment + n
//   text        a document reserves (lower-cased word bytes + words) bytes; lower-casing
//               lengthens a character by at most half (2 -> 3 bytes, ASCII stays ASCII) and
//               every word but the first follows at least one separator byte: <= 1.5 len + 1
//   word units  words <= (len + 1) / 2 (a word and a separator take at least 2 bytes)
//   char units  a document reserves (word characters + words) <= len + 1 entries
struct Plan {
  i64 segcap = 0, normcap = 0, unitcap = 0;
  std::size_t at[12] = {};  // byte offsets of the pieces, in Work's order; at[11]: cub's scratch
  std::size_t scan_bytes = 0, total = 0;
};

cudaError_t plan(i64 n, i64 text_bytes, int unit, Plan& p) {
  p.segcap = text_bytes / kSegment + n;
  p.normcap = text_bytes + text_bytes / 2 + n + 1;
  p.unitcap = unit == 0 ? text_bytes / 2 + n + 1 : text_bytes + n + 1;
  const std::size_t docs1 = static_cast<std::size_t>(n + 1), segs1 = static_cast<std::size_t>(p.segcap + 1);
  const std::size_t sizes[11] = {sizeof(int),
                                 docs1 * sizeof(i64),
                                 docs1 * sizeof(i64),
                                 segs1 * sizeof(SegCount),
                                 segs1 * sizeof(SegCount),
                                 static_cast<std::size_t>(n) * sizeof(DocInfo),
                                 docs1 * sizeof(i64),
                                 docs1 * sizeof(i64),
                                 static_cast<std::size_t>(p.normcap),
                                 static_cast<std::size_t>(p.unitcap) * sizeof(u32),
                                 unit == 0 ? static_cast<std::size_t>(p.unitcap) * sizeof(u32) : 0};
  std::size_t at = 0;
  for (int i = 0; i < 11; ++i) {
    p.at[i] = at;
    at += round_up(sizes[i]);
  }
  p.at[11] = at;
  std::size_t sum_bytes = 0, seg_bytes = 0;
  // (the same argument types as the calls in run(), so that cub sizes the same instantiations)
  cudaError_t err = cub::DeviceScan::ExclusiveSum(nullptr, sum_bytes, static_cast<i64*>(nullptr),
                                                  static_cast<i64*>(nullptr), static_cast<int>(n + 1));
  if (err != cudaSuccess) return err;
  err = cub::DeviceScan::ExclusiveScan(nullptr, seg_bytes, static_cast<SegCount*>(nullptr),
                                       static_cast<SegCount*>(nullptr), SegSum{}, SegCount{0, 0, 0},
                                       static_cast<int>(p.segcap + 1));
  if (err != cudaSuccess) return err;
  p.scan_bytes = sum_bytes > seg_bytes ? sum_bytes : seg_bytes;
  p.total = at + round_up(p.scan_bytes);
  return cudaSuccess;
}

Work carve(const Plan& p, void* workspace) {
  auto* base = static_cast<unsigned char*>(workspace);
  Work w;
  w.status = reinterpret_cast<int*>(base + p.at[0]);
  w.seg_count = reinterpret_cast<i64*>(base + p.at[1]);
  w.seg_base = reinterpret_cast<i64*>(base + p.at[2]);
  w.seg = reinterpret_cast<SegCount*>(base + p.at[3]);
  w.seg_pre = reinterpret_cast<SegCount*>(base + p.at[4]);
  w.docs = reinterpret_cast<DocInfo*>(base + p.at[5]);
  w.sh_count = reinterpret_cast<i64*>(base + p.at[6]);
  w.sh_base = reinterpret_cast<i64*>(base + p.at[7]);
  w.norm = base + p.at[8];
  w.ustart = reinterpret_cast<u32*>(base + p.at[9]);
  w.uend = reinterpret_cast<u32*>(base + p.at[10]);
  w.segcap = p.segcap;
  return w;
}

template <class T>
const char* run(const Params& prm, const Texts& t, T* out, std::uint64_t* digests, void* workspace,
                std::size_t workspace_bytes, cudaStream_t s) {
  Plan p;
  cudaError_t err = plan(t.n, t.text_bytes, prm.unit, p);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  if (workspace_bytes < p.total) return "the MinHash workspace is too small (see minhash_workspace_bytes)";
  const Work w = carve(p, workspace);
  void* const scratch = static_cast<unsigned char*>(workspace) + p.at[11];
  const UnicodeTables u = UnicodeBlob::view(prm.unicode);
  const int docs1 = static_cast<int>(t.n + 1);
  std::size_t scan_bytes = p.scan_bytes;

  err = cudaMemsetAsync(w.status, 0, sizeof(int), s);
  if (err == cudaSuccess) {
    err = cudaMemsetAsync(out, 0xFF, static_cast<std::size_t>(t.n) * static_cast<std::size_t>(prm.num_perm) * sizeof(T),
                          s);
  }
  if (err != cudaSuccess) return cudaGetErrorString(err);
  count_segments<<<blocks_for(t.n + 1), kThreads, 0, s>>>(t, w);
  err = cub::DeviceScan::ExclusiveSum(scratch, scan_bytes, w.seg_count, w.seg_base, docs1, s);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  count_segment_text<<<blocks_for(p.segcap + 1), kThreads, 0, s>>>(t, w, u);
  scan_bytes = p.scan_bytes;
  err = cub::DeviceScan::ExclusiveScan(scratch, scan_bytes, w.seg, w.seg_pre, SegSum{}, SegCount{0, 0, 0},
                                       static_cast<int>(p.segcap + 1), s);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  finish_documents<<<blocks_for(t.n + 1), kThreads, 0, s>>>(t, w, prm.unit, prm.ngram);
  write_segment_text<<<blocks_for(p.segcap), kThreads, 0, s>>>(t, w, u, prm.unit);
  if (digests != nullptr) digest_documents<<<blocks_for(t.n), kThreads, 0, s>>>(t, w, digests);
  scan_bytes = p.scan_bytes;
  err = cub::DeviceScan::ExclusiveSum(scratch, scan_bytes, w.sh_count, w.sh_base, docs1, s);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  const Sketch sk{prm.a, prm.b, prm.num_perm, prm.ngram, prm.unit, prm.seed};
  const i64 tiles = (p.unitcap + t.n) / kTile + 1;  // shingles <= units + documents
  const unsigned sketch_blocks = static_cast<unsigned>(tiles < kMaxBlocks ? tiles : kMaxBlocks);
  sketch_tiles<T><<<sketch_blocks, kThreads, 0, s>>>(t, w, sk, out);
  return error_text(cudaGetLastError());
}

}  // namespace

const char* workspace_bytes(std::int64_t n, std::int64_t text_bytes, int unit, std::size_t* bytes) {
  Plan p;
  const cudaError_t err = plan(n, text_bytes, unit, p);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  *bytes = p.total;
  return nullptr;
}

const char* signatures(const Params& p, const Texts& t, void* out, std::uint64_t* digests, void* workspace,
                       std::size_t workspace_bytes, void* stream) {
  if (t.n == 0) return nullptr;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (p.width == 32) return run(p, t, static_cast<std::uint32_t*>(out), digests, workspace, workspace_bytes, s);
  if (p.width == 64) return run(p, t, static_cast<std::uint64_t*>(out), digests, workspace, workspace_bytes, s);
  return "slot width must be 32 or 64";
}

}  // namespace minhash_cuda
}  // namespace mixsieve
