"""WeightedReservoir ids: an id names one item of the stream, so a repeat, a clash with the
running positions used as default ids, or an id outside int64 is refused, naming the id."""

import mixsieve as ms
import numpy as np
import pytest


@pytest.mark.parametrize("method", ["ares", "expj", "pps"])
def test_explicit_ids_colliding_with_default_ids_are_refused(method):
    q = ms.WeightedReservoir(3, seed=0, method=method)
    q.add(np.ones(2))
    with pytest.raises(ValueError, match=r"id 0 already names an item"):
        q.add(np.ones(2), ids=np.array([0, 1]))
    q.add(np.ones(2), ids=np.array([5, 6]))  # disjoint: fine
    assert len(q) == 3 and set(q.ids().tolist()) <= {0, 1, 5, 6}


def test_ids_repeated_within_an_add_are_refused():
    q = ms.WeightedReservoir(3, seed=0)
    with pytest.raises(ValueError, match=r"id 7 more than once"):
        q.add(np.ones(2), ids=np.array([7, 7]))
    with pytest.raises(ValueError, match=r"id 3 more than once"):
        q.add(np.ones(4), ids=np.array([1, 3, 2, 3]))
    assert len(q) == 0  # nothing was added


def test_ids_already_held_are_refused_both_ways():
    q = ms.WeightedReservoir(5, seed=0)
    q.add(np.ones(2), ids=np.array([10, 2]))
    with pytest.raises(ValueError, match=r"id 10 already names an item"):
        q.add(np.ones(1), ids=np.array([10]))
    # Default ids are the running positions 2, 3: 2 is held as an explicit id.
    with pytest.raises(ValueError, match=r"default id 2"):
        q.add(np.ones(2))


def test_uint64_ids_beyond_int64_are_refused_not_wrapped():
    q = ms.WeightedReservoir(3, seed=0)
    big = np.array([2**64 - 1, 1], dtype=np.uint64)
    with pytest.raises(ValueError, match=str(2**64 - 1)):
        q.add(np.ones(2), ids=big)
    with pytest.raises(ValueError, match=str(2**63)):
        q.add(np.ones(1), ids=np.array([2**63], dtype=np.uint64))
    q.add(np.ones(1), ids=np.array([2**63 - 1], dtype=np.uint64))
    assert q.ids().tolist() == [2**63 - 1]
