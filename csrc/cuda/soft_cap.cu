// soft_cap_sample on CUDA: soft_cap_drive (mixsieve/soft_cap.hpp), the CPU's batch loop, over
// a device backend. Every step that decides a bit of the output follows the CPU backend
// (CpuSoftCap) operation for operation, through the same MIXSIEVE_HD functions:
//   weights       one thread per block of 16 items: the prefix sums in item order;
//   sums          one warp per segment: its block sums in block order (the segment's
//                 running sums `cum`, which the CPU's walk recomputes as `acc`), then one
//                 warp: the segment sums in segment order (32 values loaded at a time, every
//                 lane adding them in order: ordered_sum);
//   race points   one warp per segment: the lanes draw 32 spacings at once (a logarithm each),
//                 every lane adds them to the running position in the same order, so each
//                 lane holds exactly the CPU's `next`; a point's block is the first whose
//                 running sum exceeds it (the block the CPU's walk is at), its offset
//                 next - (the block's start);
//   items, runs   one thread per point: the item in the block; the first point of each item
//                 keeps the earliest time of the item's points, unless the item was found in
//                 an earlier band (a flag per item, cleared after the batch);
//   direct keys   one thread per item not flagged (weight > 0): lo + E_i / w_i, appended
//                 to the bands' candidates in item order (a prefix sum gives the slots);
//   selection     stable radix sorts: the candidates by id (only when several bands, or bands
//                 and the direct keys, added some), then by key: the order of race_before, so
//                 the first b are the CPU's picks in the CPU's pick order;
//   picks         one thread per block with picks, in item order: the CPU's subtractions;
//                 the weight removed per block, then per segment in block order, then in
//                 segment order.
// Integer results (counts, positions, minima and maxima) do not depend on order; only double
// sums do, and those above are all sequential.
//
// The host waits for the stream (one small copy of `Scalars` and cudaStreamSynchronize):
// once after the score scan (and once more to read the first non-finite score); after each
// (re)weighing (the positive count and total weight: is there a batch to draw, the first band);
// twice per round (the number of race points, to size the buffers; then the distinct items
// found, to stop or widen the band); once on the direct path (the count, to size the
// buffers); once per batch after the picks (the cut for the next band, the weight removed and
// the noise bound for the reweighing test, the total weight). Some 3-5 waits a batch: the GPU
// pays off from some 10^5 items a batch.
#include <cub/device/device_radix_sort.cuh>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef MIXSIEVE_CUDA_EMULATION
#include "emu_soft_cap.h"
#else
#include <cub/device/device_scan.cuh>
#endif

#include "mixsieve/soft_cap.hpp"
#include "soft_cap_cuda.hpp"

namespace mixsieve {
namespace soft_cap_cuda {
namespace {

using namespace soft_cap_detail;
using u64 = std::uint64_t;
using i64 = std::int64_t;

#ifdef MIXSIEVE_CUDA_EMULATION
constexpr unsigned kThreads = 32;  // host threads per emulated block: few, they are real threads
constexpr u64 kMaxGrid = 4;
#else
constexpr unsigned kThreads = 256;
constexpr u64 kMaxGrid = 4096;
#endif
constexpr unsigned kLanes = 32;  // a segment's race points: one warp

unsigned grid_for(u64 items) {
  const u64 g = (items + kThreads - 1) / kThreads;
  return static_cast<unsigned>(g < 1 ? 1 : (g > kMaxGrid ? kMaxGrid : g));
}

// What the host reads back at its waits.
struct Scalars {
  u64 bad;        // the first non-finite score (n when none)
  double top;     // the largest score
  i64 least;      // the smallest count
  double offset;  // the largest adjusted score
  u64 positive;   // weights > 0
  double total;   // the total weight
  u64 points;     // race points of the round
  u64 overflow;   // a segment has more than max_race_points
  u64 found;      // candidates of the batch
  double cut, removed, noise;
};

// ---- small device helpers ----

__device__ __forceinline__ u64 thread_index() { return static_cast<u64>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ u64 thread_stride() { return static_cast<u64>(gridDim.x) * blockDim.x; }
__device__ __forceinline__ bool is_finite(double v) { return v - v == 0.0; }  // false for inf and NaN
__device__ __forceinline__ double bits_to_double(u64 b) {
  double d;
  std::memcpy(&d, &b, sizeof d);
  return d;
}
__device__ __forceinline__ u64 double_to_bits(double d) {  // order-preserving for d >= +0
  u64 b;
  std::memcpy(&b, &d, sizeof b);
  return b;
}

struct MinU64 {
  __device__ u64 operator()(u64 a, u64 b) const { return b < a ? b : a; }
};
struct MinI64 {
  __device__ i64 operator()(i64 a, i64 b) const { return b < a ? b : a; }
};
struct MaxF64 {  // std::max's order: a NaN second argument is ignored
  __device__ double operator()(double a, double b) const { return a < b ? b : a; }
};
struct SumU64 {
  __device__ u64 operator()(u64 a, u64 b) const { return a + b; }
};

// The reduction of one value per thread over a block (kThreads, a power of two); exact for
// the operations above, whatever the order.
template <class T, class Op>
__device__ T block_reduce(T v, Op op) {
  __shared__ T buf[kThreads];
  buf[threadIdx.x] = v;
  __syncthreads();
  for (unsigned s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) buf[threadIdx.x] = op(buf[threadIdx.x], buf[threadIdx.x + s]);
    __syncthreads();
  }
  const T r = buf[0];
  __syncthreads();
  return r;
}

// The partials of a grid-wide reduction (one per block) reduced by one block into *out.
template <class T, class Op>
__global__ void finish_reduce(const T* part, unsigned count, T init, T* out, Op op) {
  T v = init;
  for (unsigned k = threadIdx.x; k < count; k += blockDim.x) v = op(v, part[k]);
  v = block_reduce(v, op);
  if (threadIdx.x == 0) *out = v;
}

// ---- scores and weights ----

template <class S>
__global__ void scan_scores(const S* scores, u64 n, u64* part_bad, double* part_top) {
  u64 bad = n;
  double top = -pm_inf();
  for (u64 i = thread_index(); i < n; i += thread_stride()) {
    const double v = static_cast<double>(scores[i]);
    if (!is_finite(v) && i < bad) bad = i;
    top = MaxF64()(top, v);
  }
  bad = block_reduce(bad, MinU64());
  top = block_reduce(top, MaxF64());
  if (threadIdx.x == 0) part_bad[blockIdx.x] = bad, part_top[blockIdx.x] = top;
}

__global__ void min_count(const i64* counts, u64 n, i64* part) {
  i64 least = INT64_MAX;
  for (u64 i = thread_index(); i < n; i += thread_stride()) least = MinI64()(least, counts[i]);
  least = block_reduce(least, MinI64());
  if (threadIdx.x == 0) part[blockIdx.x] = least;
}

template <class S>
__global__ void max_adjusted(const S* scores, const i64* counts, u64 n, const Scalars* sc, double penalty,
                             double* part) {
  const double top = sc->top;
  const i64 least = sc->least;
  double m = -pm_inf();
  for (u64 i = thread_index(); i < n; i += thread_stride()) {
    m = MaxF64()(m, adjusted_score(static_cast<double>(scores[i]), top, counts[i], least, penalty));
  }
  m = block_reduce(m, MaxF64());
  if (threadIdx.x == 0) part[blockIdx.x] = m;
}

// One thread per block of 16 items: weights straight into the prefix sums, as CpuSoftCap::weigh.
template <class S>
__global__ void weigh_blocks(const S* scores, const i64* counts, u64 n, const Scalars* sc, double penalty,
                             double* pref, double* bsum, double* bref, u64* part_positive) {
  const double top = sc->top, offset = sc->offset;
  const i64 least = sc->least;
  const u64 blocks = (n + kBlock - 1) / kBlock;
  u64 positive = 0;
  for (u64 blk = thread_index(); blk < blocks; blk += thread_stride()) {
    const u64 e = n < (blk + 1) * kBlock ? n : (blk + 1) * kBlock;
    double acc = 0.0;
    for (u64 i = blk * kBlock; i < e; ++i) {
      const double w = item_weight(adjusted_score(static_cast<double>(scores[i]), top, counts[i], least, penalty), offset);
      positive += w > 0.0;
      pref[i] = acc += w;
    }
    bsum[blk] = acc;
    bref[blk] = acc;
  }
  positive = block_reduce(positive, SumU64());
  if (threadIdx.x == 0) part_positive[blockIdx.x] = positive;
}

// A block of kLanes threads adds v[0, count) in order, (((0 + v[0]) + v[1]) + ...): 32 values
// are loaded at a time and every lane adds all of them, so that every lane holds the
// sequential sums (the CPU's). `cum`, when given, receives each running sum; `clear`, when
// given (v itself), zeroes what was read. Returns the sum (in every lane).
__device__ double ordered_sum(const double* v, u64 count, double* cum, double* clear) {
  __shared__ double chunk[kLanes];
  const unsigned lane = threadIdx.x;
  double acc = 0.0;
  for (u64 k0 = 0; k0 < count; k0 += kLanes) {
    const u64 m = count - k0 < kLanes ? count - k0 : kLanes;
    if (lane < m) {
      chunk[lane] = v[k0 + lane];
      if (clear) clear[k0 + lane] = 0.0;
    }
    __syncthreads();
    double mine = 0.0;
    for (unsigned k = 0; k < m; ++k) {
      acc = acc + chunk[k];
      if (k == lane) mine = acc;
    }
    if (cum && lane < m) cum[k0 + lane] = mine;
    __syncthreads();
  }
  return acc;
}

// A block per segment: the running sums of its block sums (the CPU walk's `acc` after each
// block) and the segment's weight.
__global__ void segment_sums(const double* bsum, u64 blocks, double* cum, double* segw) {
  const u64 first = static_cast<u64>(blockIdx.x) * kSegmentBlocks;
  const u64 nb = blocks - first < kSegmentBlocks ? blocks - first : kSegmentBlocks;
  const double w = ordered_sum(bsum + first, nb, cum + first, nullptr);
  if (threadIdx.x == 0) segw[blockIdx.x] = w;
}

// One block: values in order (the segment weights into the total weight, ...).
__global__ void sum_in_order(const double* v, u64 count, double* out) {
  const double s = ordered_sum(v, count, nullptr, nullptr);
  if (threadIdx.x == 0) *out = s;
}

// ---- race points ----

// One warp (block of kLanes threads) per segment. kWrite = false counts the points of each
// segment (stopping past max_points, and flagging it); kWrite = true writes them from
// seg_offset[sg] on.
template <bool kWrite>
__global__ void race_points(const double* cum, u64 blocks, u64 key, double lo, double rate, u64 max_points,
                            u64* seg_count, u64* overflow, const u64* seg_offset, u64* pt_blk, double* pt_x,
                            double* pt_tau) {
  __shared__ double spacing[kLanes];
  const u64 sg = blockIdx.x;
  const unsigned lane = threadIdx.x;
  const u64 first = sg * kSegmentBlocks;
  const u64 nb = blocks - first < kSegmentBlocks ? blocks - first : kSegmentBlocks;
  const double* c = cum + first;
  const double weight = c[nb - 1];
  double next = 0.0;  // the position of the last point of the previous 32
  u64 count = 0;
  for (u64 j0 = 0;; j0 += kLanes) {
    spacing[lane] = race_spacing(key, sg, j0 + lane, rate);
    __syncthreads();
    // Every lane adds the 32 spacings in order (0.0 + first spacing is the first spacing, as
    // the CPU starts): the same running positions in all lanes; lane k keeps the k-th.
    double run = next, mine = 0.0;
    unsigned inside = 0;  // positions below the segment's weight: a prefix, since they grow
    for (unsigned k = 0; k < kLanes; ++k) {
      run = run + spacing[k];
      if (k == lane) mine = run;
      inside += run < weight;
    }
    __syncthreads();
    if (kWrite && mine < weight) {
      // the block the walk is at: the first whose running sum exceeds the position
      u64 a = 0, b = nb - 1;  // c[nb - 1] = weight > mine
      while (a < b) {
        const u64 mid = (a + b) / 2;
        if (c[mid] > mine) {
          b = mid;
        } else {
          a = mid + 1;
        }
      }
      const u64 j = j0 + lane;
      const u64 at = seg_offset[sg] + j;
      pt_blk[at] = first + a;
      pt_x[at] = mine - (a ? c[a - 1] : 0.0);
      pt_tau[at] = race_time(key, sg, j, lo, rate);
    }
    count = j0 + inside;
    next = run;
    if (inside < kLanes || count > max_points) break;  // the same decision in every lane
  }
  if (!kWrite && lane == 0) {
    seg_count[sg] = count;
    if (count > max_points) *overflow = 1;  // the host refuses the round
  }
}

// One thread: the number of points of the round.
__global__ void point_total(const u64* seg_count, const u64* seg_offset, u64 segments, Scalars* sc) {
  sc->points = seg_offset[segments - 1] + seg_count[segments - 1];
}

// The item of each point (-1: none), as CpuSoftCap::race_points' phase 2.
__global__ void point_items(const double* pref, u64 n, const u64* pt_blk, const double* pt_x, u64 points,
                            i64* pt_id) {
  for (u64 p = thread_index(); p < points; p += thread_stride()) {
    const u64 first = pt_blk[p] * kBlock;
    const int q = item_in_block(pref + first, n - first < kBlock ? n - first : kBlock, pt_x[p]);
    pt_id[p] = q < 0 ? -1 : static_cast<i64>(first + static_cast<u64>(q));
  }
}

// The points of an item are consecutive (positions grow, and so do the items they fall on).
// The first point of each item takes the earliest time among them; it is new unless the
// item was found by an earlier band of the batch (which then keeps its earlier time).
__global__ void point_runs(const i64* pt_id, const double* pt_tau, u64 points, const unsigned char* found_flag,
                           double* run_tau, u64* is_new) {
  for (u64 p = thread_index(); p < points; p += thread_stride()) {
    const i64 id = pt_id[p];
    u64 fresh = 0;
    if (id >= 0 && (p == 0 || pt_id[p - 1] != id)) {
      double t = pt_tau[p];
      for (u64 q = p + 1; q < points && pt_id[q] == id; ++q) t = pt_tau[q] < t ? pt_tau[q] : t;
      run_tau[p] = t;
      fresh = found_flag[id] == 0;
    }
    is_new[p] = fresh;
  }
}

// The new items appended to the candidates after the first `have`, in item order.
__global__ void append_new(const i64* pt_id, const double* run_tau, const u64* is_new, const u64* slot, u64 points,
                           u64 have, u64* cand_key, u64* cand_id, unsigned char* found_flag, Scalars* sc) {
  for (u64 p = thread_index(); p < points; p += thread_stride()) {
    if (is_new[p]) {
      const i64 id = pt_id[p];
      cand_key[have + slot[p]] = double_to_bits(run_tau[p]);
      cand_id[have + slot[p]] = static_cast<u64>(id);
      found_flag[id] = 1;
    }
    if (p == points - 1) sc->found = have + slot[p] + is_new[p];
  }
}

__global__ void clear_flags(const u64* cand_id, u64 count, unsigned char* found_flag) {
  for (u64 k = thread_index(); k < count; k += thread_stride()) found_flag[cand_id[k]] = 0;
}

// ---- direct keys ----

// The items that get a direct key: weight > 0, not found by the bands (their flag is set).
__global__ void direct_mark(const double* pref, u64 n, const unsigned char* found_flag, u64* fresh) {
  for (u64 i = thread_index(); i < n; i += thread_stride()) {
    fresh[i] = found_flag[i] == 0 && item_weight_in_block(pref + i / kBlock * kBlock, i % kBlock) > 0.0;
  }
}

__global__ void direct_count(const u64* fresh, const u64* slot, u64 n, u64 have, Scalars* sc) {
  sc->found = have + slot[n - 1] + fresh[n - 1];
}

// Appended after the `have` candidates of the bands, in item order.
__global__ void direct_keys(const double* pref, u64 n, u64 key, double lo, const u64* fresh, const u64* slot,
                            u64 have, u64* cand_key, u64* cand_id) {
  for (u64 i = thread_index(); i < n; i += thread_stride()) {
    if (!fresh[i]) continue;
    const double w = item_weight_in_block(pref + i / kBlock * kBlock, i % kBlock);
    cand_key[have + slot[i]] = double_to_bits(direct_race_key(key, i, w, lo));
    cand_id[have + slot[i]] = i;
  }
}

// ---- picks ----

__global__ void count_picks(const u64* sorted_id, const u64* sorted_key, u64 b, i64* counts, i64* picks,
                            Scalars* sc) {
  for (u64 j = thread_index(); j < b; j += thread_stride()) {
    const u64 id = sorted_id[j];
    counts[id] += 1;  // b distinct items
    if (picks) picks[j] = static_cast<i64>(id);
    if (j == b - 1) sc->cut = bits_to_double(sorted_key[j]);
  }
}

// One thread per block with picks (picks sorted by item): CpuSoftCap::pick's subtractions in
// item order, and the block's removed weight and noise bound.
__global__ void scale_blocks(const u64* pick_id, u64 b, double* pref, u64 n, double* bsum, const double* bref,
                             double decay, double* blk_removed, double* blk_noise) {
  for (u64 j = thread_index(); j < b; j += thread_stride()) {
    const u64 blk = pick_id[j] / kBlock;
    if (j > 0 && pick_id[j - 1] / kBlock == blk) continue;
    const u64 first = blk * kBlock;
    const u64 len = n - first < kBlock ? n - first : kBlock;
    double removed = 0.0, noise = 0.0;
    for (u64 k = j; k < b && pick_id[k] / kBlock == blk; ++k) {
      const double delta = scale_in_block(pref + first, len, pick_id[k] - first, decay);
      bsum[blk] -= delta;
      removed += delta;
      noise += bref[blk];
    }
    blk_removed[blk] = removed;
    blk_noise[blk] = noise;
  }
}

// A block per segment: its blocks' removed weight and noise in block order (blocks without
// picks hold 0, which adds nothing: the CPU adds only those with picks), zeroed for the next
// batch.
__global__ void segment_picks(double* blk_removed, double* blk_noise, u64 blocks, double* seg_removed,
                              double* seg_noise) {
  const u64 first = static_cast<u64>(blockIdx.x) * kSegmentBlocks;
  const u64 nb = blocks - first < kSegmentBlocks ? blocks - first : kSegmentBlocks;
  const double removed = ordered_sum(blk_removed + first, nb, nullptr, blk_removed + first);
  const double noise = ordered_sum(blk_noise + first, nb, nullptr, blk_noise + first);
  if (threadIdx.x == 0) seg_removed[blockIdx.x] = removed, seg_noise[blockIdx.x] = noise;
}

// ---- the backend ----

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("soft_cap_sample (CUDA): ") + what + ": " + cudaGetErrorString(err));
  }
}

// Device memory of one call (from `memory`, or the stream-ordered pool), given back when the
// call ends (also by an exception).
class Arena {
 public:
  Arena(cudaStream_t s, const DeviceMemory& memory) : s_(s), memory_(memory) {}
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena() {
    for (const Block& b : blocks_) give_back(b.p);
  }
  template <class T>
  T* get(u64 count) {
    const u64 bytes = (count ? count : 1) * sizeof(T);
    blocks_.reserve(blocks_.size() + 1);  // no allocation between taking the memory and recording it
    void* p = nullptr;
    if (memory_.get) {
      p = memory_.get(bytes);  // its own error (torch's OutOfMemoryError) when it cannot
      if (!p) throw std::runtime_error("soft_cap_sample (CUDA): the allocator returned no memory");
    } else {
      const cudaError_t err = cudaMallocAsync(&p, bytes, s_);
      if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();  // not sticky: clear it
        throw std::runtime_error(
            "soft_cap_sample (CUDA): out of device memory: " + std::to_string(bytes) + " bytes more were needed (" +
            std::to_string(held_) +
            " held by this call). This call allocates from the CUDA runtime's default pool, which memory "
            "another allocator keeps cached is not returned to: in a torch process, torch.cuda.empty_cache() "
            "gives torch's cache back first");
      }
      check(err, "cudaMallocAsync");
    }
    blocks_.push_back({p, bytes});
    held_ += bytes;
    return static_cast<T*>(p);
  }
  void release(void* p) {
    for (auto& b : blocks_) {
      if (b.p == p) {
        give_back(p);
        held_ -= b.bytes;
        b = blocks_.back();
        blocks_.pop_back();
        return;
      }
    }
  }

 private:
  struct Block {
    void* p;
    u64 bytes;
  };
  void give_back(void* p) noexcept {
    if (!memory_.put) {
      cudaFreeAsync(p, s_);
      return;
    }
    try {
      memory_.put(p);
    } catch (...) {  // nothing to do about it here: the memory stays with its owner
    }
  }

  cudaStream_t s_;
  const DeviceMemory& memory_;
  std::vector<Block> blocks_;
  u64 held_ = 0;
};

// A device array that grows (keeping its contents when asked).
template <class T>
struct Grown {
  T* p = nullptr;
  u64 cap = 0;
  void ensure(Arena& a, u64 count, cudaStream_t s, u64 keep = 0) {
    if (count <= cap) return;
    const u64 want = count + count / 4 + 1024;
    T* q = a.get<T>(want);
    if (keep) check(cudaMemcpyAsync(q, p, keep * sizeof(T), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
    if (p) a.release(p);
    p = q;
    cap = want;
  }
};

template <class S>
class CudaSoftCap {
 public:
  CudaSoftCap(const S* scores, u64 n, i64* counts, i64* picks, cudaStream_t s, const DeviceMemory& memory)
      : scores_(scores),
        n_(n),
        counts_(counts),
        picks_(picks),
        s_(s),
        arena_(s, memory),
        blocks_((n + kBlock - 1) / kBlock),
        segments_((blocks_ + kSegmentBlocks - 1) / kSegmentBlocks),
        max_points_(max_race_points(n)) {
    id_bits_ = 1;
    while (id_bits_ < 64 && ((n_ > 0 ? n_ - 1 : 0) >> id_bits_) != 0) ++id_bits_;
    sc_ = arena_.get<Scalars>(1);
    part_u64_ = arena_.get<u64>(kMaxGrid);
    part_f64_ = arena_.get<double>(kMaxGrid);
    pref_ = arena_.get<double>(n_);
    bsum_ = arena_.get<double>(blocks_);
    bref_ = arena_.get<double>(blocks_);
    cum_ = arena_.get<double>(blocks_);
    blk_removed_ = arena_.get<double>(blocks_);
    blk_noise_ = arena_.get<double>(blocks_);
    segw_ = arena_.get<double>(segments_);
    seg_removed_ = arena_.get<double>(segments_);
    seg_noise_ = arena_.get<double>(segments_);
    seg_count_ = arena_.get<u64>(segments_);
    seg_offset_ = arena_.get<u64>(segments_);
    flags_ = arena_.get<unsigned char>(n_);
    check(cudaMemsetAsync(blk_removed_, 0, blocks_ * sizeof(double), s_), "cudaMemsetAsync");
    check(cudaMemsetAsync(blk_noise_, 0, blocks_ * sizeof(double), s_), "cudaMemsetAsync");
    check(cudaMemsetAsync(flags_, 0, n_, s_), "cudaMemsetAsync");
    check(cudaMemsetAsync(counts_, 0, n_ * sizeof(i64), s_), "cudaMemsetAsync");
  }

  // Wait 1: the first non-finite score.
  std::size_t first_bad_score() {
    const unsigned g = grid_for(n_);
    scan_scores<S><<<g, kThreads, 0, s_>>>(scores_, n_, part_u64_, part_f64_);
    finish_reduce<u64, MinU64><<<1, kThreads, 0, s_>>>(part_u64_, g, n_, &sc_->bad, MinU64());
    finish_reduce<double, MaxF64><<<1, kThreads, 0, s_>>>(part_f64_, g, -pm_inf(), &sc_->top, MaxF64());
    fetch();
    return static_cast<std::size_t>(host_.bad);
  }
  // Only for the error message (one more wait).
  double score(std::size_t i) {
    S v;
    check(cudaMemcpyAsync(&v, scores_ + i, sizeof(S), cudaMemcpyDeviceToHost, s_), "cudaMemcpyAsync");
    check(cudaStreamSynchronize(s_), "cudaStreamSynchronize");
    return static_cast<double>(v);
  }

  // Wait 2: the positive count and total weight after (re)weighing.
  SoftCapWeighing weigh(double penalty) {
    const unsigned g = grid_for(n_);
    i64* part_i64 = reinterpret_cast<i64*>(part_u64_);
    min_count<<<g, kThreads, 0, s_>>>(counts_, n_, part_i64);
    finish_reduce<i64, MinI64><<<1, kThreads, 0, s_>>>(part_i64, g, static_cast<i64>(INT64_MAX), &sc_->least, MinI64());
    max_adjusted<S><<<g, kThreads, 0, s_>>>(scores_, counts_, n_, sc_, penalty, part_f64_);
    finish_reduce<double, MaxF64><<<1, kThreads, 0, s_>>>(part_f64_, g, -pm_inf(), &sc_->offset, MaxF64());
    const unsigned gb = grid_for(blocks_);
    weigh_blocks<S><<<gb, kThreads, 0, s_>>>(scores_, counts_, n_, sc_, penalty, pref_, bsum_, bref_, part_u64_);
    finish_reduce<u64, SumU64><<<1, kThreads, 0, s_>>>(part_u64_, gb, u64{0}, &sc_->positive, SumU64());
    refresh_sums();
    fetch();
    total_ = host_.total;
    return {static_cast<std::size_t>(host_.positive), total_};
  }

  double total_weight() const { return total_; }  // current: refreshed after every change

  void begin_batch(std::size_t) {
    have_ = 0;
    bands_ = 0;
  }

  // Waits 3 and 4: the number of points, then the items found.
  SoftCapRound race_round(u64 key, double lo, double hi) {
    const double rate = hi - lo;
    const unsigned segs = static_cast<unsigned>(segments_);
    check(cudaMemsetAsync(&sc_->overflow, 0, sizeof(u64), s_), "cudaMemsetAsync");
    race_points<false><<<segs, kLanes, 0, s_>>>(cum_, blocks_, key, lo, rate, max_points_, seg_count_,
                                                &sc_->overflow, nullptr, nullptr, nullptr, nullptr);
    exclusive_sum(seg_count_, seg_offset_, segments_);
    point_total<<<1, 1, 0, s_>>>(seg_count_, seg_offset_, segments_, sc_);
    fetch();
    if (host_.overflow) throw std::runtime_error(too_many_points());
    const u64 points = host_.points;
    if (points > 0) {
      pt_blk_.ensure(arena_, points, s_);
      pt_x_.ensure(arena_, points, s_);
      pt_tau_.ensure(arena_, points, s_);
      pt_id_.ensure(arena_, points, s_);
      run_tau_.ensure(arena_, points, s_);
      is_new_.ensure(arena_, points, s_);
      slot_.ensure(arena_, points, s_);
      cand_key_.ensure(arena_, have_ + points, s_, have_);
      cand_id_.ensure(arena_, have_ + points, s_, have_);
      race_points<true><<<segs, kLanes, 0, s_>>>(cum_, blocks_, key, lo, rate, max_points_, nullptr, nullptr,
                                                 seg_offset_, pt_blk_.p, pt_x_.p, pt_tau_.p);
      const unsigned g = grid_for(points);
      point_items<<<g, kThreads, 0, s_>>>(pref_, n_, pt_blk_.p, pt_x_.p, points, pt_id_.p);
      point_runs<<<g, kThreads, 0, s_>>>(pt_id_.p, pt_tau_.p, points, flags_, run_tau_.p, is_new_.p);
      exclusive_sum(is_new_.p, slot_.p, points);
      append_new<<<g, kThreads, 0, s_>>>(pt_id_.p, run_tau_.p, is_new_.p, slot_.p, points, have_, cand_key_.p,
                                         cand_id_.p, flags_, sc_);
      fetch();
      if (host_.found > have_) ++bands_;
      have_ = host_.found;
    }
    return {static_cast<std::size_t>(have_), total_};
  }

  // One more wait: the count, to size the buffers of the keys. The bands' candidates stay (and
  // keep their flags, cleared with theirs after the picks); the new keys are one more run in
  // item order, so that pick() sorts by item before sorting by key when there were bands.
  std::size_t direct(u64 key, double lo) {
    is_new_.ensure(arena_, n_, s_);
    slot_.ensure(arena_, n_, s_);
    const unsigned g = grid_for(n_);
    direct_mark<<<g, kThreads, 0, s_>>>(pref_, n_, flags_, is_new_.p);
    exclusive_sum(is_new_.p, slot_.p, n_);
    direct_count<<<1, 1, 0, s_>>>(is_new_.p, slot_.p, n_, have_, sc_);
    fetch();
    const u64 found = host_.found;
    if (found > have_) {
      cand_key_.ensure(arena_, found, s_, have_);
      cand_id_.ensure(arena_, found, s_, have_);
      direct_keys<<<g, kThreads, 0, s_>>>(pref_, n_, key, lo, is_new_.p, slot_.p, have_, cand_key_.p, cand_id_.p);
      ++bands_;
    }
    have_ = found;
    return static_cast<std::size_t>(have_);
  }

  // Wait 5: the cut, the removed weight, the noise bound, the total weight.
  SoftCapPicks pick(std::size_t b_, i64 done, double decay) {
    const u64 b = b_;
    key_b_.ensure(arena_, have_, s_);
    id_b_.ensure(arena_, have_, s_);
    // candidates (cand_*) -> by key (sorted_*); with several runs in item order, by item first
    // (into *_b_), so that equal keys keep the lower item first, as race_before
    const u64* sorted_key = key_b_.p;
    const u64* sorted_id = id_b_.p;
    if (bands_ > 1) {
      sort(cand_id_.p, id_b_.p, cand_key_.p, key_b_.p, have_, id_bits_);
      sort(key_b_.p, cand_key_.p, id_b_.p, cand_id_.p, have_, 64);
      sorted_key = cand_key_.p;
      sorted_id = cand_id_.p;
    } else {
      sort(cand_key_.p, key_b_.p, cand_id_.p, id_b_.p, have_, 64);
    }
    count_picks<<<grid_for(b), kThreads, 0, s_>>>(sorted_id, sorted_key, b, counts_, picks_ ? picks_ + done : nullptr,
                                                  sc_);
    clear_flags<<<grid_for(have_), kThreads, 0, s_>>>(sorted_id, have_, flags_);
    // the picks by item, into the buffers the candidates no longer need
    u64* by_id = sorted_id == id_b_.p ? cand_id_.p : id_b_.p;
    u64* scratch = sorted_id == id_b_.p ? cand_key_.p : key_b_.p;
    sort(sorted_id, by_id, sorted_id, scratch, b, id_bits_);
    scale_blocks<<<grid_for(b), kThreads, 0, s_>>>(by_id, b, pref_, n_, bsum_, bref_, decay, blk_removed_,
                                                   blk_noise_);
    segment_picks<<<static_cast<unsigned>(segments_), kLanes, 0, s_>>>(blk_removed_, blk_noise_, blocks_,
                                                                       seg_removed_, seg_noise_);
    sum_in_order<<<1, kLanes, 0, s_>>>(seg_removed_, segments_, &sc_->removed);
    sum_in_order<<<1, kLanes, 0, s_>>>(seg_noise_, segments_, &sc_->noise);
    refresh_sums();
    fetch();
    total_ = host_.total;
    have_ = 0;
    return {host_.cut, host_.removed, host_.noise};
  }

 private:
  void fetch() {
    check(cudaGetLastError(), "kernel launch");
    check(cudaMemcpyAsync(&host_, sc_, sizeof(Scalars), cudaMemcpyDeviceToHost, s_), "cudaMemcpyAsync");
    check(cudaStreamSynchronize(s_), "cudaStreamSynchronize");
  }

  void refresh_sums() {
    if (segments_) segment_sums<<<static_cast<unsigned>(segments_), kLanes, 0, s_>>>(bsum_, blocks_, cum_, segw_);
    sum_in_order<<<1, kLanes, 0, s_>>>(segw_, segments_, &sc_->total);
  }

  void exclusive_sum(const u64* in, u64* out, u64 count) {
    std::size_t bytes = 0;
    const auto items = static_cast<std::int64_t>(count);  // 64-bit offsets: points may pass 2^31
    check(cub::DeviceScan::ExclusiveSum(nullptr, bytes, in, out, items, s_), "cub scan");
    temp_.ensure(arena_, bytes ? bytes : 1, s_);
    check(cub::DeviceScan::ExclusiveSum(static_cast<void*>(temp_.p), bytes, in, out, items, s_), "cub scan");
  }

  // A stable radix sort of (keys, values) on the low `bits` bits of the keys.
  void sort(const u64* keys_in, u64* keys_out, const u64* vals_in, u64* vals_out, u64 count, int bits) {
    std::size_t bytes = 0;
    check(cub::DeviceRadixSort::SortPairs(nullptr, bytes, keys_in, keys_out, vals_in, vals_out,
                                          static_cast<int>(count), 0, bits, s_),
          "cub sort");
    temp_.ensure(arena_, bytes ? bytes : 1, s_);
    check(cub::DeviceRadixSort::SortPairs(static_cast<void*>(temp_.p), bytes, keys_in, keys_out, vals_in, vals_out,
                                          static_cast<int>(count), 0, bits, s_),
          "cub sort");
  }

  const S* scores_;
  u64 n_;
  i64* counts_;
  i64* picks_;
  cudaStream_t s_;
  Arena arena_;
  u64 blocks_, segments_, max_points_;
  int id_bits_;
  Scalars* sc_;
  Scalars host_{};
  double total_ = 0.0;
  u64 have_ = 0;   // candidates of the batch
  u64 bands_ = 0;  // runs in item order among them
  u64* part_u64_;
  double* part_f64_;
  double *pref_, *bsum_, *bref_, *cum_, *blk_removed_, *blk_noise_, *segw_, *seg_removed_, *seg_noise_;
  u64 *seg_count_, *seg_offset_;
  unsigned char* flags_;
  Grown<u64> pt_blk_, is_new_, slot_, cand_key_, cand_id_, key_b_, id_b_;
  Grown<double> pt_x_, pt_tau_, run_tau_;
  Grown<i64> pt_id_;
  Grown<unsigned char> temp_;
};

template <class S>
void run(const S* scores, std::size_t n, std::int64_t total, double penalty, std::int64_t batch_size,
         std::uint64_t seed, std::int64_t* counts, std::int64_t* picks, cudaStream_t s,
         const std::function<bool()>& interrupted, const SoftCapTrace& trace, const DeviceMemory& memory) {
  if (total == 0) {
    check(cudaMemsetAsync(counts, 0, n * sizeof(std::int64_t), s), "cudaMemsetAsync");
  } else {
    CudaSoftCap<S> be(scores, n, counts, picks, s, memory);
    soft_cap_drive(n, total, penalty, batch_size, seed, be, interrupted, trace);
  }
  check(cudaStreamSynchronize(s), "cudaStreamSynchronize");  // the results are written
}

}  // namespace

void sample(const void* scores, bool f32, std::size_t n, std::int64_t total, double penalty, std::int64_t batch_size,
            std::uint64_t seed, std::int64_t* counts, std::int64_t* picks, void* stream,
            const std::function<bool()>& interrupted, const SoftCapTrace& trace, const DeviceMemory& memory) {
  soft_cap_check(penalty, batch_size, total);
  if (n >= (std::size_t{1} << 31)) {
    throw std::invalid_argument("soft_cap_sample on CUDA takes fewer than 2^31 scores, got " + std::to_string(n));
  }
  const auto s = static_cast<cudaStream_t>(stream);
  if (f32) {
    run(static_cast<const float*>(scores), n, total, penalty, batch_size, seed, counts, picks, s, interrupted, trace,
        memory);
  } else {
    run(static_cast<const double*>(scores), n, total, penalty, batch_size, seed, counts, picks, s, interrupted, trace,
        memory);
  }
}

}  // namespace soft_cap_cuda
}  // namespace mixsieve
