"""Weighted sampling at both ends of the float range, for every method: ares, expj, pps,
replace=True, and WeightedReservoir streaming and merges; float32 and float64, subnormal
(5e-324) to 1.8e308, and mixtures spanning the whole range.

Compared against the exact references of tests/oracles.py (enumeration of successive sampling
and PPS targets in rational arithmetic, the 1-D inclusion integral) and against the sampler's
own output at an ordinary scale: multiplying every weight by a power of two changes no key's
order, so the sample must be the same ids.

Thresholds are fixed in advance: a chi-square must stay below Wilson-Hilferty z = 4.75 (tail
p ~ 1e-6), a single binomial or per-item |z| below 5.3 (p ~ 1.2e-7 each; with Bonferroni over
at most 100 items, family-wise p < 1.2e-5)."""

import json
import math
from fractions import Fraction

import mixsieve as ms
import numpy as np
import oracles
import pytest

W6 = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 0.5])
Z_CHI2 = 4.75
Z_ONE = 5.3
METHODS_WOR = ["ares", "expj"]

# (dtype, power of two): W6 * 2**e is exact in that dtype and sits at one end of its range.
SCALES = [
    (np.float64, -1070),  # subnormal: 8..160 units of 2**-1074
    (np.float64, -1020),  # just above the smallest normal
    (np.float64, 1019),  # 10 * 2**1019 = 5.6e307
    (np.float32, -140),  # float32 subnormal
    (np.float32, 123),  # 10 * 2**123 = 8.5e37
]


def _binomial_z(hits, n, p):
    return (hits - n * p) / np.sqrt(n * p * (1 - p))


def _z_max(freq, probs, n):
    freq, probs = np.asarray(freq, float), np.asarray(probs, float)
    sd = np.sqrt(np.maximum(probs * (1 - probs), 1e-12) / n)
    return float(np.max(np.abs(freq - probs) / sd))


# ---- successive sampling (ares, expj) ----


@pytest.mark.parametrize("method", METHODS_WOR)
@pytest.mark.parametrize(("dtype", "e"), SCALES)
def test_scaled_weights_give_the_same_sample_and_the_exact_distribution(method, dtype, e):
    w = (W6 * 2.0**e).astype(dtype)
    assert np.all(w.astype(np.float64) == W6 * 2.0**e)  # exact scaling
    seq, _, _ = oracles.exact_successive(w, 3)
    runs = 12000
    counts: dict[tuple, int] = {}
    same = 0
    for s in range(runs):
        got = tuple(ms.weighted_sample(w, 3, seed=s, method=method).tolist())
        counts[got] = counts.get(got, 0) + 1
        if s < 300:
            same += got == tuple(ms.weighted_sample(W6, 3, seed=s, method=method).tolist())
    assert same == 300  # keys scale by 2**e: the order cannot change
    cells = list(seq)
    assert set(counts) <= set(cells)
    stat, df = oracles.chi2_gof([counts.get(c, 0) for c in cells], [seq[c] for c in cells], runs)
    assert oracles.chi2_z(stat, df) < Z_CHI2, (stat, df)


@pytest.mark.parametrize("method", [*METHODS_WOR, "pps"])
@pytest.mark.parametrize("unit", [5e-324, 1e-310, 2.0**-140, 1e300])
def test_heavier_half_is_picked_as_often_as_it_should_be(method, unit):
    # 50 items of weight `unit` and 50 of weight 2 * unit (exact, float64; 2**-140 also as
    # float32): the heavier half must be picked with the oracle's frequency, for any unit.
    w = np.array([unit] * 50 + [2 * unit] * 50)
    k, runs = 5, 3000
    if method == "pps":
        pi = np.array(oracles.pps_targets(w, k))
    else:
        pi = oracles.successive_inclusion([1.0] * 50 + [2.0] * 50, k)
    for arr in [w] + ([w.astype(np.float32)] if unit == 2.0**-140 else []):
        hits = np.zeros(100)
        for s in range(runs):
            hits[ms.weighted_sample(arr, k, seed=s, method=method)] += 1
        assert hits.sum() == k * runs
        # Each pick is from the heavier half with probability sum(pi[50:]) / k.
        assert abs(_binomial_z(hits[50:].sum(), k * runs, pi[50:].sum() / k)) < Z_ONE
        assert _z_max(hits / runs, pi, runs) < Z_ONE


WHOLE_RANGE = np.array([1e-320, 2e-320, 1e-310, 1.0, 1e308])


@pytest.mark.parametrize("method", METHODS_WOR)
def test_weights_spanning_the_whole_range(method):
    # Successive sampling takes 1e308, 1.0, 1e-310 first (anything else has probability
    # < 1e-10), then 2e-320 before 1e-320 with probability 2/3.
    runs = 3000
    last_two = 0
    for s in range(runs):
        got, keys = ms.weighted_sample(WHOLE_RANGE, 5, seed=s, method=method, return_keys=True)
        assert got[:3].tolist() == [4, 3, 2]
        assert sorted(got[3:].tolist()) == [0, 1]
        last_two += got[3] == 1
        assert all(a >= b for a, b in zip(keys.tolist(), keys.tolist()[1:]))  # rounded, may tie at -inf
    assert abs(_binomial_z(last_two, runs, 2 / 3)) < Z_ONE
    assert ms.weighted_sample(WHOLE_RANGE, 2, seed=0, method=method).tolist() == [4, 3]


def test_keys_are_log_u_over_w_wherever_that_is_a_normal_double():
    rng = np.random.default_rng(3)
    w = rng.integers(1, 16, 4000) * 2.0 ** rng.choice([-1074, -1000, -500, 0, 500, 1019], 4000)
    ids, keys = ms.weighted_sample(w, 4000, seed=9, return_keys=True)
    assert sorted(ids.tolist()) == list(range(4000))
    with np.errstate(over="ignore", under="ignore"):
        want = np.log(oracles.ares_uniforms(9, ids)) / w[ids]
    normal = np.abs(want) >= np.finfo(np.float64).tiny
    np.testing.assert_allclose(keys[normal], want[normal], rtol=1e-14)  # numpy's log vs libm: 1 ulp
    # The order is by exact key even where the double keys tie (0 or -inf).
    exact = [oracles.ares_exact_key(9, int(i), float(w[i])) for i in ids]
    assert all(a >= b for a, b in zip(exact, exact[1:]))


# ---- PPS ----


def test_pps_certainty_items_are_capped_at_k():
    w = np.array([1e20] + [1.0] * 1000)
    target = np.array(oracles.pps_targets(w, 10))
    runs = 3000
    hits = np.zeros(len(w))
    for s in range(runs):
        got = ms.weighted_sample(w, 10, seed=s, method="pps")
        assert len(got) == 10 and len(set(got.tolist())) == 10
        hits[got] += 1
    assert hits[0] == runs and hits[1:].sum() == 9 * runs
    # The 1000 light items: each at 9/1000; pooled into 10 groups of 100 for a chi-square.
    groups = hits[1:].reshape(10, 100).sum(1)
    stat, df = oracles.chi2_gof(groups, target[1:].reshape(10, 100).sum(1) / 9, 9 * runs)
    assert oracles.chi2_z(stat, df) < Z_CHI2


@pytest.mark.parametrize(
    "w",
    [
        [1.7e308, 1.7e308, 0.85e308, 1e300, 1.0],
        [1e-320, 2e-320, 1e-310, 1.0, 1e308],
        [5e-324, 1e-323, 1.5e-323, 2e-323, 1e-322],
    ],
)
def test_pps_inclusion_across_the_range(w):
    w = np.array(w)
    for k in (2, 3, 4):
        if w[0] == 1e-320 and k > 2:
            # The sample must then choose among weights below 2**-1074 times the largest:
            # no double scale holds both ends, so PPS refuses instead of guessing.
            with pytest.raises(ValueError, match="span more than the double range"):
                ms.weighted_sample(w, k, seed=0, method="pps")
            continue
        target = np.array(oracles.pps_targets(w, k))
        runs = 4000
        hits = np.zeros(len(w))
        for s in range(runs):
            got = ms.weighted_sample(w, k, seed=s, method="pps")
            assert len(got) == k
            hits[got] += 1
        assert _z_max(hits / runs, target, runs) < Z_ONE, (k, hits / runs, target)


# ---- with replacement ----


@pytest.mark.parametrize(
    ("w", "dtype"),
    [
        ([1.7e308, 0.85e308, 1.7e308], np.float64),
        ([5e-324, 1e-323, 1.5e-323], np.float64),
        ([3e38, 1.5e38, 3e38], np.float32),
        ([1e-45, 3e-45, 1.5e-45], np.float32),  # float32 subnormals: 1, 2 and 1 units
    ],
)
def test_with_replacement_at_the_ends_of_the_range(w, dtype):
    arr = np.array(w, dtype=dtype)
    exact = [Fraction(float(x)) for x in arr]
    p = [float(x / sum(exact)) for x in exact]
    draws = ms.weighted_sample(arr, 60_000, seed=5, replace=True)
    stat, df = oracles.chi2_gof(np.bincount(draws, minlength=3), p, len(draws))
    assert oracles.chi2_z(stat, df) < Z_CHI2
    big = ms.weighted_sample(WHOLE_RANGE, 1000, seed=1, replace=True)
    assert (big == 4).all()  # every other weight has probability < 1e-308


# ---- streaming reservoirs and merges ----


@pytest.mark.parametrize("e", [-1074, -1000, 0, 1019])
@pytest.mark.parametrize("method", ["ares", "expj"])
def test_reservoirs_at_the_ends_of_the_range_match_the_ordinary_scale(e, method):
    rng = np.random.default_rng(12)
    base = rng.integers(1, 16, 20_000).astype(np.float64)
    w = base * 2.0**e
    want = ms.weighted_sample(base, 40, seed=6, method=method)
    assert ms.weighted_sample(w, 40, seed=6, method=method).tolist() == want.tolist()
    r = ms.WeightedReservoir(40, seed=6, method=method)
    for chunk in np.array_split(w, 7):
        r.add(chunk)
    assert r.ids().tolist() == want.tolist()
    # Shards with explicit ids, merged; and a state round trip on the way.
    a, b = (ms.WeightedReservoir(40, seed=6, method=method) for _ in range(2))
    a.add(w[:5000], ids=np.arange(5000))
    b.load_state_dict(json.loads(json.dumps(b.state_dict())))
    b.add(w[5000:], ids=np.arange(5000, w.size))
    a.merge(b)
    ref = ms.WeightedReservoir(40, seed=6, method=method)
    ref.add(base[:5000], ids=np.arange(5000))
    ref2 = ms.WeightedReservoir(40, seed=6, method=method)
    ref2.add(base[5000:], ids=np.arange(5000, w.size))
    ref.merge(ref2)
    assert a.ids().tolist() == ref.ids().tolist()
    if method == "ares":
        assert a.ids().tolist() == want.tolist()


def test_ares_reservoir_over_the_whole_range_equals_one_sample():
    rng = np.random.default_rng(4)
    w = rng.integers(1, 16, 3000) * 2.0 ** rng.choice([-1074, -1060, -300, 0, 300, 1019], 3000)
    want = ms.weighted_sample(w, 2500, seed=2)
    r = ms.WeightedReservoir(2500, seed=2)
    for chunk in np.array_split(w, 5):
        r.add(chunk)
    assert r.ids().tolist() == want.tolist()
    # One ordinary shard, one extreme shard, merged either way round, through a state dict.
    ordinary = np.where(np.abs(np.log2(w)) < 400)[0]
    extreme = np.where(np.abs(np.log2(w)) >= 400)[0]
    for first, second in [(ordinary, extreme), (extreme, ordinary)]:
        a, b = ms.WeightedReservoir(2500, seed=2), ms.WeightedReservoir(2500, seed=2)
        a.add(w[first], ids=first)
        b.add(w[second], ids=second)
        b2 = ms.WeightedReservoir(2500, seed=2)
        b2.load_state_dict(json.loads(json.dumps(b.state_dict())))
        a.merge(b2)
        assert a.ids().tolist() == want.tolist()


# ---- expj keys are log(u) / w of the weights given, whatever the internal scale ----


def test_expj_keys_are_log_u_over_w_for_extreme_weights():
    # With k = n every key is drawn while the reservoir fills: log(u_id) / w_id exactly, u_id
    # from the oracle. 1e300 makes expj scale the weights by 2^-996 internally; the keys it
    # returns must not carry that factor (the w = 1 keys were off by 2^996).
    w = np.array([1e300, 1.0, 1.0, 1.0, 1.0])
    for seed in range(4):
        u = oracles.expj_fill_uniforms(seed, range(w.size))
        want = np.array([math.log(u[i]) / w[i] for i in range(w.size)])
        ids, keys = ms.weighted_sample(w, w.size, seed=seed, method="expj", return_keys=True)
        np.testing.assert_allclose(keys, want[ids], rtol=1e-14)
        r = ms.WeightedReservoir(w.size, seed=seed, method="expj")
        r.add(w)
        np.testing.assert_allclose(r.keys(), want[r.ids()], rtol=1e-14)
    # k < n: the w = 1 item kept is near log(u) (about -0.4), not -1e299.
    _, keys = ms.weighted_sample(w, 2, seed=0, method="expj", return_keys=True)
    assert keys[0] > -1e-290 and -50.0 < keys[1] < 0.0


@pytest.mark.parametrize("e", [-1074, -1070, -1020, 1000, 1019])
def test_expj_keys_scale_with_the_weights(e):
    # Weights times 2^e: the same sample, every key log(u) / w times 2^-e, rounded once (-inf
    # or a subnormal where that leaves the double range, as ares returns them).
    base = np.random.default_rng(5).integers(1, 16, 5000).astype(np.float64)
    w = base * 2.0**e  # exact: integers below 16
    want_ids, want = ms.weighted_sample(base, 50, seed=3, method="expj", return_keys=True)
    with np.errstate(over="ignore", under="ignore"):
        want = np.ldexp(want, -e)
    ids, keys = ms.weighted_sample(w, 50, seed=3, method="expj", return_keys=True)
    assert ids.tolist() == want_ids.tolist()
    np.testing.assert_array_equal(keys, want)
    r = ms.WeightedReservoir(50, seed=3, method="expj")
    for chunk in np.array_split(w, 6):
        r.add(chunk)
    assert r.ids().tolist() == want_ids.tolist()
    np.testing.assert_array_equal(r.keys(), want)


@pytest.mark.parametrize("e", [-1074, 1019])
def test_expj_state_holds_true_keys_and_resumes(e):
    base = np.random.default_rng(6).integers(1, 16, 4000).astype(np.float64)
    w = base * 2.0**e
    ordinary = ms.WeightedReservoir(30, seed=9, method="expj")
    ordinary.add(base[:1500])
    r = ms.WeightedReservoir(30, seed=9, method="expj")
    r.add(w[:1500])
    state = json.loads(json.dumps(r.state_dict()))
    # Items are [id, key] or, when the key may leave the double range, [id, -frac, exp] with
    # key = -frac * 2^exp: either way the key of the weights given.
    got = {t[0]: Fraction(t[1]) * Fraction(2) ** (t[2] if len(t) == 3 else 0) for t in state["items"]}
    want = {t[0]: Fraction(t[1]) / Fraction(2) ** e for t in ordinary.state_dict()["items"]}
    assert got == want
    resumed = ms.WeightedReservoir(30, seed=9, method="expj")
    resumed.load_state_dict(state)
    resumed.add(w[1500:])
    r.add(w[1500:])
    assert resumed.ids().tolist() == r.ids().tolist()
    np.testing.assert_array_equal(resumed.keys(), r.keys())


def test_expj_reservoir_refuses_a_range_it_cannot_order():
    r = ms.WeightedReservoir(5, seed=0, method="expj")
    with pytest.raises(ValueError, match="method='ares'"):
        r.add(WHOLE_RANGE)


def test_every_instruction_set_gives_the_same_bytes_at_the_ends_of_the_range():
    # The double-key scan decides when to switch to wide keys; that decision, and the sample,
    # must not depend on the vector level of the first pass.
    rng = np.random.default_rng(8)
    w = rng.integers(0, 16, 50_000) * 2.0 ** rng.choice([-1074, -1040, 0, 1000, 1019], 50_000)
    e32 = rng.choice([-149, -130, 0, 100, 123], 50_000)
    w32 = (rng.integers(0, 16, 50_000) * 2.0**e32).astype(np.float32)
    cases = [(w, 100), (w, 40_000), (w * 2.0**-1019, 500), (w32, 300), (w32, 30_000)]

    def run():
        return [ms.weighted_sample(a, k, seed=3, return_keys=True)[0].tolist() for a, k in cases]

    previous, detected = ms._core._cap_sampling_simd(0)
    try:
        want = run()
        for level in range(1, detected + 1):
            ms._core._cap_sampling_simd(level)
            assert run() == want, f"level {level}"
    finally:
        ms._core._cap_sampling_simd(previous)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ms.weighted_sample(np.ones(3), 1, seed=0, threads=2**32 + 1), r"threads must be < 2\*\*31"),
        (lambda: ms.weighted_sample(np.ones(3), 2**63, seed=0), r"k must be < 2\*\*63"),
        (lambda: ms.WeightedReservoir(2**63, seed=0), r"k must be < 2\*\*63"),
        (lambda: ms.soft_cap_sample(np.ones(3), 2**63, penalty=1.0, batch_size=1, seed=0), r"total"),
        (lambda: ms.soft_cap_sample(np.ones(3), 3, penalty=1.0, batch_size=2**63, seed=0), r"batch_size"),
    ],
)
def test_ints_beyond_the_binding_types_are_refused_in_python(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_float16_and_big_endian_weights_are_converted():
    w = np.array([0.5, 2.0, 0.0, 1.0, 3.0])
    want = ms.weighted_sample(w, 3, seed=4)
    for dtype in [np.float16, ">f8", ">f4"]:
        np.testing.assert_array_equal(ms.weighted_sample(w.astype(dtype), 3, seed=4), want)
    np.testing.assert_array_equal(
        ms.soft_cap_sample(w.astype(">f8"), 7, penalty=0.5, batch_size=2, seed=1),
        ms.soft_cap_sample(w, 7, penalty=0.5, batch_size=2, seed=1),
    )
    with pytest.raises(TypeError, match=r"float16, float32 or float64 \(either byte order\)"):
        ms.weighted_sample(w.astype(np.complex128), 3, seed=4)
