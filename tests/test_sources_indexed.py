"""IndexedTokenSource reads Megatron-core MMIDIDX pairs (.bin/.idx): items equal the sequences a
writer following the published layout wrote, for every token dtype code; every header field and
array is checked (ValueError naming the file and field); truncations at every byte and random
byte flips of an index give a ValueError or a valid read, never another exception; pickles
carry the prefix only and workers map the files themselves."""

import os
import pickle
import random
import struct

import numpy as np
import pytest
from mixsieve.sources import IndexedTokenSource

# Megatron-core DType codes (megatron/core/datasets/indexed_dataset.py)
CODES = {
    np.uint8: 1,
    np.int8: 2,
    np.int16: 3,
    np.int32: 4,
    np.int64: 5,
    np.float64: 6,
    np.float32: 7,
    np.uint16: 8,
}


def write_pair(prefix, seqs, dtype=np.uint16, documents=None, *, version=1, code=None, magic=None):
    """The published layout: magic, <Q version, <B dtype code, <Q sequence count, <Q document
    count, int32 lengths, int64 byte pointers (contiguous from 0), int64 document indices."""
    seqs = [np.asarray(s, dtype=dtype) for s in seqs]
    lengths = np.array([s.size for s in seqs], dtype=np.int32)
    itemsize = np.dtype(dtype).itemsize
    pointers = np.concatenate(([0], np.cumsum(lengths[:-1], dtype=np.int64) * itemsize)).astype(np.int64)
    pointers = pointers[: len(seqs)]
    if documents is None:
        documents = [0, len(seqs)]
    documents = np.asarray(documents, dtype=np.int64)
    with open(f"{prefix}.bin", "wb") as f:
        for s in seqs:
            f.write(s.tobytes())
    header = (magic if magic is not None else b"MMIDIDX\x00\x00") + struct.pack(
        "<QBQQ", version, CODES[dtype] if code is None else code, len(seqs), documents.size
    )
    with open(f"{prefix}.idx", "wb") as f:
        f.write(header + lengths.tobytes() + pointers.tobytes() + documents.tobytes())
    return seqs


def random_seqs(rng, n, dtype):
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    out = []
    for _ in range(n):
        size = int(rng.integers(0, 20))
        if info is not None:
            out.append(rng.integers(info.min, info.max, size=size, dtype=dtype, endpoint=True))
        else:
            out.append(rng.standard_normal(size).astype(dtype))
    return out


@pytest.mark.parametrize("dtype", list(CODES))
def test_items_are_the_written_sequences_for_every_dtype_code(tmp_path, dtype):
    rng = np.random.default_rng(CODES[dtype])
    seqs = write_pair(tmp_path / "d", random_seqs(rng, 50, dtype), dtype, documents=[0, 10, 10, 50])
    src = IndexedTokenSource(tmp_path / "d")
    assert len(src) == 50
    assert src.dtype == np.dtype(dtype)
    for i, s in enumerate(seqs):
        got = src[i]
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, s)
        assert not got.flags.writeable
    np.testing.assert_array_equal(src[-1], seqs[-1])
    batch = src.__getitems__([3, -1, 3, 0])
    for got, j in zip(batch, [3, 49, 3, 0]):
        np.testing.assert_array_equal(got, seqs[j])
    lengths = src.item_lengths()
    assert lengths.dtype == np.int64 and lengths.shape == (50,)
    assert lengths.tolist() == [s.size for s in seqs]
    assert src.document_indices.tolist() == [0, 10, 10, 50]
    assert src.sequence_lengths.tolist() == lengths.tolist()


def test_items_are_views_of_the_bin_file_not_copies(tmp_path):
    write_pair(tmp_path / "d", [[1, 2, 3], [4, 5]])
    src = IndexedTokenSource(str(tmp_path / "d"))
    item = src[1]
    assert item.base is not None and not item.flags.owndata


def test_indexing_errors(tmp_path):
    write_pair(tmp_path / "d", [[1], [2], [3]])
    src = IndexedTokenSource(tmp_path / "d")
    for bad in (3, -4, 10**20):
        with pytest.raises(IndexError):
            src[bad]
        with pytest.raises(IndexError):
            src.__getitems__([0, bad])
    for bad in (1.0, "1", None):
        with pytest.raises(TypeError):
            src[bad]
        with pytest.raises(TypeError):
            src.__getitems__([0, bad])
    assert src[np.int64(-3)].tolist() == [1]
    assert src.__getitems__([]) == []
    with pytest.raises(ValueError, match="no columns"):
        src.item_lengths("n_tokens")


def test_item_lengths_reads_only_the_index(tmp_path):
    write_pair(tmp_path / "d", [[1, 2], [3, 4, 5]])
    src = IndexedTokenSource(tmp_path / "d")
    with open(tmp_path / "d.bin", "r+b") as f:  # same size, other bytes: lengths cannot change
        f.write(b"\xff" * 10)
    assert src.item_lengths().tolist() == [2, 3]


def test_empty_dataset_and_empty_sequences(tmp_path):
    write_pair(tmp_path / "e", [], documents=[0])
    src = IndexedTokenSource(tmp_path / "e")
    assert len(src) == 0 and src.item_lengths().tolist() == []
    write_pair(tmp_path / "z", [[], []])
    src = IndexedTokenSource(tmp_path / "z")
    assert [s.tolist() for s in src.__getitems__([0, 1])] == [[], []]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.__setitem__(slice(0, 9), b"MMIDIDX\x00\x01"), "magic"),
        (lambda d: d.__setitem__(slice(9, 17), struct.pack("<Q", 2)), "version"),
        (lambda d: d.__setitem__(17, 9), "dtype code"),
        (lambda d: d.__setitem__(17, 0), "dtype code"),
        (lambda d: d.__setitem__(slice(18, 26), struct.pack("<Q", 4)), "sequence count"),
        (lambda d: d.__setitem__(slice(26, 34), struct.pack("<Q", 1)), "document count"),
        (lambda d: d.extend(b"\x00"), "size"),
        (lambda d: d.__setitem__(slice(34, 38), struct.pack("<i", -1)), "sequence_lengths"),
        (lambda d: d.__setitem__(slice(42, 46), struct.pack("<i", 4)), "past the end"),
        (lambda d: d.__setitem__(slice(46, 54), struct.pack("<q", -2)), "sequence_pointers"),
        (lambda d: d.__setitem__(slice(54, 62), struct.pack("<q", 2)), "sequence_pointers"),  # overlaps 0
        (lambda d: d.__setitem__(slice(54, 62), struct.pack("<q", 1 << 62)), "sequence_pointers"),
        (lambda d: d.__setitem__(slice(70, 78), struct.pack("<q", 4)), "document_indices"),
        (lambda d: d.__setitem__(slice(70, 78), struct.pack("<q", -1)), "document_indices"),
        (lambda d: d.__setitem__(slice(86, 94), struct.pack("<q", 0)), "document_indices"),  # decreasing
    ],
)
def test_each_field_is_checked(tmp_path, change, field):
    # three uint16 sequences of 2, 1, 3 tokens: lengths at 34, pointers at 46, documents at 70
    write_pair(tmp_path / "d", [[1, 2], [3], [4, 5, 6]], documents=[0, 1, 3])
    IndexedTokenSource(tmp_path / "d")  # valid as written
    data = bytearray((tmp_path / "d.idx").read_bytes())
    change(data)
    (tmp_path / "d.idx").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=field) as err:
        IndexedTokenSource(tmp_path / "d")
    assert "d.idx" in str(err.value)


def test_multimodal_index_is_refused_by_name(tmp_path):
    write_pair(tmp_path / "d", [[1, 2], [3]])
    with open(tmp_path / "d.idx", "ab") as f:
        f.write(b"\x00\x00")  # one sequence mode per sequence
    with pytest.raises(ValueError, match="multimodal"):
        IndexedTokenSource(tmp_path / "d")


def test_bin_shorter_than_the_index_says(tmp_path):
    write_pair(tmp_path / "d", [[1, 2], [3, 4]])
    with open(tmp_path / "d.bin", "r+b") as f:
        f.truncate(6)
    with pytest.raises(ValueError, match="past the end of the .bin"):
        IndexedTokenSource(tmp_path / "d")


def read_all(prefix):
    """None if the pair was refused with ValueError, else every item (must not raise)."""
    try:
        src = IndexedTokenSource(prefix)
    except ValueError:
        return None
    items = [src[i].tolist() for i in range(len(src))]
    assert src.item_lengths().tolist() == [len(x) for x in items]
    return items


def test_truncation_at_every_byte_is_a_value_error(tmp_path):
    write_pair(tmp_path / "d", [[1, 2], [3], [4, 5, 6]], documents=[0, 1, 3])
    whole = (tmp_path / "d.idx").read_bytes()
    assert read_all(tmp_path / "d") == [[1, 2], [3], [4, 5, 6]]
    for cut in range(len(whole)):
        (tmp_path / "d.idx").write_bytes(whole[:cut])
        assert read_all(tmp_path / "d") is None, cut


def test_random_byte_flips_give_a_value_error_or_a_valid_read(tmp_path):
    rng = random.Random(5)
    write_pair(tmp_path / "d", [[1, 2], [3], [4, 5, 6], []], documents=[0, 2, 4])
    whole = (tmp_path / "d.idx").read_bytes()
    outcomes = {"refused": 0, "read": 0}
    for _ in range(3000):
        data = bytearray(whole)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        (tmp_path / "d.idx").write_bytes(bytes(data))
        outcomes["read" if read_all(tmp_path / "d") is not None else "refused"] += 1
    assert outcomes["refused"] > 100 and outcomes["read"] > 0, outcomes  # both paths ran


def test_pickle_carries_the_prefix_only(tmp_path):
    rng = np.random.default_rng(0)
    small = write_pair(tmp_path / "small", random_seqs(rng, 10, np.uint16))
    write_pair(tmp_path / "large", random_seqs(rng, 20000, np.uint16))
    sizes = []
    for name in ("small", "large"):
        blob = pickle.dumps(IndexedTokenSource(tmp_path / name))
        sizes.append(len(blob))
    assert sizes[1] - sizes[0] <= 8 and sizes[1] < 1024, sizes  # the prefix's length differs
    copy = pickle.loads(pickle.dumps(IndexedTokenSource(tmp_path / "small")))
    for i, s in enumerate(small):
        np.testing.assert_array_equal(copy[i], s)


def test_unpickling_after_the_files_changed_is_refused(tmp_path):
    write_pair(tmp_path / "d", [[1, 2], [3]])
    blob = pickle.dumps(IndexedTokenSource(tmp_path / "d"))
    write_pair(tmp_path / "d", [[1, 2], [3], [4]])
    with pytest.raises(ValueError, match="changed"):
        pickle.loads(blob)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_maps_the_files_itself(tmp_path):
    write_pair(tmp_path / "d", [[1, 2], [3]])
    src = IndexedTokenSource(tmp_path / "d")
    parent_map = src._bin
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        ok = src[0].tolist() == [1, 2] and src._bin is not parent_map
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"
    assert src._bin is parent_map


def test_repr_is_short(tmp_path):
    write_pair(tmp_path / "d", [[1, 2], [3]])
    assert repr(IndexedTokenSource(tmp_path / "d")).endswith("2 sequences of uint16)")


def test_mixture_with_spawned_workers_serves_the_sequences_it_serves_in_process(tmp_path):
    torch = pytest.importorskip("torch")
    import mixsieve as ms

    seqs = write_pair(tmp_path / "d", random_seqs(np.random.default_rng(1), 30, np.int32))
    src = IndexedTokenSource(tmp_path / "d")

    def mixture():
        return ms.MixtureDataset({"tok": src, "ids": list(range(100))}, seed=3, num_samples=40, batch_size=4)

    def plain(stream):
        return [(name, x.tolist() if name == "tok" else x) for name, x in stream]

    here = plain(mixture())
    assert sum(name == "tok" for name, _ in here) > 10
    assert all(x in [s.tolist() for s in seqs] for name, x in here if name == "tok")
    loader = torch.utils.data.DataLoader(
        mixture(), batch_size=4, num_workers=2, multiprocessing_context="spawn", collate_fn=list
    )
    assert plain(x for batch in loader for x in batch) == here


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.int32, np.int64, np.float64, np.float32, np.uint16]
)
def test_writer_writes_the_published_layout_byte_for_byte(tmp_path, dtype):
    rng = np.random.default_rng(4)
    seqs = random_seqs(rng, 40, dtype)
    ours = IndexedTokenSource.write(tmp_path / "ours", seqs, dtype=dtype, documents=[0, 7, 20])
    write_pair(str(tmp_path / "theirs"), seqs, dtype, documents=[0, 7, 20, 40])
    for ext in (".bin", ".idx"):
        assert (tmp_path / ("ours" + ext)).read_bytes() == (tmp_path / ("theirs" + ext)).read_bytes()
    assert [ours[i].tolist() for i in range(len(ours))] == [np.asarray(s, dtype).tolist() for s in seqs]


def test_writer_refuses_what_the_format_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="cannot hold"):
        IndexedTokenSource.write(tmp_path / "a", [[70000]], dtype=np.uint16)
    with pytest.raises(ValueError, match="not a Megatron token dtype"):
        IndexedTokenSource.write(tmp_path / "b", [[1]], dtype=np.uint32)
    with pytest.raises(ValueError, match="1-D"):
        IndexedTokenSource.write(tmp_path / "c", [[[1, 2]]])


def test_writer_replaces_a_pair_in_use_without_disturbing_its_readers(tmp_path):
    # written under temporary names, renamed into place: an open source keeps its old files
    old = IndexedTokenSource.write(tmp_path / "p", [np.arange(1000) % 7 for _ in range(10)])
    view = old[9]
    new = IndexedTokenSource.write(tmp_path / "p", [np.arange(10)])
    assert len(old) == 10 and view.tolist() == (np.arange(1000) % 7).tolist() and old[3].sum() == view.sum()
    assert len(new) == 1 and new[0].tolist() == list(range(10))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.bin", "p.idx"]


def test_writer_errors_leave_no_files(tmp_path):
    def broken():
        yield [1, 2]
        raise RuntimeError("the tokenizer failed")

    with pytest.raises(RuntimeError):
        IndexedTokenSource.write(tmp_path / "g", broken())
    with pytest.raises(ValueError, match="fractional"):
        IndexedTokenSource.write(tmp_path / "f", [np.array([1.5, 2.0])])
    with pytest.raises(ValueError, match="start at 0"):
        IndexedTokenSource.write(tmp_path / "d", [[1], [2]], documents=[1])
    with pytest.raises(ValueError, match="there are 2"):
        IndexedTokenSource.write(tmp_path / "e", [[1], [2]], documents=[0, 5])
    assert list(tmp_path.iterdir()) == []
