"""MixtureDataset: a weighted mixture of data sources as a PyTorch ``IterableDataset``.

How it works. The mixed stream is a sequence of global positions 0, 1, 2, ... The C++ schedule
(``_core.MixSchedule``) decides, in chunks, which source fills each position and which item of
that source (its running count). Every process (rank x DataLoader worker) computes the same
schedule and keeps its own positions: positions come in blocks of ``batch_size``, and block
``b`` belongs to rank ``b % R`` and, within the rank, to worker ``(b // R) % W``. So nothing is
lost or repeated, a DataLoader yields its rank's positions in order, and a position's sample
does not depend on how many processes there are. Item ``k`` of a map-style source of ``n``
items is index ``perm_e(k % n)`` of epoch ``e = k // n``, with ``perm_e`` a keyed bijection
(O(1) memory). Weight changes (schedules, :class:`~mixsieve.weights.OnlineMixer`) take effect at
a recorded position and reach workers through a small shared-memory block.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import mmap
import operator
import os
import tempfile
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from . import _core
from .sources import IterableSource, NearDupFilter
from .weights import OnlineMixer, WeightSchedule, weight_vector

try:  # torch is optional: without it MixtureDataset is a plain iterable
    from torch.utils.data import IterableDataset as _Base
except ImportError:  # pragma: no cover - exercised only without torch
    _Base = object  # type: ignore[assignment,misc]

__all__ = ["MixtureDataset", "SourceError"]

_MAX_WORKERS = 64
_MAX_ENTRIES = 4096  # weight changes the shared ring holds; a worker lagging further raises
_STATE_VERSION = 1


class SourceError(RuntimeError):
    """An exception raised inside a source, re-raised with the source's name and item."""


def _source_key(name: str) -> int:
    return int(_core.xxh64(name.encode("utf-8"), 0x6D69787369657665))


# --------------------------------------------------------------------------------------------
# Shared memory: weight changes, the furthest position claimed, iterable lengths, stats.
# --------------------------------------------------------------------------------------------


class _Shared:
    """A small file-backed shared block (in /dev/shm where it exists), locked with flock.

    int64 header: [n_entries, frontier, epoch, unused]; then K discovered iterable lengths
    (-1 unknown); then one stats row per process (served[K], reached[K]); then a ring of
    ``_MAX_ENTRIES`` weight changes, each (position, K weights) as float64; then the online
    mixer's state as float64 (valid, t, p[K], rewards[K]), for workers' state dicts.
    """

    def __init__(self, k: int, path: str | None = None):
        self.k = k
        self.size = _block_size(k)
        if path is None:
            root = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
            _sweep(root)
            fd, path = tempfile.mkstemp(prefix=f"mixsieve-{os.getpid()}-", dir=root)
            os.ftruncate(fd, self.size)
            os.close(fd)
            weakref.finalize(self, _unlink, path, os.getpid())
        self.path = path
        self._open()

    def _open(self) -> None:
        self._pid = os.getpid()
        self._fd = os.open(self.path, os.O_RDWR)
        weakref.finalize(self, os.close, self._fd)
        self._mm = mmap.mmap(self._fd, self.size)
        k = self.k
        self.header = np.frombuffer(self._mm, np.int64, 4, 0)
        self.lengths = np.frombuffer(self._mm, np.int64, k, 32)
        off = 32 + 8 * k
        self.rows = np.frombuffer(self._mm, np.int64, (_MAX_WORKERS + 1) * 2 * k, off).reshape(
            _MAX_WORKERS + 1, 2, k
        )
        off += 8 * (_MAX_WORKERS + 1) * 2 * k
        self.ring = np.frombuffer(self._mm, np.float64, _MAX_ENTRIES * (1 + k), off).reshape(
            _MAX_ENTRIES, 1 + k
        )
        off += 8 * _MAX_ENTRIES * (1 + k)
        self.mixer = np.frombuffer(self._mm, np.float64, 2 + 2 * k, off)

    def reset(self, frontier: int) -> None:
        with self.lock():
            self.header[:] = (0, frontier, 0, 0)
            self.lengths[:] = -1
            self.rows[:] = 0
            self.mixer[:] = 0

    def ensure_process(self) -> None:
        if self._pid != os.getpid():  # forked: same mapping, but flock needs our own descriptor
            self._open()

    def lock(self) -> _Lock:
        self.ensure_process()
        return _Lock(self._fd)

    def __getstate__(self) -> dict[str, Any]:
        return {"k": self.k, "path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:  # a spawned worker opens the file by name
        self.k = state["k"]
        self.path = state["path"]
        self.size = _block_size(self.k)
        self._open()


def _block_size(k: int) -> int:
    return 8 * (4 + k + (_MAX_WORKERS + 1) * 2 * k + _MAX_ENTRIES * (1 + k) + 2 + 2 * k)


def _sweep(root: str) -> None:
    """Remove blocks left by processes that were killed before they could clean up."""
    try:
        names = [n for n in os.listdir(root) if n.startswith("mixsieve-")]
    except OSError:
        return
    for name in names:
        try:
            pid = int(name.split("-")[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            _unlink(os.path.join(root, name), os.getpid())
        except (ValueError, IndexError, OSError):
            continue


def _unlink(path: str, owner_pid: int) -> None:
    if os.getpid() != owner_pid:  # a forked worker's copy going away must not remove the parent's file
        return
    try:
        os.unlink(path)
    except OSError:
        pass


class _Lock:
    def __init__(self, fd: int):
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: Any) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def _is_map_style(src: Any) -> bool:
    if isinstance(src, (IterableSource, str, bytes)) or isinstance(src, Iterator):
        return False
    # a torch IterableDataset inherits a __getitem__ that raises, and may have a __len__
    if any(c.__name__ == "IterableDataset" for c in type(src).__mro__):
        return False
    return hasattr(src, "__len__") and hasattr(src, "__getitem__")


class _MapSource:
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
                return _objects(data[idx], len(idx))
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
        return _objects(got, len(got))


def _objects(items: Any, n: int) -> np.ndarray:
    # fromiter keeps each item whole (np.array would turn a list of lists into a 2-D array)
    return np.fromiter(items, dtype=object, count=n)


class _IterSource:
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
        self.key = _source_key(name)
        self.epoch = 0
        self.next_item = 0  # running number of the next item the iterator gives
        self.base = 0  # running number of pending[0]
        self.pending: deque[Any] = deque()
        self._it: Iterator[Any] | None = None
        self._epoch_items = 0

    def _open_epoch(self) -> Iterator[Any]:
        try:
            it: Iterator[Any] = iter(
                self.data() if callable(self.data) and not hasattr(self.data, "__iter__") else self.data
            )
        except Exception as e:
            raise SourceError(f"source {self.name!r} raised {type(e).__name__} when opened: {e}") from e
        if self.filter is not None:
            it = self.filter.stream(it)
        if self.shuffle:
            it = _buffer_shuffle(it, self.seed, self.key, self.epoch, self.buffer)
        return it

    def pull_until(self, item: int, cycle: bool) -> int | None:
        """Reads until item number ``item`` is pending. Returns the length of the first epoch if
        the source ended (only when not cycling), else None."""
        while self.next_item <= item:
            if self._it is None:
                self._it = self._open_epoch()
                self._epoch_items = 0
            want = item + 1 - self.next_item
            try:
                got = list(itertools.islice(self._it, want))
            except SourceError:
                raise
            except Exception as e:
                raise SourceError(
                    f"source {self.name!r} raised {type(e).__name__} at item {self._epoch_items} of epoch "
                    f"{self.epoch}: {e}"
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
            assert k == self.base
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


def _buffer_shuffle(it: Iterator[Any], seed: int, key: int, epoch: int, size: int) -> Iterator[Any]:
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


def _index_tables(
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
            if _is_map_style(src):
                by_filter.setdefault(id(f), (f, {}))[1][name] = src
            continue
        mask = np.asarray(f)
        if not _is_map_style(src):
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
        if not _is_map_style(src):
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


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


class MixtureDataset(_Base):  # type: ignore[misc,valid-type,type-arg,unused-ignore]
    """A weighted mixture of data sources, streamed into a PyTorch ``DataLoader``.

    Parameters
    ----------
    sources : dict name -> source
        Map-style sources (``len`` + ``getitem``: lists, arrays, HF ``Dataset``,
        :class:`~mixsieve.sources.JsonlSource`), iterables, or
        :class:`~mixsieve.sources.IterableSource`. See :mod:`mixsieve.sources`.
    weights : dict, sequence, :class:`~mixsieve.weights.WeightSchedule` or
        :class:`~mixsieve.weights.OnlineMixer`.
        Relative weights by source name (need not sum to 1); default uniform.
    seed : int
        Every random choice (mode ``"random"``, shuffles) is keyed by (seed, source, position or
        epoch), so the stream is the same bytes for any number of workers and ranks.
    mode : ``"exact"`` or ``"random"``
        ``"exact"``: every prefix of the stream holds each source within one sample of
        ``weight * length`` (the eligible-earliest-deadline rule, specs/mixing.md §8; the bound
        holds from each weight change on). ``"random"``: i.i.d. choices with the weights.
    shuffle : bool
        Shuffle each source per epoch: map-style by a keyed permutation (O(1) memory), iterables
        through a seeded buffer of ``shuffle_buffer`` items.
    on_exhausted : ``"cycle"``, ``"stop"`` or ``"drop"``
        When a source runs out: start its next epoch; end the mixture at that position; or
        remove the source and renormalise the others' weights from that position on.
    num_samples : int, optional
        End the stream after this many global positions (over all ranks and workers).
    batch_size : int
        Positions are dealt to processes in blocks of this size. Set it to the DataLoader's
        ``batch_size`` so that each batch is a contiguous run of positions; then the DataLoader
        yields the stream in global order and resume is exact for any worker count.
    rank, world_size : int, optional
        Distributed rank; default from ``torch.distributed`` when it is initialised, else from
        the ``RANK`` / ``WORLD_SIZE`` environment variables (torchrun), else 0 / 1.
    filters : dict name -> bool array or :class:`~mixsieve.sources.NearDupFilter`, optional
        Keep masks for map-style sources, or near-duplicate filters (see NearDupFilter for
        what they guarantee with several workers).
    repeats : dict name -> int array, optional
        How many times each item of a map-style source appears per epoch, e.g. the counts of
        :func:`mixsieve.soft_cap_sample` (scores -> repetition without over-representation).
    output : ``"tuple"`` or ``"dict"``
        ``(source_name, sample)`` pairs, or dicts: the sample's own keys plus ``"source"`` if it
        is a dict, else ``{"source": name, "sample": sample}``.
    chunk_size : int
        Positions each process schedules at a time (aligned to multiples of it). Weight changes
        land on positions no process has scheduled yet, so with frequent online updates at fixed
        positions a smaller chunk (e.g. 512) lets them land sooner, at some cost per sample.

    Examples
    --------
    >>> import mixsieve as ms
    >>> ds = ms.MixtureDataset({"a": list(range(100)), "b": ["x", "y"]}, weights={"a": 3, "b": 1},
    ...                        seed=0, shuffle=False, num_samples=8)
    >>> [name for name, _ in ds]
    ['a', 'a', 'a', 'b', 'a', 'a', 'a', 'b']
    >>> ds.stats()["served"]
    {'a': 6, 'b': 2}
    """

    def __init__(
        self,
        sources: Mapping[str, Any],
        weights: Any = None,
        *,
        seed: int = 0,
        mode: str = "exact",
        shuffle: bool = True,
        on_exhausted: str = "cycle",
        num_samples: int | None = None,
        batch_size: int = 1,
        rank: int | None = None,
        world_size: int | None = None,
        filters: Mapping[str, Any] | None = None,
        repeats: Mapping[str, Any] | None = None,
        shuffle_buffer: int = 1000,
        output: str = "tuple",
        chunk_size: int = 8192,
    ) -> None:
        if not isinstance(sources, Mapping) or not sources:
            raise ValueError("sources must be a non-empty dict of name -> source")
        self.names = [str(n) for n in sources]
        if mode not in ("exact", "random"):
            raise ValueError(f"mode must be 'exact' or 'random', got {mode!r}")
        if on_exhausted not in ("cycle", "stop", "drop"):
            raise ValueError(f"on_exhausted must be 'cycle', 'stop' or 'drop', got {on_exhausted!r}")
        if output not in ("tuple", "dict"):
            raise ValueError(f"output must be 'tuple' or 'dict', got {output!r}")
        if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an int >= 0 (below 2**64), got {seed!r}")
        for what, v, lo in (
            ("batch_size", batch_size, 1),
            ("shuffle_buffer", shuffle_buffer, 1),
            ("chunk_size", chunk_size, 1),
        ):
            if not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{what} must be an int >= {lo}, got {v!r}")
        if num_samples is not None and (not isinstance(num_samples, (int, np.integer)) or num_samples < 0):
            raise ValueError(f"num_samples must be an int >= 0 or None, got {num_samples!r}")
        self.seed = int(seed)
        self.mode = mode
        self.shuffle = bool(shuffle)
        self.on_exhausted = on_exhausted
        self.num_samples = None if num_samples is None else int(num_samples)
        self.batch_size = int(batch_size)
        self.shuffle_buffer = int(shuffle_buffer)
        self.chunk_size = int(chunk_size)
        self.output = output
        self._rank_arg, self._world_arg = rank, world_size
        self._check_rank(rank, world_size)
        self._resolved_rank = (0, 1)  # what torch.distributed said when last asked
        k = len(self.names)
        self._keys = [_source_key(n) for n in self.names]

        # sources: map-style (with index tables from filters / repeats) or iterable
        filters = dict(filters or {})
        tables, self.removed = _index_tables(sources, self.names, filters, dict(repeats or {}))
        self._map: list[_MapSource | None] = []
        self._iterables: dict[int, Any] = {}
        self._iter_filters: dict[int, NearDupFilter | None] = {}
        for d, name in enumerate(self.names):
            src = sources[name]
            if _is_map_style(src):
                ms_ = _MapSource(name, src, tables[name])
                if ms_.size == 0:
                    raise ValueError(
                        f"source {name!r} is empty" + (" after filtering" if tables[name] is not None else "")
                    )
                self._map.append(ms_)
            elif isinstance(src, Iterable) or callable(src):
                self._map.append(None)
                self._iterables[d] = src
                f = filters.get(name)
                self._iter_filters[d] = f if isinstance(f, NearDupFilter) else None
            else:
                raise ValueError(
                    f"source {name!r} is neither map-style (len + getitem) nor iterable: {type(src).__name__}"
                )
        self.sizes = [m.size if m is not None else None for m in self._map]

        # weights policy
        self._mixer: OnlineMixer | None = None
        self._schedule: WeightSchedule | None = None
        self._schedule_vectors: list[np.ndarray] = []
        if weights is None:
            w0 = np.ones(k)
        elif isinstance(weights, OnlineMixer):
            if weights.names != self.names:
                raise ValueError(
                    f"the OnlineMixer is for sources {weights.names}, the mixture has {self.names}"
                )
            self._mixer = weights
            w0 = weight_vector(weights._p, self.names)
            weights._attach(self._on_mixer_update)
        elif isinstance(weights, WeightSchedule):
            self._schedule = weights
            self._schedule_vectors = weights.vectors(self.names)
            w0 = weights.at(0, self._schedule_vectors)
        else:
            w0 = weight_vector(weights, self.names)
        self._w0 = w0
        self._entries: list[tuple[int, list[float]]] = []  # online changes: (position, weights)
        self._shared: _Shared | None = None
        self._state = self._initial_state()
        self._worker_state: dict[str, Any] | None = None
        self._engine: _Engine | None = None
        self._epoch_cache: dict[str, Any] | None = None  # a state at an epoch boundary
        self._checkpoint_cache: dict[str, Any] | None = None  # the last state_dict(consumed_samples=)
        self._ring_seen = 0
        self._get_shared()  # before DataLoader workers fork, so that they share it

    # ---- configuration and state ----------------------------------------------------------

    def _check_rank(self, rank: int | None, world: int | None) -> None:
        if (rank is None) != (world is None):
            raise ValueError("give both rank and world_size, or neither")
        if world is not None and not (
            isinstance(world, int) and world >= 1 and isinstance(rank, int) and 0 <= rank < world
        ):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank!r}, world_size={world!r}")

    def _rank_world(self) -> tuple[int, int]:
        if self._world_arg is not None:
            return int(self._rank_arg), int(self._world_arg)  # type: ignore[arg-type]
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                self._resolved_rank = (dist.get_rank(), dist.get_world_size())
                return self._resolved_rank
        except ImportError:  # pragma: no cover
            pass
        if self._resolved_rank == (0, 1) and "WORLD_SIZE" in os.environ and "RANK" in os.environ:
            # launched by torchrun (or alike) but the process group is not up yet
            try:
                rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
            except ValueError:
                raise ValueError(
                    f"RANK={os.environ['RANK']!r} / WORLD_SIZE={os.environ['WORLD_SIZE']!r} are not integers"
                ) from None
            self._check_rank(rank, world)
            return rank, world
        # a spawned DataLoader worker has no process group: it uses what its parent saw
        return self._resolved_rank

    def _config(self) -> dict[str, Any]:
        return {
            "names": self.names,
            "seed": self.seed,
            "mode": self.mode,
            "shuffle": self.shuffle,
            "on_exhausted": self.on_exhausted,
            "sizes": self.sizes,
            "batch_size": self.batch_size,
            "policy": "mixer" if self._mixer else ("schedule" if self._schedule else "static"),
        }

    def _initial_state(self) -> dict[str, Any]:
        k = len(self.names)
        return {
            "position": 0,
            "segment_start": 0,
            "weights": (self._w0 / self._w0.sum()).tolist(),
            "policy": self._w0.tolist(),
            "counts": [0] * k,
            "segment_counts": [0] * k,
            "dropped": [],
            "lengths": [-1] * k,
            "ended": False,
        }

    def state_dict(self, consumed_samples: int | None = None) -> dict[str, Any]:
        """A small JSON-serialisable state to resume the stream exactly (see :meth:`load_state_dict`).

        Iterated in this process (``num_workers=0``, or directly): the state after the samples
        yielded so far. With DataLoader worker processes the dataset cannot see what the
        training loop consumed: pass ``consumed_samples`` (global, over all ranks, as in
        Megatron), or use ``torchdata.stateful_dataloader.StatefulDataLoader``, which calls this
        inside the workers. The state holds the global position, per-source counts (so epochs
        and offsets), the current weights, pending weight changes and the mixer's state.
        """
        eng = self._engine
        if _in_worker():
            # inside a DataLoader worker (StatefulDataLoader): this worker's own resume point
            if self._worker_state is not None:
                return dict(self._worker_state)
            return self._worker_state_dict()
        if consumed_samples is not None:
            if consumed_samples < 0:
                raise ValueError(f"consumed_samples must be >= 0, got {consumed_samples}")
            pos = self._state["position"] + int(consumed_samples)
            st = self._advance_from_nearest(pos)
        elif self._shared is not None and self._shared.rows[1:].any():
            raise ValueError(
                "this dataset was iterated by DataLoader worker processes, so it cannot know what the "
                "training loop consumed: pass consumed_samples=<samples consumed over all ranks>, or use "
                "torchdata.stateful_dataloader.StatefulDataLoader"
            )
        elif eng is not None:
            st = eng.global_state()
        else:
            st = dict(self._state)
        return self._wrap(st)

    def _wrap(
        self, st: dict[str, Any], entries: list[tuple[int, list[float]]] | None = None
    ) -> dict[str, Any]:
        pos = st["position"]
        entries = self._entries if entries is None else entries
        sources = {}
        for d, name in enumerate(self.names):  # for people reading checkpoints; not needed to resume
            c, size = int(st["counts"][d]), self.sizes[d]
            sources[name] = (
                {"consumed": c, "epoch": c // size, "offset": c % size} if size else {"consumed": c}
            )
        out = {
            "version": _STATE_VERSION,
            "config": self._config(),
            "state": st,
            "sources": sources,
            "changes": [[p, w] for p, w in entries if p >= pos],
        }
        if self._mixer is not None:
            out["mixer"] = self._mixer.state_dict()
        plain: dict[str, Any] = json.loads(json.dumps(out))  # plain JSON types only
        return plain

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` (or from a ``StatefulDataLoader.state_dict()``).

        The next iteration continues exactly where the saved stream stopped, with any number
        of workers. A state from a different configuration (source names, seed, mode, sizes,
        ...) raises ``ValueError`` saying what differs.
        """
        if "_snapshot" in state:
            state = self._from_loader_state(state)
        elif "dataset_state" in state and "_num_yielded" in state:  # StatefulDataLoader, num_workers=0
            state = state["dataset_state"]
        if not isinstance(state, Mapping) or "config" not in state or "state" not in state:
            raise ValueError("not a MixtureDataset state dict (missing 'config'/'state')")
        self._check_config(state["config"])
        if "worker" in state:
            if not _in_worker():
                raise ValueError(
                    "this is one DataLoader worker's state (from inside a worker); load the whole "
                    "StatefulDataLoader state, or a state from MixtureDataset.state_dict()"
                )
            self._worker_state = dict(state)
        else:
            self._state = dict(state["state"])
            self._engine = None
        self._entries = [(int(p), list(w)) for p, w in state.get("changes", [])]
        if self._mixer is not None and "mixer" in state:
            self._mixer.load_state_dict(state["mixer"])
        if not _in_worker():
            shared = self._get_shared()
            shared.reset(self._state["position"])
            self._ring_seen = 0
            self._epoch_cache = None
            self._checkpoint_cache = None
            if self.num_samples:  # the epoch the saved position is in (a finished one is not replayed)
                shared.header[2] = self._state["position"] // self.num_samples

    def _check_config(self, cfg: Mapping[str, Any]) -> None:
        mine = self._config()
        diffs = [
            f"{k}: state has {cfg.get(k)!r}, dataset has {v!r}" for k, v in mine.items() if cfg.get(k) != v
        ]
        if diffs:
            raise ValueError(
                "state dict is from a different MixtureDataset configuration; " + "; ".join(diffs)
            )

    def _from_loader_state(self, loader_state: Mapping[str, Any]) -> dict[str, Any]:
        """Global state from a StatefulDataLoader state (any num_workers later)."""
        snap = loader_state.get("_snapshot", {})
        workers = snap.get("_worker_snapshots") or {}
        states = []
        for ws in workers.values():
            ds_state = ws.get("dataset_state") if isinstance(ws, Mapping) else None
            if ds_state is not None:
                states.append(ds_state)
        if not states:
            main = snap.get("_main_snapshot", {})
            ds_state = main.get("dataset_state") if isinstance(main, Mapping) else None
            if ds_state is None:
                raise ValueError("the StatefulDataLoader state holds no MixtureDataset state")
            return dict(ds_state)
        for s in states:
            self._check_config(s["config"])
        w0 = states[0]["worker"]
        # batches consumed after the snapshot (snapshot_every_n_steps > 1) come next in order
        later = int(loader_state.get("_steps_since_snapshot", 0)) * self.batch_size
        total = sum(int(s["worker"]["yielded"]) for s in states) + later
        pos = int(w0["base"]) + total * int(w0["ranks"])
        start = min(states, key=lambda s: s["state"]["position"])
        self._entries = [(int(p), list(w)) for p, w in start.get("changes", [])]
        st = self._advance(dict(start["state"]), pos)
        out = self._wrap(st)
        if "mixer" in start:
            out["mixer"] = start["mixer"]
        return out

    def __len__(self) -> int:
        """Samples this rank's iteration yields (all its DataLoader workers together): needs
        ``num_samples``. After ``load_state_dict`` it counts what is left of that epoch."""
        if self.num_samples is None:
            raise TypeError("a MixtureDataset without num_samples is an endless stream and has no len()")
        rank, world = self._rank_world()
        n = self.num_samples
        shared = self._get_shared()
        start = max(int(self._state["position"]), int(shared.header[2]) * n)
        remaining = max(0, (start // n + 1) * n - start) if n else 0
        full, rest = divmod(remaining, self.batch_size)  # blocks from start, dealt round-robin
        mine = (full // world + (1 if rank < full % world else 0)) * self.batch_size
        if rest and full % world == rank:
            mine += rest
        return mine

    # ---- epochs -------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Iterate epoch ``epoch``: global positions ``[epoch * num_samples, (epoch + 1) * num_samples)``.

        Call it before each ``for batch in loader`` pass (as with ``DistributedSampler``); it
        reaches persistent DataLoader workers through shared memory. Without it every pass
        yields the same epoch. Needs ``num_samples`` (the length of an epoch).
        """
        if not self.num_samples:
            raise ValueError("set_epoch needs num_samples (the number of positions in an epoch)")
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        shared = self._get_shared()
        self._epoch_start(int(epoch))  # computed once here, inherited by workers started after
        with shared.lock():
            shared.header[2] = int(epoch)

    def _epoch_start(self, epoch: int) -> dict[str, Any]:
        """The state where epoch ``epoch`` begins (or the loaded state, if it is inside it)."""
        if not self.num_samples:
            return dict(self._state)
        target = epoch * self.num_samples
        if self._state["position"] >= target:
            return dict(self._state)
        start = self._nearest_state(target)
        if start["position"] < target:
            shared = self._get_shared()
            with shared.lock():  # later weight changes must land after this point
                shared.header[1] = max(int(shared.header[1]), target)
            if self.on_exhausted != "cycle":
                # the replay must know where iterables end, and nobody may have read that far
                lengths = [max(a, b) for a, b in zip(start["lengths"], shared.lengths.tolist())]
                for d in self._iterables:
                    if lengths[d] < 0:
                        lengths[d] = self._count_items(d)
                start = {**start, "lengths": lengths}
            start = self._advance(start, target)
            self._epoch_cache = start
        return dict(start)

    def _nearest_state(self, target: int) -> dict[str, Any]:
        """The known state closest before ``target``: the loaded one, or one computed since (at
        an epoch start or a checkpoint), so that checkpoints every N samples cost O(N) each."""
        best = self._state
        for cache in (self._epoch_cache, self._checkpoint_cache):
            if cache is not None and best["position"] <= cache["position"] <= target:
                best = cache
        return best

    def _advance_from_nearest(self, target: int) -> dict[str, Any]:
        st = self._advance(self._nearest_state(target), target)
        self._checkpoint_cache = st  # workers have passed target: no weight change can land before it
        return st

    def _count_items(self, d: int) -> int:
        """Items in the first pass of iterable source ``d`` (after its filter)."""
        reader = _IterSource(self.names[d], self._iterables[d], self.seed, False, 1, self._iter_filters[d])
        n = sum(1 for _ in reader._open_epoch())
        if n == 0:
            raise ValueError(f"source {self.names[d]!r} is empty (epoch 0 yielded nothing)")
        return n

    # ---- weights ------------------------------------------------------------------------------

    def set_weights(self, weights: Any, *, position: int | None = None, sync: bool | None = None) -> int:
        """Change the weights from a global position on; returns that position.

        By default the change takes effect at the next chunk of positions no process has
        started yet (where depends on how far ahead the workers run). Pass ``position`` (e.g.
        the samples consumed so far plus a lookahead larger than the DataLoader's prefetch) to
        fix it: then a run restarted from a checkpoint places the same change at the same
        position and replays bit for bit; a position the workers have already passed raises
        ``ValueError``. Workers pick the change up through shared memory; it is recorded in the
        state. In a ``torch.distributed`` run with ``sync`` (default: on when initialised) every
        rank must call this together; they agree on the position by an all-reduce (max).
        """
        vec = weight_vector(weights, self.names)
        shared = self._get_shared()
        with shared.lock():
            frontier = int(shared.header[1])
            if self._engine is not None:
                frontier = max(frontier, self._engine.claimed)
            earliest = max(frontier, self._state["position"])
            if position is None:
                pos = max(earliest, max((p for p, _ in self._entries), default=0))
            elif position < earliest:
                raise ValueError(
                    f"position {position} has already been generated (the stream is prepared up to "
                    f"{earliest}); pass a position further ahead, e.g. samples consumed + a lookahead "
                    "larger than num_workers * prefetch_factor * batch_size"
                )
            else:
                pos = int(position)
            pos = _sync_position(pos, sync)
            n = int(shared.header[0])
            shared.ring[n % _MAX_ENTRIES, 0] = pos
            shared.ring[n % _MAX_ENTRIES, 1:] = vec
            shared.header[0] = n + 1
            shared.header[1] = max(int(shared.header[1]), pos)
            self._ring_seen = n + 1
        self._entries.append((pos, vec.tolist()))
        if self._engine is not None:  # the in-process walk: directly (it has seen the ring up to here)
            self._engine.add_entry(pos, vec)
            self._engine.seen_entries = self._ring_seen
        return pos

    def _on_mixer_update(self, p: np.ndarray, position: int | None) -> None:
        mixer = self._mixer
        assert mixer is not None
        self.set_weights(p, position=position, sync=mixer.sync)
        shared = self._get_shared()
        with shared.lock():  # workers put the mixer's state into their state dicts
            shared.mixer[:] = np.concatenate(([1.0, mixer._t], mixer._p, mixer._rewards))

    def _get_shared(self) -> _Shared:
        if self._shared is None:
            self._shared = _Shared(len(self.names))
            self._shared.reset(self._state["position"])
            for i, (p, w) in enumerate(self._entries):
                self._shared.ring[i % _MAX_ENTRIES, 0] = p
                self._shared.ring[i % _MAX_ENTRIES, 1:] = w
            self._shared.header[0] = len(self._entries)
            self._ring_seen = len(self._entries)
        return self._shared

    def __getstate__(self) -> dict[str, Any]:
        self._get_shared()  # workers must share the parent's block
        self._rank_world()  # and its rank (spawned workers cannot ask torch.distributed)
        d = self.__dict__.copy()
        d["_engine"] = None
        return d

    # ---- iteration ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        shared = self._get_shared()
        shared.ensure_process()
        info = _worker_info()
        nw, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        if nw > _MAX_WORKERS:
            raise ValueError(f"at most {_MAX_WORKERS} DataLoader workers are supported, got {nw}")
        rank, world = self._rank_world()
        ws = self._worker_state
        if ws is not None and info is not None:
            w = ws["worker"]
            if (w["slot"], w["period"]) != (wid * world + rank, nw * world):
                raise ValueError(
                    f"worker state is for slot {w['slot']} of {w['period']}, "
                    f"this is slot {wid * world + rank} "
                    f"of {nw * world}; resume with the same num_workers and world size, or load the state "
                    "through MixtureDataset.load_state_dict for a different layout"
                )
            start, base, yielded = dict(ws["state"]), int(w["base"]), int(w["yielded"])
            self._worker_state = None
        else:
            start = self._epoch_start(int(shared.header[2]))
            base, yielded = int(start["position"]), 0
        eng = _Engine(
            self,
            start,
            base,
            slot=wid * world + rank,
            period=nw * world,
            ranks=world,
            row=0 if info is None else 1 + wid,
            yielded=yielded,
        )
        self._engine = eng
        return eng.run()

    def _worker_state_dict(self) -> dict[str, Any]:
        eng = self._engine
        if eng is None:
            st, base, yielded = dict(self._state), int(self._state["position"]), 0
            info = _worker_info()
            rank, world = self._rank_world()
            nw, wid = (info.num_workers, info.id) if info is not None else (1, 0)
            worker = {
                "slot": wid * world + rank,
                "period": nw * world,
                "ranks": world,
                "base": base,
                "yielded": yielded,
            }
        else:
            st = eng.resume_state()
            worker = {
                "slot": eng.slot,
                "period": eng.period,
                "ranks": eng.ranks,
                "base": eng.base,
                "yielded": eng.yielded(),
            }
        shared = self._get_shared()
        with shared.lock():  # the changes made so far, and the main process's mixer state
            if eng is not None:
                eng.read_shared(shared)
                entries = [(p, v.tolist()) for p, v in eng.entries]
            else:
                n = int(shared.header[0])
                entries = self._entries + [
                    (int(shared.ring[i % _MAX_ENTRIES, 0]), shared.ring[i % _MAX_ENTRIES, 1:].tolist())
                    for i in range(self._ring_seen, n)
                ]
            mixer = shared.mixer.copy()
        out = self._wrap(st, entries)
        if self._mixer is not None and mixer[0] == 1.0:
            k = len(self.names)
            out["mixer"] = {
                "names": self.names,
                "t": int(mixer[1]),
                "p": mixer[2 : 2 + k].tolist(),
                "rewards": mixer[2 + k :].tolist(),
            }
        out["worker"] = worker
        return out

    def _advance(self, start: Mapping[str, Any], position: int) -> dict[str, Any]:
        """The schedule state at ``position``, replayed from ``start`` without touching data."""
        if position < start["position"]:
            raise ValueError(f"cannot go back from position {start['position']} to {position}")
        eng = _Engine(self, dict(start), int(start["position"]), slot=0, period=1, ranks=1, row=-1, yielded=0)
        if self._shared is not None:
            eng.lengths = [
                max(a, b) if b >= 0 else a for a, b in zip(eng.lengths, self._shared.lengths.tolist())
            ]
        eng.replay(position)
        return eng.global_state()

    # ---- reporting ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Per-source samples served (by this process and its DataLoader workers, including
        batches the workers have prefetched), completed epochs of each source at the furthest
        position reached, the current weights, and what filters removed per source."""
        served = np.zeros(len(self.names), np.int64)
        reached = np.array(self._state["counts"], np.int64)
        if self._shared is not None:
            rows = self._shared.rows
            served += rows[:, 0, :].sum(axis=0)
            reached = np.maximum(reached, rows[:, 1, :].max(axis=0))
        eng = self._engine
        weights = eng.weights() if eng is not None else np.array(self._state["weights"])
        epochs = {}
        for d, n in enumerate(self.names):
            size = self.sizes[d]
            epochs[n] = int(reached[d] // size) if size else None
        return {
            "served": {n: int(v) for n, v in zip(self.names, served)},
            "epochs": epochs,
            "weights": {n: float(v) for n, v in zip(self.names, weights)},
            "removed": dict(self.removed),
        }

    def __repr__(self) -> str:
        kinds = ["map" if m is not None else "iterable" for m in self._map]
        parts = ", ".join(f"{n}:{k}" for n, k in zip(self.names, kinds))
        return f"MixtureDataset({parts}; mode={self.mode!r}, seed={self.seed})"


def _in_worker() -> bool:
    return _worker_info() is not None


def _worker_info() -> Any:
    try:
        from torch.utils.data import get_worker_info
    except ImportError:  # pragma: no cover
        return None
    return get_worker_info()


def _sync_position(pos: int, sync: bool | None) -> int:
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return pos
    if sync is False or not (dist.is_available() and dist.is_initialized()):
        return pos
    t = torch.tensor([pos], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


class _Engine:
    """One process's walk along the schedule, from a saved state."""

    def __init__(
        self,
        ds: MixtureDataset,
        start: dict[str, Any],
        base: int,
        *,
        slot: int,
        period: int,
        ranks: int,
        row: int,
        yielded: int,
    ) -> None:
        self.ds = ds
        k = len(ds.names)
        self.k = k
        self.start = start
        self.base = base
        self.slot, self.period, self.ranks, self.row = slot, period, ranks, row
        self.sched = _core.MixSchedule(k, ds.mode == "exact", ds.seed)
        self.sched.restore(
            start["position"],
            start["segment_start"],
            np.array(start["weights"], np.float64),
            np.array(start["counts"], np.int64),
            np.array(start["segment_counts"], np.int64),
        )
        self.policy = np.array(start["policy"], np.float64)
        self.dropped = set(start["dropped"])
        self.lengths = list(start["lengths"])
        self.ended = bool(start["ended"])
        # stable sort: of several changes at one position, the last one made wins
        self.entries = sorted(
            ((p, np.array(w, np.float64)) for p, w in ds._entries if p >= start["position"]),
            key=lambda e: e[0],
        )
        self.seen_entries = ds._ring_seen
        self.claimed = start["position"]
        self.yielded_before = yielded
        self.yielded_pieces = 0
        # the last piece of the schedule: the state at its start and its sources
        self._piece: tuple[dict[str, Any], np.ndarray] | None = None
        self._cur: Iterator[Any] | None = None
        self._cur_len = 0
        self._cur_pos = np.zeros(0, np.int64)
        self.iters = {
            d: _IterSource(ds.names[d], src, ds.seed, ds.shuffle, ds.shuffle_buffer, ds._iter_filters[d])
            for d, src in ds._iterables.items()
        }
        self._skipped = not self.iters
        self.caps_fixed = np.full(k, -1, np.int64)
        if ds.on_exhausted != "cycle":
            for d, size in enumerate(ds.sizes):
                if size is not None:
                    self.caps_fixed[d] = size
        self.name_list = list(ds.names)
        # map-style sources held in Python lists are gathered (and shuffled) in C++ directly
        self.lists = [m.data if m is not None and type(m.data) is list else None for m in ds._map]
        self.tables = [m.table if m is not None else None for m in ds._map]
        self.sizes = np.array([m.size if m is not None else 0 for m in ds._map], np.int64)
        self.keys = np.array(ds._keys, np.uint64)
        self.seed = ds.seed

    # -- bookkeeping for state dicts --

    def weights(self) -> np.ndarray:
        return np.array(self.sched.state()["weights"])

    def _sched_state(self) -> dict[str, Any]:
        st = self.sched.state()
        return {
            "position": int(st["position"]),
            "segment_start": int(st["segment_start"]),
            "weights": [float(x) for x in st["weights"]],
            "policy": self.policy.tolist(),
            "counts": [int(x) for x in st["counts"]],
            "segment_counts": [int(x) for x in st["segment_counts"]],
            "dropped": sorted(self.dropped),
            "lengths": list(self.lengths),
            "ended": self.ended,
        }

    def _state_in_piece(self, upto: int) -> dict[str, Any]:
        """The state after the first ``upto`` positions of the current piece."""
        assert self._piece is not None
        snap, src = self._piece
        add = np.bincount(src[:upto], minlength=self.k)
        st = dict(snap)
        st["position"] = snap["position"] + upto
        st["counts"] = (np.array(snap["counts"]) + add).tolist()
        st["segment_counts"] = (np.array(snap["segment_counts"]) + add).tolist()
        return st

    def _consumed_in_piece(self) -> int:
        if self._cur is None:
            return 0
        return self._cur_len - operator.length_hint(self._cur)

    def yielded(self) -> int:
        return self.yielded_before + self.yielded_pieces + self._consumed_in_piece()

    def resume_state(self) -> dict[str, Any]:
        """State at this process's next own position (what a restarted worker continues from)."""
        if self._piece is None:
            return dict(self.start)
        t = self._consumed_in_piece()
        if t < self._cur_len:
            snap = self._piece[0]
            return self._state_in_piece(int(self._cur_pos[t]) - snap["position"])
        return self._sched_state()

    def global_state(self) -> dict[str, Any]:
        """State at the global position consumed so far (lock-step ranks, whole blocks)."""
        if self.period == 1:
            return self.resume_state()
        pos = self.base + self.yielded() * self.ranks
        if self._piece is not None:
            start = self._piece[0]["position"]
            if start <= pos <= start + len(self._piece[1]):
                return self._state_in_piece(pos - start)
        return self.ds._advance(self.start, pos)

    # -- events --

    def add_entry(self, pos: int, vec: np.ndarray) -> None:
        self.entries.append((pos, vec))
        self.entries.sort(key=lambda e: e[0])

    def _sync(self, chunk_end: int) -> None:
        shared = self.ds._shared
        if shared is None or self.row < 0:
            return
        with shared.lock():
            if shared.header[1] < chunk_end:
                shared.header[1] = chunk_end
            self.read_shared(shared)
        self.claimed = max(self.claimed, chunk_end)

    def read_shared(self, shared: _Shared) -> None:
        """New weight changes and discovered iterable lengths (call with the lock held)."""
        n = int(shared.header[0])
        if n > self.seen_entries:
            if n - self.seen_entries > _MAX_ENTRIES:
                raise RuntimeError(f"a DataLoader worker fell more than {_MAX_ENTRIES} weight changes behind")
            for i in range(self.seen_entries, n):
                e = shared.ring[i % _MAX_ENTRIES]
                pos = int(e[0])
                if pos < self.sched.position:
                    raise RuntimeError(f"weight change at position {pos} arrived after it was passed")
                self.add_entry(pos, e[1:].copy())
            self.seen_entries = n
        for d, ln in enumerate(shared.lengths.tolist()):
            if ln >= 0 and self.lengths[d] < 0:
                self.lengths[d] = ln

    def _next_event(self, pos: int) -> int | None:
        nxt = None
        for p, _ in self.entries:
            if p > pos:
                nxt = p
                break
        sch = self.ds._schedule
        if sch is not None:
            c = sch.next_change(pos)
            if c is not None and (nxt is None or c < nxt):
                nxt = c
        return nxt

    def _apply_events(self, pos: int) -> None:
        """Apply every change recorded at exactly ``pos``."""
        new = None
        sch = self.ds._schedule
        if sch is not None and pos > 0 and (sch.next_change(pos - 1) == pos):
            new = sch.at(pos, self.ds._schedule_vectors)
        for p, v in self.entries:
            if p == pos:
                new = v  # an online change at the same position wins over the schedule
        if self.entries and self.entries[0][0] <= pos:
            self.entries = [e for e in self.entries if e[0] > pos]
        if new is not None:
            self.policy = np.asarray(new, np.float64)
            self._set_effective()

    def _set_effective(self) -> bool:
        w = self.policy.copy()
        for d in self.dropped:
            w[d] = 0.0
        if not w.sum() > 0:
            self.ended = True
            return False
        self.sched.set_weights(w)
        return True

    def _caps(self) -> np.ndarray | None:
        if self.ds.on_exhausted == "cycle":
            return None
        caps = self.caps_fixed.copy()
        for d, ln in enumerate(self.lengths):
            if ln >= 0:
                caps[d] = ln
        return caps

    def _exhausted(self) -> None:
        """The schedule stopped at a source that has no items left."""
        counts = self.sched.state()["counts"]
        caps = self._caps()
        assert caps is not None
        out = [d for d in range(self.k) if caps[d] >= 0 and counts[d] >= caps[d]]
        if self.ds.on_exhausted == "stop":
            self.ended = True
            return
        self.dropped.update(out)
        self._set_effective()

    def _end(self) -> int | None:
        n = self.ds.num_samples
        if n is None:
            return None
        return (self.base // n + 1) * n if n else 0  # the end of the epoch this walk started in

    # -- the walk --

    def _pieces(self, end_pos: int | None, with_data: bool) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yields (start, src, item) of consecutive pieces of the schedule, applying events."""
        sched = self.sched
        end = self._end() if with_data else None  # a replay may cross epochs
        if end_pos is not None:
            end = end_pos if end is None else min(end, end_pos)
        while not self.ended:
            pos = sched.position
            if end is not None and pos >= end:
                if with_data and end_pos is None:  # the next epoch starts here: keep it
                    self.ds._epoch_cache = self._sched_state()
                return
            chunk = self.ds.chunk_size
            chunk_end = (pos // chunk + 1) * chunk
            if end is not None:
                chunk_end = min(chunk_end, end)
            self._sync(chunk_end)
            self._apply_events(pos)
            nxt = self._next_event(pos)
            stop = chunk_end if nxt is None else min(chunk_end, nxt)
            snap = self._sched_state()
            caps = self._caps()
            src, item = sched.fill(stop - pos, caps)
            if with_data and self.iters:
                short = self._pull_iterables(src, item)
                if short:  # an iterable ended inside this piece: regenerate with its length known
                    sched.restore(
                        snap["position"],
                        snap["segment_start"],
                        np.array(snap["weights"]),
                        np.array(snap["counts"], np.int64),
                        np.array(snap["segment_counts"], np.int64),
                    )
                    continue
            self._piece = (snap, src)
            if len(src):
                yield pos, src, item
            if len(src) < stop - pos:
                self._exhausted()

    def replay(self, position: int) -> None:
        for _ in self._pieces(position, with_data=False):
            pass

    def _pull_iterables(self, src: np.ndarray, item: np.ndarray) -> bool:
        cycle = self.ds.on_exhausted == "cycle"
        short = False
        shared = self.ds._shared
        for d, it in self.iters.items():
            sel = item[src == d]
            if not len(sel):
                continue
            ended = it.pull_until(int(sel[-1]), cycle)
            if ended is not None:
                self.lengths[d] = ended
                if shared is not None and self.row >= 0:
                    with shared.lock():
                        shared.lengths[d] = ended
                short = True
        return short

    def _skip_iterables(self) -> None:
        if self._skipped:
            return
        counts = self.sched.state()["counts"]
        for d, it in self.iters.items():
            it.skip_to(int(counts[d]), self.ds.on_exhausted == "cycle")
        self._skipped = True

    def run(self) -> Iterator[Any]:
        # Per-sample cost is one C-level step of itertools.chain over a zip of ready lists;
        # Python runs once per piece of the schedule.
        return itertools.chain.from_iterable(self._run_pieces())

    def _run_pieces(self) -> Iterator[Iterator[Any]]:
        ds = self.ds
        self._skip_iterables()
        bsz, period, slot, base = ds.batch_size, self.period, self.slot, self.base
        shared = ds._shared
        row = self.row
        out_dict = ds.output == "dict"
        for pos, src, item in self._pieces(None, with_data=True):
            n = len(src)
            g = np.arange(pos, pos + n, dtype=np.int64)
            mine = ((g - base) // bsz) % period == slot if period > 1 else np.ones(n, bool)
            own_src = src[mine] if period > 1 else src
            own_item = item[mine] if period > 1 else item
            m = len(own_src)
            prefetched: list[np.ndarray | None] = [None] * self.k
            present = np.bincount(own_src, minlength=self.k) if m else np.zeros(self.k, np.int64)
            for d in np.flatnonzero(present).tolist():
                if self.lists[d] is None and ds._map[d] is not None:  # lists are read in C++ below
                    prefetched[d] = self._fetch_map(
                        d, own_item if present[d] == m else own_item[own_src == d]
                    )
            for d, it in self.iters.items():  # every process drops the others' share of the iterables
                sel = src == d
                if sel.any():
                    got = it.take(item[sel], mine[sel])
                    prefetched[d] = _objects(got, len(got))
            assert shared is not None and row >= 0  # stats row of this process
            shared.rows[row, 0] += present
            np.maximum(shared.rows[row, 1], np.array(self.sched.state()["counts"]), out=shared.rows[row, 1])
            if not m:
                continue
            self.yielded_pieces += self._cur_len
            self._cur_pos = g[mine] if period > 1 else g
            self._cur_len = m
            # zip reuses its result tuple when the consumer lets go of it; the names iterator's
            # length hint tells how many samples of this piece were taken (for state_dict)
            names, values = _core.gather_piece(
                own_src,
                own_item,
                self.lists,
                self.tables,
                prefetched,
                self.name_list,
                self.sizes,
                ds.shuffle,
                self.seed,
                self.keys,
            )
            self._cur = iter(names)
            if out_dict:
                yield map(_as_dict, self._cur, values)
            else:
                yield zip(self._cur, values)

    def _fetch_map(self, d: int, items: np.ndarray) -> np.ndarray:
        ds = self.ds
        src = ds._map[d]
        assert src is not None
        return src.fetch(_core.source_indices(items, src.size, self.seed, ds._keys[d], ds.shuffle))


def _as_dict(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        out = dict(value)
        out["source"] = name
        return out
    return {"source": name, "sample": value}
