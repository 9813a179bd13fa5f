"""Soft-cap sampling where it used to fall over: counts x penalty far past exp's range, and
batches nearly as large as the population with scores far apart. Compared against FLYT's
notebook algorithm in numpy and the exact count distribution by enumeration
(tests/oracles.py); at the ends of the float range against the same scores at an ordinary
offset. Thresholds fixed in advance: chi-square Wilson-Hilferty z < 4.75 (p ~ 1e-6), per-item
|z| < 5.3 (Bonferroni over 30 items: family-wise p < 4e-6)."""

import subprocess
import sys
import textwrap

import mixsieve as ms
import numpy as np
import oracles

Z_CHI2 = 4.75
Z_ONE = 5.3


def _capped(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs code in a child with its address space capped at 3 GiB (a regression used 24 GB)."""
    head = (
        "import resource\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
        "cap = 3 << 30 if hard == resource.RLIM_INFINITY else min(3 << 30, hard)\n"
        "resource.setrlimit(resource.RLIMIT_AS, (cap, hard))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", head + textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


# ---- soft-cap sampling ----


def test_soft_cap_past_the_exponent_range_matches_the_reference():
    # Counts x penalty reach ~800, far past exp's range (~745): the weights must be kept
    # relative to the running maximum. Per-item mean counts against FLYT's notebook algorithm.
    rng = np.random.default_rng(1)
    scores = rng.normal(0, 1, 30)
    total, penalty, batch, runs = 12_000, 2.0, 3, 40
    ours = np.array(
        [ms.soft_cap_sample(scores, total, penalty=penalty, batch_size=batch, seed=s) for s in range(runs)]
    )
    assert (ours.sum(1) == total).all()
    assert penalty * ours.max() > 745
    ref_rng = np.random.default_rng(7)
    ref = np.array([oracles.soft_cap_reference(scores, penalty, total, batch, ref_rng) for _ in range(runs)])
    diff = ours.mean(0) - ref.mean(0)
    se = np.sqrt(ours.var(0) / runs + ref.var(0) / runs) + 1e-9
    assert np.max(np.abs(diff / se)) < Z_ONE


def test_soft_cap_batches_nearly_as_large_as_the_population():
    # With batch_size close to the number of examples and scores far apart, the last item a
    # batch needs is a light one; its key is ~e^30 times the first one's. Generating every race
    # point below it took memory in proportion (gigabytes): the kernel must switch to direct
    # keys. First in a child process with its address space capped, so a regression fails the
    # test instead of exhausting the machine.
    scores = [-15.0, 15.0, 0.0, 5.0, -5.0]
    proc = _capped(
        f"""
        import numpy as np, mixsieve as ms
        c = ms.soft_cap_sample(np.array({scores}), 80, penalty=0.1, batch_size=4, seed=0)
        print(int(c.sum()))
        """
    )
    assert proc.returncode == 0 and proc.stdout.split() == ["80"], proc.stderr[-2000:]
    # batch_size = n: every batch takes every example.
    c = ms.soft_cap_sample(np.array(scores), 80, penalty=0.1, batch_size=5, seed=1)
    assert c.tolist() == [16] * 5
    # batch_size = n - 1 against the exact count distribution.
    exact = oracles.soft_cap_exact(scores, 0.7, 8, 4)
    runs = 20000
    seen: dict[tuple, int] = {}
    for s in range(runs):
        got = tuple(ms.soft_cap_sample(np.array(scores), 8, penalty=0.7, batch_size=4, seed=s).tolist())
        seen[got] = seen.get(got, 0) + 1
    assert set(seen) <= set(exact)
    cells = list(exact)
    stat, df = oracles.chi2_gof([seen.get(c, 0) for c in cells], [exact[c] for c in cells], runs)
    assert oracles.chi2_z(stat, df) < Z_CHI2, (stat, df)


def test_soft_cap_scores_at_the_ends_of_the_float_range():
    base = np.array([0.5, -1.0, 2.0, 0.0, 1.5, -0.5])
    want = ms.soft_cap_sample(base, 600, penalty=0.3, batch_size=2, seed=4)
    for dtype, shift in [(np.float64, 2.0**40), (np.float64, -(2.0**40)), (np.float32, 2.0**16)]:
        s = (base + shift).astype(dtype)
        assert np.all(s.astype(np.float64) - shift == base)
        got = ms.soft_cap_sample(s, 600, penalty=0.3, batch_size=2, seed=4)
        np.testing.assert_array_equal(got, want)
    tiny = np.array([5e-324, 1e-310, 0.0, -5e-324])  # all equal for softmax purposes
    c = ms.soft_cap_sample(tiny, 4000, penalty=1e-3, batch_size=1, seed=0)
    assert np.abs(c - 1000).max() < 6 * np.sqrt(1000 * 0.75)
    f32 = np.array([3e38, 3e38, -3e38, -3e38], dtype=np.float32)
    c = ms.soft_cap_sample(f32, 1000, penalty=0.5, batch_size=2, seed=0)
    assert c.tolist() == [500, 500, 0, 0]


def test_soft_cap_penalty_past_double_precision_once_every_example_is_picked():
    # e^-penalty below 2^-53: once every example has been picked, every weight left is
    # rounding noise of the running sums unless they are recomputed. Penalties >= 38 used to
    # allocate without bound, find no threshold, or find no item left with a weight.
    proc = _capped(
        """
        import numpy as np, mixsieve as ms
        sc = np.random.default_rng(0).normal(size=1000)
        for total, penalty, batch in [(1100, 100.0, 100), (2000, 60.0, 1000), (1500, 1e300, 250)]:
            c = ms.soft_cap_sample(sc, total, penalty=penalty, batch_size=batch, seed=0)
            print(int(c.sum()), int(c.min()), int(c.max()), int((c == 2).sum()))
            p = ms.soft_cap_sample(sc, total, penalty=penalty, batch_size=batch, seed=0, return_indices=True)
            for i in range(0, total, batch):
                assert len(set(p[i : i + batch].tolist())) == min(batch, total - i)
            assert (np.bincount(p, minlength=1000) == c).all()
        for penalty in [38.0, 40.0, 1e3, 1e300]:
            c = ms.soft_cap_sample(np.zeros(10), 11, penalty=penalty, batch_size=1, seed=0)
            print(int(c.sum()), int(c.min()), int(c.max()))
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Every example once before any twice; then a without-replacement batch.
    assert proc.stdout.split("\n")[:7] == [
        "1100 1 2 100",
        "2000 2 2 1000",
        "1500 1 2 500",
        "11 1 2",
        "11 1 2",
        "11 1 2",
        "11 1 2",
    ], proc.stdout


def test_soft_cap_huge_penalty_keeps_the_scores_among_the_least_picked():
    # After the first two picks both examples have count 1: the third pick must still follow
    # softmax(scores) (1 / (1 + e^-4) for example 1), not lose the scores in penalty * counts.
    hits = sum(
        int(ms.soft_cap_sample(np.array([0.0, 4.0]), 3, penalty=1e300, batch_size=1, seed=s)[1] == 2)
        for s in range(400)
    )
    p = 1 / (1 + np.exp(-4.0))
    assert abs(hits - 400 * p) < 5.3 * np.sqrt(400 * p * (1 - p)), hits


def test_soft_cap_large_penalty_matches_the_reference():
    # Penalty 45: every repeat waits until every example has been picked (e^-45 < 2^-64 of
    # the weight left); per-item mean counts against FLYT's notebook algorithm.
    rng = np.random.default_rng(5)
    scores = rng.normal(0, 3, 30)
    total, penalty, batch, runs = 100, 45.0, 5, 300
    ours = np.array(
        [ms.soft_cap_sample(scores, total, penalty=penalty, batch_size=batch, seed=s) for s in range(runs)]
    )
    assert (ours.sum(1) == total).all() and (ours.min(1) == 3).all()
    ref_rng = np.random.default_rng(8)
    ref = np.array([oracles.soft_cap_reference(scores, penalty, total, batch, ref_rng) for _ in range(runs)])
    diff = ours.mean(0) - ref.mean(0)
    se = np.sqrt(ours.var(0) / runs + ref.var(0) / runs) + 1e-9
    assert np.max(np.abs(diff / se)) < Z_ONE


def test_soft_cap_long_run_stops_on_ctrl_c():
    # 10^9 batches would run for hours: SIGINT (Ctrl-C) must raise KeyboardInterrupt from
    # inside the kernel. The child signals itself once the call has started.
    code = """
        import os, signal, threading
        import numpy as np, mixsieve as ms
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            ms.soft_cap_sample(np.zeros(1000), 10**12, penalty=0.15, batch_size=1000, seed=0)
        except KeyboardInterrupt:
            print("interrupted")
        """
    try:
        proc = _capped(code, timeout=120)
    except subprocess.TimeoutExpired:
        raise AssertionError("soft_cap_sample ignored SIGINT for 120 s") from None
    assert proc.returncode == 0 and proc.stdout.split() == ["interrupted"], proc.stderr[-2000:]
