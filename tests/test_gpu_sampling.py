"""``weighted_sample`` on CUDA (keyed A-Res, csrc/cuda/sampling.cu) against the CPU path.

The tests marked ``gpu`` compare ``weighted_sample(..., device="cuda")`` and CUDA tensor inputs
with the same call on the CPU, which is checked against oracles elsewhere: the same ids in the
same order and the same key bits, on random float32/float64 weights (n up to 3 million, k from
1 to 10**5), zeros, k = 0 and k = the number of positive weights, torch tensors (contiguous or
not, float16) and numpy inputs, on a side stream, on every path of the kernel (no floor, the
estimated floor, a floor too high, a buffer too small), and on weights whose keys leave the
double range (1e-320 .. 1e308), which the CUDA path hands to the CPU's wide keys. Errors (bad
weights, k too large) carry the CPU's messages. They are skipped without a CUDA device or
without the CUDA module. The other tests run anywhere: ``device=`` on the CPU side, and the
``RuntimeError`` that names what is missing for CUDA.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mixsieve as ms
import numpy as np
import pytest
from mixsieve import sampling
from mixsieve.mixup import _cuda

OK, WHY = _cuda.available()
gpu = pytest.mark.skipif(not OK, reason=WHY)


def lognormal(n: int, seed: int, dtype: Any = np.float64, zeros: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.lognormal(0.0, 2.0, n).astype(dtype)
    if zeros:
        w[rng.random(n) < zeros] = 0
    return w


def cpu(w: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    ids, keys = ms.weighted_sample(w, k, seed=seed, return_keys=True)
    return ids, keys


def assert_same(got: tuple[Any, Any], want: tuple[np.ndarray, np.ndarray]) -> None:
    ids, keys = got
    assert ids.device.type == "cuda" and keys.device.type == "cuda"
    ids_h, keys_h = ids.cpu().numpy(), keys.cpu().numpy()
    assert ids_h.dtype == np.int64 and keys_h.dtype == np.float64
    np.testing.assert_array_equal(ids_h, want[0])
    np.testing.assert_array_equal(keys_h.view(np.int64), want[1].view(np.int64))  # bit for bit


# ---------------------------------------------------------------------------------------------
# Anywhere: the CPU side of device=, and what CUDA lacks here


def test_device_cuda_says_what_is_missing() -> None:
    if OK:
        pytest.skip("CUDA can run here")
    with pytest.raises(RuntimeError, match=r"^device='cuda' cannot run here: "):
        ms.weighted_sample(np.ones(4), 2, seed=0, device="cuda")
    with pytest.raises(ValueError, match="device must be None, 'cpu', 'cuda'"):
        ms.weighted_sample(np.ones(4), 2, seed=0, device="tpu")


def test_device_cpu_and_none_are_the_cpu_path() -> None:
    w = lognormal(5000, 1, zeros=0.2)
    ids, keys = cpu(w, 300, 9)
    for device in (None, "cpu"):
        i2, k2 = ms.weighted_sample(w, 300, seed=9, return_keys=True, device=device)
        assert isinstance(i2, np.ndarray)
        np.testing.assert_array_equal(i2, ids)
        np.testing.assert_array_equal(k2.view(np.int64), keys.view(np.int64))
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(w)
    for device in (None, "cpu", torch.device("cpu")):
        i3 = ms.weighted_sample(t, 300, seed=9, device=device)
        assert isinstance(i3, np.ndarray)
        np.testing.assert_array_equal(i3, ids)


def test_native_argument_checks_need_no_device() -> None:
    native = pytest.importorskip("mixsieve._core_cuda")
    with pytest.raises(ValueError, match="k must be >= 0"):
        native.ares_sample(0, False, 0, -1, 0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="weights must be given"):
        native.ares_sample(0, False, 10, 1, 0, 8, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="ids_out must be given"):
        native.ares_sample(8, False, 10, 1, 0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="mode must be"):
        native.ares_sample(8, False, 10, 1, 0, 8, 0, 0, 0, 0, mode=3)
    with pytest.raises(ValueError, match="n and k must be >= 0"):
        native.ares_workspace_bytes(-1, 0)
    # nothing to do: no device needed
    info = native.ares_sample(0, True, 0, 0, 0, 0, 0, 0, 0, 0)
    assert info["done"] and info["positive"] == 0
    assert native.ares_workspace_bytes(0, 5) > 0  # the counters only
    with pytest.raises(ValueError, match=r"^k=2 exceeds the 0 items with positive weight"):
        native.ares_sample(0, True, 0, 2, 0, 8, 0, 0, 0, 0)


# ---------------------------------------------------------------------------------------------
# On a GPU


@pytest.fixture
def tuning() -> Iterator[dict[str, Any]]:
    """Forces paths of the CUDA kernel (sampling._CUDA_TUNING) for one test."""
    saved = dict(sampling._CUDA_TUNING)
    yield sampling._CUDA_TUNING
    sampling._CUDA_TUNING.clear()
    sampling._CUDA_TUNING.update(saved)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    ("n", "k"),
    [(1, 1), (1000, 1), (1000, 1000), (100_003, 1), (100_003, 2048), (1_000_000, 10**5), (3_000_017, 10**5)],
)
def test_same_sample_as_cpu(dtype: Any, n: int, k: int) -> None:
    torch = pytest.importorskip("torch")
    w = lognormal(n, n, dtype, zeros=0.1)
    k = min(k, int((w > 0).sum()))
    for seed in (0, 2**64 - 1):
        want = cpu(w, k, seed)
        assert_same(ms.weighted_sample(torch.from_numpy(w).cuda(), k, seed=seed, return_keys=True), want)
        assert_same(ms.weighted_sample(w, k, seed=seed, return_keys=True, device="cuda"), want)
    ids = ms.weighted_sample(torch.from_numpy(w).cuda(), k, seed=5)
    assert ids.device.type == "cuda" and ids.dtype == torch.int64
    np.testing.assert_array_equal(ids.cpu().numpy(), cpu(w, k, 5)[0])


@pytest.mark.gpu
@gpu
def test_inputs_streams_and_devices() -> None:
    torch = pytest.importorskip("torch")
    w = lognormal(200_001, 3)
    want = cpu(w, 5000, 4)
    t = torch.from_numpy(np.repeat(w, 2)).cuda()[::2]  # not contiguous
    assert_same(ms.weighted_sample(t, 5000, seed=4, return_keys=True), want)
    assert_same(
        ms.weighted_sample(torch.from_numpy(w), 5000, seed=4, return_keys=True, device="cuda:0"), want
    )
    assert_same(ms.weighted_sample(w, 5000, seed=4, return_keys=True, device=torch.device("cuda")), want)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        got = ms.weighted_sample(torch.from_numpy(w).cuda(), 5000, seed=4, return_keys=True)
    side.synchronize()
    assert_same(got, want)
    # device="cpu" copies a CUDA tensor to the host and returns numpy
    ids = ms.weighted_sample(torch.from_numpy(w).cuda(), 5000, seed=4, device="cpu")
    assert isinstance(ids, np.ndarray)
    np.testing.assert_array_equal(ids, want[0])
    # float16 and integer tensors are converted to float64, as numpy inputs are
    h = (np.arange(1, 3001) % 97).astype(np.float16)
    assert_same(ms.weighted_sample(torch.from_numpy(h).cuda(), 50, seed=1, return_keys=True), cpu(h, 50, 1))
    i = np.arange(0, 3000) % 13
    assert_same(ms.weighted_sample(torch.from_numpy(i).cuda(), 50, seed=1, return_keys=True), cpu(i, 50, 1))


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_zeros_and_edges(dtype: Any) -> None:
    torch = pytest.importorskip("torch")
    w = lognormal(70_000, 8, dtype, zeros=0.5)
    pos = int((w > 0).sum())
    t = torch.from_numpy(w).cuda()
    for k in (0, 1, pos):
        assert_same(ms.weighted_sample(t, k, seed=3, return_keys=True), cpu(w, k, 3))
    with pytest.raises(ValueError) as want:
        ms.weighted_sample(w, pos + 1, seed=3)
    with pytest.raises(ValueError) as got:
        ms.weighted_sample(t, pos + 1, seed=3)
    assert str(got.value) == str(want.value)
    empty = torch.zeros(0, dtype=torch.float64, device="cuda")
    assert ms.weighted_sample(empty, 0, seed=1).numel() == 0
    ones = np.ones(5000, dtype)
    assert_same(ms.weighted_sample(ones, 5000, seed=2, return_keys=True, device="cuda"), cpu(ones, 5000, 2))


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bad_weights_same_errors(dtype: Any) -> None:
    torch = pytest.importorskip("torch")
    w = lognormal(300_000, 2, dtype)
    for at, value in ((299_999, -1.0), (150_000, np.nan), (7, np.inf), (123_456, -np.inf)):
        w[at] = value
        for k in (0, 10, 10**6):
            with pytest.raises(ValueError) as want:
                ms.weighted_sample(w, k, seed=1)
            with pytest.raises(ValueError) as got:
                ms.weighted_sample(torch.from_numpy(w).cuda(), k, seed=1)
            assert str(got.value) == str(want.value)
            first = int(np.flatnonzero(~(np.isfinite(w) & (w >= 0)))[0])
            assert str(got.value).startswith(f"weights[{first}] = ")


@pytest.mark.gpu
@gpu
def test_out_of_range_weights_fall_back_exactly() -> None:
    torch = pytest.importorskip("torch")
    native = pytest.importorskip("mixsieve._core_cuda")
    rng = np.random.default_rng(0)
    w = 10.0 ** rng.uniform(-320, 308, 100_000)
    for k in (1, 100, 5000, 100_000):
        assert_same(ms.weighted_sample(w, k, seed=6, return_keys=True, device="cuda"), cpu(w, k, 6))
    t = torch.from_numpy(w).cuda()
    ids = torch.empty(5, dtype=torch.int64, device="cuda")
    info = native.ares_sample(t.data_ptr(), False, t.numel(), 5, 6, ids.data_ptr(), 0, 0, 0,
                              torch.cuda.current_stream().cuda_stream)  # fmt: skip
    assert not info["done"]  # the CPU path ran
    doc = np.array([1e-320, 1.0, 1e308])
    assert ms.weighted_sample(doc, 3, seed=0, device="cuda").tolist() == [2, 1, 0]
    # In range: f32 extremes and subnormal doubles that leave enough normal keys.
    f = lognormal(100_000, 1, np.float32)
    f[[3, 5, 7]] = [
        np.finfo(np.float32).smallest_subnormal,
        np.finfo(np.float32).max,
        np.finfo(np.float32).tiny,
    ]
    for k in (1, 1000):
        assert_same(ms.weighted_sample(f, k, seed=2, return_keys=True, device="cuda"), cpu(f, k, 2))


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(
    "force",
    [
        {"mode": 1},  # no floor: every key, one sort
        {"mode": 2, "min_candidates": 2048},  # the estimated floor on a small input
        {"mode": 2, "use_floor": True, "floor": -1e-300},  # a floor above every key: retried without
        {"mode": 2, "use_floor": True, "floor": -0.5, "capacity": 100},  # buffer too small: retried
        {"mode": 2, "use_floor": True, "floor": -1e300, "capacity": 100},  # floor too low: no floor
    ],
)
def test_every_path_same_sample(force: dict[str, Any], tuning: dict[str, Any]) -> None:
    w = lognormal(250_000, 4, zeros=0.3)
    want = {k: cpu(w, k, 8) for k in (1, 1000, 20_000)}
    tuning.update(force)
    for k, expected in want.items():
        assert_same(ms.weighted_sample(w, k, seed=8, return_keys=True, device="cuda"), expected)


@pytest.mark.gpu
@gpu
def test_scan_paths_reported() -> None:
    torch = pytest.importorskip("torch")
    native = pytest.importorskip("mixsieve._core_cuda")
    t = torch.from_numpy(lognormal(4_000_000, 5)).cuda()
    k = 10**5
    ids = torch.empty(k, dtype=torch.int64, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    size = native.ares_workspace_bytes(t.numel(), k)
    ws = torch.empty(size, dtype=torch.uint8, device="cuda")
    info = native.ares_sample(
        t.data_ptr(), False, t.numel(), k, 1, ids.data_ptr(), 0, ws.data_ptr(), size, stream
    )
    assert info["done"] and info["scans"] == 1 and not info["dense"]
    assert k <= info["candidates"] < 2 * k  # ~1.25 k: the floor did its job
    assert info["allocated"] == 0  # the workspace held everything
    info = native.ares_sample(t.data_ptr(), False, t.numel(), k, 1, ids.data_ptr(), 0, 0, 0, stream,
                              mode=2, use_floor=True, floor=-1e-300)  # fmt: skip
    assert info["done"] and info["scans"] == 2 and info["dense"] and info["allocated"] > 0
    np.testing.assert_array_equal(ids.cpu().numpy(), cpu(t.cpu().numpy(), k, 1)[0])


@pytest.mark.gpu
@gpu
def test_other_methods_refused_on_cuda() -> None:
    torch = pytest.importorskip("torch")
    t = torch.ones(10, device="cuda")
    for kwargs in ({"method": "expj"}, {"method": "pps"}, {"replace": True}):
        with pytest.raises(
            ValueError, match="on CUDA, weighted_sample runs method='ares' without replacement"
        ):
            ms.weighted_sample(t, 2, seed=0, **kwargs)
    assert ms.weighted_sample(t, 2, seed=0, method="pps", device="cpu").shape == (2,)


def test_bench_runs_without_a_gpu(tmp_path: Path) -> None:
    """bench/bench_gpu_sampling.py --quick: the CPU path where no GPU is (all parts where one is)."""
    out = tmp_path / "gpu_sampling.json"
    bench = Path(__file__).resolve().parents[1] / "bench" / "bench_gpu_sampling.py"
    proc = subprocess.run(
        [sys.executable, str(bench), "--quick", "--runs", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [c["dtype"] for c in result["cases"]] == ["f64", "f32"]
    assert all(c["median_s"]["cpu"] > 0 for c in result["cases"])
    if OK:
        assert all(c["identical_to_cpu"] for c in result["cases"])
    else:
        assert result["gpu_skipped_because"] and "GPU parts skipped" in proc.stdout
