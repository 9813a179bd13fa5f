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
#include <cmath>
#include <cstdint>
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

struct Windows {
  const std::int64_t* xa;
  const std::int64_t* xb;
  const float* lam;
  const std::uint8_t* va;  // nullptr: every token of a is valid
  const std::uint8_t* vb;
  std::int64_t batch;  // B
  std::int64_t width;  // T1 = T + 1 (>= 2)
  Policy policy;

  std::int64_t steps() const { return width - 1; }
  bool a_valid(std::int64_t i) const { return va == nullptr || va[i] != 0; }
  bool b_valid(std::int64_t i) const { return vb == nullptr || vb[i] != 0; }
  TokenMix token(std::int64_t i) const { return effective_lambda(lam[i], a_valid(i), b_valid(i), policy); }
};

inline std::string at(std::int64_t b, std::int64_t t) {
  return "[" + std::to_string(b) + ", " + std::to_string(t) + "]";
}

// Every lambda must lie in [0, 1] (NaN is refused too).
inline void check_lambda(const Windows& w) {
  const std::int64_t n = w.batch * w.width;
  for (std::int64_t i = 0; i < n; ++i) {
    const float l = w.lam[i];
    if (!(l >= 0.0f && l <= 1.0f)) {
      throw std::invalid_argument("lam" + at(i / w.width, i % w.width) + " = " + std::to_string(l) +
                                  " is outside [0, 1]");
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
  check_lambda(w);
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
// in position order. Rows are shared out over threads; each row is written once (zeros where no
// position reads it), so the result has no atomics and does not depend on the thread count.
// A (float or double) is the accumulator and output type.
template <class G, class A>
void embed_backward(const G* grad_out, std::int64_t vocab, std::int64_t dim, const Windows& w, A* grad_weight,
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
      A* dst = grad_weight + static_cast<std::int64_t>(v) * dim;
      const std::int64_t e0 = start[v], e1 = start[v + 1];
      if (e0 == e1) {
        std::memset(dst, 0, sizeof(A) * static_cast<std::size_t>(dim));
        continue;
      }
      std::fill(acc.begin(), acc.end(), A(0));
      for (std::int64_t e = e0; e < e1; ++e) {
        const G* g = grad_out + entries[e].row * dim;
        const A lam = static_cast<A>(entries[e].lam);
        const A c = entries[e].side_b ? A(1) - lam : lam;
        for (std::int64_t d = 0; d < dim; ++d) acc[d] += c * static_cast<A>(static_cast<M>(Elem<G>::load(g, d)));
      }
      std::memcpy(dst, acc.data(), sizeof(A) * static_cast<std::size_t>(dim));
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

MIXSIEVE_INLINE float expm(float x) { return fast_expf(x); }
MIXSIEVE_INLINE double expm(double x) { return std::exp(x); }

// The work of the cross-entropy kernels over positions [r0, r0 + n): the logits of position r
// are at logits + (r - r0) * V. What is written depends on which outputs are given.
template <class L>
struct CeJob {
  using M = typename Elem<L>::math;
  const L* logits;
  std::int64_t r0;
  const Targets* tg;
  M* loss = nullptr;         // [n] per-position loss times keep (forward)
  M* lse = nullptr;          // [n] log-sum-exp: written by the forward, read by the backward
  M* keep = nullptr;         // [n] 1 for kept positions, else 0 (forward)
  const M* gtok = nullptr;   // [n] upstream gradient per position (backward)
  L* grad = nullptr;         // [n, V] d loss / d logits (may alias logits)
};

// log-sum-exp and mean of one row; K partial sums so that the loops vectorise without
// reassociation (the result does not depend on the vector width).
template <class L>
MIXSIEVE_INLINE void row_stats(const L* z, std::int64_t vocab, typename Elem<L>::math& lse,
                               typename Elem<L>::math& mean) {
  using M = typename Elem<L>::math;
  constexpr int K = 16;
  M mx[K], sm[K], ex[K];
  for (int k = 0; k < K; ++k) mx[k] = -INFINITY, sm[k] = 0, ex[k] = 0;
  std::int64_t v = 0;
  for (; v + K <= vocab; v += K) {
    for (int k = 0; k < K; ++k) {
      const M x = Elem<L>::load(z, v + k);
      mx[k] = x > mx[k] ? x : mx[k];
      sm[k] += x;
    }
  }
  for (; v < vocab; ++v) {
    const M x = Elem<L>::load(z, v);
    mx[0] = x > mx[0] ? x : mx[0];
    sm[0] += x;
  }
  M m = mx[0], s = 0;
  for (int k = 0; k < K; ++k) m = mx[k] > m ? mx[k] : m, s += sm[k];
  mean = s / static_cast<M>(vocab);
  if (!(m > -INFINITY && m < INFINITY)) {  // an infinite or NaN logit: the loss is not finite
    lse = m != m ? m : (m > 0 ? m : -m);
    return;
  }
  for (v = 0; v + K <= vocab; v += K) {
    for (int k = 0; k < K; ++k) ex[k] += expm(Elem<L>::load(z, v + k) - m);
  }
  for (; v < vocab; ++v) ex[0] += expm(Elem<L>::load(z, v) - m);
  M e = 0;
  for (int k = 0; k < K; ++k) e += ex[k];
  lse = m + std::log(e);
}

template <class L>
MIXSIEVE_INLINE void ce_chunk_impl(const CeJob<L>& job, std::size_t lo, std::size_t hi) {
  using M = typename Elem<L>::math;
  const Targets& tg = *job.tg;
  const std::int64_t vocab = tg.vocab;
  const M eps = static_cast<M>(tg.eps);
  const M eps_over_v = eps / static_cast<M>(vocab);
  for (std::size_t j = lo; j < hi; ++j) {
    const Targets::Pos p = tg.at_position(job.r0 + static_cast<std::int64_t>(j));
    const L* z = job.logits + static_cast<std::int64_t>(j) * vocab;
    M lse;
    if (job.gtok == nullptr) {  // forward
      M mean;
      row_stats<L>(z, vocab, lse, mean);
      const M za = p.a_ok ? static_cast<M>(Elem<L>::load(z, p.ya)) : M(0);
      const M zb = p.b_ok ? static_cast<M>(Elem<L>::load(z, p.yb)) : M(0);
      job.lse[j] = lse;
      job.keep[j] = p.keep ? M(1) : M(0);
      job.loss[j] = p.keep ? token_loss<M>(lse, za, zb, mean, static_cast<M>(p.omega), eps) : M(0);
    } else {
      lse = job.lse[j];
    }
    if (job.grad == nullptr) continue;
    L* out = job.grad + static_cast<std::int64_t>(j) * vocab;
    const M g = job.gtok == nullptr ? M(1) : job.gtok[j];
    if (!p.keep) {
      for (std::int64_t v = 0; v < vocab; ++v) Elem<L>::store(out, v, M(0));
      continue;
    }
    const M omega = static_cast<M>(p.omega);
    const M pa = p.a_ok ? expm(static_cast<M>(Elem<L>::load(z, p.ya)) - lse) : M(0);
    const M pb = p.b_ok ? expm(static_cast<M>(Elem<L>::load(z, p.yb)) - lse) : M(0);
    for (std::int64_t v = 0; v < vocab; ++v) {
      Elem<L>::store(out, v, logit_grad<M>(expm(Elem<L>::load(z, v) - lse), false, false, omega, eps, eps_over_v, g));
    }
    // the target entries, with the same formula (reads of z above came first: out may alias z)
    const bool same = p.a_ok && p.b_ok && p.ya == p.yb;
    if (p.a_ok) Elem<L>::store(out, p.ya, logit_grad<M>(pa, true, same, omega, eps, eps_over_v, g));
    if (p.b_ok && !same) Elem<L>::store(out, p.yb, logit_grad<M>(pb, false, true, omega, eps, eps_over_v, g));
  }
}

template <class L>
void ce_chunk_base(const CeJob<L>& job, std::size_t lo, std::size_t hi) {
  ce_chunk_impl<L>(job, lo, hi);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
// AVX2 without FMA: the same operations in the same order, so the results do not depend on
// the CPU, only the speed does.
template <class L>
__attribute__((target("avx2"))) void ce_chunk_avx2(const CeJob<L>& job, std::size_t lo, std::size_t hi) {
  ce_chunk_impl<L>(job, lo, hi);
}
#endif

// Runs a cross-entropy job over n positions; validates every position's targets first, so a bad
// id raises before anything is written.
template <class L>
void ce_run(const CeJob<L>& job, std::int64_t n, unsigned threads) {
  check_lambda(job.tg->w);
  for (std::int64_t j = 0; j < n; ++j) (void)job.tg->at_position(job.r0 + j);
  const bool wide = std::is_same<L, double>::value ? false : cpu_has_avx2();
  parallel_for(static_cast<std::size_t>(n), threads, 1, [&](std::size_t lo, std::size_t hi) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
    if (wide) return ce_chunk_avx2<L>(job, lo, hi);
#endif
    (void)wide;
    ce_chunk_base<L>(job, lo, hi);
  });
}

}  // namespace mixup
}  // namespace mixsieve
