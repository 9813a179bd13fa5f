// The CUDA mixup kernels (csrc/cuda/*.cu, launches rewritten for cuda_runtime.h here) run on
// the host against the CPU kernels (mixup.hpp), on small inputs with padding, lambdas of 0
// and 1, repeated ids and ignore_index targets:
//   lambdas, mixed embeddings and the deterministic embedding gradient: the same bytes;
//   the atomic gradient and the cross-entropy (loss, row statistics, logit gradient, forward
//   in place and not, backward from gtok at an offset r0): equal to rounding;
//   non-finite logits: the same NaN / inf pattern; bad ids and lambdas: NaN rows.
// Prints "OK" and exits 0 when everything agrees. Built and run by
// tests/test_mixup_cuda_emulated.py.
#include "check.h"
#include <cuda_runtime.h>  // the emulation's

#include <cmath>
#include <cstdio>
#include <random>
#include <type_traits>

#include "mixsieve/mixup.hpp"
#include "mixup_cuda.hpp"

namespace mx = mixsieve::mixup;
namespace mc = mixsieve::mixup::cuda;
using i64 = std::int64_t;


struct Batch {
  i64 B, T1, V;
  std::vector<i64> xa, xb;
  std::vector<float> lam;
  std::vector<std::uint8_t> va, vb;

  Batch(i64 b_, i64 t1_, i64 v_, unsigned seed, bool ignore) : B(b_), T1(t1_), V(v_) {
    std::mt19937_64 r(seed);
    const i64 n = B * T1;
    xa.resize(n), xb.resize(n), lam.resize(n), va.assign(n, 1), vb.assign(n, 1);
    for (i64 i = 0; i < n; ++i) {
      xa[i] = static_cast<i64>(r() % V);
      xb[i] = static_cast<i64>(r() % V);
      lam[i] = mx::sample_lambda(seed, i, 0.4, false);
    }
    for (i64 b = 0; b < B; ++b) {
      lam[b * T1 + 1] = 1.0f;
      lam[b * T1 + 2] = 0.0f;
      xa[b * T1 + 3] = xb[b * T1 + 3];
      if (ignore) xb[b * T1 + 4] = -100;
    }
    for (i64 t = T1 / 2; t < T1; ++t) va[t] = 0;  // a padded in row 0
    if (B > 1) {
      for (i64 t = T1 / 3; t < T1; ++t) vb[T1 + t] = 0;  // b padded in row 1
    }
    if (B > 2) {  // both padded at the end of row 2
      for (i64 t = T1 - 2; t < T1; ++t) va[2 * T1 + t] = 0;
      for (i64 t = T1 - 3; t < T1; ++t) vb[2 * T1 + t] = 0;
    }
  }
  mx::Windows cpu(int policy) const {
    return {xa.data(), xb.data(), lam.data(), va.data(), vb.data(), B, T1, static_cast<mx::Policy>(policy)};
  }
  mc::Windows dev(int policy) const {
    return {xa.data(), xb.data(), lam.data(), va.data(), vb.data(), B, T1, static_cast<mx::Policy>(policy)};
  }
};

template <class T>
bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <class W>
W from_float(float x) {
  if constexpr (std::is_same_v<W, mx::bf16_t>) return {mx::f32_to_bf16(x)};
  else if constexpr (std::is_same_v<W, mx::f16_t>) return {mx::f32_to_f16(x)};
  else return static_cast<W>(x);
}

template <class W>
constexpr mx::Dtype code() {
  if constexpr (std::is_same_v<W, float>) return mx::Dtype::F32;
  else if constexpr (std::is_same_v<W, double>) return mx::Dtype::F64;
  else if constexpr (std::is_same_v<W, mx::bf16_t>) return mx::Dtype::BF16;
  else return mx::Dtype::F16;
}

template <class T>
double load_d(const std::vector<T>& v, std::size_t i) {
  return static_cast<double>(mx::Elem<T>::load(v.data(), static_cast<i64>(i)));
}

template <class W>
void check_embed(i64 dim, int policy, i64 B = 4, i64 T1 = 13, i64 V = 11) {
  using A = std::conditional_t<std::is_same_v<W, double>, double, float>;
  const Batch b(B, T1, V, 7, false);
  std::mt19937 r(3);
  std::normal_distribution<float> nd;
  std::vector<W> weight(b.V * dim);
  for (auto& x : weight) x = from_float<W>(nd(r));
  const i64 rows = b.B * (b.T1 - 1);
  std::vector<W> out_cpu(rows * dim), out_dev(rows * dim);
  mx::embed_forward(weight.data(), b.V, dim, b.cpu(policy), out_cpu.data(), 1);
  CHECK(!mc::embed_forward(code<W>(), weight.data(), b.V, dim, b.dev(policy), out_dev.data(), nullptr), "launch");
  CHECK(same_bytes(out_cpu, out_dev), "embed forward: D %lld policy %d sizeof %zu", (long long)dim, policy,
        sizeof(W));

  std::vector<W> g(rows * dim);
  for (auto& x : g) x = from_float<W>(nd(r));
  std::vector<A> gw_cpu(b.V * dim), gw_det(b.V * dim, A(7)), gw_own(b.V * dim, A(5)), gw_atomic(b.V * dim, A(7));
  mx::embed_backward<W, A>(g.data(), b.V, dim, b.cpu(policy), gw_cpu.data(), 1);
  std::size_t bytes = 0;
  CHECK(!mc::embed_backward_workspace(b.B, b.T1, b.V, &bytes), "workspace size");
  std::vector<char> workspace(bytes);
  const mc::Windows w = b.dev(policy);
  CHECK(!mc::embed_backward(code<W>(), g.data(), b.V, dim, w, gw_det.data(), true, workspace.data(), bytes, nullptr),
        "deterministic");
  CHECK(!mc::embed_backward(code<W>(), g.data(), b.V, dim, w, gw_own.data(), true, nullptr, 0, nullptr), "own");
  CHECK(!mc::embed_backward(code<W>(), g.data(), b.V, dim, w, gw_atomic.data(), false, nullptr, 0, nullptr),
        "atomic");
  CHECK(same_bytes(gw_cpu, gw_det), "deterministic backward: D %lld policy %d sizeof %zu", (long long)dim, policy,
        sizeof(W));
  CHECK(same_bytes(gw_det, gw_own), "deterministic backward with its own workspace");
  double err = 0;
  for (std::size_t i = 0; i < gw_cpu.size(); ++i) err = std::max(err, std::abs(double(gw_cpu[i]) - gw_atomic[i]));
  CHECK(err < 1e-5, "atomic backward: error %g", err);
}

template <class L>
void check_ce(i64 vocab, int policy, bool shifted, double eps, bool in_place) {
  using M = typename mx::Elem<L>::math;
  const Batch b(3, 9, vocab, 11, true);
  const i64 n = b.B * (b.T1 - 1);
  std::mt19937 r(5);
  std::normal_distribution<float> nd;
  std::vector<L> z(n * vocab);
  for (auto& x : z) x = from_float<L>(3 * nd(r));
  const mx::Targets tg{b.cpu(policy), shifted, -100, vocab, eps};
  const double tol = std::is_same_v<L, double> ? 1e-12 : (sizeof(L) == 2 ? 1e-2 : 1e-5);

  // forward with the gradient, in place or into another buffer
  std::vector<M> loss_c(n), stats_c(2 * n), keep_c(n), loss_d(n), stats_d(2 * n), keep_d(n);
  std::vector<L> grad_c(n * vocab), grad_d(in_place ? 0 : n * vocab), z_d = z;
  mx::CeJob<L> job;
  job.logits = z.data(), job.r0 = 0, job.tg = &tg, job.loss = loss_c.data(), job.lse = stats_c.data();
  job.keep = keep_c.data(), job.grad = grad_c.data();
  mx::ce_run<L>(job, n, 1);
  void* grad = in_place ? static_cast<void*>(z_d.data()) : static_cast<void*>(grad_d.data());
  const mc::CeArgs a{z_d.data(), 0,           n,       vocab,   shifted, -100, eps, loss_d.data(),
                     stats_d.data(), keep_d.data(), nullptr, grad};
  CHECK(!mc::cross_entropy(code<L>(), a, b.dev(policy), nullptr), "ce forward");
  const std::vector<L>& grad_out = in_place ? z_d : grad_d;
  double e_loss = 0, e_grad = 0;
  for (i64 j = 0; j < n; ++j) {
    e_loss = std::max(e_loss, std::abs(double(loss_c[j]) - loss_d[j]));
    e_loss = std::max(e_loss, std::abs(double(stats_c[2 * j + 1]) - stats_d[2 * j + 1]));
    CHECK(keep_c[j] == keep_d[j] && stats_c[2 * j] == stats_d[2 * j], "keep or row max of row %lld", (long long)j);
  }
  for (std::size_t i = 0; i < grad_c.size(); ++i) e_grad = std::max(e_grad, std::abs(load_d(grad_c, i) - load_d(grad_out, i)));
  CHECK(e_loss < 10 * tol && e_grad < tol, "ce forward: V %lld sizeof %zu policy %d shifted %d: errors %g, %g",
        (long long)vocab, sizeof(L), policy, shifted, e_loss, e_grad);

  // backward from per-position upstream gradients, positions [2, n)
  std::vector<M> gtok(n);
  for (auto& x : gtok) x = static_cast<M>(nd(r));
  std::vector<L> back_c((n - 2) * vocab), back_d((n - 2) * vocab);
  mx::CeJob<L> jb;
  jb.logits = z.data() + 2 * vocab, jb.r0 = 2, jb.tg = &tg, jb.lse = stats_c.data() + 4, jb.gtok = gtok.data() + 2;
  jb.grad = back_c.data();
  mx::ce_run<L>(jb, n - 2, 1);
  const mc::CeArgs ab{z.data() + 2 * vocab, 2, n - 2, vocab, shifted, -100, eps, nullptr, stats_c.data() + 4,
                      nullptr, gtok.data() + 2, back_d.data()};
  CHECK(!mc::cross_entropy(code<L>(), ab, b.dev(policy), nullptr), "ce backward");
  double e_back = 0;
  for (std::size_t i = 0; i < back_c.size(); ++i) e_back = std::max(e_back, std::abs(load_d(back_c, i) - load_d(back_d, i)));
  CHECK(e_back < 4 * tol, "ce backward: V %lld error %g", (long long)vocab, e_back);
}

// Rows with -inf, +inf, NaN, all -inf and large logits: the same values (NaN where NaN).
void check_special_logits() {
  const Batch b(3, 9, 52, 2, false);
  const i64 n = 24, V = 52;
  std::vector<float> z(n * V);
  std::mt19937 r(1);
  std::normal_distribution<float> nd;
  for (auto& x : z) x = nd(r);
  z[5] = -INFINITY;
  z[V + 7] = INFINITY;
  z[2 * V + 9] = NAN;
  for (i64 v = 0; v < V; ++v) z[3 * V + v] = -INFINITY;
  for (i64 v = 0; v < V; ++v) z[4 * V + v] += 2e4f;
  auto same = [](float x, float y) {
    return (std::isnan(x) && std::isnan(y)) || x == y || std::abs(x - y) <= 1e-5f * std::max(1.0f, std::abs(x));
  };
  for (double eps : {0.0, 0.1}) {
    const mx::Targets tg{b.cpu(0), true, -100, V, eps};
    std::vector<float> loss_c(n), stats_c(2 * n), keep_c(n), loss_d(n), stats_d(2 * n), keep_d(n);
    std::vector<float> grad_c(n * V), grad_d(n * V);
    mx::CeJob<float> job;
    job.logits = z.data(), job.r0 = 0, job.tg = &tg, job.loss = loss_c.data(), job.lse = stats_c.data();
    job.keep = keep_c.data(), job.grad = grad_c.data();
    mx::ce_run<float>(job, n, 1);
    const mc::CeArgs a{z.data(), 0, n, V, true, -100, eps, loss_d.data(), stats_d.data(), keep_d.data(), nullptr,
                       grad_d.data()};
    CHECK(!mc::cross_entropy(mx::Dtype::F32, a, b.dev(0), nullptr), "ce");
    for (i64 j = 0; j < n; ++j) {
      CHECK(same(loss_c[j], loss_d[j]), "eps %g row %lld: loss %g vs %g", eps, (long long)j, loss_c[j], loss_d[j]);
      CHECK(same(stats_c[2 * j], stats_d[2 * j]) && same(stats_c[2 * j + 1], stats_d[2 * j + 1]), "row %lld stats",
            (long long)j);
      for (i64 v = 0; v < V; ++v) {
        const float c = grad_c[j * V + v], d = grad_d[j * V + v];
        if (!same(c, d) && std::abs(c - d) > 1e-6f) {
          CHECK(false, "eps %g row %lld v %lld: gradient %g vs %g", eps, (long long)j, (long long)v, c, d);
          break;
        }
      }
    }
  }
}

// Bad ids and lambdas: NaN rows (embedding forward, loss, logit gradient), finite table gradient.
void check_bad_values() {
  Batch b(2, 9, 20, 1, false);
  std::fill(b.lam.begin(), b.lam.end(), 0.5f);
  std::fill(b.va.begin(), b.va.end(), 1);
  std::fill(b.vb.begin(), b.vb.end(), 1);
  b.xa[2] = 20;                // input (0, 2), target of (0, 1)
  b.xb[9 + 4] = -3;            // input (1, 4), target of (1, 3)
  b.lam[9 + 6] = 1.5f;         // input (1, 6), target of (1, 5)
  b.xa[8] = i64(1) << 40;      // target of (0, 7) only
  const i64 dim = 16, rows = 16;
  std::vector<float> weight(20 * dim, 1.0f), out(rows * dim);
  CHECK(!mc::embed_forward(mx::Dtype::F32, weight.data(), 20, dim, b.dev(0), out.data(), nullptr), "forward");
  for (i64 r = 0; r < rows; ++r) {
    const bool bad = r == 2 || r == 8 + 4 || r == 8 + 6;
    CHECK(std::isnan(out[r * dim]) == bad && std::isnan(out[r * dim + dim - 1]) == bad, "row %lld", (long long)r);
  }
  std::vector<float> z(rows * 20, 0.5f), loss(rows), stats(2 * rows), keep(rows);
  const mc::CeArgs a{z.data(), 0, rows, 20, true, -100, 0.0, loss.data(), stats.data(), keep.data(), nullptr,
                     z.data()};
  CHECK(!mc::cross_entropy(mx::Dtype::F32, a, b.dev(0), nullptr), "ce");
  for (i64 r = 0; r < rows; ++r) {
    const bool bad = r == 1 || r == 7 || r == 11 || r == 13 || r == 14;
    CHECK(std::isnan(loss[r]) == bad && std::isnan(z[r * 20 + 3]) == bad, "ce row %lld", (long long)r);
  }
  std::vector<float> gw(20 * dim, 7.0f), g(rows * dim, 1.0f);
  for (bool det : {false, true}) {
    CHECK(!mc::embed_backward(mx::Dtype::F32, g.data(), 20, dim, b.dev(0), gw.data(), det, nullptr, 0, nullptr),
          "backward");
    for (float x : gw) CHECK(std::isfinite(x), "finite table gradient");
  }
}

// An empty batch (null window pointers): nothing read, the table gradient all zeros.
void check_empty_batch() {
  const mc::Windows w{nullptr, nullptr, nullptr, nullptr, nullptr, 0, 5, mx::Policy::Union};
  std::vector<float> weight(7 * 4, 1.0f), gw(7 * 4, 3.0f);
  CHECK(!mc::embed_forward(mx::Dtype::F32, weight.data(), 7, 4, w, nullptr, nullptr), "forward");
  for (bool det : {false, true}) {
    std::fill(gw.begin(), gw.end(), 3.0f);
    CHECK(!mc::embed_backward(mx::Dtype::F32, nullptr, 7, 4, w, gw.data(), det, nullptr, 0, nullptr), "backward");
    for (float x : gw) CHECK(x == 0.0f, "zero gradient (deterministic %d)", det);
  }
  const mc::CeArgs a{nullptr, 0, 0, 7, true, -100, 0.0, nullptr, nullptr, nullptr, nullptr, nullptr};
  CHECK(!mc::cross_entropy(mx::Dtype::F32, a, w, nullptr), "ce");
}

int main() {
  for (double alpha : {5e-4, 0.4, 2.0}) {
    for (bool dominant : {false, true}) {
      std::vector<float> c(300), d(300);
      mx::fill_lambda(c.data(), 300, mx::lambda_key(3, 5), alpha, dominant, 1);
      CHECK(!mc::fill_lambda(d.data(), 300, mx::lambda_key(3, 5), alpha, dominant, nullptr), "lambda");
      CHECK(same_bytes(c, d), "lambda: alpha %g", alpha);
    }
  }
  for (int policy : {0, 1}) {
    for (i64 dim : {64, 33, 8}) {  // 16-byte packs, scalar, packs
      check_embed<float>(dim, policy);
      check_embed<double>(dim, policy);
      check_embed<mx::bf16_t>(dim, policy);
      check_embed<mx::f16_t>(dim, policy);
    }
  }
  check_embed<float>(1100, 0);            // two sweeps of the row blocks
  check_embed<float>(40, 0, 4, 90, 2);    // segments of several tiles
  check_embed<double>(9, 1, 3, 70, 300);  // mostly empty rows
  for (int policy : {0, 1}) {
    for (bool shifted : {true, false}) {
      check_ce<float>(52, policy, shifted, 0.1, true);   // 16-byte packs, in place
      check_ce<float>(50, policy, shifted, 0.0, false);  // scalar
    }
  }
  check_ce<double>(52, 0, true, 0.1, false);
  check_ce<mx::bf16_t>(56, 0, true, 0.1, true);
  check_ce<mx::f16_t>(53, 1, true, 0.0, false);
  check_ce<float>(2100, 0, true, 0.1, true);      // 256 threads a row
  check_ce<mx::bf16_t>(2101, 0, true, 0.0, false);
  check_ce<float>(16400, 1, false, 0.05, false);  // 512 threads a row
  check_ce<double>(16401, 0, true, 0.0, true);
  check_special_logits();
  check_bad_values();
  check_empty_batch();
  std::printf("%s: %d failures, %ld emulated launches\n", failures ? "FAILED" : "OK", failures, emu_launches);
  return failures != 0;
}
