"""The mixup operators under the ways training code misuses them.

Another thread writing to the id tensors while a kernel runs without the GIL, in-place changes
between forward and backward, autocast around the linear variant, double backward, and NaN
lambdas at padding. The reference is plain PyTorch (tests/oracles.py).
"""

from __future__ import annotations

import threading
import time

import pytest

torch = pytest.importorskip("torch")

import mixsieve as ms  # noqa: E402
from oracles import mixup_reference_loss  # noqa: E402


def test_ids_rewritten_by_another_thread_never_reach_the_kernel_out_of_range() -> None:
    vocab, dim, batch, width = 1000, 32, 32, 257
    table = torch.randn(vocab, dim)
    xa = torch.randint(0, vocab, (batch, width))
    xb = torch.randint(0, vocab, (batch, width))
    lam = torch.full((batch, width), 0.5)
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            xa[:, 1:-1:2] = 1 << 40  # out of range
            xa[:, 1:-1:2] = 5

    writer = threading.Thread(target=flip)
    writer.start()
    calls = errors = 0
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                ms.mixup.mix_embeddings(table, xa, xb, lam)
                calls += 1
            except ValueError as e:
                assert "outside [0, 1000)" in str(e)
                errors += 1
    finally:
        stop.set()
        writer.join()
    assert calls + errors > 0  # and the process is still alive


def test_in_place_changes_after_forward_do_not_change_the_gradients() -> None:
    g = torch.Generator().manual_seed(1)
    vocab, dim = 30, 8
    xa = torch.randint(0, vocab, (2, 7), generator=g)
    xb = torch.randint(0, vocab, (2, 7), generator=g)
    lam = torch.rand(2, 7, generator=g)
    table = torch.randn(vocab, dim, generator=g, requires_grad=True)
    upstream = torch.randn(2, 6, dim, generator=g)

    def grads(mutate: bool) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, lm = xa.clone(), xb.clone(), lam.clone()
        table.grad = None
        h = ms.mixup.mix_embeddings(table, a, b, lm)
        logits = torch.randn(2, 6, vocab, generator=torch.Generator().manual_seed(2), requires_grad=True)
        loss = ms.mixup.mixup_cross_entropy(logits, a, b, lm, reduction="sum")
        if mutate:
            a.zero_()
            b.fill_(3)
            lm.fill_(float("nan"))
        h.backward(upstream)
        loss.backward()
        assert table.grad is not None and logits.grad is not None
        return table.grad.clone(), logits.grad.clone()

    for clean, mutated in zip(grads(False), grads(True)):
        assert torch.equal(clean, mutated)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_variant_under_autocast_follows_autocast_and_backward_agrees(reduction: str) -> None:
    g = torch.Generator().manual_seed(3)
    batch, width, vocab, dim = 2, 6, 50, 16
    xa = torch.randint(0, vocab, (batch, width), generator=g)
    xb = torch.randint(0, vocab, (batch, width), generator=g)
    lam = torch.rand(batch, width, generator=g)
    hidden = (torch.randn(batch, width - 1, dim, generator=g) * 3).requires_grad_()
    head = torch.randn(vocab, dim, generator=g).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = ms.mixup.mixup_linear_cross_entropy(hidden, head, xa, xb, lam, reduction=reduction)
        logits = (hidden @ head.T).float()  # what autocast's F.linear computes
    ref = mixup_reference_loss(logits, xa, xb, lam, reduction=reduction)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-5)
    ours = torch.autograd.grad(loss.sum(), (hidden, head), retain_graph=True)
    again = torch.autograd.grad(loss.sum(), (hidden, head))  # recomputed in backward
    theirs = torch.autograd.grad(ref.sum(), (hidden, head))
    for a, b, c in zip(ours, again, theirs):
        assert a.dtype == torch.float32
        assert torch.equal(a, b)
        # both sides round the products to bfloat16 (8 bits): a few bf16 ulps apart
        assert ((a - c).norm() / c.norm()).item() < 2e-2


def test_mixed_dtypes_outside_autocast_are_refused() -> None:
    hidden = torch.randn(1, 2, 4, dtype=torch.bfloat16)
    ids = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(TypeError, match="hidden is torch.bfloat16 but weight is torch.float32"):
        ms.mixup.mixup_linear_cross_entropy(hidden, torch.randn(5, 4), ids, ids, torch.zeros(1, 3))


def test_double_backward_raises_instead_of_a_silent_constant() -> None:
    xa = torch.tensor([[1, 2, 3]])
    xb = torch.tensor([[3, 2, 1]])
    lam = torch.full((1, 3), 0.3)
    table = torch.randn(5, 4, requires_grad=True)
    logits = torch.randn(1, 2, 5, requires_grad=True)
    hidden = torch.randn(1, 2, 4, requires_grad=True)
    mx = ms.mixup
    cases = [
        ("mix_embeddings", lambda: mx.mix_embeddings(table, xa, xb, lam).sum(), table),
        ("mixup_cross_entropy", lambda: mx.mixup_cross_entropy(logits, xa, xb, lam), logits),
        ("mixup_linear_cross_entropy", lambda: mx.mixup_linear_cross_entropy(hidden, table, xa, xb, lam),
         hidden),
    ]  # fmt: skip
    for name, fn, wrt in cases:
        with pytest.raises(RuntimeError, match=f"{name} does not support double backward"):
            torch.autograd.grad(fn(), wrt, create_graph=True)
        (grad,) = torch.autograd.grad(fn(), wrt)  # the first-order gradient still works
        assert torch.isfinite(grad).all()


def test_nan_lambda_where_a_token_is_padding_is_not_used_and_not_refused() -> None:
    xa = torch.tensor([[1, 2, 3, 4]])
    xb = torch.tensor([[4, 3, 2, 1]])
    va = torch.tensor([[True, True, False, False]])
    lam = torch.tensor([[0.25, 0.75, float("nan"), float("nan")]])
    table = torch.randn(6, 3)
    h = ms.mixup.mix_embeddings(table, xa, xb, lam, va)
    assert torch.equal(h, ms.mixup.mix_embeddings(table, xa, xb, lam.nan_to_num(0.5), va))
    logits = torch.randn(1, 3, 6)
    loss = ms.mixup.mixup_cross_entropy(logits, xa, xb, lam, va)
    assert torch.equal(loss, ms.mixup.mixup_cross_entropy(logits, xa, xb, lam.nan_to_num(0.5), va))
    with pytest.raises(ValueError, match=r"lam\[0, 1\] = nan is outside \[0, 1\]"):
        ms.mixup.mixup_cross_entropy(logits, xa, xb, torch.tensor([[0.2, float("nan"), 0.1, 0.1]]), va)
