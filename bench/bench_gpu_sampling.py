"""weighted_sample (keyed A-Res, without replacement) on a CUDA GPU vs the CPU path vs torch alone.

n lognormal(0, 2) weights (float64 and float32, made on the GPU; the CPU path reads a host copy
made once, outside the timing), a sample of k, fixed seeds:

  * ``cuda``: ``ms.weighted_sample(w, k, seed=1)`` on the CUDA tensor (the ids and keys the CPU
    gives, bit for bit; checked before timing);
  * ``cpu``: the same call on the host copy, on all cores of the machine;
  * ``torch_topk``: torch alone on the GPU, ``torch.topk(log(u) / w, k)`` with ``u =
    torch.rand`` in the weights' dtype (the Gumbel-top-k sample: the same distribution, other
    random numbers, no guarantee of identity with anything).

Each time is the median of --runs wall-clock runs after a warm-up, each ended by
``torch.cuda.synchronize()``; methods interleave within a round. Ratios are theirs / ours
(cuda). Target (issue 14): cuda >= 20x the CPU path at n = 10**8. JSON to --out with a
"targets" list of {case, target, value, need, met}.

Without a GPU (or without mixsieve's CUDA module) the GPU parts are skipped with the reason,
the CPU path runs at --quick size, and the script exits 0.

Usage: python bench/bench_gpu_sampling.py [--n 1e8] [--ks 1e5,1e6] [--dtypes f64,f32] [--runs 5]
       [--out bench/results/gpu_sampling.json] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import mixsieve as ms
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

try:
    import torch
except ImportError:  # torch is an optional extra
    torch = None

NP_DTYPES = {"f64": np.float64, "f32": np.float32}
TARGET_SPEEDUP = 20.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def gpu_missing() -> str | None:
    """Why the GPU parts cannot run here, or None."""
    if torch is None:
        return "torch is not installed"
    from mixsieve.mixup import _cuda

    ok, why = _cuda.available()
    return None if ok else why


def sync() -> None:
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def medians(methods: dict[str, Callable[[], Any]], runs: int, label: str) -> dict[str, float]:
    """Median wall-clock seconds per method (each run ends with a device synchronisation),
    after one warm-up call each; rounds interleave the methods."""
    for fn in methods.values():
        fn()
        sync()
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(runs):
        for name, fn in methods.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
        log(
            f"  {label} round {r + 1}/{runs}: "
            + ", ".join(f"{m} {t[-1] * 1e3:.2f} ms" for m, t in times.items())
        )
    return {m: statistics.median(t) for m, t in times.items()}


def torch_topk(w: Any, k: int, gen: Any) -> Any:
    u = torch.rand(w.shape[0], dtype=w.dtype, device=w.device, generator=gen)
    return torch.topk(torch.log(u) / w, k, sorted=True).indices


def bench_case(
    n: int, k: int, dname: str, runs: int, gpu: bool, w_gpu: Any, w_host: np.ndarray
) -> dict[str, Any]:
    label = f"n={n:.0e} k={k:.0e} {dname}"
    methods: dict[str, Callable[[], Any]] = {"cpu": lambda: ms.weighted_sample(w_host, k, seed=1)}
    res: dict[str, Any] = {"n": n, "k": k, "dtype": dname}
    if gpu:
        ids, keys = ms.weighted_sample(w_gpu, k, seed=1, return_keys=True)
        cpu_ids, cpu_keys = ms.weighted_sample(w_host, k, seed=1, return_keys=True)
        res["identical_to_cpu"] = bool(
            np.array_equal(ids.cpu().numpy(), cpu_ids)
            and np.array_equal(keys.cpu().numpy().view(np.int64), cpu_keys.view(np.int64))
        )
        gen = torch.Generator(device=w_gpu.device).manual_seed(1)
        methods = {
            "cuda": lambda: ms.weighted_sample(w_gpu, k, seed=1),
            "cpu": methods["cpu"],
            "torch_topk": lambda: torch_topk(w_gpu, k, gen),
        }
    t = medians(methods, runs, label)
    res["median_s"] = t
    if gpu:
        res["ratio_vs_cuda"] = {m: t[m] / t["cuda"] for m in t if m != "cuda"}
        log(
            f"[{label}] cuda {t['cuda'] * 1e3:.2f} ms, cpu {t['cpu'] * 1e3:.1f} ms "
            f"({res['ratio_vs_cuda']['cpu']:.1f}x), torch topk {t['torch_topk'] * 1e3:.2f} ms "
            f"({res['ratio_vs_cuda']['torch_topk']:.1f}x); identical to cpu: {res['identical_to_cpu']}"
        )
    else:
        log(f"[{label}] cpu {t['cpu'] * 1e3:.1f} ms")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=float, default=1e8)
    ap.add_argument("--ks", default="1e5,1e6")
    ap.add_argument("--dtypes", default="f64,f32")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="bench/results/gpu_sampling.json")
    ap.add_argument("--quick", action="store_true", help="n = 10**6, k = 10**4, 3 runs")
    a = ap.parse_args()
    why = gpu_missing()
    gpu = why is None
    if not gpu:
        print(f"GPU parts skipped: {why}; the CPU path runs at --quick size")
        a.quick = True
    n, ks, runs = int(a.n), [int(float(x)) for x in a.ks.split(",")], a.runs
    if a.quick:
        n, ks, runs = 10**6, [10**4], min(runs, 3)
    result: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cores": os.cpu_count()},
        "gpu": torch.cuda.get_device_name() if gpu else None,
        "gpu_skipped_because": why,
        "n": n,
        "ks": ks,
        "runs": runs,
        "cases": [],
        "targets": [],
    }
    for dname in a.dtypes.split(","):
        dtype = NP_DTYPES[dname]
        if gpu:
            gen = torch.Generator(device="cuda").manual_seed(0)
            w_gpu = torch.empty(n, dtype=torch.float64, device="cuda").log_normal_(0.0, 2.0, generator=gen)
            w_gpu = w_gpu.to(torch.float32) if dtype == np.float32 else w_gpu
            w_host = w_gpu.cpu().numpy()
        else:
            w_gpu, w_host = None, np.random.default_rng(0).lognormal(0.0, 2.0, n).astype(dtype)
        for k in ks:
            case = bench_case(n, k, dname, runs, gpu, w_gpu, w_host)
            result["cases"].append(case)
            if gpu:
                speedup = case["ratio_vs_cuda"]["cpu"]
                result["targets"].append(
                    {
                        "case": f"n={n:.0e} k={k:.0e} {dname}",
                        "target": "CUDA speedup over the CPU path (all cores), identical output",
                        "value": round(speedup, 2),
                        "need": f">= {TARGET_SPEEDUP:g}",
                        "met": bool(speedup >= TARGET_SPEEDUP and case["identical_to_cpu"] and n >= 10**8),
                    }
                )
            write_result(a.out, result)  # after every case: a timeout keeps what was measured
        del w_gpu, w_host
        if gpu:
            torch.cuda.empty_cache()
    for t in result["targets"]:
        met = "met" if t["met"] else "NOT met"
        print(f"  {t['case']:<20} {t['target']}: {t['value']} (need {t['need']}): {met}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
