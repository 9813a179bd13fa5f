"""Soft-cap sampling on a CUDA GPU: mixsieve's CUDA kernels vs FLYT's numpy reference, its CPU
path and a torch-only GPU version, on the same scores, within a time budget.

Scores: n ~ Normal(0, 2.5) float64 (FLYT-like logits); total picks in batches of --batch,
penalty 0.15 (FLYT's repetition_penalty). Default n = total = 10^8, batch = 10^6: 100 batches.
The parts run in this order, each writing the JSON when it ends (a run stopped by a time limit
keeps what it measured), and each cut to what the --budget seconds (counted once the imports
are done; default 50, of the 80 s the GPU check gives the script) leave:

  1. ``mixsieve_cuda``: ``soft_cap_sample`` on the scores already on the GPU (counts stay
     there); a warm-up, then the median of up to --runs runs, torch.cuda.synchronize() around
     each.
  2. ``flyt_numpy``: the FLYT notebook algorithm (softmax over the whole pool, then
     ``Generator.choice(replace=False, p=...)``, per batch), --ref-batches batches timed and
     extrapolated linearly to all batches (each does the same O(n) work; the JSON says so).
     The target is known from here on: CUDA >= 50x this reference (issue 14).
  3. ``identical``: the CPU path on the first 2 batches must give the CUDA counts of the
     same 2 batches (same seed), byte for byte; its time also sizes part 5.
  4. ``torch_topk``: per batch, ``torch.topk`` of Gumbel keys ``scores - penalty * counts + G``
     (an exact without-replacement softmax sample), then the counts update, all on the GPU;
     at most --torch-budget seconds of batches, extrapolated (said so).
  5. ``mixsieve_cpu``: the same call on the numpy scores, all cores, once: all batches if the
     budget allows (then its counts must equal the full CUDA counts), otherwise as many
     batches as fit, extrapolated (said so).

Ratios are their time / mixsieve_cuda's. JSON to --out with a "targets" list. Without a GPU
(or without mixsieve's CUDA module) the GPU parts are skipped, saying why, and the CPU parts
run at --quick size; the script then exits 0.

Usage: python bench/bench_gpu_soft_cap.py [--n 1e8 --total 1e8 --batch 1e6] [--runs 3]
       [--ref-batches 1] [--torch-budget 6] [--budget 50] [--quick]
       [--out bench/results/soft_cap_gpu.json]
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
START = time.perf_counter()  # the imports (torch's) take some seconds before


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


def timed(fn: Callable[[], Any], runs: int, label: str) -> tuple[float, list[float], Any]:
    """Median seconds of fn over `runs` runs, and its last result."""
    out = None
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


class Budget:
    """Seconds left of --budget, counted from the end of the imports."""

    def __init__(self, seconds: float) -> None:
        self.end = START + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=float, default=1e8)
    ap.add_argument("--total", type=float, default=1e8)
    ap.add_argument("--batch", type=float, default=1e6)
    ap.add_argument("--runs", type=int, default=3, help="timed CUDA runs at most (after a warm-up)")
    ap.add_argument("--ref-batches", type=int, default=1, help="FLYT numpy batches timed (then extrapolated)")
    ap.add_argument("--torch-budget", type=float, default=6.0, help="seconds for the torch-only batches")
    ap.add_argument("--budget", type=float, default=50.0, help="seconds for the whole script")
    ap.add_argument("--quick", action="store_true", help="n = total = 10^6, batch = 10^4")
    default_out = os.path.join(os.environ.get("OUT") or "bench/results", "soft_cap_gpu.json")
    ap.add_argument("--out", default=default_out)
    a = ap.parse_args()
    budget = Budget(a.budget)
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
    case = f"soft_cap n={n:.0e} total={total:.0e} batch={batch:.0e}"
    base = "mixsieve_cuda" if ok else "mixsieve_cpu"
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
        "budget_s": a.budget,
        "median_s": {},
        "runs_s": {},
        "notes": {},
        "ratio_vs": base,
        "ratios": {},
        "targets": [],
    }
    if not ok:
        result["skipped"] = f"GPU parts: {why}"

    def save() -> None:
        """Ratios and the target from what is measured so far, then the JSON."""
        if base in result["median_s"]:
            result["ratios"] = {m: t / result["median_s"][base] for m, t in result["median_s"].items()}
        if ok and "flyt_numpy" in result["ratios"]:
            value = result["ratios"]["flyt_numpy"]
            result["targets"] = [
                {
                    "case": case,
                    "target": "mixsieve CUDA x faster than the FLYT-style numpy reference (extrapolated), "
                    "with the CPU's counts",
                    "value": value,
                    "need": ">= 50",
                    "met": bool(value >= 50 and result.get("identical", False) and not a.quick),
                }
            ]
        write_result(a.out, result)

    log(f"soft-cap n={n:.0e} total={total:.0e} batch={batch:.0e} ({batches} batches), {cores} cores")
    if ok:
        gen = torch.Generator(device="cuda").manual_seed(0)
        scores_gpu = torch.randn(n, dtype=torch.float64, device="cuda", generator=gen) * 2.5
        scores = scores_gpu.cpu().numpy()
    else:
        scores = np.random.default_rng(0).normal(0.0, 2.5, n)
    kw = {"penalty": PENALTY, "batch_size": batch, "seed": SEED}
    save()

    # 1. CUDA: runs while they take at most a quarter of the budget left
    cuda_counts = None
    if ok:
        sync()
        t0 = time.perf_counter()
        cuda_counts = ms.soft_cap_sample(scores_gpu, total, **kw)  # warm-up
        sync()
        warm = time.perf_counter() - t0
        runs = max(1, min(a.runs, int(0.25 * budget.left() / max(warm, 1e-3))))
        med, times, cuda_counts = timed(
            lambda: ms.soft_cap_sample(scores_gpu, total, **kw), runs, "mixsieve_cuda"
        )
        result["median_s"]["mixsieve_cuda"], result["runs_s"]["mixsieve_cuda"] = med, times
        if runs < a.runs:
            result["notes"]["mixsieve_cuda"] = f"{runs} of {a.runs} runs (budget)"
        save()

    # 2. the FLYT numpy reference, right after
    k = max(1, min(a.ref_batches, batches))
    t_ref = flyt_numpy(scores, batch, k, 5)
    result["median_s"]["flyt_numpy"] = t_ref * batches / k
    result["notes"]["flyt_numpy"] = (
        f"{k} of {batches} batches timed ({t_ref:.2f} s), extrapolated linearly to all {batches}"
    )
    log(f"  flyt_numpy: {k} batches in {t_ref:.2f} s, extrapolated to {batches}: {t_ref * batches / k:.1f} s")
    save()

    # 3. the CPU's counts of the first 2 batches against CUDA's of the same 2
    probe = min(2, batches) * batch
    t0 = time.perf_counter()
    cpu_probe = ms.soft_cap_sample(scores, probe, **kw)
    t_probe = time.perf_counter() - t0
    log(f"  mixsieve_cpu: {probe // batch} batches in {t_probe:.2f} s")
    if ok:
        result["identical"] = bool(
            np.array_equal(ms.soft_cap_sample(scores_gpu, probe, **kw).cpu().numpy(), cpu_probe)
        )
        result["identical_on"] = f"the first {probe // batch} batches"
        log(f"  CUDA counts == CPU counts ({result['identical_on']}): {result['identical']}")
        save()

    # 4. torch-only, within its share of what is left
    if ok:
        torch_topk(scores_gpu, batch, 1, 0)  # warm-up
        sync()
        t0 = time.perf_counter()
        torch_topk(scores_gpu, batch, 1, 0)
        sync()
        per_batch = time.perf_counter() - t0
        allowed = min(a.torch_budget, 0.3 * budget.left())
        run_batches = max(1, min(batches, int(allowed / per_batch)))
        sync()
        t0 = time.perf_counter()
        torch_topk(scores_gpu, batch, run_batches, 0)
        sync()
        t = (time.perf_counter() - t0) * batches / run_batches
        result["median_s"]["torch_topk"] = t
        if run_batches < batches:
            result["notes"]["torch_topk"] = f"{run_batches} of {batches} batches timed, extrapolated linearly"
        log(f"  torch_topk: {t:.3f} s ({run_batches} of {batches} batches timed)")
        save()

    # 5. the CPU path: all batches if they fit in what is left (the probe's time per batch,
    # which includes the first weighing, is an overestimate), else as many as fit
    per_batch = t_probe / (probe // batch)
    fit = max(1, min(batches, int(0.8 * budget.left() / per_batch)))
    t0 = time.perf_counter()
    cpu_counts = ms.soft_cap_sample(scores, fit * batch, **kw)
    t = (time.perf_counter() - t0) * batches / fit
    result["median_s"]["mixsieve_cpu"], result["runs_s"]["mixsieve_cpu"] = t, [t]
    if fit < batches:
        result["notes"]["mixsieve_cpu"] = f"{fit} of {batches} batches timed, extrapolated linearly"
    log(f"  mixsieve_cpu: {t:.3f} s ({fit} of {batches} batches timed)")
    if cuda_counts is not None and fit == batches:
        result["identical"] = bool(np.array_equal(cuda_counts.cpu().numpy(), cpu_counts))
        result["identical_on"] = f"all {batches} batches"
        log(f"  CUDA counts == CPU counts (all batches): {result['identical']}")
    save()

    print(f"\n{case} ({batches} batches, penalty {PENALTY}); ratio = their time / {base}'s")
    for m, t in sorted(result["median_s"].items(), key=lambda kv: kv[1]):
        note = f"   [{result['notes'][m]}]" if m in result["notes"] else ""
        print(f"  {m:<16}{t:10.3f} s   x{result['ratios'][m]:9.1f}{note}")
    if "identical" in result:
        print(f"  CUDA counts identical to the CPU's ({result['identical_on']}): {result['identical']}")
    for tg in result["targets"]:
        verdict = "met" if tg["met"] else "NOT met"
        print(f"  target: {tg['target']}: {tg['value']:.1f} (need {tg['need']}): {verdict}")
    print(f"  {time.perf_counter() - START:.1f} s in all (budget {a.budget:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
