"""Mixing by tokens (``unit="tokens"``) and epoch caps (``max_epochs``).

Compared against: a restatement of the token rule in Python floats (tests/oracles.py
``token_interleave``, the kernel's IEEE operations, so the choices must agree exactly) on every
scan path; and, for the bound of docs/mixing.md, exact rationals (``token_excess``): every prefix
holds each source's tokens within the longest item's length of its share of all tokens served.
At the dataset level the lengths are read from the samples themselves (each sample is a list of
that many tokens), so the checks do not trust the lengths the kernel was given.
"""

from __future__ import annotations

import copy
import pickle

import mixsieve as ms
import numpy as np
import pytest
from mixsieve import _core
from mixture_sources import LOADER_WARNINGS, as_list
from oracles import chi2_gof, chi2_z, token_excess, token_interleave
from test_mixture_schedule import random_schedule  # changes every 1..gap positions, with zeros

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

pytestmark = [pytest.mark.filterwarnings(w) for w in LOADER_WARNINGS]

# the scans of token mode: scalar, AVX2, AVX-512 (the tree of sample mode is not used for tokens)
PATHS = [0] + [p for p in (1, 2) if _core._mix_simd_level() >= p]


def token_plan(lens, changes, shuffle=False, exact=True, caps=None, on_exhausted=0, seed=0):
    k = len(lens)
    plan = _core.MixPlan(k, exact, seed, on_exhausted, np.full(k, -1, np.int64) if caps is None else caps)
    for d in range(k):
        plan.set_token_lengths(d, _core.TokenTable(np.asarray(lens[d], np.int64)), 1000 + d, shuffle)
    plan.start(np.asarray(changes[0][1], np.float64))
    for p, w in changes[1:]:
        plan.add_change(p, np.asarray(w, np.float64))
    return plan


def weights_at_fn(changes, n):
    per = [None] * n
    for p, w in sorted(changes, key=lambda c: c[0]):
        for i in range(p, n):
            per[i] = w
    return lambda i: per[i]


def random_lengths(rng, k):
    """Per source 1-40 item lengths in 1..4096, some sources short, some long, some mixed."""
    out = []
    for _ in range(k):
        kind = rng.integers(0, 3)
        size = int(rng.integers(1, 41))
        if kind == 0:
            out.append(rng.integers(1, 64, size=size).tolist())
        elif kind == 1:
            out.append(rng.integers(1024, 4097, size=size).tolist())
        else:
            out.append(rng.integers(1, 4097, size=size).tolist())
    return out


# ---- the rule --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_every_path_equals_the_float_restatement(path, forced_path):
    forced_path(path)
    rng = np.random.default_rng(20261207)
    for trial, k in enumerate([1, 2, 3, 7, 11, 17, 40, 130]):
        n = 1200
        lens = random_lengths(rng, k)
        changes = random_schedule(rng, k, n, gap=[4, 50, 400, 5000][trial % 4], zeros=trial % 2 == 1)
        plan = token_plan(lens, changes)
        src, item = plan.fill(n)
        assert src.tolist() == token_interleave(k, changes, n, lens), (path, k)
        for d in range(k):  # items are running counts per source
            assert item[src == d].tolist() == list(range(int((src == d).sum())))
        assert plan.tokens.tolist() == [
            sum(lens[d][j % len(lens[d])] for j in range(int((src == d).sum()))) for d in range(k)
        ]


@pytest.mark.parametrize("path", PATHS)
def test_static_weights_bound_in_exact_rationals(path, forced_path):
    # docs/mixing.md: with static weights |T_d - w_d T| <= L_max at every prefix (proved)
    forced_path(path)
    rng = np.random.default_rng(5)
    for trial in range(12):
        k = int(rng.integers(2, 24))
        w = rng.dirichlet(np.full(k, rng.uniform(0.05, 3.0)))
        if trial % 3 == 0:
            w[0] = 1e-6  # a tiny share
        lens = random_lengths(rng, k)
        n = 1500
        plan = token_plan(lens, [(0, w.tolist())], shuffle=True)
        src, item = plan.fill(n)
        lengths = plan.item_lengths(src, item).tolist()
        l_max = max(max(x) for x in lens)
        static = w.tolist()
        assert token_excess(src.tolist(), lengths, k, lambda i, w=static: w) <= l_max, (path, trial)


def test_bound_across_weight_changes_in_exact_rationals():
    # not guaranteed for every sequence of changes (docs/mixing.md); on these random schedules,
    # one change or many, every prefix stays within the longest item of the weights' integral
    rng = np.random.default_rng(17)
    for trial in range(16):
        k = int(rng.integers(2, 16))
        lens = random_lengths(rng, k)
        n = 1200
        changes = random_schedule(rng, k, n, gap=[n - 1, 300, 40, 5][trial % 4], zeros=trial % 2 == 0)
        plan = token_plan(lens, changes)
        src, item = plan.fill(n)
        lengths = plan.item_lengths(src, item).tolist()
        l_max = max(max(x) for x in lens)
        assert token_excess(src.tolist(), lengths, k, weights_at_fn(changes, n)) <= l_max, trial


def test_unit_lengths_keep_the_sample_bound():
    # every item one token long: the token rule is a one-sample-bounded interleave as well
    rng = np.random.default_rng(2)
    w = rng.dirichlet(np.ones(5))
    plan = token_plan([[1]] * 5, [(0, w.tolist())])
    src, _ = plan.fill(5000)
    c = np.zeros((5000, 5))
    c[np.arange(5000), src] = 1
    assert np.abs(c.cumsum(axis=0) - np.outer(np.arange(1, 5001), w)).max() <= 1.0


def test_kernel_state_restores_bit_for_bit():
    rng = np.random.default_rng(9)
    lens = random_lengths(rng, 6)
    changes = random_schedule(rng, 6, 3000, gap=200, zeros=True)
    whole = token_plan(lens, changes, shuffle=True)
    src_all, item_all = whole.fill(3000)
    part = token_plan(lens, changes, shuffle=True)
    a, _ = part.fill(1234)
    st = part.state()
    again = token_plan(lens, changes[:1], shuffle=True)
    again.restore(st)
    b, _ = again.fill(3000 - 1234)
    assert np.concatenate([a, b]).tolist() == src_all.tolist()
    assert again.tokens.tolist() == whole.tokens.tolist()


# ---- the dataset -----------------------------------------------------------------------------


def token_sources(rng, sizes=(300, 120, 50), spans=((1, 40), (200, 1500), (1, 4096))):
    """Sources whose samples are lists of tokens: a sample's length is len(sample)."""
    out, lens = {}, {}
    for name, n, (lo, hi) in zip(("web", "code", "math"), sizes, spans):
        ln = rng.integers(lo, hi + 1, size=n)
        out[name] = [[f"{name}{i}"] * int(ln[i]) for i in range(n)]
        lens[name] = ln
    return out, lens


W = {"web": 0.5, "code": 0.3, "math": 0.2}


def check_token_bound(samples, weights_at=None, names=("web", "code", "math")):
    names = list(names)
    src = [names.index(s) for s, _ in samples]
    lengths = [len(x) for _, x in samples]
    if weights_at is None:

        def weights_at(i):
            return [W[n] for n in names]

    return token_excess(src, lengths, len(names), weights_at) / max(lengths)


def collect(ds, workers, batch_size=8, **kw):
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=as_list, **kw)
    return [x for batch in loader for x in batch]


def keyed(samples):
    return [(s, x[0], len(x)) for s, x in samples]


@pytest.mark.parametrize("workers", [0, 2])
def test_dataset_token_shares_hold_with_workers(workers):
    rng = np.random.default_rng(1)
    srcs, lens = token_sources(rng)
    ds = ms.MixtureDataset(srcs, weights=W, unit="tokens", lengths=lens, seed=3, num_samples=1600)
    got = collect(ds, workers)
    assert len(got) == 1600
    plain = list(ms.MixtureDataset(srcs, weights=W, unit="tokens", lengths=lens, seed=3, num_samples=1600))
    assert keyed(got) == keyed(plain)  # the same stream in any layout
    l_max = max(int(v.max()) for v in lens.values())
    assert check_token_bound(got) * max(len(x) for _, x in got) <= l_max
    st = ds.stats()
    tokens = {n: sum(len(x) for s, x in got if s == n) for n in W}
    if workers == 0:
        assert st["tokens"] == tokens
    total = sum(tokens.values())
    for n in W:  # realised shares: within the longest item of the target
        assert abs(tokens[n] - W[n] * total) <= l_max
    # sample mode would be off by the ratio of mean lengths: the shares differ a lot from it
    by_samples = list(ms.MixtureDataset(srcs, weights=W, seed=3, num_samples=1600))
    sample_tokens = {n: sum(len(x) for s, x in by_samples if s == n) for n in W}
    assert abs(sample_tokens["web"] / sum(sample_tokens.values()) - 0.5) > 0.3


def test_stats_count_tokens_from_workers():
    rng = np.random.default_rng(4)
    srcs, lens = token_sources(rng)
    ds = ms.MixtureDataset(srcs, weights=W, unit="tokens", lengths=lens, seed=3, num_samples=4000)
    got = collect(ds, 2, batch_size=16)
    st = ds.stats()
    assert st["tokens"] == {n: sum(len(x) for s, x in got if s == n) for n in W}
    assert abs(sum(st["token_shares"].values()) - 1.0) < 1e-12


@pytest.mark.parametrize(("before", "after"), [(2, 0), (0, 2), (2, 1)])
def test_resume_with_another_worker_count(before, after):
    rng = np.random.default_rng(6)
    srcs, lens = token_sources(rng)
    kw = dict(weights=W, unit="tokens", lengths=lens, seed=11, num_samples=960, batch_size=8)
    whole = keyed(list(ms.MixtureDataset(srcs, **kw)))
    ds = ms.MixtureDataset(srcs, **kw)
    it = iter(DataLoader(ds, batch_size=8, num_workers=before, collate_fn=as_list))
    first = [x for _ in range(37) for x in next(it)]
    st = ds.state_dict(consumed_samples=len(first))
    del it
    again = ms.MixtureDataset(srcs, **kw)
    again.load_state_dict(st)
    rest = collect(again, after)
    assert keyed(first) + keyed(rest) == whole
    assert st["state"]["tokens"] == [sum(len(x) for s, x in first if s == n) for n in W]


def test_weight_change_keeps_the_bound_and_replays():
    rng = np.random.default_rng(8)
    srcs, lens = token_sources(rng)
    kw = dict(weights=W, unit="tokens", lengths=lens, seed=5, num_samples=1500)
    new = {"web": 0.1, "code": 0.2, "math": 0.7}
    ds = ms.MixtureDataset(srcs, **kw)
    ds.set_weights(new, position=600)
    got = collect(ds, 2)
    w_old, w_new = [W[n] for n in W], [new[n] for n in W]
    excess = check_token_bound(got, lambda i: w_old if i < 600 else w_new)
    assert excess * max(len(x) for _, x in got) <= max(int(v.max()) for v in lens.values())
    # a checkpoint before the change replays it
    ds3 = ms.MixtureDataset(srcs, **kw)
    ds3.set_weights(new, position=600)
    it = iter(ds3)
    head = [next(it) for _ in range(300)]
    state = ds3.state_dict()
    ds4 = ms.MixtureDataset(srcs, **kw)
    ds4.load_state_dict(state)
    assert keyed(head + list(ds4)) == keyed(got)


def test_random_token_mode_shares(tmp_path):
    # i.i.d. draws with probability w_d / mean_d (normalised): the token shares converge to w;
    # the sample counts follow a multinomial; chi-square at z < 5.5 (p ~ 2e-8)
    rng = np.random.default_rng(12)
    srcs, lens = token_sources(rng, sizes=(50, 50, 50))
    ds = ms.MixtureDataset(
        srcs, weights=W, unit="tokens", lengths=lens, mode="random", seed=1, num_samples=60_000, shuffle=False
    )
    names = [s for s, _ in ds]
    means = {n: float(np.mean(lens[n])) for n in W}
    q = np.array([W[n] / means[n] for n in W])
    q /= q.sum()
    observed = np.array([names.count(n) for n in W])
    assert chi2_z(*chi2_gof(observed, q, len(names))) < 5.5


def test_lengths_from_a_column_and_from_the_source():
    pa = pytest.importorskip("pyarrow")

    class Tokens:  # a source that knows its item lengths, as IndexedTokenSource does
        def __init__(self, seqs):
            self.seqs = seqs

        def __len__(self):
            return len(self.seqs)

        def __getitem__(self, i):
            return self.seqs[i]

        def item_lengths(self):
            return np.array([len(s) for s in self.seqs])

    rng = np.random.default_rng(3)
    srcs, lens = token_sources(rng)
    table = pa.table({"text": [" ".join(x) for x in srcs["code"]], "num_tokens": lens["code"]})
    hf = pytest.importorskip("datasets").Dataset.from_dict(
        {"tokens": srcs["math"], "n": lens["math"].tolist()}
    )
    mixed = {"web": Tokens(srcs["web"]), "code": ms.sources.ArrowSource(table), "math": hf}
    ds = ms.MixtureDataset(
        mixed, weights=W, unit="tokens", lengths={"code": "num_tokens", "math": "n"}, seed=2
    )
    ref = ms.MixtureDataset(srcs, weights=W, unit="tokens", lengths=lens, seed=2)
    a = [s for s, _ in zip(ds, range(500))]
    b = [s for s, _ in zip(ref, range(500))]
    assert [s for s, _ in a] == [s for s, _ in b]


def test_bad_token_arguments():
    srcs = {"a": [[1, 2]] * 5, "b": [[1]] * 3}
    ok = {"a": [2] * 5, "b": [1] * 3}
    with pytest.raises(ValueError, match="lengths are used only"):
        ms.MixtureDataset(srcs, lengths=ok)
    with pytest.raises(ValueError, match="token count of each item of source 'a'"):
        ms.MixtureDataset(srcs, unit="tokens")
    with pytest.raises(ValueError, match="one value per item"):
        ms.MixtureDataset(srcs, unit="tokens", lengths={"a": [1, 2], "b": [1] * 3})
    with pytest.raises(ValueError, match=r"lengths\['a'\]\[1\] = -3"):
        ms.MixtureDataset(srcs, unit="tokens", lengths={"a": [1, -3, 1, 1, 1], "b": [1] * 3})
    with pytest.raises(ValueError, match="must hold integers"):
        ms.MixtureDataset(srcs, unit="tokens", lengths={"a": ["x"] * 5, "b": [1] * 3})
    with pytest.raises(ValueError, match="has no tokens"):
        ms.MixtureDataset(srcs, unit="tokens", lengths={"a": [0] * 5, "b": [1] * 3})
    with pytest.raises(ValueError, match="unknown sources"):
        ms.MixtureDataset(srcs, unit="tokens", lengths={**ok, "zz": [1]})
    with pytest.raises(ValueError, match="names a column"):
        ms.MixtureDataset(srcs, unit="tokens", lengths={"a": "n", "b": [1] * 3})
    with pytest.raises(ValueError, match="is an iterable"):
        ms.MixtureDataset({"a": iter([[1]]), "b": [[1]]}, unit="tokens", lengths={"b": [1]})
    with pytest.raises(ValueError, match="unit"):
        ms.MixtureDataset(srcs, unit="bytes")
    # a checkpoint from other item lengths is refused
    ds = ms.MixtureDataset(srcs, unit="tokens", lengths=ok)
    st = ds.state_dict()
    other = ms.MixtureDataset(srcs, unit="tokens", lengths={"a": [3] * 5, "b": [1] * 3})
    with pytest.raises(ValueError, match="lengths"):
        other.load_state_dict(st)
    with pytest.raises(ValueError, match="unit"):
        ms.MixtureDataset(srcs).load_state_dict(st)


def test_token_dataset_pickles_small():
    rng = np.random.default_rng(0)
    srcs, lens = token_sources(rng)
    ds = ms.MixtureDataset(srcs, weights=W, unit="tokens", lengths=lens, seed=1)
    again = pickle.loads(pickle.dumps(ds))
    a = [keyed([x])[0] for x, _ in zip(ds, range(200))]
    b = [keyed([x])[0] for x, _ in zip(again, range(200))]
    assert a == b


# ---- epoch caps ------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["samples", "tokens"])
@pytest.mark.parametrize("on_exhausted", ["cycle", "stop", "drop"])
def test_max_epochs_leaves_and_renormalises(unit, on_exhausted):
    rng = np.random.default_rng(21)
    srcs, lens = token_sources(rng, sizes=(6000, 30, 600))
    kw = dict(weights=W, seed=4, num_samples=9000, on_exhausted=on_exhausted, max_epochs={"code": 2.5})
    if unit == "tokens":
        kw.update(unit="tokens", lengths=lens)
    ds = ms.MixtureDataset(srcs, **kw)
    got = list(ds)
    names = [s for s, _ in got]
    assert names.count("code") == 75  # floor(2.5 * 30) items, then it leaves
    left_at = len(names) - names[::-1].index("code")  # the position after its last item
    st = ds.stats()
    assert "code" in st["left"] and st["left"]["code"] >= left_at
    assert "code" not in set(names[st["left"]["code"] :])
    # each of its items at most 3 times, the first 15 of the 3rd epoch
    seen = {}
    for s, x in got:
        if s == "code":
            seen[x[0]] = seen.get(x[0], 0) + 1
    assert max(seen.values()) == 3 and sorted(seen.values()).count(3) == 15
    # after it left, the others follow their renormalised weights (0.5 : 0.2)
    after = [s for s in names[st["left"]["code"] :]]
    if on_exhausted == "cycle" and unit == "samples" and len(after) > 50:
        assert abs(after.count("web") - len(after) * 5 / 7) < 2
    state = ds.state_dict()
    assert state["sources"]["code"]["left_at"] == st["left"]["code"]


def test_max_epochs_state_resumes_across_the_leave():
    rng = np.random.default_rng(22)
    srcs, lens = token_sources(rng, sizes=(200, 20, 40), spans=((1, 40), (20, 60), (10, 30)))
    kw = dict(weights=W, seed=9, num_samples=800, unit="tokens", lengths=lens, max_epochs={"math": 1.0})
    ref = ms.MixtureDataset(srcs, **kw)
    whole = keyed(list(ref))
    whole_left = ref.stats()["left"]["math"]
    assert 50 < whole_left < 400  # the cuts fall before and after math leaves
    for cut in (50, 400):
        ds = ms.MixtureDataset(srcs, **kw)
        it = iter(ds)
        head = [next(it) for _ in range(cut)]
        st = ds.state_dict()
        again = ms.MixtureDataset(srcs, **kw)
        again.load_state_dict(st)
        assert keyed(head) + keyed(list(again)) == whole
        assert again.stats()["left"] == {"math": whole_left}


def test_max_epochs_with_a_weight_change():
    srcs = {"a": list(range(100)), "b": list(range(10))}
    ds = ms.MixtureDataset(
        srcs, weights={"a": 1, "b": 1}, shuffle=False, num_samples=200, max_epochs={"b": 1}
    )
    ds.set_weights({"a": 1, "b": 9}, position=4)
    names = [s for s, _ in ds]
    assert names.count("b") == 10
    last_b = len(names) - 1 - names[::-1].index("b")
    left = ds.stats()["left"]["b"]
    assert last_b < left < last_b + 3  # b, at 90% after the change, is picked again at once
    assert names[:16].count("b") == 10  # 2 in positions 0-3, then 8 of the next 12


def test_bad_max_epochs():
    srcs = {"a": [1, 2], "b": [3]}
    for bad, err in ((0, ValueError), (-1.0, ValueError), (float("nan"), ValueError), ("2", TypeError)):
        with pytest.raises(err, match="max_epochs"):
            ms.MixtureDataset(srcs, max_epochs={"a": bad})
    with pytest.raises(ValueError, match="unknown sources"):
        ms.MixtureDataset(srcs, max_epochs={"c": 1})
    # every source capped: the stream ends when the last one leaves
    ds = ms.MixtureDataset(srcs, max_epochs={"a": 1, "b": 2}, shuffle=False)
    assert sorted(x for _, x in ds) == [1, 2, 3, 3]


def test_a_pyarrow_table_is_a_source_of_rows():
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"text": [f"t{i}" for i in range(30)], "num_tokens": list(range(1, 31))})
    batch = table.to_batches()[0]
    ds = ms.MixtureDataset(
        {"t": table, "b": batch}, unit="tokens", lengths={"t": "num_tokens", "b": "num_tokens"}
    )
    got = [x for x, _ in zip(ds, range(40))]
    assert all(isinstance(row, dict) and set(row) == {"text", "num_tokens"} for _, row in got)
    assert {row["text"] for s, row in got if s == "t"} <= {f"t{i}" for i in range(30)}


def test_batched_length_reads_equal_item_by_item_reads():
    # the kernel reads lengths 32 items at a time (batched permutation, cycle walking over the
    # batch); the readers look items up one at a time: the tokens it counts must be the lengths
    # of the items they fetch, across epochs and for sizes at and around powers of four
    rng = np.random.default_rng(30)
    for size in (1, 2, 3, 4, 5, 15, 16, 17, 31, 33, 63, 64, 65, 1023, 1024, 1025, 4097):
        lens = [rng.integers(1, 4097, size=size).tolist(), rng.integers(1, 50, size=7).tolist()]
        plan = token_plan(lens, [(0, [0.5, 0.5])], shuffle=True, seed=size)
        src, item = plan.fill(5 * size + 300)
        lengths = plan.item_lengths(src, item)
        per_source = [int(lengths[src == d].sum()) for d in range(2)]
        assert plan.tokens.tolist() == per_source, size
        idx = _core.source_indices(item[src == 0], size, size, 1000, True)
        assert lengths[src == 0].tolist() == np.asarray(lens[0])[idx].tolist()


# ---- the other paths of the sample-mode schedule, in token mode -------------------------------


def test_weight_schedule_in_tokens_with_workers():
    rng = np.random.default_rng(40)
    srcs, lens = token_sources(rng)
    names = list(W)
    w1 = {"web": 0.1, "code": 0.1, "math": 0.8}
    sch = ms.weights.schedule([(0, W), (900, w1)], interpolate="linear", every=50)
    kw = dict(weights=sch, unit="tokens", lengths=lens, seed=2, num_samples=1200, batch_size=8)
    got = collect(ms.MixtureDataset(srcs, **kw), 2)
    assert keyed(got) == keyed(list(ms.MixtureDataset(srcs, **kw)))
    vecs = sch.vectors(names)
    excess = check_token_bound(got, lambda i: list(sch.at(i, vecs)))
    assert excess * max(len(x) for _, x in got) <= max(int(v.max()) for v in lens.values())


def test_online_mixer_in_tokens_replays_after_resume():
    rng = np.random.default_rng(41)
    srcs, lens = token_sources(rng)
    kw = dict(unit="tokens", lengths=lens, seed=3, num_samples=800, chunk_size=32)

    def run(cut=None):
        mixer = ms.weights.OnlineMixer(list(W))
        ds = ms.MixtureDataset(srcs, weights=mixer, **kw)
        out, state = [], None
        for i, x in enumerate(ds):
            out.append(x)
            if i % 50 == 49:
                mixer.update({"web": 2.0 + (i % 7) / 10, "code": 1.0}, position=i + 60)
            if cut is not None and i + 1 == cut:
                state = ds.state_dict()
                break
        return out, state

    whole, _ = run()
    head, state = run(cut=333)
    mixer = ms.weights.OnlineMixer(list(W))
    ds = ms.MixtureDataset(srcs, weights=mixer, **kw)
    ds.load_state_dict(state)
    rest = []
    for i, x in enumerate(ds, start=333):
        rest.append(x)
        if i % 50 == 49:
            mixer.update({"web": 2.0 + (i % 7) / 10, "code": 1.0}, position=i + 60)
    assert keyed(head + rest) == keyed(whole)


@pytest.mark.parametrize("workers", [0, 2])
def test_stateful_dataloader_resume_in_tokens(workers):
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    rng = np.random.default_rng(42)
    srcs, lens = token_sources(rng)
    kw = dict(weights=W, unit="tokens", lengths=lens, seed=4, num_samples=700, batch_size=4)
    ref = keyed(list(ms.MixtureDataset(srcs, **kw)))
    loader = sdl.StatefulDataLoader(
        ms.MixtureDataset(srcs, **kw), batch_size=4, num_workers=workers, collate_fn=as_list
    )
    it = iter(loader)
    first = [x for _ in range(61) for x in next(it)]
    state = loader.state_dict()
    del it
    again = sdl.StatefulDataLoader(
        ms.MixtureDataset(srcs, **kw), batch_size=4, num_workers=workers, collate_fn=as_list
    )
    again.load_state_dict(state)
    assert keyed(first) + keyed([x for b in again for x in b]) == ref
    ds = ms.MixtureDataset(srcs, **kw)  # elastic: into another worker count
    ds.load_state_dict(state)
    assert keyed(first) + keyed(collect(ds, 2 - workers, batch_size=4)) == ref


def test_epochs_and_len_in_tokens():
    rng = np.random.default_rng(43)
    srcs, lens = token_sources(rng, sizes=(100, 20, 30))
    kw = dict(weights=W, unit="tokens", lengths=lens, seed=5)
    for mode, n in (("cycle", 300), ("drop", 120)):
        ref = keyed(list(ms.MixtureDataset(srcs, on_exhausted="drop", **kw))) if mode == "drop" else None
        ds = ms.MixtureDataset(srcs, on_exhausted=mode, num_samples=n, **kw)
        first = keyed(list(ds))
        assert len(first) == n and len(ds) == n
        ds.set_epoch(1)
        expect = len(ds)
        second = keyed(list(ds))
        assert len(second) == expect
        if mode == "drop":  # every source dropped after its 150 items in all: 30 in epoch 1
            assert expect == 30 and first + second == ref
        else:
            endless = ms.MixtureDataset(srcs, **kw)
            assert first + second == [keyed([x])[0] for x, _ in zip(endless, range(600))]


def test_filters_and_repeats_in_tokens():
    # lengths are per item of the source; the schedule reads them through the keep mask and the
    # repeat counts, as the readers read the items
    rng = np.random.default_rng(44)
    srcs, lens = token_sources(rng)
    keep = rng.random(len(srcs["web"])) < 0.5
    reps = rng.integers(0, 3, size=len(srcs["code"]))
    ds = ms.MixtureDataset(
        srcs,
        weights=W,
        unit="tokens",
        lengths=lens,
        seed=6,
        num_samples=1500,
        filters={"web": keep},
        repeats={"code": reps},
    )
    got = list(ds)
    kept = {srcs["web"][i][0] for i in np.flatnonzero(keep)}
    assert {x[0] for s, x in got if s == "web"} <= kept
    assert ds.stats()["tokens"] == {n: sum(len(x) for s, x in got if s == n) for n in W}
    assert check_token_bound(got) * max(len(x) for _, x in got) <= max(int(v.max()) for v in lens.values())


# ---- what the reviews found ------------------------------------------------------------------


class Stream:
    """An iterable source (no len): a fresh pass each time."""

    def __init__(self, n, tag):
        self.n, self.tag = n, tag

    def __iter__(self):
        return iter(f"{self.tag}{i}" for i in range(self.n))


@pytest.mark.parametrize("on_exhausted", ["cycle", "stop", "drop"])
def test_max_epochs_on_an_iterable_source(on_exhausted):
    # counted once at construction; with an epoch cap it is read past its end whatever
    # on_exhausted says for the others (this hung with "stop" and "drop")
    ds = ms.MixtureDataset(
        {"a": Stream(5, "a"), "b": list(range(1000))},
        weights={"a": 0.5, "b": 0.5},
        max_epochs={"a": 2.0},
        num_samples=60,
        on_exhausted=on_exhausted,
        shuffle=False,
    )
    names = [x for s, x in ds if s == "a"]
    assert names == [f"a{i}" for i in range(5)] * 2
    assert ds.stats()["left"]["a"] >= 19


def test_len_counts_where_capped_sources_end_the_stream():
    for unit in ("samples", "tokens"):
        kw = {"unit": "tokens", "lengths": {"a": [1] * 10, "b": [2] * 20}} if unit == "tokens" else {}
        ds = ms.MixtureDataset(
            {"a": list(range(10)), "b": list(range(20))}, max_epochs={"a": 1, "b": 1}, num_samples=1000, **kw
        )
        assert len(ds) == 30 == len(list(ds))


def test_token_lengths_set_twice_missing_or_late_are_handled():
    plan = _core.MixPlan(2, True, 0, 0, np.full(2, -1, np.int64))
    plan.set_token_lengths(0, _core.TokenTable(np.full(1000, 7)), 1, True)
    plan.set_token_lengths(0, _core.TokenTable(np.array([1, 2, 3])), 1, True)  # the second one wins
    with pytest.raises(ValueError, match="every source"):
        plan.start(np.array([0.5, 0.5]))  # source 1 has none
    plan.set_token_lengths(1, _core.TokenTable(np.array([5])), 2, True)
    plan.start(np.array([0.5, 0.5]))
    src, item = plan.fill(60)
    assert plan.tokens.tolist() == [int(plan.item_lengths(src, item)[src == d].sum()) for d in range(2)]
    assert set(plan.item_lengths(src, item)[src == 0].tolist()) <= {1, 2, 3}
    with pytest.raises(ValueError, match="before the plan starts"):
        plan.set_token_lengths(1, _core.TokenTable(np.array([9])), 2, True)


def test_a_table_maps_an_int32_array_in_place_and_checks_it():
    arr = np.arange(1, 6, dtype=np.int32)
    table = _core.TokenTable(arr)
    assert table.array().tolist() == [1, 2, 3, 4, 5] and table.digest() == _core.xxh64(arr.tobytes(), 0)
    with pytest.raises(ValueError, match=r"lengths\[2\] = -1"):
        _core.TokenTable(np.array([1, 2, -1], np.int32))
    with pytest.raises(ValueError, match="2\\*\\*31"):
        _core.TokenTable(np.array([2**31], np.int64))
    with pytest.raises(ValueError, match="2\\*\\*31"):
        _core.TokenTable(np.array([2**64 - 1], np.uint64))


def test_corrupted_token_counts_in_a_state_are_refused():
    rng = np.random.default_rng(50)
    srcs, lens = token_sources(rng)
    kw = dict(weights=W, unit="tokens", lengths=lens, seed=1, num_samples=400)
    ds = ms.MixtureDataset(srcs, **kw)
    it = iter(ds)
    for _ in range(30):
        next(it)
    good = ds.state_dict()
    for field, change in (
        ("tokens", lambda v: [v[0] + 10**6] + v[1:]),
        ("segment_tokens", lambda v: [0] * len(v)),
        ("tokens", lambda v: [2**63] + v[1:]),
        ("counts", lambda v: [10**30] + v[1:]),
    ):
        bad = copy.deepcopy(good)
        if field == "tokens" and change(good["state"]["tokens"])[0] < 2**62:
            bad["state"]["segment_tokens"][0] += 10**6
        bad["state"][field] = change(bad["state"][field])
        with pytest.raises(ValueError):
            ms.MixtureDataset(srcs, **kw).load_state_dict(bad)
    again = ms.MixtureDataset(srcs, **kw)
    again.load_state_dict(good)
    assert len(list(again)) == 370


def test_a_token_dataset_pickles_without_its_lengths():
    # spawned workers map the shared file of lengths; the pickle does not carry them
    rng = np.random.default_rng(51)
    lens = {"a": rng.integers(1, 4096, size=500_000), "b": rng.integers(1, 100, size=300_000)}
    srcs = {"a": np.arange(500_000), "b": np.arange(300_000)}
    ds = ms.MixtureDataset(srcs, unit="tokens", lengths=lens, seed=1)
    blob = pickle.dumps(ds)
    assert len(blob) < 64 * 1024 + srcs["a"].nbytes + srcs["b"].nbytes  # the sources, not the lengths
    again = pickle.loads(blob)
    assert [x for x, _ in zip(again, range(300))] == [x for x, _ in zip(ds, range(300))]


def test_clear_errors_for_misplaced_arguments():
    srcs = {"a": [1, 2], "b": [3]}
    with pytest.raises(TypeError, match="lengths must be a dict"):
        ms.MixtureDataset(srcs, unit="tokens", lengths=[[1, 1], [1]])
    with pytest.raises(TypeError, match="max_epochs must be a dict"):
        ms.MixtureDataset(srcs, max_epochs=2.0)
