"""Soft-cap sampling on a CUDA GPU: mixsieve's CUDA kernels vs its CPU path, FLYT's numpy
reference and a torch-only GPU version, on the same scores.

Scores: n ~ Normal(0, 2.5) float64 (FLYT-like logits); total picks in batches of --batch,
penalty 0.15 (FLYT's repetition_penalty). Default n = total = 10^8, batch = 10^6: 100 batches.

  * ``mixsieve_cuda``: ``soft_cap_sample`` on the scores already on the GPU (counts stay there);
    median of --runs after a warm-up, torch.cuda.synchronize() around each.
  * ``mixsieve_cpu``: the same call on the numpy scores, all cores; median of --cpu-runs.
    Its counts must equal the CUDA counts (same seed): "identical" in the JSON.
  * ``flyt_numpy``: the FLYT notebook algorithm (softmax over the whole pool, then
    ``Generator.choice(replace=False, p=...)``, per batch). Minutes at full size, so
    --ref-batches batches are timed and the time is extrapolated linearly to all batches
    (each batch does the same O(n) work); the output and the JSON say so.
  * ``torch_topk``: per batch, ``torch.topk`` of Gumbel keys ``scores - penalty * counts + G``
    (an exact without-replacement softmax sample), then the counts update, all on the GPU;
    every batch is run unless that would take longer than --torch-budget seconds, in which
    case the timed batches are extrapolated (said so).

Ratios are their time / mixsieve_cuda's. Target (issue 14): CUDA >= 50x the FLYT numpy
reference. JSON to --out with a "targets" list. Without a GPU (or without mixsieve's CUDA
module) the GPU parts are skipped, saying why, and the CPU parts run at --quick size; the
script then exits 0.

Usage: python bench/bench_gpu_soft_cap.py [--n 1e8 --total 1e8 --batch 1e6] [--runs 3]
       [--cpu-runs 2] [--ref-batches 2] [--quick] [--out bench/results/soft_cap_gpu.json]
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

PENALTY = 0.15
SEED = 1


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def gpu_status() -> tuple[bool, str]:
    if torch is None:
        return False, "torch is not installed"
    from mixsieve.mixup import _cuda

    return _cuda.available()


def sync() -> None:
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], runs: int, label: str, warmup: bool) -> tuple[float, list[float], Any]:
    """Median seconds of fn over `runs` runs (after one warm-up when asked), and its last result."""
    out = None
    if warmup:
        out = fn()
        sync()
    times = []
    for r in range(runs):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
        log(f"  {label} run {r + 1}/{runs}: {times[-1]:.3f} s")
    return statistics.median(times), times, out


def flyt_numpy(scores: np.ndarray, batch: int, batches: int, seed: int) -> float:
    """Seconds for `batches` batches of the FLYT notebook algorithm (bench_sampling.py's reference)."""
    gen = np.random.default_rng(seed)
    n = scores.shape[0]
    t0 = time.perf_counter()
    pre = scores.copy()
    counts = np.zeros(n, np.int64)
    for _ in range(batches):
        e = np.exp(pre - pre.max())
        picked = gen.choice(n, size=batch, replace=False, p=e / e.sum())
        counts[picked] += 1
        pre[picked] -= PENALTY
    return time.perf_counter() - t0


def torch_topk(scores: Any, batch: int, batches: int, seed: int) -> Any:
    """`batches` batches of Gumbel-top-k soft-cap sampling on the scores' device; the counts."""
    n = scores.shape[0]
    gen = torch.Generator(device=scores.device).manual_seed(seed)
    counts = torch.zeros(n, dtype=torch.int64, device=scores.device)
    for _ in range(batches):
        u = torch.rand(n, dtype=scores.dtype, device=scores.device, generator=gen)
        keys = scores - PENALTY * counts - torch.log(-torch.log(u))
        counts[torch.topk(keys, batch, sorted=False).indices] += 1
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=float, default=1e8)
    ap.add_argument("--total", type=float, default=1e8)
    ap.add_argument("--batch", type=float, default=1e6)
    ap.add_argument("--runs", type=int, default=3, help="timed CUDA runs (after a warm-up)")
    ap.add_argument("--cpu-runs", type=int, default=2)
    ap.add_argument("--ref-batches", type=int, default=2, help="FLYT numpy batches timed (then extrapolated)")
    ap.add_argument("--torch-budget", type=float, default=30.0, help="seconds for the torch-only run")
    ap.add_argument("--quick", action="store_true", help="n = total = 10^6, batch = 10^4")
    default_out = os.path.join(os.environ.get("OUT") or "bench/results", "soft_cap_gpu.json")
    ap.add_argument("--out", default=default_out)
    a = ap.parse_args()
    ok, why = gpu_status()
    if a.quick or not ok:
        if not ok:
            log(f"GPU parts skipped: {why}; CPU parts at --quick size")
        a.n, a.total, a.batch = 1e6, 1e6, 1e4
    n, total, batch = int(a.n), int(a.total), int(a.batch)
    batches = -(-total // batch)
    if total % batch:
        raise SystemExit("--total must be a multiple of --batch (the extrapolations assume equal batches)")
    cores = len(os.sched_getaffinity(0))
    result: dict[str, Any] = {
        "benchmark": "soft_cap_gpu",
        "n": n,
        "total": total,
        "batch": batch,
        "batches": batches,
        "penalty": PENALTY,
        "scores": "Normal(0, 2.5), float64",
        "cores": cores,
        "machine": platform.processor() or platform.machine(),
        "device": torch.cuda.get_device_name(0) if ok else None,
        "gpu": why,
        "numpy": np.__version__,
        "torch": getattr(torch, "__version__", None),
        "mixsieve": ms.__version__,
        "median_s": {},
        "runs_s": {},
        "notes": {},
    }
    log(f"soft-cap n={n:.0e} total={total:.0e} batch={batch:.0e} ({batches} batches), {cores} cores")
    if ok:
        gen = torch.Generator(device="cuda").manual_seed(0)
        scores_gpu = torch.randn(n, dtype=torch.float64, device="cuda", generator=gen) * 2.5
        scores = scores_gpu.cpu().numpy()
    else:
        scores = np.random.default_rng(0).normal(0.0, 2.5, n)
    kw = {"penalty": PENALTY, "batch_size": batch, "seed": SEED}

    cuda_counts = None
    if ok:
        med, runs, cuda_counts = timed(
            lambda: ms.soft_cap_sample(scores_gpu, total, **kw), a.runs, "mixsieve_cuda", warmup=True
        )
        result["median_s"]["mixsieve_cuda"], result["runs_s"]["mixsieve_cuda"] = med, runs
        write_result(a.out, result)

    med, runs, cpu_counts = timed(
        lambda: ms.soft_cap_sample(scores, total, **kw), a.cpu_runs, "mixsieve_cpu", warmup=False
    )
    result["median_s"]["mixsieve_cpu"], result["runs_s"]["mixsieve_cpu"] = med, runs
    if cuda_counts is not None:
        result["identical"] = bool(np.array_equal(cuda_counts.cpu().numpy(), cpu_counts))
        log(f"  CUDA counts == CPU counts: {result['identical']}")
    write_result(a.out, result)

    if ok:
        probe = max(1, min(batches, 2))
        torch_topk(scores_gpu, batch, 1, 0)  # warm-up
        sync()
        t0 = time.perf_counter()
        torch_topk(scores_gpu, batch, probe, 0)
        sync()
        per_batch = (time.perf_counter() - t0) / probe
        run_batches = (
            batches if per_batch * batches <= a.torch_budget else max(probe, int(a.torch_budget / per_batch))
        )
        sync()
        t0 = time.perf_counter()
        torch_topk(scores_gpu, batch, run_batches, 0)
        sync()
        t = (time.perf_counter() - t0) * batches / run_batches
        result["median_s"]["torch_topk"] = t
        if run_batches < batches:
            result["notes"]["torch_topk"] = f"{run_batches} of {batches} batches timed, extrapolated linearly"
        log(f"  torch_topk: {t:.3f} s ({run_batches} of {batches} batches timed)")
        write_result(a.out, result)

    k = max(1, min(a.ref_batches, batches))
    t_ref = flyt_numpy(scores, batch, k, 5)
    result["median_s"]["flyt_numpy"] = t_ref * batches / k
    result["notes"]["flyt_numpy"] = (
        f"{k} of {batches} batches timed ({t_ref:.2f} s), extrapolated linearly to all {batches}"
    )
    log(f"  flyt_numpy: {k} batches in {t_ref:.2f} s, extrapolated to {batches}: {t_ref * batches / k:.1f} s")

    base = "mixsieve_cuda" if ok else "mixsieve_cpu"
    result["ratio_vs"] = base
    result["ratios"] = {m: t / result["median_s"][base] for m, t in result["median_s"].items()}
    case = f"soft_cap n={n:.0e} total={total:.0e} batch={batch:.0e}"
    if ok:
        value = result["ratios"]["flyt_numpy"]
        result["targets"] = [
            {
                "case": case,
                "target": "mixsieve CUDA x faster than the FLYT-style numpy reference (extrapolated)",
                "value": value,
                "need": ">= 50",
                "met": bool(value >= 50 and result.get("identical", False) and not a.quick),
            }
        ]
    else:
        result["targets"] = []
        result["skipped"] = f"GPU parts: {why}"
    print(f"\n{case} ({batches} batches, penalty {PENALTY}); ratio = their time / {base}'s")
    for m, t in sorted(result["median_s"].items(), key=lambda kv: kv[1]):
        note = f"   [{result['notes'][m]}]" if m in result["notes"] else ""
        print(f"  {m:<16}{t:10.3f} s   x{result['ratios'][m]:9.1f}{note}")
    if "identical" in result:
        print(f"  CUDA counts identical to the CPU's: {result['identical']}")
    for tg in result["targets"]:
        verdict = "met" if tg["met"] else "NOT met"
        print(f"  target: {tg['target']}: {tg['value']:.1f} (need {tg['need']}): {verdict}")
    write_result(a.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
