"""Slow, plain-Python restatements of mixsieve's kernels, written from the documented rules.

Nothing here calls mixsieve. The one external piece is the `xxhash` package, the reference
that our C++ xxh64 must match bit for bit.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable

import numpy as np
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


def _mix_int(z: int) -> int:
    # SplitMix64's output function (Steele, Lea, Flood 2014).
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def splitmix64_at(seed: int, i: int) -> int:
    return _mix_int((seed + (i + 1) * 0x9E3779B97F4A7C15) & M64)


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


# ---- weighted sampling (docs/sampling.md) ----


def _mix_np(z):
    # SplitMix64's output function on a uint64 array (wrapping arithmetic).
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _stream_bits_np(key: int, counters):
    with np.errstate(over="ignore"):
        return _mix_np(np.uint64(key) + (counters + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15))


def ares_uniforms(seed: int, ids) -> np.ndarray:
    """u_id of A-Res keys log(u_id) / w, written from the documented construction: the top 32
    bits are the high half (bit 3 of id clear) or low half (set) of SplitMix64 counter
    ((id >> 4) << 3) | (id & 7) of stream (AresKey, 0); the next 20 are the top bits of counter
    id of stream (AresKey, 1); u = (2m + 1) * 2^-53 for those 52 bits m."""
    ids = np.asarray(ids, dtype=np.int64).view(np.uint64)

    def stream_key(sub: int) -> int:  # Stream::AresKey = 1
        return _mix_int(seed ^ _mix_int((1 * 0xD1B54A32D192ED03 + sub * 0x8CB92BA72F3D8DD7) & M64))

    with np.errstate(over="ignore"):
        ctr = ((ids >> np.uint64(4)) << np.uint64(3)) | (ids & np.uint64(7))
        h = _stream_bits_np(stream_key(0), ctr)
        top = np.where(ids & np.uint64(8), h & np.uint64(M32), h >> np.uint64(32))
        low = _stream_bits_np(stream_key(1), ids) >> np.uint64(44)
        m = (top << np.uint64(20)) | low
    return (2.0 * m.astype(np.float64) + 1.0) * 2.0**-53


def expj_fill_uniforms(seed: int, ids) -> np.ndarray:
    """u_id of the A-ExpJ keys log(u_id) / w drawn while the reservoir fills (its first k
    positive items): counter id of stream (ExpJ, 0), u = (2m + 1) * 2^-53 for the top 52 bits m."""
    ids = np.asarray(ids, dtype=np.int64).view(np.uint64)
    # stream_key(seed, Stream::ExpJ = 2, sub 0)
    key = _mix_int(seed ^ _mix_int((2 * 0xD1B54A32D192ED03 + 0 * 0x8CB92BA72F3D8DD7) & M64))
    m = _stream_bits_np(key, ids) >> np.uint64(12)
    return (2.0 * m.astype(np.float64) + 1.0) * 2.0**-53


def ares_exact_key(seed: int, item_id: int, w: float):
    """The A-Res key log(u_id) / w as an exact rational (log(u) in double, as the kernel
    computes it), for ordering items whose double keys underflow or overflow."""
    import math
    from fractions import Fraction

    u = float(ares_uniforms(seed, [item_id])[0])
    return Fraction(math.log(u)) / Fraction(w)


def exact_successive(w, k):
    """Successive sampling by enumeration: ordered-tuple pmf, subset pmf, inclusion probs.
    Exact rational arithmetic, so any finite weights work (subnormal to 1e308)."""
    import itertools
    from fractions import Fraction

    wf = [Fraction(float(x)) for x in w]
    total = sum(wf)
    seq, sets, incl = {}, {}, [0.0] * len(wf)
    for perm in itertools.permutations([i for i in range(len(wf)) if wf[i] > 0], k):
        p, rem = Fraction(1), total
        for i in perm:
            p *= wf[i] / rem
            rem -= wf[i]
        seq[perm] = float(p)
        key = frozenset(perm)
        sets[key] = sets.get(key, 0.0) + float(p)
        for i in perm:
            incl[i] += float(p)
    return seq, sets, incl


def successive_inclusion(w, k, points=3000):
    """Inclusion probabilities of successive sampling for larger n (a 1-D integral):
    pi_i = int_0^inf w_i exp(-w_i t) P(fewer than k of the other E_j ~ Exp(w_j) are below t) dt,
    integrated on a log-spaced grid of t with the Poisson-binomial CDF from an O(nk) DP."""
    import numpy as np

    w = np.asarray(w, float)
    n = len(w)
    t = np.logspace(np.log10(1e-7 / w.max()), np.log10(60.0 / w.min()), points)
    q = 1.0 - np.exp(-np.outer(w, t))  # q[j, :] = P(E_j < t)
    out = np.zeros(n)
    for i in range(n):
        dp = np.zeros((points, k))
        dp[:, 0] = 1.0  # P(exactly c of the others so far are below t), c < k
        for j in range(n):
            if j == i:
                continue
            qj = q[j][:, None]
            shifted = np.concatenate([np.zeros((points, 1)), dp[:, :-1]], axis=1)
            dp = dp * (1 - qj) + shifted * qj
        f = w[i] * np.exp(-w[i] * t) * dp.sum(axis=1)
        y, x = f * t, np.log(t)  # trapezoid rule in log t
        out[i] = float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2)
    return out


def pps_targets(w, k):
    """pi_i = min(1, c w_i) with sum k: certainty items found heaviest first (exact rationals,
    so weights anywhere in the float range work)."""
    from fractions import Fraction

    w = [Fraction(float(x)) for x in w]
    order = sorted(range(len(w)), key=lambda i: -w[i])
    certain, rest_w, slots = set(), sum(w), k
    for i in order:
        if w[i] * slots >= rest_w and slots > 0:
            certain.add(i)
            rest_w -= w[i]
            slots -= 1
        else:
            break
    c = slots / rest_w if rest_w > 0 else Fraction(0)
    return [1.0 if i in certain else float(min(Fraction(1), c * w[i])) for i in range(len(w))]


def soft_cap_exact(scores, penalty, total, batch):
    """Exact distribution of SCS count vectors (FLYT's notebook algorithm) by enumeration."""
    import itertools
    import math

    n = len(scores)
    dist = {tuple([0] * n): 1.0}
    done = 0
    while done < total:
        b = min(batch, total - done)
        nxt: dict[tuple, float] = {}
        for counts, pc in dist.items():
            logits = [s - penalty * c for s, c in zip(scores, counts)]
            m = max(logits)
            e = [math.exp(x - m) for x in logits]
            for perm in itertools.permutations(range(n), b):
                p, rem = 1.0, sum(e)
                for i in perm:
                    p *= e[i] / rem
                    rem -= e[i]
                new = list(counts)
                for i in perm:
                    new[i] += 1
                key = tuple(new)
                nxt[key] = nxt.get(key, 0.0) + pc * p
        dist = nxt
        done += b
    return dist


def soft_cap_reference(scores, penalty, total, batch, rng):
    """FLYT's notebook algorithm: per batch, numpy choice without replacement from softmax."""
    import numpy as np

    pre = np.asarray(scores, float).copy()
    counts = np.zeros(len(pre), np.int64)
    done = 0
    while done < total:
        b = min(batch, total - done)
        p = np.exp(pre - pre.max())
        p /= p.sum()
        picked = rng.choice(len(pre), size=b, replace=False, p=p)
        counts[picked] += 1
        pre[picked] -= penalty
        done += b
    return counts


# ---- chi-square tail without scipy ----


def chi2_z(stat: float, df: int) -> float:
    """Normal deviate of a chi-square statistic (Wilson-Hilferty); z > 4.75 is p < 1e-6."""
    import math

    return ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))


def chi2_gof(observed, expected_probs, n, min_expected=5.0):
    """Chi-square statistic and df against expected probabilities, pooling sparse cells."""
    stat, df, pool_o, pool_e = 0.0, -1, 0.0, 0.0
    for o, p in zip(observed, expected_probs):
        e = p * n
        if e < min_expected:
            pool_o += o
            pool_e += e
            continue
        stat += (o - e) ** 2 / e
        df += 1
    if pool_e > 0:
        stat += (pool_o - pool_e) ** 2 / max(pool_e, 1e-12)
        df += 1
    return stat, df


# ---- mixing (docs/mixing.md) ----


def exact_interleave(weights, n):
    """The eligible-earliest-deadline rule in exact rational arithmetic: at 1-based position t a
    source is eligible if c_d < w_d * t; the eligible one with the smallest (c_d + 1) / w_d
    wins, ties to the lowest index."""
    from fractions import Fraction

    total = sum(Fraction(w) for w in weights)
    w = [Fraction(x) / total for x in weights]
    c = [0] * len(w)
    out = []
    for t in range(1, n + 1):
        best, best_due = None, None
        for d, wd in enumerate(w):
            if wd == 0 or not c[d] < wd * t:
                continue
            due = (c[d] + 1) / wd
            if best_due is None or due < best_due:
                best, best_due = d, due
        assert best is not None, "no eligible source"
        out.append(best)
        c[best] += 1
    return out


def temperature_weights(sizes, tau):
    q = [s / sum(sizes) for s in sizes]
    p = [x ** (1.0 / tau) for x in q]
    return [x / sum(p) for x in p]


def unimax_weights(sizes, budget, max_epochs):
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    remaining = budget
    alloc = [0.0] * len(sizes)
    for i, src in enumerate(order):
        alloc[src] = min(remaining / (len(order) - i), max_epochs * sizes[src])
        remaining -= alloc[src]
    return [a / sum(alloc) for a in alloc]


def exp3_step(p, rewards, t, losses, smoothing):
    """One OnlineMixer update (ODM's EXP3 with importance-weighted smoothed rewards)."""
    import math

    k = len(p)
    rewards = list(rewards)
    for i, loss in losses.items():
        rewards[i] = smoothing * rewards[i] + (1 - smoothing) * loss / p[i]

    def eps(s):
        return min(1.0 / k, math.sqrt(math.log(k) / (k * s)))

    eps_prev = eps(t) if t > 0 else 1.0 / k
    e = eps(t + 1)
    z = [math.exp(eps_prev * r) for r in rewards]
    return [(1 - k * e) * x / sum(z) + e for x in z], rewards


def carry_interleave(k, changes, n):
    """The exact schedule with weight changes, restated in Python floats (the same IEEE
    operations as the kernel, so the choices must agree exactly): each change (position,
    weights) starts a segment; a source's lag c_d - T_d is carried into it (T_d the integral of
    its normalised weight); at segment position m (1-based) a positive-weight source is eligible
    if (base_d + s_d) / w_d < m, and the eligible one with the smallest (base_d + s_d + 1) / w_d
    wins, ties to the lowest index; with none eligible, the largest w_d * m - (base_d + s_d)."""
    inf = math.inf
    w = [0.0] * k
    inv = [0.0] * k
    base = [0.0] * k
    seg = [0] * k
    seg_start = 0
    out = []
    changes = sorted(changes, key=lambda c: c[0])
    ci = 0
    for position in range(n):
        new = None
        while ci < len(changes) and changes[ci][0] == position:
            new = changes[ci][1]  # the last change at a position wins
            ci += 1
        if new is not None:
            total = 0.0
            for x in new:
                total += x
            length = float(position - seg_start)
            for d in range(k):
                base[d] = base[d] + float(seg[d]) - w[d] * length
            w, inv = [], []
            for x in new:
                v = x / total
                iv = 1.0 / v if v > 0 else 0.0
                if iv == inf:
                    v = iv = 0.0
                w.append(v)
                inv.append(iv)
            seg = [0] * k
            seg_start = position
        m = float(position - seg_start + 1)
        best, best_due = -1, inf
        for d in range(k):
            if w[d] > 0:
                c = base[d] + float(seg[d])
                if c * inv[d] < m and (c + 1.0) * inv[d] < best_due:
                    best, best_due = d, (c + 1.0) * inv[d]
        if best < 0:
            most = -inf
            for d in range(k):
                if w[d] > 0 and w[d] * m - (base[d] + float(seg[d])) > most:
                    most, best = w[d] * m - (base[d] + float(seg[d])), d
        out.append(best)
        seg[best] += 1
    return out


def integral_targets(k, changes, n):
    """T[i][d]: the integral of source d's normalised weight over positions 0..i."""
    per = np.zeros((n, k))
    for p, w in sorted(changes, key=lambda c: c[0]):
        per[p:] = np.asarray(w, float) / np.sum(w)
    return per.cumsum(axis=0)
