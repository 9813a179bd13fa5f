"""Mixing overhead: mixsieve MixtureDataset vs HF datasets, torchdata, grain, random.choices.

In-memory sources only (no I/O), three sources weighted 0.5 / 0.3 / 0.2, items are ints.
  * kernel: ``_core.MixSchedule.fill`` decisions per second (exact and random, K = 3, 10, 100).
  * per-sample overhead: time per sample of each mixer minus the time per sample of iterating
    one source alone *in the same framework* (for us: a plain Python list), medians of --runs:
      - mixsieve ``iter(MixtureDataset)`` (mode="exact" and "random");
      - ``datasets.interleave_datasets`` of ``IterableDataset.from_generator`` sources
        (probabilities=..., all_exhausted);
      - torchdata ``nodes.MultiNodeWeightedSampler`` over ``IterableWrapper`` sources, via ``Loader``;
      - grain ``MapDataset.mix`` (random access, read in order);
      - a plain Python loop: ``random.choices`` per sample, then ``next()`` of that source.
  * resume: state size, the cost of computing a state at a far position (--resume-at) from
    consumed_samples, and the time to load it and get the first sample.
  * DataLoader throughput (batch 256, default collate) with 0 and 2 workers: MixtureDataset
    (shuffle=False) vs a one-source IterableDataset over a list (sharded by worker) that yields
    the same (name, item) pairs, same item count.

  * token mode (``unit="tokens"``):
      - kernel: ``_core.MixPlan.fill`` decisions per second in token mode, K = 3, 10, 100 sources
        of 10^4 and 10^6 items (lengths 1..4096), read in order and shuffled, next to sample mode
        for the same K; and a plain Python loop of the same rule (largest token deficit, the
        rule a user would write) for K = 10;
      - iteration: samples per second of ``itertools.islice(ds, n)`` over three
        ``IndexedTokenSource`` files (350k sequences), unit="tokens" and "samples", against a
        plain Python loop that picks a source by token deficit and reads ``src[i]``.

  * dry runs: ``MixtureDataset.simulate(n, window)`` positions per second (10 sources, with a
    schedule and caps; sample and token mode), against iterating the same stream.

Ratios: their overhead / ours. JSON to --out.

Usage: python bench/bench_mixture.py [--n 2e6] [--peer-n 2e5] [--hf-n 2e4] [--runs 5] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import mixsieve as ms
import numpy as np
from mixsieve import _core

sys.path.insert(0, str(Path(__file__).parent))
from common import run_rounds, write_result  # noqa: E402

warnings.simplefilter("ignore")
WEIGHTS = [0.5, 0.3, 0.2]
NAMES = ["web", "code", "math"]


def median_time(fn: Callable[[], Any], runs: int, label: str) -> float:
    return run_rounds({label: fn}, runs, label)[label]


def peer_overhead(
    label: str, mix: Callable[[], Any], single: Callable[[], Any], count: int, runs: int
) -> dict[str, Any]:
    """A peer's per-sample time mixing, and over iterating one of its sources alone."""
    med = run_rounds({"mix": mix, "single": single}, runs, label)
    tm, ts = med["mix"] / count, med["single"] / count
    print(f"{label}: overhead {(tm - ts) * 1e9:.0f} ns/sample", flush=True)
    return {"per_sample_us": tm * 1e6, "single_us": ts * 1e6, "overhead_us": (tm - ts) * 1e6}


def bench_kernel(n: int, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for mode in ("exact", "random"):
        for k in (3, 10, 100):
            w = rng.dirichlet(np.ones(k))

            def run(k: int = k, mode: str = mode, w: np.ndarray = w) -> None:
                s = _core.MixSchedule(k, mode == "exact", 0)
                s.set_weights(w)
                s.fill(n)

            t = median_time(run, runs, f"kernel {mode} K={k}")
            out[f"{mode}_k{k}"] = {"decisions_per_s": n / t}
            print(f"kernel {mode:6s} K={k:3d}: {n / t / 1e6:7.1f} M decisions/s", flush=True)
    return out


def deficit_loop(weights: np.ndarray, lengths: list[np.ndarray], n: int) -> list[int]:
    """The rule a user writes in Python: give the next item to the source furthest behind its
    token share (largest w_d * T - C_d)."""
    k = len(weights)
    w = weights.tolist()
    served = [0] * k
    count = [0] * k
    total = 0
    out = []
    lens = [x.tolist() for x in lengths]
    for _ in range(n):
        best = max(range(k), key=lambda d: w[d] * total - served[d])
        ln = lens[best][count[best] % len(lens[best])]
        count[best] += 1
        served[best] += ln
        total += ln
        out.append(best)
    return out


def bench_tokens_kernel(n: int, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rng = np.random.default_rng(1)
    for k in (3, 10, 100):
        w = rng.dirichlet(np.ones(k))

        def samples(k: int = k, w: np.ndarray = w) -> None:
            s = _core.MixSchedule(k, True, 0)
            s.set_weights(w)
            s.fill(n)

        t_samples = median_time(samples, runs, f"sample kernel K={k}")
        row: dict[str, Any] = {"sample_mode_decisions_per_s": n / t_samples}
        for size in (10_000, 1_000_000):
            if k * size > 20_000_000:
                continue  # 100 sources of 10^6 items: 400 MB of lengths, not this machine's case
            for shuffle in (False, True):
                tables = [_core.TokenTable(rng.integers(1, 4097, size=size)) for _ in range(k)]

                def tokens(
                    k: int = k, tables: list[Any] = tables, shuffle: bool = shuffle, w: np.ndarray = w
                ) -> None:
                    plan = _core.MixPlan(k, True, 0, 0, np.full(k, -1, np.int64))
                    for d in range(k):
                        plan.set_token_lengths(d, tables[d], d + 1, shuffle)
                    plan.start(w)
                    plan.fill(n)

                key = f"items_{size}_{'shuffled' if shuffle else 'in_order'}"
                t = median_time(tokens, runs, f"token kernel K={k} {key}")
                row[key] = {"decisions_per_s": n / t, "vs_sample_mode": t_samples / t}
                print(f"token kernel K={k:3d} {key:24s}: {n / t / 1e6:6.1f} M decisions/s", flush=True)
        out[f"k{k}"] = row
    # a plain Python loop of a token rule, K = 10
    w10 = rng.dirichlet(np.ones(10))
    lens10 = [rng.integers(1, 4097, size=10_000) for _ in range(10)]
    m = max(1000, n // 100)
    t_py = median_time(lambda: deficit_loop(w10, lens10, m), runs, "python deficit loop K=10") / m
    ours = out["k10"]["items_10000_shuffled"]["decisions_per_s"]
    out["python_deficit_loop_k10"] = {"decisions_per_s": 1 / t_py, "ratio_ours_over_theirs": ours * t_py}
    print(
        f"python deficit loop K=10: {1 / t_py / 1e6:.2f} M decisions/s; ours {ours * t_py:.0f}x", flush=True
    )
    return out


def bench_tokens_iter(n: int, runs: int) -> dict[str, Any]:
    import itertools
    import tempfile

    rng = np.random.default_rng(2)
    weights = {"web": 0.6, "code": 0.3, "math": 0.1}
    spans = {"web": (200_000, 20, 400), "code": (100_000, 100, 2000), "math": (50_000, 50, 800)}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        srcs = {}
        for name, (count, lo, hi) in spans.items():
            lens = rng.integers(lo, hi, size=count)
            seqs = (rng.integers(0, 50_000, size=int(x), dtype=np.uint16) for x in lens)
            srcs[name] = ms.sources.IndexedTokenSource.write(os.path.join(tmp, name), seqs)
        for unit in ("tokens", "samples"):
            ds = ms.MixtureDataset(srcs, weights=weights, unit=unit, seed=0)

            def ours(ds: Any = ds) -> None:
                for _ in itertools.islice(ds, n):
                    pass

            t = median_time(ours, runs, f"iter(ds) unit={unit}")
            out[f"mixsieve_{unit}"] = {"samples_per_s": n / t}
            print(f"iter(MixtureDataset) over IndexedTokenSource, unit={unit}: {n / t / 1e6:.2f} M samples/s")
        names = list(weights)
        w = [weights[x] for x in names]
        lengths = [srcs[x].item_lengths().tolist() for x in names]
        sources_ = [srcs[x] for x in names]
        m = max(1000, n // 10)

        def plain() -> None:
            served, count, total = [0.0] * 3, [0] * 3, 0
            for _ in range(m):
                best = max(range(3), key=lambda d: w[d] * total - served[d])
                i = count[best] % len(lengths[best])
                sources_[best][i]
                count[best] += 1
                served[best] += lengths[best][i]
                total += lengths[best][i]

        t_plain = median_time(plain, runs, "plain python loop") / m
        ours_rate = out["mixsieve_tokens"]["samples_per_s"]
        out["python_deficit_loop"] = {
            "samples_per_s": 1 / t_plain,
            "ratio_ours_over_theirs": ours_rate * t_plain,
        }
        print(
            f"plain Python token loop: {1 / t_plain / 1e6:.2f} M samples/s; ours {ours_rate * t_plain:.1f}x"
        )
    return out


def bench_simulate(n: int, runs: int) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    k = 10
    names = [f"s{d}" for d in range(k)]
    sizes = rng.integers(10_000, 200_000, size=k)
    srcs = {nm: range(int(sz)) for nm, sz in zip(names, sizes)}
    w0 = dict(zip(names, rng.dirichlet(np.ones(k)).tolist()))
    w1 = dict(zip(names, rng.dirichlet(np.ones(k)).tolist()))
    sch = ms.weights.schedule([(0, w0), (n // 2, w1)], interpolate="linear", every=4096)
    out: dict[str, Any] = {}
    for unit in ("samples", "tokens"):
        kw: dict[str, Any] = {"max_epochs": {names[0]: 3.0}}
        if unit == "tokens":
            kw.update(
                unit="tokens",
                lengths={nm: rng.integers(1, 4097, size=int(sz)) for nm, sz in zip(names, sizes)},
            )
        ds = ms.MixtureDataset(srcs, weights=sch, seed=0, **kw)
        t = median_time(lambda ds=ds: ds.simulate(n, window=100_000), runs, f"simulate {unit}")
        m = max(10_000, n // 50)

        def iterate(ds: Any = ds, m: int = m) -> None:
            import itertools

            for _ in itertools.islice(ds, m):
                pass

        t_iter = median_time(iterate, runs, f"iterate {unit}") / m
        out[unit] = {
            "positions_per_s": n / t,
            "iterate_samples_per_s": 1 / t_iter,
            "ratio_vs_iterating": (n / t) * t_iter,
        }
        print(
            f"simulate, unit={unit}: {n / t / 1e6:.1f} M positions/s ({(n / t) * t_iter:.0f}x iterating)",
            flush=True,
        )
    return out


def sources(n_each: int) -> dict[str, list[int]]:
    return {name: list(range(d * 10**9, d * 10**9 + n_each)) for d, name in enumerate(NAMES)}


def consume(it: Any, n: int) -> None:
    for _ in zip(range(n), it):
        pass


def bench_overhead(n: int, peer_n: int, hf_n: int, runs: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    src = sources(max(n, peer_n))
    single = src["web"]

    def per_sample(fn: Callable[[], Any], count: int, label: str) -> float:
        return median_time(fn, runs, label) / count

    base_py = per_sample(lambda: consume(iter(single), n), n, "plain list")
    res["plain_list_us"] = base_py * 1e6
    # The peers read their sources in order; shuffle=False compares like with like. With
    # shuffle=True each source is read in a fresh random order per epoch (cache misses included).
    for mode, shuffle in (("exact", False), ("random", False), ("exact", True)):
        label = f"mixsieve_{mode}" + ("_shuffled" if shuffle else "")

        def ours(mode: str = mode, shuffle: bool = shuffle) -> None:
            consume(iter(ms.MixtureDataset(src, WEIGHTS, mode=mode, seed=0, shuffle=shuffle)), n)

        t = per_sample(ours, n, label)
        res[label] = {"per_sample_us": t * 1e6, "overhead_us": (t - base_py) * 1e6, "samples_per_s": 1 / t}
        print(
            f"{label}: {1 / t / 1e6:.2f} M samples/s, overhead {(t - base_py) * 1e9:.0f} ns/sample",
            flush=True,
        )

    def choices_loop() -> None:
        its = [iter(src[k]) for k in NAMES]
        idx = range(3)
        for _ in range(n):
            d = random.choices(idx, WEIGHTS)[0]
            next(its[d])

    t = per_sample(choices_loop, n, "random.choices loop")
    res["random_choices_loop"] = {"per_sample_us": t * 1e6, "overhead_us": (t - base_py) * 1e6}
    print(f"random.choices loop: overhead {(t - base_py) * 1e9:.0f} ns/sample", flush=True)

    try:
        from torchdata.nodes import IterableWrapper, Loader, MultiNodeWeightedSampler

        def td_mix() -> None:
            node = MultiNodeWeightedSampler(
                {k: IterableWrapper(src[k]) for k in NAMES},
                {k: float(w) for k, w in zip(NAMES, WEIGHTS)},
                seed=0,
            )
            consume(iter(Loader(node)), peer_n)

        def td_single() -> None:
            consume(iter(Loader(IterableWrapper(single))), peer_n)

        label = "torchdata MultiNodeWeightedSampler"
        res["torchdata"] = peer_overhead(label, td_mix, td_single, peer_n, runs)
    except ImportError as e:
        print(f"torchdata not installed, skipped ({e})", file=sys.stderr)

    try:
        import grain

        def gr_mix() -> None:
            mixed = grain.MapDataset.mix([grain.MapDataset.source(src[k]) for k in NAMES], weights=WEIGHTS)
            for i in range(peer_n):
                mixed[i]

        def gr_single() -> None:
            s = grain.MapDataset.source(single)
            for i in range(peer_n):
                s[i]

        res["grain"] = peer_overhead("grain MapDataset.mix", gr_mix, gr_single, peer_n, runs)
    except ImportError as e:
        print(f"grain not installed, skipped ({e})", file=sys.stderr)

    try:
        import datasets

        datasets.disable_progress_bars()

        def gen(lst: list[int]) -> Any:
            for x in lst:
                yield {"x": x}

        def hf_sources() -> list[Any]:
            return [
                datasets.IterableDataset.from_generator(gen, gen_kwargs={"lst": src[k][:hf_n]}) for k in NAMES
            ]

        def hf_mix() -> None:
            mixed = datasets.interleave_datasets(
                hf_sources(), probabilities=WEIGHTS, seed=0, stopping_strategy="all_exhausted"
            )
            consume(iter(mixed), hf_n)

        def hf_single() -> None:
            consume(iter(hf_sources()[0]), hf_n)

        res["hf_interleave"] = peer_overhead(
            f"HF interleave_datasets {datasets.__version__}", hf_mix, hf_single, hf_n, runs
        )
        res["hf_interleave"]["version"] = datasets.__version__
    except ImportError as e:
        print(f"datasets not installed, skipped ({e})", file=sys.stderr)
    return res


class OneSource:
    """The baseline IterableDataset: one list, sharded over DataLoader workers, yielding the
    same (source name, item) pairs as MixtureDataset so that collation costs the same."""

    def __init__(self, items: list[int]):
        self.items = items

    def __iter__(self) -> Any:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        items = self.items if info is None else self.items[info.id :: info.num_workers]
        return zip(["web"] * len(items), items)


def bench_loader(n: int, runs: int) -> dict[str, Any]:
    try:
        import torch  # noqa: F401
        from torch.utils.data import DataLoader, IterableDataset
    except ImportError:
        print("torch not installed, DataLoader throughput skipped", file=sys.stderr)
        return {}

    class Single(OneSource, IterableDataset):  # type: ignore[misc]
        pass

    src = sources(n)
    out: dict[str, Any] = {}
    for workers in (0, 2):

        def ours(workers: int = workers) -> None:
            ds = ms.MixtureDataset(src, WEIGHTS, seed=0, num_samples=n, batch_size=256, shuffle=False)
            for _ in DataLoader(ds, batch_size=256, num_workers=workers):
                pass

        def single(workers: int = workers) -> None:
            for _ in DataLoader(Single(src["web"][:n]), batch_size=256, num_workers=workers):
                pass

        med = run_rounds({"mixsieve": ours, "one source": single}, runs, f"DataLoader {workers} workers")
        to, ts = med["mixsieve"], med["one source"]
        out[f"workers_{workers}"] = {
            "mixsieve_samples_per_s": n / to,
            "single_source_samples_per_s": n / ts,
            "ratio": ts / to,
        }
        print(
            f"DataLoader, {workers} workers: mixsieve {n / to / 1e3:.0f} k/s, "
            f"one source {n / ts / 1e3:.0f} k/s "
            f"-> {ts / to:.2f} of the single-source throughput",
            flush=True,
        )
    return out


def bench_resume(position: int, runs: int) -> dict[str, Any]:
    """State size; the cost of a state at `position` from consumed_samples (a replay of the
    schedule, no data): the first one replays from 0, the next (1M samples later) from the last;
    and the time to load a state and get the first sample."""
    src = sources(100_000)
    ds = ms.MixtureDataset(src, WEIGHTS, seed=0)
    t0 = time.perf_counter()
    ds.state_dict(consumed_samples=position - 1_000_000)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = ds.state_dict(consumed_samples=position)
    t_next = time.perf_counter() - t0
    blob = json.dumps(state)

    def restore() -> None:
        fresh = ms.MixtureDataset(src, WEIGHTS, seed=0)
        fresh.load_state_dict(json.loads(blob))
        next(iter(fresh))

    t_restore = median_time(restore, runs, "load + first sample")
    print(
        f"resume at position {position:,}: state {len(blob)} bytes; from consumed_samples: first "
        f"{t_first * 1e3:.0f} ms (replay from 0), next 1M later {t_next * 1e3:.1f} ms; "
        f"load + first sample {t_restore * 1e3:.2f} ms",
        flush=True,
    )
    return {
        "position": position,
        "state_bytes": len(blob),
        "first_state_ms": t_first * 1e3,
        "next_state_ms": t_next * 1e3,
        "restore_ms": t_restore * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel-n", type=float, default=1e7)
    ap.add_argument("--n", type=float, default=2e6, help="samples for mixsieve and the plain loop")
    ap.add_argument("--peer-n", type=float, default=2e5, help="samples for torchdata and grain")
    ap.add_argument("--hf-n", type=float, default=2e4, help="samples for HF datasets (slow)")
    ap.add_argument("--loader-n", type=float, default=1e6)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default="bench/results/mixture.json")
    ap.add_argument("--resume-at", type=float, default=1e8, help="global position of the resume test")
    ap.add_argument("--tokens-n", type=float, default=1e6, help="samples through iter(ds) in token mode")
    ap.add_argument(
        "--parts", default="kernel,overhead,loader,resume,tokens,simulate", help="which measurements to run"
    )
    ap.add_argument("--simulate-n", type=float, default=5e7, help="positions of the dry-run benchmark")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    args = ap.parse_args()
    if args.smoke:
        args.kernel_n, args.n, args.peer_n, args.hf_n, args.loader_n, args.runs = 1e4, 2e3, 1e3, 200, 2048, 1
        args.tokens_n = 2e3
        args.simulate_n = 2e4
        args.resume_at = 2e6
    out: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    parts = set(args.parts.split(","))
    if "kernel" in parts:
        out["kernel"] = bench_kernel(int(args.kernel_n), args.runs)
    if "overhead" in parts:
        ov = out["overhead"] = bench_overhead(int(args.n), int(args.peer_n), int(args.hf_n), args.runs)
        ours = ov["mixsieve_exact"]["overhead_us"]
        ratios = {
            peer: ov[peer]["overhead_us"] / ours
            for peer in ("hf_interleave", "torchdata", "grain", "random_choices_loop")
            if peer in ov
        }
        out["ratio_overhead_theirs_over_ours"] = ratios
        print("overhead ratios (theirs / ours): " + ", ".join(f"{k} {v:.1f}x" for k, v in ratios.items()))
    if "loader" in parts:
        out["loader"] = bench_loader(int(args.loader_n), args.runs)
    if "resume" in parts:
        out["resume"] = bench_resume(int(args.resume_at), args.runs)
    if "tokens" in parts:
        out["tokens_kernel"] = bench_tokens_kernel(int(args.kernel_n), args.runs)
        out["tokens_iter"] = bench_tokens_iter(int(args.tokens_n), args.runs)
    if "simulate" in parts:
        out["simulate"] = bench_simulate(int(args.simulate_n), args.runs)
    write_result(args.out, out)


if __name__ == "__main__":
    main()
