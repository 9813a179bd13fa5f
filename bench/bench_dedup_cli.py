"""mixsieve-dedup end to end vs datatrove's MinHash pipeline (and text-dedup, if it runs here).

Two corpora:
- default: --mb megabytes (default 520) of JSONL in 8 shard files: English-like documents of
  1-4 KB (bench/corpus.py) with 10% planted near-duplicates, made in memory.
- --big-gb G (e.g. 2.0): G x 1e9 bytes of JSONL in --shards files (default 64), written as a
  stream (corpus.DocumentStream: never the whole corpus in memory) with 8% planted near copies
  and 2% exact copies, cached under --cache and reused while its manifest matches; with
  --compress gz|zst the shards are compressed once (gzip -1 / zstd -3) into a sibling folder.
  Sizes and speeds count the decompressed JSONL bytes (MB = 1e6 bytes).

mixsieve-dedup runs on all of it with each of --threads (default 2 and 1 for --big-gb, 2
otherwise): wall seconds (process start to exit, output written), MB/s, documents/s and the
peak RSS of the dedup process (ru_maxrss from wait4, through a small launcher process), also
per input byte and per document. The kept count (lines of the output) is checked against the
planted copies (exit status 1 if it is implausible, after the JSON is written). Before timing,
the shards are read once, so every run finds them in the page cache. A .zst input that this
binary does not read itself goes through `zstd -dc ... | mixsieve-dedup - ...` (said in the
output; the RSS is still mixsieve-dedup's own).

Peers run on the same shard files -- all of them, or the first --peer-shards when they are too
slow to run on everything -- and mixsieve runs again on exactly that subset, so every ratio
compares the same input: ratio = peer time / mixsieve time. datatrove: MinhashDedupSignature ->
Buckets -> Cluster -> Filter with JsonlReader/JsonlWriter and its default 14x8 MinHash config, 2
workers (LocalPipelineExecutor). text-dedup: its MinHash script, 128 permutations, 5-grams,
threshold 0.8, 2 processes, datasets' json loader (offline). Peer timings include their
interpreter start-up and imports, as a user running them pays; a peer's peak RSS is that of its
largest single process (wait4 gives the maximum over a process and its children, not the sum).

Targets (issue 13): 2 threads >= 150 MB/s end to end; peak RSS <= 0.2 x input bytes.

Usage: python bench/bench_dedup_cli.py [--mb 520] [--peer-shards 1] [--runs 3] [--smoke]
       python bench/bench_dedup_cli.py --big-gb 2.0 [--compress none|gz|zst] [--cache DIR] [--no-peers]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import corpus  # noqa: E402
from common import write_result  # noqa: E402
from mixsieve.cli import dedup_binary  # noqa: E402

SHARDS = 8
TARGET_MB_PER_S = 150.0  # 2 threads, end to end
TARGET_RSS_RATIO = 0.2  # peak RSS / input bytes
BIG_CORPUS_VERSION = 1  # bump when corpus.DocumentStream changes its bytes


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


def planted_in_standard_corpus(mb: int) -> dict[str, Any]:
    """What make_corpus planted: near copies only, at rates cycling through corpus' list."""
    n = max(200, int(mb * 1e6 / 2500))
    near = n - int(n * 0.9)
    rates = (0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12)
    by_rate = {str(r): len(range(j, near, len(rates))) for j, r in enumerate(rates)}
    return {"docs": n, "exact": 0, "near": near, "near_by_rate": by_rate}


def make_big_corpus(folder: Path, gb: float, shards: int, seed: int) -> tuple[list[Path], dict[str, Any]]:
    """`shards` JSONL files of gb x 1e9 bytes in all, written batch by batch (a few MB in memory);
    manifest.json, written last, records what was planted and marks the corpus complete."""
    params = {"bytes": int(gb * 1e9), "shards": shards, "seed": seed, "version": BIG_CORPUS_VERSION}
    manifest_path = folder / "manifest.json"
    files = [folder / f"shard-{i:02d}.jsonl" for i in range(shards)]
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        sizes = [f.stat().st_size if f.exists() else -1 for f in files]
        if manifest.get("params") == params and sizes == [s["bytes"] for s in manifest["shards"]]:
            return files, manifest
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    # Small batches for small corpora, so that a smoke-sized one holds copies too.
    stream = corpus.DocumentStream(seed=seed, batch=min(2048, max(64, params["bytes"] // 2500 // 64)))
    rates = [str(r) for r in stream.RATES]
    pending: list[tuple[bytes, int]] = []
    doc_id, written = 0, 0
    shard_info = []
    for i, path in enumerate(files):
        goal = params["bytes"] * (i + 1) // shards
        kinds = [0] * (2 + len(rates))
        size, docs = 0, 0
        with open(path, "wb", buffering=1 << 22) as out:
            while written < goal:
                if not pending:
                    texts, what = stream.next_batch()
                    pending = list(zip(texts, what))[::-1]
                text, kind = pending.pop()
                line = b'{"id": %d, "text": "%s"}\n' % (doc_id, text)
                out.write(line)
                doc_id += 1
                written += len(line)
                size += len(line)
                docs += 1
                kinds[kind] += 1
        shard_info.append(
            {
                "bytes": size,
                "docs": docs,
                "exact": kinds[1],
                "near": sum(kinds[2:]),
                "near_by_rate": dict(zip(rates, kinds[2:])),
            }
        )
        print(f"  wrote {path.name}: {size / 1e6:.0f} MB, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    manifest = {
        "params": params,
        "generate_seconds": time.perf_counter() - t0,
        "shards": shard_info,
    }
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return files, manifest


def planted(manifest: dict[str, Any], n_files: int) -> dict[str, Any]:
    shards = manifest["shards"][:n_files]
    by_rate: dict[str, int] = {}
    for s in shards:
        for r, c in s["near_by_rate"].items():
            by_rate[r] = by_rate.get(r, 0) + c
    return {
        "docs": sum(s["docs"] for s in shards),
        "exact": sum(s["exact"] for s in shards),
        "near": sum(s["near"] for s in shards),
        "near_by_rate": by_rate,
    }


def _zstd_compress_ctypes(src: Path, dst: Path) -> None:
    """zstd level 3 through libzstd.so.1, one frame per 64 MiB block (concatenated frames)."""
    name = ctypes.util.find_library("zstd") or "libzstd.so.1"
    lib = ctypes.CDLL(name)
    lib.ZSTD_compressBound.restype = ctypes.c_size_t
    lib.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
    lib.ZSTD_compress.restype = ctypes.c_size_t
    lib.ZSTD_compress.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_int,
    ]
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    buf = ctypes.create_string_buffer(lib.ZSTD_compressBound(64 << 20))
    with open(src, "rb") as f, open(dst, "wb") as out:
        while block := f.read(64 << 20):
            n = lib.ZSTD_compress(buf, len(buf), block, len(block), 3)
            if lib.ZSTD_isError(n):
                raise RuntimeError(f"ZSTD_compress failed on {src}")
            out.write(buf.raw[:n])


def _compress_one(src: Path, dst: Path, fmt: str) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    tool = {"gz": ["gzip", "-1", "-c"], "zst": ["zstd", "-3", "-q", "-c", "-T1"]}[fmt]
    if shutil.which(tool[0]):
        with open(src, "rb") as i, open(tmp, "wb") as o:
            subprocess.run([*tool], stdin=i, stdout=o, check=True)
    elif fmt == "gz":
        with open(src, "rb") as i, gzip.open(tmp, "wb", compresslevel=1) as o:
            shutil.copyfileobj(i, o, 1 << 22)
    else:
        _zstd_compress_ctypes(src, tmp)
    tmp.rename(dst)


def compressed(files: list[Path], fmt: str) -> list[Path]:
    """The shards compressed (2 at a time) into a sibling folder named after fmt, made once."""
    folder = files[0].parent / fmt
    out = [folder / f"{f.name}.{fmt}" for f in files]
    stamp = folder / "done"
    expect = (files[0].parent / "manifest.json").read_text()
    if stamp.exists() and stamp.read_text() == expect and all(f.exists() for f in out):
        return out
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(_compress_one, files, out, [fmt] * len(files)))
    stamp.write_text(expect)
    print(f"  compressed to {fmt} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return out


def read_through(files: list[Path]) -> float:
    """Reads every file once (so timed runs find them in the page cache); returns seconds."""
    t0 = time.perf_counter()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.read(16 << 20):
                pass
    return time.perf_counter() - t0


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb", buffering=0) as f:
        while block := f.read(16 << 20):
            n += block.count(b"\n")
    return n


def input_mode(files: list[Path], work: Path) -> str:
    """'direct' when mixsieve-dedup reads these files itself; 'zstd-pipe' for .zst input it does
    not read (today's binary: gzip only) when the zstd CLI can decompress it into standard input."""
    if not files[0].name.endswith(".zst"):
        return "direct"
    probe = work / "probe.jsonl"
    probe.write_text('{"text": "one two three four five six"}\n')
    _compress_one(probe, work / "probe.jsonl.zst", "zst")
    proc = subprocess.run(
        [dedup_binary(), str(work / "probe.jsonl.zst"), "-o", str(work / "probe.out"), "--quiet"],
        capture_output=True,
        text=True,
    )
    if proc.returncode == 0:
        return "direct"
    if shutil.which("zstd") is None:
        raise SystemExit(
            f"mixsieve-dedup does not read .zst here ({proc.stderr.strip()}) and the zstd CLI is missing"
        )
    return "zstd-pipe"


# Runs the measured command from a fresh, small process. ru_maxrss is not the command's own
# peak when it is started from this one: exec keeps the high-water RSS of the memory it replaces,
# which after fork (or vfork, as subprocess uses) is this interpreter's -- numpy, the corpus
# generator -- so a bare `true` would read as hundreds of MiB. The launcher's own RSS is a floor
# (rss_floor below); readings under it are not the command's.
LAUNCHER = r"""
import json, os, sys, time
feed, cmd, err_path = json.loads(sys.argv[1])
err = os.open(err_path, os.O_WRONLY)
null = os.open(os.devnull, os.O_RDWR)
def spawn(argv, fd_in, fd_out):
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(fd_in, 0); os.dup2(fd_out, 1); os.dup2(err, 2)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    return pid
t0 = time.perf_counter()
feed_pid, fd_in = None, null
if feed:
    fd_in, w = os.pipe()
    feed_pid = spawn(feed, null, w)
    os.close(w)
pid = spawn(cmd, fd_in, null)
if feed:
    os.close(fd_in)
_, status, usage = os.wait4(pid, 0)
feed_rc = os.waitstatus_to_exitcode(os.waitpid(feed_pid, 0)[1]) if feed else 0
print(json.dumps({"seconds": time.perf_counter() - t0, "rc": os.waitstatus_to_exitcode(status),
                  "feed_rc": feed_rc, "peak_rss_bytes": usage.ru_maxrss * 1024}))
"""


def run_timed(cmd: list[str], *, feed: list[str] | None = None, **kw: Any) -> tuple[float, int, str]:
    """Wall seconds, peak RSS bytes (wait4's ru_maxrss) and standard error of one command run by
    LAUNCHER; with `feed`, that command's standard output is piped into the command's standard
    input (timed together; the RSS is the command's own)."""
    with tempfile.NamedTemporaryFile() as err:
        launcher = [sys.executable, "-S", "-c", LAUNCHER, json.dumps([feed, cmd, err.name])]
        proc = subprocess.run(launcher, capture_output=True, text=True, **kw)
        text = Path(err.name).read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"measuring {cmd[0]} failed: {proc.stderr[-2000:]}")
    r = json.loads(proc.stdout)
    if r["rc"] != 0 or r["feed_rc"] != 0:
        raise RuntimeError(f"{cmd[0]} failed (exit {r['rc']}, feed exit {r['feed_rc']}): {text[-2000:]}")
    return r["seconds"], r["peak_rss_bytes"], text


def rss_floor() -> int:
    """The peak RSS that `true` reads as through LAUNCHER: readings this low are the launcher's."""
    return run_timed(["true"])[1]


def mixsieve(files: list[Path], out: Path, runs: int, threads: int, mode: str) -> dict[str, Any]:
    """Median wall seconds of `runs` runs, the largest peak RSS, and the kept count (output lines)."""
    inputs, feed = [str(f) for f in files], None
    if mode == "zstd-pipe":
        inputs, feed = ["-"], ["zstd", "-dc", "-q", *map(str, files)]
    cmd = [dedup_binary(), *inputs, "-o", str(out), "--threads", str(threads)]
    times, peaks = [], []
    summary = ""
    for r in range(runs):
        dt, peak, err = run_timed(cmd, feed=feed)
        times.append(dt)
        peaks.append(peak)
        summary = err.strip().splitlines()[-1] if err.strip() else ""
        print(
            f"    {threads} thread(s), run {r + 1}/{runs}: {dt:.2f} s, {peak / 2**20:.0f} MiB",
            file=sys.stderr,
        )
    kept = count_lines(out)
    out.unlink()
    return {
        "threads": threads,
        "seconds": statistics.median(times),
        "all_seconds": times,
        "peak_rss_bytes": max(peaks),
        "kept": kept,
        "summary": summary,
    }


def add_rates(run: dict[str, Any], input_bytes: int, docs: int) -> dict[str, Any]:
    run["mb_per_s"] = input_bytes / 1e6 / run["seconds"]
    run["docs_per_s"] = docs / run["seconds"]
    run["rss_over_input"] = run["peak_rss_bytes"] / input_bytes
    run["rss_bytes_per_doc"] = run["peak_rss_bytes"] / docs
    run["removed"] = docs - run["kept"]
    return run


def plausible(removed: int, plant: dict[str, Any]) -> dict[str, Any]:
    """Every exact copy must go, and near copies at edit rates <= 1% (word 5-gram Jaccard about
    0.9 and up) nearly all (90%); nothing beyond the planted copies can go, since the originals
    are independent draws (any two share far too few word 5-grams to match)."""
    easy = sum(c for r, c in plant["near_by_rate"].items() if float(r) <= 0.01)
    low = plant["exact"] + int(0.9 * easy)
    high = plant["exact"] + plant["near"]
    return {"removed": removed, "expected_min": low, "expected_max": high, "ok": low <= removed <= high}


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
    return JsonlReader(inp, glob_pattern="shard-*")
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
    if files[0].name.endswith(".zst"):
        try:
            import zstandard  # noqa: F401
        except ImportError:
            return {"ran": False, "why": "datatrove reads .zst through zstandard, which is not installed"}
    inp = work / "input"
    shutil.rmtree(work, ignore_errors=True)
    inp.mkdir(parents=True)
    for f in files:
        os.link(f, inp / f.name)
    try:
        dt, peak, _ = run_timed(
            [sys.executable, "-c", DATATROVE_SCRIPT, str(inp), str(work), str(len(files))],
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    except RuntimeError as e:
        return failed(e)
    finally:
        shutil.rmtree(inp, ignore_errors=True)
    return {"ran": True, "seconds": dt, "peak_rss_bytes": peak}


def failed(e: Exception) -> dict[str, Any]:
    """A peer that stopped: its last line of standard error as the reason, the tail kept too."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    return {"ran": False, "why": lines[-1].strip() if lines else "failed", "stderr_tail": str(e)[-2000:]}


def text_dedup(files: list[Path], work: Path, all_files: int) -> dict[str, Any]:
    """text-dedup's MinHash script (click CLI of text-dedup 0.4), 128 permutations, 5-grams,
    threshold 0.8, 2 processes, reading the same shards with datasets' json loader (offline).
    It writes a Hugging Face dataset folder, not JSONL."""
    try:
        import text_dedup  # noqa: F401
    except ImportError:
        return {"ran": False, "why": "text-dedup is not installed (pip install text-dedup)"}
    if len(files) not in (1, all_files):
        return {"ran": False, "why": "text-dedup takes one file or the whole folder here"}
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    suffix = files[0].name.split(".", 1)[1]
    data_files = str(files[0].parent / f"shard-*.{suffix}") if len(files) == all_files else str(files[0])
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
        dt, peak, _ = run_timed(
            cmd, env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}, cwd=work
        )
    except RuntimeError as e:
        return failed(e)
    return {"ran": True, "seconds": dt, "peak_rss_bytes": peak}


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=520, help="size of the default corpus")
    ap.add_argument("--big-gb", type=float, default=0.0, help="streamed corpus of this many GB (1e9 bytes)")
    ap.add_argument("--shards", type=int, default=64, help="files of the --big-gb corpus")
    ap.add_argument("--seed", type=int, default=2026, help="seed of the --big-gb corpus")
    ap.add_argument("--compress", choices=["none", "gz", "zst"], default="none", help="--big-gb shards")
    ap.add_argument("--cache", default=None, help="folder of the --big-gb corpus (default: under --workdir)")
    ap.add_argument("--threads", default=None, help="comma-separated (default: 2,1 with --big-gb, else 2)")
    ap.add_argument("--peer-shards", type=int, default=1, help="shards the peers run on (0: all)")
    ap.add_argument("--no-peers", action="store_true", help="mixsieve-dedup only (peers take minutes)")
    ap.add_argument(
        "--runs", type=int, default=None, help="runs per setting (default: 1 with --big-gb, else 3)"
    )
    ap.add_argument("--workdir", default="bench/results/dedup_cli")
    ap.add_argument("--out", default="bench/results/dedup_cli.json")
    ap.add_argument("--smoke", action="store_true", help="a few MB, one run (for tests)")
    args = ap.parse_args()
    big = args.big_gb > 0
    if args.smoke:
        args.mb, args.runs, args.workdir = 4, 1, args.workdir + "_smoke"
        args.big_gb, args.shards = (0.004, 4) if big else (0.0, args.shards)
    if args.compress != "none" and not big:
        ap.error("--compress needs --big-gb")
    runs = args.runs or (1 if big else 3)
    threads = [int(t) for t in (args.threads or ("2,1" if big else "2")).split(",")]
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)

    if big:
        cache = Path(args.cache) if args.cache else work / "corpus-big"
        folder = cache / f"{args.big_gb:g}gb-{args.shards}x-seed{args.seed}"
        print(
            f"corpus: {args.big_gb:g} GB of JSONL in {args.shards} files under {folder} ...", file=sys.stderr
        )
        plain, manifest = make_big_corpus(folder, args.big_gb, args.shards, args.seed)
        plain = [f.resolve() for f in plain]
        files = plain if args.compress == "none" else compressed(plain, args.compress)
        sizes = [s["bytes"] for s in manifest["shards"]]
        plant = planted(manifest, len(files))
        generated = manifest["generate_seconds"]
    else:
        print(f"corpus: {args.mb} MB of JSONL ...", file=sys.stderr)
        files = plain = [f.resolve() for f in make_corpus(work / "corpus", args.mb)]
        sizes = [f.stat().st_size for f in files]
        plant = planted_in_standard_corpus(args.mb)
        generated = None
    docs_per_file = [count_lines(f) for f in plain] if not big else [s["docs"] for s in manifest["shards"]]
    warm_s = read_through(files)
    mode = input_mode(files, work)
    floor = rss_floor()
    load = os.getloadavg()[0]  # a shared machine's other work slows every timing below
    total = sum(sizes)
    disk = sum(f.stat().st_size for f in files)
    docs = sum(docs_per_file)
    print(f"mixsieve-dedup on {len(files)} files, {total / 1e6:.0f} MB ({mode}) ...", file=sys.stderr)
    by_threads = {
        str(t): add_rates(mixsieve(files, work / "out.jsonl", runs, t, mode), total, docs) for t in threads
    }
    for r in by_threads.values():
        r["kept_check"] = plausible(r["removed"], plant)

    subset = files if args.peer_shards == 0 else files[: args.peer_shards]
    sub_bytes, sub_docs = sum(sizes[: len(subset)]), sum(docs_per_file[: len(subset)])
    sub_mb = sub_bytes / 1e6
    if args.no_peers:
        ours_sub = None
        peers = {name: {"ran": False, "why": "skipped (--no-peers)"} for name in ("datatrove", "text-dedup")}
    else:
        print(
            f"mixsieve-dedup, then peers, on {len(subset)} of {len(files)} files, {sub_mb:.0f} MB ...",
            file=sys.stderr,
        )
        ours_sub = add_rates(mixsieve(subset, work / "out_subset.jsonl", runs, 2, mode), sub_bytes, sub_docs)
        peers = {
            "datatrove": datatrove(subset, work / "datatrove"),
            "text-dedup": text_dedup(subset, work / "textdedup", len(files)),
        }
        for p in peers.values():
            if p.get("ran"):
                p["mb_per_s"] = sub_mb / p["seconds"]
                p["ratio_vs_mixsieve"] = p["seconds"] / ours_sub["seconds"]

    how = {"direct": "", "zstd-pipe": ", .zst fed by zstd -dc through standard input"}[mode]
    kind = f"{args.compress} " if args.compress != "none" else ""
    print(
        f"\nmixsieve-dedup ({dedup_binary()}), {total / 1e6:.0f} MB JSONL = {docs} documents "
        f"({total / docs:.0f} B each) in {len(files)} {kind}files ({disk / 1e6:.0f} MB on disk{how}), "
        f"median of {runs} run(s), page cache warm, load average {load:.1f} before; RSS readings under "
        f"{floor / 2**20:.0f} MiB are the measuring launcher's:"
    )
    for t, r in by_threads.items():
        check = r["kept_check"]
        kept = (
            f"removed {r['removed']} (expected {check['expected_min']}..{check['expected_max']}: "
            f"{'plausible' if check['ok'] else 'IMPLAUSIBLE'})"
        )
        print(
            f"  {t} thread(s): {r['seconds']:7.2f} s  {r['mb_per_s']:6.1f} MB/s  "
            f"{r['docs_per_s']:8.0f} docs/s  "
            f"peak RSS {r['peak_rss_bytes'] / 2**20:6.0f} MiB = {r['rss_over_input']:.2f} x input "
            f"= {r['rss_bytes_per_doc']:.0f} B/doc; {kept}"
        )
    if ours_sub:
        print(
            f"same {sub_mb:.0f} MB subset ({len(subset)} of {len(files)} files) for all: mixsieve 2 threads "
            f"{ours_sub['seconds']:.2f} s ({ours_sub['mb_per_s']:.0f} MB/s, "
            f"peak {ours_sub['peak_rss_bytes'] / 2**20:.0f} MiB)"
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
    two = by_threads.get("2")
    targets = None
    if two:
        targets = {
            "mb_per_s_2_threads": {
                "target_min": TARGET_MB_PER_S,
                "got": two["mb_per_s"],
                "met": two["mb_per_s"] >= TARGET_MB_PER_S,
            },
            "rss_over_input": {
                "target_max": TARGET_RSS_RATIO,
                "got": two["rss_over_input"],
                "met": two["rss_over_input"] <= TARGET_RSS_RATIO,
            },
        }
        print(
            f"targets: 2 threads >= {TARGET_MB_PER_S:.0f} MB/s end to end: {two['mb_per_s']:.1f} MB/s, "
            f"{met(targets['mb_per_s_2_threads']['met'])}; peak RSS <= {TARGET_RSS_RATIO} x input: "
            f"{two['rss_over_input']:.2f} x, {met(targets['rss_over_input']['met'])}"
            + ("" if total >= 2e9 else f" (on {total / 1e9:.2f} GB; the targets are stated for >= 2 GB)")
        )
    result = {
        "benchmark": "dedup_cli",
        "binary": dedup_binary(),
        "corpus": {
            "kind": "big" if big else "standard",
            "folder": str(files[0].parent),
            "files": len(files),
            "compress": args.compress,
            "input_bytes": total,
            "disk_bytes": disk,
            "docs": docs,
            "planted": plant,
            "generate_seconds": generated,
            "read_through_seconds": warm_s,
        },
        "input_mode": mode,
        "rss_floor_bytes": floor,
        "load_average_1min_before": load,
        "runs": runs,
        "mb": total / 1e6,
        "full": by_threads.get("2", next(iter(by_threads.values()))),
        "by_threads": by_threads,
        "subset_files": len(subset),
        "subset_mb": sub_mb,
        "mixsieve_subset": ours_sub,
        "peers": peers,
        "targets": targets,
    }
    write_result(args.out, result)
    if not all(r["kept_check"]["ok"] for r in by_threads.values()):
        sys.exit("mixsieve-dedup removed an implausible number of documents (see above)")


if __name__ == "__main__":
    main()
