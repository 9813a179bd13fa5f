// Per-token mixup on the CPU: lambda draws, the mixed embedding (forward and a deterministic
// backward) and the two-target cross-entropy (forward, backward, and a fused forward that
// leaves the logit gradient in place for the chunked linear variant). The per-element
// arithmetic is in mixup_math.hpp, shared with the CUDA kernels.
//
// Layout: token windows are row-major [B, T1] (T1 = T + 1) int64 ids, float32 lambdas and
// optional uint8 validity masks (nullptr: all valid); the embedding table is [V, D]; inputs
// and outputs per position are row-major [B, T, ...], position r = b * T + t.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "mixsieve/cpu.hpp"
#include "mixsieve/mixup_math.hpp"
#include "mixsieve/parallel.hpp"

namespace mixsieve {
namespace mixup {

inline std::string at(std::int64_t b, std::int64_t t) {
  return "[" + std::to_string(b) + ", " + std::to_string(t) + "]";
}

// Every lambda the kernels use (where both tokens are real) must lie in [0, 1]; NaN is refused
// too. Rows [row_begin, row_end) of the windows.
inline void check_lambda(const Windows& w, std::int64_t row_begin, std::int64_t row_end) {
  for (std::int64_t i = row_begin * w.width; i < row_end * w.width; ++i) {
    const float l = w.lam[i];
    if (!(l >= 0.0f && l <= 1.0f) && w.a_valid(i) && w.b_valid(i)) {
      char value[32];
      std::snprintf(value, sizeof(value), "%.9g", static_cast<double>(l));
      throw std::invalid_argument("lam" + at(i / w.width, i % w.width) + " = " + value +
                                  " is outside [0, 1] (lam.clamp(0, 1) rounds small excursions in)");
    }
  }
}

// Ids that the embedding reads must lie in [0, V): a's where its weight is non-zero, b's likewise.
inline void check_input_ids(const Windows& w, std::int64_t vocab) {
  for (std::int64_t b = 0; b < w.batch; ++b) {
    for (std::int64_t t = 0; t < w.steps(); ++t) {
      const std::int64_t i = b * w.width + t;
      const TokenMix m = w.token(i);
      if (!m.keep) continue;
      if (m.lam != 0.0f && (w.xa[i] < 0 || w.xa[i] >= vocab)) {
        throw std::invalid_argument("xa" + at(b, t) + " = " + std::to_string(w.xa[i]) + " is outside [0, " +
                                    std::to_string(vocab) + ")");
      }
      if (m.lam != 1.0f && (w.xb[i] < 0 || w.xb[i] >= vocab)) {
        throw std::invalid_argument("xb" + at(b, t) + " = " + std::to_string(w.xb[i]) + " is outside [0, " +
                                    std::to_string(vocab) + ")");
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Lambda

inline void fill_lambda(float* out, std::int64_t n, std::uint64_t key, double alpha, bool dominant,
                        unsigned threads) {
  parallel_for(static_cast<std::size_t>(n), threads, 4096, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) out[i] = sample_lambda(key, i, alpha, dominant);
  });
}

// ---------------------------------------------------------------------------------------------
// Mixed embeddings: out[b, t] = keep * (lam E[xa] + (1 - lam) E[xb]), math in float (double for
// double tables), stored in the table's type.

template <class W>
void embed_forward(const W* weight, std::int64_t vocab, std::int64_t dim, const Windows& w, W* out,
                   unsigned threads) {
  using M = typename Elem<W>::math;
  check_lambda(w, 0, w.batch);
  check_input_ids(w, vocab);
  const std::int64_t steps = w.steps();
  const std::size_t rows = static_cast<std::size_t>(w.batch * steps);
  parallel_for(rows, threads, 16, [&](std::size_t lo, std::size_t hi) {
    for (std::size_t r = lo; r < hi; ++r) {
      const std::int64_t b = static_cast<std::int64_t>(r) / steps, t = static_cast<std::int64_t>(r) % steps;
      const std::int64_t i = b * w.width + t;
      const TokenMix m = w.token(i);
      W* dst = out + static_cast<std::int64_t>(r) * dim;
      if (!m.keep) {
        for (std::int64_t d = 0; d < dim; ++d) Elem<W>::store(dst, d, M(0));
        continue;
      }
      const W* ea = weight + w.xa[i] * dim;
      const W* eb = weight + w.xb[i] * dim;
      if (m.lam == 1.0f) {
        std::memcpy(dst, ea, sizeof(W) * static_cast<std::size_t>(dim));
      } else if (m.lam == 0.0f) {
        std::memcpy(dst, eb, sizeof(W) * static_cast<std::size_t>(dim));
      } else {
        const M lam = static_cast<M>(m.lam);
        for (std::int64_t d = 0; d < dim; ++d) {
          Elem<W>::store(dst, d, mix_element<M>(Elem<W>::load(ea, d), Elem<W>::load(eb, d), lam));
        }
      }
    }
  });
}

// d loss / d E: row v gathers coef * grad_out[r] over the (position, side) pairs that read row v,
// in position order. Rows are shared out over threads; each row is accumulated in A (float, or
// double for double tables) and written once, in O (the table's type; zeros where no position
// reads it), so the result has no atomics and does not depend on the thread count.
template <class G, class A, class O>
void embed_backward(const G* grad_out, std::int64_t vocab, std::int64_t dim, const Windows& w, O* grad_weight,
                    unsigned threads) {
  using M = typename Elem<G>::math;
  const std::int64_t steps = w.steps();
  const std::int64_t rows = w.batch * steps;
  // counting sort of the contributions by vocabulary row
  std::vector<std::int64_t> start(static_cast<std::size_t>(vocab) + 1, 0);
  auto for_each_contribution = [&](auto&& fn) {
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t i = (r / steps) * w.width + r % steps;
      const TokenMix m = w.token(i);
      if (!m.keep) continue;
      if (m.lam != 0.0f) fn(w.xa[i], r, m.lam, false);
      if (m.lam != 1.0f) fn(w.xb[i], r, m.lam, true);
    }
  };
  for_each_contribution([&](std::int64_t v, std::int64_t, float, bool) {
    if (v < 0 || v >= vocab) throw std::invalid_argument("token id " + std::to_string(v) + " is outside [0, V)");
    ++start[static_cast<std::size_t>(v) + 1];
  });
  for (std::int64_t v = 0; v < vocab; ++v) start[v + 1] += start[v];
  struct Entry {
    std::int64_t row;
    float lam;
    bool side_b;  // the weight is 1 - lam, computed in A (as the forward does)
  };
  std::vector<Entry> entries(static_cast<std::size_t>(start[vocab]));
  {
    std::vector<std::int64_t> fill(start.begin(), start.end() - 1);
    for_each_contribution(
        [&](std::int64_t v, std::int64_t r, float lam, bool side_b) { entries[fill[v]++] = {r, lam, side_b}; });
  }
  parallel_for(static_cast<std::size_t>(vocab), threads, 64, [&](std::size_t lo, std::size_t hi) {
    std::vector<A> acc(static_cast<std::size_t>(dim));
    for (std::size_t v = lo; v < hi; ++v) {
      O* dst = grad_weight + static_cast<std::int64_t>(v) * dim;
      const std::int64_t e0 = start[v], e1 = start[v + 1];
      if (e0 == e1) {
        std::memset(dst, 0, sizeof(O) * static_cast<std::size_t>(dim));  // +0 in every float format
        continue;
      }
      std::fill(acc.begin(), acc.end(), A(0));
      for (std::int64_t e = e0; e < e1; ++e) {
        const G* g = grad_out + entries[e].row * dim;
        const A lam = static_cast<A>(entries[e].lam);
        const A c = entries[e].side_b ? A(1) - lam : lam;
        for (std::int64_t d = 0; d < dim; ++d) acc[d] += c * static_cast<A>(static_cast<M>(Elem<G>::load(g, d)));
      }
      if constexpr (std::is_same<A, O>::value) {
        std::memcpy(dst, acc.data(), sizeof(A) * static_cast<std::size_t>(dim));
      } else {
        for (std::int64_t d = 0; d < dim; ++d) Elem<O>::store(dst, d, acc[d]);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Two-target cross-entropy

struct Targets {
  Windows w;
  bool shifted;  // omega from the lambda of token t+1 (the predicted token), else of token t
  std::int64_t ignore_index;
  std::int64_t vocab;
  double eps;  // label smoothing

  struct Pos {
    std::int64_t ya, yb;
    float omega;
    bool a_ok, b_ok, keep;
  };

  // Targets of position r = b * T + t; throws on an id outside [0, V) that is neither padding
  // nor ignore_index.
  Pos at_position(std::int64_t r) const {
    const std::int64_t steps = w.steps();
    const std::int64_t b = r / steps, t = r % steps;
    const std::int64_t in = b * w.width + t, nx = in + 1;
    Pos p{w.xa[nx], w.xb[nx], 0.0f, false, false, false};
    const TokenMix m_in = w.token(in);
    p.a_ok = w.a_valid(nx) && p.ya != ignore_index;
    p.b_ok = w.b_valid(nx) && p.yb != ignore_index;
    if (w.policy == Policy::AOnly && !p.a_ok) p.b_ok = false;  // SeqMix: positions follow a's targets
    if (p.a_ok && (p.ya < 0 || p.ya >= vocab)) {
      throw std::invalid_argument("target xa" + mixup::at(b, t + 1) + " = " + std::to_string(p.ya) +
                                  " is outside [0, " + std::to_string(vocab) + ") and is not ignore_index");
    }
    if (p.b_ok && (p.yb < 0 || p.yb >= vocab)) {
      throw std::invalid_argument("target xb" + mixup::at(b, t + 1) + " = " + std::to_string(p.yb) +
                                  " is outside [0, " + std::to_string(vocab) + ") and is not ignore_index");
    }
    const float omega = shifted ? w.token(nx).lam : m_in.lam;
    const TargetMix tm = target_weight(omega, p.a_ok, p.b_ok);
    p.omega = tm.omega;
    p.keep = m_in.keep && tm.keep;
    return p;
  }
};

#if defined(__GNUC__) && !defined(__CUDACC__)
#define MIXSIEVE_INLINE inline __attribute__((always_inline))
#else
#define MIXSIEVE_INLINE inline
#endif


// The work of the cross-entropy kernels over positions [r0, r0 + n): the logits of position r
// are at logits + (r - r0) * V. What is written depends on which outputs are given.
template <class L>
struct CeJob {
  using M = typename Elem<L>::math;
  const L* logits;
  std::int64_t r0;
  const Targets* tg;
  M* loss = nullptr;         // [n] per-position loss times keep (forward)
  M* lse = nullptr;          // [n, 2] row max m and log sum exp(z - m): forward writes, backward reads
  M* keep = nullptr;         // [n] 1 for kept positions, else 0 (forward)
  const M* gtok = nullptr;   // [n] upstream gradient per position (backward)
  L* grad = nullptr;         // [n, V] d loss / d logits (may alias logits)
};

// Rows of logits are processed 16 floats at a time with GCC's generic vectors: four 4-lane
// vectors in the baseline (SSE2) path, two 8-lane vectors in the AVX2 path. Element v goes to
// lane v % 16 either way and every lane does the same operations in the same order (no FMA),
// so the two paths give the same bits. Lanes are summed in a fixed order at the end.
#if defined(__GNUC__) && !defined(__clang__)
// The vector helpers are always inlined, so the vector-return ABI note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
template <int W>
struct Lanes {
  typedef float F __attribute__((vector_size(4 * W)));
  typedef std::int32_t I __attribute__((vector_size(4 * W)));
  typedef std::uint16_t H __attribute__((vector_size(2 * W)));
  static constexpr int kRegs = 16 / W;
};

template <int W, class L>
MIXSIEVE_INLINE typename Lanes<W>::F load_lanes(const L* z, std::int64_t v) {
  typename Lanes<W>::F r;
  if constexpr (std::is_same<L, float>::value) {
    std::memcpy(&r, z + v, sizeof(r));
  } else if constexpr (std::is_same<L, bf16_t>::value) {
    typename Lanes<W>::H h;
    std::memcpy(&h, z + v, sizeof(h));
    r = (typename Lanes<W>::F)(__builtin_convertvector(h, typename Lanes<W>::I) << 16);
  } else {
    for (int k = 0; k < W; ++k) r[k] = Elem<L>::load(z, v + k);
  }
  return r;
}

template <int W, class L>
MIXSIEVE_INLINE void store_lanes(L* out, std::int64_t v, typename Lanes<W>::F x) {
  if constexpr (std::is_same<L, float>::value) {
    std::memcpy(out + v, &x, sizeof(x));
  } else {
    for (int k = 0; k < W; ++k) Elem<L>::store(out, v + k, x[k]);
  }
}

// fast_expf of each lane, operation for operation.
template <int W>
MIXSIEVE_INLINE typename Lanes<W>::F exp_lanes(typename Lanes<W>::F x) {
  using F = typename Lanes<W>::F;
  using I = typename Lanes<W>::I;
  const F hi = F{} + 88.7f, lo = F{} + (-86.5f);
  F xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  F t;
  const F p = expf_poly(xc, t);
  const I ni = ((I)t & 0x7FFFFF) - 0x400000;
  const F scale = (F)((ni + 126) << 23);
  F y = (p * scale) * 2.0f;
  y = x < lo ? F{} : y;
  y = x > hi ? F{} + f32_from_bits(0x7F800000u) : y;
  return y;
}

// The 16 lanes of kRegs registers, in lane order.
template <int W>
MIXSIEVE_INLINE void spill(const typename Lanes<W>::F* regs, float* lanes) {
  std::memcpy(lanes, regs, 16 * sizeof(float));
}

// log-sum-exp and mean of one row (float math: float, bfloat16, float16 logits). The tail
// (vocab % 16 elements) is summed last, in order.
template <int W, class L>
MIXSIEVE_INLINE void row_stats(const L* z, std::int64_t vocab, float& max, float& log_sum, float& mean) {
  using F = typename Lanes<W>::F;
  constexpr int R = Lanes<W>::kRegs;
  F mx[R], sm[R], ex[R];
  for (int j = 0; j < R; ++j) mx[j] = F{} - INFINITY, sm[j] = F{}, ex[j] = F{};
  const std::int64_t body = vocab - vocab % 16;
  for (std::int64_t v = 0; v < body; v += 16) {
    for (int j = 0; j < R; ++j) {
      const F x = load_lanes<W>(z, v + j * W);
      mx[j] = x > mx[j] ? x : mx[j];
      sm[j] += x;
    }
  }
  float lanes_m[16], lanes_s[16];
  spill<W>(mx, lanes_m);
  spill<W>(sm, lanes_s);
  float m = -INFINITY, s = 0;
  for (int k = 0; k < 16; ++k) m = lanes_m[k] > m ? lanes_m[k] : m, s += lanes_s[k];
  for (std::int64_t v = body; v < vocab; ++v) {
    const float x = Elem<L>::load(z, v);
    m = x > m ? x : m;
    s += x;
  }
  mean = s / static_cast<float>(vocab);
  log_sum = 0.0f;
  if (s != s || !(m > -INFINITY && m < INFINITY)) {  // a NaN or +inf logit (or all -inf): not finite
    max = s != s ? s : (m > 0 ? m : -m);
    return;
  }
  max = m;
  for (std::int64_t v = 0; v < body; v += 16) {
    for (int j = 0; j < R; ++j) ex[j] += exp_lanes<W>(load_lanes<W>(z, v + j * W) - m);
  }
  float lanes_e[16];
  spill<W>(ex, lanes_e);
  float e = 0;
  for (int k = 0; k < 16; ++k) e += lanes_e[k];
  for (std::int64_t v = body; v < vocab; ++v) e += fast_expf(Elem<L>::load(z, v) - m);
  log_sum = std::log(e);
}

// out[v] = g (p_v - eps / V) for every v (the target entries are fixed up by the caller);
// out may alias z.
template <int W, class L>
MIXSIEVE_INLINE void row_grad(const L* z, std::int64_t vocab, float max, float log_sum, float eps_over_v, float g,
                              L* out) {
  const std::int64_t body = vocab - vocab % 16;
  for (std::int64_t v = 0; v < body; v += W) {
    store_lanes<W>(out, v, g * (exp_lanes<W>((load_lanes<W>(z, v) - max) - log_sum) - eps_over_v));
  }
  for (std::int64_t v = body; v < vocab; ++v) {
    Elem<L>::store(out, v, logit_grad<float>(softmax_p(Elem<L>::load(z, v), max, log_sum), false, false, 0.0f,
                                             0.0f, eps_over_v, g));
  }
}

// The same in double for double logits (scalar: float64 logits are for checking, not speed).
template <int W>
MIXSIEVE_INLINE void row_stats(const double* z, std::int64_t vocab, double& max, double& log_sum, double& mean) {
  double m = -INFINITY, s = 0;
  for (std::int64_t v = 0; v < vocab; ++v) m = z[v] > m ? z[v] : m, s += z[v];
  mean = s / static_cast<double>(vocab);
  log_sum = 0.0;
  if (s != s || !(m > -INFINITY && m < INFINITY)) {
    max = s != s ? s : (m > 0 ? m : -m);
    return;
  }
  max = m;
  double e = 0;
  for (std::int64_t v = 0; v < vocab; ++v) e += std::exp(z[v] - m);
  log_sum = std::log(e);
}

template <int W>
MIXSIEVE_INLINE void row_grad(const double* z, std::int64_t vocab, double max, double log_sum, double eps_over_v,
                              double g, double* out) {
  for (std::int64_t v = 0; v < vocab; ++v) {
    out[v] = logit_grad<double>(softmax_p(z[v], max, log_sum), false, false, 0.0, 0.0, eps_over_v, g);
  }
}

template <int W, class L>
MIXSIEVE_INLINE void ce_chunk_impl(const CeJob<L>& job, std::size_t lo, std::size_t hi) {
  using M = typename Elem<L>::math;
  const Targets& tg = *job.tg;
  const std::int64_t vocab = tg.vocab;
  const M eps = static_cast<M>(tg.eps);
  const M eps_over_v = eps / static_cast<M>(vocab);
  for (std::size_t j = lo; j < hi; ++j) {
    const Targets::Pos p = tg.at_position(job.r0 + static_cast<std::int64_t>(j));
    const L* z = job.logits + static_cast<std::int64_t>(j) * vocab;
    M max, log_sum;
    if (job.gtok == nullptr) {  // forward
      M mean;
      row_stats<W>(z, vocab, max, log_sum, mean);
      const M za = p.a_ok ? static_cast<M>(Elem<L>::load(z, p.ya)) : M(0);
      const M zb = p.b_ok ? static_cast<M>(Elem<L>::load(z, p.yb)) : M(0);
      job.lse[2 * j] = max;
      job.lse[2 * j + 1] = log_sum;
      job.keep[j] = p.keep ? M(1) : M(0);
      job.loss[j] = p.keep ? token_loss<M>(max, log_sum, za, zb, mean, static_cast<M>(p.omega), eps) : M(0);
    } else {
      max = job.lse[2 * j];
      log_sum = job.lse[2 * j + 1];
    }
    if (job.grad == nullptr) continue;
    L* out = job.grad + static_cast<std::int64_t>(j) * vocab;
    const M g = job.gtok == nullptr ? M(1) : job.gtok[j];
    if (!p.keep) {
      for (std::int64_t v = 0; v < vocab; ++v) Elem<L>::store(out, v, M(0));
      continue;
    }
    const M omega = static_cast<M>(p.omega);
    const M pa = p.a_ok ? softmax_p(static_cast<M>(Elem<L>::load(z, p.ya)), max, log_sum) : M(0);
    const M pb = p.b_ok ? softmax_p(static_cast<M>(Elem<L>::load(z, p.yb)), max, log_sum) : M(0);
    row_grad<W>(z, vocab, max, log_sum, eps_over_v, g, out);
    // the target entries, with the same formula (reads of z above came first: out may alias z)
    const bool same = p.a_ok && p.b_ok && p.ya == p.yb;
    if (p.a_ok) Elem<L>::store(out, p.ya, logit_grad<M>(pa, true, same, omega, eps, eps_over_v, g));
    if (p.b_ok && !same) Elem<L>::store(out, p.yb, logit_grad<M>(pb, false, true, omega, eps, eps_over_v, g));
  }
}

template <class L>
void ce_chunk_base(const CeJob<L>& job, std::size_t lo, std::size_t hi) {
  ce_chunk_impl<4, L>(job, lo, hi);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
// AVX2 and AVX-512 without FMA: the same operations in the same order, so the results do not
// depend on the CPU, only the speed does.
template <class L>
__attribute__((target("avx2"))) void ce_chunk_avx2(const CeJob<L>& job, std::size_t lo, std::size_t hi) {
  ce_chunk_impl<8, L>(job, lo, hi);
}
template <class L>
__attribute__((target("avx512f"))) void ce_chunk_avx512(const CeJob<L>& job, std::size_t lo, std::size_t hi) {
  ce_chunk_impl<16, L>(job, lo, hi);
}
#endif

// The widest row path this CPU has: 2 AVX-512, 1 AVX2, 0 baseline (SSE2, or not x86-64).
inline int ce_isa_available() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
  static const int level = __builtin_cpu_supports("avx512f") ? 2 : (__builtin_cpu_supports("avx2") ? 1 : 0);
  return level;
#else
  return 0;
#endif
}

// Test hook: -1 picks the widest path the CPU has; 0, 1, 2 force the baseline, AVX2 or AVX-512
// path (capped at what the CPU has).
inline std::atomic<int>& forced_isa() {
  static std::atomic<int> isa{-1};
  return isa;
}

inline int ce_isa() {
  const int forced = forced_isa().load();
  return forced < 0 ? ce_isa_available() : std::min(forced, ce_isa_available());
}

// Runs a cross-entropy job over n positions; validates every position's targets first, so a bad
// id raises before anything is written.
template <class L>
void ce_run(const CeJob<L>& job, std::int64_t n, unsigned threads) {
  if (n > 0) {  // the windows this chunk of positions reads
    const std::int64_t steps = job.tg->w.steps();
    check_lambda(job.tg->w, job.r0 / steps, (job.r0 + n - 1) / steps + 1);
  }
  for (std::int64_t j = 0; j < n; ++j) (void)job.tg->at_position(job.r0 + j);
  const int isa = std::is_same<L, double>::value ? 0 : ce_isa();  // double rows are scalar
  parallel_for(static_cast<std::size_t>(n), threads, 1, [&](std::size_t lo, std::size_t hi) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
    if (isa == 2) return ce_chunk_avx512<L>(job, lo, hi);
    if (isa == 1) return ce_chunk_avx2<L>(job, lo, hi);
#endif
    ce_chunk_base<L>(job, lo, hi);
  });
}

}  // namespace mixup
}  // namespace mixsieve
