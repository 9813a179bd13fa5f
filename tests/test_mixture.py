"""MixtureDataset: proportions, sharding over workers and ranks, resume, dynamic weights.

Compared against: an exact-rational implementation of the interleave rule (tests/oracles.py)
for exact mode, a chi-square bound (p ~ 1e-6) for random mode, and the single-process stream
for every DataLoader / torch.distributed layout (multiset and order).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import mixsieve as ms  # noqa: E402
from mixture_sources import LOADER_WARNINGS, Countdown, as_list, make_dataset, sources  # noqa: E402
from oracles import chi2_gof, chi2_z, exact_interleave  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

pytestmark = [pytest.mark.filterwarnings(w) for w in LOADER_WARNINGS]


def collect(ds, workers, batch_size=1, **kw):
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=as_list, **kw)
    return [x for batch in loader for x in batch]


def integral_targets(w0, changes, n):
    """T[i, d]: the integral of source d's normalised weight over positions 0..i (weights w0,
    then each (position, weights) change from its position on)."""
    per_pos = np.tile(np.asarray(w0, float) / np.sum(w0), (n, 1))
    for p, w in sorted(changes, key=lambda c: c[0]):
        per_pos[p:] = np.asarray(w, float) / np.sum(w)
    return per_pos.cumsum(axis=0)


def counts_matrix(names, order):
    idx = {n: i for i, n in enumerate(order)}
    m = np.zeros((len(names), len(order)), np.int64)
    m[np.arange(len(names)), [idx[n] for n in names]] = 1
    return m.cumsum(axis=0)


# ---- proportions ----------------------------------------------------------------------------


def test_exact_mode_every_prefix_within_one_sample_random_weights():
    rng = np.random.default_rng(11)
    worst = 0.0
    for trial in range(60):
        k = int(rng.integers(2, 101))
        w = rng.dirichlet(np.full(k, rng.uniform(0.05, 3.0)))
        if trial % 4 == 0:
            w[rng.integers(0, k, size=3)] = 0.0  # zero weights are never chosen
        names = [f"s{d}" for d in range(k)]
        ds = ms.MixtureDataset({n: [0] for n in names}, weights=w.tolist(), seed=trial, num_samples=3000)
        got = [n for n, _ in ds]
        c = counts_matrix(got, names)
        target = np.outer(np.arange(1, 3001), w / w.sum())
        worst = max(worst, float(np.abs(c - target).max()))
        assert all(w[int(n[1:])] > 0 for n in set(got))
    assert worst < 1.0


def test_exact_mode_matches_rational_oracle():
    rng = np.random.default_rng(5)
    # every kernel path: the scalar scan (<= 10 sources), the vector scan (<= 128, with AVX2 or
    # AVX-512) and the tournament tree (more, or no AVX2)
    for trial, k in enumerate([int(x) for x in rng.integers(2, 40, size=22)] + [90, 129, 140]):
        # weights in general position: the kernel's doubles can only break exact ties (as with
        # integer weights) differently from rational arithmetic, and those get the bound test above
        w = rng.dirichlet(np.ones(k))
        names = [f"s{d}" for d in range(k)]
        ds = ms.MixtureDataset({n: [0] for n in names}, weights=w.tolist(), num_samples=600)
        got = [int(n[1:]) for n, _ in ds]
        assert got == exact_interleave(w.tolist(), 600), trial


def test_random_mode_chi_square_and_window_independence():
    w = np.array([0.4, 0.25, 0.2, 0.1, 0.05])
    names = list("abcde")
    n = 200_000
    ds = ms.MixtureDataset({x: [0] for x in names}, weights=w.tolist(), mode="random", seed=3, num_samples=n)
    got = np.array([names.index(x) for x, _ in ds])
    stat, df = chi2_gof(np.bincount(got, minlength=5), w, n)
    assert chi2_z(stat, df) < 4.75  # p < 1e-6
    # consecutive pairs are independent: chi-square over the 25 pair cells
    pairs = got[:-1:2] * 5 + got[1::2]
    stat, df = chi2_gof(np.bincount(pairs, minlength=25), np.outer(w, w).ravel(), len(pairs))
    assert chi2_z(stat, df) < 4.75


def test_random_mode_does_not_depend_on_layout():
    kw = dict(mode="random", seed=9, num_samples=3000)
    ref = list(make_dataset(**kw))
    assert collect(make_dataset(batch_size=3, **kw), 2, batch_size=3) == ref


# ---- sharding --------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1, 2, 3])
def test_workers_yield_the_single_process_stream(workers):
    ref = list(make_dataset())
    assert len(ref) == 2400
    got = collect(make_dataset(batch_size=8), workers, batch_size=8)
    assert got == ref  # batch_size matches: global order, not just the same multiset
    got1 = collect(make_dataset(), workers, batch_size=5)  # unaligned: same multiset
    assert sorted(got1) == sorted(ref)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])  # forkserver: Python 3.14's default
def test_spawned_workers_share_the_control_block(method):
    mixer = ms.weights.OnlineMixer(["web", "code", "math"])
    ds = make_dataset(num_samples=400, batch_size=4, weights=mixer, chunk_size=64)
    got = []
    for i, batch in enumerate(
        DataLoader(ds, batch_size=4, num_workers=2, collate_fn=as_list, multiprocessing_context=method)
    ):
        got.extend(batch)
        if i == 10:
            for _ in range(15):  # past EXP3's uniform start, so the change is visible
                mixer.update({"math": 50.0}, position=300)
    changes = ds.state_dict(consumed_samples=0)["changes"]
    assert [p for p, _ in changes] == [300]  # changes at one position: the last one made wins
    assert sum(n == "math" for n, _ in got[300:]) > 50  # a third before the change
    ref_ds = make_dataset(num_samples=400, weights=ms.weights.OnlineMixer(["web", "code", "math"]))
    ref_ds.load_state_dict({**ref_ds.state_dict(), "changes": changes})
    assert got == list(ref_ds)  # the change reached the spawned workers at position 300


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_two_ranks_with_gloo_equal_the_single_process_stream(tmp_path, method):
    here = Path(__file__).parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), env_path()]))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(here / "mixture_rank.py"),
                str(r),
                "2",
                str(tmp_path / "init"),
                str(tmp_path / f"r{r}.json"),
                "2",
                method,
            ],
            env=env,
        )
        for r in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    outs = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    # ranks agreed; five updates at one position are one change (the last made wins)
    assert outs[0]["changes"] == outs[1]["changes"] and len(outs[0]["changes"]) == 1
    ref_ds = make_dataset(weights=ms.weights.OnlineMixer(["web", "code", "math"]), batch_size=4)
    ref_ds.load_state_dict({**ref_ds.state_dict(), "changes": outs[0]["changes"]})
    ref = [list(x) for x in ref_ds]
    # block b of 4 positions belongs to rank b % 2
    blocks = [ref[i : i + 4] for i in range(0, len(ref), 4)]
    for r in range(2):
        assert outs[r]["items"] == [x for b in blocks[r::2] for x in b]


def env_path():
    import mixsieve

    return str(Path(mixsieve.__file__).parent.parent)


def test_explicit_ranks_partition_the_stream():
    ref = list(make_dataset(num_samples=999))
    parts = [list(make_dataset(num_samples=999, rank=r, world_size=3, batch_size=2)) for r in range(3)]
    assert sorted(x for p in parts for x in p) == sorted(ref)
    assert parts[1][:2] == ref[2:4]


# ---- resume ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("before", "after"), [(0, 0), (2, 2), (2, 3), (3, 0), (0, 2)])
def test_resume_with_consumed_samples(before, after):
    ref = list(make_dataset())
    ds = make_dataset(batch_size=6)
    loader = iter(DataLoader(ds, batch_size=6, num_workers=before, collate_fn=as_list))
    first = [x for _ in range(57) for x in next(loader)]
    if before == 0:
        state = ds.state_dict()
    else:
        with pytest.raises(ValueError, match="consumed_samples"):
            ds.state_dict()
        state = ds.state_dict(consumed_samples=len(first))
    del loader
    state = json.loads(json.dumps(state))
    assert len(json.dumps(state)) < 4096
    ds2 = make_dataset(batch_size=6)
    ds2.load_state_dict(state)
    rest = collect(ds2, after, batch_size=6)
    assert first + rest == ref


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_through_stateful_dataloader(workers):
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    ref = list(make_dataset())
    loader = sdl.StatefulDataLoader(
        make_dataset(batch_size=4), batch_size=4, num_workers=workers, collate_fn=as_list
    )
    it = iter(loader)
    first = [x for _ in range(101) for x in next(it)]
    state = loader.state_dict()
    del it
    again = sdl.StatefulDataLoader(
        make_dataset(batch_size=4), batch_size=4, num_workers=workers, collate_fn=as_list
    )
    again.load_state_dict(state)
    assert first + [x for b in again for x in b] == ref
    # elastic: the loader's state into a dataset read with another worker count
    ds = make_dataset(batch_size=4)
    ds.load_state_dict(state)
    assert first + collect(ds, 3 - workers, batch_size=4) == ref


def test_state_is_position_independent_in_size_and_fast():
    ds = ms.MixtureDataset({"a": list(range(10)), "b": list(range(7))}, num_samples=None)
    it = iter(ds)
    for _ in range(200_000):
        next(it)
    st = ds.state_dict()
    assert st["state"]["position"] == 200_000 and len(json.dumps(st)) < 1024
    ds2 = ms.MixtureDataset({"a": list(range(10)), "b": list(range(7))})
    ds2.load_state_dict(st)
    assert [next(iter(ds2)) for _ in range(1)] == [next(it)]


# ---- dynamic weights ------------------------------------------------------------------------


def test_online_mixer_reaches_workers_and_replays():
    mixer = ms.weights.OnlineMixer(["web", "code", "math"])
    ds = make_dataset(weights=mixer, batch_size=8, num_samples=30_000)
    got = []
    for i, batch in enumerate(DataLoader(ds, batch_size=8, num_workers=2, collate_fn=as_list)):
        got.extend(batch)
        if i == 50:
            for _ in range(12):  # past EXP3's pure-exploration start
                mixer.update({"web": 1.0, "code": 6.0, "math": 0.5})
    changes = ds.state_dict(consumed_samples=0)["changes"]
    assert len(changes) == 1  # twelve updates at the next free position: the last one made wins
    pos, w = changes[-1]
    w = np.array(w) / sum(w)
    assert w[1] > 0.5
    # the workers switched exactly at the recorded position: every prefix follows the integral
    # of the weights, with the lag carried across the change
    names = [n for n, _ in got]
    c = counts_matrix(names, ["web", "code", "math"])
    target = integral_targets(np.array([1.0, 1.0, 1.0]), [(pos, w)], len(names))
    assert np.abs(c - target).max() < 1
    assert (c[pos - 1] - target[pos - 1]).any()  # lags were not reset at the change
    # replay: the same changes give the same stream in one process, and after a resume
    ref_ds = make_dataset(weights=ms.weights.OnlineMixer(["web", "code", "math"]), num_samples=30_000)
    ref_ds.load_state_dict({**ref_ds.state_dict(), "changes": changes})
    assert list(ref_ds) == got
    mid = ds.state_dict(consumed_samples=pos - 100)
    m2 = ms.weights.OnlineMixer(["web", "code", "math"])
    ds2 = make_dataset(weights=m2, batch_size=8, num_samples=30_000)
    ds2.load_state_dict(mid)
    assert m2.state_dict() == mixer.state_dict()
    assert got[: pos - 100] + collect(ds2, 3, batch_size=8) == got


def test_set_weights_in_process_takes_effect_at_returned_position():
    ds = ms.MixtureDataset({"a": [0], "b": [1]}, weights=[1, 0])
    it = iter(ds)
    head = [next(it)[0] for _ in range(10)]
    pos = ds.set_weights({"a": 0.0, "b": 1.0})
    rest = [next(it)[0] for _ in range(pos - 10 + 20)]
    stream = head + rest
    assert set(stream[:pos]) == {"a"} and set(stream[pos:]) == {"b"}
    assert ds.stats()["weights"] == {"a": 0.0, "b": 1.0}


def test_schedule_reaches_workers_and_resumes():
    sch = ms.weights.schedule(
        [(0, {"web": 1, "code": 0, "math": 0}), (1000, {"web": 0, "code": 1, "math": 1}), (1600, [1, 1, 1])],
        interpolate="step",
    )
    ref = list(make_dataset(weights=sch))
    assert {n for n, _ in ref[:1000]} == {"web"}
    assert {n for n, _ in ref[1000:1600]} == {"code", "math"}
    assert collect(make_dataset(weights=sch, batch_size=4), 2, batch_size=4) == ref
    ds = make_dataset(weights=sch)
    ds.load_state_dict(make_dataset(weights=sch).state_dict(consumed_samples=1234))
    assert ref[:1234] + list(ds) == ref
    lin = ms.weights.schedule([(0, [1, 0, 0]), (1000, [0, 0, 1])], interpolate="linear", every=250)
    out = [n for n, _ in make_dataset(weights=lin, num_samples=1000)]
    share = [out[i : i + 250].count("math") / 250 for i in range(0, 1000, 250)]
    assert share == pytest.approx([0.0, 0.25, 0.5, 0.75], abs=1 / 250)


# ---- exhaustion, shuffle, epochs ----------------------------------------------------------


def test_cycle_serves_each_item_once_per_epoch_in_a_new_order():
    ds = ms.MixtureDataset(
        {"a": list(range(50)), "b": list(range(100, 130))}, weights=[5, 3], num_samples=800
    )
    got = [v for n, v in ds if n == "a"]
    epochs = [got[i : i + 50] for i in range(0, 500, 50)]
    assert all(sorted(e) == list(range(50)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == len(epochs)  # every epoch shuffled anew
    assert ds.stats()["epochs"] == {"a": 10, "b": 10}
    plain = ms.MixtureDataset({"a": list(range(50))}, shuffle=False, num_samples=120)
    assert [v for _, v in plain] == list(range(50)) * 2 + list(range(20))


def test_iterable_buffer_shuffle_is_a_permutation_per_epoch():
    ds = ms.MixtureDataset({"c": Countdown(1000, "c")}, num_samples=3000, shuffle_buffer=64)
    got = [v for _, v in ds]
    for e in range(3):
        part = got[e * 1000 : (e + 1) * 1000]
        assert sorted(part) == sorted(f"c{i}" for i in range(1000))
        assert part != [f"c{i}" for i in range(1000)]
    assert got[:1000] != got[1000:2000]


def test_stop_ends_at_the_first_exhausted_source():
    ds = ms.MixtureDataset(
        {"a": list(range(100)), "g": Countdown(10, "g")}, weights=[0.5, 0.5], on_exhausted="stop"
    )
    got = list(ds)
    assert len(got) == 21 and got[-1][0] == "a"
    assert (
        collect(
            ms.MixtureDataset(
                {"a": list(range(100)), "g": Countdown(10, "g")},
                weights=[0.5, 0.5],
                on_exhausted="stop",
                batch_size=2,
            ),
            2,
            batch_size=2,
        )
        == got
    )


def test_drop_renormalises_the_rest():
    srcs = {"a": list(range(300)), "b": list(range(1000, 1040)), "g": Countdown(20, "g")}
    ds = ms.MixtureDataset(srcs, weights=[0.5, 0.25, 0.25], on_exhausted="drop", shuffle=False)
    got = list(ds)
    assert len(got) == 360
    names = [n for n, _ in got]
    assert names.count("g") == 20 and names.count("b") == 40 and names.count("a") == 300
    g_end = max(i for i, n in enumerate(names) if n == "g") + 1
    b_end = max(i for i, n in enumerate(names) if n == "b") + 1
    # after g ran out, a and b share 2:1 exactly (within one sample of every prefix)
    seg = names[g_end:b_end]
    assert abs(seg.count("a") - 2 * seg.count("b")) <= 2
    got2 = collect(
        ms.MixtureDataset(srcs, weights=[0.5, 0.25, 0.25], on_exhausted="drop", shuffle=False, batch_size=4),
        3,
        batch_size=4,
    )
    assert got2 == got


def test_iterable_source_resume_replays_to_the_right_item():
    ref = list(make_dataset())
    ds = make_dataset()
    ds.load_state_dict(make_dataset().state_dict(consumed_samples=1777))
    assert ref[:1777] + list(ds) == ref


# ---- filters and repeats --------------------------------------------------------------------


def test_keep_mask_and_soft_cap_repeats():
    web = [f"w{i}" for i in range(20)]
    keep = np.array([i % 2 == 0 for i in range(20)])
    scores = np.linspace(0, 3, 20)
    counts = ms.soft_cap_sample(scores, 40, penalty=1.0, batch_size=4, seed=0)
    ds = ms.MixtureDataset(
        {"web": web, "ranked": web},
        filters={"web": keep},
        repeats={"ranked": counts},
        weights=[1, 2],
        num_samples=60,
    )
    got = list(ds)
    served_web = [v for n, v in got if n == "web"]  # 20 draws: two passes over the 10 kept
    assert sorted(served_web) == sorted(web[i] for i in range(0, 20, 2) for _ in range(2))
    served_ranked = [v for n, v in got if n == "ranked"]
    assert sorted(served_ranked) == sorted(web[i] for i in np.repeat(np.arange(20), counts))
    assert ds.stats()["removed"] == {"web": 10}


def test_near_dup_filter_across_sources_and_in_streams():
    base = [f"document number {i} talks about topic {i} at some length with several words" for i in range(40)]
    forum = [t + " indeed" for t in base[:10]] + [
        f"forum post {i} is quite different from everything" for i in range(30)
    ]
    f = ms.sources.NearDupFilter(threshold=0.7, ngram=3)
    ds = ms.MixtureDataset(
        {"web": base, "forum": forum}, filters={"web": f, "forum": f}, num_samples=70, shuffle=False
    )
    got = list(ds)
    assert ds.removed == {"web": 0, "forum": 10}
    assert {v for n, v in got if n == "forum"} == set(forum[10:])
    stream = ms.MixtureDataset(
        {"s": ms.sources.IterableSource(lambda: iter(base + base[:5]))},
        filters={"s": ms.sources.NearDupFilter(threshold=0.7, ngram=3)},
        num_samples=40,
        shuffle=False,
    )
    assert [v for _, v in stream] == base  # the repeats at the end of the pass are dropped
    got_w = collect(
        ms.MixtureDataset(
            {"web": base, "forum": forum}, filters={"web": f, "forum": f}, num_samples=70, shuffle=False
        ),
        2,
    )
    assert sorted(got_w) == sorted(got)


# ---- outputs, stats, sources ---------------------------------------------------------------


def test_dict_output_and_default_collate():
    ds = ms.MixtureDataset(
        {"a": [{"x": i} for i in range(10)], "b": list(range(5))}, output="dict", num_samples=8, shuffle=False
    )
    got = list(ds)
    assert got[0] == {"x": 0, "source": "a"} and {"source": "b", "sample": 0} in got
    batch = next(
        iter(
            DataLoader(
                ms.MixtureDataset({"a": [torch.ones(3) * i for i in range(10)]}, num_samples=8), batch_size=4
            )
        )
    )
    names, tensors = batch
    assert list(names) == ["a"] * 4 and tensors.shape == (4, 3)


def test_stats_count_worker_samples():
    ds = make_dataset(batch_size=8)
    collect(ds, 2, batch_size=8)
    st = ds.stats()
    assert sum(st["served"].values()) == 2400
    assert st["served"]["web"] == 1440 and st["epochs"]["web"] == 2 and st["epochs"]["code"] is None
    assert st["weights"] == pytest.approx({"web": 0.6, "code": 0.3, "math": 0.1})


def test_jsonl_source(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "one", "id": 1}\n\n  \n{"text": "two"}\n{"text": "three"}')
    q = tmp_path / "sub" / "b.jsonl"
    q.parent.mkdir()
    q.write_text('{"text": "four"}\n{"other": 1}\nnot json\n')
    src = ms.sources.JsonlSource(tmp_path)
    assert len(src) == 6
    assert [src[i] for i in range(4)] == ["one", "two", "three", "four"]
    with pytest.raises(ValueError, match=r"b\.jsonl:2: no field 'text'"):
        src[4]
    with pytest.raises(ValueError, match=r"b\.jsonl:3: not valid JSON"):
        src[5]
    whole = ms.sources.JsonlSource([p], text_field=None)
    assert whole[0] == {"text": "one", "id": 1}
    ds = ms.MixtureDataset({"j": ms.sources.JsonlSource(p), "k": ["x"]}, num_samples=6, weights=[2, 1])
    served = [v for n, v in collect(ds, 2) if n == "j"]  # 4 draws: one pass over 3 lines, then one more
    assert len(served) == 4 and set(served[:3]) == {"one", "two", "three"}
    bad = ms.MixtureDataset({"j": src}, num_samples=6, shuffle=False)
    with pytest.raises(ms.SourceError, match=r"source 'j' raised ValueError at item 4.*no field"):
        list(bad)


def test_stream_is_pinned():
    # format guard: the choice, shuffle and buffer streams must not change silently
    data = [(n, v) for n, v in make_dataset()] + [(n, v) for n, v in make_dataset(mode="random")]
    digest = hashlib.sha256(json.dumps(data).encode()).hexdigest()
    assert digest == PINNED


PINNED = "64098e8730738149bd473bb3d38a4807241d23f541b6bf2429ef35a107c452d1"


# ---- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": {"web": 1, "video": 2}}, r"unknown sources \['video'\]"),
        ({"weights": {"web": -1, "code": 1, "math": 1}}, r"source 'web' is -1"),
        ({"weights": {"web": float("nan"), "code": 1, "math": 1}}, r"source 'web' is nan"),
        ({"weights": {"web": 1, "code": 1}}, r"no value for sources \['math'\]"),
        ({"weights": {"web": 0, "code": 0, "math": 0}}, "all zero"),
        ({"weights": [1, 2]}, "one value per source"),
        ({"mode": "exactly"}, "mode must be"),
        ({"on_exhausted": "wrap"}, "on_exhausted must be"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"seed": -1}, "seed must be"),
        ({"seed": 2**64}, "seed must be"),
        ({"rank": 2, "world_size": 2}, "rank < world_size"),
        ({"filters": {"nope": np.ones(3, bool)}}, r"unknown sources \['nope'\]"),
        ({"filters": {"web": np.ones(3, bool)}}, "bool mask of length 700"),
        ({"repeats": {"code": np.ones(3, int)}}, "needs a map-style source"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_dataset(**kwargs)


def test_empty_sources():
    with pytest.raises(ValueError, match="source 'e' is empty"):
        ms.MixtureDataset({"a": [1], "e": []})
    ds = ms.MixtureDataset({"a": [1], "e": Countdown(0, "e")}, num_samples=10)
    with pytest.raises(ValueError, match="source 'e' is empty"):
        list(ds)
    with pytest.raises(ValueError, match="non-empty dict"):
        ms.MixtureDataset({})


def test_state_from_another_configuration():
    state = make_dataset().state_dict()
    with pytest.raises(ValueError, match=r"seed: state has 7, dataset has 8"):
        make_dataset(seed=8).load_state_dict(state)
    with pytest.raises(ValueError, match=r"mode: state has 'exact', dataset has 'random'"):
        make_dataset(mode="random").load_state_dict(state)
    other = ms.MixtureDataset({"web": [1], "code": [2]})
    with pytest.raises(ValueError, match=r"names: state has \['web', 'code', 'math'\]"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="not a MixtureDataset state"):
        other.load_state_dict({"position": 3})


class Broken:
    def __len__(self):
        return 10

    def __getitem__(self, i):
        if i == 7:
            raise KeyError("boom")
        return i


def test_exception_in_a_source_names_it():
    ds = ms.MixtureDataset({"ok": [1, 2], "broken": Broken()}, shuffle=False, num_samples=40)
    with pytest.raises(ms.SourceError, match=r"source 'broken' raised KeyError at item 7"):
        list(ds)
    with pytest.raises(Exception, match=r"source 'broken' raised KeyError at item 7"):
        collect(ms.MixtureDataset({"ok": [1, 2], "broken": Broken()}, shuffle=False, num_samples=40), 2)

    def gen():
        yield 1
        raise OSError("disk gone")

    ds = ms.MixtureDataset(
        {"ok": [1], "stream": ms.sources.IterableSource(gen)}, num_samples=10, shuffle=False
    )
    with pytest.raises(ms.SourceError, match=r"source 'stream' raised OSError .*disk gone"):
        list(ds)


def test_one_shot_iterator_cannot_cycle():
    ds = ms.MixtureDataset({"a": [1], "g": (i for i in range(3))}, num_samples=20)
    with pytest.raises(ValueError, match="one-shot iterator"):
        list(ds)


def test_sources_module_sees_all_items():
    assert set(sources()) == {"web", "code", "math"}


def test_epochs_are_consecutive_windows_of_the_stream():
    whole = list(make_dataset(num_samples=None, batch_size=4) for _ in [0])[0]
    it = iter(whole)
    stream = [next(it) for _ in range(3 * 500)]
    ds = make_dataset(num_samples=500, batch_size=4)
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=as_list, persistent_workers=True)
    got = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        got.append([x for b in loader for x in b])
    assert got == [stream[0:500], stream[500:1000], stream[1000:1500]]
    assert list(make_dataset(num_samples=500)) == stream[:500]  # no set_epoch: epoch 0 again
    # a state inside epoch 1 resumes there and ends with the epoch
    mid = make_dataset(num_samples=500)
    mid.load_state_dict(make_dataset(num_samples=500).state_dict(consumed_samples=700))
    assert list(mid) == stream[700:1000]
    mid.set_epoch(2)
    assert list(mid) == stream[1000:1500]
    with pytest.raises(ValueError, match="set_epoch needs num_samples"):
        make_dataset(num_samples=None).set_epoch(1)


def test_shared_block_of_a_killed_process_is_removed():
    code = (
        "import time, mixsieve as ms\n"
        "ds = ms.MixtureDataset({'a': [1]})\n"
        "print(ds._shared.path, flush=True)\n"
        "time.sleep(60)\n"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as proc:
        path = proc.stdout.readline().strip()
        proc.kill()
        proc.wait()
    assert os.path.exists(path)  # SIGKILL: no chance to clean up
    ds = ms.MixtureDataset({"a": [1]})
    assert not os.path.exists(path) and os.path.exists(ds._shared.path)
    own = ds._shared.path
    del ds
    import gc

    gc.collect()
    assert not os.path.exists(own)  # the owner removes its block when it goes away


def test_epochs_with_drop_and_an_iterable_nobody_has_read():
    def make():
        return ms.MixtureDataset(
            {"a": list(range(50)), "g": Countdown(30, "g")},
            weights=[1, 1],
            on_exhausted="drop",
            num_samples=40,
            shuffle=False,
        )

    stream = list(
        ms.MixtureDataset(
            {"a": list(range(50)), "g": Countdown(30, "g")},
            weights=[1, 1],
            on_exhausted="drop",
            shuffle=False,
        )
    )
    assert len(stream) == 80
    ds = make()
    ds.set_epoch(1)  # positions 40..79: the replay must know that g ends after 30 items
    assert list(ds) == stream[40:80]


class Batched:
    """A map-style source with a batched read, as Hugging Face Datasets and torch datasets have."""

    def __init__(self, n):
        self.n = n
        self.batch_calls = 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        raise AssertionError("the batched read must be used")

    def __getitems__(self, ids):
        self.batch_calls += 1
        return [{"i": i} for i in ids]


def test_numpy_tensor_and_batched_sources():
    rows = np.arange(20).reshape(10, 2)
    src = {"rows": rows, "vec": np.arange(5.0), "t": torch.arange(7), "b": Batched(9)}
    ds = ms.MixtureDataset(src, num_samples=40, shuffle=False)
    got = list(ds)
    row_items = [v for n, v in got if n == "rows"]
    assert all(isinstance(v, np.ndarray) and v.shape == (2,) for v in row_items)
    assert [v.tolist() for v in row_items] == rows[: len(row_items)].tolist()
    assert [float(v) for n, v in got if n == "vec"] == [0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 2.0, 3.0, 4.0]
    assert [int(v) for n, v in got if n == "t"] == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2]
    assert [v["i"] for n, v in got if n == "b"] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 0]
    assert src["b"].batch_calls >= 1


def run_with_updates(loader, mixer, batch, updates, stop_after=None):
    """Iterate a loader; after batch i in `updates`, feed losses and place the change at a fixed
    position (samples consumed + a lookahead). Returns the samples seen."""
    got = []
    it = iter(loader)
    for i in range(10**9):
        if stop_after is not None and i == stop_after:
            return got, it
        try:
            b = next(it)
        except StopIteration:
            return got, it
        got.extend(b)
        if i in updates:
            mixer.update(updates[i], position=(i + 1) * batch + 512)
    return got, it


UPDATES = {10: {"web": 1.0, "code": 5.0}, 40: {"math": 9.0}, 70: {"web": 0.1, "code": 3.0, "math": 2.0}}
UPDATES.update({i: {"code": 4.0} for i in range(71, 90)})


def test_fixed_positions_make_online_updates_replay_exactly():
    def make(workers):
        mixer = ms.weights.OnlineMixer(["web", "code", "math"])
        ds = make_dataset(weights=mixer, batch_size=8, num_samples=1600, chunk_size=128)
        return mixer, ds, DataLoader(ds, batch_size=8, num_workers=workers, collate_fn=as_list)

    runs = []
    for workers in (0, 2):
        mixer, ds, loader = make(workers)
        runs.append(run_with_updates(loader, mixer, 8, UPDATES)[0])
    assert runs[0] == runs[1] and len(runs[0]) == 1600  # the same stream whatever the timing
    with pytest.raises(ValueError, match="already been generated"):
        mixer, ds, loader = make(0)
        it = iter(ds)
        [next(it) for _ in range(10)]
        ds.set_weights([1, 1, 1], position=5)


def test_stateful_dataloader_resume_with_online_mixer():
    sdl = pytest.importorskip("torchdata.stateful_dataloader")

    def make():
        mixer = ms.weights.OnlineMixer(["web", "code", "math"])
        ds = make_dataset(weights=mixer, batch_size=8, num_samples=1600, chunk_size=128)
        loader = sdl.StatefulDataLoader(ds, batch_size=8, num_workers=2, collate_fn=as_list)
        return mixer, ds, loader

    mixer, ds, loader = make()
    ref, _ = run_with_updates(loader, mixer, 8, UPDATES)
    mixer, ds, loader = make()
    first, it = run_with_updates(loader, mixer, 8, UPDATES, stop_after=55)
    state = loader.state_dict()
    del it
    mixer2, ds2, loader2 = make()
    loader2.load_state_dict(state)
    ds2.load_state_dict(state)  # in the main process: restores the mixer (and nothing the workers need)
    assert mixer2.state_dict()["t"] == mixer.state_dict()["t"]
    rest = []
    for i, b in enumerate(loader2, start=55):
        rest.extend(b)
        if i in UPDATES:
            mixer2.update(UPDATES[i], position=(i + 1) * 8 + 512)
    assert first + rest == ref


def test_len_counts_this_ranks_samples():
    for world in (1, 3):
        for bs in (1, 4, 7):
            parts = [
                make_dataset(num_samples=103, rank=r, world_size=world, batch_size=bs) for r in range(world)
            ]
            assert [len(p) for p in parts] == [len(list(p)) for p in parts]
            assert sum(len(p) for p in parts) == 103
    ds = make_dataset(num_samples=100)
    ds.load_state_dict(make_dataset(num_samples=100).state_dict(consumed_samples=130))
    assert len(ds) == 70 == len(list(ds))
    loader = DataLoader(
        make_dataset(num_samples=100, batch_size=8), batch_size=8, num_workers=2, collate_fn=as_list
    )
    assert len(loader) == 13 == len(list(loader))
    with pytest.raises(TypeError, match="endless"):
        len(make_dataset(num_samples=None))


def test_a_mixture_of_mixtures():
    inner = make_dataset(num_samples=None)  # an IterableDataset with its own mixture
    outer = ms.MixtureDataset(
        {"inner": inner, "extra": list(range(10))}, weights=[3, 1], num_samples=40, shuffle=False
    )
    got = list(outer)
    assert len(got) == 40 and sum(1 for n, _ in got if n == "inner") == 30
    stream = iter(make_dataset(num_samples=None))
    assert [v for n, v in got if n == "inner"] == [next(stream) for _ in range(30)]


def test_rank_from_the_environment(monkeypatch):
    ref = list(make_dataset(num_samples=300, batch_size=2))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    mine = list(make_dataset(num_samples=300, batch_size=2))
    blocks = [ref[i : i + 2] for i in range(0, 300, 2)]
    assert mine == [x for b in blocks[1::3] for x in b]
    monkeypatch.setenv("RANK", "7")
    with pytest.raises(ValueError, match="rank < world_size"):
        list(make_dataset(num_samples=300))


def test_checkpoints_advance_from_the_previous_one():
    ref = list(make_dataset(num_samples=3000))
    ds = make_dataset(num_samples=3000)
    states = [ds.state_dict(consumed_samples=n) for n in (500, 1200, 2999)]
    assert ds._checkpoint_cache["position"] == 2999
    for n, st in zip((500, 1200, 2999), states):
        fresh = make_dataset(num_samples=3000)
        fresh.load_state_dict(st)
        assert ref[:n] + list(fresh) == ref
