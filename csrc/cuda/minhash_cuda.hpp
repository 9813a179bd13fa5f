// Launchers of the MinHash kernels (minhash.cu): signatures, and optionally the digests of the
// normalised texts, of documents held in device memory in the Arrow layout (one byte buffer and
// n + 1 int64 offsets). This header is what the binding (bind_minhash.cpp, compiled by the host
// compiler) sees: no CUDA types. Pointers are device pointers; `stream` is a cudaStream_t
// (torch's current stream). The launchers only enqueue work on it, never synchronise with the
// host, and return nullptr or the CUDA error message of a failed launch.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mixsieve {
namespace minhash_cuda {

// Longest document the kernels take: positions inside one normalised document are 32-bit.
inline constexpr std::int64_t kMaxDocumentBytes = (std::int64_t{1} << 31) - 1;
// Most documents and bytes one call takes (the scans count items in int).
inline constexpr std::int64_t kMaxDocuments = std::int64_t{1} << 30;
inline constexpr std::int64_t kMaxCallBytes = std::int64_t{1} << 36;  // segment counts stay below 2^31

// The documents of one call. Document i is data[offsets[i], offsets[i + 1]). The caller
// checks (on the host) that the offsets do not decrease, lie in [0, data_bytes] and that
// offsets[n] - offsets[0] == text_bytes; text_bytes sizes the workspace. The kernels check
// it again, and if the offsets on the device disagree (changed during the call), they write
// every slot at its maximum and every digest as 0 instead of reading or writing out of bounds.
struct Texts {
  const unsigned char* data;
  std::int64_t data_bytes;
  const std::int64_t* offsets;
  std::int64_t n;
  std::int64_t text_bytes;
};

struct Params {
  int width;      // slot bits: 32 or 64
  int num_perm;   // slots per signature, >= 1
  int ngram;      // >= 1
  int unit;       // 0 word, 1 char
  std::uint64_t seed;
  const void* a;  // device: num_perm permutation multipliers of the slot type (MinHasher::a())
  const void* b;  // device: num_perm offsets (MinHasher::b())
  const void* unicode;  // device: a copy of UnicodeBlob::build()'s bytes
};

// Bytes of device workspace a call with n documents of text_bytes bytes in all needs: about
// 6 * text_bytes plus 100 bytes per document (normalised text, word or character offsets,
// per-segment counts, scan scratch).
const char* workspace_bytes(std::int64_t n, std::int64_t text_bytes, int unit, std::size_t* bytes);

// Writes out[n, num_perm] (uint32 or uint64 by width) and, unless digests is nullptr,
// digests[n, 2] (uint64 lo, hi: the Digest128 of each normalised text, as the CPU's
// StreamDigest gives it). The same bytes as MinHasher<T>::signature / signature_digest.
const char* signatures(const Params& p, const Texts& t, void* out, std::uint64_t* digests, void* workspace,
                       std::size_t workspace_bytes, void* stream);

}  // namespace minhash_cuda
}  // namespace mixsieve
