"""Mixing-weight policies: temperature, UniMax, schedules and the ODM OnlineMixer.

Compared against published test vectors (the papers' formulas worked by hand) and pure-Python
oracles in tests/oracles.py.
"""

from __future__ import annotations

import mixsieve as ms
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import exp3_step, temperature_weights, unimax_weights


@pytest.mark.parametrize(
    ("tau", "expected"),
    [
        (1, [0.900901, 0.090090, 0.009009]),
        (2, [0.706101, 0.223289, 0.070610]),
        (5, [0.492838, 0.310960, 0.196202]),
        (1e9, [1 / 3, 1 / 3, 1 / 3]),
    ],
)
def test_temperature_spec_vectors(tau, expected):
    got = ms.weights.temperature([100, 10, 1], tau=tau)
    assert got == pytest.approx(expected, abs=1e-6)


@given(
    st.lists(st.integers(0, 10**9), min_size=1, max_size=20).filter(lambda v: sum(v) > 0), st.floats(0.2, 20)
)
@settings(max_examples=60, deadline=None)
def test_temperature_matches_oracle(sizes, tau):
    got = ms.weights.temperature(sizes, tau=tau)
    assert got == pytest.approx(temperature_weights(sizes, tau), rel=1e-9, abs=1e-12)
    assert got.sum() == pytest.approx(1.0)


def test_unimax_spec_vector():
    sizes = {
        "swe": 179955884499,
        "fas": 184595788282,
        "ekk": 42541080893,
        "isl": 10027573389,
        "fao": 549707867,
    }
    w = ms.weights.unimax(sizes, budget=250e9, max_epochs=4)
    assert w["fao"] == pytest.approx(0.008795325872, abs=1e-11)
    assert w["isl"] == pytest.approx(0.160441174224, abs=1e-11)
    for k in ("ekk", "swe", "fas"):
        assert w[k] == pytest.approx(0.276921166635, abs=1e-11)


@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=12), st.floats(0.05, 0.99), st.floats(1, 8))
@settings(max_examples=60, deadline=None)
def test_unimax_matches_oracle(sizes, frac, epochs):
    budget = frac * epochs * sum(sizes)
    got = ms.weights.unimax(sizes, budget=budget, max_epochs=epochs)
    assert got == pytest.approx(unimax_weights(sizes, budget, epochs), rel=1e-9, abs=1e-12)


def test_unimax_infeasible_budget():
    with pytest.raises(ValueError, match="exceeds max_epochs"):
        ms.weights.unimax([10, 20], budget=1000, max_epochs=4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ms.weights.temperature([1, -2]), r"sizes\[1\] = -2.0"),
        (lambda: ms.weights.temperature([0, 0]), "all zero"),
        (lambda: ms.weights.temperature([1, 2], tau=0), "tau must be"),
        (lambda: ms.weights.schedule([(5, [1])]), "position 0"),
        (lambda: ms.weights.schedule([(0, [1]), (0, [2])]), "increase strictly"),
        (lambda: ms.weights.schedule([(0, [1])], interpolate="cubic"), "interpolate"),
        (lambda: ms.weights.OnlineMixer(["a", "a"]), "distinct"),
        (lambda: ms.weights.OnlineMixer(["a"], algorithm="doremi"), "exp3"),
        (lambda: ms.weights.OnlineMixer(["a", "b"]).update({"c": 1.0}), "unknown source 'c'"),
        (lambda: ms.weights.OnlineMixer(["a", "b"]).update({"a": float("nan")}), "finite"),
    ],
)
def test_bad_policy_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_online_mixer_matches_oracle_and_restores():
    rng = np.random.default_rng(0)
    names = ["a", "b", "c", "d"]
    mixer = ms.weights.OnlineMixer(names, smoothing=0.8)
    p, rewards = [0.25] * 4, [0.0] * 4
    for t in range(40):
        seen = rng.choice(4, size=rng.integers(1, 5), replace=False)
        losses = {int(i): float(rng.uniform(1, 4) + (i == 2)) for i in seen}
        got = mixer.update({names[i]: v for i, v in losses.items()})
        p, rewards = exp3_step(p, rewards, t, losses, 0.8)
        assert [got[n] for n in names] == pytest.approx(p, rel=1e-12)
    assert max(got, key=got.get) == "c"  # the source with the highest loss gets the most weight
    assert min(got.values()) >= min(1 / 4, np.sqrt(np.log(4) / (4 * 40))) - 1e-12  # exploration floor
    other = ms.weights.OnlineMixer(names, smoothing=0.8)
    other.load_state_dict(mixer.state_dict())
    assert other.update({"a": 2.0}) == mixer.update({"a": 2.0})


def test_schedule_lookup():
    s = ms.weights.schedule([(0, {"a": 1, "b": 0}), (100, {"a": 0, "b": 1})], interpolate="linear", every=25)
    vec = s.vectors(["a", "b"])
    assert s.at(0, vec).tolist() == [1, 0]
    assert s.at(60, vec).tolist() == [0.5, 0.5]  # evaluated at 50
    assert s.at(250, vec).tolist() == [0, 1]
    assert [s.next_change(p) for p in (0, 24, 25, 99, 100)] == [25, 25, 50, 100, None]
