// Per-token mixup on CUDA, part 1: lambda draws and the mixed embedding (forward, an atomic
// backward and a deterministic sort + segmented-sum backward). The per-element arithmetic is
// mixup_math.hpp's, the functions the CPU kernels (mixup.hpp) call, and this file is compiled
// with --fmad=false (CMakeLists.txt) so that no multiply-add is fused where the CPU rounds
// twice: lambdas, mixed embeddings and the deterministic embedding gradient are bitwise equal
// to the CPU's (the gradient sums each row in the CPU's order). Nothing here synchronises with
// the host: launches go on the caller's stream.
#include <cub/device/device_radix_sort.cuh>

#include "device_common.cuh"

namespace mixsieve {
namespace mixup {
namespace cuda {
namespace {

using namespace detail;

// ---------------------------------------------------------------------------------------------
// Lambda: one thread per element, element i depends only on (key, i).

__global__ void lambda_kernel(float* out, i64 n, std::uint64_t key, double alpha, bool dominant) {
  const i64 stride = static_cast<i64>(gridDim.x) * blockDim.x;
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = sample_lambda(key, static_cast<std::uint64_t>(i), alpha, dominant);
  }
}

// ---------------------------------------------------------------------------------------------
// Mixed embeddings: one block per position row, vectorised over D in 16-byte packs when the
// rows are aligned. A row is zeros (dropped), a raw copy of E[xa] (lambda 1) or E[xb]
// (lambda 0), the mix, or NaN (a bad lambda or id), decided once per row.

enum class RowMode : int { Zero, CopyA, CopyB, Mix, Bad };

template <class W, bool VEC>
__global__ void __launch_bounds__(128)
    embed_forward_kernel(const W* __restrict__ weight, i64 vocab, i64 dim, Windows w, W* __restrict__ out) {
  using M = typename Elem<W>::math;
  const i64 rows = w.batch * (w.width - 1);
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const i64 i = window_index(w, r);
    const TokenMix m = token(w, i);
    const i64 ia = w.xa[i], ib = w.xb[i];
    RowMode mode;
    if (!lam_ok(w.lam[i])) {
      mode = RowMode::Bad;
    } else if (!m.keep) {
      mode = RowMode::Zero;
    } else if ((m.lam != 0.0f && !id_ok(ia, vocab)) || (m.lam != 1.0f && !id_ok(ib, vocab))) {
      mode = RowMode::Bad;
    } else {
      mode = m.lam == 1.0f ? RowMode::CopyA : (m.lam == 0.0f ? RowMode::CopyB : RowMode::Mix);
    }
    const W* ea = weight + (mode == RowMode::CopyA || mode == RowMode::Mix ? ia : 0) * dim;
    const W* eb = weight + (mode == RowMode::CopyB || mode == RowMode::Mix ? ib : 0) * dim;
    W* dst = out + r * dim;
    const M lam = static_cast<M>(m.lam);
    if (VEC) {
      constexpr int N = 16 / sizeof(W);
      const i64 packs = dim / N;
      const uint4* pa = reinterpret_cast<const uint4*>(ea);
      const uint4* pb = reinterpret_cast<const uint4*>(eb);
      uint4* pd = reinterpret_cast<uint4*>(dst);
      auto make = [&](i64 p) {
        Pack<W> x;
        if (mode == RowMode::Zero) {
          x.u = make_uint4(0u, 0u, 0u, 0u);  // +0 in every element type
        } else if (mode == RowMode::CopyA) {
          x.u = pa[p];
        } else if (mode == RowMode::CopyB) {
          x.u = pb[p];
        } else if (mode == RowMode::Mix) {
          Pack<W> xa, xb;
          xa.u = pa[p];
          xb.u = pb[p];
#pragma unroll
          for (int k = 0; k < N; ++k) {
            Elem<W>::store(x.e, k, mix_element<M>(Elem<W>::load(xa.e, k), Elem<W>::load(xb.e, k), lam));
          }
        } else {
#pragma unroll
          for (int k = 0; k < N; ++k) Elem<W>::store(x.e, k, quiet_nan<M>());
        }
        return x;
      };
      // two packs per thread and step, both loaded before either is stored: short rows (a
      // 16-bit row of 1024 is 128 packs) keep twice the bytes in flight per thread
      const i64 step = 2 * static_cast<i64>(blockDim.x);
      for (i64 p0 = threadIdx.x; p0 < packs; p0 += step) {
        const i64 p1 = p0 + blockDim.x;
        const Pack<W> x0 = make(p0);
        if (p1 < packs) {
          const Pack<W> x1 = make(p1);
          pd[p0] = x0.u;
          pd[p1] = x1.u;
        } else {
          pd[p0] = x0.u;
        }
      }
    } else {
      for (i64 d = threadIdx.x; d < dim; d += blockDim.x) {
        if (mode == RowMode::Zero) {
          Elem<W>::store(dst, d, M(0));
        } else if (mode == RowMode::CopyA) {
          dst[d] = ea[d];
        } else if (mode == RowMode::CopyB) {
          dst[d] = eb[d];
        } else if (mode == RowMode::Mix) {
          Elem<W>::store(dst, d, mix_element<M>(Elem<W>::load(ea, d), Elem<W>::load(eb, d), lam));
        } else {
          Elem<W>::store(dst, d, quiet_nan<M>());
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Embedding backward. Contribution k = 2 r + side (side 0: a with coefficient lam, side 1: b
// with 1 - lam, computed in the accumulator's type as the CPU kernel does) adds
// coef * grad_out[r] to row xa or xb. An id outside [0, V) is skipped (the
// forward made that position's output NaN, so the loss is NaN already).

__device__ __forceinline__ bool contribution(const Windows& w, i64 vocab, i64 k, i64& row, float& lam) {
  const i64 i = window_index(w, k >> 1);
  const TokenMix m = token(w, i);
  const bool side_b = (k & 1) != 0;
  if (!m.keep || m.lam == (side_b ? 1.0f : 0.0f)) return false;
  row = side_b ? w.xb[i] : w.xa[i];
  lam = m.lam;
  return id_ok(row, vocab);
}

template <class A>
__device__ __forceinline__ A coefficient(float lam, bool side_b) {
  return side_b ? A(1) - static_cast<A>(lam) : static_cast<A>(lam);
}

// Atomic path: one block per position row, atomicAdd into the zero-filled accumulator.
template <class G, class A>
__global__ void __launch_bounds__(256)
    embed_backward_atomic(const G* __restrict__ grad_out, i64 vocab, i64 dim, Windows w, A* grad_weight) {
  using M = typename Elem<G>::math;
  const i64 rows = w.batch * (w.width - 1);
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    i64 ra = 0, rb = 0;
    float lam = 0.0f;
    const bool ua = contribution(w, vocab, 2 * r, ra, lam);
    const bool ub = contribution(w, vocab, 2 * r + 1, rb, lam);
    if (!ua && !ub) continue;
    const G* g = grad_out + r * dim;
    A* da = grad_weight + ra * dim;
    A* db = grad_weight + rb * dim;
    const A cA = coefficient<A>(lam, false), cB = coefficient<A>(lam, true);
    for (i64 d = threadIdx.x; d < dim; d += blockDim.x) {
      const A gv = static_cast<A>(static_cast<M>(Elem<G>::load(g, d)));
      if (ua) atomicAdd(da + d, cA * gv);
      if (ub) atomicAdd(db + d, cB * gv);
    }
  }
}

// Deterministic path, step 1: sort keys (the vocabulary row, or V for no contribution) with
// the contribution index as value. The radix sort is stable, so each row's contributions stay
// in (position, side) order: the order in which the CPU kernel sums them.
__global__ void contribution_keys(Windows w, i64 vocab, i64 n, std::uint32_t* keys, std::uint32_t* vals) {
  const i64 stride = static_cast<i64>(gridDim.x) * blockDim.x;
  for (i64 k = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += stride) {
    i64 row;
    float lam;
    const bool used = contribution(w, vocab, k, row, lam);
    keys[k] = used ? static_cast<std::uint32_t>(row) : static_cast<std::uint32_t>(vocab);
    vals[k] = static_cast<std::uint32_t>(k);
  }
}

__device__ __forceinline__ i64 lower_bound(const std::uint32_t* keys, i64 n, std::uint32_t x) {
  i64 lo = 0, hi = n;
  while (lo < hi) {
    const i64 mid = (lo + hi) >> 1;
    if (keys[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// Step 2: where each row's contributions start in the sorted order, offsets[v] for v in [0, V]
// (one thread per row, so the binary searches run side by side).
__global__ void segment_offsets(const std::uint32_t* keys, i64 n, i64 vocab, std::uint32_t* offsets) {
  const i64 stride = static_cast<i64>(gridDim.x) * blockDim.x;
  for (i64 v = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; v <= vocab; v += stride) {
    offsets[v] = static_cast<std::uint32_t>(lower_bound(keys, n, static_cast<std::uint32_t>(v)));
  }
}

// Step 3: one block per vocabulary row sums the row's contributions in sorted order (a fixed
// order whatever the launch) and writes the row once: zeros when nothing reads the row (most
// rows, so a block is small and an empty row costs one load and its stores).
constexpr int kSumThreads = 128;
constexpr int kSumPerThread = 8;

template <class G, class A>
__global__ void __launch_bounds__(kSumThreads)
    embed_backward_rows(const G* __restrict__ grad_out, i64 vocab, i64 dim, Windows w,
                        const std::uint32_t* __restrict__ offsets, const std::uint32_t* __restrict__ vals,
                        A* __restrict__ grad_weight) {
  using M = typename Elem<G>::math;
  __shared__ i64 tile_row[kSumThreads];
  __shared__ A tile_coef[kSumThreads];
  for (i64 v = blockIdx.x; v < vocab; v += gridDim.x) {
    const i64 e0 = offsets[v], e1 = offsets[v + 1];  // the same for the whole block
    A* dst = grad_weight + v * dim;
    for (i64 d0 = 0; d0 < dim; d0 += static_cast<i64>(kSumThreads) * kSumPerThread) {
      A acc[kSumPerThread];
#pragma unroll
      for (int q = 0; q < kSumPerThread; ++q) acc[q] = A(0);
      for (i64 t0 = e0; t0 < e1; t0 += kSumThreads) {
        const int count = static_cast<int>(e1 - t0 < kSumThreads ? e1 - t0 : kSumThreads);
        __syncthreads();  // the previous tile (of this row or the last) is consumed
        if (static_cast<int>(threadIdx.x) < count) {
          i64 row;
          float lam;
          const i64 k = vals[t0 + threadIdx.x];
          contribution(w, vocab, k, row, lam);  // true: the key says so
          tile_row[threadIdx.x] = k >> 1;
          tile_coef[threadIdx.x] = coefficient<A>(lam, (k & 1) != 0);
        }
        __syncthreads();
        for (int e = 0; e < count; ++e) {
          const G* g = grad_out + tile_row[e] * dim;
          const A c = tile_coef[e];
#pragma unroll
          for (int q = 0; q < kSumPerThread; ++q) {
            const i64 d = d0 + q * kSumThreads + threadIdx.x;
            if (d < dim) acc[q] += c * static_cast<A>(static_cast<M>(Elem<G>::load(g, d)));
          }
        }
      }
#pragma unroll
      for (int q = 0; q < kSumPerThread; ++q) {
        const i64 d = d0 + q * kSumThreads + threadIdx.x;
        if (d < dim) dst[d] = acc[q];
      }
    }
  }
}

// Sizes of the deterministic path's workspace: four uint32 arrays of n, then cub's scratch.
struct SortLayout {
  std::size_t array_bytes = 0;    // one array, rounded up to 256 bytes
  std::size_t offsets_bytes = 0;  // V + 1 segment offsets
  std::size_t cub_bytes = 0;
  int end_bit = 1;
  std::size_t total() const { return 4 * array_bytes + offsets_bytes + cub_bytes; }
};

cudaError_t sort_layout(i64 n, i64 vocab, SortLayout& s) {
  s.array_bytes = ((static_cast<std::size_t>(n) * sizeof(std::uint32_t) + 255) / 256) * 256;
  s.offsets_bytes = ((static_cast<std::size_t>(vocab + 1) * sizeof(std::uint32_t) + 255) / 256) * 256;
  s.end_bit = 1;
  while (s.end_bit < 32 && (std::uint64_t(1) << s.end_bit) <= static_cast<std::uint64_t>(vocab)) ++s.end_bit;
  return cub::DeviceRadixSort::SortPairs(nullptr, s.cub_bytes, static_cast<const std::uint32_t*>(nullptr),
                                         static_cast<std::uint32_t*>(nullptr),
                                         static_cast<const std::uint32_t*>(nullptr),
                                         static_cast<std::uint32_t*>(nullptr), static_cast<int>(n), 0, s.end_bit);
}

// ---------------------------------------------------------------------------------------------
// Host-side dispatch

template <class W>
const char* launch_embed_forward(const void* weight, i64 vocab, i64 dim, const Windows& w, void* out,
                                 cudaStream_t s) {
  const i64 rows = w.batch * (w.width - 1);
  const bool vec = (dim * static_cast<i64>(sizeof(W))) % 16 == 0 && aligned16(weight) && aligned16(out);
  const i64 units = vec ? dim * static_cast<i64>(sizeof(W)) / 16 : dim;
  // the vector path does two packs per thread and step: half as many threads as packs
  const i64 per_thread = vec ? (units + 1) / 2 : units;
  const unsigned threads = static_cast<unsigned>(per_thread >= 128 ? 128 : ((per_thread + 31) / 32) * 32);
  const W* wt = static_cast<const W*>(weight);
  W* o = static_cast<W*>(out);
  if (vec) {
    embed_forward_kernel<W, true><<<grid_for(rows), threads, 0, s>>>(wt, vocab, dim, w, o);
  } else {
    embed_forward_kernel<W, false><<<grid_for(rows), threads, 0, s>>>(wt, vocab, dim, w, o);
  }
  return last_error();
}

template <class G, class A>
const char* launch_embed_backward(const void* grad_out, i64 vocab, i64 dim, const Windows& w, void* grad_weight,
                                  bool deterministic, void* workspace, std::size_t workspace_bytes,
                                  cudaStream_t s) {
  const G* g = static_cast<const G*>(grad_out);
  A* gw = static_cast<A*>(grad_weight);
  const i64 rows = w.batch * (w.width - 1);
  const i64 dim_threads = dim >= 256 ? 256 : ((dim + 31) / 32) * 32;
  if (!deterministic) {
    cudaError_t err = cudaMemsetAsync(gw, 0, static_cast<std::size_t>(vocab * dim) * sizeof(A), s);
    if (err != cudaSuccess) return cudaGetErrorString(err);
    if (rows > 0) {
      embed_backward_atomic<G, A><<<grid_for(rows), static_cast<unsigned>(dim_threads), 0, s>>>(g, vocab, dim, w, gw);
    }
    return last_error();
  }
  const i64 n = 2 * rows;
  SortLayout lay;
  cudaError_t err = sort_layout(n, vocab, lay);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  void* owned = nullptr;
  if (workspace == nullptr) {
    err = cudaMallocAsync(&owned, lay.total(), s);
    if (err != cudaSuccess) return cudaGetErrorString(err);
    workspace = owned;
  } else if (workspace_bytes < lay.total()) {
    return "the embedding backward's workspace is too small";
  }
  char* base = static_cast<char*>(workspace);
  std::uint32_t* keys_in = reinterpret_cast<std::uint32_t*>(base);
  std::uint32_t* keys_out = reinterpret_cast<std::uint32_t*>(base + lay.array_bytes);
  std::uint32_t* vals_in = reinterpret_cast<std::uint32_t*>(base + 2 * lay.array_bytes);
  std::uint32_t* vals_out = reinterpret_cast<std::uint32_t*>(base + 3 * lay.array_bytes);
  std::uint32_t* offsets = reinterpret_cast<std::uint32_t*>(base + 4 * lay.array_bytes);
  void* scratch = base + 4 * lay.array_bytes + lay.offsets_bytes;
  if (n > 0) {
    contribution_keys<<<grid_for((n + 255) / 256, 4096), 256, 0, s>>>(w, vocab, n, keys_in, vals_in);
    err = cudaGetLastError();
    std::size_t cub_bytes = lay.cub_bytes;
    if (err == cudaSuccess) {
      err = cub::DeviceRadixSort::SortPairs(scratch, cub_bytes, static_cast<const std::uint32_t*>(keys_in), keys_out,
                                            static_cast<const std::uint32_t*>(vals_in), vals_out, static_cast<int>(n),
                                            0, lay.end_bit, s);
    }
  }
  if (err == cudaSuccess) {
    segment_offsets<<<grid_for((vocab + 256) / 256, 4096), 256, 0, s>>>(keys_out, n, vocab, offsets);
    embed_backward_rows<G, A><<<grid_for(vocab), kSumThreads, 0, s>>>(g, vocab, dim, w, offsets, vals_out, gw);
    err = cudaGetLastError();
  }
  if (owned != nullptr) {
    const cudaError_t free_err = cudaFreeAsync(owned, s);
    if (err == cudaSuccess) err = free_err;
  }
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* fill_lambda(float* out, std::int64_t n, std::uint64_t key, double alpha, bool dominant, void* stream) {
  if (n <= 0) return nullptr;
  lambda_kernel<<<grid_for((n + 255) / 256, 65536), 256, 0, static_cast<cudaStream_t>(stream)>>>(out, n, key, alpha,
                                                                                                  dominant);
  return last_error();
}

const char* embed_forward(Dtype dtype, const void* weight, std::int64_t vocab, std::int64_t dim, const Windows& w,
                          void* out, void* stream) {
  if (w.batch * (w.width - 1) <= 0) return nullptr;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case Dtype::F32: return launch_embed_forward<float>(weight, vocab, dim, w, out, s);
    case Dtype::F64: return launch_embed_forward<double>(weight, vocab, dim, w, out, s);
    case Dtype::BF16: return launch_embed_forward<bf16_t>(weight, vocab, dim, w, out, s);
    case Dtype::F16: return launch_embed_forward<f16_t>(weight, vocab, dim, w, out, s);
  }
  return "unknown dtype";
}

const char* embed_backward_workspace(std::int64_t batch, std::int64_t width, std::int64_t vocab,
                                     std::size_t* bytes) {
  SortLayout lay;
  const cudaError_t err = sort_layout(2 * batch * (width - 1), vocab, lay);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  *bytes = lay.total();
  return nullptr;
}

const char* embed_backward(Dtype dtype, const void* grad_out, std::int64_t vocab, std::int64_t dim, const Windows& w,
                           void* grad_weight, bool deterministic, void* workspace, std::size_t workspace_bytes,
                           void* stream) {
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case Dtype::F32:
      return launch_embed_backward<float, float>(grad_out, vocab, dim, w, grad_weight, deterministic, workspace,
                                                 workspace_bytes, s);
    case Dtype::F64:
      return launch_embed_backward<double, double>(grad_out, vocab, dim, w, grad_weight, deterministic, workspace,
                                                   workspace_bytes, s);
    case Dtype::BF16:
      return launch_embed_backward<bf16_t, float>(grad_out, vocab, dim, w, grad_weight, deterministic, workspace,
                                                  workspace_bytes, s);
    case Dtype::F16:
      return launch_embed_backward<f16_t, float>(grad_out, vocab, dim, w, grad_weight, deterministic, workspace,
                                                 workspace_bytes, s);
  }
  return "unknown dtype";
}

}  // namespace cuda
}  // namespace mixup
}  // namespace mixsieve
