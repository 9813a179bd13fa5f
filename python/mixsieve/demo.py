"""The bundled default job: near-duplicate detection over real text already on the machine.

The corpus is the Python standard library's own sources (one document per file; tests,
vendored copies and generated modules hold real near-duplicates) plus, where present, the
licence texts under /usr/share/common-licenses and the per-package copyright files under
/usr/share/doc that Debian-based systems install (the same licences embedded with edits).
"""

from __future__ import annotations

import sys
import sysconfig
import time
from collections import defaultdict
from pathlib import Path
from typing import TextIO

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
    out: TextIO = sys.stdout,
) -> int:
    """Deduplicate the local corpus and print a short report; returns the number removed."""
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
    return res.num_removed
