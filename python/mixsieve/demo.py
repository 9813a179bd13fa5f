"""The bundled default job: dedup and mix real text already on the machine.

Step 1 finds near-duplicates (MinHash + LSH) across the whole corpus. Step 2 streams a weighted
mixture of its three sources (Python code, licence texts, package copyright files), with the
near-duplicates filtered out, through a PyTorch DataLoader with 2 worker processes, and compares
the realised proportions with the targets.

The corpus is the Python standard library's own sources (one document per file; tests,
vendored copies and generated modules hold real near-duplicates) plus, where present, the
licence texts under /usr/share/common-licenses and the per-package copyright files under
/usr/share/doc that Debian-based systems install (the same licences embedded with edits).
"""

from __future__ import annotations

import math
import sys
import sysconfig
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .dedup import dedup

_SYSTEM_TEXT_DIRS = (Path("/usr/share/common-licenses"), Path("/usr/share/doc"))


def local_corpus(limit: int | None = None) -> tuple[list[str], list[str]]:
    """(names, texts) of the default corpus, in a sorted, deterministic order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    paths = [
        (f"stdlib/{p.relative_to(stdlib)}", p)
        for p in sorted(stdlib.rglob("*.py"))
        if "site-packages" not in p.parts
    ]
    licenses, docs = _SYSTEM_TEXT_DIRS
    if licenses.is_dir():
        paths += [(str(p), p) for p in sorted(licenses.iterdir()) if p.is_file()]
    if docs.is_dir():
        paths += [(str(p), p) for p in sorted(docs.glob("*/copyright")) if p.is_file()]
    names, texts = [], []
    for name, path in paths[:limit]:
        try:
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        names.append(name)
    return names, texts


def run(
    *,
    threshold: float = 0.8,
    ngram: int = 5,
    num_perm: int = 128,
    threads: int | None = None,
    limit: int | None = None,
    top: int = 8,
    mix: bool = True,
    samples: int = 20_000,
    workers: int = 2,
    out: TextIO = sys.stdout,
) -> int:
    """Deduplicate the local corpus, print a short report, then (``mix``) stream a mixture of
    its deduplicated sources through a DataLoader; returns the number of documents removed."""
    t0 = time.perf_counter()
    names, texts = local_corpus(limit)
    t_read = time.perf_counter() - t0
    if not texts:
        out.write("mixsieve demo: found no local text to deduplicate\n")
        return 0
    nbytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    res = dedup(texts, threshold=threshold, ngram=ngram, num_perm=num_perm, threads=threads)
    secs = sum(res.seconds.values())
    members: dict[int, list[int]] = defaultdict(list)
    for i, c in enumerate(res.cluster.tolist()):
        members[c].append(i)
    clusters = sorted((m for m in members.values() if len(m) > 1), key=lambda m: (-len(m), m[0]))
    w = out.write
    w(
        f"mixsieve demo: near-duplicates in {len(texts):,} local documents ({nbytes / 1e6:.1f} MB; "
        f"read in {t_read:.2f} s)\n"
    )
    w(
        f"  MinHash {num_perm} permutations, word {ngram}-grams, threshold {threshold}, "
        f"LSH {res.bands} bands x {res.rows} rows, verified\n"
    )
    sig_s = res.seconds["signatures"]
    w(
        f"  signatures {sig_s:.2f} s ({nbytes / 1e6 / max(sig_s, 1e-9):.0f} MB/s), "
        f"clustering {res.seconds['clustering']:.2f} s\n"
    )
    w(
        f"  {res.num_clusters} clusters of near-duplicates; kept {int(res.keep.sum()):,}, "
        f"removed {res.num_removed:,} ({res.num_removed / len(texts):.1%}) in {secs:.2f} s\n"
    )
    if clusters:
        w("\nLargest clusters (kept document first, estimated Jaccard to its match):\n")
    for m in clusters[:top]:
        w(f"  [{len(m)} docs] keep {names[m[0]]}\n")
        for i in m[1:4]:
            # A document joined only through later ones has no earlier match: name the kept one.
            d = int(res.duplicate_of[i])
            match = (
                f"J~{res.similarity[i]:.2f} with {names[d]}" if d >= 0 else f"same cluster as {names[m[0]]}"
            )
            w(f"      drop {names[i]}  ({match})\n")
        if len(m) > 4:
            w(f"      ... and {len(m) - 4} more\n")
    near = [
        i
        for i in np.argsort(-res.similarity, kind="stable").tolist()
        if res.duplicate_of[i] >= 0 and res.similarity[i] < 1.0
    ]
    if near:
        w("\nNear (not identical) duplicates found, most similar first:\n")
        for i in near[:top]:
            w(f"  J~{res.similarity[i]:.2f}  {names[i]}  ~  {names[int(res.duplicate_of[i])]}\n")
    sims = res.similarity[res.duplicate_of >= 0]
    if sims.size:
        w(
            f"\nEstimated Jaccard of removed documents to their match: median {np.median(sims):.2f}, "
            f"min {sims.min():.2f}\n"
        )
    if mix:
        mix_report(names, texts, res.keep, samples=samples, workers=workers, out=out)
    return res.num_removed


MIX_TARGETS = {"code": 0.6, "copyright": 0.3, "licenses": 0.1}


def _source_of(name: str) -> str:
    if name.startswith("stdlib/"):
        return "code"
    return "licenses" if "common-licenses" in name else "copyright"


def mix_report(
    names: list[str],
    texts: list[str],
    keep: np.ndarray,
    *,
    samples: int = 20_000,
    workers: int = 2,
    batch_size: int = 64,
    out: TextIO = sys.stdout,
) -> dict[str, float]:
    """Mix the corpus's sources (near-duplicates removed) and print realised vs target shares."""
    from .mixture import MixtureDataset

    w = out.write
    groups: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(names):
        groups[_source_of(n)].append(i)
    srcs = {k: [{"id": names[i], "text": texts[i]} for i in groups[k]] for k in MIX_TARGETS if groups.get(k)}
    masks = {k: keep[np.array(groups[k])] for k in srcs}
    srcs = {k: v for k, v in srcs.items() if masks[k].any()}
    targets = {k: MIX_TARGETS[k] for k in srcs}
    ds = MixtureDataset(
        srcs,
        weights=targets,
        seed=0,
        num_samples=samples,
        batch_size=batch_size,
        filters={k: masks[k] for k in srcs},
    )
    try:
        from torch.utils.data import DataLoader
    except ImportError:
        loader: Any = [list(ds)]
        how = "in this process (torch is not installed; install it for the DataLoader)"
    else:
        loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=_as_list)
        how = f"through a DataLoader with {workers} workers, batch {batch_size}"
    t0 = time.perf_counter()
    order: list[str] = []
    nbytes = 0
    for batch in loader:
        for source, doc in batch:
            order.append(source)
            nbytes += len(doc["text"])
    secs = time.perf_counter() - t0
    total = sum(targets.values())
    w(f"\nmixsieve demo: mixing {len(srcs)} deduplicated sources, {len(order):,} samples {how}\n")
    w(
        f"  {len(order) / max(secs, 1e-9):,.0f} samples/s "
        f"({nbytes / 1e6 / max(secs, 1e-9):.0f} MB/s of text)\n"
    )
    w(
        f"  {'source':10s} {'docs':>6s} {'dedup removed':>14s} {'target':>7s} {'realised':>9s} "
        f"{'max prefix error':>17s} {'epochs':>7s}\n"
    )
    index = {k: d for d, k in enumerate(srcs)}
    seq = np.array([index[s] for s in order], dtype=np.int64)
    counts = np.zeros((len(seq), len(srcs)), np.int64)
    counts[np.arange(len(seq)), seq] = 1
    counts = counts.cumsum(axis=0)
    positions = np.arange(1, len(seq) + 1)[:, None]
    err = np.abs(counts - positions * np.array([targets[k] / total for k in srcs]))
    realised = {}
    stats = ds.stats()
    for k, d in index.items():
        realised[k] = float(counts[-1, d] / len(seq)) if len(seq) else 0.0
        removed = int((~masks[k]).sum())
        w(
            f"  {k:10s} {len(masks[k]):6,d} {removed:14,d} {targets[k] / total:7.3f} {realised[k]:9.4f} "
            f"{math.floor(err[:, d].max() * 1000) / 1000:17.3f} {stats['epochs'][k]:7d}\n"
        )
    w("  (exact mode: every prefix of the stream is within one sample of its target share)\n")
    return realised


def _as_list(batch: list[Any]) -> list[Any]:
    return batch
