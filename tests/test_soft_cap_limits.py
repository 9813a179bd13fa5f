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
    code = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        import numpy as np, mixsieve as ms
        c = ms.soft_cap_sample(np.array({scores}), 80, penalty=0.1, batch_size=4, seed=0)
        print(int(c.sum()))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
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
