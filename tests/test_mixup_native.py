"""The arithmetic the mixup kernels share between CPU and CUDA, checked on the host.

The per-element functions of ``mixup_math.hpp`` (16-bit float conversions, the deterministic
log/exp of the lambda sampler, the softmax exp) run on the CPU here through test hooks and are
compared with PyTorch's conversions and with numpy's float64 log/exp. The two CPU paths of the
cross-entropy rows (baseline SSE2 and AVX2) must give the same bits.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mixsieve as ms  # noqa: E402
from mixsieve import _core  # noqa: E402


def _all_half_bits() -> np.ndarray:
    return np.arange(1 << 16, dtype=np.uint16)


@pytest.mark.parametrize("bf16", [True, False])
def test_half_to_float_matches_torch_on_every_bit_pattern(bf16: bool) -> None:
    bits = _all_half_bits()
    ours = _core._mixup_from_half(bits, bf16)
    dtype = torch.bfloat16 if bf16 else torch.float16
    ref = torch.from_numpy(bits.view(np.int16)).view(dtype).float().numpy()
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(ours), nan)
    assert np.array_equal(ours[~nan].view(np.uint32), ref[~nan].view(np.uint32))


def _float_cases(rng: np.random.Generator) -> np.ndarray:
    """Random bit patterns (every exponent, subnormals), the half formats' edges and specials."""
    random_bits = rng.integers(0, 1 << 32, 400_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65519.99, 65520.0, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8,
         1e-45, 3.4028235e38, 3.3961776e38, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-11, 1.0 + 3 * 2**-11],
        dtype=np.float32,
    )  # fmt: skip
    # values halfway between neighbouring half / bfloat16 numbers exercise round-to-even
    halves = (np.arange(1, 1 << 15, 7, dtype=np.uint32) << 13 | (1 << 12)).view(np.float32)
    bhalves = (np.arange(1, 1 << 15, 7, dtype=np.uint32) << 16 | (1 << 15)).view(np.float32)
    return np.concatenate([random_bits, edges, -edges, halves, bhalves])


@pytest.mark.parametrize("bf16", [True, False])
def test_float_to_half_rounds_like_torch(bf16: bool) -> None:
    x = _float_cases(np.random.default_rng(7))
    ours = _core._mixup_to_half(x, bf16)
    dtype = torch.bfloat16 if bf16 else torch.float16
    ref = torch.from_numpy(x).to(dtype).view(torch.int16).numpy().view(np.uint16)
    back = torch.from_numpy(ref.view(np.int16)).view(dtype).float().numpy()
    nan = np.isnan(back)
    assert np.array_equal(np.isnan(_core._mixup_from_half(ours, bf16)), nan)
    mismatch = np.flatnonzero((ours != ref) & ~nan)
    assert mismatch.size == 0, f"{mismatch.size} values differ, first {x[mismatch[:5]]}"


def _ulp_error(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.abs(ours - ref) / np.spacing(np.abs(ref))


def test_deterministic_log_within_two_ulps() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate(
        [
            np.exp(rng.uniform(-700, 700, 200_000)),
            rng.uniform(0.5, 2.0, 100_000),
            np.array([5e-324, 1e-310, 2.2250738585072014e-308, 1.0, 2.0, np.sqrt(2), 1.7976931348623157e308]),
        ]
    )
    ours = _core._mixup_math("log", x)
    ref = np.log(x)
    err = _ulp_error(ours, ref)[ref != 0]
    assert err.max() <= 2.0, err.max()
    assert _core._mixup_math("log", np.array([1.0]))[0] == 0.0


def test_deterministic_exp_within_two_ulps_and_its_limits() -> None:
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.uniform(-700, 700, 200_000), rng.uniform(-1, 1, 100_000)])
    ours = _core._mixup_math("exp", x)
    err = _ulp_error(ours, np.exp(x))
    assert err.max() <= 2.0, err.max()
    edge = _core._mixup_math("exp", np.array([-800.0, 800.0, 0.0, np.nan]))
    assert edge[0] == 0.0 and edge[1] == np.inf and edge[2] == 1.0 and np.isnan(edge[3])
    # the subnormal range is reached, not flushed
    assert 0 < _core._mixup_math("exp", np.array([-740.0]))[0] < 1e-300


def test_softmax_exp_accuracy_and_limits() -> None:
    x = np.linspace(-86.4, 88.6, 400_001, dtype=np.float32).astype(np.float64)
    ours = _core._mixup_math("expf", x)
    rel = np.abs(ours - np.exp(x)) / np.exp(x)
    assert rel.max() < 4e-7, rel.max()  # about 3 float32 ulps
    edge = _core._mixup_math("expf", np.array([-87.0, -np.inf, 89.0, np.inf, 0.0]))
    assert list(edge) == [0.0, 0.0, np.inf, np.inf, 1.0]


def _ce_run(dtype: torch.dtype, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    b, t = 3, 9
    z = (torch.randn(b, t, vocab, generator=g) * 4).to(dtype).requires_grad_()
    xa = torch.randint(0, vocab, (b, t + 1), generator=g)
    xb = torch.randint(0, vocab, (b, t + 1), generator=g)
    lam = ms.mixup.sample_lambda((b, t + 1), seed=5)
    loss = ms.mixup.mixup_cross_entropy(z, xa, xb, lam, label_smoothing=0.1, reduction="none")
    loss.backward(torch.rand(b, t, generator=g))
    assert z.grad is not None
    return loss.detach(), z.grad


@pytest.mark.parametrize("isa", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("vocab", [16, 1000, 32003])
def test_cross_entropy_baseline_avx2_and_avx512_paths_give_the_same_bits(
    isa: int, dtype: torch.dtype, vocab: int
) -> None:
    old = _core._mixup_force_isa(isa)
    try:
        if _core._mixup_isa() != isa:
            pytest.skip(f"the CPU has no {('AVX2', 'AVX-512')[isa - 1]}")
        wide = _ce_run(dtype, vocab)
        _core._mixup_force_isa(0)
        assert _core._mixup_isa() == 0
        base = _ce_run(dtype, vocab)
    finally:
        _core._mixup_force_isa(old)
    bits = torch.int16 if dtype != torch.float32 else torch.int32
    for a, b in zip(base, wide):
        assert torch.equal(a.view(torch.int32 if a.dtype == torch.float32 else bits), b.view(
            torch.int32 if b.dtype == torch.float32 else bits))  # fmt: skip


def test_force_isa_rejects_unknown_levels() -> None:
    with pytest.raises(ValueError, match="isa must be"):
        _core._mixup_force_isa(3)


def test_mixsieve_imports_without_torch_and_mixup_says_how_to_get_it() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked")
sys.meta_path.insert(0, Block())
import mixsieve as ms
assert ms.mixup.TokenMixupCollator is not None
try:
    ms.mixup.sample_lambda(3)
except ImportError as e:
    print(e)
assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
"""
    package = Path(ms.__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=package, check=True, timeout=120
    ).stdout
    assert "pip install 'mixsieve[torch]'" in out
