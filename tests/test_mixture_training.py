"""MixtureDataset under the conditions real training stacks meet: DataLoader batch sizes that
differ from the dataset's, restarts with other weights, process groups (tensor/pipeline
parallelism, NCCL's device tensors), sources that shard themselves over workers (a real Hugging
Face streaming dataset over local JSON files), shared ``/dev/shm`` across PID namespaces, two
threads, many online updates, and corrupted checkpoints.

Compared against: the single-process stream of the same dataset (the reference every layout
must reproduce, as a sequence or a multiset), and the weights given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import mixsieve as ms  # noqa: E402
from mixsieve.mixture import distributed  # noqa: E402
from mixture_sources import LOADER_WARNINGS, Countdown, as_list, make_dataset  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

pytestmark = [pytest.mark.filterwarnings(w) for w in LOADER_WARNINGS]


# ---- resume when the DataLoader's batch size is not the dataset's --------------------------


def take_batches(loader, n):
    it = iter(loader)
    out = [x for _ in range(n) for x in next(it)]
    del it
    return out


class Wrapped(torch.utils.data.IterableDataset):
    """A wrapper that hides the DataLoader from the dataset (it iterates the dataset itself)."""

    def __init__(self, ds):
        self.ds = ds

    def __iter__(self):
        yield from self.ds


def test_resume_with_the_default_batch_size_and_workers_is_exact():
    # the reported case: 2 workers, DataLoader batches of 32, the dataset's batch_size left
    # unset; 21 batches consumed. Before, the state from consumed_samples lost 31 samples and
    # repeated 31; now the dataset deals positions in the DataLoader's batches.
    ref = list(make_dataset(num_samples=3200))
    ds = make_dataset(num_samples=3200)
    first = take_batches(DataLoader(ds, batch_size=32, num_workers=2, collate_fn=as_list), 21)
    assert first == ref[:672]  # the DataLoader yields the stream in order
    state = ds.state_dict(consumed_samples=len(first))
    again = make_dataset(num_samples=3200)
    again.load_state_dict(state)
    rest = [x for b in DataLoader(again, batch_size=32, num_workers=2, collate_fn=as_list) for x in b]
    assert first + rest == ref


def test_a_batch_size_that_differs_from_the_loaders_is_refused():
    ds = make_dataset(num_samples=3200, batch_size=16)
    with pytest.raises(ValueError, match=r"batch_size=16\) is read by a DataLoader with batch_size=32"):
        take_batches(DataLoader(ds, batch_size=32, num_workers=2, collate_fn=as_list), 2)
    # hidden behind a wrapper, the DataLoader's batch size cannot be seen: consumed_samples with
    # several workers is refused rather than guessed
    ds = make_dataset(num_samples=3200)
    take_batches(DataLoader(Wrapped(ds), batch_size=32, num_workers=2, collate_fn=as_list), 21)
    with pytest.raises(ValueError, match=r"batch_size=<the DataLoader's batch_size>"):
        ds.state_dict(consumed_samples=672)


def test_stateful_loader_resumes_exactly_in_any_layout():
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    ref = list(make_dataset(num_samples=3200))

    def loader(workers, **kw):
        return sdl.StatefulDataLoader(
            make_dataset(num_samples=3200), batch_size=32, num_workers=workers, collate_fn=as_list, **kw
        )

    first_loader = loader(2, snapshot_every_n_steps=5)  # batches after the snapshot are counted too
    it = iter(first_loader)
    first = [x for _ in range(21) for x in next(it)]
    state = first_loader.state_dict()
    del it
    again = loader(2)
    again.load_state_dict(state)
    assert first + [x for b in again for x in b] == ref
    ds = make_dataset(num_samples=3200)  # another worker count
    ds.load_state_dict(state)
    assert (
        first + [x for b in DataLoader(ds, batch_size=32, num_workers=1, collate_fn=as_list) for x in b]
        == ref
    )


# ---- restarting with other weights ---------------------------------------------------------


def test_load_state_dict_applies_the_constructors_weights():
    ds = make_dataset(num_samples=None)
    it = iter(ds)
    head = [next(it) for _ in range(1000)]
    state = ds.state_dict()
    new = {"web": 0.0, "code": 0.5, "math": 0.5}
    ds2 = make_dataset(num_samples=None, weights=new)
    ds2.load_state_dict(state)
    assert ds2.stats()["weights"] == {"web": 0.0, "code": 0.5, "math": 0.5}
    it2 = iter(ds2)
    after = [next(it2) for _ in range(300)]
    later = ds2.state_dict()  # the change at 1000 is recorded in it
    after += [next(it2) for _ in range(300)]
    assert {n for n, _ in after} == {"code", "math"}
    again = make_dataset(num_samples=None, weights=new)
    again.load_state_dict(later)
    it3 = iter(again)
    assert [next(it3) for _ in range(300)] == after[300:]
    assert later["state"]["policy"] == [0.0, 0.5, 0.5]
    # the same weights as the checkpoint's: nothing is recorded, the stream continues
    same = make_dataset(num_samples=None)
    same.load_state_dict(state)
    it4 = iter(same)
    ref = iter(make_dataset(num_samples=None))
    assert head + [next(it4) for _ in range(100)] == [next(ref) for _ in range(1100)]


# ---- distributed ------------------------------------------------------------------------------


def test_the_weight_change_tensor_lives_where_the_backend_reduces():
    assert distributed.collective_device("nccl") == "cuda"
    assert distributed.collective_device("gloo") == "cpu"
    assert distributed.collective_device("cpu:gloo,cuda:nccl") == "cpu"


def test_no_lock_is_held_across_the_collective(monkeypatch):
    ds = make_dataset()
    held = []

    def agree(pos, sync, group):
        got = []

        def try_lock():
            with ds._shared.lock():
                got.append(True)

        t = threading.Thread(target=try_lock)
        t.start()
        t.join(timeout=5)
        held.append(not got)
        return pos

    monkeypatch.setattr(distributed, "agree_on_position", agree)
    ds.set_weights([1, 1, 1])
    assert held == [False]


def env_path():
    return str(Path(ms.__file__).parent.parent)


def test_tensor_parallel_ranks_share_data_by_their_data_parallel_group(tmp_path):
    # 4 gloo ranks: tensor-parallel pairs (0, 1) and (2, 3); data-parallel groups [0, 2], [1, 3]
    here = Path(__file__).parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), env_path()]))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(here / "mixture_tp_rank.py"),
                str(r),
                "4",
                str(tmp_path / "init"),
                str(tmp_path / f"r{r}.json"),
            ],
            env=env,
        )
        for r in range(4)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    outs = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(4)]
    assert outs[0]["items"] == outs[1]["items"] and outs[2]["items"] == outs[3]["items"]
    assert outs[0]["changes"] == outs[2]["changes"] and len(outs[0]["changes"]) == 1
    ref_ds = make_dataset(num_samples=400, batch_size=4)
    ref_ds.load_state_dict({**ref_ds.state_dict(), "changes": outs[0]["changes"]})
    ref = [list(x) for x in ref_ds]
    blocks = [ref[i : i + 4] for i in range(0, len(ref), 4)]
    assert outs[0]["items"] == [x for b in blocks[0::2] for x in b]
    assert outs[2]["items"] == [x for b in blocks[1::2] for x in b]


# ---- sources that shard themselves -----------------------------------------------------------


def test_hugging_face_streaming_dataset_is_read_whole_by_every_worker(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    files = []
    for shard in range(2):
        path = tmp_path / f"part{shard}.jsonl"
        path.write_text("".join(json.dumps({"text": f"doc{shard * 3000 + i}"}) + "\n" for i in range(3000)))
        files.append(str(path))
    stream = datasets.load_dataset("json", data_files=files, split="train", streaming=True)
    assert isinstance(stream, torch.utils.data.IterableDataset)  # it shards itself by worker
    ds = ms.MixtureDataset({"hf": stream}, on_exhausted="stop", shuffle=False, batch_size=16)
    got = [v["text"] for b in DataLoader(ds, batch_size=16, num_workers=2, collate_fn=as_list) for _, v in b]
    assert sorted(got) == sorted(f"doc{i}" for i in range(6000))  # 3,000 of them before


def test_a_nested_mixture_with_workers_serves_everything():
    inner = make_dataset(num_samples=None)
    outer = ms.MixtureDataset(
        {"inner": inner, "extra": list(range(10))},
        weights=[3, 1],
        num_samples=400,
        shuffle=False,
        batch_size=8,
    )
    ref = list(outer)
    got = [x for b in DataLoader(outer, batch_size=8, num_workers=2, collate_fn=as_list) for x in b]
    assert got == ref and sum(1 for n, _ in got if n == "inner") == 300


# ---- shared memory -----------------------------------------------------------------------------


def test_a_live_block_survives_a_sweep_across_pid_namespaces(monkeypatch):
    # another container with a shared /dev/shm: its processes are invisible to os.kill here
    code = (
        "import sys, time, mixsieve as ms\n"
        "ds = ms.MixtureDataset({'a': [1]})\n"
        "print(ds._shared.path, flush=True)\n"
        "sys.stdin.readline()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        path = proc.stdout.readline().strip()

        def no_such_process(pid, sig):
            raise ProcessLookupError(pid)

        monkeypatch.setattr(os, "kill", no_such_process)
        ms.MixtureDataset({"a": [1]})  # creating a dataset sweeps dead blocks
        alive = os.path.exists(path)
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait()
    assert alive
    assert not os.path.exists(path)  # its owner removed it on exit


def test_the_lock_excludes_threads_of_one_process():
    ds = make_dataset()
    order = []

    def other():
        with ds._shared.lock():
            order.append("other")

    with ds._shared.lock():
        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.3)
        order.append("first")
    t.join(timeout=5)
    assert order == ["first", "other"]


def test_many_online_changes_neither_overflow_nor_pile_up():
    # more weight changes than the shared ring holds, during a pass read by a worker, then a
    # second epoch on the same persistent worker
    def make():
        return make_dataset(num_samples=6000, batch_size=4, chunk_size=64)

    ds = make()
    loader = DataLoader(ds, batch_size=4, num_workers=1, collate_fn=as_list, persistent_workers=True)
    rng = np.random.default_rng(5)
    made = []
    got = []
    for i, b in enumerate(loader):
        got.extend(b)
        if i % 5 == 0 and i < 1400:
            for _ in range(20):  # 5,600 changes in all, each 200 positions ahead
                pos = ds.set_weights(rng.dirichlet(np.ones(3)).tolist(), position=(i + 1) * 4 + 200)
                made.append(pos)
    assert len(made) > 4096
    ds.set_epoch(1)
    second = [x for b in loader for x in b]
    ref = make()
    ref.load_state_dict({**ref.state_dict(), "changes": ds.state_dict(consumed_samples=0)["changes"]})
    assert got == list(ref)
    whole = make()
    whole.load_state_dict({**whole.state_dict(), "changes": ds.state_dict(consumed_samples=0)["changes"]})
    whole.set_epoch(1)
    assert second == list(whole)
    # a checkpoint lets the main process forget the changes before it
    ds.state_dict(consumed_samples=5000)
    assert max(len(ds._changes), 0) < 4096 and min(p for p, _ in ds._changes) >= 5000


# ---- smaller ----------------------------------------------------------------------------------


def test_stats_count_what_was_served():
    ds = make_dataset()
    it = iter(ds)
    for _ in range(10):
        next(it)
    assert sum(ds.stats()["served"].values()) == 10  # was the whole scheduled chunk


def test_a_string_source_and_non_string_names_are_refused():
    with pytest.raises(TypeError, match=r"source 'a' is a str.*JsonlSource"):
        ms.MixtureDataset({"a": "corpus.jsonl"})
    with pytest.raises(TypeError, match=r"source names must be str, got 1 \(int\)"):
        ms.MixtureDataset({1: [1, 2]})


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (lambda s: s["state"].update(position="12"), TypeError, r"\['position'\] must be an int, got '12'"),
        (lambda s: s["state"].update(position=12.0), TypeError, r"\['position'\] must be an int, got 12.0"),
        (lambda s: s.update(version=99), ValueError, "version 99 is not one this mixsieve reads"),
        (
            lambda s: s["state"].update(counts=[1, -1, 0]),
            ValueError,
            r"\['counts'\]\[1\] must be an int in \[0, ",
        ),
        (lambda s: s["state"].update(weights=[1, 2]), ValueError, r"\['weights'\] must have 3 entries"),
        (lambda s: s["state"].update(carry=[1e9, 0, 0]), ValueError, "not a lag"),
        (lambda s: s["state"].update(segment_counts=[5, 5, 5]), ValueError, "segment_counts must sum"),
        (lambda s: s.update(changes=[[300, [1, 1]]]), ValueError, r"\['changes'\]\[0\]\[1\] must have 3"),
        (lambda s: s.update(changes="x"), TypeError, r"state\['changes'\] must be a list"),
        (lambda s: s["state"].update(dropped=[7]), ValueError, "names source 7"),
        (lambda s: s["state"].update(dropped=[0]), ValueError, "never drops a source"),
        (lambda s: s["state"]["counts"].__setitem__(0, s["state"]["counts"][0] + 1), ValueError, "sum to 51"),
        (lambda s: s["state"].update(weights=[0.5, 0.6, 0.1]), ValueError, "must be normalised"),
        (lambda s: s["state"].update(position=10**30), ValueError, r"\['position'\] must be an int in"),
    ],
)
def test_corrupted_states_give_clear_errors(edit, error, match):
    ds = make_dataset()
    it = iter(ds)
    for _ in range(50):
        next(it)
    state = json.loads(json.dumps(ds.state_dict()))
    edit(state)
    fresh = make_dataset()
    with pytest.raises(error, match=match):
        fresh.load_state_dict(state)
    # a rejected state leaves the dataset as it was
    assert list(fresh)[:5] == list(make_dataset())[:5]


def test_an_iterable_source_with_drop_keeps_its_items():
    ds = ms.MixtureDataset(
        {"a": list(range(50)), "g": Countdown(30, "g")}, weights=[1, 1], on_exhausted="drop", shuffle=False
    )
    got = list(ds)
    assert sorted(v for n, v in got if n == "g") == sorted(f"g{i}" for i in range(30))
    assert len(got) == 80


# ---- found in review ------------------------------------------------------------------------


def test_ranks_in_one_process_refuse_a_state_inside_a_block():
    ds = make_dataset(num_samples=None, rank=1, world_size=2, batch_size=4)
    it = iter(ds)
    for _ in range(6):
        next(it)
    with pytest.raises(ValueError, match="not a whole number of blocks"):
        ds.state_dict()
    next(it), next(it)
    assert ds.state_dict()["state"]["position"] == 16  # two whole blocks on each of 2 ranks


def test_a_data_parallel_group_of_one_survives_pickling(monkeypatch):
    # a tensor-parallel job whose data-parallel group has one rank, read by spawned workers:
    # the workers must keep (0, 1), not fall back to the launcher's RANK / WORLD_SIZE
    import pickle

    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setattr(distributed, "group_rank_world", lambda group: (0, 1))
    ds = make_dataset(num_samples=64)
    blob = pickle.dumps(ds)
    monkeypatch.setattr(distributed, "group_rank_world", lambda group: None)  # a spawned worker
    assert len(list(pickle.loads(blob))) == 64


def test_a_nested_mixture_ignores_the_ranks(monkeypatch):
    def outer():
        return ms.MixtureDataset(
            {"inner": make_dataset(num_samples=None), "extra": list(range(10))},
            weights=[3, 1],
            num_samples=400,
            shuffle=False,
            batch_size=4,
        )

    ref = list(outer())
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    blocks = [ref[i : i + 4] for i in range(0, 400, 4)]
    assert list(outer()) == [x for b in blocks[1::2] for x in b]


def test_a_checkpoint_keeps_what_the_next_pass_replays():
    ds = make_dataset(num_samples=600)
    ds.set_weights({"web": 0.0, "code": 1.0, "math": 0.0}, position=100)
    first = list(ds)
    ds.state_dict(consumed_samples=300)
    assert list(ds) == first


def test_an_update_every_step_with_a_worker_neither_stalls_nor_piles_up():
    mixer = ms.weights.OnlineMixer(["web", "code", "math"])
    ds = make_dataset(num_samples=5000, weights=mixer)
    rng = np.random.default_rng(0)
    got = []
    for b in DataLoader(ds, batch_size=1, num_workers=1, collate_fn=as_list):
        got.extend(b)
        mixer.update({"web": float(rng.random()), "code": 1.0})  # lands at the next free position
    assert len(got) == 5000
    changes = ds.state_dict(consumed_samples=0)["changes"]
    assert len(changes) <= 5000 // 8192 + 2  # one entry per position: they coalesce
    ref = make_dataset(num_samples=5000, weights=ms.weights.OnlineMixer(["web", "code", "math"]))
    ref.load_state_dict({**ref.state_dict(), "changes": changes})
    assert list(ref) == got


def test_stateful_loader_with_new_weights_is_refused_in_the_same_layout():
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    loader = sdl.StatefulDataLoader(make_dataset(), batch_size=8, num_workers=2, collate_fn=as_list)
    it = iter(loader)
    for _ in range(5):
        next(it)
    state = loader.state_dict()
    del it
    other = sdl.StatefulDataLoader(
        make_dataset(weights={"web": 1, "code": 0, "math": 0}),
        batch_size=8,
        num_workers=2,
        collate_fn=as_list,
    )
    other.load_state_dict(state)
    with pytest.raises(ValueError, match="taken with other weights"):
        next(iter(other))


def test_served_with_workers_is_counted_in_small_steps():
    ds = make_dataset(num_samples=None, batch_size=8)
    it = iter(DataLoader(ds, batch_size=8, num_workers=2, collate_fn=as_list))
    for _ in range(500):
        next(it)
    served = sum(ds.stats()["served"].values())
    # 4,000 consumed: each worker counts in steps of 1,024, and may have prefetched 2 batches
    assert 4000 - 2 * 1024 <= served <= 4000 + 2 * 1024 + 2 * 2 * 8
    del it


def test_a_thread_changing_weights_while_another_iterates():
    ds = make_dataset(num_samples=20_000, chunk_size=64)
    positions = []

    def steer():
        rng = np.random.default_rng(1)
        for _ in range(300):
            positions.append(ds.set_weights(rng.dirichlet(np.ones(3)).tolist()))
            time.sleep(0.0005)

    t = threading.Thread(target=steer)
    it = iter(ds)
    got = [next(it)]
    t.start()
    got += list(it)
    t.join()
    assert len(got) == 20_000 and len(positions) == 300
    changes = ds.state_dict(consumed_samples=0)["changes"]
    ref = make_dataset(num_samples=20_000, chunk_size=64)
    ref.load_state_dict({**ref.state_dict(), "changes": changes})
    assert list(ref) == got


def test_unordered_and_keyed_containers_are_refused_as_sources():
    with pytest.raises(TypeError, match="is a set"):
        ms.MixtureDataset({"a": {"x", "y"}})
    with pytest.raises(TypeError, match="is a dict"):
        ms.MixtureDataset({"a": {"k": "v"}})


def test_a_deep_copy_has_its_own_control_block():
    import copy

    ds = make_dataset(num_samples=100)
    cp = copy.deepcopy(ds)
    cp.set_weights({"web": 0, "code": 0, "math": 1})
    assert list(ds) == list(make_dataset(num_samples=100))
    assert {n for n, _ in cp} == {"math"}


def test_a_far_change_does_not_block_a_nearer_one():
    ds = make_dataset(num_samples=400)
    ds.set_weights({"web": 1, "code": 0, "math": 0}, position=300)
    assert ds.set_weights({"web": 0, "code": 1, "math": 0}, position=100) == 100
    names = [n for n, _ in ds]
    assert set(names[100:300]) == {"code"} and set(names[300:]) == {"web"}


def test_a_refused_position_leaves_the_iteration_intact():
    ds = make_dataset(num_samples=None, chunk_size=16)
    it = iter(ds)
    head = [next(it) for _ in range(5)]
    with pytest.raises(ValueError, match=r"position must be an int in \[0, 4611686018427387904\)"):
        ds.set_weights([1, 0, 0], position=2**63)
    ref = iter(make_dataset(num_samples=None, chunk_size=16))
    assert head + [next(it) for _ in range(50)] == [next(ref) for _ in range(55)]


def test_a_pickled_dataset_outlives_its_creator(tmp_path):
    code = (
        "import pickle, sys, mixsieve as ms\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from mixture_sources import make_dataset\n"
        "open(sys.argv[1], 'wb').write(pickle.dumps(make_dataset(num_samples=50)))\n"
    )
    blob = tmp_path / "ds.pkl"
    env = dict(os.environ, PYTHONPATH=env_path())
    subprocess.run([sys.executable, "-c", code, str(blob), str(Path(__file__).parent)], check=True, env=env)
    import pickle

    assert list(pickle.loads(blob.read_bytes())) == list(make_dataset(num_samples=50))


def test_len_stops_where_the_sources_run_out():
    for mode in ("stop", "drop"):
        ds = ms.MixtureDataset(
            {"a": list(range(100)), "b": list(range(10))}, on_exhausted=mode, num_samples=60
        )
        for epoch in range(3):
            ds.set_epoch(epoch)
            assert len(ds) == len(list(ds)), (mode, epoch)


def test_a_source_error_names_the_item_that_failed():
    def gen():
        for i in range(20):
            if i == 12:
                raise OSError("disk gone")
            yield i

    ds = ms.MixtureDataset({"r": ms.sources.IterableSource(gen)}, num_samples=40, shuffle=False)
    with pytest.raises(ms.SourceError, match=r"at item 12 of epoch 0"):
        list(ds)


@pytest.mark.parametrize(
    ("weights", "error", "match"),
    [
        ({"web": "0.5", "code": 1, "math": 1}, TypeError, r"weight of source 'web' must be a number"),
        ([True, 1, 1], TypeError, r"weight of source 'web' must be a number"),
        ({"web": None, "code": 1, "math": 1}, TypeError, r"weight of source 'web' must be a number"),
        ("abc", TypeError, "weights must be a dict"),
        ({"web": 1e308, "code": 1e308, "math": 1e-320}, None, None),
    ],
)
def test_weight_types(weights, error, match):
    if error is None:
        names = [n for n, _ in make_dataset(weights=weights, num_samples=100)]
        assert names.count("web") == 50 and names.count("code") == 50
        return
    with pytest.raises(error, match=match):
        make_dataset(weights=weights)


# ---- found in the second review -------------------------------------------------------------


def sdl_loader(ds, workers=2, **kw):
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    return sdl.StatefulDataLoader(ds, batch_size=8, num_workers=workers, collate_fn=as_list, **kw)


def test_stateful_loader_saved_right_after_a_restore_resumes_exactly():
    ref = list(make_dataset(num_samples=400))
    first_loader = sdl_loader(make_dataset(num_samples=400))
    it = iter(first_loader)
    got = [x for _ in range(5) for x in next(it)]
    state = first_loader.state_dict()
    del it
    second = sdl_loader(make_dataset(num_samples=400))
    second.load_state_dict(state)
    it = iter(second)
    got += next(it)  # one batch, then save again: workers that have not started report their state
    state = second.state_dict()
    del it
    third = sdl_loader(make_dataset(num_samples=400))
    third.load_state_dict(state)
    got += [x for b in third for x in b]
    assert got == ref


def test_stateful_loader_checkpoints_carry_weight_changes_the_workers_read():
    def make():
        return make_dataset(num_samples=800, chunk_size=64)

    ds = make()
    loader = sdl_loader(ds)
    it = iter(loader)
    got = [x for _ in range(4) for x in next(it)]
    pos = ds.set_weights({"web": 0, "code": 0, "math": 1})
    got += [x for _ in range(10) for x in next(it)]
    state = loader.state_dict()
    del it
    again = sdl_loader(make())
    again.load_state_dict(state)
    got += [x for b in again for x in b]
    ref = make()
    ref.load_state_dict({**ref.state_dict(), "changes": [[pos, [0.0, 0.0, 1.0]]]})
    assert got == list(ref)


def test_a_change_after_a_same_layout_restore_lands_beyond_the_workers():
    loader = sdl_loader(make_dataset(num_samples=800, chunk_size=64))
    it = iter(loader)
    for _ in range(10):
        next(it)
    state = loader.state_dict()
    del it
    ds = make_dataset(num_samples=800, chunk_size=64)
    again = sdl_loader(ds)
    again.load_state_dict(state)
    ds.load_state_dict(state)  # the main process learns where the workers resume
    pos = ds.set_weights({"web": 0, "code": 1, "math": 0})
    rest = [x for b in again for x in b]
    assert pos >= 80 and rest and {n for n, _ in rest[-100:]} == {"code"}


def test_a_loader_without_batching_is_seen():
    ds = make_dataset(num_samples=200, batch_size=4)
    with pytest.raises(ValueError, match="batch_size=1"):
        list(DataLoader(ds, batch_size=None, num_workers=0))
    ref = list(make_dataset(num_samples=200))
    ds = make_dataset(num_samples=200)
    it = iter(DataLoader(ds, batch_size=None, num_workers=2))
    first = [tuple(next(it)) for _ in range(50)]
    del it
    again = make_dataset(num_samples=200)
    again.load_state_dict(ds.state_dict(consumed_samples=50))
    assert first + [tuple(x) for x in DataLoader(again, batch_size=None, num_workers=2)] == [
        tuple(x) for x in ref
    ]


def test_served_counts_an_early_break_in_process():
    ds = make_dataset(num_samples=None)
    for i, _ in enumerate(ds):
        if i == 100:
            break
    assert sum(ds.stats()["served"].values()) == 101


def test_an_epoch_before_the_last_checkpoint_is_refused_not_served_without_its_changes():
    # after state_dict(consumed_samples=...) drops the changes before the checkpoint, going back
    # to epoch 0 (whose stream needs them) is refused instead of serving another stream
    ds = ms.MixtureDataset(
        {"a": list(range(1000)), "b": list(range(1000))},
        weights={"a": 1, "b": 1},
        num_samples=100,
        chunk_size=8,
    )
    ds.set_weights({"a": 1, "b": 0}, position=16)
    list(ds)
    ds.set_epoch(1)
    it = iter(ds)
    for _ in range(50):
        next(it)
    ds.state_dict(consumed_samples=150)
    with pytest.raises(ValueError, match="checkpoints move forward"):
        ds.set_epoch(0)
