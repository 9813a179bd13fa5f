"""Benchmark corpora built from text already on the machine (no downloads).

`english_like(n)`: documents of 1-4 KB of sentences whose words are drawn Zipf(1.07) from a
vocabulary harvested from the CPython standard library's sources (the README's Benchmarks
section describes the protocol), plus optional planted near-duplicates.
"""

from __future__ import annotations

import re
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np

_WORD = re.compile(r"[A-Za-z]{3,}")


def stdlib_files() -> list[Path]:
    """The standard library's .py files, sorted (site-packages excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)


def vocabulary(size: int = 30_000) -> list[str]:
    counts: Counter[str] = Counter()
    for p in stdlib_files():
        try:
            counts.update(w.lower() for w in _WORD.findall(p.read_text(encoding="utf-8", errors="replace")))
        except OSError:
            continue
        if len(counts) > 4 * size:
            break
    return [w for w, _ in counts.most_common(size)]


def english_like(n: int, *, seed: int = 12345, min_chars: int = 1000, max_chars: int = 4000) -> list[str]:
    """n documents of min_chars..max_chars characters: sentences of 6-22 Zipf-drawn words."""
    rng = np.random.default_rng(seed)
    vocab = np.array(_cached_vocabulary())
    p = np.arange(1, len(vocab) + 1, dtype=np.float64) ** -1.07
    p /= p.sum()
    mean_len = float((np.char.str_len(vocab) * p).sum()) + 1.0
    cdf = np.cumsum(p)
    cdf[-1] = 1.0
    docs = []
    for _ in range(n):
        target = int(rng.integers(min_chars, max_chars + 1))
        words = vocab[
            np.searchsorted(cdf, rng.random(int(target / mean_len * 1.3) + 30), side="right")
        ].tolist()
        cuts = np.cumsum(rng.integers(6, 23, size=len(words) // 6 + 1)).tolist()
        parts, start = [], 0
        for c in cuts:
            if start >= len(words):
                break
            parts.append(" ".join(words[start:c]).capitalize() + ".")
            start = c
        docs.append(" ".join(parts)[:target])
    return docs


_VOCAB: list[str] = []


def _cached_vocabulary() -> list[str]:
    if not _VOCAB:
        _VOCAB.extend(vocabulary())
    return _VOCAB


def perturb(text: str, rate: float, rng: np.random.Generator, vocab: list[str]) -> str:
    """Delete, substitute or insert words, each at `rate` / 3 per word."""
    out: list[str] = []
    for w in text.split():
        r = rng.random()
        if r < rate / 3:
            continue
        if r < 2 * rate / 3:
            out.append(vocab[int(rng.integers(len(vocab)))])
            continue
        out.append(w)
        if r < rate:
            out.append(vocab[int(rng.integers(len(vocab)))])
    return " ".join(out)


def with_near_duplicates(docs: list[str], n_dups: int, *, seed: int = 7) -> list[str]:
    """docs plus n_dups perturbed copies of random docs (rates 0.5-12%), appended."""
    rng = np.random.default_rng(seed)
    vocab = _cached_vocabulary()[:5000]
    rates = [0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12]
    extra = [
        perturb(docs[int(rng.integers(len(docs)))], rates[i % len(rates)], rng, vocab) for i in range(n_dups)
    ]
    return docs + extra


def templated(n: int, *, seed: int = 5, shared: int = 300, unique: int = 20) -> list[str]:
    """n pages of one `shared`-word template, each with `unique` words of its own inserted in
    four runs at random places: two pages have estimated Jaccard about 0.7 (word 5-grams), just
    under the usual 0.8 threshold, as boilerplate-heavy web crawls do."""
    rng = np.random.default_rng(seed)
    vocab = _cached_vocabulary()
    template = [vocab[i] for i in rng.integers(0, len(vocab), shared)]
    runs = 4
    out = []
    for i in range(n):
        words = list(template)
        for r in range(runs):
            pos = int(rng.integers(0, len(words) + 1))
            words[pos:pos] = [f"u{i}x{r}y{j}" for j in range(unique // runs)]
        out.append(" ".join(words))
    return out
