"""Per-token mixup (ms.mixup: sample_lambda, mix_embeddings, mixup_cross_entropy,
mixup_linear_cross_entropy) against plain-torch references in tests/oracles.py, written from
the operator as docs/mixup.md defines it, not from the kernels: values and gradients in fp64
(rtol 1e-12), fp32 (rtol 1e-5) and 16-bit (error against an fp64 truth at most twice the
reference's own 16-bit error); a second oracle (F.cross_entropy with dense soft targets built by
scatter_add_); torch.autograd.gradcheck; the spec's identities (lambda == 1 is plain CE, a/b swap
symmetry, SeqMix for one lambda per row, ...); padding policies, ignore_index, label smoothing,
reductions, chunk sizes; float extremes; bad input; determinism across runs and thread counts;
and the lambda sampler's distribution (Kolmogorov-Smirnov against a scipy-free Beta(a, a) CDF,
moments, correlations, counter-based reproducibility).

Statistical thresholds are fixed in advance at a tail probability of about 1e-6: the KS distance
must stay below sqrt(-ln(p / 2) / 2) / sqrt(N) with p = 1e-6, and z-scores below 5.3."""

import hashlib
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import oracles  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mixsieve import mixup as mx  # noqa: E402

Z_MAX = 5.3  # two-sided normal tail ~1e-7
KS_P = 1e-6
KS_C = math.sqrt(-0.5 * math.log(KS_P / 2))  # ~2.69: P(sqrt(N) D > KS_C) ~ 1e-6
POLICIES = ["union", "a-only"]
REDUCTIONS = ["none", "sum", "mean"]


# ---- cases ----


def make_case(B=6, T=7, V=16, seed=0, ignore_index=-100, alpha=0.4):
    """Token windows with every padding shape: row 0 full, row 1 a shorter than b, row 2 b shorter
    than a, row 3 both padded, row 4 a fully padded, row 5 b fully padded (rows beyond 5 full).
    Padded ids are -1 (they must not be read). Row 0 also has ignore_index as a's last target,
    ignore_index in a where lam == 0 and in b where lam == 1 (there the id is not read as an
    input), and ya == yb once."""
    rng = np.random.default_rng(seed)
    W = T + 1
    xa = torch.from_numpy(rng.integers(0, V, (B, W)))
    xb = torch.from_numpy(rng.integers(0, V, (B, W)))
    lam = torch.from_numpy(rng.beta(alpha, alpha, (B, W)).astype(np.float32))
    va = torch.ones(B, W, dtype=torch.bool)
    vb = torch.ones(B, W, dtype=torch.bool)
    lengths = {1: (4, W), 2: (W, 3), 3: (5, 6), 4: (0, W), 5: (W, 0)}
    for r, (la, lb) in lengths.items():
        if r < B:
            va[r, la:] = False
            vb[r, lb:] = False
    xa[~va] = -1
    xb[~vb] = -1
    if B > 0 and W >= 6:
        xa[0, W - 1] = ignore_index
        lam[0, 2] = 0.0
        xa[0, 2] = ignore_index
        lam[0, 3] = 1.0
        xb[0, 3] = ignore_index
        xb[0, 4] = xa[0, 4]
    return {"xa": xa, "xb": xb, "lam": lam, "va": va, "vb": vb}


def windows(c):
    return c["xa"], c["xb"], c["lam"], c["va"], c["vb"]


def leaves(*ts):
    return [t.detach().clone().requires_grad_(True) for t in ts]


def backward(out, upstream=None):
    if out.dim() == 0:
        out.backward()
    else:
        out.backward(upstream)


def scale(t):
    return max(float(t.detach().double().abs().max()), 1e-300) if t.numel() else 1.0


def assert_close(actual, expected, rtol):
    """Elementwise |a - e| <= rtol |e| + rtol * max|e| (the second term covers cancellations)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    a, e = actual.detach().double(), expected.detach().double()
    torch.testing.assert_close(a, e, rtol=rtol, atol=rtol * scale(e), equal_nan=False)


def err(x, truth):
    return float((x.detach().double() - truth.detach().double()).abs().max())


def assert_one_rounding(out, truth, what, floor):
    """A 16-bit result computed in float32 and rounded once: within 2 units of roundoff of the
    fp64 truth (one rounding is at most 1 unit), plus an absolute floor for cancellations."""
    u = torch.finfo(out.dtype).eps / 2  # unit roundoff
    a, t = out.detach().double(), truth.detach().double()
    bad = (a - t).abs() > 2 * u * t.abs() + floor
    assert not bad.any(), (what, int(bad.sum()), float((a - t).abs().max()))


def assert_within_twice_reference(out, ref16, truth, what):
    """The kernel's 16-bit error against the fp64 truth is at most twice the reference's own
    16-bit error, plus a floor of 1e-6 of the largest value."""
    e_out, e_ref = err(out, truth), err(ref16, truth)
    assert e_out <= 2 * e_ref + 1e-6 * scale(truth), (what, e_out, e_ref)


@pytest.fixture(autouse=True)
def _seeded():
    # tests that draw from torch's global generator see the same numbers on every run
    torch.manual_seed(20260)


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# ---- the oracles agree with each other ----


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("target_lambda", ["shifted", "same"])
def test_reference_loss_matches_dense_soft_target_oracle(policy, eps, target_lambda):
    c = make_case(seed=1)
    z = torch.randn(6, 7, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    for reduction in REDUCTIONS:
        kw = dict(policy=policy, label_smoothing=eps, target_lambda=target_lambda, reduction=reduction)
        ref = oracles.mixup_reference_loss(z, *windows(c), **kw)
        dense = oracles.mixup_dense_target_loss(z, *windows(c), **kw)
        assert_close(ref, dense, 1e-13)


def test_reference_embeddings_restate_the_spec_formula():
    # Union policy, all ids valid: the spec's one-liner (lerp of two F.embedding, times the mask).
    c = make_case(seed=2)
    xa, xb, lam, va, vb = windows(c)
    xa, xb = xa.clamp_min(0), xb.clamp_min(0)
    w = torch.randn(16, 8, dtype=torch.float64)
    lam_e = torch.where(va & vb, lam, va.to(lam.dtype)).double()[:, :-1, None]
    m = (va | vb)[:, :-1, None]
    spec = (lam_e * F.embedding(xa[:, :-1], w) + (1 - lam_e) * F.embedding(xb[:, :-1], w)) * m
    assert_close(oracles.mixup_reference_embeddings(w, xa, xb, lam, va, vb), spec, 1e-15)


def test_beta_cdf_oracle_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    x = np.concatenate([np.linspace(0, 1, 501), [1e-30, 1e-8, 0.5 - 1e-9, 1 - 1e-9]])
    for a in (0.1, 0.4, 1.0, 2.0):
        np.testing.assert_allclose(oracles.beta_cdf_symmetric(x, a), stats.beta.cdf(x, a, a), atol=1e-13)
        m, v, _ = oracles.beta_symmetric_moments(a)
        assert abs(v - stats.beta.var(a, a)) < 1e-14


# ---- mix_embeddings: values and gradients ----


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mix_embeddings_matches_reference(policy, dtype):
    c = make_case(seed=3)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    w = torch.randn(16, 8, dtype=dtype, generator=torch.Generator().manual_seed(3))
    g = torch.randn(6, 7, 8, dtype=dtype, generator=torch.Generator().manual_seed(4))
    (wk,) = leaves(w)
    h = mx.mix_embeddings(wk, *windows(c), policy=policy)
    assert h.dtype == dtype and h.shape == (6, 7, 8)
    h.backward(g)
    (wr,) = leaves(w.double())
    ref = oracles.mixup_reference_embeddings(wr, *windows(c), policy=policy)
    ref.backward(g.double())
    assert_close(h, ref, rtol)
    assert wk.grad.dtype == dtype
    assert_close(wk.grad, wr.grad, rtol)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mix_embeddings_16bit_error_at_most_twice_the_references(policy, dtype):
    # Many rows share ids (V = 40, 8 * 63 positions), so the weight gradient accumulates.
    c = make_case(B=8, T=62, V=40, seed=5)
    w = (torch.randn(40, 64, generator=torch.Generator().manual_seed(5)) * 2).to(dtype)
    g = torch.randn(8, 62, 64, generator=torch.Generator().manual_seed(6)).to(dtype)
    (wk,) = leaves(w)
    h = mx.mix_embeddings(wk, *windows(c), policy=policy)
    assert h.dtype == dtype
    h.backward(g)
    (wt,) = leaves(w.double())
    truth = oracles.mixup_reference_embeddings(wt, *windows(c), policy=policy)
    truth.backward(g.double())
    (w16,) = leaves(w)
    ref16 = oracles.mixup_reference_embeddings(w16, *windows(c), policy=policy, dtype=dtype)
    ref16.backward(g)
    assert_within_twice_reference(h, ref16, truth, "h")
    assert wk.grad.dtype == dtype
    assert_within_twice_reference(wk.grad, w16.grad, wt.grad, "dweight")
    # the contract's stronger promise: float32 math, one rounding to the 16-bit dtype
    assert_one_rounding(h, truth, "h", 2.0**-22 * scale(w))
    assert_one_rounding(wk.grad, wt.grad, "dweight", 2.0**-22 * scale(wt.grad))


def test_mix_embeddings_dropped_positions_are_zero_rows_with_zero_gradient():
    c = make_case(seed=7)
    w = torch.randn(16, 8, dtype=torch.float64)
    for policy in POLICIES:
        _, keep = oracles.mixup_effective_lambda(c["lam"], c["va"], c["vb"], policy)
        (wk,) = leaves(w)
        h = mx.mix_embeddings(wk, *windows(c), policy=policy)
        assert (~keep[:, :-1]).any()
        assert torch.equal(h[~keep[:, :-1]], torch.zeros_like(h[~keep[:, :-1]]))
        # an upstream gradient only at dropped positions reaches no row of the table
        g = torch.randn_like(h) * (~keep[:, :-1])[..., None]
        h.backward(g)
        assert torch.equal(wk.grad, torch.zeros_like(w))


def test_embedding_backward_in_deterministic_mode_writes_every_row_and_restores_the_fill_flag():
    # deterministic mode NaN-fills new tensors; the backward skips that fill for its gradient
    # (the kernel writes every row), so a row no position reads must still come out as zeros
    import torch.utils.deterministic as tud

    c = make_case(seed=3, V=64)
    w = torch.randn(64, 8, dtype=torch.float32)
    (ref,) = leaves(w)
    mx.mix_embeddings(ref, *windows(c)).sum().backward()
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert tud.fill_uninitialized_memory
        (wk,) = leaves(w)
        mx.mix_embeddings(wk, *windows(c)).sum().backward()
        assert tud.fill_uninitialized_memory, "the fill setting was not restored"
        assert torch.isnan(torch.empty(4)).all(), "deterministic NaN fill no longer active"
    finally:
        torch.use_deterministic_algorithms(before)
    assert torch.equal(wk.grad, ref.grad)
    unread = ref.grad.abs().sum(1) == 0
    assert unread.any() and torch.equal(wk.grad[unread], torch.zeros_like(wk.grad[unread]))


# ---- cross-entropy: values and gradients ----


def ce_inputs(dtype=torch.float64, seed=11, B=6, T=7, V=16, scale_=3.0):
    z = torch.randn(B, T, V, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale_
    g = torch.randn(B, T, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return z.to(dtype), g


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("target_lambda", ["shifted", "same"])
def test_cross_entropy_fp64_matches_both_oracles(policy, reduction, eps, target_lambda):
    c = make_case(seed=12)
    z, g = ce_inputs()
    kw = dict(policy=policy, reduction=reduction, label_smoothing=eps, target_lambda=target_lambda)
    (zk,) = leaves(z)
    out = mx.mixup_cross_entropy(zk, *windows(c), **kw)
    assert out.dtype == torch.float64
    assert out.shape == ((6, 7) if reduction == "none" else ())
    backward(out, g)
    (zr,) = leaves(z)
    ref = oracles.mixup_reference_loss(zr, *windows(c), **kw)
    backward(ref, g)
    (zd,) = leaves(z)
    dense = oracles.mixup_dense_target_loss(zd, *windows(c), **kw)
    backward(dense, g)
    assert_close(out, ref, 1e-12)
    assert_close(out, dense, 1e-12)
    assert zk.grad.dtype == torch.float64
    assert_close(zk.grad, zr.grad, 1e-12)
    assert_close(zk.grad, zd.grad, 1e-12)
    if reduction == "none":
        _, _, _, _, _, keep = oracles.mixup_targets(*windows(c), target_lambda=target_lambda, policy=policy)
        assert torch.equal(out[~keep], torch.zeros_like(out[~keep]))
        assert torch.equal(zk.grad[~keep], torch.zeros_like(zk.grad[~keep]))


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_with_ignore_index_a_valid_id(policy, reduction):
    # ignore_index = 3 is a vocabulary id: it is a normal input token but never a target.
    c = make_case(seed=13, ignore_index=3, V=8)
    assert (c["xa"][:, 1:] == 3).sum() >= 3 and (c["xb"][:, 1:] == 3).sum() >= 3
    z, g = ce_inputs(V=8)
    kw = dict(policy=policy, reduction=reduction, ignore_index=3, label_smoothing=0.1)
    (zk,) = leaves(z)
    out = mx.mixup_cross_entropy(zk, *windows(c), **kw)
    backward(out, g)
    (zr,) = leaves(z)
    ref = oracles.mixup_dense_target_loss(zr, *windows(c), **kw)
    backward(ref, g)
    assert_close(out, ref, 1e-12)
    assert_close(zk.grad, zr.grad, 1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_fp32_matches_reference(reduction, eps):
    c = make_case(B=7, T=20, V=300, seed=14)
    z, g = ce_inputs(torch.float32, seed=14, B=7, T=20, V=300, scale_=4.0)
    kw = dict(reduction=reduction, label_smoothing=eps)
    (zk,) = leaves(z)
    out = mx.mixup_cross_entropy(zk, *windows(c), **kw)
    assert out.dtype == torch.float32
    backward(out, g.float())
    (zr,) = leaves(z.double())
    ref = oracles.mixup_reference_loss(zr, *windows(c), **kw)
    backward(ref, g)
    assert_close(out, ref, 1e-5)
    assert zk.grad.dtype == torch.float32
    assert_close(zk.grad, zr.grad, 1e-5)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_bf16_error_at_most_twice_the_references(reduction, eps):
    c = make_case(B=7, T=20, V=300, seed=15)
    z, g = ce_inputs(torch.bfloat16, seed=15, B=7, T=20, V=300, scale_=4.0)
    kw = dict(reduction=reduction, label_smoothing=eps)
    (zk,) = leaves(z)
    out = mx.mixup_cross_entropy(zk, *windows(c), **kw)
    assert out.dtype == torch.float32  # the loss of 16-bit logits is float32
    backward(out, g.float())
    (zt,) = leaves(z.double())
    truth = oracles.mixup_reference_loss(zt, *windows(c), **kw)
    backward(truth, g)
    (z16,) = leaves(z)
    ref16 = oracles.mixup_reference_loss(z16, *windows(c), dtype=torch.bfloat16, **kw)
    backward(ref16, g.to(torch.bfloat16))
    assert_within_twice_reference(out, ref16, truth, "loss")
    assert zk.grad.dtype == torch.bfloat16
    assert_within_twice_reference(zk.grad, z16.grad, zt.grad, "dlogits")
    # the contract's stronger promise: float32 math on the 16-bit logits, one final rounding
    assert_close(out, truth, 1e-5)
    assert_one_rounding(zk.grad, zt.grad, "dlogits", 1e-6 * scale(zt.grad))


# ---- linear cross-entropy: values and gradients ----


def linear_inputs(dtype=torch.float64, seed=21, B=6, T=7, V=16, D=8):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(B, T, D, generator=gen, dtype=torch.float64)
    w = torch.randn(V, D, generator=gen, dtype=torch.float64)
    b = torch.randn(V, generator=gen, dtype=torch.float64)
    g = torch.randn(B, T, generator=gen, dtype=torch.float64)
    return h.to(dtype), w.to(dtype), b.to(dtype), g


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("target_lambda", ["shifted", "same"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_cross_entropy_fp64_matches_reference(policy, reduction, eps, target_lambda, with_bias):
    c = make_case(seed=22)
    h, w, b, g = linear_inputs()
    kw = dict(policy=policy, reduction=reduction, label_smoothing=eps, target_lambda=target_lambda)
    hk, wk, bk = leaves(h, w, b)
    out = mx.mixup_linear_cross_entropy(hk, wk, *windows(c), bias=bk if with_bias else None, **kw)
    assert out.dtype == torch.float64
    assert out.shape == ((6, 7) if reduction == "none" else ())
    backward(out, g)
    hr, wr, br = leaves(h, w, b)
    ref = oracles.mixup_reference_linear_loss(hr, wr, *windows(c), bias=br if with_bias else None, **kw)
    backward(ref, g)
    assert_close(out, ref, 1e-12)
    assert_close(hk.grad, hr.grad, 1e-12)
    assert_close(wk.grad, wr.grad, 1e-12)
    if with_bias:
        assert_close(bk.grad, br.grad, 1e-12)
    else:
        assert bk.grad is None


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_linear_cross_entropy_fp32_matches_reference(reduction):
    c = make_case(B=6, T=30, V=500, seed=23)
    h, w, b, g = linear_inputs(torch.float32, seed=23, B=6, T=30, V=500, D=48)
    kw = dict(reduction=reduction, label_smoothing=0.1)
    hk, wk, bk = leaves(h, w, b)
    out = mx.mixup_linear_cross_entropy(hk, wk, *windows(c), bias=bk, chunk_size=64, **kw)
    assert out.dtype == torch.float32
    backward(out, g.float())
    hr, wr, br = leaves(h.double(), w.double(), b.double())
    ref = oracles.mixup_reference_linear_loss(hr, wr, *windows(c), bias=br, **kw)
    backward(ref, g)
    assert_close(out, ref, 1e-5)
    for k, r in ((hk, hr), (wk, wr), (bk, br)):
        assert k.grad.dtype == torch.float32
        assert_close(k.grad, r.grad, 1e-5)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_linear_cross_entropy_bf16_error_at_most_twice_the_references(reduction):
    c = make_case(B=6, T=30, V=500, seed=24)
    h, w, b, g = linear_inputs(torch.bfloat16, seed=24, B=6, T=30, V=500, D=48)
    kw = dict(reduction=reduction, label_smoothing=0.1)
    hk, wk, bk = leaves(h, w, b)
    out = mx.mixup_linear_cross_entropy(hk, wk, *windows(c), bias=bk, chunk_size=64, **kw)
    backward(out, g.float())
    ht, wt, bt = leaves(h.double(), w.double(), b.double())
    truth = oracles.mixup_reference_linear_loss(ht, wt, *windows(c), bias=bt, **kw)
    backward(truth, g)
    h16, w16, b16 = leaves(h, w, b)
    ref16 = oracles.mixup_reference_linear_loss(h16, w16, *windows(c), bias=b16, dtype=torch.bfloat16, **kw)
    backward(ref16, g.to(torch.bfloat16))
    assert_within_twice_reference(out, ref16, truth, "loss")
    for name, k, r, t in (("dhidden", hk, h16, ht), ("dweight", wk, w16, wt), ("dbias", bk, b16, bt)):
        assert k.grad.dtype == torch.bfloat16
        assert_within_twice_reference(k.grad, r.grad, t.grad, name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_linear_cross_entropy_chunk_size_does_not_change_the_result(dtype):
    # 5 * 9 = 45 positions: chunks of 1 and 3 rows, the default, and one chunk larger than all rows.
    c = make_case(B=5, T=9, V=40, seed=25)
    h, w, b, g = linear_inputs(dtype, seed=25, B=5, T=9, V=40, D=12)
    rtol = 1e-13 if dtype == torch.float64 else 2e-6
    results = []
    for chunk in (1, 3, None, 1000):
        for reduction in REDUCTIONS:
            hk, wk, bk = leaves(h, w, b)
            out = mx.mixup_linear_cross_entropy(
                hk, wk, *windows(c), bias=bk, reduction=reduction, chunk_size=chunk, label_smoothing=0.1
            )
            backward(out, g.to(dtype))
            results.append((chunk, reduction, out.detach(), hk.grad, wk.grad, bk.grad))
    first = {r[1]: r for r in results[:3]}
    for chunk, reduction, *vals in results[3:]:
        for a, e in zip(vals, first[reduction][2:]):
            assert a.shape == e.shape, (chunk, reduction)
            assert_close(a, e, rtol)


@pytest.mark.parametrize("op", ["ce", "linear"])
def test_mean_over_zero_kept_positions_is_zero_not_nan(op):
    c = make_case(seed=26)
    c["va"][:] = False
    c["vb"][:] = False
    z, _ = ce_inputs()
    h, w, b, _ = linear_inputs()
    for reduction in REDUCTIONS:
        zk, hk, wk, bk = leaves(z, h, w, b)
        if op == "ce":
            out = mx.mixup_cross_entropy(zk, *windows(c), reduction=reduction)
            grads = [zk]
        else:
            out = mx.mixup_linear_cross_entropy(hk, wk, *windows(c), bias=bk, reduction=reduction)
            grads = [hk, wk, bk]
        assert torch.equal(out, torch.zeros_like(out)), (reduction, out)
        backward(out, torch.ones(6, 7, dtype=torch.float64))
        for t in grads:
            assert torch.equal(t.grad, torch.zeros_like(t)), reduction


def test_second_backward_through_the_same_graph_gives_the_same_gradients():
    # retain_graph: a second backward (with another upstream gradient) must not reuse stale state
    c = make_case(seed=27)
    h, w, b, g = linear_inputs(seed=27)
    z, _ = ce_inputs(seed=27)
    for reduction in REDUCTIONS:
        hk, wk, bk, zk = leaves(h, w, b, z)
        lin = mx.mixup_linear_cross_entropy(hk, wk, *windows(c), bias=bk, reduction=reduction, chunk_size=5)
        ce = mx.mixup_cross_entropy(zk, *windows(c), reduction=reduction)
        for out in (lin, ce):
            out.backward(torch.ones_like(out), retain_graph=True)
        first = [t.grad.clone() for t in (hk, wk, bk, zk)]
        for t in (hk, wk, bk, zk):
            t.grad = None
        for out in (lin, ce):  # the same upstream again: the same bits
            out.backward(torch.ones_like(out), retain_graph=True)
        for a, t in zip(first, (hk, wk, bk, zk)):
            assert torch.equal(a, t.grad)
            t.grad = None
        up = (g if reduction == "none" else torch.tensor(-2.5, dtype=torch.float64)).clone()
        for out in (lin, ce):
            out.backward(up)
        hr, wr, br, zr = leaves(h, w, b, z)
        lr = oracles.mixup_reference_linear_loss(hr, wr, *windows(c), bias=br, reduction=reduction)
        cr = oracles.mixup_reference_loss(zr, *windows(c), reduction=reduction)
        lr.backward(up)
        cr.backward(up)
        for k, r in zip((hk, wk, bk, zk), (hr, wr, br, zr)):
            assert_close(k.grad, r.grad, 1e-12)
        assert not all(torch.equal(a, t.grad) for a, t in zip(first, (hk, wk, bk, zk)))


@pytest.mark.parametrize("V,D,B,T", [(1, 1, 2, 3), (2, 3, 1, 1), (17, 1, 3, 4), (100, 5, 2, 33)])
def test_odd_sizes_match_the_reference(V, D, B, T):
    # V = 1 (every loss 0), vocabularies off the kernels' 16-lane blocks, D = 1, one step (T = 1)
    gen = np.random.default_rng(V * 1000 + T)
    xa = torch.from_numpy(gen.integers(0, V, (B, T + 1)))
    xb = torch.from_numpy(gen.integers(0, V, (B, T + 1)))
    lam = torch.from_numpy(gen.beta(0.4, 0.4, (B, T + 1)).astype(np.float32))
    va = torch.ones(B, T + 1, dtype=torch.bool)
    vb = va.clone()
    vb[0, -1] = False
    args = (xa, xb, lam, va, vb)
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        w = torch.randn(V, D, dtype=dtype)
        z = torch.randn(B, T, V, dtype=dtype)
        hid = torch.randn(B, T, D, dtype=dtype)
        (wk,) = leaves(w)
        h = mx.mix_embeddings(wk, *args)
        h.sum().backward()
        (wr,) = leaves(w.double())
        ref = oracles.mixup_reference_embeddings(wr, *args)
        ref.sum().backward()
        assert_close(h, ref, rtol)
        assert_close(wk.grad, wr.grad, rtol)
        for reduction in REDUCTIONS:
            zk, hk, lk = leaves(z, hid, w)
            out = mx.mixup_cross_entropy(zk, *args, reduction=reduction, label_smoothing=0.1)
            lin = mx.mixup_linear_cross_entropy(hk, lk, *args, reduction=reduction, chunk_size=2)
            backward(out, torch.ones(B, T, dtype=dtype))
            backward(lin, torch.ones(B, T, dtype=dtype))
            zr, hr, lr = leaves(z.double(), hid.double(), w.double())
            ref = oracles.mixup_reference_loss(zr, *args, reduction=reduction, label_smoothing=0.1)
            lref = oracles.mixup_reference_linear_loss(hr, lr, *args, reduction=reduction)
            backward(ref, torch.ones(B, T, dtype=torch.float64))
            backward(lref, torch.ones(B, T, dtype=torch.float64))
            # a loss is lse - (weighted logits): its rounding scales with the logits, not the loss
            # (for V = 1 the loss is 0 and the kernel's is ~1e-16)
            zs = max(scale(z), scale(hid.double() @ w.double().T))
            for a, e in ((out, ref), (lin, lref)):
                torch.testing.assert_close(a.double(), e.detach(), rtol=rtol, atol=rtol * zs)
            for a, e in ((zk.grad, zr.grad), (hk.grad, hr.grad), (lk.grad, lr.grad)):
                assert_close(a, e, rtol)


def test_empty_batch():
    # B = 0: empty outputs, sums and means of nothing are 0, gradients are zero
    x = torch.zeros(0, 6, dtype=torch.int64)
    lam, va = torch.zeros(0, 6), torch.zeros(0, 6, dtype=torch.bool)
    w, z, hid = leaves(torch.randn(9, 4), torch.randn(0, 5, 9), torch.randn(0, 5, 4))
    h = mx.mix_embeddings(w, x, x, lam, va, va)
    assert h.shape == (0, 5, 4)
    h.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w))
    for reduction in REDUCTIONS:
        out = mx.mixup_cross_entropy(z, x, x, lam, va, va, reduction=reduction)
        lin = mx.mixup_linear_cross_entropy(hid, w, x, x, lam, va, va, reduction=reduction)
        assert out.shape == lin.shape == ((0, 5) if reduction == "none" else ())
        assert (out == 0).all() and (lin == 0).all()
    assert mx.sample_lambda((0,)).shape == (0,) and mx.sample_lambda((3, 0)).shape == (3, 0)


def test_inputs_are_not_modified_and_views_work():
    # Non-contiguous views (slices, a transposed table) give the same values and gradients as
    # contiguous copies, and no input is written to (the logit gradient may be computed in place
    # of a buffer, never of the caller's logits).
    c = make_case(seed=28)
    big_x = torch.stack([c["xa"], c["xb"]], dim=-1)  # [B, T+1, 2]: xa, xb are strided views
    xa, xb = big_x[..., 0], big_x[..., 1]
    lam = torch.stack([c["lam"], c["lam"]], dim=-1)[..., 0]
    assert not xa.is_contiguous() and not lam.is_contiguous()
    args = (xa, xb, lam, c["va"], c["vb"])
    z_big = torch.randn(6, 7, 40, dtype=torch.float64)
    h_big = torch.randn(6, 7, 20, dtype=torch.float64)
    w_t = torch.randn(8, 16, dtype=torch.float64)  # the table is w_t.T: [16, 8], strides (1, 16)
    for reduction in REDUCTIONS:
        z, hid, w = z_big[..., 5:21], h_big[..., ::2][..., :8], w_t.T
        snapshot = [t.clone() for t in (z_big, h_big, w_t, big_x, lam, c["va"], c["vb"])]
        zk, hk, wk = leaves(z, hid, w)
        zv, hv, wv = (t.requires_grad_(True) for t in (z_big.clone(), h_big.clone(), w_t.clone()))
        outs = [
            mx.mixup_cross_entropy(zv[..., 5:21], *args, reduction=reduction),
            mx.mixup_linear_cross_entropy(hv[..., ::2][..., :8], wv.T, *args, reduction=reduction),
            mx.mix_embeddings(wv.T, *args).sum(),
        ]
        for o in outs:
            backward(o, torch.ones_like(o))
        refs = [
            mx.mixup_cross_entropy(zk, *args, reduction=reduction),
            mx.mixup_linear_cross_entropy(hk, wk, *args, reduction=reduction),
            mx.mix_embeddings(wk, *args).sum(),
        ]
        for r in refs:
            backward(r, torch.ones_like(r))
        for o, r in zip(outs, refs):
            assert torch.equal(o, r)
        assert torch.equal(zv.grad[..., 5:21], zk.grad) and (zv.grad[..., :5] == 0).all()
        assert torch.equal(hv.grad[..., ::2][..., :8], hk.grad)
        assert torch.equal(wv.grad.T, wk.grad)
        for before, after in zip(snapshot, (z_big, h_big, w_t, big_x, lam, c["va"], c["vb"])):
            assert torch.equal(before, after)
        for t, before in ((zk, z), (hk, hid), (wk, w)):
            assert torch.equal(t.detach(), before)
    # logits that are an intermediate result (as in a model) stay intact too; no_grad works
    (base,) = leaves(torch.randn(6, 7, 16, dtype=torch.float64))
    z = base * 2
    kept = z.detach().clone()
    loss = mx.mixup_cross_entropy(z, *args)
    assert torch.equal(z.detach(), kept)
    (loss + z.square().sum()).backward()
    assert torch.equal(z.detach(), kept)
    with torch.no_grad():
        assert torch.equal(mx.mixup_cross_entropy(base * 2, *args), loss.detach())
        assert torch.equal(z.detach(), kept)


# ---- gradcheck in float64 ----


def tiny_case(seed):
    c = make_case(B=3, T=5, V=9, seed=seed)
    return c


@pytest.mark.parametrize("policy", POLICIES)
def test_gradcheck_mix_embeddings(policy):
    c = tiny_case(31)
    (w,) = leaves(torch.randn(9, 4, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda w_: mx.mix_embeddings(w_, *windows(c), policy=policy), (w,))


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_cross_entropy(policy, reduction):
    c = tiny_case(32)
    (z,) = leaves(torch.randn(3, 5, 9, dtype=torch.float64))

    def f(z_):
        return mx.mixup_cross_entropy(
            z_, *windows(c), policy=policy, reduction=reduction, label_smoothing=0.1
        )

    assert torch.autograd.gradcheck(f, (z,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_linear_cross_entropy(reduction):
    c = tiny_case(33)
    h, w, b = leaves(*(torch.randn(s, dtype=torch.float64) for s in ((3, 5, 6), (9, 6), (9,))))

    def f(h_, w_, b_):
        return mx.mixup_linear_cross_entropy(
            h_, w_, *windows(c), bias=b_, reduction=reduction, chunk_size=4, label_smoothing=0.1
        )

    assert torch.autograd.gradcheck(f, (h, w, b))


# ---- identities (spec section 3.3, items 3 and 4) ----


def full_case(B=4, T=6, V=12, seed=40):
    c = make_case(B=B, T=T, V=V, seed=seed)
    gen = np.random.default_rng(seed)
    c["xa"] = torch.from_numpy(gen.integers(0, V, (B, T + 1)))
    c["xb"] = torch.from_numpy(gen.integers(0, V, (B, T + 1)))
    c["va"] = torch.ones(B, T + 1, dtype=torch.bool)
    c["vb"] = torch.ones(B, T + 1, dtype=torch.bool)
    return c


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_lambda_one_is_plain_cross_entropy_on_a_and_zero_on_b(eps):
    c = full_case()
    z, _ = ce_inputs(B=4, T=6, V=12)
    w = torch.randn(12, 5, dtype=torch.float64)
    xa, xb = c["xa"], c["xb"]
    for lam_value, x in ((1.0, xa), (0.0, xb)):
        lam = torch.full_like(c["lam"], lam_value)
        for policy in POLICIES:
            loss = mx.mixup_cross_entropy(z, xa, xb, lam, policy=policy, label_smoothing=eps)
            plain = F.cross_entropy(z.reshape(-1, 12), x[:, 1:].reshape(-1), label_smoothing=eps)
            assert_close(loss, plain, 1e-13)
            h = mx.mix_embeddings(w, xa, xb, lam, policy=policy)
            assert torch.equal(h, F.embedding(x[:, :-1], w))


def test_fully_padded_partner_row_gives_plain_cross_entropy_on_a():
    c = full_case()
    va, vb = c["va"], c["vb"]
    va[1, 4:] = False  # a padded on the right in one row
    vb[:] = False  # no partner at all
    xb = torch.full_like(c["xb"], -7)  # never read
    z, _ = ce_inputs(B=4, T=6, V=12)
    w = torch.randn(12, 5, dtype=torch.float64)
    ya = c["xa"][:, 1:].masked_fill(~va[:, 1:], -100)
    plain = F.cross_entropy(z.reshape(-1, 12), ya.reshape(-1), label_smoothing=0.1)
    for policy in POLICIES:
        loss = mx.mixup_cross_entropy(z, c["xa"], xb, c["lam"], va, vb, policy=policy, label_smoothing=0.1)
        assert_close(loss, plain, 1e-13)
        h = mx.mix_embeddings(w, c["xa"], xb, c["lam"], va, vb, policy=policy)
        expect = F.embedding(c["xa"][:, :-1].clamp_min(0), w) * va[:, :-1, None]
        assert torch.equal(h, expect)


def test_swapping_a_and_b_with_one_minus_lambda_changes_nothing():
    c = make_case(seed=41)
    # lambdas k / 64 so that 1 - lam is exact; keep make_case's 0 and 1 (unread ids sit there)
    dyadic = torch.from_numpy(np.random.default_rng(41).integers(0, 65, c["lam"].shape) / 64).float()
    lam = torch.where((c["lam"] == 0) | (c["lam"] == 1), c["lam"], dyadic)
    z, g = ce_inputs(seed=41)
    w = torch.randn(16, 8, dtype=torch.float64)
    h, wt, bt, _ = linear_inputs(seed=41)
    xa, xb, _, va, vb = windows(c)
    for tl in ("shifted", "same"):
        for red in REDUCTIONS:
            runs = []
            for args in ((xa, xb, lam, va, vb), (xb, xa, 1 - lam, vb, va)):
                zk, hk, wk, bk = leaves(z, h, wt, bt)
                loss = mx.mixup_cross_entropy(zk, *args, reduction=red, target_lambda=tl, label_smoothing=0.1)
                backward(loss, g)
                lin = mx.mixup_linear_cross_entropy(hk, wk, *args, bias=bk, reduction=red, target_lambda=tl)
                backward(lin, g)
                runs.append((loss, zk.grad, lin, hk.grad, wk.grad, bk.grad))
            for a, b in zip(*runs):
                assert_close(a, b, 1e-13)
    assert_close(
        mx.mix_embeddings(w, xa, xb, lam, va, vb), mx.mix_embeddings(w, xb, xa, 1 - lam, vb, va), 1e-15
    )


def test_identical_sequences_do_not_depend_on_lambda():
    c = make_case(seed=42)
    xa, va = c["xa"].clamp_min(0), c["va"]  # no ignore_index: every lambda reads every id
    z, _ = ce_inputs(seed=42)
    w = torch.randn(16, 8, dtype=torch.float64)
    lams = [c["lam"], torch.full_like(c["lam"], 0.5), torch.rand(c["lam"].shape)]
    for policy in POLICIES:
        losses = [
            mx.mixup_cross_entropy(z, xa, xa, lam, va, va, policy=policy, label_smoothing=0.1) for lam in lams
        ]
        embs = [mx.mix_embeddings(w, xa, xa, lam, va, va, policy=policy) for lam in lams]
        for x in losses[1:]:
            assert_close(x, losses[0], 1e-13)
        for x in embs[1:]:
            assert_close(x, embs[0], 1e-15)


def test_equal_targets_do_not_depend_on_omega():
    # xb differs from xa at inputs but has the same targets wherever both are valid.
    c = full_case(seed=43)
    xa, xb = c["xa"], c["xb"].clone()
    xb[:, 1:] = xa[:, 1:]
    xb[:, 0] = (xa[:, 0] + 1) % 12
    z, _ = ce_inputs(B=4, T=6, V=12)
    ref = mx.mixup_cross_entropy(z, xa, xb, torch.ones_like(c["lam"]), reduction="none", label_smoothing=0.1)
    for lam in (c["lam"], torch.zeros_like(c["lam"])):
        (zk,) = leaves(z)
        out = mx.mixup_cross_entropy(zk, xa, xb, lam, reduction="none", label_smoothing=0.1)
        assert_close(out, ref, 1e-13)
        out.sum().backward()
        # one soft target of mass 1 at ya: the gradient is softmax - 0.9 e_ya - 0.1 / V
        expect = z.softmax(-1) - 0.1 / 12 - 0.9 * F.one_hot(xa[:, 1:], 12).double()
        assert_close(zk.grad, expect, 1e-13)


@pytest.mark.parametrize("policy", POLICIES)
def test_one_lambda_per_row_is_seqmix(policy):
    # Same padding on a and b (the only layout where SeqMix's and our normalisers agree).
    c = full_case(B=5, T=8, V=20, seed=44)
    valid = c["va"]
    valid[2, 6:] = False
    valid[4, 3:] = False
    xa, xb = c["xa"].masked_fill(~valid, 0), c["xb"].masked_fill(~valid, 0)
    lam_row = torch.tensor([0.9, 0.25, 0.6, 0.5, 0.75], dtype=torch.float32)
    lam = lam_row[:, None].expand(-1, 9).contiguous()
    z, _ = ce_inputs(B=5, T=8, V=20, seed=44)
    expect = oracles.seqmix_loss(z, xa, xb, lam_row, valid, eps=0.1)
    for tl in ("shifted", "same"):
        loss = mx.mixup_cross_entropy(
            z, xa, xb, lam, valid, valid, policy=policy, target_lambda=tl, label_smoothing=0.1
        )
        assert_close(loss, expect, 1e-13)
    # wordMixup inputs: every position of a row mixed with the row's lambda
    w = torch.randn(20, 6, dtype=torch.float64)
    h = mx.mix_embeddings(w, xa, xb, lam, valid, valid, policy=policy)
    lr = lam_row.double()[:, None, None]
    expect_h = (lr * F.embedding(xa[:, :-1], w) + (1 - lr) * F.embedding(xb[:, :-1], w)) * valid[:, :-1, None]
    assert_close(h, expect_h, 1e-15)


def test_union_policy_masked_positions_receive_zero_gradient():
    c = make_case(seed=45)
    z, g = ce_inputs(seed=45)
    h, w, b, _ = linear_inputs(seed=45)
    for policy in POLICIES:
        _, _, _, _, _, keep = oracles.mixup_targets(*windows(c), policy=policy)
        assert (~keep).sum() >= 2
        zk, hk, wk, bk = leaves(z, h, w, b)
        backward(mx.mixup_cross_entropy(zk, *windows(c), policy=policy, reduction="none"), g)
        backward(mx.mixup_linear_cross_entropy(hk, wk, *windows(c), bias=bk, policy=policy), None)
        assert torch.equal(zk.grad[~keep], torch.zeros_like(zk.grad[~keep]))
        assert torch.equal(hk.grad[~keep], torch.zeros_like(hk.grad[~keep]))
        assert zk.grad[keep].abs().sum() > 0 and hk.grad[keep].abs().sum() > 0


def test_a_only_policy_follows_a():
    # Row 4 (a fully padded) is dropped under a-only, kept (b only) under union.
    c = make_case(seed=46)
    z, _ = ce_inputs(seed=46)
    w = torch.randn(16, 8, dtype=torch.float64)
    u = mx.mixup_cross_entropy(z, *windows(c), policy="union", reduction="none")
    a = mx.mixup_cross_entropy(z, *windows(c), policy="a-only", reduction="none")
    assert (u[4] > 0).all() and torch.equal(a[4], torch.zeros(7, dtype=torch.float64))
    hu = mx.mix_embeddings(w, *windows(c), policy="union")
    ha = mx.mix_embeddings(w, *windows(c), policy="a-only")
    assert torch.equal(ha[4], torch.zeros(7, 8, dtype=torch.float64))
    assert_close(hu[4], F.embedding(c["xb"][4, :-1], w), 1e-15)
    # Row 1 (a shorter than b): under a-only, steps whose a target is padding are dropped.
    assert torch.equal(a[1, 3:], torch.zeros(4, dtype=torch.float64)) and (u[1, 3:] > 0).all()


# ---- float extremes ----


def test_huge_logits_in_fp32():
    c = make_case(seed=50)
    z, g = ce_inputs(torch.float32, seed=50)
    z[z.abs() > 2] = torch.sign(z[z.abs() > 2]) * 1e4
    assert (z == 1e4).sum() > 10 and (z == -1e4).sum() > 10
    for eps in (0.0, 0.1):
        for red in REDUCTIONS:
            (zk,) = leaves(z)
            out = mx.mixup_cross_entropy(zk, *windows(c), reduction=red, label_smoothing=eps)
            backward(out, g.float())
            (zr,) = leaves(z.double())
            ref = oracles.mixup_reference_loss(zr, *windows(c), reduction=red, label_smoothing=eps)
            backward(ref, g)
            assert torch.isfinite(out).all() and torch.isfinite(zk.grad).all()
            assert_close(out, ref, 1e-5)
            assert_close(zk.grad, zr.grad, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_minus_infinity_logit_that_is_not_a_target(dtype):
    c = make_case(seed=51)
    z, g = ce_inputs(dtype, seed=51)
    _, _, a_ok, b_ok, _, keep = oracles.mixup_targets(*windows(c))
    ya, yb = c["xa"][:, 1:], c["xb"][:, 1:]
    hit = 0
    for b in range(6):
        for t in range(7):
            for v in range(16):
                if (
                    not (a_ok[b, t] and ya[b, t] == v)
                    and not (b_ok[b, t] and yb[b, t] == v)
                    and (b + t + v) % 3 == 0
                ):
                    z[b, t, v] = -math.inf
                    hit += 1
    assert hit > 100
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    for red in REDUCTIONS:
        (zk,) = leaves(z)
        out = mx.mixup_cross_entropy(zk, *windows(c), reduction=red)
        backward(out, g.to(dtype))
        (zr,) = leaves(z.double())
        ref = oracles.mixup_reference_loss(zr, *windows(c), reduction=red)
        backward(ref, g)
        assert torch.isfinite(out).all() and torch.isfinite(zk.grad).all()
        assert_close(out, ref, rtol)
        assert_close(zk.grad, zr.grad, rtol)
        assert torch.equal(zk.grad[z == -math.inf], torch.zeros_like(zk.grad[z == -math.inf]))


def test_subnormal_embedding_weights_are_not_flushed():
    c = make_case(seed=52)
    tiny = torch.finfo(torch.float32).tiny  # 2^-126; below it float32 is subnormal
    w = torch.rand(16, 8, generator=torch.Generator().manual_seed(52)) * tiny * 0.5 + tiny * 0.01
    assert (w < tiny).all()
    (wk,) = leaves(w)
    h = mx.mix_embeddings(wk, *windows(c))
    truth = oracles.mixup_reference_embeddings(w.double(), *windows(c))
    ulp = 2.0**-149
    assert err(h, truth) <= 2 * ulp
    _, keep = oracles.mixup_effective_lambda(c["lam"], c["va"], c["vb"], "union")
    assert (h[keep[:, :-1]] != 0).any(dim=-1).all()
    g = torch.randn(6, 7, 8) * tiny  # and a subnormal upstream gradient
    h.backward(g)
    (wt,) = leaves(w.double())
    oracles.mixup_reference_embeddings(wt, *windows(c)).backward(g.double())
    assert_close(wk.grad, wt.grad, 1e-5)


def test_tiny_lambdas():
    # lambda 1e-30, 1e-40 (subnormal in float32) and 1 - 2^-24 (the float just below 1). To make
    # a weight of 1e-30 visible, b's inputs hit a zero row of the table and a's target logits sit
    # at -1000 (p = 0), so that h = lam E[xa] and dloss/dz[ya] = -omega g exactly.
    c = full_case(seed=53)
    xa = c["xa"] % 11 + 1  # ids 1..11
    xb = torch.zeros_like(xa)  # b's inputs and targets are id 0
    lam = torch.full(xa.shape, 1e-30)
    lam[:, 1::3] = 1e-40
    lam[:, ::3] = 1 - 2**-24
    assert (lam[:, 1::3] > 0).all() and (lam[:, 1::3] < torch.finfo(torch.float32).tiny).all()
    for dtype in (torch.float64, torch.float32):
        w = torch.randn(12, 5, dtype=dtype, generator=torch.Generator().manual_seed(53)) + 3
        w[0] = 0
        h = mx.mix_embeddings(w, xa, xb, lam)
        expect = lam[:, :-1, None].double() * w.double()[xa[:, :-1]]
        tol = (1e-15, 0.0) if dtype == torch.float64 else (1e-6, 2.0**-148)
        torch.testing.assert_close(h.double(), expect, rtol=tol[0], atol=tol[1])
        z, g = ce_inputs(dtype, B=4, T=6, V=12, seed=53)
        z.scatter_(-1, xa[:, 1:, None], -1000.0)
        (zk,) = leaves(z)
        out = mx.mixup_cross_entropy(zk, xa, xb, lam, reduction="none")
        backward(out, g.to(dtype))
        (zr,) = leaves(z.double())
        ref = oracles.mixup_reference_loss(zr, xa, xb, lam, reduction="none")
        backward(ref, g)
        rtol = 1e-12 if dtype == torch.float64 else 1e-5
        assert_close(out, ref, rtol)
        assert_close(zk.grad, zr.grad, rtol)
        d_a = zk.grad.gather(-1, xa[:, 1:, None]).squeeze(-1).double()
        expect_a = -lam[:, 1:].double() * g.to(dtype).double()
        torch.testing.assert_close(d_a, expect_a, rtol=tol[0] * 10, atol=tol[1])
    # a lambda of 1e-30 is not 0: a's id is read there and must be in range
    bad = xa.clone()
    bad[1, 2] = 12
    with pytest.raises(ValueError, match="xa"):
        mx.mix_embeddings(torch.randn(12, 5), bad, xb, lam)


# ---- determinism ----


def test_gradients_bitwise_equal_across_runs_and_thread_counts(threads):
    # V = 300 table rows (the backward shares rows out over threads, 64 or more each), 16 * 63
    # positions with repeated ids, so that every row of dW sums several terms.
    c = make_case(B=16, T=63, V=300, seed=60)
    w = torch.randn(300, 96, generator=torch.Generator().manual_seed(60))
    g = torch.randn(16, 63, 96, generator=torch.Generator().manual_seed(61))
    z, _ = ce_inputs(torch.float32, seed=62, B=16, T=63, V=300)
    hid, lw, lb, _ = linear_inputs(torch.float32, seed=63, B=16, T=63, V=300, D=32)
    runs = []
    for n in (2, 2, 1, 3):
        torch.set_num_threads(n)
        (wk,) = leaves(w)
        mx.mix_embeddings(wk, *windows(c)).backward(g)
        (zk,) = leaves(z)
        loss = mx.mixup_cross_entropy(zk, *windows(c), label_smoothing=0.1)
        loss.backward()
        hk, lwk, lbk = leaves(hid, lw, lb)
        lin = mx.mixup_linear_cross_entropy(hk, lwk, *windows(c), bias=lbk, chunk_size=100)
        lin.backward()
        runs.append([wk.grad, loss.detach(), zk.grad, lin.detach(), hk.grad, lwk.grad, lbk.grad])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


# ---- lambda sampling ----


@pytest.mark.parametrize("alpha", [0.1, 0.4, 1.0, 2.0])
def test_lambda_is_beta_distributed(alpha):
    n = 100_000
    lam = mx.sample_lambda((n,), alpha=alpha, seed=7)
    assert lam.dtype == torch.float32 and lam.shape == (n,) and lam.device.type == "cpu"
    x = lam.numpy()
    assert x.min() >= 0 and x.max() <= 1
    d = oracles.ks_statistic_float32(x, lambda v: oracles.beta_cdf_symmetric(v, alpha))
    assert d < KS_C / math.sqrt(n), (d, KS_C / math.sqrt(n))
    mean, var, mu4 = oracles.beta_symmetric_moments(alpha)
    x64 = x.astype(np.float64)
    assert abs(x64.mean() - mean) < Z_MAX * math.sqrt(var / n)
    assert abs(x64.var() - var) < Z_MAX * math.sqrt((mu4 - var * var) / n)
    # no correlation between neighbours in the flat stream, nor between rows of a [100, 1000] draw
    rows = x64.reshape(100, 1000)
    for u, v in ((x64[:-1], x64[1:]), (rows[:-1].ravel(), rows[1:].ravel())):
        r = np.corrcoef(u, v)[0, 1]
        assert abs(r) < Z_MAX / math.sqrt(u.size), r


@pytest.mark.parametrize("alpha", [0.1, 0.4, 2.0])
def test_dominant_lambda_is_the_upper_half(alpha):
    n = 100_000
    lam = mx.sample_lambda((n,), alpha=alpha, seed=8, dominant=True)
    plain = mx.sample_lambda((n,), alpha=alpha, seed=8)
    assert torch.equal(lam, torch.maximum(plain, 1 - plain))
    x = lam.numpy()
    assert x.min() >= 0.5 and x.max() <= 1
    d = oracles.ks_statistic_float32(x, lambda v: np.clip(2 * oracles.beta_cdf_symmetric(v, alpha) - 1, 0, 1))
    assert d < KS_C / math.sqrt(n), d


def test_lambda_streams_are_uncorrelated():
    n = 100_000
    base = mx.sample_lambda((n,), alpha=0.4, seed=9).double().numpy()
    for other in (
        mx.sample_lambda((n,), alpha=0.4, seed=9, stream=1),
        mx.sample_lambda((n,), alpha=0.4, seed=10),
    ):
        o = other.double().numpy()
        assert not np.array_equal(o, base)
        assert abs(np.corrcoef(base, o)[0, 1]) < Z_MAX / math.sqrt(n)


def test_lambda_depends_only_on_seed_stream_and_flat_index(threads):
    flat = mx.sample_lambda((400,), alpha=0.4, seed=3, stream=5)
    assert torch.equal(mx.sample_lambda((4, 100), alpha=0.4, seed=3, stream=5).reshape(-1), flat)
    assert torch.equal(mx.sample_lambda((2, 2, 100), alpha=0.4, seed=3, stream=5).reshape(-1), flat)
    assert torch.equal(mx.sample_lambda((1000,), alpha=0.4, seed=3, stream=5)[:400], flat)
    assert torch.equal(mx.sample_lambda((400,), alpha=0.4, seed=3, device="cpu", stream=5), flat)
    big = []
    for n in (1, 2):
        torch.set_num_threads(n)
        big.append(mx.sample_lambda((64, 1025), alpha=0.4, seed=3, stream=5).numpy().tobytes())
    assert big[0] == big[1]
    assert not torch.equal(mx.sample_lambda((400,), alpha=0.4, seed=4, stream=5), flat)
    assert not torch.equal(mx.sample_lambda((400,), alpha=0.4, seed=3, stream=6), flat)
    assert not torch.equal(mx.sample_lambda((400,), alpha=0.5, seed=3, stream=5), flat)


def test_lambda_stream_is_pinned():
    # Pins reproducibility: these bytes must never change (computed once from the implementation).
    lam = mx.sample_lambda((1000,), alpha=0.4, seed=1)
    digest = hashlib.sha256(lam.numpy().tobytes()).hexdigest()
    assert digest == "2b1e00daec037130ba815909b769cf7cb33bff7e0dcdb77135e46a52990988e6"


@pytest.mark.parametrize("alpha", [1e-3, 1e-6])
def test_tiny_alpha_is_a_fair_coin(alpha):
    n = 100_000
    x = mx.sample_lambda((n,), alpha=alpha, seed=11).numpy()
    assert set(np.unique(x).tolist()) == {0.0, 1.0}
    assert abs(x.mean() - 0.5) < Z_MAX * math.sqrt(0.25 / n)


# ---- bad input ----


def good_embed():
    c = make_case(B=3, T=5, V=9, seed=70)
    return dict(weight=torch.randn(9, 4), **c)


def _set(d, key, value):
    d = dict(d)
    d[key] = value
    return d


def _with(d, key, fn):
    d = dict(d)
    d[key] = fn(d[key].clone())
    return d


def _put(index, value):
    def fn(t):
        t[index] = value
        return t

    return fn


def embed_call(d):
    return mx.mix_embeddings(d["weight"], d["xa"], d["xb"], d["lam"], d["va"], d["vb"], **d.get("kw", {}))


# Row 0 of make_case(B=3) is full; lam[0, 1] is set to 0.5 so that both ids at (0, 1) are read.
def _norm(cases):
    """(name, inputs, exception, regex naming the tensor, value the message must show or None)."""
    return [pytest.param(*c, *([None] * (5 - len(c))), id=c[0]) for c in cases]


def _check_raises(call, d, exc, match, value):
    with pytest.raises(exc, match=match) as info:
        call(d)
    if value is not None:
        assert value in str(info.value).lower(), (value, str(info.value))


def _embed_bad_cases():
    base = good_embed()
    base["lam"][0, 1] = 0.5
    return _norm(
        [
            ("xa == V", _with(base, "xa", _put((0, 1), 9)), ValueError, "xa", "9"),
            ("xa negative", _with(base, "xa", _put((0, 1), -2)), ValueError, "xa", "-2"),
            ("xb == V", _with(base, "xb", _put((0, 1), 9)), ValueError, "xb", "9"),
            ("xb negative", _with(base, "xb", _put((0, 1), -100)), ValueError, "xb", "-100"),
            ("lam > 1", _with(base, "lam", _put((0, 2), 1.5)), ValueError, "lam", "1.5"),
            ("lam < 0", _with(base, "lam", _put((0, 2), -0.25)), ValueError, "lam", "-0.25"),
            ("lam NaN", _with(base, "lam", _put((0, 2), math.nan)), ValueError, "lam", "nan"),
            ("xb shape", _with(base, "xb", lambda t: t[:, :-1].contiguous()), ValueError, "xb"),
            ("lam shape", _with(base, "lam", lambda t: t[:2]), ValueError, "lam"),
            ("va shape", _with(base, "va", lambda t: t[:, 1:]), ValueError, "va"),
            ("vb shape", _with(base, "vb", lambda t: t[:2]), ValueError, "vb"),
            ("xa 1-D", _with(base, "xa", lambda t: t[0]), ValueError, "xa"),
            (
                "T + 1 < 2",
                {**base, **{k: base[k][:, :1] for k in ("xa", "xb", "lam", "va", "vb")}},
                ValueError,
                "xa",
            ),
            ("float ids", _with(base, "xa", lambda t: t.double()), TypeError, "xa"),
            ("int weight", _set(base, "weight", torch.ones(9, 4, dtype=torch.int64)), TypeError, "weight"),
            ("bad policy", _set(base, "kw", {"policy": "intersection"}), ValueError, "policy"),
        ]
    )


@pytest.mark.parametrize("name,d,exc,match,value", _embed_bad_cases())
def test_mix_embeddings_rejects_bad_input(name, d, exc, match, value):
    _check_raises(embed_call, d, exc, match, value)


def ce_call(d):
    return mx.mixup_cross_entropy(
        d["logits"], d["xa"], d["xb"], d["lam"], d["va"], d["vb"], **d.get("kw", {})
    )


def _ce_bad_cases():
    base = dict(logits=torch.randn(3, 5, 9), **make_case(B=3, T=5, V=9, seed=71))
    base["lam"][0, 5] = 0.5
    return _norm(
        [
            ("target xa == V", _with(base, "xa", _put((0, 5), 9)), ValueError, "xa", "9"),
            ("target xb negative", _with(base, "xb", _put((0, 5), -3)), ValueError, "xb", "-3"),
            ("logits T", _set(base, "logits", torch.randn(3, 6, 9)), ValueError, "logits"),
            ("logits B", _set(base, "logits", torch.randn(2, 5, 9)), ValueError, "logits"),
            ("lam NaN", _with(base, "lam", _put((1, 1), math.nan)), ValueError, "lam", "nan"),
            ("lam > 1", _with(base, "lam", _put((1, 1), 2.0)), ValueError, "lam", "2"),
            ("float ids", _with(base, "xb", lambda t: t.float()), TypeError, "xb"),
            ("int logits", _set(base, "logits", torch.ones(3, 5, 9, dtype=torch.int32)), TypeError, "logits"),
            ("bad reduction", _set(base, "kw", {"reduction": "avg"}), ValueError, "reduction"),
            ("bad target_lambda", _set(base, "kw", {"target_lambda": "next"}), ValueError, "target_lambda"),
            ("bad policy", _set(base, "kw", {"policy": "b-only"}), ValueError, "policy"),
            (
                "label_smoothing > 1",
                _set(base, "kw", {"label_smoothing": 1.5}),
                ValueError,
                "label_smoothing",
            ),
            (
                "label_smoothing < 0",
                _set(base, "kw", {"label_smoothing": -0.1}),
                ValueError,
                "label_smoothing",
            ),
        ]
    )


@pytest.mark.parametrize("name,d,exc,match,value", _ce_bad_cases())
def test_mixup_cross_entropy_rejects_bad_input(name, d, exc, match, value):
    _check_raises(ce_call, d, exc, match, value)


def linear_call(d):
    return mx.mixup_linear_cross_entropy(
        d["hidden"], d["weight"], d["xa"], d["xb"], d["lam"], d["va"], d["vb"], **d.get("kw", {})
    )


def _linear_bad_cases():
    base = dict(hidden=torch.randn(3, 5, 4), weight=torch.randn(9, 4), **make_case(B=3, T=5, V=9, seed=72))
    return _norm(
        [
            ("hidden D", _set(base, "hidden", torch.randn(3, 5, 6)), ValueError, "hidden|weight"),
            ("hidden T", _set(base, "hidden", torch.randn(3, 6, 4)), ValueError, "hidden"),
            ("bias shape", _set(base, "kw", {"bias": torch.randn(8)}), ValueError, "bias"),
            ("target xa == V", _with(base, "xa", _put((0, 5), 9)), ValueError, "xa", "9"),
            ("int weight", _set(base, "weight", torch.ones(9, 4, dtype=torch.int64)), TypeError, "weight"),
            ("float ids", _with(base, "xa", lambda t: t.double()), TypeError, "xa"),
            ("bad reduction", _set(base, "kw", {"reduction": "mean "}), ValueError, "reduction"),
            (
                "label_smoothing > 1",
                _set(base, "kw", {"label_smoothing": 2.0}),
                ValueError,
                "label_smoothing",
            ),
        ]
    )


@pytest.mark.parametrize("name,d,exc,match,value", _linear_bad_cases())
def test_mixup_linear_cross_entropy_rejects_bad_input(name, d, exc, match, value):
    _check_raises(linear_call, d, exc, match, value)


@pytest.mark.parametrize("alpha", [0.0, -1.0, math.nan, math.inf])
def test_sample_lambda_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        mx.sample_lambda((4,), alpha=alpha)


def test_ids_are_read_only_where_used():
    # Padding ids (-1, V, anything) and ids weighted by a lambda of exactly 0 or 1 are never read.
    c = make_case(B=3, T=5, V=9, seed=73)
    c["xa"][~c["va"]] = -12345
    c["xb"][~c["vb"]] = 10**9
    assert c["lam"][0, 2] == 0 and c["lam"][0, 3] == 1
    c["xa"][0, 2] = 9  # a's id at a lambda of 0: not read as input ...
    c["xb"][0, 3] = -5  # ... b's id at a lambda of 1: not read as input
    w = torch.randn(9, 4, dtype=torch.float64)
    for policy in POLICIES:
        h = mx.mix_embeddings(w, *windows(c), policy=policy)
        assert_close(h, oracles.mixup_reference_embeddings(w, *windows(c), policy=policy), 1e-15)
    # as targets they are read: a's 9 (the target of step 1) is out of range for the loss
    z = torch.randn(3, 5, 9, dtype=torch.float64)
    c["xb"][0, 3] = -100
    with pytest.raises(ValueError, match="xa"):
        mx.mixup_cross_entropy(z, *windows(c))
    c["xa"][0, 2] = -100
    for policy in POLICIES:
        out = mx.mixup_cross_entropy(z, *windows(c), policy=policy, reduction="none")
        assert_close(
            out, oracles.mixup_reference_loss(z, *windows(c), policy=policy, reduction="none"), 1e-12
        )


def test_accepted_input_forms():
    # int32 ids are converted, lam of another float dtype is rounded to float32, and
    # va = vb = None means all valid.
    c = make_case(B=3, T=5, V=9, seed=74)
    w = torch.randn(9, 4, dtype=torch.float64)
    z = torch.randn(3, 5, 9, dtype=torch.float64)
    h, w_, b = torch.randn(3, 5, 4, dtype=torch.float64), torch.randn(9, 4, dtype=torch.float64), None
    ops = [
        lambda *a: mx.mix_embeddings(w, *a),
        lambda *a: mx.mixup_cross_entropy(z, *a, reduction="none"),
        lambda *a: mx.mixup_linear_cross_entropy(h, w_, *a, bias=b, reduction="none"),
    ]
    xa, xb, lam, va, vb = windows(c)
    lam64 = lam.double() + 1e-12 * (lam > 0) * (lam < 1)  # rounds back to the same float32
    assert torch.equal(lam64.float(), lam) and not torch.equal(lam64, lam.double())
    full = torch.ones_like(va)
    ok_a, ok_b = xa.clamp_min(0), xb.clamp_min(0)
    ok_a[0, 2] = ok_b[0, 3] = 0
    for op in ops:
        expect = op(xa, xb, lam, va, vb)
        assert torch.equal(op(xa.int(), xb.int(), lam, va, vb), expect)
        assert torch.equal(op(xa, xb, lam64, va, vb), expect)
        assert torch.equal(op(ok_a, ok_b, lam, None, None), op(ok_a, ok_b, lam, full, full))
        assert torch.equal(op(ok_a, ok_b, lam, va, None), op(ok_a, ok_b, lam, va, full))
