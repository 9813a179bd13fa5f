"""Raw text -> MinHash signatures (128 permutations, word 5-grams), one core, ours vs peers.

Peers, each on the same documents in the same process:
  * datasketch: Python shingling (lower/split/5-gram join/encode) + ``MinHash.bulk`` (its
    batch API, default scheme);
  * rensa: the same Python shingling into lists of str + ``RMinHash.digest_matrix_from_token_sets``
    (full-set R-MinHash matrix API, not the position-sampling "rho" variant);
  * gaoya: ``bulk_hash_docs`` on raw text (it tokenises, lower-cases and shingles in Rust).
Rounds are interleaved (each round runs every method once); medians of CPU time
(``time.process_time``, robust on shared machines) and wall time are reported, and
ratios use the CPU-time medians. Everything runs pinned to one core with peer thread pools
set to one thread.

Second part: ``ms.dedup`` end to end on --dedup-docs documents (default 200k) with 2 threads,
in a fresh subprocess so its peak memory is its own: time, docs/s, MB/s, peak RSS per document.

Third part: ``ms.dedup`` (2 threads) on templated pages (bench/corpus.py ``templated``: one
300-word template plus 20 unique words per page, estimated Jaccard about 0.7 at threshold 0.8)
at several sizes (--template-docs), median of --template-runs: seconds against documents,
which must grow linearly (a rule that verifies every candidate pair grows quadratically here).

Usage: python bench/bench_minhash.py [--docs 20000] [--runs 5] [--dedup-docs 200000]
       [--template-docs 10000,20000,40000,80000] [--template-runs 3] [--smoke]
Needs: pip install ".[bench]"  (datasketch, rensa, gaoya; a peer that is missing is skipped).
"""

from __future__ import annotations

import os

for _var in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import corpus  # noqa: E402
import mixsieve as ms  # noqa: E402
from common import write_result  # noqa: E402

NUM_PERM = 128
NGRAM = 5


def shingle_lists(docs: list[str]) -> list[list[str]]:
    out = []
    for d in docs:
        w = d.lower().split()
        out.append([" ".join(w[i : i + NGRAM]) for i in range(max(len(w) - NGRAM + 1, 1))])
    return out


def methods() -> dict[str, Callable[[list[str]], Any]]:
    found: dict[str, Callable[[list[str]], Any]] = {}
    h = ms.MinHasher(num_perm=NUM_PERM, ngram=NGRAM, seed=1)
    found["mixsieve"] = lambda docs: h.signatures(docs, threads=1)
    try:
        from datasketch import MinHash

        def ds(docs: list[str]) -> Any:
            sets = [[s.encode() for s in sh] for sh in shingle_lists(docs)]
            return MinHash.bulk(sets, num_perm=NUM_PERM)

        found["datasketch"] = ds
    except ImportError:
        print("datasketch not installed: skipped", file=sys.stderr)
    try:
        from rensa import RMinHash

        found["rensa"] = lambda docs: RMinHash.digest_matrix_from_token_sets(
            shingle_lists(docs), NUM_PERM, 42
        )
    except ImportError:
        print("rensa not installed: skipped", file=sys.stderr)
    try:
        from gaoya.minhash import MinHashStringIndex

        gx = MinHashStringIndex(
            hash_size=32,
            jaccard_threshold=0.8,
            num_bands=16,
            band_size=8,
            analyzer="word",
            lowercase=True,
            ngram_range=(NGRAM, NGRAM),
        )
        found["gaoya"] = lambda docs: gx.minhash_index.bulk_hash_docs(docs)
    except ImportError:
        print("gaoya not installed: skipped", file=sys.stderr)
    return found


def sketch_benchmark(docs: list[str], runs: int) -> dict[str, Any]:
    mb = sum(len(d.encode()) for d in docs) / 1e6
    fns = methods()
    for fn in fns.values():  # warm-up (imports, lazy tables, caches)
        fn(docs[:200])
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(runs):
        for name, fn in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            fn(docs)
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
            print(f"  round {r + 1}/{runs} {name:<11} cpu {cpu[name][-1]:7.3f} s", file=sys.stderr)
    rows = {}
    ours = statistics.median(cpu["mixsieve"])
    for name in fns:
        c, w = statistics.median(cpu[name]), statistics.median(wall[name])
        rows[name] = {
            "cpu_s_median": c,
            "cpu_s_min": min(cpu[name]),
            "cpu_s_max": max(cpu[name]),
            "wall_s_median": w,
            "mb_per_s": mb / c,
            "docs_per_s": len(docs) / c,
            "mixsieve_speedup": c / ours,
        }
    return {"docs": len(docs), "mb": mb, "runs": runs, "methods": rows}


def dedup_child(n: int, threads: int) -> None:
    """Runs in a subprocess: generate n docs (10% near-duplicates), then time ms.dedup."""
    base = corpus.english_like(int(n * 0.9), seed=3)
    docs = corpus.with_near_duplicates(base, n - len(base), seed=4)

    def status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
        return 0

    rss0 = status("VmRSS:")
    mb = sum(len(d.encode()) for d in docs) / 1e6
    t0 = time.perf_counter()
    res = ms.dedup(docs, threshold=0.8, num_perm=NUM_PERM, ngram=NGRAM, threads=threads)
    dt = time.perf_counter() - t0
    peak = status("VmHWM:")
    print(
        json.dumps(
            {
                "docs": n,
                "mb": mb,
                "threads": threads,
                "seconds": dt,
                "seconds_parts": res.seconds,
                "docs_per_s": n / dt,
                "mb_per_s": mb / dt,
                "removed": res.num_removed,
                "clusters": res.num_clusters,
                "peak_rss_bytes": peak,
                "rss_before_bytes": rss0,
                "extra_bytes_per_doc": (peak - rss0) / n,
            }
        )
    )


def templated_benchmark(sizes: list[int], runs: int, threads: int) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        docs = corpus.templated(n)
        mb = sum(len(d.encode()) for d in docs) / 1e6
        times, res = [], None
        for _ in range(runs):
            t0 = time.perf_counter()
            res = ms.dedup(docs, threshold=0.8, num_perm=NUM_PERM, ngram=NGRAM, threads=threads)
            times.append(time.perf_counter() - t0)
        assert res is not None
        dt = statistics.median(times)
        rows.append(
            {
                "docs": n,
                "mb": mb,
                "seconds": dt,
                "seconds_parts": res.seconds,
                "us_per_doc": dt / n * 1e6,
                "mb_per_s": mb / dt,
                "comparisons": res.comparisons,
                "comparisons_per_doc": res.comparisons / n,
                "removed": res.num_removed,
            }
        )
        print(
            f"  templated {n:,} docs: {dt:.2f} s ({res.comparisons / n:.0f} comparisons/doc)", file=sys.stderr
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dedup-docs", type=int, default=200_000)
    ap.add_argument("--dedup-threads", type=int, default=2)
    ap.add_argument("--template-docs", default="10000,20000,40000,80000")
    ap.add_argument("--template-runs", type=int, default=3)
    ap.add_argument(
        "--cpu", type=int, default=None, help="core to pin the sketch benchmark to (default: the last)"
    )
    ap.add_argument("--out", default="bench/results/minhash.json")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    ap.add_argument("--_dedup-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._dedup_child is not None:
        dedup_child(args._dedup_child, args.dedup_threads)
        return
    if args.smoke:
        args.docs, args.runs, args.dedup_docs = 300, 1, 2000
        args.template_docs, args.template_runs = "500,1000", 1
    cores = sorted(os.sched_getaffinity(0))
    pin = args.cpu if args.cpu is not None else cores[-1]

    print(f"generating {args.docs} documents ...", file=sys.stderr)
    docs = corpus.english_like(args.docs)
    os.sched_setaffinity(0, {pin})
    sketch = sketch_benchmark(docs, args.runs)
    os.sched_setaffinity(0, set(cores))

    print(f"ms.dedup on {args.dedup_docs} documents, {args.dedup_threads} threads ...", file=sys.stderr)
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            f"--_dedup-child={args.dedup_docs}",
            f"--dedup-threads={args.dedup_threads}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    dd = json.loads(out.stdout.strip().splitlines()[-1])
    sizes = [int(x) for x in args.template_docs.split(",") if x]
    print(f"ms.dedup on templated pages: {sizes} ...", file=sys.stderr)
    tmpl = templated_benchmark(sizes, args.template_runs, args.dedup_threads)

    m = sketch["methods"]
    print(
        f"\nRaw text -> signatures, {NUM_PERM} permutations, word {NGRAM}-grams, one core "
        f"({sketch['docs']:,} docs, {sketch['mb']:.1f} MB, median of {sketch['runs']} runs, CPU time)"
    )
    print(f"{'method':<12}{'CPU s':>9}{'wall s':>9}{'MB/s':>9}{'docs/s':>10}{'mixsieve x':>12}")
    for name, r in sorted(m.items(), key=lambda kv: kv[1]["cpu_s_median"]):
        print(
            f"{name:<12}{r['cpu_s_median']:>9.3f}{r['wall_s_median']:>9.3f}{r['mb_per_s']:>9.1f}"
            f"{r['docs_per_s']:>10.0f}{r['mixsieve_speedup']:>11.1f}x"
        )
    print(
        f"\nms.dedup end to end: {dd['docs']:,} docs ({dd['mb']:.0f} MB), {dd['threads']} threads: "
        f"{dd['seconds']:.2f} s ({dd['docs_per_s']:.0f} docs/s, {dd['mb_per_s']:.0f} MB/s), "
        f"peak RSS {dd['peak_rss_bytes'] / 2**20:.0f} MiB, {dd['extra_bytes_per_doc']:.0f} B/doc above the "
        f"loaded text; removed {dd['removed']:,} in {dd['clusters']:,} clusters"
    )
    print(
        f"\nms.dedup on templated pages (estimated Jaccard ~0.7, threshold 0.8), "
        f"{args.dedup_threads} threads, median of {args.template_runs}:"
    )
    print(f"{'docs':>8}{'MB':>8}{'seconds':>10}{'us/doc':>9}{'MB/s':>8}{'comparisons/doc':>17}{'removed':>9}")
    for r in tmpl:
        print(
            f"{r['docs']:>8}{r['mb']:>8.1f}{r['seconds']:>10.3f}{r['us_per_doc']:>9.1f}{r['mb_per_s']:>8.1f}"
            f"{r['comparisons_per_doc']:>17.1f}{r['removed']:>9}"
        )
    result = {
        "benchmark": "minhash",
        "num_perm": NUM_PERM,
        "ngram": NGRAM,
        "sketch_one_core": sketch,
        "dedup": dd,
        "templated": tmpl,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": len(cores),
            "mixsieve": ms.__version__,
            "simd": ms._core.build_info()["simd"],
        },
        "versions": _versions(),
    }
    write_result(args.out, result)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mixsieve", "datasketch", "rensa", "gaoya", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
