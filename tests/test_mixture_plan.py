"""Dry runs (``MixtureDataset.simulate``): the plan equals what iteration serves, window by
window, in sample and token mode, with a cap, a source that runs out, a schedule and a change
at a fixed position; its events are where things happened; its summary and plot are readable.

The oracle is the dataset itself: the samples it yields are counted per window here (tokens
from the length of each sample), independently of the plan's C++ counting.
"""

from __future__ import annotations

import mixsieve as ms
import numpy as np
import pytest
from mixture_sources import LOADER_WARNINGS, as_list

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

pytestmark = [pytest.mark.filterwarnings(w) for w in LOADER_WARNINGS]

NAMES = ["web", "code", "math"]


def sources(rng, sizes=(3000, 40, 25)):
    out, lens = {}, {}
    for name, n, hi in zip(NAMES, sizes, (60, 900, 3000)):
        ln = rng.integers(1, hi, size=n)
        out[name] = [[f"{name}{i}"] * int(ln[i]) for i in range(n)]
        lens[name] = ln
    return out, lens


def per_window(samples, window, tokens=False):
    n = len(samples)
    m = np.zeros((-(-n // window), len(NAMES)), np.int64)
    for i, (s, x) in enumerate(samples):
        m[i // window, NAMES.index(s)] += len(x) if tokens else 1
    return m


def build(unit, rng, **kw):
    srcs, lens = sources(rng)
    args = dict(
        weights={"web": 0.5, "code": 0.3, "math": 0.2},
        seed=3,
        max_epochs={"code": 1.5},  # a cap
        on_exhausted="drop",  # math runs out and is dropped
        num_samples=1800,
    )
    if unit == "tokens":
        args.update(unit="tokens", lengths=lens)
    args.update(kw)
    ds = ms.MixtureDataset(srcs, **args)
    ds.set_weights({"web": 0.2, "code": 0.4, "math": 0.4}, position=400)  # a change at a fixed position
    return ds


@pytest.mark.parametrize("unit", ["samples", "tokens"])
@pytest.mark.parametrize("workers", [0, 2])
def test_simulate_equals_iteration_window_by_window(unit, workers):
    ds = build(unit, np.random.default_rng(1))
    plan = ds.simulate(1800, window=100)
    got = [x for b in DataLoader(ds, batch_size=10, num_workers=workers, collate_fn=as_list) for x in b]
    assert plan.generated == len(got)
    assert plan.counts.tolist() == per_window(got, 100).tolist()
    if unit == "tokens":
        assert plan.tokens.tolist() == per_window(got, 100, tokens=True).tolist()
    else:
        assert plan.tokens is None
    names = [s for s, _ in got]
    kinds = {(e["event"], e.get("source")) for e in plan.events}
    assert ("capped", "code") in kinds and ("dropped", "math") in kinds
    capped = next(e["position"] for e in plan.events if e["event"] == "capped")
    assert "code" not in names[capped:] and names.count("code") == 60  # 1.5 x 40
    dropped = next(e["position"] for e in plan.events if e["event"] == "dropped")
    assert "math" not in names[dropped:] and names.count("math") == 25
    assert [e["position"] for e in plan.events if e["event"] == "weights"] == [
        0,
        400,
    ]  # the start, the change
    if workers == 0:
        assert ds.stats()["left"] == {"code": capped, "math": dropped}


def test_simulate_with_a_schedule_and_targets():
    rng = np.random.default_rng(2)
    srcs, _ = sources(rng, sizes=(500, 500, 500))
    sch = ms.weights.schedule(
        [(0, {"web": 1, "code": 1, "math": 2}), (300, {"web": 3, "code": 1, "math": 0})]
    )
    ds = ms.MixtureDataset(srcs, weights=sch, num_samples=600)
    plan = ds.simulate(600, window=200)
    assert plan.counts.tolist() == per_window(list(ds), 200).tolist()
    np.testing.assert_allclose(plan.targets[0], [0.25, 0.25, 0.5])
    np.testing.assert_allclose(plan.targets[1], [0.5 * 0.25 + 0.5 * 0.75, 0.25, 0.5 * 0.5])  # changes at 300
    np.testing.assert_allclose(plan.targets[2], [0.75, 0.25, 0.0])
    assert [e["position"] for e in plan.events if e["event"] == "weights"] == [0, 300]


def test_simulate_starts_where_a_loaded_state_resumes():
    ds = build("samples", np.random.default_rng(4))
    it = iter(ds)
    head = [next(it) for _ in range(700)]
    state = ds.state_dict()
    again = build("samples", np.random.default_rng(4))
    again.load_state_dict(state)
    plan = again.simulate(1100, window=100)
    rest = list(again)
    assert plan.start == 700 and plan.counts.tolist() == per_window(rest, 100).tolist()
    assert len(head) + len(rest) == 700 + plan.generated


def test_summary_and_epochs():
    ds = build("tokens", np.random.default_rng(5))
    plan = ds.simulate(1800, window=300)
    text = plan.summary()
    for name in NAMES:
        assert name in text
    assert "capped at" in text and "dropped at" in text and "tokens" in text
    assert plan.epochs["code"] == pytest.approx(1.5) and plan.epochs["math"] == pytest.approx(1.0)
    cycles = [e for e in plan.events if e["event"] == "cycled" and e["source"] == "code"]
    assert [e["epoch"] for e in cycles] == [1]


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    ds = build("tokens", np.random.default_rng(6))
    path = ds.simulate(1800, window=100).plot(str(tmp_path / "mixture.png"))
    img = matplotlib.image.imread(path)
    assert img.shape[0] >= 400 and img.shape[1] >= 600
    assert float(img[..., :3].std()) > 0.05  # not blank


def test_plot_without_matplotlib_says_how_to_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib here")
        return real(name, *args, **kwargs)

    plan = build("samples", np.random.default_rng(7)).simulate(100, window=10)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"pip install \"mixsieve\[plot\]\""):
        plan.plot("x.png")


def test_bad_simulate_arguments():
    ds = ms.MixtureDataset({"a": [1], "b": [2]})
    with pytest.raises(ValueError, match="window"):
        ds.simulate(10, window=0)
    with pytest.raises(TypeError, match="num_samples"):
        ds.simulate(1.5)
    assert ds.simulate(0).generated == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_stats_windows_are_what_was_served(workers):
    ds = build("tokens", np.random.default_rng(8), num_samples=None, on_exhausted="cycle")
    loader = DataLoader(ds, batch_size=10, num_workers=workers, collate_fn=as_list)
    got = []
    for batch in loader:
        got += batch
        if len(got) >= 1000:
            break
    st = ds.stats(window=100, last=4)
    win = st["windows"]
    served = sum(st["served"].values())
    if workers == 0:
        assert served == 1000
    # the windows cover the served prefix of the stream: its last 4 whole or partial windows
    stream = [
        x
        for x, _ in zip(
            build("tokens", np.random.default_rng(8), num_samples=None, on_exhausted="cycle"), range(served)
        )
    ]
    want = per_window(stream, 100)[-4:]
    assert win.counts.tolist() == want.tolist()
    assert win.tokens.tolist() == per_window(stream, 100, tokens=True)[-4:].tolist()
    assert win.start == (len(per_window(stream, 100)) - 4) * 100


def test_simulate_is_the_stream_position_for_position():
    # windows of one position: the plan's counts are the one-hot rows of the iterated stream
    for unit in ("samples", "tokens"):
        ds = build(unit, np.random.default_rng(9))
        plan = ds.simulate(900, window=1)
        names = [s for s, _ in ds][:900]
        assert [NAMES[int(np.argmax(row))] for row in plan.counts] == names
        assert (plan.counts.sum(axis=1) == 1).all()


def test_simulate_follows_set_epoch_and_refuses_a_plan_too_big():
    ds = build("samples", np.random.default_rng(10), num_samples=600, on_exhausted="cycle", max_epochs=None)
    ds.set_epoch(2)
    plan = ds.simulate(600, window=100)
    got = list(ds)
    assert plan.start == 1200 and plan.counts.tolist() == per_window(got, 100).tolist()
    with pytest.raises(ValueError, match="choose window >="):
        ds.simulate(10**9, window=1)


def test_start_events_once_and_a_change_at_the_start():
    srcs, _ = sources(np.random.default_rng(11), sizes=(500, 500, 500))
    ds = ms.MixtureDataset(srcs, weights={"web": 1, "code": 1, "math": 1}, num_samples=300)
    ds.set_weights({"web": 2, "code": 1, "math": 1}, position=0)
    ds.set_weights({"web": 1, "code": 1, "math": 2}, position=100)
    plan = ds.simulate(300, window=100)
    ws = [e for e in plan.events if e["event"] == "weights"]
    assert [e["position"] for e in ws] == [0, 100]
    assert ws[0]["weights"]["web"] == pytest.approx(0.5)  # the change at 0 is what it starts with
    it = iter(ds)
    for _ in range(100):
        next(it)
    state = ds.state_dict()
    again = ms.MixtureDataset(srcs, weights={"web": 1, "code": 1, "math": 1}, num_samples=300)
    again.load_state_dict(state)
    ws = [e for e in again.simulate(200, window=100).events if e["event"] == "weights"]
    assert [e["position"] for e in ws] == [100]  # once, though the change sits at the start
    assert ws[0]["weights"]["math"] == pytest.approx(0.5)


def test_the_suggested_window_is_accepted():
    ds = ms.MixtureDataset({"a": [1], "b": [2], "c": [3]})
    with pytest.raises(ValueError, match="choose window >=") as e:
        ds.simulate(10**9, window=1)
    window = int(str(e.value).rsplit(">= ", 1)[1].replace(",", ""))
    assert ds.simulate(10**5, window=max(1, window // 10**4)).generated == 10**5  # a small run
    ds.simulate(0, window=window)  # the suggested window fits (nothing simulated)
    cells = -(-(10**9) // window) * 3
    assert cells <= 20_000_000


def test_stats_windows_follow_set_epoch():
    ds = build("samples", np.random.default_rng(12), num_samples=400, on_exhausted="cycle", max_epochs=None)
    ds.set_epoch(1)
    got = list(ds)
    win = ds.stats(window=100)["windows"]
    assert win.start == 400 and win.counts.tolist() == per_window(got, 100).tolist()


def test_a_pass_ends_with_its_epoch_and_small_sources_do_not_flood_events():
    ds = ms.MixtureDataset({"a": list(range(7)), "b": list(range(50))}, num_samples=100)
    plan = ds.simulate(300, window=100)
    assert plan.generated == 100 == len(list(ds)) and plan.events_end()
    ds = ms.MixtureDataset({"a": list(range(3)), "b": list(range(100_000))})
    plan = ds.simulate(1_000_000, window=100_000)
    cycled = [e for e in plan.events if e["event"] == "cycled" and e["source"] == "a"]
    assert len(cycled) == 1000 and plan.epochs["a"] == pytest.approx(500_000 / 3)
    assert "166666 passes done" in plan.summary()


def test_a_long_dry_run_stops_on_ctrl_c():
    import os
    import signal
    import threading
    import time

    ds = ms.MixtureDataset({"a": list(range(10)), "b": list(range(1000))})
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ds.simulate(10**13, window=10**12)
    assert time.monotonic() - t0 < 30


def test_plot_and_shares_refuse_what_they_cannot_draw(tmp_path):
    plan = ms.MixtureDataset({"a": [1], "b": [2]}).simulate(0)
    with pytest.raises(ValueError, match="no positions"):
        plan.plot(str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match='unit must be "samples" or "tokens"'):
        plan.shares("bananas")
