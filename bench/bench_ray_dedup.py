"""Near-duplicate removal on Ray Data: mixsieve.ray.dedup against single-process ms.dedup and a
plain Ray Data + datasketch pipeline, on the same corpus and the same 2 CPUs.

The corpus: --docs documents (default 200k) of English-like text (bench/corpus.py, 300-1500
characters) of which 10% are edited copies of others (0.5-12% of the words changed). Each
method runs in its own fresh subprocess (so that its peak memory is its own), --runs times;
the median time and the largest peak memory are reported:

* ``ms.dedup``: one process, 2 threads.
* ``msr.dedup``: a local Ray runtime with 2 CPUs (started before the clock), the dataset in
  --blocks blocks; timed until both results (kept and removed rows) are materialised.
* ``ray+datasketch``: what a user writes without mixsieve, with the same steps: signatures in
  ``map_batches`` (Python shingling, lower-cased word 5-grams, ``datasketch.MinHash.bulk``),
  the signatures collected on the driver into ``datasketch.MinHashLSH`` (the same threshold
  and permutations) and queried in row order, clusters by a Python union-find (lowest row
  kept), and the kept rows filtered in ``map_batches``. Run once (it is slow).

Peak memory: the largest sum of the resident set sizes of the process and all its children
(Ray's raylet, object store and workers included), sampled every 50 ms.

Usage: python bench/bench_ray_dedup.py [--docs 200000] [--runs 3] [--blocks 16] [--out FILE]
       [--quick] [--skip-datasketch]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

NUM_PERM, NGRAM, THRESHOLD = 128, 5, 0.8
SCHEME = "affine32"  # datasketch 2 default (uint32 hash values), which MinHash.bulk uses


def make_corpus(n: int) -> list[str]:
    import corpus

    base = corpus.english_like(n - n // 10, seed=21, min_chars=300, max_chars=1500)
    return corpus.with_near_duplicates(base, n // 10, seed=8)


class PeakRss:
    """Largest summed RSS of this process and its descendants, sampled in a thread."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            total = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def close(self) -> int:
        self.stop.set()
        self.thread.join()
        return self.peak


def datasketch_pipeline(ds: Any) -> int:
    import numpy as np
    import ray
    from datasketch import MinHash, MinHashLSH

    def signatures(batch: Any) -> Any:
        shingles = []
        for text in batch["text"].to_pylist():
            w = text.lower().split()
            shingles.append([" ".join(w[i : i + NGRAM]).encode() for i in range(max(len(w) - NGRAM + 1, 1))])
        sketches = MinHash.bulk(shingles, num_perm=NUM_PERM)
        hashes = [m.hashvalues for m in sketches]
        import pyarrow as pa

        return pa.table({"pos": batch["pos"], "sig": pa.array([h.tobytes() for h in hashes], pa.binary())})

    sig = ds.map_batches(signatures, batch_format="pyarrow", batch_size=2048).to_arrow_refs()
    tables = ray.get(sig)
    pos = np.concatenate([t["pos"].to_numpy() for t in tables])
    sigs = [b for t in tables for b in t["sig"].to_pylist()]
    order = np.argsort(pos)
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    parent = list(range(len(order)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i in order.tolist():
        m = MinHash(num_perm=NUM_PERM, hashvalues=np.frombuffer(sigs[i], dtype=np.uint32), scheme=SCHEME)
        for j in lsh.query(m):
            a, b = find(int(pos[i])), find(int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
        lsh.insert(int(pos[i]), m)
    removed = np.array([find(int(p)) != int(p) for p in sorted(pos.tolist())])
    removed_ref = ray.put(np.flatnonzero(removed))

    def keep(batch: Any, removed: Any) -> Any:
        import pyarrow as pa

        removed = ray.get(removed)  # map_batches passes an ObjectRef in fn_kwargs as it is
        return batch.filter(pa.array(~np.isin(batch["pos"].to_numpy(), removed)))

    return int(ds.map_batches(keep, batch_format="pyarrow", fn_kwargs={"removed": removed_ref}).count())


def child(method: str, docs: int, blocks: int) -> None:
    """One timed run of `method` in this (fresh) process; prints a JSON line."""
    import mixsieve as ms
    import numpy as np
    import pyarrow as pa

    texts = make_corpus(docs)
    if method != "ms.dedup":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        table = pa.table({"pos": np.arange(len(texts)), "text": texts})
        ds = ray.data.from_arrow(table).repartition(blocks).materialize()
    mem = PeakRss()
    t0 = time.perf_counter()
    if method == "ms.dedup":
        kept = int(ms.dedup(texts, threshold=THRESHOLD, num_perm=NUM_PERM, ngram=NGRAM, threads=2).keep.sum())
    elif method == "msr.dedup":
        import mixsieve.ray as msr

        k_ds, r_ds = msr.dedup(ds, text_column="text", id_column="pos", threshold=THRESHOLD,
                               num_perm=NUM_PERM, ngram=NGRAM)  # fmt: skip
        kept = k_ds.materialize().count()
        r_ds.materialize()
    else:
        kept = datasketch_pipeline(ds)
    seconds = time.perf_counter() - t0
    print(json.dumps({"method": method, "seconds": seconds, "peak_rss": mem.close(), "kept": kept}))


def run_child(method: str, docs: int, blocks: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", method, "--docs", str(docs), "--blocks", str(blocks)],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{method} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="20k documents, one run each")
    ap.add_argument("--skip-datasketch", action="store_true")
    ap.add_argument("--out", default="bench/results/ray_dedup.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.docs, args.blocks)
        return
    if args.quick:
        args.docs, args.runs = 20_000, 1
    methods = ["ms.dedup", "msr.dedup"] + ([] if args.skip_datasketch else ["ray+datasketch"])
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for r in range(args.runs):
        for m in methods:
            if m == "ray+datasketch" and runs[m]:
                continue  # once is enough to know it is slow
            runs[m].append(run_child(m, args.docs, args.blocks))
            last = runs[m][-1]
            print(f"  round {r + 1}: {m} {last['seconds']:.2f} s, peak {last['peak_rss'] / 2**20:.0f} MiB, "
                  f"kept {last['kept']}", file=sys.stderr)  # fmt: skip
    summary = {
        m: {"seconds": statistics.median(x["seconds"] for x in v),
            "peak_rss_mib": max(x["peak_rss"] for x in v) / 2**20, "kept": v[0]["kept"], "runs": len(v)}
        for m, v in runs.items()
    }  # fmt: skip
    ours = summary["msr.dedup"]["seconds"]
    ratios = {"msr_over_ms_dedup_time": ours / summary["ms.dedup"]["seconds"]}
    targets = [{"case": "ray dedup overhead", "target": "msr.dedup time <= 2x ms.dedup (same 2 cores)",
                "value": round(ratios["msr_over_ms_dedup_time"], 2), "need": 2.0,
                "met": ratios["msr_over_ms_dedup_time"] <= 2.0}]  # fmt: skip
    if "ray+datasketch" in summary:
        ratios["datasketch_over_msr_time"] = summary["ray+datasketch"]["seconds"] / ours
        targets.append({"case": "ray dedup vs datasketch", "target": "msr.dedup >= 10x ray+datasketch",
                        "value": round(ratios["datasketch_over_msr_time"], 1), "need": 10.0,
                        "met": ratios["datasketch_over_msr_time"] >= 10.0})  # fmt: skip
    print(f"\n{args.docs} documents, {args.blocks} blocks, 2 CPUs, medians of {args.runs} runs")
    for m, s in summary.items():
        print(f"  {m:<16} {s['seconds']:8.2f} s   peak {s['peak_rss_mib']:7.0f} MiB   kept {s['kept']}")
    for name, v in ratios.items():
        print(f"  {name}: {v:.2f}")
    result = {
        "bench": "ray_dedup", "docs": args.docs, "blocks": args.blocks, "runs": args.runs,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "summary": summary, "ratios": ratios, "targets": targets,
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
