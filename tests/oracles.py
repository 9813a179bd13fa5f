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


def _segment_shares(weights):
    """A segment's normalised weights and their inverses, as the kernel computes them: the sum
    in order, each weight divided by it, and a share whose inverse overflows counted as 0."""
    total = 0.0
    for x in weights:
        total += x
    w, inv = [], []
    for x in weights:
        v = x / total
        iv = 1.0 / v if v > 0 else 0.0
        if iv == math.inf:
            v = iv = 0.0
        w.append(v)
        inv.append(iv)
    return w, inv


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
            length = float(position - seg_start)
            for d in range(k):
                base[d] = base[d] + float(seg[d]) - w[d] * length
            w, inv = _segment_shares(new)
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


# ---- per-token mixup (the operator of docs/mixup.md) ----
# Plain torch, written from the contract; torch is imported inside so that this module loads
# without it. Every function computes in `dtype` (default: float64 for float64 inputs, else
# float32); pass a 16-bit dtype to measure the reference's own rounding error.

_MIXUP_POLICIES = ("union", "a-only")


def _mixup_math_dtype(t, dtype):
    import torch

    if dtype is not None:
        return dtype
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def mixup_effective_lambda(lam, va, vb, policy="union"):
    """(lam_e, keep) per token of the [B, T+1] window: union: both valid -> lam, only a -> 1,
    only b -> 0, neither -> dropped; a-only: a invalid -> dropped, b invalid -> 1. lam is
    rounded to float32 first (the contract converts it); lam_e is 0 where dropped."""
    import torch

    if policy not in _MIXUP_POLICIES:
        raise ValueError(policy)
    lam = lam.to(torch.float32)
    va = torch.ones_like(lam, dtype=torch.bool) if va is None else va.bool()
    vb = torch.ones_like(lam, dtype=torch.bool) if vb is None else vb.bool()
    one, zero = torch.ones_like(lam), torch.zeros_like(lam)
    lam_e = torch.where(va & vb, lam, torch.where(va, one, zero))
    keep = va | vb if policy == "union" else va.clone()
    return lam_e, keep


def mixup_reference_embeddings(weight, xa, xb, lam, va=None, vb=None, policy="union", dtype=None):
    """h[b, t] = keep * (lam_e E[xa] + (1 - lam_e) E[xb]) for t < T, computed in `dtype` and
    returned in that dtype (differentiable w.r.t. weight). An id is used only where it is read
    (xa where lam_e != 0, xb where lam_e != 1, and only at kept positions); elsewhere it may be
    anything."""
    import torch
    import torch.nn.functional as F

    dt = _mixup_math_dtype(weight, dtype)
    lam_e, keep = mixup_effective_lambda(lam, va, vb, policy)
    lin, kin = lam_e[:, :-1], keep[:, :-1]
    read_a, read_b = kin & (lin != 0), kin & (lin != 1)
    ia = torch.where(read_a, xa[:, :-1].long(), 0)
    ib = torch.where(read_b, xb[:, :-1].long(), 0)
    w = weight.to(dt)
    ea, eb = F.embedding(ia, w), F.embedding(ib, w)
    la = lin.to(dt)[..., None]
    h = torch.where(read_a[..., None], la * ea, 0) + torch.where(read_b[..., None], (1 - la) * eb, 0)
    return torch.where(kin[..., None], h, 0)


def mixup_targets(
    xa, xb, lam, va=None, vb=None, *, ignore_index=-100, target_lambda="shifted", policy="union"
):
    """(ya, yb, a_ok, b_ok, omega, keep_loss), each [B, T]: the two next-token targets, which of
    them count, the weight omega of target a (float32), and which positions enter the loss.
    ya/yb are 0 wherever they do not count, so they can be gathered safely."""
    import torch

    if target_lambda not in ("shifted", "same"):
        raise ValueError(target_lambda)
    lam_e, keep = mixup_effective_lambda(lam, va, vb, policy)
    va = torch.ones_like(keep) if va is None else va.bool()
    vb = torch.ones_like(keep) if vb is None else vb.bool()
    ya, yb = xa[:, 1:].long(), xb[:, 1:].long()
    a_ok = va[:, 1:] & (ya != ignore_index)
    b_ok = vb[:, 1:] & (yb != ignore_index)
    if policy == "a-only":
        b_ok = b_ok & a_ok
    om = lam_e[:, 1:] if target_lambda == "shifted" else lam_e[:, :-1]
    om = torch.where(a_ok & b_ok, om, a_ok.to(om.dtype))
    keep_loss = keep[:, :-1] & (a_ok | b_ok)
    return torch.where(a_ok, ya, 0), torch.where(b_ok, yb, 0), a_ok, b_ok, om, keep_loss


def _mixup_reduce(tok, keep_loss, reduction):
    tok = tok.where(keep_loss, 0)
    if reduction == "none":
        return tok
    if reduction == "sum":
        return tok.sum()
    if reduction == "mean":
        return tok.sum() / keep_loss.sum().clamp_min(1).to(tok.dtype)
    raise ValueError(reduction)


def mixup_reference_loss(
    logits,
    xa,
    xb,
    lam,
    va=None,
    vb=None,
    *,
    ignore_index=-100,
    label_smoothing=0.0,
    reduction="mean",
    target_lambda="shifted",
    policy="union",
    dtype=None,
):
    """Two-target cross-entropy: per kept position
    omega CE_eps(z, ya) + (1 - omega) CE_eps(z, yb), CE_eps = (1 - eps) nll + eps mean_v(-log p_v);
    reduction none ([B, T], 0 where dropped) / sum / mean (sum over max(kept, 1))."""
    import torch

    dt = _mixup_math_dtype(logits, dtype)
    ya, yb, a_ok, b_ok, om, keep_loss = mixup_targets(
        xa, xb, lam, va, vb, ignore_index=ignore_index, target_lambda=target_lambda, policy=policy
    )
    lp = logits.to(dt).log_softmax(-1)
    eps = float(label_smoothing)
    ca = -lp.gather(-1, ya[..., None]).squeeze(-1)
    cb = -lp.gather(-1, yb[..., None]).squeeze(-1)
    if eps != 0.0:
        smooth = -lp.mean(-1)
        ca = (1 - eps) * ca + eps * smooth
        cb = (1 - eps) * cb + eps * smooth
    w = om.to(dt)
    # where() rather than 0 * x: an unused target may sit on a -inf logit.
    tok = torch.where(b_ok, torch.where(a_ok, w * ca + (1 - w) * cb, cb), ca)
    return _mixup_reduce(tok, keep_loss, reduction)


def mixup_reference_linear_loss(
    hidden, weight, xa, xb, lam, va=None, vb=None, *, bias=None, dtype=None, **kw
):
    """mixup_reference_loss of hidden @ weight.T + bias, all in `dtype`."""
    dt = _mixup_math_dtype(hidden, dtype)
    z = hidden.to(dt) @ weight.to(dt).T
    if bias is not None:
        z = z + bias.to(dt)
    return mixup_reference_loss(z, xa, xb, lam, va, vb, dtype=dt, **kw)


def mixup_dense_target_loss(
    logits,
    xa,
    xb,
    lam,
    va=None,
    vb=None,
    *,
    ignore_index=-100,
    label_smoothing=0.0,
    reduction="mean",
    target_lambda="shifted",
    policy="union",
):
    """Second oracle: F.cross_entropy with dense probability targets
    omega e_ya + (1 - omega) e_yb built by scatter_add_ (mass adds up when ya == yb)."""
    import torch
    import torch.nn.functional as F

    ya, yb, a_ok, b_ok, om, keep_loss = mixup_targets(
        xa, xb, lam, va, vb, ignore_index=ignore_index, target_lambda=target_lambda, policy=policy
    )
    z = logits.to(_mixup_math_dtype(logits, None))
    wa = torch.where(a_ok, om.to(z.dtype), 0)
    wb = torch.where(b_ok, 1 - om.to(z.dtype), 0)
    soft = torch.zeros_like(z)
    soft.scatter_add_(-1, ya[..., None], wa[..., None])
    soft.scatter_add_(-1, yb[..., None], wb[..., None])
    tok = torch.zeros(keep_loss.shape, dtype=z.dtype)
    tok[keep_loss] = F.cross_entropy(
        z[keep_loss], soft[keep_loss], label_smoothing=label_smoothing, reduction="none"
    )
    return _mixup_reduce(tok, keep_loss, reduction)


def seqmix_loss(logits, xa, xb, lam_row, valid, eps=0.0):
    """SeqMix (Guo, Kim, Rush 2020) with one lambda per row and the same padding on a and b:
    mean over valid targets of lam CE(ya) + (1 - lam) CE(yb), each by F.cross_entropy."""
    import torch.nn.functional as F

    V = logits.shape[-1]
    z = logits.reshape(-1, V)
    m = (valid[:, :-1] & valid[:, 1:]).reshape(-1)
    ca = F.cross_entropy(z[m], xa[:, 1:].reshape(-1)[m], label_smoothing=eps, reduction="none")
    cb = F.cross_entropy(z[m], xb[:, 1:].reshape(-1)[m], label_smoothing=eps, reduction="none")
    lr = lam_row[:, None].expand(-1, xa.shape[1] - 1).reshape(-1)[m].to(z.dtype)
    return (lr * ca + (1 - lr) * cb).sum() / m.sum()


# ---- Beta(a, a) distribution function without scipy ----


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _betacf(a: float, b: float, x: np.ndarray) -> np.ndarray:
    """Continued fraction of the regularized incomplete beta (modified Lentz), vectorised;
    converges fast for x < (a + 1) / (a + b + 2)."""
    tiny, tol = 1e-300, 1e-15
    c = np.ones_like(x)
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = np.where(np.abs(d) < tiny, tiny, d)
    d = 1.0 / d
    h = d.copy()
    for m in range(1, 10000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((a + m2 - 1) * (a + m2))
        d = 1.0 + aa * d
        d = np.where(np.abs(d) < tiny, tiny, d)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))
        d = 1.0 + aa * d
        d = np.where(np.abs(d) < tiny, tiny, d)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        d = 1.0 / d
        delta = d * c
        h *= delta
        if np.all(np.abs(delta - 1.0) < tol):
            return h
    raise RuntimeError("incomplete beta continued fraction did not converge")


def beta_cdf_symmetric(x, a: float) -> np.ndarray:
    """I_x(a, a), the Beta(a, a) distribution function, for x in [0, 1] (float64 array)."""
    x = np.asarray(x, dtype=np.float64)
    lo = np.minimum(x, 1.0 - x)  # I_x(a, a) = 1 - I_{1-x}(a, a); the series needs x <= 1/2
    inner = (lo > 0) & (lo < 1)
    out = np.zeros_like(lo)
    li = lo[inner]
    front = np.exp(a * np.log(li) + a * np.log1p(-li) - _log_beta(a, a)) / a
    out[inner] = front * _betacf(a, a, li)
    return np.where(x <= 0.5, out, 1.0 - out)


def beta_symmetric_moments(a: float) -> tuple[float, float, float]:
    """Mean, variance and fourth central moment of Beta(a, a), from the raw moments
    E[X^k] = prod_{i<k} (a + i) / (2a + i)."""
    raw = [1.0]
    for k in range(4):
        raw.append(raw[-1] * (a + k) / (2 * a + k))
    m = raw[1]
    var = raw[2] - m * m
    mu4 = raw[4] - 4 * m * raw[3] + 6 * m * m * raw[2] - 3 * m**4
    return m, var, mu4


def ks_statistic_float32(samples, cdf) -> float:
    """Kolmogorov-Smirnov distance between float32 samples and a continuous CDF rounded to
    float32: a sample value v stands for the interval of reals that round to it, so the model's
    distribution function at v is cdf(upper end) and just below v it is cdf(lower end)."""
    v = np.sort(np.asarray(samples, dtype=np.float32))
    vals, counts = np.unique(v, return_counts=True)
    n = v.size
    emp_hi = np.cumsum(counts) / n
    emp_lo = emp_hi - counts / n
    up = np.nextafter(vals, np.float32(np.inf)).astype(np.float64)
    down = np.nextafter(vals, np.float32(-np.inf)).astype(np.float64)
    v64 = vals.astype(np.float64)
    hi = np.minimum((v64 + up) / 2, 1.0)
    lo = np.maximum((v64 + down) / 2, 0.0)
    f_hi, f_lo = cdf(hi), cdf(lo)
    f_hi = np.where(vals >= 1.0, 1.0, f_hi)
    f_lo = np.where(vals <= 0.0, 0.0, f_lo)
    return float(max(np.max(np.abs(emp_hi - f_hi)), np.max(np.abs(emp_lo - f_lo))))


# ---- mixing by tokens (docs/mixing.md, "Mixing by tokens") ----


def token_interleave(k, changes, n, lengths):
    """The exact token schedule restated in Python floats (the kernel's IEEE operations, so the
    choices must agree exactly). ``lengths[d]`` lists source d's item lengths in the order it is
    read (item j has length ``lengths[d][j % len]``). Each change (position, weights) starts a
    segment and carries each source's lag c_d - T_d in tokens; with m tokens served in the
    segment, a positive-weight source is eligible if (base_d + s_d) / w_d <= m (s_d: its tokens
    in the segment) and the eligible one with the smallest (base_d + s_d + L_d) / w_d wins (L_d
    the length of its next item), ties to the lowest index; with none eligible, the largest
    w_d * m - (base_d + s_d)."""
    inf = math.inf
    w = [0.0] * k
    inv = [0.0] * k
    base = [0.0] * k
    seg = [0] * k
    count = [0] * k
    total = seg_start = 0
    out = []
    changes = sorted(changes, key=lambda c: c[0])
    ci = 0
    for position in range(n):
        new = None
        while ci < len(changes) and changes[ci][0] == position:
            new = changes[ci][1]
            ci += 1
        if new is not None:
            length = float(total - seg_start)
            for d in range(k):
                base[d] = base[d] + float(seg[d]) - w[d] * length
            w, inv = _segment_shares(new)
            seg = [0] * k
            seg_start = total
        m = float(total - seg_start)
        best, best_due = -1, inf
        for d in range(k):
            if w[d] > 0:
                c = base[d] + float(seg[d])
                nxt = float(lengths[d][count[d] % len(lengths[d])])
                if c * inv[d] <= m and (c + nxt) * inv[d] < best_due:
                    best, best_due = d, (c + nxt) * inv[d]
        if best < 0:
            most = -inf
            for d in range(k):
                if w[d] > 0 and w[d] * m - (base[d] + float(seg[d])) > most:
                    most, best = w[d] * m - (base[d] + float(seg[d])), d
        length_b = lengths[best][count[best] % len(lengths[best])]
        out.append(best)
        count[best] += 1
        seg[best] += length_b
        total += length_b
    return out


def token_excess(src, item_len, k, weights_at):
    """The largest |T_d - W_d| over every prefix and source, in exact rationals: T_d counts the
    tokens given to source d, W_d is its target, the integral of its normalised weight over the
    tokens served (item i, served at position i, adds item_len[i] * w_d(i)). ``weights_at(i)``
    gives the (unnormalised) weights in force at position i. Returns a Fraction."""
    from fractions import Fraction

    served = [0] * k
    target = [Fraction(0)] * k
    worst = Fraction(0)
    cache_key, shares = None, None
    for i, (d, ln) in enumerate(zip(src, item_len)):
        w = weights_at(i)
        if w is not cache_key:
            total = sum(Fraction(x) for x in w)
            shares = [Fraction(x) / total for x in w]
            cache_key = w
        served[d] += ln
        for e in range(k):
            target[e] += shares[e] * ln
        for e in range(k):
            dev = abs(served[e] - target[e])
            if dev > worst:
                worst = dev
    return worst
