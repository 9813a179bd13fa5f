"""Weighted sampling and soft-cap sampling: mixsieve vs numpy / torch on the same weights.

Weighted sample without replacement of k from n lognormal(0, 2) float64 weights:
  * mixsieve ``weighted_sample`` (method="ares"), one thread and all cores;
  * ``numpy.random.Generator.choice(n, k, replace=False, p=p)`` (p normalised outside the timing);
  * ``torch.multinomial(p, k, replacement=False)`` where n <= 2**24 (torch on the same cores);
  * numpy Gumbel-top-k: ``log(u) / w`` keys, ``argpartition``, then a sort of the k winners
    (mixsieve returns them in draw order too).
Streaming: ``WeightedReservoir.add`` over the n weights in batches of 1M: items/s per core for
"expj" (one thread) and "ares" (all cores).
Soft-cap: ``soft_cap_sample`` vs the FLYT notebook algorithm (numpy softmax +
``choice(replace=False)`` per batch), same scores.

Medians of --runs runs (each method once per round, rounds interleaved); ratios = their median
/ ours. JSON to --out.

Usage: python bench/bench_sampling.py [--sizes 1e6,1e7,1e8] [--ks 1e3,1e5] [--runs 5]
       [--softcap-n 1e7 --softcap-total 1e7 --softcap-batch 1e5 --softcap-runs 3] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Any, Callable

import mixsieve as ms
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import run_rounds, write_result  # noqa: E402

try:
    import torch
except ImportError:  # torch is an optional extra
    torch = None


def bench_weighted(n: int, k: int, runs: int, cores: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    w = rng.lognormal(0.0, 2.0, n)
    p = w / w.sum()
    gen = np.random.default_rng(1)
    methods: dict[str, Callable[[], Any]] = {
        "mixsieve_1thread": lambda: ms.weighted_sample(w, k, seed=1, threads=1),
        f"mixsieve_{cores}threads": lambda: ms.weighted_sample(w, k, seed=1),
        "numpy_choice": lambda: gen.choice(n, k, replace=False, p=p),
    }

    def gumbel() -> np.ndarray:
        keys = np.log(gen.random(n)) / w
        top = np.argpartition(-keys, k - 1)[:k]
        return top[np.argsort(-keys[top])]

    methods["numpy_gumbel_topk"] = gumbel
    if torch is not None and n <= 2**24:
        torch.set_num_threads(cores)
        pt = torch.from_numpy(p)
        methods["torch_multinomial"] = lambda: torch.multinomial(pt, k, replacement=False)
    med = run_rounds(methods, runs, f"n={n:.0e} k={k:.0e}")
    ours = med[f"mixsieve_{cores}threads"]
    return {
        "n": n,
        "k": k,
        "median_s": med,
        "ratio_vs_ours_all_cores": {m: t / ours for m, t in med.items()},
        "ratio_vs_ours_1thread": {m: t / med["mixsieve_1thread"] for m, t in med.items()},
    }


def bench_stream(n: int, k: int, runs: int) -> dict[str, Any]:
    w = np.random.default_rng(2).lognormal(0.0, 2.0, n)
    batches = np.array_split(w, max(1, n // 1_000_000))

    def feed(method: str, threads: int | None) -> Callable[[], Any]:
        def go() -> None:
            r = ms.WeightedReservoir(k, seed=3, method=method)
            for b in batches:
                r.add(b, threads=threads)

        return go

    med = run_rounds(
        {"expj_1thread": feed("expj", 1), "ares_all_cores": feed("ares", None)}, runs, f"stream n={n:.0e}"
    )
    return {"n": n, "k": k, "median_s": med, "items_per_s": {m: n / t for m, t in med.items()}}


def bench_softcap(n: int, total: int, batch: int, runs: int) -> dict[str, Any]:
    scores = np.random.default_rng(4).normal(0.0, 2.5, n)
    gen = np.random.default_rng(5)

    def reference() -> np.ndarray:  # the FLYT notebook algorithm
        pre = scores.copy()
        counts = np.zeros(n, np.int64)
        done = 0
        while done < total:
            b = min(batch, total - done)
            e = np.exp(pre - pre.max())
            picked = gen.choice(n, size=b, replace=False, p=e / e.sum())
            counts[picked] += 1
            pre[picked] -= 0.15
            done += b
        return counts

    med = run_rounds(
        {
            "mixsieve": lambda: ms.soft_cap_sample(scores, total, penalty=0.15, batch_size=batch, seed=1),
            "flyt_reference_numpy": reference,
        },
        runs,
        f"soft-cap n={n:.0e}",
        warmup=False,  # the reference takes minutes; its first run is as warm as the rest
    )
    return {
        "n": n,
        "total": total,
        "batch": batch,
        "median_s": med,
        "ratio": med["flyt_reference_numpy"] / med["mixsieve"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e6,1e7,1e8")
    ap.add_argument("--ks", default="1e3,1e5")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--big-runs", type=int, default=3, help="runs at n >= 1e8")
    ap.add_argument("--stream-n", type=float, default=1e8)
    ap.add_argument("--softcap-n", type=float, default=1e7)
    ap.add_argument("--softcap-total", type=float, default=1e7)
    ap.add_argument("--softcap-batch", type=float, default=1e5)
    ap.add_argument("--softcap-runs", type=int, default=2)
    ap.add_argument("--out", default="bench/results/sampling.json")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.ks, args.runs, args.big_runs = "1e4", "1e2", 1, 1
        args.stream_n, args.softcap_n, args.softcap_total, args.softcap_batch, args.softcap_runs = (
            1e5,
            1e4,
            1e4,
            1e3,
            1,
        )
    cores = len(os.sched_getaffinity(0))
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    ks = [int(float(k)) for k in args.ks.split(",")]

    weighted = [
        bench_weighted(n, k, args.big_runs if n >= 10**8 else args.runs, cores)
        for n in sizes
        for k in ks
        if k < n
    ]
    stream = bench_stream(int(args.stream_n), 1000, args.big_runs)
    softcap = bench_softcap(
        int(args.softcap_n), int(args.softcap_total), int(args.softcap_batch), args.softcap_runs
    )

    print(
        f"\nweighted_sample without replacement (lognormal weights, float64), median seconds; "
        f"ratio = their time / ours on {cores} cores (ours on 1 thread in brackets)"
    )
    for r in weighted:
        print(f"  n={r['n']:.0e} k={r['k']:.0e}:")
        for m, t in sorted(r["median_s"].items(), key=lambda kv: kv[1]):
            print(
                f"    {m:<22}{t:9.4f} s   x{r['ratio_vs_ours_all_cores'][m]:7.1f}  "
                f"[x{r['ratio_vs_ours_1thread'][m]:6.1f}]"
            )
    print(f"\nWeightedReservoir streaming, n={stream['n']:.0e}, k={stream['k']}:")
    for m, v in stream["items_per_s"].items():
        print(f"    {m:<22}{v / 1e6:9.1f} M items/s")
    print(
        f"\nsoft_cap_sample n={softcap['n']:.0e} total={softcap['total']:.0e} batch={softcap['batch']:.0e}: "
        f"mixsieve {softcap['median_s']['mixsieve']:.2f} s, "
        f"FLYT reference {softcap['median_s']['flyt_reference_numpy']:.2f} s,"
        f" x{softcap['ratio']:.1f}"
    )
    out = {
        "benchmark": "sampling",
        "cores": cores,
        "machine": platform.processor() or platform.machine(),
        "numpy": np.__version__,
        "torch": getattr(torch, "__version__", None),
        "mixsieve": ms.__version__,
        "weighted_sample": weighted,
        "stream": stream,
        "soft_cap": softcap,
    }
    write_result(args.out, out)


if __name__ == "__main__":
    main()
