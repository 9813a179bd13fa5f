"""Sharded reservoirs: merging needs disjoint ids, and the default method is the one whose
merges are exact. Compared against weighted_sample over the union of the shards, id for id."""

import mixsieve as ms
import numpy as np
import pytest

# ---- shards with default ids ----


def test_merge_refuses_shards_with_overlapping_default_ids():
    a, b = ms.WeightedReservoir(3, seed=1), ms.WeightedReservoir(3, seed=1)
    a.add(np.arange(1.0, 11.0))
    b.add(np.arange(1.0, 11.0))  # default ids 0..9 again
    with pytest.raises(ValueError, match=r"id \d+"):
        a.merge(b)
    assert len(a) == 3  # unchanged
    # Explicit ids that collide in the samples are refused too, naming one.
    c, d = ms.WeightedReservoir(10, seed=1), ms.WeightedReservoir(10, seed=1)
    c.add(np.ones(10), ids=np.arange(10))
    d.add(np.ones(10), ids=np.arange(5, 15))
    with pytest.raises(ValueError, match=r"id [5-9]"):
        c.merge(d)


def test_readme_shard_example_equals_one_sample():
    w = np.random.default_rng(0).lognormal(0, 1, 10_000)
    shards = np.array_split(np.arange(w.size), 4)
    reservoirs = []
    for ids in shards:  # what each worker does: ids are global positions
        r = ms.WeightedReservoir(100, seed=0)
        r.add(w[ids], ids=ids)
        reservoirs.append(r)
    for r in reservoirs[1:]:
        reservoirs[0].merge(r)
    assert reservoirs[0].ids().tolist() == ms.weighted_sample(w, 100, seed=0).tolist()


def test_one_default_method_and_it_merges_exactly():
    assert ms.WeightedReservoir(3, seed=0).method == "ares"
    w = np.arange(1.0, 101.0)
    a, b = ms.WeightedReservoir(7, seed=3), ms.WeightedReservoir(7, seed=3)
    a.add(w[:60])
    b.add(w[60:], ids=np.arange(60, 100))
    a.merge(b)
    assert a.ids().tolist() == ms.weighted_sample(w, 7, seed=3).tolist()
