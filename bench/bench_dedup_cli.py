"""mixsieve-dedup end to end vs datatrove's MinHash pipeline (and text-dedup, if it runs here).

Input: --mb megabytes (default 520) of JSONL in 8 shard files: English-like documents of
1-4 KB (bench/corpus.py) with 10% planted near-duplicates. mixsieve-dedup runs on all of it
with --threads 2; wall time and peak RSS (of the child process, from wait4) are measured.
Peers run on the same shard files -- all of them, or the first --peer-shards when they are
too slow to run on everything -- and mixsieve runs again on exactly that subset, so every
ratio compares the same input: ratio = peer time / mixsieve time.

datatrove: MinhashDedupSignature -> Buckets -> Cluster -> Filter with JsonlReader/JsonlWriter
and its default 14x8 MinHash config, 2 workers (LocalPipelineExecutor). text-dedup: its MinHash
script, 128 permutations, 5-grams, threshold 0.8, 2 processes, datasets' json loader (offline).
Peer timings include their interpreter start-up and imports, as a user running them pays.

Usage: python bench/bench_dedup_cli.py [--mb 520] [--peer-shards 1] [--runs 3] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import corpus  # noqa: E402
from common import write_result  # noqa: E402
from mixsieve.cli import dedup_binary  # noqa: E402

SHARDS = 8


def make_corpus(folder: Path, mb: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"done-{mb}mb"
    files = [folder / f"shard-{i:02d}.jsonl" for i in range(SHARDS)]
    if marker.exists():
        return files
    n = max(200, int(mb * 1e6 / 2500))
    base = corpus.english_like(int(n * 0.9), seed=21)
    docs = corpus.with_near_duplicates(base, n - len(base), seed=22)
    per = (len(docs) + SHARDS - 1) // SHARDS
    for i, f in enumerate(files):
        with f.open("w") as out:
            for j, d in enumerate(docs[i * per : (i + 1) * per]):
                out.write(json.dumps({"id": i * per + j, "text": d}) + "\n")
    marker.touch()
    return files


def run_timed(cmd: list[str], **kw: Any) -> tuple[float, int]:
    """Wall seconds and peak RSS bytes of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err[-2000:]}")
    return dt, usage.ru_maxrss * 1024


def mixsieve(files: list[Path], out: Path, runs: int) -> dict[str, Any]:
    times, peaks = [], []
    for _ in range(runs):
        dt, peak = run_timed([dedup_binary(), *map(str, files), "-o", str(out), "--threads", "2", "--quiet"])
        times.append(dt)
        peaks.append(peak)
    return {"seconds": statistics.median(times), "all_seconds": times, "peak_rss_bytes": max(peaks)}


DATATROVE_SCRIPT = r"""
import sys, shutil
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import (MinhashDedupSignature, MinhashDedupBuckets, MinhashDedupCluster,
                                      MinhashDedupFilter)
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers.jsonl import JsonlWriter
inp, work, n_files = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = MinhashConfig()
logs = work + "/logs"
def reader():
    return JsonlReader(inp, glob_pattern="shard-*.jsonl")
LocalPipelineExecutor(pipeline=[reader(), MinhashDedupSignature(output_folder=work + "/sigs", config=cfg)],
                      tasks=n_files, workers=2, logging_dir=logs + "/1").run()
LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=work + "/sigs",
                                                    output_folder=work + "/buckets", config=cfg)],
                      tasks=cfg.num_buckets, workers=2, logging_dir=logs + "/2").run()
LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=work + "/buckets",
                                                    output_folder=work + "/remove", config=cfg)],
                      tasks=1, workers=1, logging_dir=logs + "/3").run()
LocalPipelineExecutor(pipeline=[reader(), MinhashDedupFilter(input_folder=work + "/remove"),
                      JsonlWriter(work + "/out")], tasks=n_files, workers=2, logging_dir=logs + "/4").run()
"""


def datatrove(files: list[Path], work: Path) -> dict[str, Any]:
    try:
        import datatrove  # noqa: F401
    except ImportError:
        return {"ran": False, "why": "datatrove is not installed (pip install 'datatrove[processing]')"}
    inp = work / "input"
    shutil.rmtree(work, ignore_errors=True)
    inp.mkdir(parents=True)
    for f in files:
        os.link(f, inp / f.name)
    try:
        dt, peak = run_timed(
            [sys.executable, "-c", DATATROVE_SCRIPT, str(inp), str(work), str(len(files))],
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    except RuntimeError as e:
        return {"ran": False, "why": str(e)[-800:]}
    return {"ran": True, "seconds": dt, "peak_rss_bytes": peak}


def text_dedup(files: list[Path], work: Path) -> dict[str, Any]:
    """text-dedup's MinHash script (click CLI of text-dedup 0.4), 128 permutations, 5-grams,
    threshold 0.8, 2 processes, reading the same shards with datasets' json loader (offline).
    It writes a Hugging Face dataset folder, not JSONL."""
    try:
        import text_dedup  # noqa: F401
    except ImportError:
        return {"ran": False, "why": "text-dedup is not installed (pip install text-dedup)"}
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pattern = str(files[0].parent / "shard-*.jsonl") if len(files) == SHARDS else None
    data_files = pattern or ",".join(map(str, files))
    if len(files) not in (1, SHARDS):
        return {"ran": False, "why": "text-dedup takes one file or the whole folder here"}
    cmd = [
        sys.executable,
        "-m",
        "text_dedup.minhash",
        "--path",
        "json",
        "--data_files",
        data_files,
        "--split",
        "train",
        "--output",
        str(work / "out"),
        "--column",
        "text",
        "--num_perm",
        "128",
        "--ngram",
        "5",
        "--threshold",
        "0.8",
        "--num_proc",
        "2",
        "--cache_dir",
        str(work / "cache"),
    ]
    try:
        dt, peak = run_timed(
            cmd, env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}, cwd=work
        )
    except RuntimeError as e:
        return {"ran": False, "why": str(e)[-800:]}
    return {"ran": True, "seconds": dt, "peak_rss_bytes": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=520)
    ap.add_argument("--peer-shards", type=int, default=1, help="shards the peers run on (0: all)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default="bench/results/dedup_cli")
    ap.add_argument("--out", default="bench/results/dedup_cli.json")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.mb, args.runs, args.workdir = 4, 1, args.workdir + "_smoke"
    work = Path(args.workdir)
    print(f"corpus: {args.mb} MB of JSONL ...", file=sys.stderr)
    files = [f.resolve() for f in make_corpus(work / "corpus", args.mb)]
    total_mb = sum(f.stat().st_size for f in files) / 1e6
    full = mixsieve(files, work / "out.jsonl", args.runs)
    subset = files if args.peer_shards == 0 else files[: args.peer_shards]
    sub_mb = sum(f.stat().st_size for f in subset) / 1e6
    ours_sub = mixsieve(subset, work / "out_subset.jsonl", args.runs)
    print(f"datatrove on {len(subset)} shard(s), {sub_mb:.0f} MB ...", file=sys.stderr)
    peers = {
        "datatrove": datatrove(subset, work / "datatrove"),
        "text-dedup": text_dedup(subset, work / "textdedup"),
    }
    for p in peers.values():
        if p.get("ran"):
            p["mb_per_s"] = sub_mb / p["seconds"]
            p["ratio_vs_mixsieve"] = p["seconds"] / ours_sub["seconds"]
    print(
        f"\nmixsieve-dedup, {total_mb:.0f} MB JSONL ({SHARDS} files), 2 threads: {full['seconds']:.2f} s "
        f"= {total_mb / full['seconds']:.0f} MB/s, peak RSS {full['peak_rss_bytes'] / 2**20:.0f} MiB"
    )
    print(
        f"same {sub_mb:.0f} MB subset for all: mixsieve {ours_sub['seconds']:.2f} s "
        f"({sub_mb / ours_sub['seconds']:.0f} MB/s)"
    )
    for name, p in peers.items():
        if p.get("ran"):
            print(
                f"  {name:<11}{p['seconds']:8.2f} s  {p['mb_per_s']:7.1f} MB/s  "
                f"peak {p['peak_rss_bytes'] / 2**20:6.0f} MiB"
                f"  mixsieve x{p['ratio_vs_mixsieve']:.1f}"
            )
        else:
            print(f"  {name:<11}did not run: {p['why']}")
    result = {
        "benchmark": "dedup_cli",
        "mb": total_mb,
        "full": {**full, "mb_per_s": total_mb / full["seconds"]},
        "subset_mb": sub_mb,
        "mixsieve_subset": {**ours_sub, "mb_per_s": sub_mb / ours_sub["seconds"]},
        "peers": peers,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
