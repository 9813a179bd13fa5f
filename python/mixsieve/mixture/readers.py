"""Reading the sources of a mixture: map-style sources by index, iterables as streams.

A map-style source (``len`` + ``getitem``) is read only at the items a process serves. An
iterable is read in full by every process, each keeping its own share, so that item ``k`` of
it is the same item in every process; while reading, torch's worker info is hidden from it, so
a source that splits itself over DataLoader workers (a Hugging Face streaming dataset, a nested
``MixtureDataset``) gives every process the whole stream.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import operator
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _core
from ..sources import IterableSource, NearDupFilter


class SourceError(RuntimeError):
    """An exception raised inside a source, re-raised with the source's name and item."""


def source_key(name: str) -> int:
    return int(_core.xxh64(name.encode("utf-8"), 0x6D69787369657665))


_WHOLE = contextvars.ContextVar("mixsieve_whole_stream", default=False)


def whole_stream_wanted() -> bool:
    """True while a mixture reads this code as one of its sources: a nested MixtureDataset then
    yields its whole stream, not one rank's share."""
    return _WHOLE.get()


@contextlib.contextmanager
def as_main_process() -> Iterator[None]:
    """Runs a source as if in a single process: torch's DataLoader worker info is hidden (a
    source that shards itself by worker then yields its whole stream; torch has no public way to
    do this, so its module-level record is swapped) and a nested MixtureDataset ignores ranks."""
    token = _WHOLE.set(True)
    try:
        from torch.utils.data._utils import worker as tw
    except ImportError:  # pragma: no cover - without torch there are no workers
        try:
            yield
        finally:
            _WHOLE.reset(token)
        return
    saved = tw._worker_info
    tw._worker_info = None
    try:
        yield
    finally:
        tw._worker_info = saved
        _WHOLE.reset(token)


def as_source(src: Any) -> Any:
    """A pyarrow Table or RecordBatch as map-style rows (iterating one yields its columns)."""
    kind = type(src)
    if kind.__module__.startswith("pyarrow") and kind.__name__ in ("Table", "RecordBatch"):
        from ..columnar import ArrowSource

        return ArrowSource(src)
    return src


def check_source(name: str, src: Any) -> str:
    """'map' or 'iterable', or a TypeError saying what to pass instead."""
    if isinstance(src, (str, bytes)):
        raise TypeError(
            f"source {name!r} is a {type(src).__name__}, which would be read character by character; "
            "pass ms.sources.JsonlSource(path) for a file, or a list of texts"
        )
    if isinstance(src, (Set, Mapping)):
        raise TypeError(
            f"source {name!r} is a {type(src).__name__}: its order is not the same in every process "
            "(or its keys are not positions); pass a list, e.g. sorted(...) or list(d.values())"
        )
    if isinstance(src, np.ndarray) and src.ndim == 0:
        raise TypeError(f"source {name!r} is a 0-d array; pass an array with one item per row")
    if is_map_style(src):
        return "map"
    if isinstance(src, Iterable) or callable(src):
        return "iterable"
    raise TypeError(
        f"source {name!r} is neither map-style (len + getitem) nor iterable: {type(src).__name__}"
    )


def is_map_style(src: Any) -> bool:
    if isinstance(src, (IterableSource, str, bytes)) or isinstance(src, Iterator):
        return False
    # a torch IterableDataset inherits a __getitem__ that raises, and may have a __len__
    if any(c.__name__ == "IterableDataset" for c in type(src).__mro__):
        return False
    return hasattr(src, "__len__") and hasattr(src, "__getitem__")


class MapReader:
    def __init__(self, name: str, data: Any, table: np.ndarray | None):
        self.name = name
        self.data = data
        self.table = table
        self.size = len(table) if table is not None else len(data)
        self.batched = getattr(data, "__getitems__", None)

    def fetch(self, idx: np.ndarray) -> np.ndarray:
        """The items at ``idx`` as a 1-D object array."""
        if self.table is not None:
            idx = self.table[idx]
        data = self.data
        try:
            if isinstance(data, np.ndarray):
                return objects(data[idx], len(idx))
            ids = idx.tolist()
            if self.batched is not None:
                got = list(self.batched(ids))
            elif len(ids) == 1:
                got = [data[ids[0]]]
            else:
                got = list(operator.itemgetter(*ids)(data))
        except Exception as e:
            for i in idx.tolist():  # find the first item that fails, to name it
                try:
                    data[i]
                except Exception as e2:
                    raise SourceError(
                        f"source {self.name!r} raised {type(e2).__name__} at item {i}: {e2}"
                    ) from e2
            raise SourceError(f"source {self.name!r} raised {type(e).__name__}: {e}") from e
        return objects(got, len(got))


def objects(items: Any, n: int) -> np.ndarray:
    # fromiter keeps each item whole (np.array would turn a list of lists into a 2-D array)
    return np.fromiter(items, dtype=object, count=n)


class IterReader:
    """One process's reader of an iterable source: epochs, shuffle buffer, dedup filter."""

    def __init__(
        self, name: str, data: Any, seed: int, shuffle: bool, buffer: int, filt: NearDupFilter | None
    ):
        self.name = name
        self.data = data
        self.seed = seed
        self.shuffle = shuffle
        self.buffer = buffer
        self.filter = filt
        self.key = source_key(name)
        self.epoch = 0
        self.next_item = 0  # running number of the next item the iterator gives
        self.base = 0  # running number of pending[0]
        self.pending: deque[Any] = deque()
        self._it: Iterator[Any] | None = None
        self._epoch_items = 0

    def open_epoch(self) -> Iterator[Any]:
        try:
            with as_main_process():
                it: Iterator[Any] = iter(
                    self.data() if callable(self.data) and not hasattr(self.data, "__iter__") else self.data
                )
        except Exception as e:
            raise SourceError(f"source {self.name!r} raised {type(e).__name__} when opened: {e}") from e
        if self.filter is not None:
            it = self.filter.stream(it)
        if self.shuffle:
            it = buffer_shuffle(it, self.seed, self.key, self.epoch, self.buffer)
        return it

    def pull_until(self, item: int, cycle: bool) -> int | None:
        """Reads until item number ``item`` is pending. Returns the length of the first epoch if
        the source ended (only when not cycling), else None."""
        while self.next_item <= item:
            if self._it is None:
                self._it = self.open_epoch()
                self._epoch_items = 0
            want = item + 1 - self.next_item
            got: list[Any] = []
            try:
                with as_main_process():
                    got.extend(itertools.islice(self._it, want))  # keeps what came before an error
            except SourceError:
                raise
            except Exception as e:
                raise SourceError(
                    f"source {self.name!r} raised {type(e).__name__} at item {self._epoch_items + len(got)} "
                    f"of epoch {self.epoch}: {e}"
                ) from e
            self.pending.extend(got)
            self.next_item += len(got)
            self._epoch_items += len(got)
            if len(got) < want:  # the epoch ended
                if self._epoch_items == 0:
                    raise ValueError(f"source {self.name!r} is empty (epoch {self.epoch} yielded nothing)")
                if not cycle:
                    return self.next_item
                if isinstance(self.data, Iterator):
                    raise ValueError(
                        f"source {self.name!r} is a one-shot iterator and cannot cycle; pass a list, an "
                        "iterable that can be iterated again, or ms.sources.IterableSource(function)"
                    )
                self._it = None
                self.epoch += 1
        return None

    def take(self, items: np.ndarray, keep: np.ndarray) -> list[Any]:
        """Items with running numbers ``items`` (consecutive, from ``self.base``); returns those
        where ``keep`` and drops all of them from the pending queue."""
        out = []
        pend = self.pending
        for k, mine in zip(items.tolist(), keep.tolist()):
            if k != self.base:
                raise RuntimeError(
                    f"source {self.name!r}: item {k} requested out of order (next is {self.base})"
                )
            x = pend.popleft()
            self.base += 1
            if mine:
                out.append(x)
        return out

    def skip_to(self, item: int, cycle: bool) -> None:
        """Fast-forward so that ``item`` is the next running number to take (resume)."""
        while self.base < item:
            n = min(item - self.base, 65536)
            ended = self.pull_until(self.base + n - 1, cycle)
            if ended is not None and ended <= item - 1:
                raise ValueError(f"source {self.name!r} has fewer items than the saved state consumed")
            for _ in range(n):
                self.pending.popleft()
            self.base += n


def buffer_shuffle(it: Iterator[Any], seed: int, key: int, epoch: int, size: int) -> Iterator[Any]:
    buf = [x for _, x in zip(range(size), it)]
    i = 0
    while True:
        batch = [x for _, x in zip(range(1024), it)]
        if not batch:
            break
        slots = _core.buffer_slots(seed, key, epoch, i, len(batch), len(buf)).tolist()
        for x, j in zip(batch, slots):
            yield buf[j]
            buf[j] = x
        i += len(batch)
    if buf:
        n = len(buf)  # the rest of the buffer, in a keyed order of this epoch
        order = _core.source_indices(
            np.arange(epoch * n, (epoch + 1) * n, dtype=np.int64), n, seed, key ^ 1, True
        )
        for j in order.tolist():
            yield buf[j]


def index_tables(
    sources: Mapping[str, Any], names: list[str], filters: dict[str, Any], repeats: dict[str, Any]
) -> tuple[dict[str, np.ndarray | None], dict[str, int]]:
    """Per map-style source, the indices an epoch reads (None: all, in order), from keep masks,
    near-duplicate filters and repeat counts; and how many items the filters removed."""
    for what, given in (("filters", filters), ("repeats", repeats)):
        unknown = [n for n in given if n not in names]
        if unknown:
            raise ValueError(f"{what} name unknown sources {unknown}; the sources are {names}")
    tables: dict[str, np.ndarray | None] = {n: None for n in names}
    removed: dict[str, int] = {}
    by_filter: dict[int, tuple[NearDupFilter, dict[str, Any]]] = {}
    for name, f in filters.items():
        src = sources[name]
        if isinstance(f, NearDupFilter):
            if is_map_style(src):
                by_filter.setdefault(id(f), (f, {}))[1][name] = src
            continue
        mask = np.asarray(f)
        if not is_map_style(src):
            raise ValueError(f"filters[{name!r}]: a keep mask needs a map-style source (len + getitem)")
        if mask.dtype != np.bool_ or mask.shape != (len(src),):
            raise ValueError(
                f"filters[{name!r}] must be a bool mask of length {len(src)}, got {mask.dtype} {mask.shape}"
            )
        tables[name] = np.flatnonzero(mask).astype(np.int64)
        removed[name] = int((~mask).sum())
    for f, group in by_filter.values():
        for name, mask in f.keep_masks(group).items():
            tables[name] = np.flatnonzero(mask).astype(np.int64)
            removed[name] = int((~mask).sum())
    for name, counts in repeats.items():
        src = sources[name]
        if not is_map_style(src):
            raise ValueError(f"repeats[{name!r}] needs a map-style source (len + getitem)")
        c = np.asarray(counts)
        if c.ndim != 1 or c.shape[0] != len(src) or c.dtype.kind not in "iu":
            raise ValueError(f"repeats[{name!r}] must be integer counts, one per item ({len(src)})")
        if c.size and c.min() < 0:
            raise ValueError(f"repeats[{name!r}][{int(np.argmin(c))}] is negative")
        base = tables[name] if tables[name] is not None else np.arange(len(src), dtype=np.int64)
        keep = np.zeros(len(src), bool)
        keep[base] = True
        tables[name] = np.repeat(np.arange(len(src), dtype=np.int64), np.where(keep, c, 0))
    return tables, removed


@dataclass
class Sources:
    """A mixture's sources as the engine reads them."""

    names: list[str]
    keys: list[int]
    maps: list[MapReader | None]
    iterables: dict[int, Any]
    filters: dict[int, NearDupFilter | None]
    seed: int
    shuffle: bool
    shuffle_buffer: int
    cycle: bool
    capped: frozenset[int] = frozenset()  # sources with max_epochs: read past their end

    def cycles(self, d: int) -> bool:
        """Whether iterable source ``d`` starts a new pass at its end (``on_exhausted="cycle"``,
        or an epoch cap, which lets it give more than one pass)."""
        return self.cycle or d in self.capped

    def reader(self, d: int) -> IterReader:
        return IterReader(
            self.names[d], self.iterables[d], self.seed, self.shuffle, self.shuffle_buffer, self.filters[d]
        )

    def count_items(self, d: int) -> int:
        """Items in the first pass of iterable source ``d`` (after its filter)."""
        reader = IterReader(self.names[d], self.iterables[d], self.seed, False, 1, self.filters[d])
        n = sum(1 for _ in reader.open_epoch())
        if n == 0:
            raise ValueError(f"source {self.names[d]!r} is empty (epoch 0 yielded nothing)")
        return n

    def fetch_map(self, d: int, items: np.ndarray) -> np.ndarray:
        src = self.maps[d]
        if src is None:
            raise TypeError(f"source {self.names[d]!r} is not map-style")
        return src.fetch(_core.source_indices(items, src.size, self.seed, self.keys[d], self.shuffle))
