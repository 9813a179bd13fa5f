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


class DocumentStream:
    """An endless, seeded stream of English-like JSONL-ready documents (ASCII bytes) with
    planted duplicates, made in vectorised batches so that gigabytes can be written to disk at
    tens of MB/s without holding them: about `exact` of the documents are byte-for-byte copies
    and about `near` are perturbed copies (word edit rates 0.5-12%, as `with_near_duplicates`)
    of earlier originals, drawn from a reservoir sample of `pool` originals so that copies land
    far from their sources.

    Originals are like `english_like`'s (Zipf(1.07) words, sentences of 6-22 words, 1-4 KB),
    cut at the last word boundary before their target length instead of mid-word (so a few are
    just under 1 KB, and near copies with inserted words a little over 4 KB); words are drawn
    through a 2**20-entry inverse CDF table. The same seed gives the same bytes.

    >>> s = DocumentStream(seed=3)
    >>> docs, what = s.next_batch()
    >>> len(docs) == len(what) == 2048 and all(900 <= len(d) <= 4000 for d in docs)
    True
    """

    RATES = (0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12)

    def __init__(
        self,
        *,
        seed: int = 2026,
        exact: float = 0.02,
        near: float = 0.08,
        pool: int = 4096,
        batch: int = 2048,
        min_chars: int = 1000,
        max_chars: int = 4000,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        vocab = _cached_vocabulary()
        self.v = len(vocab)
        # Token t spells word t % v as: word, Word (sentence start), word., Word. (sentence end).
        spell = vocab + [w.capitalize() for w in vocab]
        spell += [w + "." for w in spell]
        self.spell_len = np.array([len(w) + 1 for w in spell], dtype=np.int32)  # with its space
        self.flat = np.frombuffer(" ".join(spell).encode() + b" ", dtype=np.uint8)
        self.offset = np.concatenate(([0], np.cumsum(self.spell_len)[:-1])).astype(np.int32)
        p = np.arange(1, self.v + 1, dtype=np.float64) ** -1.07
        p /= p.sum()
        self.mean_len = float((self.spell_len[: self.v] * p).sum())
        cdf = np.cumsum(p)
        cdf[-1] = 1.0
        self.table = np.searchsorted(cdf, (np.arange(1 << 20) + 0.5) / (1 << 20)).astype(np.int32)
        self.exact, self.near, self.pool_size, self.batch = exact, near, pool, batch
        self.min_chars, self.max_chars = min_chars, max_chars
        self.pool: list[np.ndarray] = []
        self.originals = 0  # made so far (the reservoir's denominator)
        self._near = 0

    def _originals(self, n: int) -> list[np.ndarray]:
        rng = self.rng
        targets = rng.integers(self.min_chars, self.max_chars + 1, size=n)
        n_words = (targets / self.mean_len * 1.2).astype(np.int64) + 20
        starts = np.concatenate(([0], np.cumsum(n_words)))
        total = int(starts[-1])
        ids = self.table[rng.integers(0, 1 << 20, size=total, dtype=np.uint32)]
        # Sentences start at every doc start, then every 6-22 words.
        first = np.zeros(total + 1, dtype=bool)
        cuts = np.cumsum(rng.integers(6, 23, size=total // 6 + 1))
        first[cuts[cuts < total]] = True
        first[starts] = True
        tokens = ids + np.int32(self.v) * first[:-1] + np.int32(2 * self.v) * first[1:]
        # Keep the words that fit in each doc's target length (the last one's space dropped).
        ends = np.cumsum(self.spell_len[tokens])
        before = np.concatenate(([0], ends))[starts[:-1]]
        k = np.searchsorted(ends, before + targets + 1, side="right") - starts[:-1]
        k = np.clip(k, 1, n_words)
        return [tokens[a : a + m] for a, m in zip(starts[:-1].tolist(), k.tolist())]

    def _perturb(self, tokens: np.ndarray, rate: float) -> np.ndarray:
        """Delete, substitute or insert words (among the 5000 commonest), each at rate / 3 per word."""
        rng = self.rng
        r = rng.random(len(tokens))
        out = tokens.copy()
        sub = (r >= rate / 3) & (r < 2 * rate / 3)
        out[sub] = rng.integers(0, 5000, size=int(sub.sum()))
        ins = (r >= 2 * rate / 3) & (r < rate)
        reps = (r >= rate / 3).astype(np.int64) + ins
        out = np.repeat(out, reps)
        at = np.cumsum(reps)[ins] - 1
        out[at] = rng.integers(0, 5000, size=len(at))
        return out

    def render(self, docs: list[np.ndarray]) -> list[bytes]:
        """The text of each token array: its words' spellings joined by spaces."""
        tokens = np.concatenate(docs)
        lens = self.spell_len[tokens]
        out_end = np.cumsum(lens, dtype=np.int64)
        # int32 indices (a batch is a few MB): half the memory traffic of int64.
        gather = np.repeat(self.offset[tokens] - (out_end - lens).astype(np.int32), lens)
        gather += np.arange(len(gather), dtype=np.int32)
        text = self.flat[gather].tobytes()
        doc_end = out_end[np.cumsum([len(d) for d in docs]) - 1].tolist()
        return [text[a : b - 1] for a, b in zip([0, *doc_end[:-1]], doc_end)]

    def next_batch(self) -> tuple[list[bytes], list[int]]:
        """The next `batch` documents, in order, as ASCII bytes (no characters that JSON escapes),
        and what each is: 0 an original, 1 an exact copy, 2 + j a near copy at edit rate RATES[j]."""
        rng = self.rng
        u = rng.random(self.batch)
        kinds = np.where(u < self.exact, 1, np.where(u < self.exact + self.near, 2, 0))
        if not self.pool:
            kinds[:] = 0
        fresh = self._originals(int((kinds == 0).sum()))
        originals = iter(fresh)
        sources = rng.integers(0, max(len(self.pool), 1), size=self.batch).tolist()
        docs, what = [], []
        for kind, src in zip(kinds.tolist(), sources):
            if kind == 0:
                docs.append(next(originals))
                what.append(0)
            elif kind == 1:
                docs.append(self.pool[src])
                what.append(1)
            else:
                j = self._near % len(self.RATES)
                self._near += 1
                docs.append(self._perturb(self.pool[src], self.RATES[j]))
                what.append(2 + j)
        # Reservoir sample of the originals, after the batch: copies come from earlier batches.
        # A copy each (a slice would keep its whole batch alive).
        for tokens, u_slot in zip(fresh, rng.random(len(fresh)).tolist()):
            self.originals += 1
            if len(self.pool) < self.pool_size:
                self.pool.append(tokens.astype(np.int32))
            elif (j := int(u_slot * self.originals)) < self.pool_size:
                self.pool[j] = tokens.astype(np.int32)
        return self.render(docs), what
