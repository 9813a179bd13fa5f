"""Weights controllers: DoReMi against a plain numpy restatement of the paper's update, and the
controller protocol: a user-written controller steers a MixtureDataset through DataLoader
workers (fork and spawn) and replays exactly after a resume.

The oracle for steering is the dataset itself driven by ``set_weights`` at the same positions
(the documented meaning of a controller's update).
"""

from __future__ import annotations

import pickle

import mixsieve as ms
import numpy as np
import pytest
from mixture_sources import LOADER_WARNINGS, as_list

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

pytestmark = [pytest.mark.filterwarnings(w) for w in LOADER_WARNINGS]

NAMES = ["web", "code", "math", "books"]


def doremi_numpy(names, reference, steps, eta, c):
    """Xie et al. 2023, Algorithm 1, restated: lambda = max(loss - ref, 0) per domain (0 when not
    reported); alpha <- softmax(log alpha + eta * lambda); alpha <- (1 - c) alpha + c / K; the
    output is the mean of alpha over the steps."""
    k = len(names)
    alpha = np.full(k, 1.0 / k)
    history = []
    for losses in steps:
        lam = np.array([max(losses[n] - reference[n], 0.0) if n in losses else 0.0 for n in names])
        logits = np.log(alpha) + eta * lam
        alpha = np.exp(logits) / np.exp(logits).sum()
        alpha = (1 - c) * alpha + c / k
        history.append(alpha)
    return alpha, np.mean(history, axis=0)


def test_doremi_equals_the_numpy_restatement():
    rng = np.random.default_rng(0)
    reference = {n: float(rng.uniform(1, 3)) for n in NAMES}
    steps = []
    for t in range(60):
        losses = {n: float(reference[n] + rng.normal(0.2, 0.5)) for n in NAMES}
        if t % 5 == 0:
            losses.pop(NAMES[t % 4])  # a source not seen this step
        steps.append(losses)
    for eta, c in ((1.0, 1e-3), (0.3, 0.05)):
        ctl = ms.weights.DoReMi(NAMES, reference_losses=reference, step_size=eta, smoothing=c)
        for losses in steps:
            ctl.update(losses)
        want, want_avg = doremi_numpy(NAMES, reference, steps, eta, c)
        np.testing.assert_allclose([ctl.weights[n] for n in NAMES], want, rtol=1e-12)
        np.testing.assert_allclose([ctl.average_weights()[n] for n in NAMES], want_avg, rtol=1e-12)
        again = ms.weights.DoReMi(NAMES, reference_losses=reference, step_size=eta, smoothing=c)
        again.load_state_dict(pickle.loads(pickle.dumps(ctl.state_dict())))
        assert again.weights == ctl.weights and again.average_weights() == ctl.average_weights()


def test_doremi_errors():
    with pytest.raises(ValueError, match="no reference loss"):
        ms.weights.DoReMi(["a", "b"], reference_losses={"a": 1.0}).update({"b": 2.0})
    with pytest.raises(ValueError, match="unknown source"):
        ms.weights.DoReMi(["a"], reference_losses={"z": 1.0})
    with pytest.raises(ValueError, match="step_size"):
        ms.weights.DoReMi(["a"], reference_losses={"a": 1.0}, step_size=0)
    with pytest.raises(ValueError, match="finite"):
        ms.weights.DoReMi(["a"], reference_losses={"a": 1.0}).update({"a": float("nan")})
    ctl = ms.weights.DoReMi(["a", "b"], reference_losses={"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError, match="corrupt"):
        ctl.load_state_dict({"names": ["a", "b"], "t": 1, "alpha": [0.0, 1.0], "sum": [0, 1]})


class Greedy:
    """A user's controller: not a subclass of anything; more weight to the higher loss."""

    def __init__(self, names):
        self.weights = {n: 1.0 for n in names}
        self.steps = 0

    def update(self, losses, position=None):
        top = max(losses, key=losses.get)
        self.weights = {n: (4.0 if n == top else 1.0) for n in self.weights}
        self.steps += 1

    def state_dict(self):
        return {"weights": self.weights, "steps": self.steps}

    def load_state_dict(self, state):
        self.weights = dict(state["weights"])
        self.steps = int(state["steps"])


def sources():
    return {n: [f"{n}{i}" for i in range(300)] for n in NAMES}


def losses_at(step):
    rng = np.random.default_rng(step)
    return {n: float(rng.uniform(1, 3)) for n in NAMES}


def steered(ctl, workers, start_step=0, context=None, dataset=None, steps=30):
    """Reads 8-sample batches, updating the controller after each with the change landing 40
    positions ahead (beyond the workers' prefetch)."""
    ds = (
        dataset
        if dataset is not None
        else ms.MixtureDataset(sources(), weights=ctl, seed=1, batch_size=8, chunk_size=8)
    )
    loader = DataLoader(
        ds,
        batch_size=8,
        num_workers=workers,
        collate_fn=as_list,
        multiprocessing_context=context,
        prefetch_factor=1 if workers else None,
    )
    out = []
    for step, batch in enumerate(loader, start=start_step):
        out += batch
        ctl.update(losses_at(step), position=(step + 1) * 8 + 40)
        if step + 1 - start_step >= steps:
            break
    return ds, out


def reference_stream(n_steps):
    """The same run with ds.set_weights at the same positions."""
    ds = ms.MixtureDataset(sources(), weights={n: 1.0 for n in NAMES}, seed=1, batch_size=8, chunk_size=8)
    ctl = Greedy(NAMES)
    for step in range(n_steps):
        ctl.update(losses_at(step))
        ds.set_weights(ctl.weights, position=(step + 1) * 8 + 40)
    return [x for x, _ in zip(ds, range(n_steps * 8))]


@pytest.mark.parametrize(("workers", "context"), [(0, None), (2, None), (2, "spawn")])
def test_a_user_controller_steers_workers(workers, context):
    ctl = Greedy(NAMES)
    _, got = steered(ctl, workers, context=context)
    assert got == reference_stream(30)
    assert ctl.steps == 30 and max(ctl.weights.values()) == 4.0


def test_a_user_controller_replays_after_a_resume():
    whole = reference_stream(40)
    ctl = Greedy(NAMES)
    ds, first = steered(ctl, 2, steps=15)
    state = ds.state_dict(consumed_samples=len(first))
    assert state["mixer"] == ctl.state_dict()
    again_ctl = Greedy(NAMES)
    again = ms.MixtureDataset(sources(), weights=again_ctl, seed=1, batch_size=8, chunk_size=8)
    again.load_state_dict(state)
    assert again_ctl.state_dict() == ctl.state_dict()
    _, rest = steered(again_ctl, 2, start_step=15, dataset=again, steps=25)
    assert first + rest == whole


def test_doremi_drives_a_mixture_and_its_state_travels_with_workers():
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    ref = {n: 2.0 for n in NAMES}
    ctl = ms.weights.DoReMi(NAMES, reference_losses=ref)
    ds = ms.MixtureDataset(sources(), weights=ctl, seed=2, batch_size=4, chunk_size=8)
    loader = sdl.StatefulDataLoader(ds, batch_size=4, num_workers=2, collate_fn=as_list)
    it = iter(loader)
    for step in range(12):
        next(it)
        ctl.update({"math": 3.0, "web": 2.1}, position=(step + 1) * 4 + 64)
    state = loader.state_dict()
    worker_states = [w["dataset_state"] for w in state["_snapshot"]["_worker_snapshots"].values()]
    # each worker's snapshot holds the controller's state as the main process had shared it
    # when that worker made its last batch: an earlier update than the latest, never none
    seen = [w.get("mixer") for w in worker_states]
    assert all(m is not None and m["names"] == NAMES and 1 <= m["t"] <= 12 for m in seen), seen
    assert ctl.weights["math"] > ctl.weights["web"] > ctl.weights["code"]


def test_a_controller_for_other_sources_is_refused():
    with pytest.raises(ValueError, match="is for sources"):
        ms.MixtureDataset(sources(), weights=Greedy(["web", "code"]))


# ---- what the review found ---------------------------------------------------------------------


class Plain:
    """A controller whose state_dict is its whole vars(), the shortest way to write one."""

    def __init__(self, names, pad=0):
        self.weights = {n: 1.0 for n in names}
        self.t = 0
        self.pad = "x" * pad

    def update(self, losses, position=None):
        self.t += 1
        self.weights = {n: 1.0 + (n == max(losses, key=losses.get)) * 3.0 for n in self.weights}

    def state_dict(self):
        return dict(vars(self))

    def load_state_dict(self, state):
        self.__dict__.update(state)


def test_watching_leaves_the_instance_alone():
    import copy

    ctl = Plain(NAMES)
    ds = ms.MixtureDataset(sources(), weights=ctl, chunk_size=8)
    it = iter(ds)
    next(it)
    ctl.update({"web": 3.0}, 40)  # position given positionally
    assert sorted(vars(ctl)) == ["pad", "t", "weights"]  # nothing stored on the instance
    assert ds.state_dict()["mixer"]["t"] == 1
    assert [p for p, _ in ds._changes] == [40]
    twin = copy.copy(ctl)  # a copy steers nothing
    twin.update({"code": 3.0}, position=80)
    assert [p for p, _ in ds._changes] == [40] and ctl.weights["web"] == 4.0
    clone = copy.deepcopy(ds)  # a deep copy of the dataset follows the same controller
    ctl.update({"math": 3.0}, position=96)
    assert [p for p, _ in clone._changes][-1] == 96 and [p for p, _ in ds._changes][-1] == 96


def test_a_controller_state_too_big_to_share_is_left_out_not_stale():
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    ctl = Plain(NAMES, pad=100_000)
    ds = ms.MixtureDataset(sources(), weights=ctl, seed=2, batch_size=4, chunk_size=8)
    loader = sdl.StatefulDataLoader(ds, batch_size=4, num_workers=2, collate_fn=as_list)
    it = iter(loader)
    for step in range(6):
        next(it)
        ctl.update({"web": 3.0}, position=(step + 1) * 4 + 64)
    state = loader.state_dict()
    for w in state["_snapshot"]["_worker_snapshots"].values():
        assert "mixer" not in w["dataset_state"]  # not the worker's own (stale) copy
    again = Plain(NAMES, pad=100_000)
    again.load_state_dict(ctl.state_dict())
    ds2 = ms.MixtureDataset(sources(), weights=again, seed=2, batch_size=4, chunk_size=8)
    ds2.load_state_dict(state)
    assert again.t == 6  # kept as the training loop restored it


def test_doremi_excess_smoothing_state_and_refused_positions():
    ref = {n: 1.0 for n in NAMES}
    a = ms.weights.DoReMi(NAMES, reference_losses=ref)
    b = ms.weights.DoReMi(NAMES, reference_losses=ref)
    a.update({"web": 1.5, "code": 0.5})
    b.update(excess={"web": 0.5})  # the same lambda, given directly
    assert a.weights == b.weights
    with pytest.raises(TypeError, match="not both"):
        b.update({"web": 1.0}, excess={"web": 0.1})
    with pytest.raises(ValueError, match=">= 0"):
        b.update(excess={"web": -0.1})
    with pytest.raises(ValueError, match="smoothing"):
        ms.weights.DoReMi(NAMES, reference_losses=ref, smoothing=0.0)
    for bad in (
        {"alpha": [5.0, 7.0, 1.0, 1.0]},
        {"t": -2},
        {"sum": [-1.0, 1.0, 0.5, 0.5]},
        {"t": 3},
    ):
        st = {**a.state_dict(), **bad}
        with pytest.raises(ValueError, match="corrupt"):
            ms.weights.DoReMi(NAMES, reference_losses=ref).load_state_dict(st)
    ctl = ms.weights.DoReMi(NAMES, reference_losses=ref)
    ds = ms.MixtureDataset(sources(), weights=ctl, chunk_size=8)
    it = iter(ds)
    for _ in range(20):
        next(it)
    with pytest.raises(ValueError, match="already been generated"):
        ctl.update({"web": 2.0}, position=3)  # refused: the step is undone
    assert ctl.state_dict()["t"] == 0 and ctl.average_weights() == ctl.weights


def test_refused_controller_weights_undo_the_step_and_say_why():
    class Bad(Plain):
        def update(self, losses, position=None):
            self.t += 1
            self.weights = {**self.weights, "zzz": 3.0}

    ctl = Bad(NAMES)
    ds = ms.MixtureDataset(sources(), weights=ctl)
    with pytest.raises(ValueError, match="weights or state after update"):
        ctl.update({"web": 1.0})
    assert ctl.t == 0 and "zzz" not in ctl.weights and ds._changes == []

    class NotJson(Plain):
        def state_dict(self):
            return {"w": np.zeros(2), "t": self.t}

        def load_state_dict(self, state):
            self.t = state["t"]

    ctl = NotJson(NAMES)
    ds = ms.MixtureDataset(sources(), weights=ctl)
    with pytest.raises(TypeError, match="JSON"):
        ctl.update({"web": 3.0})
    assert ds._changes == [] and ctl.t == 0  # refused before the change landed

    class NoState:
        weights = {n: 1.0 for n in NAMES}

        def update(self, losses):
            pass

    with pytest.raises(TypeError, match="has no state_dict, load_state_dict"):
        ms.MixtureDataset(sources(), weights=NoState())


def test_doremi_overflow_and_argument_types():
    ctl = ms.weights.DoReMi(["a", "b", "c"], reference_losses={"a": 1.0, "b": 1.0}, step_size=1e300)
    with pytest.raises(ValueError, match="overflows"):
        ctl.update({"a": 1e300, "b": 1e300})
    assert all(np.isfinite(list(ctl.weights.values())))
    with pytest.raises(TypeError, match="step_size must be a number"):
        ms.weights.DoReMi(["a"], reference_losses={"a": 1.0}, step_size="1")
    with pytest.raises(TypeError, match="smoothing must be a number"):
        ms.weights.DoReMi(["a"], reference_losses={"a": 1.0}, smoothing="0.1")
