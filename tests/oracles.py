"""Slow, plain-Python restatements of mixsieve's kernels, written from the documented rules.

Nothing here calls mixsieve. The one external piece is the `xxhash` package, the reference
that our C++ xxh64 must match bit for bit.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

import xxhash

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1


# ---- text normalisation and shingles (python/mixsieve/dedup.py module docstring) ----


def _is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LMN"


def _lower(ch: str) -> str:
    low = ch.lower()
    return low if len(low) == 1 else ch


def words(text: str | bytes) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out: list[str] = []
    cur: list[str] = []
    for ch in text:
        if _is_word_char(ch):
            cur.append(_lower(ch))
        elif cur:
            out.append("".join(cur))
            cur = []
    if cur:
        out.append("".join(cur))
    return out


def normalize(text: str | bytes) -> str:
    return " ".join(words(text))


def shingles(text: str | bytes, unit: str, ngram: int) -> set[bytes]:
    if unit == "word":
        ws = words(text)
        if not ws:
            return set()
        if len(ws) < ngram:
            return {" ".join(ws).encode()}
        return {" ".join(ws[i : i + ngram]).encode() for i in range(len(ws) - ngram + 1)}
    norm = normalize(text)
    if not norm:
        return set()
    if len(norm) < ngram:
        return {norm.encode()}
    return {norm[i : i + ngram].encode() for i in range(len(norm) - ngram + 1)}


def jaccard(a: set[bytes], b: set[bytes]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


# ---- MinHash ----


def splitmix64_at(seed: int, i: int) -> int:
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def perm_params(seed: int, num_perm: int, bits: int) -> tuple[list[int], list[int]]:
    mask = M32 if bits == 32 else M64
    a = [(splitmix64_at(seed, 2 * k) | 1) & mask for k in range(num_perm)]
    b = [splitmix64_at(seed, 2 * k + 1) & mask for k in range(num_perm)]
    return a, b


def signature(
    text: str | bytes, *, num_perm: int, ngram: int, unit: str, seed: int, bits: int = 32
) -> list[int]:
    mask = M32 if bits == 32 else M64
    a, b = perm_params(seed, num_perm, bits)
    xs = []
    for sh in shingles(text, unit, ngram):
        h = xxhash.xxh64_intdigest(sh, seed=seed)
        xs.append(((h ^ (h >> 32)) & M32) if bits == 32 else h)
    return [min(((ak * x + bk) & mask for x in xs), default=mask) for ak, bk in zip(a, b)]


def estimate(x: Iterable[int], y: Iterable[int]) -> float:
    xs, ys = list(x), list(y)
    return sum(p == q for p, q in zip(xs, ys)) / len(xs)


# ---- LSH parameters: datasketch's rule (midpoint integration, step 0.001) ----


def _integrate(f, lo: float, hi: float) -> float:
    step, area, x = 0.001, 0.0, lo
    while x < hi:
        area += f(x + 0.5 * step) * step
        x += step
    return area


def optimal_bands(threshold: float, num_perm: int, fp_w: float = 0.5, fn_w: float = 0.5) -> tuple[int, int]:
    best, opt = float("inf"), (0, 0)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _integrate(lambda s, r=r, b=b: 1 - (1 - s**r) ** b, 0.0, threshold)
            fn = _integrate(lambda s, r=r, b=b: (1 - s**r) ** b, threshold, 1.0)
            err = fp_w * fp + fn_w * fn
            if err < best:
                best, opt = err, (b, r)
    return opt


# ---- clustering: connected components of verified candidate pairs ----


def band_candidates(sigs: list[list[int]], bands: int, rows: int) -> set[tuple[int, int]]:
    buckets: dict[tuple[int, tuple[int, ...]], list[int]] = {}
    for i, s in enumerate(sigs):
        for band in range(bands):
            buckets.setdefault((band, tuple(s[band * rows : (band + 1) * rows])), []).append(i)
    pairs = set()
    for members in buckets.values():
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                pairs.add((members[x], members[y]))
    return pairs


def clusters(
    sigs: list[list[int]], bands: int, rows: int, threshold: float, *, empty: int, match_empty: bool = False
) -> list[int]:
    """Cluster id (lowest member) per row; rows whose slots all equal `empty` match nothing
    unless match_empty."""
    n = len(sigs)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for i, j in band_candidates(sigs, bands, rows):
        if not match_empty and (all(v == empty for v in sigs[i]) or all(v == empty for v in sigs[j])):
            continue
        if estimate(sigs[i], sigs[j]) >= threshold:
            ri, rj = find(i), find(j)
            parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(n)]
