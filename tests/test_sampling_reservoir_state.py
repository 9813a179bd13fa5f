"""WeightedReservoir.load_state_dict refuses corrupt states with a TypeError or ValueError
naming the field, instead of accepting them or failing deep in the binding."""

import mixsieve as ms
import numpy as np
import pytest


def _state(method="ares"):
    q = ms.WeightedReservoir(3, seed=0, method=method)
    q.add(np.arange(1.0, 6.0))
    return q.state_dict()


def _load(state, method="ares"):
    ms.WeightedReservoir(3, seed=0, method=method).load_state_dict(state)


@pytest.mark.parametrize(
    ("edit", "exc", "match"),
    [
        (lambda s: s["items"].append(list(s["items"][0])) or s["items"].pop(1), ValueError, r"repeats id"),
        (lambda s: s.update(seen=2), ValueError, r"state\['seen'\] = 2 is less than the 3 items"),
        (lambda s: s.update(default_ids="junk"), TypeError, r"state\['default_ids'\] must be a list"),
        (lambda s: s.update(default_ids=[5, 2]), ValueError, r"state\['default_ids'\]"),
        (lambda s: s.update(k=3.0), TypeError, r"state\['k'\] must be an int"),
        (lambda s: s.update(seen="garbage"), TypeError, r"state\['seen'\] must be an int"),
        (lambda s: s.update(seen=-5), ValueError, r"state\['seen'\] must be an int in \[0, "),
        (lambda s: s["items"][0].__setitem__(0, 2**70), ValueError, r"state\['items'\]\[0\]\[0\]"),
        (lambda s: s.update(items="garbage"), TypeError, r"state\['items'\] must be a list"),
        (lambda s: s["items"][0].pop(), ValueError, r"state\['items'\]\[0\] must have 2 entries"),
    ],
)
def test_corrupt_states_are_refused_naming_the_field(edit, exc, match):
    state = _state()
    edit(state)
    with pytest.raises(exc, match=match):
        _load(state)


def test_corrupt_pps_state_is_refused():
    state = _state("pps")
    first = (state["certain"] + state["ordinary"])[0]
    state["ordinary"] = state["ordinary"] + [list(first)]
    with pytest.raises(ValueError, match=r"repeats id"):
        _load(state, "pps")


@pytest.mark.parametrize("method", ["ares", "expj", "pps"])
def test_valid_states_still_round_trip(method):
    state = _state(method)
    q = ms.WeightedReservoir(3, seed=0, method=method)
    q.load_state_dict(state)
    assert q.state_dict() == state
