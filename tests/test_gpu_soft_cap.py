"""soft_cap_sample on CUDA against the CPU: the same counts and picks, byte for byte.

The CPU path is checked against FLYT's algorithm and exact enumeration in test_sampling.py and
test_soft_cap_limits.py; here the CUDA path must equal it for the same seed on random scores
(up to 10^6 examples: 16 segments of 65,536), several batch sizes and penalties, float32 and
float64, numpy and torch inputs, the direct path, reweighing (penalty * counts far past exp's
range), and give the CPU's errors. The tests marked ``gpu`` are skipped without a CUDA device
or without the CUDA module; the others check, on any machine, the ``device`` argument on the
CPU, the error that names what CUDA lacks, and the Python glue (pointers, sizes, flags, the
device buffers taken from torch's allocator and given back, read-only numpy scores) against
a stand-in for the native module that runs the CPU kernel.
"""

from __future__ import annotations

import contextlib
import ctypes
import warnings
from typing import Any

import mixsieve as ms
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mixsieve import _device, _soft_cap_cuda  # noqa: E402
from mixsieve.mixup import _cuda  # noqa: E402

OK, WHY = _cuda.available()
gpu = pytest.mark.skipif(not OK, reason=WHY)


def cpu_run(scores: Any, total: int, **kw: Any) -> np.ndarray:
    out: np.ndarray = ms.soft_cap_sample(scores, total, **kw)
    return out


def cuda_run(scores: Any, total: int, **kw: Any) -> np.ndarray:
    out = ms.soft_cap_sample(scores, total, device="cuda", **kw)
    assert isinstance(out, torch.Tensor) and out.device.type == "cuda" and out.dtype == torch.int64
    result: np.ndarray = out.cpu().numpy()
    return result


# ---- any machine ----


def test_device_none_and_cpu_are_the_cpu_path() -> None:
    s = np.random.default_rng(0).normal(0, 2, 3000)
    want = ms.soft_cap_sample(s, 500, penalty=0.2, batch_size=50, seed=3)
    assert isinstance(want, np.ndarray)
    for device in (None, "cpu", torch.device("cpu")):
        got = ms.soft_cap_sample(s, 500, penalty=0.2, batch_size=50, seed=3, device=device)
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, want)
    t = ms.soft_cap_sample(torch.from_numpy(s), 500, penalty=0.2, batch_size=50, seed=3)
    np.testing.assert_array_equal(t, want)


@pytest.mark.skipif(OK, reason="CUDA is available here")
def test_cuda_without_a_usable_device_names_what_is_missing() -> None:
    with pytest.raises(RuntimeError, match="device='cuda' cannot run here: "):
        ms.soft_cap_sample(np.zeros(10), 5, penalty=0.1, batch_size=2, seed=0, device="cuda")
    with pytest.raises(ValueError, match="device must be None, 'cpu', 'cuda'"):
        ms.soft_cap_sample(np.zeros(10), 5, penalty=0.1, batch_size=2, seed=0, device="tpu")


class HostNative:
    """Stands in for mixsieve._core_cuda: reads and writes through the pointers it is given,
    running the CPU kernel in between (so the glue's pointers, sizes and flags are checked),
    and takes scratch buffers from the given allocator, writing all of each, then gives them
    back, as the native call does."""

    calls: list[tuple[Any, ...]] = []

    def soft_cap_sample(self, scores: int, f32: bool, n: int, total: int, penalty: float, batch_size: int,
                        seed: int, counts: int, picks: int, cuda_stream: int, alloc: Any = None,
                        free: Any = None) -> None:  # fmt: skip
        HostNative.calls.append((f32, n, total, picks != 0))
        assert alloc is not None and free is not None, "the glue must pass torch's allocator"
        taken = [(alloc(size), size) for size in (8 * n, 1, 4096)]
        assert len({ptr for ptr, _ in taken}) == 3
        for ptr, size in taken:
            ctypes.memset(ptr, 0xAB, size)
        dtype = np.float32 if f32 else np.float64
        s = np.frombuffer((ctypes.c_char * (n * np.dtype(dtype).itemsize)).from_address(scores), dtype)
        c, p = ms._core.soft_cap_sample(s, total, penalty, batch_size, seed, 1, picks != 0)
        ctypes.memmove(counts, c.ctypes.data, c.nbytes)
        if picks:
            ctypes.memmove(picks, p.ctypes.data, p.nbytes)
        for ptr, _ in taken:
            free(ptr)


def test_cuda_glue_passes_pointers_sizes_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_device, "native", HostNative)
    monkeypatch.setattr(_device, "stream", lambda dev: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda dev: contextlib.nullcontext())
    host = torch.device("cpu")  # the "device" the glue allocates on
    s = np.random.default_rng(1).normal(0, 2, 20_000)
    kw = {"penalty": 0.25, "batch_size": 300, "seed": 8}
    for x in (s, s.astype(np.float32), torch.from_numpy(s), s.astype(np.float16), [1.0, 2.0] * 400):
        want = ms.soft_cap_sample(x, 1000, **kw)
        scores = _soft_cap_cuda.device_scores(x, host)
        got = _soft_cap_cuda.sample(scores, 1000, 0.25, 300, 8, False, host)
        np.testing.assert_array_equal(got.numpy(), want)
        picks = _soft_cap_cuda.sample(scores, 1000, 0.25, 300, 8, True, host)
        np.testing.assert_array_equal(picks.numpy(), ms.soft_cap_sample(x, 1000, return_indices=True, **kw))
    assert HostNative.calls[:2] == [(False, 20_000, 1000, False), (False, 20_000, 1000, True)]
    assert HostNative.calls[2][0] is True  # float32 stays float32
    assert HostNative.calls[6][0] is False  # float16 becomes float64
    with pytest.raises(TypeError, match="real numbers"):
        _soft_cap_cuda.device_scores(torch.zeros(3, dtype=torch.complex64), host)


def test_read_only_scores_upload_without_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.from_numpy warns on a read-only array ("not writable"), an error under the
    # project's filterwarnings; the upload only reads it. torch warns once per process, so
    # the warning is re-raised here on every such call, as the first one would.
    from_numpy = torch.from_numpy

    def warning_from_numpy(a: np.ndarray) -> Any:
        if not a.flags.writeable:
            warnings.warn("The given NumPy array is not writable", UserWarning, stacklevel=2)
        return from_numpy(a)

    monkeypatch.setattr(torch, "from_numpy", warning_from_numpy)
    for dtype in (np.float64, np.float32):
        s = np.random.default_rng(2).normal(0, 1, 1000).astype(dtype)
        s.setflags(write=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            t = _soft_cap_cuda.device_scores(s, torch.device("cpu"))
        np.testing.assert_array_equal(t.numpy(), s)


def test_torch_memory_hands_out_and_takes_back_tensors() -> None:
    memory = _soft_cap_cuda.TorchMemory(torch.device("cpu"))
    a, b = memory.alloc(100), memory.alloc(1)
    assert a != b and sorted(memory.held) == sorted([a, b])
    assert memory.held[a].numel() == 100 and memory.held[a].dtype == torch.uint8
    memory.free(a)
    memory.free(b)
    assert memory.held == {}


# ---- on a GPU ----

CASES = [  # n, total, batch, penalty, seed
    (1_000_000, 300_000, 100_000, 0.15, 1),
    (1_000_000, 50_000, 1_000, 0.5, 2),
    (200_003, 120_000, 30_000, 2.0, 3),
    (65_537, 20_000, 7, 0.3, 4),
    (5_000, 3_000, 1_000, 60.0, 5),  # reweighing
]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(("n", "total", "batch", "penalty", "seed"), CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_counts_and_picks_equal_the_cpu(
    n: int, total: int, batch: int, penalty: float, seed: int, dtype: Any
) -> None:
    s = np.random.default_rng(seed).normal(0.0, 2.5, n).astype(dtype)
    kw = {"penalty": penalty, "batch_size": batch, "seed": seed}
    want = cpu_run(s, total, **kw)
    np.testing.assert_array_equal(cuda_run(s, total, **kw), want)  # numpy in: uploaded
    on_gpu = torch.from_numpy(s).cuda()
    np.testing.assert_array_equal(cuda_run(on_gpu, total, **kw), want)  # read in place
    picks = cpu_run(s, total, return_indices=True, **kw)
    np.testing.assert_array_equal(cuda_run(on_gpu, total, return_indices=True, **kw), picks)
    np.testing.assert_array_equal(np.bincount(picks, minlength=n), want)


@pytest.mark.gpu
@gpu
def test_device_follows_the_scores() -> None:
    s = torch.randn(70_000, dtype=torch.float64, device="cuda")
    got = ms.soft_cap_sample(s, 5000, penalty=0.2, batch_size=500, seed=9)  # device=None: CUDA
    assert isinstance(got, torch.Tensor) and got.device == s.device
    host = ms.soft_cap_sample(s, 5000, penalty=0.2, batch_size=500, seed=9, device="cpu")
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(got.cpu().numpy(), host)
    cpu_tensor = ms.soft_cap_sample(s.cpu(), 5000, penalty=0.2, batch_size=500, seed=9, device="cuda")
    np.testing.assert_array_equal(cpu_tensor.cpu().numpy(), host)


@pytest.mark.gpu
@gpu
def test_converted_dtypes_equal_the_cpu() -> None:
    base = np.random.default_rng(6).normal(0, 1, 40_000)
    for arr in (base.astype(np.float16), np.round(base * 3).astype(np.int32), base.astype(">f8")):
        want = cpu_run(arr, 4000, penalty=0.3, batch_size=100, seed=1)
        np.testing.assert_array_equal(cuda_run(arr, 4000, penalty=0.3, batch_size=100, seed=1), want)
    t16 = torch.from_numpy(base.astype(np.float16)).cuda()
    want = cpu_run(base.astype(np.float16), 4000, penalty=0.3, batch_size=100, seed=1)
    np.testing.assert_array_equal(cuda_run(t16, 4000, penalty=0.3, batch_size=100, seed=1), want)


@pytest.mark.gpu
@gpu
def test_direct_path_reweighing_and_small_inputs() -> None:
    far = np.array([-15.0, 15.0, 0.0, 5.0, -5.0])  # batches nearly the population: direct keys
    for total, batch, penalty in [(80, 4, 0.1), (80, 5, 0.1), (8, 4, 0.7)]:
        for seed in range(5):
            kw = {"penalty": penalty, "batch_size": batch, "seed": seed}
            np.testing.assert_array_equal(cuda_run(far, total, **kw), cpu_run(far, total, **kw))
    sc = np.random.default_rng(0).normal(size=1000)
    for total, penalty, batch in [(1100, 100.0, 100), (2000, 60.0, 1000), (1500, 1e300, 250)]:
        kw = {"penalty": penalty, "batch_size": batch, "seed": 0, "return_indices": True}
        np.testing.assert_array_equal(cuda_run(sc, total, **kw), cpu_run(sc, total, **kw))
    for n in (1, 2, 16, 17):
        s = np.linspace(-1, 1, n)
        kw = {"penalty": 0.5, "batch_size": max(1, n // 2), "seed": n}
        np.testing.assert_array_equal(cuda_run(s, 3 * n, **kw), cpu_run(s, 3 * n, **kw))
    np.testing.assert_array_equal(
        cuda_run(sc, 0, penalty=0.5, batch_size=3, seed=0), np.zeros(1000, np.int64)
    )
    empty = ms.soft_cap_sample(sc, 0, penalty=0.5, batch_size=3, seed=0, return_indices=True, device="cuda")
    assert empty.shape == (0,) and empty.device.type == "cuda"


@pytest.mark.gpu
@gpu
def test_errors_are_the_cpus() -> None:
    bad = np.zeros(100_000)
    bad[[70_001, 99_000]] = [np.nan, np.inf]
    cases: list[tuple[Any, dict[str, Any]]] = [
        (bad, {"penalty": 0.1, "batch_size": 10, "total": 10}),
        (np.array([0.0, -800.0, -900.0]), {"penalty": 0.5, "batch_size": 2, "total": 2}),
        (np.zeros(3), {"penalty": 0.1, "batch_size": 5, "total": 10}),
        (np.zeros(3), {"penalty": -1.0, "batch_size": 1, "total": 1}),
        (np.zeros((2, 2)), {"penalty": 0.1, "batch_size": 1, "total": 1}),
    ]
    for scores, kw in cases:
        with pytest.raises(ValueError) as want:
            ms.soft_cap_sample(scores, seed=0, **kw)
        with pytest.raises(ValueError) as got:
            ms.soft_cap_sample(scores, seed=0, device="cuda", **kw)
        assert str(got.value) == str(want.value)
        if scores.ndim == 1:
            with pytest.raises(ValueError) as on_gpu:
                ms.soft_cap_sample(torch.from_numpy(scores).cuda(), seed=0, **kw)
            assert str(on_gpu.value) == str(want.value)
