// Per-token mixup on CUDA, part 2: the two-target cross-entropy, one block per position row,
// with mixup_math.hpp's formulas (token_loss, logit_grad, fast_expf) as in the CPU kernel
// (ce_chunk_impl in mixup.hpp). A block sums a row in another order than the CPU does, so the
// two agree to rounding, not bitwise, and multiply-adds may be fused here; a given launch is
// deterministic (the block size depends only on V). No host sync: launches go on the caller's
// stream.
#include "device_common.cuh"

namespace mixsieve {
namespace mixup {
namespace cuda {
namespace {

using namespace detail;

// ---------------------------------------------------------------------------------------------
// Two-target cross-entropy: one block per position row.

struct CePos {
  i64 ya, yb;
  float omega;
  bool a_ok, b_ok, keep, bad;
};

// Targets of position r, as Targets::at_position in mixup.hpp; `bad` instead of an exception
// for an ok target id outside [0, V) or a kept position whose lambdas lie outside [0, 1].
__device__ __forceinline__ CePos ce_position(const Windows& w, i64 r, i64 vocab, bool shifted, i64 ignore_index) {
  const i64 in = window_index(w, r), nx = in + 1;
  CePos p;
  p.ya = w.xa[nx];
  p.yb = w.xb[nx];
  const TokenMix m_in = token(w, in);
  p.a_ok = a_valid(w, nx) && p.ya != ignore_index;
  p.b_ok = b_valid(w, nx) && p.yb != ignore_index;
  if (w.policy == Policy::AOnly && !p.a_ok) p.b_ok = false;
  const TargetMix tm = target_weight(shifted ? token(w, nx).lam : m_in.lam, p.a_ok, p.b_ok);
  p.omega = tm.omega;
  p.keep = m_in.keep && tm.keep;
  p.bad = (p.a_ok && !id_ok(p.ya, vocab)) || (p.b_ok && !id_ok(p.yb, vocab)) ||
          (p.keep && !(lam_ok(w.lam[in]) && lam_ok(w.lam[nx])));
  return p;
}

// Block-wide max or sum; every thread gets the result. Each thread combines the per-warp
// values in the same order, so the result is fixed for a given block size.
template <bool MAX, class M>
__device__ __forceinline__ M block_reduce(M x, M* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const M y = __shfl_xor_sync(0xFFFFFFFFu, x, o);
    x = MAX ? (y > x ? y : x) : x + y;
  }
  __syncthreads();  // scratch is free
  if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = x;
  __syncthreads();
  x = scratch[0];
  const int warps = static_cast<int>(blockDim.x >> 5);
  for (int k = 1; k < warps; ++k) x = MAX ? (scratch[k] > x ? scratch[k] : x) : x + scratch[k];
  return x;
}

// f(x) for each element of a row (this thread's share), in 16-byte packs when VEC.
template <class L, bool VEC, class F>
__device__ __forceinline__ void row_for_each(const L* z, i64 vocab, F&& f) {
  using M = typename Elem<L>::math;
  i64 v0 = 0;
  if (VEC) {
    constexpr int N = 16 / sizeof(L);
    const i64 packs = vocab / N;
    const uint4* zp = reinterpret_cast<const uint4*>(z);
    for (i64 p = threadIdx.x; p < packs; p += blockDim.x) {
      Pack<L> x;
      x.u = zp[p];
#pragma unroll
      for (int k = 0; k < N; ++k) f(static_cast<M>(Elem<L>::load(x.e, k)));
    }
    v0 = packs * N;
  }
  for (i64 v = v0 + threadIdx.x; v < vocab; v += blockDim.x) f(static_cast<M>(Elem<L>::load(z, v)));
}

// out[v] = f(z[v]) over a row (z and out may alias: each element is read before it is written,
// by the same thread).
template <class L, bool VEC, class F>
__device__ __forceinline__ void row_map(const L* z, L* out, i64 vocab, F&& f) {
  using M = typename Elem<L>::math;
  i64 v0 = 0;
  if (VEC) {
    constexpr int N = 16 / sizeof(L);
    const i64 packs = vocab / N;
    const uint4* zp = reinterpret_cast<const uint4*>(z);
    uint4* op = reinterpret_cast<uint4*>(out);
    for (i64 p = threadIdx.x; p < packs; p += blockDim.x) {
      Pack<L> x, y;
      x.u = zp[p];
#pragma unroll
      for (int k = 0; k < N; ++k) Elem<L>::store(y.e, k, f(static_cast<M>(Elem<L>::load(x.e, k))));
      op[p] = y.u;
    }
    v0 = packs * N;
  }
  for (i64 v = v0 + threadIdx.x; v < vocab; v += blockDim.x) {
    Elem<L>::store(out, v, f(static_cast<M>(Elem<L>::load(z, v))));
  }
}

template <class L, bool VEC>
__global__ void __launch_bounds__(512) ce_kernel(CeArgs a, Windows w) {
  using M = typename Elem<L>::math;
  __shared__ M scratch[32];
  const i64 vocab = a.vocab;
  const M eps = static_cast<M>(a.eps);
  const M eps_over_v = eps / static_cast<M>(vocab);
  const M inf = static_cast<M>(INFINITY);
  for (i64 j = blockIdx.x; j < a.n; j += gridDim.x) {
    const CePos p = ce_position(w, a.r0 + j, vocab, a.shifted, a.ignore_index);
    const L* z = static_cast<const L*>(a.logits) + j * vocab;
    M max, log_sum;  // the row's max and log sum exp(z - max), kept apart (see token_loss)
    if (a.gtok == nullptr) {  // forward: as row_stats in mixup.hpp
      M mx = -inf, sum = M(0);
      row_for_each<L, VEC>(z, vocab, [&](M x) {
        mx = x > mx ? x : mx;
        sum += x;
      });
      mx = block_reduce<true>(mx, scratch);
      sum = block_reduce<false>(sum, scratch);
      const M mean = sum / static_cast<M>(vocab);
      log_sum = M(0);
      if (sum != sum || !(mx > -inf && mx < inf)) {  // a NaN or +inf logit (or all -inf): not finite
        max = sum != sum ? sum : (mx > 0 ? mx : -mx);
      } else {
        max = mx;
        M e = M(0);
        row_for_each<L, VEC>(z, vocab, [&](M x) { e += expm(x - mx); });
        e = block_reduce<false>(e, scratch);
        log_sum = logm(e);
      }
      if (threadIdx.x == 0) {
        const M za = p.a_ok && !p.bad ? static_cast<M>(Elem<L>::load(z, p.ya)) : M(0);
        const M zb = p.b_ok && !p.bad ? static_cast<M>(Elem<L>::load(z, p.yb)) : M(0);
        M* stats = static_cast<M*>(a.lse) + 2 * j;
        stats[0] = p.bad ? quiet_nan<M>() : max;
        stats[1] = p.bad ? quiet_nan<M>() : log_sum;
        static_cast<M*>(a.keep)[j] = p.keep ? M(1) : M(0);
        static_cast<M*>(a.loss)[j] =
            p.bad    ? quiet_nan<M>()
            : p.keep ? token_loss<M>(max, log_sum, za, zb, mean, static_cast<M>(p.omega), eps)
                     : M(0);
      }
    } else {
      max = static_cast<const M*>(a.lse)[2 * j];
      log_sum = static_cast<const M*>(a.lse)[2 * j + 1];
    }
    if (a.grad == nullptr) continue;
    L* out = static_cast<L*>(a.grad) + j * vocab;
    if (p.bad || !p.keep) {
      __syncthreads();  // thread 0 has read z[ya], z[yb] (out may alias z)
      const M fill = p.bad ? quiet_nan<M>() : M(0);
      row_map<L, VEC>(z, out, vocab, [&](M) { return fill; });
      continue;
    }
    const M g = a.gtok == nullptr ? M(1) : static_cast<const M*>(a.gtok)[j];
    const M omega = static_cast<M>(p.omega);
    const M pa = p.a_ok ? softmax_p(static_cast<M>(Elem<L>::load(z, p.ya)), max, log_sum) : M(0);
    const M pb = p.b_ok ? softmax_p(static_cast<M>(Elem<L>::load(z, p.yb)), max, log_sum) : M(0);
    __syncthreads();  // every read of the target logits comes before any write (out may alias z)
    row_map<L, VEC>(z, out, vocab, [&](M x) {
      return logit_grad<M>(softmax_p(x, max, log_sum), false, false, omega, eps, eps_over_v, g);
    });
    __syncthreads();  // the target entries are written last, with the same formula
    if (threadIdx.x == 0) {
      const bool same = p.a_ok && p.b_ok && p.ya == p.yb;
      if (p.a_ok) Elem<L>::store(out, p.ya, logit_grad<M>(pa, true, same, omega, eps, eps_over_v, g));
      if (p.b_ok && !same) Elem<L>::store(out, p.yb, logit_grad<M>(pb, false, true, omega, eps, eps_over_v, g));
    }
  }
}

template <class L>
const char* launch_ce(const CeArgs& a, const Windows& w, cudaStream_t s) {
  const i64 bytes = a.vocab * static_cast<i64>(sizeof(L));
  const bool vec = bytes % 16 == 0 && aligned16(a.logits) && (a.grad == nullptr || aligned16(a.grad));
  const unsigned threads = a.vocab >= 16384 ? 512 : (a.vocab >= 2048 ? 256 : 64);
  if (vec) {
    ce_kernel<L, true><<<grid_for(a.n), threads, 0, s>>>(a, w);
  } else {
    ce_kernel<L, false><<<grid_for(a.n), threads, 0, s>>>(a, w);
  }
  return last_error();
}

}  // namespace

const char* cross_entropy(Dtype dtype, const CeArgs& a, const Windows& w, void* stream) {
  if (a.n <= 0) return nullptr;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case Dtype::F32: return launch_ce<float>(a, w, s);
    case Dtype::F64: return launch_ce<double>(a, w, s);
    case Dtype::BF16: return launch_ce<bf16_t>(a, w, s);
    case Dtype::F16: return launch_ce<f16_t>(a, w, s);
  }
  return "unknown dtype";
}

int device_count(const char** error) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear it
    if (error != nullptr) *error = cudaGetErrorString(err);
    return 0;
  }
  if (error != nullptr) *error = nullptr;
  return n;
}

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

int driver_version() {
  int v = 0;
  cudaDriverGetVersion(&v);
  return v;
}

}  // namespace cuda
}  // namespace mixup
}  // namespace mixsieve
