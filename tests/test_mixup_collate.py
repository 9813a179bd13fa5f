"""TokenMixupCollator: padding and masks, the three pairing rules, determinism by (seed, batch
index) across calls, DataLoader worker counts, start methods and resumes, and argument errors.

Compared against: padding written out by hand; the pairing rules as properties (hypothesis over
random source layouts: a derangement, partners of another / the same source whenever one
exists, partner reuse bounded); ``sample_lambda`` called directly with the batch index as its
stream; and the single-process (``num_workers=0``) run for every other DataLoader layout.
"""

from __future__ import annotations

import doctest
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
import mixsieve as ms  # noqa: E402
import mixsieve.mixup.collate as collate_module  # noqa: E402
from mixsieve.mixup import sample_lambda  # noqa: E402
from mixsieve.mixup.collate import TokenMixupCollator, pair_rows  # noqa: E402
from mixture_sources import LOADER_WARNINGS  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

pytestmark = [pytest.mark.filterwarnings(w) for w in LOADER_WARNINGS]

TENSORS = ("xa", "xb", "va", "vb", "lam", "partner")


def rng_for(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed])))


def tagged_rows(n: int, seed: int = 0) -> list[tuple[str, list[int]]]:
    """n (source, tokens) samples of lengths 2..9 from three sources of unequal shares."""
    r = np.random.default_rng(seed)
    names = r.choice(["web", "code", "math"], size=n, p=[0.6, 0.3, 0.1])
    return [(str(s), r.integers(1, 250, size=int(r.integers(2, 10))).tolist()) for s in names]


def same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for k in TENSORS:
            assert torch.equal(x[k], y[k]), k
        assert x["source"] == y["source"] and x["batch_index"] == y["batch_index"]


# ---- padding, masks and the output contract ---------------------------------------------------


def test_pads_every_sample_form_to_the_longest_and_marks_padding():
    batch = [
        [3, 4, 5],
        (6, 7),  # a tuple of ints is tokens, not (source, tokens)
        np.array([8, 9, 10, 11], dtype=np.int32),
        torch.tensor([12, 13], dtype=torch.int16),
        b"AB",
        np.array([1, 2], dtype=np.uint64),
    ]
    out = TokenMixupCollator(alpha=0.4, seed=3, pad_id=-1)(batch)
    assert out["xa"].tolist() == [
        [3, 4, 5, -1],
        [6, 7, -1, -1],
        [8, 9, 10, 11],
        [12, 13, -1, -1],
        [65, 66, -1, -1],
        [1, 2, -1, -1],
    ]
    assert out["va"].sum(1).tolist() == [3, 2, 4, 2, 2, 2]
    assert (out["va"] == (out["xa"] != -1)).all()
    assert out["xa"].dtype == torch.int64 and out["va"].dtype == torch.bool
    p = out["partner"]
    assert p.dtype == torch.int64 and p.shape == (6,)
    assert torch.equal(out["xb"], out["xa"][p]) and torch.equal(out["vb"], out["va"][p])
    assert out["source"] == [None] * 6 and out["batch_index"] == 0
    expected = sample_lambda((6, 4), alpha=0.4, seed=3, stream=0)
    assert out["lam"].dtype == torch.float32 and torch.equal(out["lam"], expected)


def test_max_length_truncates_and_the_width_follows_the_longest_kept():
    c = TokenMixupCollator(max_length=3)
    assert c([[1, 2, 3, 4, 5], [6, 7]])["xa"].tolist() == [[1, 2, 3], [6, 7, 0]]
    assert c([[1, 2], [6, 7]])["xa"].shape == (2, 2)  # not padded up to max_length


def test_dict_samples_from_both_mixture_dataset_outputs():
    c = TokenMixupCollator(pairing="cross-source", key="ids")
    batch = [{"ids": [1, 2, 3], "source": "a"}, {"source": "b", "sample": [4, 5]}]
    out = c(batch)
    assert out["xa"].tolist() == [[1, 2, 3], [4, 5, 0]]
    assert out["source"] == ["a", "b"] and out["partner"].tolist() == [1, 0]


def test_lambda_matches_sample_lambda_with_the_batch_index_as_stream_and_dominant():
    c = TokenMixupCollator(alpha=0.7, seed=11, dominant=True, start_batch=5)
    for stream in (5, 6, 7):
        out = c([[1, 2, 3]] * 4)
        assert out["batch_index"] == stream
        want = sample_lambda((4, 3), alpha=0.7, seed=11, stream=stream, dominant=True)
        assert torch.equal(out["lam"], want)
        assert (out["lam"] >= 0.5).all()


def test_docstring_example_runs():
    result = doctest.testmod(collate_module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0


# ---- pairing rules ---------------------------------------------------------------------------


def cycle_length(partner: list[int], start: int = 0) -> int:
    n, i = 1, partner[start]
    while i != start:
        n, i = n + 1, partner[i]
    return n


@pytest.mark.parametrize("b", [1, 2, 3, 7, 16])
def test_random_pairing_is_one_cycle_through_every_row(b):
    c = TokenMixupCollator(seed=2)
    seen = set()
    for _ in range(20):
        p = c([[1, 2]] * b)["partner"].tolist()
        assert sorted(p) == list(range(b))  # each row is some row's partner exactly once
        if b == 1:
            assert p == [0]
        else:
            assert all(p[i] != i for i in range(b)) and cycle_length(p) == b
        seen.add(tuple(p))
    if math.factorial(b - 1) >= 100:
        assert len(seen) >= 15  # each batch draws its own cycle


def test_pairing_stream_is_pinned():
    # numpy pins Philox and SeedSequence streams, not Generator.permutation's algorithm: if
    # numpy changes it, every run's pairing changes, and this says so.
    got = [TokenMixupCollator(seed=7, start_batch=k)([[1, 2]] * 6)["partner"].tolist() for k in (0, 1)]
    assert got == [[2, 0, 3, 5, 1, 4], [4, 5, 1, 2, 3, 0]]  # 0>2>3>5>4>1>0 and 0>4>3>2>1>5>0


layouts = st.lists(st.integers(0, 4), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(layout=layouts, seed=st.integers(0, 2**64 - 1))
def test_cross_source_partners_come_from_another_source_whenever_one_exists(layout, seed):
    sources = [f"s{k}" for k in layout]
    p = pair_rows("cross-source", sources, rng_for(seed))
    b = len(sources)
    sizes = {s: sources.count(s) for s in set(sources)}
    big = max(sizes.values())
    assert p.dtype == np.int64 and p.shape == (b,) and ((0 <= p) & (p < b)).all()
    if len(sizes) == 1:
        assert p.tolist() == list(range(b))  # no other source: not mixed
        return
    assert all(sources[p[i]] != sources[i] for i in range(b))
    uses = np.bincount(p, minlength=b)
    if 2 * big <= b:
        assert (uses == 1).all()  # a permutation: every row lends itself once
    else:
        assert uses.max() <= math.ceil(big / (b - big))  # the minority rows are shared evenly


@settings(max_examples=300, deadline=None)
@given(layout=layouts, seed=st.integers(0, 2**64 - 1))
def test_same_source_partners_are_a_cycle_within_each_source(layout, seed):
    sources = [f"s{k}" for k in layout]
    p = pair_rows("same-source", sources, rng_for(seed)).tolist()
    assert sorted(p) == list(range(len(p)))
    for i, j in enumerate(p):
        assert sources[j] == sources[i]
        n = sources.count(sources[i])
        assert (j == i) == (n == 1)  # only a row alone in its source keeps itself
        assert cycle_length(p, i) == n


@settings(max_examples=100, deadline=None)
@given(layout=layouts, seed=st.integers(0, 2**64 - 1))
def test_pairing_depends_on_the_layout_not_on_the_source_names(layout, seed):
    # grouping is by first appearance, so renaming sources changes nothing
    a = pair_rows("cross-source", [f"s{k}" for k in layout], rng_for(seed))
    b = pair_rows("cross-source", [(k * 37) % 101 for k in layout], rng_for(seed))
    assert a.tolist() == b.tolist()


def test_cross_source_through_the_collator_and_a_mixture_dataset():
    data = {"code": [list(range(k, k + 5)) for k in range(50)], "prose": [[7, 8, 9]] * 30}
    ds = ms.MixtureDataset(data, weights={"code": 0.5, "prose": 0.5}, seed=1, num_samples=64, batch_size=8)
    c = TokenMixupCollator(pairing="cross-source", seed=5)
    mixed = 0
    for out in DataLoader(ds, batch_size=8, collate_fn=c):
        src = out["source"]
        p = out["partner"].tolist()
        if len(set(src)) > 1:
            assert all(src[j] != src[i] for i, j in enumerate(p))
            mixed += 1
    assert mixed >= 6


def test_single_source_batch_is_left_unmixed_under_cross_source():
    out = TokenMixupCollator(pairing="cross-source")([("a", [1, 2, 3]), ("a", [4, 5, 6])])
    assert out["partner"].tolist() == [0, 1] and torch.equal(out["xb"], out["xa"])


# ---- determinism, DataLoader workers, resume, pickling -----------------------------------------


def test_same_seed_same_batches_and_each_batch_draws_afresh():
    batches = [tagged_rows(8, seed=k) for k in range(4)]
    a, b = TokenMixupCollator(seed=9), TokenMixupCollator(seed=9)
    outs_a, outs_b = [a(x) for x in batches], [b(x) for x in batches]
    same_batches(outs_a, outs_b)
    assert [o["batch_index"] for o in outs_a] == [0, 1, 2, 3]
    assert not torch.equal(outs_a[0]["lam"], outs_a[1]["lam"])
    other = TokenMixupCollator(seed=10)(batches[0])
    assert not torch.equal(other["lam"], outs_a[0]["lam"])


def run_loader(data, collate, **kw):
    return list(DataLoader(data, batch_size=4, collate_fn=collate, persistent_workers=False, **kw))


@pytest.mark.parametrize("pairing", ["random", "cross-source"])
def test_two_workers_give_the_batches_of_one_process(pairing):
    data = tagged_rows(27)  # 7 batches, the last one short
    ref = run_loader(data, TokenMixupCollator(seed=4, pairing=pairing), num_workers=0)
    got = run_loader(data, TokenMixupCollator(seed=4, pairing=pairing), num_workers=2)
    assert [o["batch_index"] for o in got] == list(range(7))
    same_batches(ref, got)


def test_two_workers_over_a_mixture_dataset_give_the_batches_of_one_process():
    data = {"code": [[k, k + 1, k + 2] for k in range(40)], "prose": [[k, 1] for k in range(40)]}

    def make():
        return ms.MixtureDataset(data, seed=3, num_samples=44, batch_size=4)

    c = TokenMixupCollator(seed=1, pairing="cross-source")
    ref = run_loader(make(), c, num_workers=0)
    got = run_loader(make(), TokenMixupCollator(seed=1, pairing="cross-source"), num_workers=2)
    assert len(ref) == 11
    same_batches(ref, got)


def test_resume_from_state_dict_continues_the_run():
    batches = [tagged_rows(6, seed=k) for k in range(6)]
    whole = TokenMixupCollator(seed=8, pairing="same-source")
    ref = [whole(x) for x in batches]
    first = TokenMixupCollator(seed=8, pairing="same-source")
    for x in batches[:4]:
        first(x)
    state = first.state_dict()
    assert state == {"seed": 8, "batch": 4}
    again = TokenMixupCollator(seed=8, pairing="same-source")
    again.load_state_dict(state)
    same_batches(ref[4:], [again(x) for x in batches[4:]])


def test_start_batch_resumes_a_run_with_workers():
    data = tagged_rows(40)  # 10 batches of 4
    ref = run_loader(data, TokenMixupCollator(seed=6), num_workers=0)
    got = run_loader(data[12:], TokenMixupCollator(seed=6, start_batch=3), num_workers=2)
    same_batches(ref[3:], got)


def test_setting_start_batch_restarts_the_count_for_the_next_epoch():
    data = tagged_rows(16)
    c = TokenMixupCollator(seed=6)
    ref = run_loader(data + data, c, num_workers=0)  # two epochs in one process: batches 0..7
    c = TokenMixupCollator(seed=6)
    epoch0 = run_loader(data, c, num_workers=2)
    c.start_batch = 4  # workers' counts do not come back to this process
    epoch1 = run_loader(data, c, num_workers=2)
    same_batches(ref, epoch0 + epoch1)


def test_setting_start_batch_mid_run_restarts_the_count():
    c = TokenMixupCollator(seed=3)
    for _ in range(3):
        c([[1, 2]] * 3)
    c.start_batch = 10
    assert c([[1, 2]] * 3)["batch_index"] == 10 and c.state_dict() == {"seed": 3, "batch": 11}


def test_pickles_mid_run_and_through_spawned_workers():
    batches = [tagged_rows(5, seed=k) for k in range(3)]
    c = TokenMixupCollator(alpha=0.2, seed=12, pad_id=-7, pairing="cross-source", max_length=6)
    c(batches[0])
    copy = pickle.loads(pickle.dumps(c))
    assert repr(copy) == repr(c) and copy.state_dict() == c.state_dict()
    same_batches([c(x) for x in batches[1:]], [copy(x) for x in batches[1:]])

    data = tagged_rows(12)
    ref = run_loader(data, TokenMixupCollator(seed=12, pairing="cross-source"), num_workers=0)
    got = run_loader(
        data,
        TokenMixupCollator(seed=12, pairing="cross-source"),
        num_workers=1,
        multiprocessing_context="spawn",
    )
    same_batches(ref, got)


# ---- argument errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alpha": 0}, ValueError, "alpha must be a finite number > 0, got 0"),
        ({"alpha": -0.5}, ValueError, "got -0.5"),
        ({"alpha": float("nan")}, ValueError, "got nan"),
        ({"alpha": float("inf")}, ValueError, "got inf"),
        ({"alpha": "0.4"}, TypeError, "alpha must be a number, got '0.4'"),
        ({"alpha": True}, TypeError, "alpha must be a number"),
        ({"pairing": "cross"}, ValueError, "pairing must be one of .*got 'cross'"),
        ({"seed": -1}, ValueError, "seed must be an int in"),
        ({"seed": 1.0}, TypeError, "seed must be an int"),
        ({"pad_id": 2**63}, ValueError, "pad_id"),
        ({"max_length": 1}, ValueError, "max_length must be an int >= 2, got 1"),
        ({"start_batch": -1}, ValueError, "start_batch"),
        ({"dominant": 1}, TypeError, "dominant must be a bool"),
        ({"key": 3}, TypeError, "key must be a str"),
    ],
)
def test_bad_options_are_refused_by_name(kwargs, error, match):
    with pytest.raises(error, match=match):
        TokenMixupCollator(**kwargs)


@pytest.mark.parametrize(
    ("batch", "error", "match"),
    [
        ([], ValueError, "batch is empty"),
        ("abc", TypeError, "batch must be a list"),
        ([[1, 2], [3]], ValueError, r"batch\[1\] has 1 token\(s\): a window needs T \+ 1 >= 2"),
        ([[]], ValueError, r"batch\[0\] has 0 token"),
        ([[1.0, 2.0]], TypeError, r"batch\[0\]: tokens must be integers, got dtype float64"),
        ([[True, False]], TypeError, "got dtype bool"),
        ([torch.tensor([1.0, 2.0])], TypeError, "got a tensor of torch.float32"),
        ([torch.tensor([True, False])], TypeError, "got a tensor of torch.bool"),
        ([np.array([[1, 2]])], ValueError, r"must be 1-D, got shape \(1, 2\)"),
        ([[[1, 2], [3]]], TypeError, "1-D sequence of ints"),
        ([7], TypeError, r"batch\[0\]: tokens must be a 1-D sequence of ints, got 7"),
        (["ab"], TypeError, "got 'ab'"),
        ([[2**64, 1]], TypeError, "got dtype"),
        ([np.array([2**63, 1], dtype=np.uint64)], ValueError, "does not fit in int64"),
        ([{"text": "x"}], ValueError, r"batch\[0\] is a dict without a 'input_ids' key \(keys: 'text'\)"),
    ],
)
def test_bad_batches_are_refused_by_name(batch, error, match):
    with pytest.raises(error, match=match):
        TokenMixupCollator()(batch)


@pytest.mark.parametrize("pairing", ["cross-source", "same-source"])
def test_source_pairings_need_sources(pairing):
    c = TokenMixupCollator(pairing=pairing)
    with pytest.raises(ValueError, match=rf"pairing='{pairing}' needs each sample's source, and batch\[1\]"):
        c([("a", [1, 2]), [3, 4]])
    with pytest.raises(TypeError, match="sources must be hashable"):
        c([(["a"], [1, 2]), ("b", [3, 4])])
    assert c.state_dict()["batch"] == 0  # a refused batch does not use up a batch index


def test_a_state_of_another_seed_or_a_malformed_one_is_refused():
    c = TokenMixupCollator(seed=1)
    with pytest.raises(ValueError, match="saved with seed=2, this collator has seed=1"):
        c.load_state_dict({"seed": 2, "batch": 3})
    with pytest.raises(ValueError, match="state must be a dict with 'seed' and 'batch'"):
        c.load_state_dict({"batch": 3})
    with pytest.raises(ValueError, match=r"state\['batch'\] must be an int in \[0, .*got -3"):
        c.load_state_dict({"seed": 1, "batch": -3})
