"""ParquetSource serves the rows of Parquet files (dicts equal to the concatenated tables'
to_pylist) across files and row groups; it reads only the row groups it serves (counted by
wrapping ParquetFile.read_row_group), one read per group in a batch, keeps a byte-bounded cache,
reads only the length column in item_lengths, pickles without data and reopens files in forked
workers."""

import os
import pickle

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from mixsieve.sources import ArrowSource, ParquetSource  # noqa: E402


def write(tmp_path, sizes=(5, 0, 7, 3), group=2, name="part"):
    """Files of ``sizes`` rows (an empty one included), ``group`` rows per row group; returns
    the paths and all rows in order."""
    paths, tables = [], []
    at = 0
    for k, n in enumerate(sizes):
        ids = list(range(at, at + n))
        t = pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "text": pa.array([f"doc {i}" for i in ids], pa.string()),
                "n_tokens": pa.array([i % 5 for i in ids], pa.int32()),
            }
        )
        path = tmp_path / f"{name}-{k}.parquet"
        pq.write_table(t, path, row_group_size=group)
        paths.append(path)
        tables.append(t)
        at += n
    return paths, pa.concat_tables(tables).to_pylist()


@pytest.fixture
def reads(monkeypatch):
    """(row group, columns) of every row group read."""
    log = []
    original = pq.ParquetFile.read_row_group

    def counted(self, i, columns=None, **kw):
        log.append((i, columns))
        return original(self, i, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted)
    return log


def test_rows_across_files_and_row_groups(tmp_path):
    paths, rows = write(tmp_path)
    src = ParquetSource(tmp_path)  # a directory: every *.parquet below, sorted
    assert len(src) == 15 and src.paths == [str(p) for p in paths]
    assert [src[i] for i in range(15)] == rows
    assert src[-1] == rows[-1] and src[-15] == rows[0]
    ids = [14, 0, 7, 7, 3, -2, 9]
    assert src.__getitems__(ids) == [rows[i] for i in ids]
    assert src.__getitems__([]) == []
    glob_src = ParquetSource(str(tmp_path / "part-[23].parquet"))
    assert len(glob_src) == 10 and glob_src[0] == rows[5]


def test_columns_and_missing_columns(tmp_path):
    paths, rows = write(tmp_path)
    src = ParquetSource([paths[0], paths[2]], columns=["text"])
    assert src[6] == {"text": rows[6]["text"]}
    with pytest.raises(ValueError, match="no column 'nope'"):
        ParquetSource(paths, columns=["text", "nope"])


def test_indexing_errors(tmp_path):
    write(tmp_path)
    src = ParquetSource(tmp_path)
    for bad in (15, -16):
        with pytest.raises(IndexError):
            src[bad]
        with pytest.raises(IndexError):
            src.__getitems__([0, bad])
    for bad in (0.0, "1", None):
        with pytest.raises(TypeError):
            src[bad]
        with pytest.raises(TypeError):
            src.__getitems__([bad])


def test_opening_reads_no_row_group_and_an_item_reads_only_its_own(tmp_path, reads):
    write(tmp_path)
    src = ParquetSource(tmp_path, columns=["id"])
    assert reads == []
    assert src[8] == {"id": 8}  # file 2 (rows 5..11), its row group 1 (rows 7, 8)
    assert reads == [(1, ["id"])]
    src[7]
    assert len(reads) == 1  # the same group, cached


def test_a_batch_reads_each_group_once(tmp_path, reads):
    paths, rows = write(tmp_path)
    src = ParquetSource(tmp_path, cache_bytes=0)  # no cache to hide a second read
    ids = [0, 1, 12, 13, 0, 5, 6, 14, 1]  # file 0 group 0; file 3 groups 0, 1; file 2 group 0
    assert src.__getitems__(ids) == [rows[i] for i in ids]
    assert len(reads) == 4


def test_cache_is_bounded_by_bytes_and_keeps_at_least_one_group(tmp_path, reads):
    write(tmp_path)
    src = ParquetSource(tmp_path, cache_bytes=0)
    src[0], src[1]
    assert len(reads) == 1  # the last group stays
    src[2], src[0]
    assert len(reads) == 3 and len(src._cache) == 1
    big = ParquetSource(tmp_path)
    for i in range(15):
        big[i]
    for i in range(15):
        big[i]
    assert len(reads) == 3 + 9  # 9 non-empty row groups (3 + 4 + 2), each read once
    with pytest.raises(ValueError, match="cache_bytes"):
        ParquetSource(tmp_path, cache_bytes=-1)


def test_item_lengths_reads_only_that_column(tmp_path, monkeypatch):
    paths, rows = write(tmp_path)
    asked = []
    original = pq.ParquetFile.read

    def read(self, columns=None, **kw):
        asked.append(columns)
        return original(self, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read", read)
    src = ParquetSource(tmp_path, columns=["text"])
    got = src.item_lengths("n_tokens")
    assert got.dtype == np.int64 and got.shape == (15,)
    assert got.tolist() == [r["n_tokens"] for r in rows]
    assert asked and all(c == ["n_tokens"] for c in asked)


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        (None, None, "give the column holding each row's token count"),
        ("absent", None, "no column 'absent'"),
        ("n", pa.array([1.5, 2.0]), "not integers"),
        ("n", pa.array([1, None], pa.int32()), "nulls"),
        ("n", pa.array([3, -1], pa.int64()), "negative at row 1"),
    ],
)
def test_item_lengths_refuses_a_bad_column_by_name(tmp_path, column, values, message):
    t = pa.table({"text": ["x", "y"]})
    if values is not None:
        t = t.append_column("n", values)
    pq.write_table(t, tmp_path / "a.parquet")
    with pytest.raises(ValueError, match=message) as err:
        ParquetSource(tmp_path).item_lengths(column)
    assert "ParquetSource" in str(err.value)
    if column is not None:
        assert repr(column) in str(err.value) and "a.parquet" in str(err.value)


def test_not_parquet_and_nothing_found(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="bad.parquet"):
        ParquetSource(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="no Parquet files"):
        ParquetSource(tmp_path / "sub")
    with pytest.raises(FileNotFoundError):
        ParquetSource(tmp_path / "none-*.parquet")


def test_pickle_size_does_not_grow_with_the_data(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "l").mkdir()
    write(tmp_path / "s", sizes=(4,), group=2)
    _, rows = write(tmp_path / "l", sizes=(4000,), group=10)
    small = ParquetSource(tmp_path / "s")
    large = ParquetSource(tmp_path / "l")
    large.__getitems__(list(range(0, 4000, 7)))  # fill its cache
    assert abs(len(pickle.dumps(small)) - len(pickle.dumps(large))) <= 8
    copy = pickle.loads(pickle.dumps(large))
    assert copy._cache == {} and copy[3999] == rows[3999]


def test_unpickling_after_the_row_count_changed_is_refused(tmp_path):
    write(tmp_path, sizes=(4,))
    blob = pickle.dumps(ParquetSource(tmp_path))
    write(tmp_path, sizes=(5,))
    with pytest.raises(ValueError, match="changed .size or modification time.|5 rows, 4 when"):
        pickle.loads(blob)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_opens_its_own_files_and_cache(tmp_path):
    _, rows = write(tmp_path)
    src = ParquetSource(tmp_path)
    src[0]
    parent_cache = src._cache
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        ok = src[9] == rows[9] and src._cache is not parent_cache and 0 not in src._cache
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"
    assert src._cache is parent_cache


def test_repr_is_short(tmp_path):
    write(tmp_path)
    assert repr(ParquetSource(tmp_path)) == "ParquetSource(4 files, 15 rows)"


def test_mixture_with_spawned_workers_serves_the_rows_it_serves_in_process(tmp_path):
    torch = pytest.importorskip("torch")
    import mixsieve as ms

    _, rows = write(tmp_path)
    src = ParquetSource(tmp_path)

    def mixture():
        return ms.MixtureDataset({"pq": src, "ids": list(range(100))}, seed=3, num_samples=40, batch_size=4)

    here = list(mixture())
    assert sum(name == "pq" for name, _ in here) > 10
    assert all(row in rows for name, row in here if name == "pq")
    loader = torch.utils.data.DataLoader(
        mixture(), batch_size=4, num_workers=2, multiprocessing_context="spawn", collate_fn=list
    )
    assert [x for batch in loader for x in batch] == here


def test_a_file_changed_under_a_pickled_or_open_source_is_named(tmp_path):
    import os
    import pickle
    import time

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"x": list(range(100))}), path, row_group_size=10)
    src = ParquetSource(path)
    blob = pickle.dumps(src)
    time.sleep(0.01)
    pq.write_table(pa.table({"x": list(range(100, 200))}), path, row_group_size=10)  # same rows, new bytes
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(ValueError, match="changed"):
        pickle.loads(blob)
    with open(path, "r+b") as fh:  # truncated under the open source
        fh.truncate(40)
    with pytest.raises(ValueError, match="cannot be read|changed"):
        src[55]


def test_bool_indices_are_refused():
    src = ArrowSource(pa.table({"x": [1, 2, 3]}))
    with pytest.raises(TypeError, match="bool"):
        src[True]


def test_files_with_other_columns_are_refused_unless_columns_are_chosen(tmp_path):
    pq.write_table(pa.table({"text": ["a"], "n": [1]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"other": [2]}), tmp_path / "b.parquet")
    with pytest.raises(ValueError, match="rows of one source should look alike"):
        ParquetSource(tmp_path)
    pq.write_table(pa.table({"text": ["b"], "n": [2], "extra": [0]}), tmp_path / "b.parquet")
    src = ParquetSource(tmp_path, columns=["text", "n"])
    assert [src[i] for i in range(2)] == [{"text": "a", "n": 1}, {"text": "b", "n": 2}]
