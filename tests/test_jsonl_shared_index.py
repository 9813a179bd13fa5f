"""JsonlSource keeps one line index per source in a shared, memory-mapped file: pickles carry its
path (small whatever the line count), copies map the same file, spawned DataLoader workers read
the same items, only the creating process removes the file (after del + gc; not a forked child,
not a copy), and a copy whose file is gone indexes the lines again."""

import gc
import os
import pickle
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from mixsieve import sources
from mixsieve.sources import JsonlSource


def write_lines(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(f'{{"text": "line {i}"}}\n')
            if i % 1000 == 0:
                f.write("\n")  # blank lines are skipped
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return write_lines(tmp_path_factory.mktemp("jsonl") / "big.jsonl", 200_000)


def test_index_is_one_shared_file_and_pickles_small(big):
    src = JsonlSource(big)
    assert len(src) == 200_000
    path = src._index_path
    expected_dir = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    assert os.path.dirname(path) == expected_dir
    assert os.path.getsize(path) == 200_000 * 28
    blob = pickle.dumps(src)
    assert len(blob) < 4096, len(blob)
    copy = pickle.loads(blob)
    assert isinstance(copy._index, np.memmap) and os.path.samefile(copy._index.filename, path)
    for i in (0, 1, 999, 1000, 123_456, -1):
        assert copy[i] == src[i]
    assert src[-1] == "line 199999" and src[1001] == "line 1001"


def test_file_is_removed_after_del_and_gc_by_its_creator_only(tmp_path):
    src = JsonlSource(write_lines(tmp_path / "a.jsonl", 50))
    path = src._index_path
    copy = pickle.loads(pickle.dumps(src))
    del copy
    gc.collect()
    assert os.path.exists(path)  # a copy never removes it
    del src
    gc.collect()
    assert not os.path.exists(path)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_never_removes_the_file(tmp_path):
    src = JsonlSource(write_lines(tmp_path / "a.jsonl", 50))
    path = src._index_path
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only drops its copy
        ok = src[3] == "line 3"
        del src
        gc.collect()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.path.exists(path)
    assert src[4] == "line 4"


def test_a_copy_whose_file_is_gone_indexes_again(tmp_path):
    src = JsonlSource(write_lines(tmp_path / "a.jsonl", 50))
    blob = pickle.dumps(src)
    os.unlink(src._index_path)
    copy = pickle.loads(blob)
    assert [copy[i] for i in range(len(copy))] == [f"line {i}" for i in range(50)]
    assert not isinstance(copy._index, np.memmap)  # in memory: no file that no one would remove


def test_a_copy_whose_lines_changed_is_refused(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", 50)
    src = JsonlSource(path)
    blob = pickle.dumps(src)
    os.unlink(src._index_path)
    write_lines(path, 60)
    with pytest.raises(ValueError, match="60 lines, 50 when"):
        pickle.loads(blob)


def test_tempdir_when_shared_memory_is_not_writable(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_SHM", str(tmp_path / "no-shm"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    src = JsonlSource(write_lines(tmp_path / "a.jsonl", 5))
    assert os.path.dirname(src._index_path) == str(tmp_path)
    assert src[2] == "line 2"


def test_empty_file_needs_no_index_file(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n\n")
    src = JsonlSource(tmp_path / "e.jsonl")
    assert len(src) == 0 and src._index_path is None
    assert len(pickle.loads(pickle.dumps(src))) == 0


def test_spawned_dataloader_workers_read_the_same_items(tmp_path):
    torch = pytest.importorskip("torch")
    src = JsonlSource(write_lines(tmp_path / "a.jsonl", 300))
    loader = torch.utils.data.DataLoader(
        src, batch_size=None, num_workers=2, multiprocessing_context="spawn", shuffle=False
    )
    assert list(loader) == [src[i] for i in range(300)]
    assert os.path.exists(src._index_path)  # the workers ended without removing it


def test_a_directory_that_refuses_the_file_passes_to_the_next(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_index_dirs", lambda: [str(tmp_path / "missing"), str(tmp_path)])
    src = JsonlSource(write_lines(tmp_path / "a.jsonl", 5))
    assert os.path.dirname(src._index_path) == str(tmp_path)
    monkeypatch.setattr(sources, "_index_dirs", lambda: [str(tmp_path / "missing")])
    alone = JsonlSource(tmp_path / "a.jsonl")  # no directory takes it: kept in memory
    assert alone._index_path is None and alone[4] == "line 4"
    copy = pickle.loads(pickle.dumps(alone))
    assert [copy[i] for i in range(5)] == [alone[i] for i in range(5)]


def test_a_killed_makers_index_is_swept_by_the_next_maker(tmp_path, monkeypatch):
    # the maker dies without running its finalizer (SIGKILL): its file stays, unlocked; the next
    # source made removes it once it is a minute old, and leaves files still in use alone
    monkeypatch.setattr(sources, "_index_dirs", lambda: [str(tmp_path)])
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "x"}\n' * 10)
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); import mixsieve.sources as s; "
        "s._index_dirs = lambda: [sys.argv[2]]; src = s.JsonlSource(sys.argv[3]); "
        "print(src._index_path, flush=True); os._exit(0)"
    )
    root = os.path.join(os.path.dirname(sources.__file__), "..")
    out = subprocess.run(
        [sys.executable, "-c", code, root, str(tmp_path), str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = out.stdout.strip()
    assert os.path.exists(stale)
    live = sources.JsonlSource(path)  # in use: holds its lock
    old = time.time() - 120
    os.utime(stale, (old, old))
    os.utime(live._index_path, (old, old))
    again = sources.JsonlSource(path)
    assert not os.path.exists(stale)
    assert os.path.exists(live._index_path) and os.path.exists(again._index_path)
    assert live[3] == again[3] == "x"
