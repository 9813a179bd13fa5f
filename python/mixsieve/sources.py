"""Data sources and per-source filters for :class:`mixsieve.MixtureDataset`.

Any object with ``__len__`` and ``__getitem__`` (a list, a numpy array, a Hugging Face
``Dataset``, a :class:`JsonlSource`) is a *map-style* source: each worker reads only the items
it serves, shuffling costs O(1) memory and resume is O(1). Anything else iterable is an
*iterable* source: it is read in full by every worker (each keeps its own share), shuffled
through a seeded buffer and replayed on resume; pass a function that returns a fresh iterator
if the source must be read more than once (``on_exhausted="cycle"``).

Map-style sources on disk or in memory: :class:`JsonlSource` (JSON lines),
:class:`ParquetSource` and :class:`ArrowSource` (rows as dicts; need pyarrow) and
:class:`IndexedTokenSource` (Megatron ``.bin``/``.idx`` token sequences). Each takes batched
reads (``__getitems__``), pickles without its data for spawned DataLoader workers, and reopens
its files in a forked one; all but JsonlSource give per-item token counts (``item_lengths``).
See docs/sources.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import mmap
import operator
import os
import struct
import tempfile
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable

import numpy as np

from . import _core

__all__ = [
    "ArrowSource",
    "IndexedTokenSource",
    "IterableSource",
    "JsonlSource",
    "NearDupFilter",
    "ParquetSource",
]


class JsonlSource:
    """Lines of JSONL files as a map-style source (random access by file and byte range).

    Opening indexes each line's byte range (28 bytes per line, one vectorised pass); item ``i``
    is then read from its byte range alone, so each DataLoader worker touches only the lines it
    serves. Blank lines are skipped. Files are read through ``mmap``; gzip is not supported
    (random access needs plain files).

    The line index is one file, in ``/dev/shm`` when it is writable, else in
    :func:`tempfile.gettempdir`, mapped read-only: a pickled source (a spawned DataLoader
    worker's copy) carries its path, not the index, and maps the same file, so the workers share
    one copy. The process that made the source removes the file when the source is garbage
    collected; a copy whose file is gone indexes the lines again, in memory.

    Parameters
    ----------
    paths : str, path, or a sequence of them
        Files, directories (every ``*.jsonl`` / ``*.json`` below, sorted) or glob patterns.
    text_field : str or None
        Return this field of each record (a ``ValueError`` naming ``file:line`` if it is
        missing); ``None`` returns the whole decoded record.

    >>> import mixsieve as ms, tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "a.jsonl")
    >>> with open(p, "w") as f:
    ...     _ = f.write('{"text": "first"}\\n\\n{"text": "second"}\\n')
    >>> src = ms.sources.JsonlSource(p)
    >>> len(src), src[1]
    (2, 'second')
    """

    def __init__(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        text_field: str | None = "text",
    ):
        self.paths = _expand(paths, (".jsonl", ".json"))
        if not self.paths:
            raise ValueError(f"no JSONL files found in {paths!r}")
        self.text_field = text_field
        index = _scan_lines(self.paths)
        self._n = int(index.shape[0])
        self._index_path, self._index, lock = share_array(index, "jsonl")
        if self._index_path is not None:
            # only this process removes the file: a forked child runs this finalizer too
            weakref.finalize(self, release_shared, self._index_path, lock, os.getpid())
        self._maps: dict[int, mmap.mmap] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self._n

    def _map(self, f: int) -> mmap.mmap:
        if self._pid != os.getpid():  # a forked worker opens its own maps
            self._maps = {}
            self._pid = os.getpid()
        m = self._maps.get(f)
        if m is None:
            with open(self.paths[f], "rb") as fh:
                m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[f] = m
        return m

    def __getitem__(self, i: int) -> Any:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"JsonlSource index {i} out of range for {n} lines")
        start, end, line, f = self._index[i].tolist()
        raw = self._map(f)[start:end]
        where = f"{self.paths[f]}:{line}"
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{where}: not valid JSON ({e})") from None
        if self.text_field is None:
            return record
        if not isinstance(record, dict) or self.text_field not in record:
            raise ValueError(f"{where}: no field {self.text_field!r}")
        return record[self.text_field]

    def __getstate__(self) -> dict[str, Any]:
        # the path of the shared line index, not the index: a worker maps the same file
        return {"paths": self.paths, "text_field": self.text_field, "n": self._n, "index": self._index_path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.paths = state["paths"]
        self.text_field = state["text_field"]
        self._n = state["n"]
        self._index_path = state["index"]
        self._maps = {}
        self._pid = os.getpid()
        index = map_shared(self._index_path, _LINE, self._n)
        if index is None:  # the file is gone (its creator ended): index again, in this process only
            index = _scan_lines(self.paths)
            if index.shape[0] != self._n:
                raise ValueError(
                    f"JsonlSource: {self.paths} now hold {index.shape[0]} lines, {self._n} when it was made"
                )
        self._index = index

    def __repr__(self) -> str:
        return f"JsonlSource({len(self.paths)} files, {len(self)} lines)"


# one row per non-blank line; packed (28 bytes) so the shared file is an array of it and nothing else
_LINE = np.dtype([("start", "<i8"), ("end", "<i8"), ("line", "<i8"), ("file", "<i4")])
_SHM = "/dev/shm"


def _scan_lines(paths: list[str]) -> np.ndarray:
    parts = []
    for f, path in enumerate(paths):
        s, e, ln = _line_ranges(path)
        part = np.empty(s.shape[0], dtype=_LINE)
        part["start"], part["end"], part["line"], part["file"] = s, e, ln, f
        parts.append(part)
    return np.concatenate(parts)


def _index_dirs() -> list[str]:
    shm = [_SHM] if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK) else []
    return shm + [tempfile.gettempdir()]


_SHARED_PREFIX = "mixsieve-shared-"


def share_array(arr: np.ndarray, kind: str) -> tuple[str | None, np.ndarray, int | None]:
    """Writes ``arr`` to a file in shared memory (or the temp dir) and maps it read-only, so that
    every DataLoader worker maps one copy instead of holding its own (a JSONL line index, a
    mixture's item lengths). Returns (path, the mapped array, a descriptor holding a shared lock
    on the file). The lock marks the file as in use: files whose lock nobody holds (their
    creator was killed) are removed by the next call. A directory that refuses the file (a full
    ``/dev/shm``: containers often give it 64 MiB) passes to the next; if none takes it, the
    array stays in this process's memory (path None) and each copy rebuilds it."""
    if arr.size == 0:  # nothing to share (and an empty file cannot be mapped)
        return None, arr, None
    for d in _index_dirs():
        _sweep_shared(d)
        try:
            fd, path = tempfile.mkstemp(prefix=f"{_SHARED_PREFIX}{kind}-", suffix=".bin", dir=d)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            # written in full before it is mapped: a full tmpfs fails here, not as SIGBUS on a read
            with open(fd, "wb", closefd=False) as fh:
                fh.write(np.ascontiguousarray(arr).tobytes())
            mapped = map_shared(path, arr.dtype, arr.shape[0])
            if mapped is not None:
                return path, mapped, fd
        except OSError:
            pass
        except BaseException:
            release_shared(path, fd, os.getpid())
            raise
        release_shared(path, fd, os.getpid())
    return None, arr, None


def map_shared(path: str | None, dtype: Any, n: int) -> np.ndarray | None:
    """The shared array at ``path``, or None if it is gone (or not the size expected)."""
    dtype = np.dtype(dtype)
    if n == 0:
        return np.zeros(0, dtype=dtype)
    if path is None:
        return None
    try:
        if os.path.getsize(path) != n * dtype.itemsize:
            return None
        return np.memmap(path, dtype=dtype, mode="r", shape=(n,))
    except OSError:
        return None


def release_shared(path: str, fd: int | None, owner: int) -> None:
    if os.getpid() != owner:  # a forked child runs its parent's finalizers too
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _sweep_shared(directory: str) -> None:
    """Removes shared arrays whose creator is gone: nobody holds their lock. Files younger than a
    minute are left alone (their creator may not have locked them yet)."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith(_SHARED_PREFIX)]
    except OSError:
        return
    now = time.time()
    for name in names:
        path = os.path.join(directory, name)
        try:
            young = now - os.stat(path).st_mtime < 60
        except OSError:
            continue
        if not young:
            remove_if_unlocked(path, path)


def remove_if_unlocked(lock_path: str, *paths: str) -> None:
    """Removes ``paths`` if nobody holds a ``flock`` on ``lock_path`` (its owner is gone)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)  # held: its owner (or a forked child of it) is alive
        return
    try:
        for path in paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
    finally:
        os.close(fd)


def _expand(paths: Any, suffixes: tuple[str, ...]) -> list[str]:
    """Files named by ``paths``: files as given, directories walked (files ending in ``suffixes``,
    sorted), glob patterns matched (sorted)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            for root, _, names in sorted(os.walk(p)):
                out.extend(os.path.join(root, n) for n in sorted(names) if n.endswith(suffixes))
        elif os.path.exists(p):
            out.append(p)
        else:
            matched = sorted(glob.glob(p))
            if not matched:
                raise FileNotFoundError(f"no such file or pattern: {p}")
            out.extend(matched)
    return out


def _line_ranges(path: str, block: int = 1 << 26) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Byte ranges [start, end) and 1-based line numbers of the non-blank lines of a file."""
    size = os.path.getsize(path)
    if size == 0:
        e = np.zeros(0, dtype=np.int64)
        return e, e, e
    with open(path, "rb") as fh:
        head = fh.read(2)
        if head == b"\x1f\x8b":
            raise ValueError(
                f"{path}: gzip files are not supported by JsonlSource (random access needs plain files)"
            )
        m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        newlines = [
            np.flatnonzero(np.frombuffer(m, np.uint8, count=min(block, size - o), offset=o) == 10) + o
            for o in range(0, size, block)
        ]
    finally:
        m.close()
    nl = np.concatenate(newlines).astype(np.int64)
    ends = nl if (nl.size and nl[-1] == size - 1) else np.append(nl, size)
    starts = np.concatenate(([0], nl + 1))[: ends.size]
    lines = np.arange(1, ends.size + 1, dtype=np.int64)
    with open(path, "rb") as fh:
        m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            data = np.frombuffer(m, np.uint8)
            keep = ends > starts
            # a line of only whitespace is blank too (rare; checked per candidate line only)
            short = np.flatnonzero(keep & (ends - starts <= 4))
            for j in short:
                if not bytes(data[starts[j] : ends[j]]).strip():
                    keep[j] = False
            del data
        finally:
            m.close()
    return starts[keep], ends[keep], lines[keep]


class IndexedTokenSource:
    """Token sequences of a Megatron indexed dataset (``prefix.bin`` + ``prefix.idx``) as a
    map-style source.

    Item ``i`` is sequence ``i``: a read-only numpy view of the memory-mapped ``.bin`` (no copy,
    no read until it is used), of the dtype the index names. Opening reads and checks the index
    (the ``MMIDIDX`` layout of Megatron-core's ``IndexedDataset``): the magic, version 1, the
    dtype code, that the file holds exactly the arrays its header counts, that lengths are not
    negative, that sequences lie in order inside the ``.bin`` without overlapping, and that the
    document indices are in range and non-decreasing. A file that fails raises ``ValueError``
    naming the file and the field. Multimodal indices (a sequence-mode array after the document
    indices) are not read.

    A pickled source carries the prefix only; a worker (spawned or forked) maps the files
    itself, and raises ``ValueError`` if they changed since the source was opened.

    Parameters
    ----------
    prefix : str or path
        The path of the pair without the suffix: ``data/web_text_document`` for
        ``data/web_text_document.bin`` and ``.idx``.

    Attributes
    ----------
    dtype : numpy.dtype
        The token dtype (little-endian).
    sequence_lengths : ndarray of int32, shape (len,)
        Tokens per sequence, from the index.
    document_indices : ndarray of int64
        Sequence numbers where documents start, ending with ``len(self)``, as Megatron writes.

    >>> import numpy as np, os, struct, tempfile, mixsieve as ms
    >>> prefix = os.path.join(tempfile.mkdtemp(), "tokens")
    >>> seqs = [np.array([5, 6, 7], np.uint16), np.array([8], np.uint16)]
    >>> lengths = np.array([3, 1], np.int32)
    >>> pointers = np.array([0, 3 * 2], np.int64)  # byte offsets: uint16 tokens are 2 bytes
    >>> documents = np.array([0, 2], np.int64)
    >>> with open(prefix + ".bin", "wb") as f:
    ...     _ = f.write(b"".join(s.tobytes() for s in seqs))
    >>> with open(prefix + ".idx", "wb") as f:  # magic, version, dtype code 8 (uint16), counts
    ...     _ = f.write(b"MMIDIDX\\x00\\x00" + struct.pack("<QBQQ", 1, 8, 2, 2))
    ...     _ = f.write(lengths.tobytes() + pointers.tobytes() + documents.tobytes())
    >>> src = ms.sources.IndexedTokenSource(prefix)
    >>> len(src), src[0].tolist(), src[-1].dtype, src.item_lengths().tolist()
    (2, [5, 6, 7], dtype('uint16'), [3, 1])
    """

    dtype: np.dtype[Any]
    sequence_lengths: np.ndarray
    sequence_pointers: np.ndarray
    document_indices: np.ndarray
    _stamp: tuple[tuple[int, int], tuple[int, int]]

    def __init__(self, prefix: str | os.PathLike[str]):
        self.prefix = os.fspath(prefix)
        self._open(check=True)

    def _open(self, check: bool) -> None:
        idx, bin_ = self.prefix + ".idx", self.prefix + ".bin"
        stamp = (_stamp(idx), _stamp(bin_))
        if not check and stamp != self._stamp:
            raise ValueError(f"{idx} or {bin_} changed since the IndexedTokenSource was opened")
        with open(idx, "rb") as fh:
            index = _map_file(fh)
        code, seqs, docs = _read_idx_header(idx, index)
        self.dtype = np.dtype(_TOKEN_DTYPES[code])
        self.sequence_lengths = np.frombuffer(index, np.dtype("<i4"), count=seqs, offset=_IDX_HEADER)
        self.sequence_pointers = np.frombuffer(
            index, np.dtype("<i8"), count=seqs, offset=_IDX_HEADER + 4 * seqs
        )
        self.document_indices = np.frombuffer(
            index, np.dtype("<i8"), count=docs, offset=_IDX_HEADER + 12 * seqs
        )
        with open(bin_, "rb") as fh:
            self._bin = _map_file(fh)
        item = self.dtype.itemsize
        # the whole .bin as one token array, when every sequence starts on a token boundary (as
        # Megatron writes it): items are then made as views of it in one native call
        self._tokens = (
            np.frombuffer(self._bin, self.dtype, count=len(self._bin) // item)
            if seqs and not (self.sequence_pointers % item).any()
            else None
        )
        if check:
            _check_sequences(
                idx, self.sequence_lengths, self.sequence_pointers, self.dtype.itemsize, len(self._bin)
            )
            _check_documents(idx, self.document_indices, seqs)
        self._stamp = stamp
        self._pid = os.getpid()

    def _view(self) -> Any:
        if self._pid != os.getpid():  # a forked worker maps the files itself
            self._open(check=False)
        return self._bin

    def __len__(self) -> int:
        return int(self.sequence_lengths.shape[0])

    def __getitem__(self, i: int) -> np.ndarray:
        i = _position(i, len(self), "IndexedTokenSource")
        buf = self._view()
        return np.frombuffer(
            buf, self.dtype, count=int(self.sequence_lengths[i]), offset=int(self.sequence_pointers[i])
        )

    def __getitems__(self, indices: Sequence[int]) -> list[np.ndarray]:
        pos = _positions(indices, len(self), "IndexedTokenSource")
        buf = self._view()
        if self._tokens is not None:
            starts = self.sequence_pointers[pos] // self.dtype.itemsize
            out: list[np.ndarray] = _core.sequence_views(self._tokens, starts, self.sequence_lengths[pos])
            return out
        lengths = self.sequence_lengths[pos].tolist()
        pointers = self.sequence_pointers[pos].tolist()
        return [np.frombuffer(buf, self.dtype, count=n, offset=p) for n, p in zip(lengths, pointers)]

    def item_lengths(self, column: str | None = None) -> np.ndarray:
        """Tokens per sequence (int64, shape ``(len,)``), from the index alone (no ``.bin`` read).

        ``column`` must be None: a token sequence has no columns.
        """
        if column is not None:
            raise ValueError(f"{self!r} has no columns: call item_lengths() without one (got {column!r})")
        return self.sequence_lengths.astype(np.int64)

    def __getstate__(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "stamp": self._stamp}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.prefix = state["prefix"]
        self._stamp = state["stamp"]
        self._open(check=False)

    def __repr__(self) -> str:
        return f"IndexedTokenSource({self.prefix!r}, {len(self)} sequences of {self.dtype})"

    @classmethod
    def write(
        cls,
        prefix: str | os.PathLike[str],
        sequences: Iterable[Any],
        dtype: Any = np.uint16,
        documents: Sequence[int] | None = None,
    ) -> IndexedTokenSource:
        """Writes token sequences as ``prefix.bin`` + ``prefix.idx`` (Megatron's layout) and
        opens them. Sequences are streamed to the ``.bin`` (memory holds the index only).

        ``documents``: the sequence numbers where documents start (default: each sequence is a
        document). ``dtype``: one of Megatron's token dtypes (uint8, int8, int16, int32, int64,
        float64, float32, uint16).

        >>> import numpy as np, os, tempfile, mixsieve as ms
        >>> prefix = os.path.join(tempfile.mkdtemp(), "tokens")
        >>> src = ms.sources.IndexedTokenSource.write(prefix, [[5, 6, 7], [8]])
        >>> len(src), src[0].tolist(), src.item_lengths().tolist()
        (2, [5, 6, 7], [3, 1])
        """
        dt = np.dtype(dtype).newbyteorder("<")
        codes = {np.dtype(v).newbyteorder("<"): k for k, v in _TOKEN_DTYPES.items()}
        if dt not in codes:
            raise ValueError(
                f"dtype {np.dtype(dtype)} is not a Megatron token dtype "
                f"({sorted(set(_TOKEN_DTYPES.values()))})"
            )
        prefix = os.fspath(prefix)
        if documents is not None:
            docs_list = [operator.index(x) for x in documents]
            if not docs_list or docs_list[0] != 0 or any(b < a for a, b in zip(docs_list, docs_list[1:])):
                raise ValueError(f"documents must start at 0 and not decrease, got {docs_list[:10]}")
        lengths: list[int] = []
        # written under temporary names and renamed into place: a source open on the old pair
        # keeps reading the old files, and a failure leaves nothing half written
        tmp_bin, tmp_idx = f"{prefix}.bin.tmp-{os.getpid()}", f"{prefix}.idx.tmp-{os.getpid()}"
        try:
            with open(tmp_bin, "wb") as fh:
                for i, seq in enumerate(sequences):
                    arr = np.asarray(seq)
                    if arr.ndim != 1:
                        raise ValueError(f"sequence {i} must be 1-D, got shape {arr.shape}")
                    if arr.size >= 2**31:
                        raise ValueError(
                            f"sequence {i} has {arr.size} tokens; the index holds at most 2**31 - 1"
                        )
                    out = arr.astype(dt)
                    if arr.size and not np.array_equal(out, arr):
                        raise ValueError(
                            f"sequence {i} has values that {dt} cannot hold exactly (out of range, or "
                            f"fractional): {arr[out != arr][:3].tolist()}"
                        )
                    fh.write(out.tobytes())
                    lengths.append(int(arr.size))
            n = len(lengths)
            if documents is not None and docs_list[-1] > n:
                raise ValueError(f"documents name sequence {docs_list[-1]}, but there are {n}")
            lens = np.asarray(lengths, np.dtype("<i4"))
            pointers = np.zeros(n, np.dtype("<i8"))
            if n > 1:
                np.cumsum(lens[:-1].astype(np.int64) * dt.itemsize, out=pointers[1:])
            docs = np.asarray(docs_list + [n] if documents is not None else np.arange(n + 1), np.dtype("<i8"))
            with open(tmp_idx, "wb") as fh:
                fh.write(_IDX_MAGIC + struct.pack("<QBQQ", 1, codes[dt], n, len(docs)))
                fh.write(lens.tobytes() + pointers.tobytes() + docs.tobytes())
            os.replace(tmp_bin, prefix + ".bin")
            os.replace(tmp_idx, prefix + ".idx")
        finally:
            for tmp in (tmp_bin, tmp_idx):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        return cls(prefix)


# Megatron-core's DType codes (megatron/core/datasets/indexed_dataset.py)
_TOKEN_DTYPES = {1: "u1", 2: "i1", 3: "<i2", 4: "<i4", 5: "<i8", 6: "<f8", 7: "<f4", 8: "<u2"}
_IDX_MAGIC = b"MMIDIDX\x00\x00"
_IDX_HEADER = 9 + 8 + 1 + 8 + 8  # magic, version, dtype code, sequence count, document count
_CHUNK = 1 << 20  # index entries checked at a time (bounds the temporaries on huge indices)


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _map_file(fh: Any) -> Any:
    """A read-only map of an open file (an empty bytes object for an empty file, which mmap refuses)."""
    if os.fstat(fh.fileno()).st_size == 0:
        return b""
    return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def _read_idx_header(path: str, index: Any) -> tuple[int, int, int]:
    """The dtype code, sequence count and document count of a ``.idx`` file, checked against its size."""
    size = len(index)
    if size < _IDX_HEADER:
        raise ValueError(f"{path}: header truncated ({size} bytes, a Megatron index header is {_IDX_HEADER})")
    if bytes(index[:9]) != _IDX_MAGIC:
        raise ValueError(
            f"{path}: magic is {bytes(index[:9])!r}, not {_IDX_MAGIC!r}: not a Megatron .idx file"
        )
    version, code, seqs, docs = struct.unpack("<QBQQ", index[9:_IDX_HEADER])
    if version != 1:
        raise ValueError(f"{path}: version is {version}; only version 1 is known")
    if code not in _TOKEN_DTYPES:
        raise ValueError(f"{path}: dtype code is {code}; known codes are {sorted(_TOKEN_DTYPES)}")
    want = _IDX_HEADER + 12 * seqs + 8 * docs
    if size != want:
        extra = (
            " (a multimodal index, with sequence modes, is not supported)"
            if size == want + seqs > want
            else ""
        )
        raise ValueError(
            f"{path}: size is {size} bytes, but the header's sequence count {seqs} and document count "
            f"{docs} need {want}{extra}"
        )
    return int(code), int(seqs), int(docs)


def _check_sequences(
    path: str, lengths: np.ndarray, pointers: np.ndarray, itemsize: int, bin_size: int
) -> None:
    prev_end = 0
    for a in range(0, lengths.shape[0], _CHUNK):
        n = lengths[a : a + _CHUNK].astype(np.int64)
        p = pointers[a : a + _CHUNK]
        bad = np.flatnonzero(n < 0)
        if bad.size:
            j = a + int(bad[0])
            raise ValueError(f"{path}: sequence_lengths[{j}] is {int(lengths[j])}, negative")
        # the bound on p first: p + n * itemsize cannot overflow then
        bad = np.flatnonzero((p < 0) | (p > bin_size))
        if bad.size:
            j = a + int(bad[0])
            raise ValueError(
                f"{path}: sequence_pointers[{j}] is {int(pointers[j])}, outside the .bin ({bin_size} bytes)"
            )
        end = p + n * itemsize
        bad = np.flatnonzero(end > bin_size)
        if bad.size:
            j = a + int(bad[0])
            raise ValueError(
                f"{path}: sequence {j} ends at byte {int(end[bad[0]])}, "
                f"past the end of the .bin ({bin_size} bytes)"
            )
        prev = np.concatenate(([prev_end], end[:-1]))
        bad = np.flatnonzero(p < prev)
        if bad.size:
            j = a + int(bad[0])
            raise ValueError(
                f"{path}: sequence_pointers[{j}] is {int(pointers[j])}, before the end of sequence {j - 1} "
                f"({int(prev[bad[0]])}): sequences must lie in order without overlapping"
            )
        prev_end = int(end[-1])


def _check_documents(path: str, documents: np.ndarray, seqs: int) -> None:
    prev = 0
    for a in range(0, documents.shape[0], _CHUNK):
        d = documents[a : a + _CHUNK]
        bad = np.flatnonzero((d < 0) | (d > seqs))
        if bad.size:
            j = a + int(bad[0])
            raise ValueError(
                f"{path}: document_indices[{j}] is {int(documents[j])}, "
                f"outside [0, {seqs}] (the sequence count)"
            )
        bad = np.flatnonzero(d < np.concatenate(([prev], d[:-1])))
        if bad.size:
            j = a + int(bad[0])
            raise ValueError(
                f"{path}: document_indices[{j}] is {int(documents[j])}, less than the one before"
            )
        prev = int(d[-1])


def _position(i: Any, n: int, what: str) -> int:
    """``i`` as a position in ``range(n)`` (negative counts from the end)."""
    if isinstance(i, (bool, np.bool_)):
        raise TypeError(f"{what} indices must be integers, not bool")
    try:
        k = operator.index(i)
    except TypeError:
        raise TypeError(f"{what} indices must be integers, not {type(i).__name__}") from None
    if k < 0:
        k += n
    if not 0 <= k < n:
        raise IndexError(f"{what} index {i} out of range for {n} items")
    return k


def _positions(indices: Sequence[int], n: int, what: str) -> np.ndarray:
    """``indices`` as an int64 array of positions in ``range(n)``, checked as :func:`_position` does."""
    pos = np.asarray(indices)
    if pos.size == 0:
        return np.zeros(0, dtype=np.int64)
    if pos.ndim != 1 or pos.dtype.kind not in "iu":
        for i in np.ravel(pos).tolist() if pos.ndim else [indices]:
            _position(i, n, what)  # names the first index that is not an integer
        raise TypeError(f"{what} indices must be a flat sequence of integers")
    if pos.dtype.kind == "u" and pos.max() > np.iinfo(np.int64).max:
        raise IndexError(f"{what} index {int(pos.max())} out of range for {n} items")
    pos = pos.astype(np.int64)
    pos = np.where(pos < 0, pos + n, pos)
    bad = np.flatnonzero((pos < 0) | (pos >= n))
    if bad.size:
        raise IndexError(f"{what} index {indices[int(bad[0])]} out of range for {n} items")
    return pos


class IterableSource:
    """Marks an iterable (or a function returning a fresh iterator) as a streaming source.

    Needed only when an object has ``__len__``/``__getitem__`` but should be streamed, or to
    pass a function: ``IterableSource(lambda: open_stream(...))``.
    """

    def __init__(self, iterable: Iterable[Any] | Callable[[], Iterable[Any]]):
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        it = self.iterable() if callable(self.iterable) else self.iterable
        return iter(it)


def _default_text(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping) and "text" in item:
        return str(item["text"])
    raise ValueError(
        f"NearDupFilter cannot find text in an item of type {type(item).__name__}; "
        "pass text=<field or function>"
    )


class NearDupFilter:
    """Drops near-duplicate documents of the sources it is given to (MinHash + LSH).

    ``MixtureDataset(..., filters={"web": f, "forum": f})`` with one shared filter removes
    near-duplicates across both sources; the first occurrence (in source order, sources in the
    order of the ``filters`` mapping) is kept.

    Guarantee with several DataLoader workers and ranks: for map-style sources the filter runs
    once, before iteration, over the whole source, so every process applies the same keep mask
    and the mixture never serves two near-duplicates (at ``threshold``, up to MinHash's
    estimation error) within one pass. An iterable source is filtered as it streams, per epoch,
    identically in every process (each reads the whole stream); it only removes near-duplicates
    within that source.

    Parameters
    ----------
    threshold : float
        Jaccard similarity at or above which two documents are near-duplicates.
    text : str or callable, optional
        Field name or function giving an item's text; default: the item if it is a ``str``,
        else ``item["text"]``.
    num_perm, ngram, unit, seed : as in :func:`mixsieve.dedup`.
    """

    def __init__(
        self,
        threshold: float = 0.8,
        *,
        text: str | Callable[[Any], str] | None = None,
        num_perm: int = 128,
        ngram: int = 5,
        unit: str = "word",
        seed: int = 1,
    ) -> None:
        from .dedup import _check_threshold

        self.threshold = _check_threshold(threshold)
        if text is None:
            self._text: Callable[[Any], str] = _default_text
        elif isinstance(text, str):
            field = text
            self._text = lambda item: str(item[field])
        else:
            self._text = text
        self.num_perm = num_perm
        self.ngram = ngram
        self.unit = unit
        self.seed = seed
        self.removed: dict[str, int] = {}

    def texts(self, items: Iterable[Any]) -> list[str]:
        return [self._text(it) for it in items]

    def keep_masks(self, sources: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
        """Keep masks for map-style sources, deduplicated together in the given order."""
        from .dedup import dedup

        texts: list[str] = []
        bounds = [0]
        for src in sources.values():
            texts.extend(self._text(src[i]) for i in range(len(src)))
            bounds.append(len(texts))
        if not texts:
            return {name: np.zeros(0, dtype=bool) for name in sources}
        res = dedup(
            texts,
            threshold=self.threshold,
            num_perm=self.num_perm,
            ngram=self.ngram,
            unit=self.unit,
            seed=self.seed,
            progress=False,
        )
        out = {}
        for j, name in enumerate(sources):
            mask = res.keep[bounds[j] : bounds[j + 1]].copy()
            out[name] = mask
            self.removed[name] = int((~mask).sum())
        return out

    def stream(self, items: Iterator[Any], batch: int = 256) -> Iterator[Any]:
        """Yields the items of one pass that are not near-duplicates of an earlier item of it."""
        from .dedup import LSHIndex, MinHasher

        hasher = MinHasher(num_perm=self.num_perm, ngram=self.ngram, unit=self.unit, seed=self.seed)
        index = LSHIndex(threshold=self.threshold, num_perm=self.num_perm)
        while True:
            chunk = [x for _, x in zip(range(batch), items)]
            if not chunk:
                return
            dup = np.asarray(index.add(hasher.signatures(self.texts(chunk), threads=1)))
            for x, d in zip(chunk, dup.tolist()):
                if d < 0:
                    yield x

    def __repr__(self) -> str:
        return f"NearDupFilter(threshold={self.threshold})"


# after the helpers it uses (columnar imports them from here); pyarrow itself loads on first use
from .columnar import ArrowSource, ParquetSource  # noqa: E402
