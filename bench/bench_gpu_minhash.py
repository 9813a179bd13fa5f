"""MinHash signatures on a CUDA GPU: mixsieve's kernels vs its CPU path, NeMo Curator's published
rate and a torch-only implementation, on the same text in the same run.

Corpus: --gb gigabytes of documents of 1-8 KB (log-uniform lengths), slices at random positions
of the bundled demo corpus (``mixsieve.demo.local_corpus``: the Python standard library's
sources, licence texts and Debian copyright files on this machine; nothing is downloaded).
Signatures: 128 permutations, word 5-grams, uint32 slots (the issue's setting).

  1. mixsieve CUDA from host text: ``MinHasher.signatures(list of str, device="cuda")`` plus
     ``torch.cuda.synchronize()``: packing into pinned memory, upload, normalisation, shingling,
     hashing and the signatures left on the device (end to end from Python strings).
  2. mixsieve CUDA from device-resident text: the same on a ``(data, offsets)`` pair of CUDA
     tensors (the Arrow layout), the kernels plus the host-side offset checks.
  3. mixsieve CPU: ``MinHasher.signatures(list of str)`` on all cores.
  4. NeMo Curator: its published fuzzy-dedup MinHash rate, about 135 MB/s of text per H100 end
     to end (a constant cited from the issue, not run here: it needs RAPIDS).
  5. torch only, from the same device-resident text: ASCII normalisation (letters and digits form
     words, lower-cased; every byte >= 0x80 a word byte: no Unicode tables), an additive hash of
     each word's bytes, word 5-grams combined by multiply-add, fold to 32 bits, and the 128
     permutations' minimum per document with ``scatter_reduce(amin)`` in chunks. Documents with
     fewer than 5 words get no shingle. It stands for what plain torch ops give; its
     signatures are not mixsieve's (different hash and rules) and only its speed is compared.

The CUDA signatures are compared with the CPU's over the whole corpus (bit for bit). Times are
medians of --runs after a warm-up. Targets: CUDA from host text >= 2 GB/s and >= 15x NeMo
Curator's rate. Without a GPU the CPU part runs at the --quick size and the GPU parts are
skipped with the reason (exit 0). JSON to --out (written as the run goes).

Usage: python bench/bench_gpu_minhash.py [--gb 1.0] [--runs 3] [--quick]
       [--out bench/results/minhash_gpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import mixsieve as ms
import numpy as np
from mixsieve import _device, demo
from mixsieve.info import build_info
from mixsieve.mixup import _cuda

NEMO_MB_PER_S = 135.0  # NeMo Curator fuzzy dedup, MinHash, text per H100 end to end (the figure)
NUM_PERM, NGRAM = 128, 5


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write(path: str, result: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2))


def target(case: str, name: str, value: float | None, need: float) -> dict[str, Any]:
    return {"case": case, "target": name, "value": value, "need": f">= {need:g}",
            "met": value is not None and value >= need}  # fmt: skip


def corpus(total_bytes: int, seed: int = 1) -> list[str]:
    """Documents of 1-8 KB cut from the demo corpus at random positions, ``total_bytes`` in all."""
    _, texts = demo.local_corpus()
    pool = "\n".join(texts)
    rng = np.random.default_rng(seed)
    count = total_bytes // 3000 + 16
    lengths = np.exp(rng.uniform(np.log(1000), np.log(8000), count)).astype(np.int64)
    starts = rng.integers(0, len(pool) - 8000, count)
    docs, size = [], 0
    for s, n in zip(starts.tolist(), lengths.tolist()):
        docs.append(pool[s : s + n])
        size += n
        if size >= total_bytes:
            break
    return docs


def median_time(fn: Callable[[], Any], runs: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_signatures(
    torch: Any, data: Any, offsets: Any, a: Any, b: Any, chunk_bytes: int = 128 << 20
) -> Any:
    """The torch-only baseline (see the module docstring): [n, NUM_PERM] int64 minima."""
    dev = data.device
    n = offsets.numel() - 1
    sig = torch.full((n, NUM_PERM), 2**32 - 1, dtype=torch.int64, device=dev)
    keys = torch.randint(1, 2**62, (64,), generator=torch.Generator().manual_seed(5)).to(dev) | 1
    mix = [
        0x9E3779B97F4A7C15 - 2**64,
        0x7F4A7C159E3779B1,
        0x2545F4914F6CDD1D,
        0x5851F42D4C957F2D,
        0x14057B7EF767814F,
    ]
    host = offsets.cpu().numpy()
    i = 0
    while i < n:
        j = int(np.searchsorted(host, host[i] + chunk_bytes, side="right")) - 1
        j = min(max(j, i + 1), n)
        o0, o1 = int(host[i]), int(host[j])
        if o1 > o0:
            c = data[o0:o1].long()
            low = c | 0x20
            letter = (low >= 97) & (low <= 122)
            word = letter | ((c >= 48) & (c <= 57)) | (c >= 128)
            lc = torch.where(letter, low, c)
            bounds = offsets[i : j + 1] - o0
            doc_start = torch.zeros(o1 - o0, dtype=torch.bool, device=dev)
            doc_start[bounds[:-1][bounds[:-1] < o1 - o0]] = True
            prev = torch.roll(word, 1)
            prev[0] = False
            start = word & ~(prev & ~doc_start)
            pos = torch.arange(o1 - o0, device=dev)
            first = torch.cummax(torch.where(start, pos, 0), 0).values
            wid = torch.cumsum(start, 0) - 1
            nw = int(wid[-1]) + 1 if o1 > o0 else 0
            if nw >= NGRAM:
                wh = torch.zeros(nw, dtype=torch.int64, device=dev)
                wh.index_add_(0, wid[word], ((lc + 1) * keys[(pos - first) & 63])[word])
                wh = (wh ^ (wh >> 31)) * mix[1]
                wdoc = torch.searchsorted(bounds, pos[start], right=True) - 1
                m = nw - NGRAM + 1
                sh = torch.zeros(m, dtype=torch.int64, device=dev)
                for q in range(NGRAM):
                    sh = sh * mix[0] + wh[q : q + m]
                ok = wdoc[:m] == wdoc[NGRAM - 1 :]
                x = ((sh ^ (sh >> 32)) & 0xFFFFFFFF)[ok]
                d = wdoc[:m][ok] + i
                step = 1 << 21
                for s0 in range(0, x.numel(), step):
                    xs, ds = x[s0 : s0 + step], d[s0 : s0 + step]
                    v = (xs[:, None] * a[None, :] + b[None, :]) & 0xFFFFFFFF
                    sig.scatter_reduce_(0, ds[:, None].expand(-1, NUM_PERM), v, reduce="amin")
        i = j
    return sig


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=1.0, help="gigabytes of text (1e9 bytes)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="16 MB of text, 2 runs")
    default_out = os.path.join(os.environ.get("OUT") or "bench/results", "minhash_gpu.json")
    p.add_argument("--out", default=default_out)
    a = p.parse_args()
    ok, why = _cuda.available()
    if a.quick or not ok:
        a.gb, a.runs = min(a.gb, 0.016), min(a.runs, 2)
    t0 = time.perf_counter()
    docs = corpus(int(a.gb * 1e9))
    nbytes = sum(len(d.encode()) for d in docs)
    log(f"corpus: {len(docs):,} documents, {nbytes / 1e9:.3f} GB ({time.perf_counter() - t0:.1f} s)")
    result: dict[str, Any] = {
        "args": vars(a),
        "corpus": {
            "documents": len(docs),
            "bytes": nbytes,
            "source": "mixsieve.demo.local_corpus slices, 1-8 KB",
        },
        "setting": {"num_perm": NUM_PERM, "ngram": NGRAM, "unit": "word", "dtype": "uint32"},
        "mixsieve_cuda": why,
        "mixsieve_build": {k: str(v) for k, v in build_info().items()},
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "nemo_curator_mb_per_s": NEMO_MB_PER_S,
        "gb_per_s": {},
    }
    h = ms.MinHasher(NUM_PERM, NGRAM)
    cpu_s = median_time(lambda: h.signatures(docs), a.runs)
    result["gb_per_s"]["mixsieve_cpu_all_cores"] = nbytes / cpu_s / 1e9
    log(f"CPU, all cores: {nbytes / cpu_s / 1e6:.0f} MB/s")
    write(a.out, result)
    if not ok:
        result["gpu_skipped"] = why
        write(a.out, result)
        log(f"GPU parts skipped: {why}")
        return 0

    import torch

    dev = torch.device("cuda")
    result["device"] = torch.cuda.get_device_name(dev)
    result["torch"] = torch.__version__
    sync = torch.cuda.synchronize
    # correctness first: the whole corpus, bit for bit
    ref = h.signatures(docs)
    got = h.signatures(docs, device="cuda")
    result["identical_to_cpu"] = bool(np.array_equal(got.cpu().numpy(), ref))
    del got
    log(f"CUDA signatures identical to the CPU's: {result['identical_to_cpu']}")
    host_s = median_time(lambda: h.signatures(docs, device="cuda"), a.runs, sync)
    result["gb_per_s"]["mixsieve_cuda_from_host_text"] = nbytes / host_s / 1e9
    log(f"CUDA from host text: {nbytes / host_s / 1e9:.2f} GB/s")
    write(a.out, result)

    pack = _device.native().TextPack(docs)
    offsets = pack.offsets()
    buf = np.empty(int(offsets[-1]), np.uint8)
    pack.pack(0, len(docs), buf.ctypes.data, buf.size)
    data = torch.from_numpy(buf).to(dev)
    offsets_dev = torch.from_numpy(offsets).to(dev)
    del buf, pack
    dev_s = median_time(lambda: h.signatures((data, offsets_dev)), a.runs, sync)
    result["gb_per_s"]["mixsieve_cuda_from_device_text"] = nbytes / dev_s / 1e9
    log(f"CUDA from device-resident text: {nbytes / dev_s / 1e9:.2f} GB/s")
    write(a.out, result)

    perm_a = torch.from_numpy(h._core.a.astype(np.int64)).to(dev)
    perm_b = torch.from_numpy(h._core.b.astype(np.int64)).to(dev)
    torch_s = median_time(lambda: torch_signatures(torch, data, offsets_dev, perm_a, perm_b), a.runs, sync)
    result["gb_per_s"]["torch_only_from_device_text"] = nbytes / torch_s / 1e9
    log(f"torch only, device-resident text: {nbytes / torch_s / 1e9:.2f} GB/s")

    rates = result["gb_per_s"]
    host = rates["mixsieve_cuda_from_host_text"]
    result["ratios"] = {
        "cuda_host_text_over_cpu": host / rates["mixsieve_cpu_all_cores"],
        "cuda_host_text_over_nemo": host * 1e3 / NEMO_MB_PER_S,
        "cuda_device_text_over_torch_only": rates["mixsieve_cuda_from_device_text"]
        / rates["torch_only_from_device_text"],
    }
    case = "signatures 128 perm word 5-grams"
    result["targets"] = [
        target(
            case,
            "GB/s of text, CUDA end to end from host text",
            host if result["identical_to_cpu"] else None,
            2.0,
        ),
        target(
            case, "x NeMo Curator's ~135 MB/s per GPU", result["ratios"]["cuda_host_text_over_nemo"], 15.0
        ),
    ]
    write(a.out, result)
    print(json.dumps({"gb_per_s": rates, "ratios": result["ratios"], "targets": result["targets"]}, indent=1))
    return 0 if result["identical_to_cpu"] else 1


if __name__ == "__main__":
    sys.exit(main())
