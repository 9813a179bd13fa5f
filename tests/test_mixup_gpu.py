"""The CUDA mixup kernels (mixsieve._core_cuda) against the CPU kernels.

Compares ``ms.mixup.*`` on CUDA tensors with the same call on CPU tensors (the CPU kernels are
checked against the spec's PyTorch reference elsewhere): lambdas bitwise; mixed embeddings
bitwise in all four dtypes; the deterministic embedding gradient bitwise (equal to the CPU's
and across runs); the atomic one to rounding; the cross-entropy (loss and logit gradient) and
the linear variant to rounding. Bad ids and lambdas give NaN rows (the kernels never raise on
the device and never read out of bounds). Launches follow torch's current stream and do not
synchronise. The tests marked ``gpu`` are skipped without a CUDA device or without the CUDA
module; the others check, on any machine, that the backend explains what it lacks.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import mixsieve as ms  # noqa: E402
from mixsieve.info import build_info  # noqa: E402
from mixsieve.mixup import _cuda, _ops  # noqa: E402

OK, WHY = _cuda.available()
gpu = pytest.mark.skipif(not OK, reason=WHY)

FLOATS = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
INT_VIEW = {torch.float32: torch.int32, torch.float64: torch.int64, torch.bfloat16: torch.int16}
INT_VIEW[torch.float16] = torch.int16


def same_bytes(a: Any, b: Any) -> bool:
    a, b = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.view(INT_VIEW[a.dtype]), b.view(INT_VIEW[b.dtype]))
    )


def batch(b: int, t1: int, vocab: int, seed: int = 0, ignore: bool = False) -> dict[str, Any]:
    """Windows with right-padding on a (row 0), on b (row 1) and on both (row 2), lambdas of
    exactly 0 and 1 at a few tokens, repeated ids, and with ``ignore`` ignore_index (-100)
    targets in b (the CE tests: the embedding would read them as ids)."""
    g = torch.Generator().manual_seed(seed)
    xa = torch.randint(0, vocab, (b, t1), generator=g)
    xb = torch.randint(0, vocab, (b, t1), generator=g)
    lam = ms.mixup.sample_lambda((b, t1), alpha=0.4, seed=seed)
    lam[:, 1] = 1.0
    lam[:, 2] = 0.0
    va = torch.ones(b, t1, dtype=torch.bool)
    vb = torch.ones(b, t1, dtype=torch.bool)
    va[0, t1 // 2 :] = False
    vb[1 % b, t1 // 3 :] = False
    va[2 % b, -2:] = False
    vb[2 % b, -3:] = False
    xa[:, 3] = xb[:, 3]  # the same token on both sides
    if ignore:
        xb[:, 4] = -100
    return {"xa": xa, "xb": xb, "lam": lam, "va": va, "vb": vb}


def to(d: dict[str, Any], device: str) -> dict[str, Any]:
    return {k: v.to(device) for k, v in d.items()}


@pytest.fixture
def deterministic() -> Iterator[None]:
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture
def nondeterministic() -> Iterator[None]:
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    yield
    torch.use_deterministic_algorithms(before)


# ---------------------------------------------------------------------------------------------
# Any machine


def test_available_says_what_is_missing() -> None:
    ok, why = _cuda.available()
    assert isinstance(ok, bool) and why
    if ok:
        assert "device(s)" in why
        return
    missing = ("mixsieve was built without CUDA: install nvcc", "no CUDA device")
    assert why.startswith(missing), why
    with pytest.raises(RuntimeError, match="cannot run on cuda"):
        _ops.kernels(torch.device("cuda"))


def test_build_info_reports_cuda() -> None:
    cuda = build_info()["cuda"]
    assert cuda.startswith("yes (architectures") or cuda == "no (built without a CUDA compiler)", cuda
    if cuda.startswith("yes"):  # every kernel family of the module is named
        for kernel in ("mixup", "minhash", "weighted_sample", "soft_cap"):
            assert kernel in cuda, cuda


def test_native_argument_checks_need_no_device() -> None:
    native = pytest.importorskip("mixsieve._core_cuda")
    fake = 1 << 20  # never dereferenced: the checks run before any launch
    with pytest.raises(ValueError, match="T \\+ 1 >= 2"):
        native.mixup_embed_forward(fake, 0, 10, 4, fake, fake, fake, 0, 0, 2, 1, 0, fake, 0)
    with pytest.raises(ValueError, match="float dtype code"):
        native.mixup_embed_forward(fake, 7, 10, 4, fake, fake, fake, 0, 0, 2, 3, 0, fake, 0)
    with pytest.raises(ValueError, match="alpha"):
        native.mixup_lambda(fake, 4, 0.0, 0, 0, False, 0)
    with pytest.raises(ValueError, match="outside the batch"):
        native.mixup_ce(fake, 0, 0, 9, 10, fake, fake, fake, 0, 0, 2, 3, 0, True, -100, 0.0,
                        fake, fake, fake, 0, 0, 0)  # fmt: skip
    count, error = native.device_count()
    assert count > 0 or error


# ---------------------------------------------------------------------------------------------
# Lambdas


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("alpha", [5e-4, 0.1, 0.4, 1.0, 2.0, 7.5])
@pytest.mark.parametrize("dominant", [False, True])
def test_lambda_same_bytes_as_cpu(alpha: float, dominant: bool) -> None:
    cpu = ms.mixup.sample_lambda((37, 129), alpha=alpha, seed=3, stream=5, dominant=dominant)
    dev = ms.mixup.sample_lambda((37, 129), alpha=alpha, seed=3, stream=5, dominant=dominant, device="cuda")
    assert dev.device.type == "cuda"
    assert same_bytes(cpu, dev)
    flat = ms.mixup.sample_lambda(37 * 129, alpha=alpha, seed=3, stream=5, dominant=dominant, device="cuda")
    assert same_bytes(flat.view(37, 129), dev)


# ---------------------------------------------------------------------------------------------
# Mixed embeddings


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("dim", [64, 33, 1100])  # 16-byte packs, scalar path, several sweeps
@pytest.mark.parametrize("policy", ["union", "a-only"])
def test_embed_forward_same_bytes_as_cpu(dtype: Any, dim: int, policy: str) -> None:
    # bitwise: the CUDA file is built with --fmad=false and the CPU for baseline x86-64 (no FMA)
    d = batch(5, 40, 97)
    weight = torch.randn(97, dim, generator=torch.Generator().manual_seed(1)).to(dtype)
    cpu = ms.mixup.mix_embeddings(weight, **d, policy=policy)
    dev = ms.mixup.mix_embeddings(weight.cuda(), **to(d, "cuda"), policy=policy)
    assert dev.dtype == dtype and dev.device.type == "cuda"
    assert same_bytes(cpu, dev)


def _embed_grad(weight: Any, d: dict[str, Any], g: Any, policy: str = "union") -> Any:
    w = weight.detach().clone().requires_grad_(True)
    ms.mixup.mix_embeddings(w, **d, policy=policy).backward(g)
    return w.grad


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("policy", ["union", "a-only"])
def test_embed_backward_deterministic_same_bytes_as_cpu(dtype: Any, policy: str, deterministic: None) -> None:
    gen = torch.Generator().manual_seed(2)
    d = batch(6, 50, 31)  # 31 rows for 588 contributions: long segments
    weight = torch.randn(31, 72, generator=gen).to(dtype)
    g = torch.randn(6, 49, 72, generator=gen).to(dtype)
    cpu = _embed_grad(weight, d, g, policy)
    dev1 = _embed_grad(weight.cuda(), to(d, "cuda"), g.cuda(), policy)
    dev2 = _embed_grad(weight.cuda(), to(d, "cuda"), g.cuda(), policy)
    assert same_bytes(dev1, dev2)
    assert same_bytes(cpu, dev1)  # summed in the CPU's (position, side) order


@pytest.mark.gpu
@gpu
def test_embed_backward_one_hot_row_and_wide_dim(deterministic: None) -> None:
    # every contribution on one row (several tiles of 256) and D above one sweep of 1024
    d = batch(4, 300, 50)
    d["xa"][:] = 7
    d["xb"][:] = 7
    weight = torch.randn(50, 1100, generator=torch.Generator().manual_seed(3))
    g = torch.randn(4, 299, 1100, generator=torch.Generator().manual_seed(4))
    cpu = _embed_grad(weight, d, g)
    dev = _embed_grad(weight.cuda(), to(d, "cuda"), g.cuda())
    assert same_bytes(cpu, dev)
    assert torch.count_nonzero(dev[torch.arange(50) != 7]) == 0


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", FLOATS)
def test_embed_backward_atomic_close_to_cpu(dtype: Any, nondeterministic: None) -> None:
    gen = torch.Generator().manual_seed(5)
    d = batch(6, 50, 31)
    weight = torch.randn(31, 72, generator=gen).to(dtype)
    g = torch.randn(6, 49, 72, generator=gen).to(dtype)
    cpu = _embed_grad(weight, d, g)
    dev = _embed_grad(weight.cuda(), to(d, "cuda"), g.cuda())
    tol = {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 1e-2)
    torch.testing.assert_close(dev.cpu().double(), cpu.double(), rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------------
# Cross-entropy


def _ce(logits: Any, d: dict[str, Any], **kw: Any) -> tuple[Any, Any]:
    z = logits.detach().clone().requires_grad_(True)
    loss = ms.mixup.mixup_cross_entropy(z, **d, **kw)
    loss.backward(torch.ones_like(loss) if loss.dim() else None)
    return loss.detach(), z.grad


CE_TOL = {torch.float64: (1e-12, 1e-13), torch.float32: (1e-5, 1e-6)}


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("vocab", [50, 3000, 20000])  # 64, 256 and 512 threads per row
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_ce_close_to_cpu(dtype: Any, vocab: int, reduction: str) -> None:
    d = batch(3, 33, vocab, ignore=True)
    logits = (3 * torch.randn(3, 32, vocab, generator=torch.Generator().manual_seed(6))).to(dtype)
    kw = {"reduction": reduction, "label_smoothing": 0.1}
    loss_c, grad_c = _ce(logits, d, **kw)
    loss_g, grad_g = _ce(logits.cuda(), to(d, "cuda"), **kw)
    assert loss_g.dtype == loss_c.dtype and grad_g.dtype == dtype
    rtol, atol = CE_TOL.get(dtype, (1e-5, 1e-6))
    torch.testing.assert_close(loss_g.cpu(), loss_c, rtol=rtol, atol=atol)
    # 16-bit gradients: the float values agree to rounding, so at most one 16-bit ulp apart
    grtol, gatol = CE_TOL.get(dtype, (1e-2, 1e-5))
    torch.testing.assert_close(grad_g.cpu().double(), grad_c.double(), rtol=grtol, atol=gatol)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("policy", ["union", "a-only"])
@pytest.mark.parametrize("target_lambda", ["shifted", "same"])
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_ce_options_close_to_cpu(policy: str, target_lambda: str, reduction: str) -> None:
    d = batch(4, 21, 101, seed=7)
    d["xa"][3, 5] = 9  # ignore_index on both targets of one position, on one target of others
    d["xb"][3, 5] = 9
    d["xb"][:, 7] = 9
    logits = torch.randn(4, 20, 101, generator=torch.Generator().manual_seed(8))
    kw = {"policy": policy, "target_lambda": target_lambda, "reduction": reduction, "ignore_index": 9}
    loss_c, grad_c = _ce(logits, d, **kw)
    loss_g, grad_g = _ce(logits.cuda(), to(d, "cuda"), **kw)
    torch.testing.assert_close(loss_g.cpu(), loss_c, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_g.cpu(), grad_c, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@gpu
def test_ce_is_deterministic() -> None:
    d = to(batch(4, 65, 5000, ignore=True), "cuda")
    logits = torch.randn(4, 64, 5000, device="cuda")
    loss1, grad1 = _ce(logits, d, reduction="none")
    loss2, grad2 = _ce(logits, d, reduction="none")
    assert same_bytes(loss1, loss2) and same_bytes(grad1, grad2)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_ce_close_to_cpu(dtype: Any, reduction: str) -> None:
    gen = torch.Generator().manual_seed(9)
    d = batch(3, 41, 700, ignore=True)
    hidden = torch.randn(3, 40, 48, generator=gen).to(dtype)
    weight = (0.2 * torch.randn(700, 48, generator=gen)).to(dtype)
    bias = (0.1 * torch.randn(700, generator=gen)).to(dtype)

    def run(device: str) -> tuple[Any, ...]:
        # detach: on the CPU, .to() returns the tensor itself, whose flag must not leak to the next run
        h, w, b = (x.to(device).detach().requires_grad_(True) for x in (hidden, weight, bias))
        loss = ms.mixup.mixup_linear_cross_entropy(
            h, w, **to(d, device), bias=b, reduction=reduction, chunk_size=25, label_smoothing=0.05
        )
        loss.backward(torch.ones_like(loss) if loss.dim() else None)
        return loss.detach(), h.grad, w.grad, b.grad

    cpu, dev = run("cpu"), run("cuda")
    for c, g in zip(cpu, dev):
        g, c = g.cpu().double(), c.double()
        if dtype == torch.float32:
            torch.testing.assert_close(g, c, rtol=1e-4, atol=1e-5)
            continue
        # 16-bit on CUDA: the weight gradient's product takes the logit gradient rounded to
        # 16 bits (tensor cores, as eager's bf16 backward) where the CPU keeps it in float32, so
        # an element whose terms cancel can differ by several of its own ulps; the tensor as a
        # whole stays within a few bf16 roundings
        scale = c.abs().max().item()
        assert (g - c).norm().item() <= 1e-2 * c.norm().item(), "relative L2 error over 1%"
        torch.testing.assert_close(g, c, rtol=2e-2, atol=2e-2 * scale)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("det", [False, True])
def test_empty_batch(det: bool) -> None:
    # an empty tensor's data pointer may be null: nothing is launched, the table gradient is zero
    xa = torch.zeros(0, 5, dtype=torch.int64, device="cuda")
    lam = torch.zeros(0, 5, device="cuda")
    weight = torch.randn(7, 4, device="cuda", requires_grad=True)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(det)
    try:
        h = ms.mixup.mix_embeddings(weight, xa, xa, lam)
        h.sum().backward()
        logits = torch.zeros(0, 4, 7, device="cuda", requires_grad=True)
        loss = ms.mixup.mixup_cross_entropy(logits, xa, xa, lam, reduction="sum")
        loss.backward()
    finally:
        torch.use_deterministic_algorithms(before)
    assert h.shape == (0, 4, 4) and float(loss.detach()) == 0.0
    assert torch.count_nonzero(weight.grad) == 0


# ---------------------------------------------------------------------------------------------
# Bad values, streams, no host sync


@pytest.mark.gpu
@gpu
def test_bad_values_give_nan_rows_not_crashes() -> None:
    d = to(batch(2, 9, 20), "cuda")
    d["lam"][:] = 0.5
    d["va"][:] = True
    d["vb"][:] = True
    d["xa"][0, 2] = 20  # read (lam 0.5): out of range
    d["xb"][1, 4] = -3
    d["lam"][1, 6] = 1.5
    d["xa"][0, 8] = 1 << 40  # a target only
    w = _ops.Windows(d["xa"], d["xb"], d["lam"], d["va"], d["vb"], "union")
    ker = _cuda.CudaKernels(torch.device("cuda"))
    weight = torch.randn(20, 16, device="cuda")
    out = torch.empty(2, 8, 16, device="cuda")
    ker.embed_forward(weight, w, out)
    bad = torch.zeros(2, 8, dtype=torch.bool)
    bad[0, 2] = bad[1, 4] = bad[1, 6] = True
    rows_nan = out.isnan().all(-1).cpu()
    assert torch.equal(rows_nan, bad)
    assert torch.isfinite(out[~bad.cuda()]).all()

    logits = torch.randn(16, 20, device="cuda")
    loss, keep = torch.empty(16, device="cuda"), torch.empty(16, device="cuda")
    lse = torch.empty(16, 2, device="cuda")  # the row max and log sum exp(z - max)
    t = _ops.Targets(-100, 0.0, "none", "shifted")
    ker.ce(logits, 0, w, t, loss, lse, keep, None, logits)
    bad_loss = torch.zeros(16, dtype=torch.bool)
    bad_loss[1] = bad_loss[7] = True  # targets xa[0, 2] and xa[0, 8]
    bad_loss[8 + 3] = True  # target xb[1, 4]
    bad_loss[8 + 5] = bad_loss[8 + 6] = True  # lam[1, 6]: the target's, then the input's lambda
    assert torch.equal(loss.isnan().cpu(), bad_loss)
    assert torch.equal(logits.isnan().all(-1).cpu(), bad_loss)

    for det in (False, True):
        grad_weight = ker.embed_backward(torch.ones(2, 8, 16, device="cuda"), 20, w, det)
        assert grad_weight.shape == (20, 16) and torch.isfinite(grad_weight).all()
    torch.cuda.synchronize()


@pytest.mark.gpu
@gpu
def test_launches_follow_the_current_stream(deterministic: None) -> None:
    d = batch(4, 65, 300)
    weight = torch.randn(300, 128, generator=torch.Generator().manual_seed(10))
    expect = ms.mixup.mix_embeddings(weight, **d)
    expect_grad = _embed_grad(weight, d, torch.ones(4, 64, 128))
    side = torch.cuda.Stream()
    dd = to(d, "cuda")
    wd = weight.cuda()
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        got = ms.mixup.mix_embeddings(wd, **dd)
        got_grad = _embed_grad(wd, dd, torch.ones(4, 64, 128, device="cuda"))
    side.synchronize()
    assert same_bytes(expect, got) and same_bytes(expect_grad, got_grad)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("det", [False, True])
def test_no_host_sync(det: bool) -> None:
    d = to(batch(4, 33, 500), "cuda")
    weight = torch.randn(500, 64, device="cuda", requires_grad=True)
    logits = torch.randn(4, 32, 500, device="cuda", requires_grad=True)
    before = torch.are_deterministic_algorithms_enabled()
    torch.cuda.synchronize()
    try:
        with warnings.catch_warnings():
            # torch warns that the mode is a prototype; pytest turns warnings into errors
            warnings.simplefilter("ignore", UserWarning)
            torch.cuda.set_sync_debug_mode("error")
        torch.use_deterministic_algorithms(det)
        lam = ms.mixup.sample_lambda((4, 33), seed=1, device="cuda")
        h = ms.mixup.mix_embeddings(weight, d["xa"], d["xb"], lam, d["va"], d["vb"])
        # no matmul: cuBLAS refuses deterministic mode without CUBLAS_WORKSPACE_CONFIG
        loss = ms.mixup.mixup_cross_entropy(logits, d["xa"], d["xb"], lam, d["va"], d["vb"])
        (loss + (h * h).mean()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
        torch.use_deterministic_algorithms(before)
    assert torch.isfinite(weight.grad).all() and torch.isfinite(logits.grad).all()
