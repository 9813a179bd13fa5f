// Keyed A-Res weighted sampling on CUDA: the CPU's sample (ares_select in sampling.hpp), the
// same ids in the same order with the same keys, for weights already on the device.
//
// The keys are AresKeys's (ares_keys.hpp, MIXSIEVE_HD: the functions the CPU scan calls), and
// this file is compiled with --fmad=false, so every key is the CPU's to the bit. The order is
// the CPU's by construction: the k largest keys, ties by the lower id.
//
// The scheme, for n weights and a sample of k:
//   1. a floor from a strided sample of whole 256-item runs (as ares_estimate_floor): about
//      max(1.25 k, 16384) keys of the whole array are expected above it (plan_for);
//   2. one pass over the weights that validates them (the first bad index, by atomicMin),
//      counts the positive ones, and keeps the items whose key reaches the floor: the bound
//      u - 1 >= log(u) from the top 32 bits of u rules out almost every item before its
//      logarithm (the CPU's first pass); each block gathers its candidates in shared memory
//      and reserves room for them with one atomicAdd per tile;
//   3. the host reads four counters (the one synchronisation), then a stable radix sort of the
//      candidates by id and another by key (negative normal keys order like their bit
//      patterns, reversed) put them in the CPU's order; the first k are the sample.
// Without a floor (few weights, k close to n, or a retry) the pass writes every item's key, or
// a key that sorts last for items that cannot be chosen, in id order, and one stable sort does.
// A floor that kept fewer than k candidates is retried without one; one that kept more than
// the buffer holds is retried with a buffer of the size counted. Keys that leave the normal
// double range (the CPU's kNeedsWideKeys) make the call return NeedsHost.
#include <cub/device/device_radix_sort.cuh>

#ifdef MIXSIEVE_CUDA_EMULATION
#include "emu_sampling.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "mixsieve/ares_keys.hpp"
#include "sampling_cuda.hpp"

namespace mixsieve {
namespace sampling_cuda {
namespace {

using i64 = std::int64_t;
using u64 = unsigned long long;  // the type CUDA's 64-bit atomics take
using u32 = std::uint32_t;

constexpr unsigned kThreads = 256;
constexpr unsigned kStage = 512;  // candidates a block gathers in shared memory per tile
constexpr unsigned kRun = 256;    // items per run of the floor's sample
constexpr u64 kLast = ~0ull;      // a key that sorts after every key: items that cannot be chosen
constexpr u64 kNoBad = ~0ull;     // no bad weight seen
constexpr double kInf = std::numeric_limits<double>::infinity();

struct Counters {
  u64 bad;       // lowest index of a negative, NaN or infinite weight; kNoBad
  u64 positive;  // weights > 0
  u64 tiny;      // keys that underflowed to a subnormal or zero: only wide keys order them
  u64 kept;      // dense: normal keys; sparse: candidates (counted past the buffer's end)
  double floor;  // sparse: keys below it are not candidates
};

// A key the double comparisons order exactly: finite and normal (normal_key in weight_scale.hpp).
__host__ __device__ inline bool normal_key(double key) {
  return key <= -std::numeric_limits<double>::min() && key > -kInf;
}
// Negative doubles order in reverse of their bit patterns: the best key has the smallest.
__host__ __device__ inline u64 key_bits(double key) {
  u64 b;
  std::memcpy(&b, &key, sizeof(b));
  return b;
}
__host__ __device__ inline double key_of(u64 b) {
  double key;
  std::memcpy(&key, &b, sizeof(key));
  return key;
}

struct Tally {
  u64 bad = kNoBad, positive = 0, tiny = 0, kept = 0;
};

// Folds every thread's tally into the block's and adds it to the counters (thread 0). Every
// thread of the block must call it.
__device__ void add_tally(const Tally& t, Counters* c, bool with_kept) {
  __shared__ u64 s_bad[kThreads], s_pos[kThreads], s_tiny[kThreads], s_kept[kThreads];
  const unsigned tid = threadIdx.x;
  s_bad[tid] = t.bad;
  s_pos[tid] = t.positive;
  s_tiny[tid] = t.tiny;
  s_kept[tid] = t.kept;
  __syncthreads();
  for (unsigned h = kThreads / 2; h > 0; h >>= 1) {
    if (tid < h) {
      s_bad[tid] = s_bad[tid + h] < s_bad[tid] ? s_bad[tid + h] : s_bad[tid];
      s_pos[tid] += s_pos[tid + h];
      s_tiny[tid] += s_tiny[tid + h];
      s_kept[tid] += s_kept[tid + h];
    }
    __syncthreads();
  }
  if (tid == 0) {
    if (s_bad[0] != kNoBad) atomicMin(&c->bad, s_bad[0]);
    if (s_pos[0]) atomicAdd(&c->positive, s_pos[0]);
    if (s_tiny[0]) atomicAdd(&c->tiny, s_tiny[0]);
    if (with_kept && s_kept[0]) atomicAdd(&c->kept, s_kept[0]);
  }
}

// The pass over all weights. Tiles of kThreads * kUnroll items go to blocks in turn; every
// thread of a block runs the same number of tiles (the barriers need it). kDense: item i's
// key bits (kLast unless normal) and id go to position i. Otherwise candidates (keys >= floor)
// go to the first `capacity` slots in no particular order.
template <class W, bool kDense>
__global__ void __launch_bounds__(kThreads)
    scan_kernel(const W* __restrict__ w, i64 n, AresKeys keys, Counters* c, u64* __restrict__ cand_key,
                i64* __restrict__ cand_id, i64 capacity) {
  constexpr int kUnroll = 32 / static_cast<int>(sizeof(W));  // 32 bytes of loads in flight per thread
  constexpr i64 kTile = static_cast<i64>(kThreads) * kUnroll;
  __shared__ u64 s_key[kStage];
  __shared__ i64 s_id[kStage];
  __shared__ unsigned s_count, s_staged;
  __shared__ u64 s_base;
  const unsigned tid = threadIdx.x;
  const double floor = kDense ? -kInf : c->floor;
  const double tf = ares_pass_threshold(floor);
  if (!kDense && tid == 0) s_count = 0;
  Tally t;
  const i64 tiles = (n + kTile - 1) / kTile;
  for (i64 tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    if (!kDense) __syncthreads();  // s_count is 0, the last tile's copies are done
    const i64 first = tile * kTile + tid;
    W v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const i64 i = first + static_cast<i64>(u) * kThreads;
      v[u] = i < n ? w[i] : W(0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const i64 i = first + static_cast<i64>(u) * kThreads;
      if (i >= n) break;
      const double wi = static_cast<double>(v[u]);
      u64 bits = kLast;
      if (!ares_detail::valid_weight(wi)) {
        t.bad = static_cast<u64>(i) < t.bad ? static_cast<u64>(i) : t.bad;
      } else if (wi > 0.0) {
        ++t.positive;
        if (kDense) {
          const double key = keys.key(i, wi);
          if (normal_key(key)) {
            bits = key_bits(key);
            ++t.kept;
          } else if (key != -kInf) {
            ++t.tiny;
          }
        } else if (ares_excess(keys.top(static_cast<std::uint64_t>(i))) > tf * wi) {
          const double key = keys.key(i, wi);  // the bound let it through; the key decides
          if (key >= floor && normal_key(key)) {
            const unsigned slot = atomicAdd(&s_count, 1u);
            if (slot < kStage) {
              s_key[slot] = key_bits(key);
              s_id[slot] = i;
            } else {  // a crowded tile (a floor far too low): straight to the buffer
              const u64 pos = atomicAdd(&c->kept, 1ull);
              if (pos < static_cast<u64>(capacity)) {
                cand_key[pos] = key_bits(key);
                cand_id[pos] = i;
              }
            }
          } else if (key >= floor && key != -kInf) {
            ++t.tiny;
          }
        }
      }
      if (kDense) {
        cand_key[i] = bits;
        cand_id[i] = i;
      }
    }
    if (!kDense) {
      __syncthreads();
      if (tid == 0) {
        s_staged = s_count < kStage ? s_count : kStage;
        s_base = s_staged ? atomicAdd(&c->kept, static_cast<u64>(s_staged)) : 0;
        s_count = 0;
      }
      __syncthreads();
      for (unsigned j = tid; j < s_staged; j += kThreads) {
        const u64 pos = s_base + j;
        if (pos < static_cast<u64>(capacity)) {
          cand_key[pos] = s_key[j];
          cand_id[pos] = s_id[j];
        }
      }
    }
  }
  add_tally(t, c, kDense);
}

// The floor's sample: the keys of runs of kRun items, one run every `stride` items, as the top
// 32 bits of their patterns (all that the floor needs), 0xFFFFFFFF for items without a
// normal key.
template <class W>
__global__ void __launch_bounds__(kThreads)
    sample_kernel(const W* __restrict__ w, i64 runs, i64 stride, AresKeys keys, u32* __restrict__ out) {
  const i64 total = runs * kRun;
  const i64 step = static_cast<i64>(gridDim.x) * kThreads;
  for (i64 j = static_cast<i64>(blockIdx.x) * kThreads + threadIdx.x; j < total; j += step) {
    const i64 i = (j / kRun) * stride + j % kRun;
    const double wi = static_cast<double>(w[i]);
    u32 hi = 0xFFFFFFFFu;
    if (ares_detail::valid_weight(wi) && wi > 0.0) {
      const double key = keys.key(i, wi);
      if (normal_key(key)) hi = static_cast<u32>(key_bits(key) >> 32);
    }
    out[j] = hi;
  }
}

__global__ void init_kernel(Counters* c, double floor, bool set_floor) {
  c->bad = kNoBad;
  c->positive = 0;
  c->tiny = 0;
  c->kept = 0;
  if (set_floor) c->floor = floor;
}

// The q-th best sampled key, rounded down (the low 32 bits of the pattern all ones), or -inf
// when fewer than q sampled items have a normal key.
__global__ void floor_kernel(const u32* sorted, i64 q, Counters* c) {
  const u32 hi = sorted[q - 1];
  c->floor = hi == 0xFFFFFFFFu ? -kInf : key_of((static_cast<u64>(hi) << 32) | 0xFFFFFFFFull);
}

__global__ void __launch_bounds__(kThreads)
    output_kernel(const u64* bits, const i64* ids, i64 k, i64* ids_out, double* keys_out) {
  const i64 step = static_cast<i64>(gridDim.x) * kThreads;
  for (i64 j = static_cast<i64>(blockIdx.x) * kThreads + threadIdx.x; j < k; j += step) {
    ids_out[j] = ids[j];
    if (keys_out != nullptr) keys_out[j] = key_of(bits[j]);
  }
}

// Grid sizes: enough blocks to fill an H100 several times over; each loops over its share.
// The host emulation caps them at 3, so that its small inputs still give blocks several
// tiles and grid-stride rounds.
#ifdef MIXSIEVE_CUDA_EMULATION
constexpr i64 kMaxBlocks = 3;
#else
constexpr i64 kMaxBlocks = 4096;
#endif

unsigned blocks_for(i64 items, i64 per_block, i64 cap = kMaxBlocks) {
  const i64 b = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 1 ? 1 : (b < cap ? b : cap));
}

// Slices of the caller's workspace, in order, each rounded up to 256 bytes; when the
// workspace runs out (a retry, or a size the estimate did not foresee), buffers from
// cudaMallocAsync on the stream, returned to it when the call ends.
constexpr std::size_t slot(std::size_t bytes) { return (bytes + 16 + 255) / 256 * 256; }

class Scratch {
 public:
  Scratch(cudaStream_t s, void* workspace, std::size_t bytes)
      : s_(s), next_(static_cast<unsigned char*>(workspace)), left_(workspace ? bytes : 0) {}
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    for (void* p : owned_) cudaFreeAsync(p, s_);
  }
  template <class T>
  cudaError_t get(T** p, std::size_t count) {
    const std::size_t bytes = slot(count * sizeof(T));
    if (bytes <= left_) {
      *p = reinterpret_cast<T*>(next_);
      next_ += bytes;
      left_ -= bytes;
      return cudaSuccess;
    }
    void* q = nullptr;
    const cudaError_t err = cudaMallocAsync(&q, bytes, s_);
    if (err != cudaSuccess) return err;
    owned_.push_back(q);
    allocated_ += bytes;
    *p = static_cast<T*>(q);
    return cudaSuccess;
  }
  std::size_t allocated() const { return allocated_; }

 private:
  cudaStream_t s_;
  unsigned char* next_;
  std::size_t left_;
  std::size_t allocated_ = 0;
  std::vector<void*> owned_;
};

// How to find the floor: the sample (runs of kRun items, `stride` items apart) and the rank
// q of the floor's key in it. dense: no floor.
struct Plan {
  bool dense = true;
  i64 runs = 0, stride = 0, q = 0, capacity = 0;
};

Plan plan_for(i64 n, i64 k, const AresTuning& tune) {
  Plan p;
  if (tune.mode == 1) return p;
  const bool forced = tune.mode == 2;
  // Expected candidates: a margin over k that the sample's error (relative 1/sqrt(q)) cannot
  // eat: q is chosen so that the floor lands 7 standard deviations inside it.
  const double floor_min = tune.min_candidates > 0 ? static_cast<double>(tune.min_candidates) : 16384.0;
  const double target = std::max(1.25 * static_cast<double>(k), floor_min);
  const double nd = static_cast<double>(n);
  if (!forced && (n < (i64(1) << 16) || target >= nd / 4)) return p;
  const double spare = 1.0 - static_cast<double>(k) / target;
  const double q_want = std::min(2048.0, std::max(64.0, std::ceil(49.0 / (spare * spare))));
  const double sampled_want = q_want * nd / target;
  if (!forced && sampled_want > nd / 8) return p;
  // one run every `stride` items: runs r * stride + [0, kRun) all lie below n
  const i64 stride = std::max<i64>(2, static_cast<i64>(nd / sampled_want)) * kRun;
  p.runs = n / stride;
  // the sample's sort counts in int (cub): beyond that many sampled keys, no floor
  if (p.runs > std::numeric_limits<int>::max() / kRun) return p;
  if (p.runs == 0 && forced && n >= kRun) p.runs = 1;
  if (p.runs == 0 && !forced) return p;
  p.dense = false;
  p.stride = stride;
  const double sampled = static_cast<double>(p.runs * kRun);
  p.q = p.runs > 0 ? std::max<i64>(1, static_cast<i64>(std::ceil(target * sampled / nd))) : 0;
  if (p.q > p.runs * kRun) p.runs = p.q = 0;  // (forced, tiny n) the floor would be -inf anyway
  p.capacity = std::min<i64>(n, static_cast<i64>(2.0 * target) + 65536);
  if (tune.capacity > 0) p.capacity = tune.capacity;
  return p;
}

int id_bits_for(i64 n) {
  int bits = 1;
  while (bits < 63 && (i64(1) << bits) < n) ++bits;
  return bits;
}

// cub's scratch bytes for a sort of m pairs (nothing is sorted: a null workspace only asks).
template <class K, class V>
cudaError_t sort_bytes(i64 m, int end_bit, std::size_t* bytes) {
  *bytes = 0;
  return cub::DeviceRadixSort::SortPairs(nullptr, *bytes, static_cast<const K*>(nullptr), static_cast<K*>(nullptr),
                                         static_cast<const V*>(nullptr), static_cast<V*>(nullptr),
                                         static_cast<int>(m), 0, end_bit, cudaStream_t{});
}

// What run() takes from the workspace when its first scan suffices: the slots in its order.
cudaError_t usual_bytes(i64 n, i64 k, const AresTuning& tune, std::size_t* total) {
  *total = slot(sizeof(Counters));
  if (n == 0 || k == 0) return cudaSuccess;
  const Plan plan = plan_for(n, k, tune);
  std::size_t t = 0;
  if (plan.dense) {
    if (n > std::numeric_limits<int>::max()) return cudaSuccess;
    cudaError_t err = sort_bytes<u64, i64>(n, 64, &t);
    *total += 4 * slot(static_cast<std::size_t>(n) * 8) + slot(t);
    return err;
  }
  if (plan.runs > 0 && !tune.use_floor) {
    const i64 m = plan.runs * kRun;
    cudaError_t err = sort_bytes<u32, u32>(m, 32, &t);
    if (err != cudaSuccess) return err;
    *total += 3 * slot(static_cast<std::size_t>(m) * 4) + slot(t);
  }
  const auto cap = static_cast<std::size_t>(plan.capacity);
  std::size_t t1 = 0, t2 = 0;
  cudaError_t err = sort_bytes<u64, u64>(plan.capacity, id_bits_for(n), &t1);
  if (err == cudaSuccess) err = sort_bytes<u64, i64>(plan.capacity, 64, &t2);
  *total += 4 * slot(cap * 8) + slot(std::max(t1, t2));
  return err;
}

cudaError_t read_counters(Counters* c, Counters* host, cudaStream_t s) {
  cudaError_t err = cudaMemcpyAsync(host, c, sizeof(Counters), cudaMemcpyDeviceToHost, s);
  if (err == cudaSuccess) err = cudaStreamSynchronize(s);
  return err;
}

#define MIXSIEVE_TRY(expr)                                  \
  do {                                                      \
    const cudaError_t err_ = (expr);                        \
    if (err_ != cudaSuccess) return cudaGetErrorString(err_); \
  } while (0)

template <class W>
const char* run(const W* w, i64 n, i64 k, std::uint64_t seed, i64* ids_out, double* keys_out, cudaStream_t s,
                void* workspace, std::size_t workspace_bytes, AresResult* r, const AresTuning& tune) {
  const AresKeys keys(seed);
  Scratch scratch(s, workspace, workspace_bytes);
  struct Report {  // what came from cudaMallocAsync, whichever way run() returns
    const Scratch& from;
    AresResult* to;
    ~Report() { to->allocated = from.allocated(); }
  } report{scratch, r};
  Counters* c = nullptr;
  MIXSIEVE_TRY(scratch.get(&c, 1));
  Plan plan = plan_for(n, k, tune);
  if (k == 0) {  // validation only: a floor above every key keeps nothing
    plan = Plan{};
    plan.dense = false;
  }
  const unsigned scan_blocks = blocks_for(n, static_cast<i64>(kThreads) * (32 / static_cast<i64>(sizeof(W))));
  u64* cand_key = nullptr;
  i64* cand_id = nullptr;
  i64 capacity = 0;
  Counters h{};
  constexpr i64 kSortable = std::numeric_limits<int>::max();  // cub's item count here is an int

  auto dense_scan = [&]() -> const char* {
    r->dense = true;
    ++r->scans;
    capacity = n;
    MIXSIEVE_TRY(scratch.get(&cand_key, static_cast<std::size_t>(n)));
    MIXSIEVE_TRY(scratch.get(&cand_id, static_cast<std::size_t>(n)));
    init_kernel<<<1, 1, 0, s>>>(c, -kInf, true);
    scan_kernel<W, true><<<scan_blocks, kThreads, 0, s>>>(w, n, keys, c, cand_key, cand_id, n);
    MIXSIEVE_TRY(cudaGetLastError());
    MIXSIEVE_TRY(read_counters(c, &h, s));
    return nullptr;
  };
  // keep_floor: the floor of the last scan stays (a retry with a larger buffer)
  auto sparse_scan = [&](i64 cap, bool keep_floor) -> const char* {
    r->dense = false;
    ++r->scans;
    capacity = cap;
    if (cap > 0) {
      MIXSIEVE_TRY(scratch.get(&cand_key, static_cast<std::size_t>(cap)));
      MIXSIEVE_TRY(scratch.get(&cand_id, static_cast<std::size_t>(cap)));
    }
    if (keep_floor) {
      init_kernel<<<1, 1, 0, s>>>(c, 0.0, false);
    } else if (k == 0) {
      init_kernel<<<1, 1, 0, s>>>(c, kInf, true);
    } else if (tune.use_floor || plan.runs == 0) {
      init_kernel<<<1, 1, 0, s>>>(c, tune.use_floor ? tune.floor : -kInf, true);
    } else {
      init_kernel<<<1, 1, 0, s>>>(c, 0.0, false);
      const i64 m = plan.runs * kRun;
      u32 *sample = nullptr, *sorted = nullptr, *unused = nullptr;
      MIXSIEVE_TRY(scratch.get(&sample, static_cast<std::size_t>(m)));
      MIXSIEVE_TRY(scratch.get(&sorted, static_cast<std::size_t>(m)));
      MIXSIEVE_TRY(scratch.get(&unused, static_cast<std::size_t>(m)));
      sample_kernel<W><<<blocks_for(m, kThreads), kThreads, 0, s>>>(w, plan.runs, plan.stride, keys, sample);
      std::size_t bytes = 0;
      MIXSIEVE_TRY(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const u32*>(sample), sorted,
                                                   static_cast<const u32*>(sample), unused, static_cast<int>(m), 0,
                                                   32, s));
      unsigned char* temp = nullptr;
      MIXSIEVE_TRY(scratch.get(&temp, bytes));
      // only the keys matter (the emulation's cub has no SortKeys): the values are a copy
      MIXSIEVE_TRY(cub::DeviceRadixSort::SortPairs(temp, bytes, static_cast<const u32*>(sample), sorted,
                                                   static_cast<const u32*>(sample), unused, static_cast<int>(m), 0,
                                                   32, s));
      floor_kernel<<<1, 1, 0, s>>>(sorted, plan.q, c);
    }
    scan_kernel<W, false><<<scan_blocks, kThreads, 0, s>>>(w, n, keys, c, cand_key, cand_id, cap);
    MIXSIEVE_TRY(cudaGetLastError());
    MIXSIEVE_TRY(read_counters(c, &h, s));
    return nullptr;
  };

  if (plan.dense && n > kSortable) {  // too many items for one sort: the CPU validates and samples
    r->status = AresStatus::NeedsHost;
    return nullptr;
  }
  const char* err = plan.dense ? dense_scan() : sparse_scan(plan.capacity, false);
  if (err) return err;
  r->positive = static_cast<i64>(h.positive);
  if (h.bad != kNoBad) {
    r->status = AresStatus::BadWeight;
    r->bad_index = static_cast<i64>(h.bad);
    W v{};
    MIXSIEVE_TRY(cudaMemcpyAsync(&v, w + h.bad, sizeof(W), cudaMemcpyDeviceToHost, s));
    MIXSIEVE_TRY(cudaStreamSynchronize(s));
    r->bad_value = static_cast<double>(v);
    return nullptr;
  }
  if (r->positive < k) {
    r->status = AresStatus::TooFewPositive;
    return nullptr;
  }
  if (k == 0) return nullptr;
  if (h.tiny == 0 && !r->dense) {
    const auto found = static_cast<i64>(h.kept);
    if (found >= k && found > capacity && found <= kSortable && found <= n / 2) {
      err = sparse_scan(found, true);  // the same floor, a buffer that holds every candidate
    } else if (found > capacity || found < k) {
      // A floor too low to be worth a buffer, or too high (fewer than k candidates): none.
      if (n > kSortable) {
        r->status = AresStatus::NeedsHost;
        return nullptr;
      }
      err = dense_scan();
    }
    if (err) return err;
  }
  r->candidates = static_cast<i64>(h.kept);
  if (h.tiny > 0 || (r->dense && r->candidates < k) || r->candidates > kSortable) {
    // Keys that underflowed, or fewer than k normal keys among k positive weights (the others
    // overflowed to -inf): only the CPU's wide keys order them.
    r->status = AresStatus::NeedsHost;
    return nullptr;
  }
  const i64 m = r->dense ? n : r->candidates;
  u64 *a = nullptr, *b = nullptr;
  MIXSIEVE_TRY(scratch.get(&a, static_cast<std::size_t>(m)));
  MIXSIEVE_TRY(scratch.get(&b, static_cast<std::size_t>(m)));
  const int mi = static_cast<int>(m);
  const int id_bits = id_bits_for(n);
  std::size_t bytes = 0, more = 0;
  // Sparse: by id (candidates arrived in any order), then stably by key. Dense: by key only
  // (already in id order). Ids are >= 0, so as unsigned keys they keep their order.
  u64* ids_u = reinterpret_cast<u64*>(cand_id);
  if (!r->dense) {
    MIXSIEVE_TRY(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const u64*>(ids_u), a,
                                                 static_cast<const u64*>(cand_key), b, mi, 0, id_bits, s));
  }
  MIXSIEVE_TRY(cub::DeviceRadixSort::SortPairs(nullptr, more, static_cast<const u64*>(b), cand_key,
                                               static_cast<const i64*>(reinterpret_cast<i64*>(a)), cand_id, mi, 0,
                                               64, s));
  bytes = std::max(bytes, more);
  unsigned char* temp = nullptr;
  MIXSIEVE_TRY(scratch.get(&temp, bytes));
  const u64* out_bits = nullptr;
  const i64* out_ids = nullptr;
  if (!r->dense) {
    std::size_t b1 = bytes;
    MIXSIEVE_TRY(cub::DeviceRadixSort::SortPairs(temp, b1, static_cast<const u64*>(ids_u), a,
                                                 static_cast<const u64*>(cand_key), b, mi, 0, id_bits, s));
    std::size_t b2 = bytes;
    MIXSIEVE_TRY(cub::DeviceRadixSort::SortPairs(temp, b2, static_cast<const u64*>(b), cand_key,
                                                 static_cast<const i64*>(reinterpret_cast<i64*>(a)), cand_id, mi, 0,
                                                 64, s));
    out_bits = cand_key;
    out_ids = cand_id;
  } else {
    std::size_t b2 = bytes;
    MIXSIEVE_TRY(cub::DeviceRadixSort::SortPairs(temp, b2, static_cast<const u64*>(cand_key), a,
                                                 static_cast<const i64*>(cand_id), reinterpret_cast<i64*>(b), mi, 0,
                                                 64, s));
    out_bits = a;
    out_ids = reinterpret_cast<const i64*>(b);
  }
  output_kernel<<<blocks_for(k, kThreads), kThreads, 0, s>>>(out_bits, out_ids, k, ids_out, keys_out);
  MIXSIEVE_TRY(cudaGetLastError());
  return nullptr;
}

#undef MIXSIEVE_TRY

}  // namespace

const char* ares_workspace_bytes(std::int64_t n, std::int64_t k, std::size_t* bytes, const AresTuning* tuning) {
  *bytes = 0;
  if (n < 0 || k < 0) return "n and k must be >= 0";
  const cudaError_t err = usual_bytes(n, k, tuning ? *tuning : AresTuning{}, bytes);
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

const char* ares_sample(const void* w, bool f32, std::int64_t n, std::int64_t k, std::uint64_t seed,
                        std::int64_t* ids_out, double* keys_out, void* workspace, std::size_t workspace_bytes,
                        void* stream, AresResult* result, const AresTuning* tuning) {
  *result = AresResult{};
  if (n < 0 || k < 0) return "n and k must be >= 0";
  if (n == 0) {
    result->status = k > 0 ? AresStatus::TooFewPositive : AresStatus::Done;
    return nullptr;
  }
  const AresTuning tune = tuning ? *tuning : AresTuning{};
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (f32) {
    return run(static_cast<const float*>(w), n, k, seed, ids_out, keys_out, s, workspace, workspace_bytes, result,
               tune);
  }
  return run(static_cast<const double*>(w), n, k, seed, ids_out, keys_out, s, workspace, workspace_bytes, result,
             tune);
}

}  // namespace sampling_cuda
}  // namespace mixsieve
