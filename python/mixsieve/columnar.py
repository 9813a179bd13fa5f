"""Arrow tables and Parquet files as map-style sources: each row is a dict of its columns.

pyarrow is imported when a source is made, never with mixsieve.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from .sources import _expand, _position, _positions

_INSTALL = "pip install 'mixsieve[arrow]'"


def _pyarrow(what: str) -> Any:
    try:
        import pyarrow
    except ImportError:
        raise ImportError(f"{what} needs pyarrow: {_INSTALL}") from None
    return pyarrow


def _parquet(what: str) -> Any:
    _pyarrow(what)
    try:
        import pyarrow.parquet
    except ImportError:
        raise ImportError(f"{what} needs pyarrow with Parquet support: {_INSTALL}") from None
    return pyarrow.parquet


def _columns(columns: Sequence[str] | None, where: str) -> list[str] | None:
    if columns is None:
        return None
    if isinstance(columns, str):
        raise TypeError(f"{where}: columns must be a list of names, not the string {columns!r}")
    out = list(columns)
    if not out:
        raise ValueError(f"{where}: columns is empty; pass None for all columns")
    return out


def _missing(wanted: list[str] | None, names: list[str], where: str) -> None:
    absent = [c for c in wanted or () if c not in names]
    if absent:
        raise ValueError(f"{where}: no column {absent[0]!r}; the columns are {names}")


def _lengths(pa: Any, where: str, column: str, data: Any, n: int) -> np.ndarray:
    """A column of token counts as int64, checked: integer, no nulls, none negative."""
    if not pa.types.is_integer(data.type):
        raise ValueError(f"{where}: column {column!r} holds {data.type}, not integers")
    if data.null_count:
        raise ValueError(f"{where}: column {column!r} has {data.null_count} nulls")
    out = np.zeros(n, dtype=np.int64)
    at = 0
    for chunk in getattr(data, "chunks", [data]):
        values = chunk.to_numpy(zero_copy_only=False)
        if values.size and values.dtype == np.uint64 and values.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{where}: column {column!r} holds {int(values.max())}, beyond int64")
        out[at : at + values.size] = values
        at += values.size
    if at != n:  # pragma: no cover - a table's columns all have its row count
        raise ValueError(f"{where}: column {column!r} has {at} values for {n} rows")
    bad = np.flatnonzero(out < 0)
    if bad.size:
        raise ValueError(f"{where}: column {column!r} is negative at row {int(bad[0])} ({int(out[bad[0]])})")
    return out


def _need_column(column: str | None, where: str) -> str:
    if column is None:
        raise ValueError(f"{where}: give the column holding each row's token count, item_lengths('n_tokens')")
    return column


class ArrowSource:
    """A pyarrow ``Table`` or ``RecordBatch`` as a map-style source: item ``i`` is row ``i`` as a
    dict ``{column: value}`` of Python values.

    A batched read (``__getitems__``, as :class:`mixsieve.MixtureDataset` calls it) converts only
    the rows asked for, with one ``take``. A pickled source carries its table (DataLoader workers
    made by spawn get a copy; forked ones share the parent's memory).

    Parameters
    ----------
    table : pyarrow.Table or pyarrow.RecordBatch
    columns : list of str, optional
        The columns each row holds; default all.

    >>> import pyarrow as pa, mixsieve as ms
    >>> table = pa.table({"text": ["a b", "c", "d e f"], "n_tokens": [2, 1, 3]})
    >>> src = ms.sources.ArrowSource(table, columns=["text"])
    >>> len(src), src[-1], src.__getitems__([2, 0])
    (3, {'text': 'd e f'}, [{'text': 'd e f'}, {'text': 'a b'}])
    >>> src.item_lengths("n_tokens").tolist()
    [2, 1, 3]
    """

    def __init__(self, table: Any, columns: Sequence[str] | None = None):
        pa = _pyarrow("ArrowSource")
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not isinstance(table, pa.Table):
            raise TypeError(f"ArrowSource takes a pyarrow Table or RecordBatch, not {type(table).__name__}")
        self.table = table
        self.columns = _columns(columns, "ArrowSource")
        _missing(self.columns, table.column_names, "ArrowSource")
        if not table.column_names:
            raise ValueError("ArrowSource: the table has no columns")
        self._rows = table.select(self.columns) if self.columns is not None else table

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row: dict[str, Any] = self._rows.slice(_position(i, len(self), "ArrowSource"), 1).to_pylist()[0]
        return row

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        pos = _positions(indices, len(self), "ArrowSource")
        if pos.size == 0:
            return []
        rows: list[dict[str, Any]] = self._rows.take(pos).to_pylist()
        return rows

    def item_lengths(self, column: str | None = None) -> np.ndarray:
        """The token count of each row (int64, shape ``(len,)``), from ``column`` alone.

        ``column`` may be any column of the table, served or not. ``ValueError`` if it is None,
        missing, not of an integer type, has nulls or a negative value.
        """
        column = _need_column(column, repr(self))
        _missing([column], self.table.column_names, repr(self))
        return _lengths(_pyarrow("ArrowSource"), repr(self), column, self.table.column(column), len(self))

    def __getstate__(self) -> dict[str, Any]:
        return {"table": self.table, "columns": self.columns}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.table = state["table"]
        self.columns = state["columns"]
        self._rows = self.table.select(self.columns) if self.columns is not None else self.table

    def __repr__(self) -> str:
        return f"ArrowSource({len(self)} rows, {self._rows.num_columns} columns)"


class ParquetSource:
    """Rows of Parquet files as a map-style source: item ``i`` is a dict ``{column: value}``.

    Opening reads each file's footer only (row counts per row group). A row is served from its
    decoded row group; each process keeps the row groups it decoded last, up to ``cache_bytes``
    (at least one), so a DataLoader worker reads only the row groups of the rows it serves, each
    once while it stays cached. A batched read (``__getitems__``) reads each row group it needs
    once. Item ``i`` is found by a binary search over the cumulative row counts.

    A pickled source carries its paths and options only; a worker (spawned or forked) reads the
    footers and opens the files itself, and raises ``ValueError`` if the row count changed.

    Parameters
    ----------
    paths : str, path, or a sequence of them
        Files, directories (every ``*.parquet`` below, sorted) or glob patterns.
    columns : list of str, optional
        The columns each row holds (only these are decoded); default all. Every file must have
        them.
    cache_bytes : int
        The decoded row groups a process keeps, in bytes of Arrow memory.

    >>> import os, tempfile, pyarrow as pa, pyarrow.parquet as pq, mixsieve as ms
    >>> path = os.path.join(tempfile.mkdtemp(), "part-0.parquet")
    >>> table = pa.table({"text": ["a", "b c", "d"], "n_tokens": [1, 2, 1]})
    >>> pq.write_table(table, path, row_group_size=2)
    >>> src = ms.sources.ParquetSource(path, columns=["text"])
    >>> len(src), src[1], src[-1]
    (3, {'text': 'b c'}, {'text': 'd'})
    >>> src.item_lengths("n_tokens").tolist()
    [1, 2, 1]
    """

    def __init__(
        self,
        paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        columns: Sequence[str] | None = None,
        *,
        cache_bytes: int = 256 << 20,
    ):
        _parquet("ParquetSource")
        self.paths = _expand(paths, (".parquet",))
        if not self.paths:
            raise ValueError(f"no Parquet files found in {paths!r}")
        self.columns = _columns(columns, "ParquetSource")
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise ValueError(f"cache_bytes must be an int >= 0, got {cache_bytes!r}")
        self.cache_bytes = cache_bytes
        self._pid = os.getpid()
        self._handles: OrderedDict[int, Any] = OrderedDict()
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._cached = 0
        self._layout()
        self._n = int(self._ends[-1]) if self._ends.size else 0
        self._stamps = [_file_stamp(p) for p in self.paths]

    def _layout(self) -> None:
        """Row groups of all files in order: where each ends (cumulative rows), its file and number."""
        counts: list[int] = []
        files: list[int] = []
        groups: list[int] = []
        first: list[str] | None = None
        for f in range(len(self.paths)):
            pf = self._file(f)
            _missing(self.columns, pf.schema_arrow.names, self.paths[f])
            names = list(pf.schema_arrow.names)
            if self.columns is None and first is not None and names != first:
                raise ValueError(
                    f"{self.paths[f]} has the columns {names}, {self.paths[0]} has {first}: rows of one "
                    "source should look alike; pass columns=[...] to serve the columns they share"
                )
            first = names if first is None else first
            meta = pf.metadata
            for g in range(meta.num_row_groups):
                counts.append(meta.row_group(g).num_rows)
                files.append(f)
                groups.append(g)
        self._ends = np.cumsum(np.asarray(counts, dtype=np.int64))
        self._group_file = np.asarray(files, dtype=np.int64)
        self._group_index = np.asarray(groups, dtype=np.int64)

    def _here(self) -> None:
        if self._pid != os.getpid():  # a forked worker opens its own files and keeps its own cache
            self._pid = os.getpid()
            self._handles = OrderedDict()
            self._cache = OrderedDict()
            self._cached = 0

    def _file(self, f: int) -> Any:
        pf = self._handles.get(f)
        if pf is not None:
            self._handles.move_to_end(f)
            return pf
        pq = _parquet("ParquetSource")
        pa = _pyarrow("ParquetSource")
        try:
            pf = pq.ParquetFile(self.paths[f])
        except pa.ArrowInvalid as e:
            raise ValueError(f"{self.paths[f]}: not a readable Parquet file ({e})") from None
        self._handles[f] = pf
        if len(self._handles) > _OPEN_FILES:
            self._handles.popitem(last=False)
        return pf

    def _group(self, g: int) -> Any:
        table = self._cache.get(g)
        if table is not None:
            self._cache.move_to_end(g)
            return table
        f = int(self._group_file[g])
        pf = self._file(f)
        try:
            table = pf.read_row_group(int(self._group_index[g]), columns=self.columns)
        except (OSError, ValueError) as e:  # pyarrow's errors derive from these
            raise ValueError(
                f"{self.paths[f]}: row group {int(self._group_index[g])} cannot be read ({e}); was the file "
                "changed after the ParquetSource opened it?"
            ) from e
        self._cache[g] = table
        self._cached += table.nbytes
        while self._cached > self.cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= old.nbytes
        return table

    def _starts(self) -> np.ndarray:
        return np.concatenate(([0], self._ends[:-1]))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> dict[str, Any]:
        k = _position(i, len(self), "ParquetSource")
        self._here()
        g = int(np.searchsorted(self._ends, k, side="right"))
        start = int(self._ends[g - 1]) if g else 0
        row: dict[str, Any] = self._group(g).slice(k - start, 1).to_pylist()[0]
        return row

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        pos = _positions(indices, len(self), "ParquetSource")
        self._here()
        out: list[Any] = [None] * pos.size
        groups = np.searchsorted(self._ends, pos, side="right")
        order = np.argsort(groups, kind="stable")
        cuts = np.flatnonzero(np.diff(groups[order])) + 1
        starts = self._starts()
        for run in np.split(order, cuts) if pos.size else []:
            g = int(groups[run[0]])
            rows = self._group(g).take(pos[run] - starts[g]).to_pylist()
            for at, row in zip(run.tolist(), rows):
                out[at] = row
        return out

    def item_lengths(self, column: str | None = None) -> np.ndarray:
        """The token count of each row (int64, shape ``(len,)``), reading ``column`` alone.

        ``column`` may be any column of the files, served or not; no other column is read.
        ``ValueError`` if it is None, missing from a file, not of an integer type, has nulls or
        a negative value.
        """
        column = _need_column(column, repr(self))
        self._here()
        pa = _pyarrow("ParquetSource")
        parts = []
        for f, path in enumerate(self.paths):
            pf = self._file(f)
            where = f"{self!r} ({path})"
            _missing([column], pf.schema_arrow.names, where)
            data = pf.read(columns=[column]).column(column)
            parts.append(_lengths(pa, where, column, data, pf.metadata.num_rows))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "paths": self.paths,
            "columns": self.columns,
            "cache_bytes": self.cache_bytes,
            "n": self._n,
            "stamps": self._stamps,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.paths = state["paths"]
        self.columns = state["columns"]
        self.cache_bytes = state["cache_bytes"]
        self._pid = os.getpid()
        self._handles = OrderedDict()
        self._cache = OrderedDict()
        self._cached = 0
        stamps = [_file_stamp(p) for p in self.paths]
        if stamps != [tuple(x) for x in state.get("stamps", stamps)]:
            changed = next(p for p, a, b in zip(self.paths, stamps, state["stamps"]) if a != tuple(b))
            raise ValueError(
                f"{changed} changed (size or modification time) since the ParquetSource was made"
            )
        self._stamps = stamps
        self._layout()
        self._n = int(self._ends[-1]) if self._ends.size else 0
        if self._n != state["n"]:
            raise ValueError(f"{self!r}: the files now hold {self._n} rows, {state['n']} when it was made")

    def __repr__(self) -> str:
        return f"ParquetSource({len(self.paths)} files, {len(self)} rows)"


_OPEN_FILES = 64  # Parquet files a process keeps open


def _file_stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns
