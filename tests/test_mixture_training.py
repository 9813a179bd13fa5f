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
from mixture_sources import Countdown, make_dataset  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning"),
    pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning"),
]


def as_list(batch):
    return batch


# ---- resume when the DataLoader's batch size is not the dataset's --------------------------


def take_batches(loader, n):
    it = iter(loader)
    out = [x for _ in range(n) for x in next(it)]
    del it
    return out


def test_consumed_samples_with_workers_needs_the_loaders_batch_size():
    # 2 workers, DataLoader batches of 32, dataset batch_size left unset: the 672 samples of 21
    # batches are not the first 672 positions, so a state from consumed_samples would lose and
    # repeat samples (31 each here, before); it is refused, saying what to set
    ds = make_dataset(num_samples=3200)
    first = take_batches(DataLoader(ds, batch_size=32, num_workers=2, collate_fn=as_list), 21)
    with pytest.raises(ValueError, match=r"batch_size=<the DataLoader's batch_size>"):
        ds.state_dict(consumed_samples=len(first))
    # with batch_size set to the loader's, the same checkpoint is exact
    ref = list(make_dataset(num_samples=3200))
    ds = make_dataset(num_samples=3200, batch_size=32)
    first = take_batches(DataLoader(ds, batch_size=32, num_workers=2, collate_fn=as_list), 21)
    state = ds.state_dict(consumed_samples=len(first))
    again = make_dataset(num_samples=3200, batch_size=32)
    again.load_state_dict(state)
    rest = [x for b in DataLoader(again, batch_size=32, num_workers=2, collate_fn=as_list) for x in b]
    assert first + rest == ref


def test_stateful_loader_with_another_batch_size_resumes_exactly_or_refuses():
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    ref = sorted(make_dataset(num_samples=3200))

    def loader(workers):
        return sdl.StatefulDataLoader(
            make_dataset(num_samples=3200), batch_size=32, num_workers=workers, collate_fn=as_list
        )

    first_loader = loader(2)
    it = iter(first_loader)
    first = [x for _ in range(21) for x in next(it)]
    state = first_loader.state_dict()
    del it
    # the same layout: every worker continues from its own state, nothing lost or repeated
    again = loader(2)
    again.load_state_dict(state)
    rest = [x for b in again for x in b]
    assert sorted(first + rest) == ref
    # another layout cannot continue a non-prefix exactly: refused, saying what to do
    ds = make_dataset(num_samples=3200)
    ds.load_state_dict(state)
    with pytest.raises(ValueError, match="same num_workers"):
        list(DataLoader(ds, batch_size=32, num_workers=1, collate_fn=as_list))


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
            r"\['counts'\]\[1\] must be an int >= 0",
        ),
        (lambda s: s["state"].update(weights=[1, 2]), ValueError, r"\['weights'\] must have 3 entries"),
        (lambda s: s["state"].update(carry=[1e9, 0, 0]), ValueError, "not a lag"),
        (lambda s: s["state"].update(segment_counts=[5, 5, 5]), ValueError, "segment_counts must sum"),
        (lambda s: s.update(changes=[[300, [1, 1]]]), ValueError, r"\['changes'\]\[0\]\[1\] must have 3"),
        (lambda s: s.update(changes="x"), TypeError, r"state\['changes'\] must be a list"),
        (lambda s: s["state"].update(dropped=[7]), ValueError, "names source 7"),
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
