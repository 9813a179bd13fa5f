"""MixtureDataset: a weighted mixture of data sources as a PyTorch ``IterableDataset``.

The mixed stream is a sequence of global positions 0, 1, 2, ... A ``_core.MixPlan`` decides
which source fills each position and which item of that source (its running count); every
process (rank x DataLoader worker) computes the same plan and keeps its own positions: blocks of
``batch_size`` positions, block ``b`` going to rank ``b % R`` and, within the rank, to worker
``(b // R) % W``. Item ``k`` of a map-style source of ``n`` items is index ``perm_e(k % n)`` of
epoch ``e = k // n``, with ``perm_e`` a keyed bijection. Weight changes take effect at recorded
positions and reach workers through shared memory. docs/mixing.md has the details.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import math
import os
import sys
import weakref
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from types import FrameType
from typing import Any

import numpy as np

from .. import _core
from .._checks import check_bool, check_choice, check_int, describe
from ..sources import NearDupFilter, map_shared, release_shared, share_array
from ..weights import WeightSchedule, attach_controller, is_controller, weight_vector
from . import checkpoint, distributed
from .engine import Engine
from .plan import MixturePlan
from .readers import (
    MapReader,
    Sources,
    as_source,
    check_source,
    index_tables,
    source_key,
    whole_stream_wanted,
)
from .shared import MAX_WORKERS, RING, SharedControl

try:  # torch is optional: without it MixtureDataset is a plain iterable
    from torch.utils.data import IterableDataset as _Base
except ImportError:  # pragma: no cover - exercised only without torch
    _Base = object  # type: ignore[assignment,misc]

_EXHAUSTED = {"cycle": 0, "stop": 1, "drop": 2}
_NOT_CONFIG = ("weights", "policy", "block")  # may differ on a restart (new weights apply from there)
MAX_POSITION = 2**62  # positions, sample counts and chunk sizes stay below this
_MAX_PLAN_CELLS = 20_000_000  # windows x sources a dry run keeps (three arrays of them)
_FOLDED = (
    "more than 4,096 weight changes were made since this pass began and its history is no longer "
    "kept, so the pass cannot be replayed from its start: call set_epoch() before each pass, or "
    "ds.load_state_dict(ds.state_dict(consumed_samples=...)) to start from a checkpoint"
)


def loader_batch_size(frame: FrameType | None) -> int:
    """The batch size of the DataLoader fetching from us, read from torch's fetcher frame that
    asks for our first sample (1 when it does not batch); 0 when we are not read by a DataLoader.
    torch has no public way to tell a dataset its DataLoader's batch size."""
    if frame is None or frame.f_code.co_name != "fetch":
        return 0
    auto = getattr(frame.f_locals.get("self"), "auto_collation", None)
    if auto is None:
        return 0
    if not auto:
        return 1  # DataLoader(batch_size=None): one sample per step
    index = frame.f_locals.get("possibly_batched_index")
    return len(index) if index is not None else 0


class MixtureDataset(_Base):  # type: ignore[misc,valid-type,type-arg,unused-ignore]
    """A weighted mixture of data sources, streamed into a PyTorch ``DataLoader``.

    Parameters
    ----------
    sources : dict str -> source
        Map-style sources (``len`` + ``getitem``: lists, arrays, HF ``Dataset``,
        :class:`~mixsieve.sources.JsonlSource`), iterables (a Hugging Face streaming dataset, a
        torch ``IterableDataset``, another ``MixtureDataset``), or
        :class:`~mixsieve.sources.IterableSource`. See :mod:`mixsieve.sources`.
    weights : dict, sequence, :class:`~mixsieve.weights.WeightSchedule` or
        :class:`~mixsieve.weights.OnlineMixer`.
        Relative weights by source name (need not sum to 1; any finite values >= 0, from
        subnormals to 1e308); default uniform.
    seed : int
        Every random choice (mode ``"random"``, shuffles) is keyed by (seed, source, position or
        epoch), so the stream is the same bytes for any number of workers and ranks.
    mode : ``"exact"`` or ``"random"``
        ``"exact"``: each source's count follows its target, the integral of its weight over
        the positions so far: with static weights every prefix is within one sample of
        ``weight * length``; across weight changes each source's lag is carried, never reset
        (docs/mixing.md states the rule and its bounds). ``"random"``: i.i.d. choices.
    shuffle : bool
        Shuffle each source per epoch: map-style by a keyed permutation (O(1) memory), iterables
        through a seeded buffer of ``shuffle_buffer`` items.
    on_exhausted : ``"cycle"``, ``"stop"`` or ``"drop"``
        When a source runs out: start its next epoch; end the mixture at that position; or
        remove the source and renormalise the others' weights from that position on.
    num_samples : int, optional
        End the stream after this many global positions (over all ranks and workers).
    batch_size : int, optional
        Positions are dealt to processes in blocks of this size. Set it to the DataLoader's
        ``batch_size``: then each batch is a contiguous run of positions, the DataLoader yields
        the stream in global order, and ``state_dict(consumed_samples=...)`` is exact for any
        worker count. Left unset, positions are dealt one at a time, and a checkpoint taken
        from ``consumed_samples`` with several DataLoader workers is refused (it would not be a
        prefix of the stream).
    rank, world_size : int, optional
        Data-parallel rank; default from ``process_group``, else the default
        ``torch.distributed`` group when it is initialised, else the ``RANK`` / ``WORLD_SIZE``
        environment variables (torchrun), else 0 / 1.
    process_group : torch.distributed ProcessGroup, optional
        The data-parallel group (tensor- and pipeline-parallel jobs): ranks are counted in it,
        and weight changes are agreed in it.
    filters : dict name -> bool array or :class:`~mixsieve.sources.NearDupFilter`, optional
        Keep masks for map-style sources, or near-duplicate filters.
    repeats : dict name -> int array, optional
        How many times each item of a map-style source appears per epoch, e.g. the counts of
        :func:`mixsieve.soft_cap_sample`.
    output : ``"tuple"`` or ``"dict"``
        ``(source_name, sample)`` pairs, or dicts: the sample's own keys plus ``"source"`` if it
        is a dict (a ``"source"`` key of its own is replaced by the source's name), else
        ``{"source": name, "sample": sample}``.
    chunk_size : int
        Positions each process schedules at a time. Weight changes land on positions no process
        has scheduled yet, so with frequent online updates a smaller chunk lets them land sooner.
    unit : ``"samples"`` or ``"tokens"``
        What the weights are shares of. ``"tokens"``: a weight of 0.3 means 30% of the tokens
        served. In ``mode="exact"`` every prefix of the stream then holds each source's tokens
        within the longest item's length of its share (weighted fair queueing, WF2Q; the rule
        and its proof are in docs/mixing.md); in ``mode="random"`` sources are drawn with
        probability proportional to weight / mean item length. Needs every source map-style, with
        its item lengths known (``lengths``, or a source that knows them such as
        :class:`~mixsieve.sources.IndexedTokenSource`). The schedule reads lengths only, never
        the data.
    lengths : dict name -> 1-D int array or column name, optional
        Tokens of each item of a source (``unit="tokens"``): an array with one value per item, or
        the name of a column of a :class:`~mixsieve.sources.ParquetSource`,
        :class:`~mixsieve.sources.ArrowSource` or Hugging Face ``Dataset`` that holds them.
        Sources with an ``item_lengths()`` method (``IndexedTokenSource``) need no entry.
    max_epochs : dict name -> float, optional
        A source leaves the mixture after this many passes over its items (``2.0``: each item
        twice; ``0.5``: half of them), and the others' weights renormalise from there (UniMax's
        cap, enforced online). It overrides ``on_exhausted`` for that source; ``stats()["left"]``
        and the state record where it left.

    Examples
    --------
    >>> import mixsieve as ms
    >>> ds = ms.MixtureDataset({"a": list(range(100)), "b": ["x", "y"]}, weights={"a": 3, "b": 1},
    ...                        seed=0, shuffle=False, num_samples=8)
    >>> [name for name, _ in ds]
    ['a', 'a', 'a', 'b', 'a', 'a', 'a', 'b']
    >>> ds.stats()["served"]
    {'a': 6, 'b': 2}

    Mixing by tokens: ``"b"``'s items are ten times longer, so it gets a tenth of the items for
    the same share of tokens.

    >>> ds = ms.MixtureDataset({"a": list(range(100)), "b": list(range(100))}, unit="tokens",
    ...                        lengths={"a": [10] * 100, "b": [100] * 100}, shuffle=False,
    ...                        num_samples=22)
    >>> _ = list(ds); st = ds.stats()
    >>> st["served"], st["tokens"]
    ({'a': 20, 'b': 2}, {'a': 200, 'b': 200})
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
        batch_size: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        process_group: Any = None,
        filters: Mapping[str, Any] | None = None,
        repeats: Mapping[str, Any] | None = None,
        shuffle_buffer: int = 1000,
        output: str = "tuple",
        chunk_size: int = 8192,
        unit: str = "samples",
        lengths: Mapping[str, Any] | None = None,
        max_epochs: Mapping[str, float] | None = None,
    ) -> None:
        if not isinstance(sources, Mapping) or not sources:
            raise ValueError("sources must be a non-empty dict of name -> source")
        for n in sources:
            if not isinstance(n, str):
                raise TypeError(f"source names must be str, got {describe(n)}")
        self.names = list(sources)
        sources = {n: as_source(s) for n, s in sources.items()}  # a pyarrow Table gives rows
        self.mode = check_choice("mode", mode, ("exact", "random"))
        self.unit = check_choice("unit", unit, ("samples", "tokens"))
        self.on_exhausted = check_choice("on_exhausted", on_exhausted, ("cycle", "stop", "drop"))
        self.output = check_choice("output", output, ("tuple", "dict"))
        self.seed = check_int("seed", seed, 0, 2**64)
        self.shuffle = check_bool("shuffle", shuffle)
        self.num_samples = (
            None if num_samples is None else check_int("num_samples", num_samples, 0, MAX_POSITION)
        )
        self.batch_size = None if batch_size is None else check_int("batch_size", batch_size, 1, MAX_POSITION)
        self.block = self.batch_size or 1  # positions are dealt in blocks of this size
        self.shuffle_buffer = check_int("shuffle_buffer", shuffle_buffer, 1, MAX_POSITION)
        self.chunk_size = check_int("chunk_size", chunk_size, 1, 2**26)
        distributed.check_rank(rank, world_size)
        self._rank_arg, self._world_arg = rank, world_size
        self.process_group = process_group
        self._resolved_rank: tuple[int, int] | None = None  # what torch.distributed said when last asked
        k = len(self.names)
        self._keys = [source_key(n) for n in self.names]

        # sources: map-style (with index tables from filters / repeats) or iterable
        filters = dict(filters or {})
        kinds = {name: check_source(name, sources[name]) for name in self.names}
        tables, self.removed = index_tables(sources, self.names, filters, dict(repeats or {}))
        self._map: list[MapReader | None] = []
        self._iterables: dict[int, Any] = {}
        self._iter_filters: dict[int, NearDupFilter | None] = {}
        for d, name in enumerate(self.names):
            src = sources[name]
            if kinds[name] == "map":
                reader = MapReader(name, src, tables[name])
                if reader.size == 0:
                    raise ValueError(
                        f"source {name!r} is empty" + (" after filtering" if tables[name] is not None else "")
                    )
                self._map.append(reader)
            else:
                self._map.append(None)
                self._iterables[d] = src
                f = filters.get(name)
                self._iter_filters[d] = f if isinstance(f, NearDupFilter) else None
        self.sizes = [m.size if m is not None else None for m in self._map]
        self._sources = Sources(
            self.names,
            self._keys,
            self._map,
            self._iterables,
            self._iter_filters,
            self.seed,
            self.shuffle,
            self.shuffle_buffer,
            self.on_exhausted == "cycle",
        )
        self._token_tables = self._lengths_of(sources, tables, lengths)
        self._epoch_caps, self.max_epochs = self._caps_of(max_epochs)
        self._sources.capped = frozenset(d for d, cap in enumerate(self._epoch_caps) if cap >= 0)

        # weights policy
        self._mixer: Any = None  # a weights controller (OnlineMixer, DoReMi, or the protocol's)
        self._schedule: WeightSchedule | None = None
        if weights is None:
            w0 = np.ones(k)
        elif hasattr(weights, "update") and hasattr(weights, "weights") and not is_controller(weights):
            missing = [
                m
                for m in ("update", "state_dict", "load_state_dict")
                if not callable(getattr(weights, m, None))
            ]
            raise TypeError(
                f"{type(weights).__name__} looks like a weights controller but has no "
                f"{', '.join(missing)}: a controller needs weights, update(...), state_dict() and "
                "load_state_dict(state)"
            )
        elif is_controller(weights):
            names = list(getattr(weights, "names", None) or weights.weights)
            if sorted(names) != sorted(self.names):
                raise ValueError(
                    f"the {type(weights).__name__} is for sources {names}, the mixture has {self.names}"
                )
            self._mixer = weights
            w0 = weight_vector(weights.weights, self.names)
            attach_controller(weights, self._on_mixer_update)
        elif isinstance(weights, WeightSchedule):
            self._schedule = weights
            w0 = weights.at(0, weights.vectors(self.names))
        else:
            w0 = weight_vector(weights, self.names)
        self._w0 = w0
        plan = self._new_plan()
        plan.start(None if self._schedule else w0)
        self._loaded: dict[str, Any] = _state_of(plan)  # where passes start unless an epoch says otherwise
        self._changes: list[tuple[int, list[float]]] = []  # changes made or loaded, in the order made
        self._history_from = 0  # _changes holds every change at positions from here on
        self._ring_seen = 0  # the shared ring entries _changes includes
        self._resume_guard: str | None = None  # why a loaded state cannot be resumed in another layout
        self._worker_state: dict[str, Any] | None = None
        self._engine: Engine | None = None
        self._pending: tuple[Any, dict[str, int], dict[str, int]] | None = None
        self._epoch_cache: dict[str, Any] | None = None  # a state at an epoch boundary
        self._len_cache: dict[int, int] = {}  # epoch -> where the stream ends in it (stop / drop)
        self._checkpoint_cache: dict[str, Any] | None = None  # the last state_dict(consumed_samples=)
        self._shared: SharedControl | None = None
        self._get_shared()  # before DataLoader workers fork, so that they share it

    # ---- tokens and epoch caps ---------------------------------------------------------------

    def _lengths_of(
        self, sources: Mapping[str, Any], tables: Mapping[str, np.ndarray | None], lengths: Any
    ) -> list[Any] | None:
        """Per source, its items' lengths in epoch slot order (after filters and repeats), as
        shared native tables; None in sample mode."""
        if lengths is not None and not isinstance(lengths, Mapping):
            raise TypeError(f"lengths must be a dict of source name -> lengths, got {describe(lengths)}")
        given = dict(lengths or {})
        unknown = [n for n in given if n not in self.names]
        if unknown:
            raise ValueError(f"lengths name unknown sources {unknown}; the sources are {self.names}")
        if self.unit != "tokens":
            if given:
                raise ValueError('lengths are used only with unit="tokens"')
            return None
        out = []
        self._length_digest: list[str] = []
        self._length_files: list[str | None] = []
        for d, name in enumerate(self.names):
            reader = self._map[d]
            if reader is None:
                raise ValueError(
                    f'unit="tokens" needs the length of every item up front, but source {name!r} is an '
                    "iterable; give a map-style source (len + getitem: a list, a Hugging Face Dataset, "
                    "ms.sources.ParquetSource / ArrowSource / IndexedTokenSource / JsonlSource)"
                )
            arr = _item_lengths(name, sources[name], given.get(name))
            table = tables[name]
            slots = arr[table] if table is not None else arr
            if not slots.size or int(slots.sum()) <= 0:
                raise ValueError(f"source {name!r} has no tokens (its item lengths sum to 0)")
            # one int32 copy in a shared file that DataLoader workers map (a pickle carries its path)
            path, mapped, lock = share_array(slots, "lengths")
            if path is not None:
                weakref.finalize(self, release_shared, path, lock, os.getpid())
            token_table = _core.TokenTable(mapped)
            out.append(token_table)
            self._length_files.append(path)
            self._length_digest.append(f"{token_table.digest():016x}")
        return out

    def _caps_of(self, max_epochs: Any) -> tuple[list[int], dict[str, float]]:
        """Items each source may give before it leaves (-1: no cap), from max_epochs."""
        if max_epochs is not None and not isinstance(max_epochs, Mapping):
            raise TypeError(f"max_epochs must be a dict of source name -> epochs, got {describe(max_epochs)}")
        given = dict(max_epochs or {})
        unknown = [n for n in given if n not in self.names]
        if unknown:
            raise ValueError(f"max_epochs name unknown sources {unknown}; the sources are {self.names}")
        caps = [-1] * len(self.names)
        clean: dict[str, float] = {}
        for name, v in given.items():
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"max_epochs[{name!r}] must be a number, got {describe(v)}")
            v = float(v)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"max_epochs[{name!r}] must be a finite number > 0, got {v}")
            d = self.names.index(name)
            size = self.sizes[d]
            if size is None:  # an iterable: its length is needed up front
                size = self._sources.count_items(d)
            caps[d] = min(int(Fraction(v) * size), MAX_POSITION)  # floor, exactly
            clean[name] = v
        return caps, clean

    # ---- the plan ---------------------------------------------------------------------------

    def _new_plan(self) -> Any:
        caps = [s if (s is not None and self.on_exhausted != "cycle") else -1 for s in self.sizes]
        plan = _core.MixPlan(
            len(self.names),
            self.mode == "exact",
            self.seed,
            _EXHAUSTED[self.on_exhausted],
            np.array(caps, np.int64),
        )
        if self._schedule is not None:
            s = self._schedule
            plan.set_curve(
                np.array(s.positions, np.int64), s.vectors(self.names), s.interpolate == "linear", s.every
            )
        if self._token_tables is not None:
            for d, table in enumerate(self._token_tables):
                plan.set_token_lengths(d, table, self._keys[d], self.shuffle)
        if self.max_epochs:
            plan.set_epoch_caps(np.array(self._epoch_caps, np.int64))
        return plan

    def _plan_from(self, state: Mapping[str, Any], changes: Sequence[tuple[int, Any]] = ()) -> Any:
        plan = self._new_plan()
        plan.restore({**state, "changes": [(p, w) for p, w in changes if p >= state["position"]]})
        return plan

    def _with_known(self, plan: Any) -> Any:
        """``plan`` with every change this process knows of ahead of it, and known lengths."""
        for p, w in self._changes:
            if p >= plan.position:
                plan.add_change(p, np.asarray(w, np.float64))
        if self._shared is not None:
            for d, ln in enumerate(self._shared.lengths.tolist()):
                if ln >= 0:
                    plan.set_length(d, ln)
        return plan

    def _advance(self, start: Any, position: int) -> Any:
        """The plan at ``position``, replayed from ``start`` (a plan or a state) without data."""
        if isinstance(start, Mapping):
            if start["position"] < self._history_from:
                raise ValueError(
                    f"checkpoints move forward: position {position} is before the last checkpoint "
                    f"({self._history_from}), whose earlier history is no longer kept"
                )
            plan = self._with_known(self._plan_from(start))
        else:
            plan = start.copy()
        if position < plan.position:
            raise ValueError(f"cannot go back from position {plan.position} to {position}")
        eng = self._engine_for(
            plan, block=1, base=plan.position, slot=0, period=1, ranks=1, row=-1, yielded=0, seen=0
        )
        eng.replay(position)
        return eng.plan

    def _engine_for(self, plan: Any, *, block: int, base: int, **where: int) -> Engine:
        return Engine(
            self._sources,
            plan,
            self._shared,
            chunk_size=self.chunk_size,
            output_dict=self.output == "dict",
            block=block,
            base=base,
            end=self._end(base),
            advance=self._advance,
            on_end=self._epoch_done,
            **where,
        )

    def _end(self, base: int) -> int | None:
        n = self.num_samples
        if n is None:
            return None
        return (base // n + 1) * n if n else 0  # the end of the epoch this walk started in

    def _epoch_done(self, plan: Any) -> None:
        self._epoch_cache = _state_of(plan)

    # ---- configuration and state ------------------------------------------------------------

    def _rank_world(self) -> tuple[int, int]:
        if whole_stream_wanted():  # read as a source of another mixture: the whole stream
            return 0, 1
        if self._world_arg is not None:
            return int(self._rank_arg), int(self._world_arg)  # type: ignore[arg-type]
        got = distributed.group_rank_world(self.process_group)
        if got is not None:
            self._resolved_rank = got
            return got
        if self._resolved_rank is not None:  # a spawned DataLoader worker: what its parent saw
            return self._resolved_rank
        env = distributed.env_rank_world()  # launched by torchrun, process group not up yet
        return env if env is not None else (0, 1)

    def _policy_config(self) -> Any:
        if self._mixer is not None:
            return "mixer"
        if self._schedule is not None:
            s = self._schedule
            return {
                "schedule": s.positions,
                "vectors": [v.tolist() for v in s.vectors(self.names)],
                "interpolate": s.interpolate,
                "every": s.every,
            }
        return {"static": self._w0.tolist()}

    def _config(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "names": self.names,
            "seed": self.seed,
            "mode": self.mode,
            "shuffle": self.shuffle,
            "on_exhausted": self.on_exhausted,
            "sizes": self.sizes,
            "block": self.block,
            "policy": "mixer" if self._mixer else ("schedule" if self._schedule else "static"),
            "weights": self._policy_config(),
        }
        if self.unit != "samples":  # only when set: states saved before these existed still load
            out["unit"] = self.unit
            out["lengths"] = self._length_digest  # a restart with other item lengths is refused
        if self.max_epochs:
            out["max_epochs"] = dict(self.max_epochs)
        return out

    def state_dict(self, consumed_samples: int | None = None) -> dict[str, Any]:
        """A small JSON-serialisable state to resume the stream exactly (see :meth:`load_state_dict`).

        Iterated in this process (``num_workers=0``, or directly): the state after the samples
        yielded so far. With DataLoader worker processes the dataset cannot see what the
        training loop consumed: pass ``consumed_samples`` (global, over all ranks, since the last
        :meth:`load_state_dict`, as in Megatron) — this needs ``batch_size`` set to the
        DataLoader's batch size when there are several workers — or use
        ``torchdata.stateful_dataloader.StatefulDataLoader``, which calls this inside the
        workers. The state holds the global position, per-source counts and lags, the weights
        in force, the recorded weight changes ahead and the mixer's state.
        """
        if distributed.in_worker():
            # inside a DataLoader worker (StatefulDataLoader): this worker's own resume point
            if self._worker_state is not None:
                return dict(self._worker_state)
            return self._worker_state_dict()
        shared = self._get_shared()
        if consumed_samples is not None:
            n = check_int("consumed_samples", consumed_samples, 0)
            self._check_consumed()
            pos = self._loaded["position"] + n
            st = self._advance_from_nearest(pos)
        elif shared.rows[1:].any():
            raise ValueError(
                "this dataset was iterated by DataLoader worker processes, so it cannot know what the "
                "training loop consumed: pass consumed_samples=<samples consumed over all ranks>, or use "
                "torchdata.stateful_dataloader.StatefulDataLoader"
            )
        elif self._engine is not None:
            st = _state_of(self._engine.global_plan())
        else:
            st = dict(self._loaded)
        return self._wrap(st, self._changes)

    def _check_consumed(self) -> None:
        """consumed_samples gives the global position only if what was consumed is a prefix."""
        shared = self._get_shared()
        _, world = self._rank_world()
        slots, batch = int(shared.header[7]), int(shared.header[9])
        if slots <= world:
            return  # one process per rank reads its positions in order
        if batch == 0 and self.batch_size is None:
            raise ValueError(
                f"consumed_samples with {slots // world} DataLoader workers per rank needs the DataLoader's "
                "batch size, which this dataset could not see (is it wrapped?): construct "
                "MixtureDataset(..., batch_size=<the DataLoader's batch_size>) so that each DataLoader batch "
                "is a contiguous run of the stream, or use StatefulDataLoader"
            )

    def _wrap(self, st: Mapping[str, Any], changes: list[tuple[int, Any]]) -> dict[str, Any]:
        pos = st["position"]
        sources = {}
        for d, name in enumerate(self.names):  # for people reading checkpoints; not needed to resume
            c, size = int(st["counts"][d]), self.sizes[d]
            sources[name] = (
                {"consumed": c, "epoch": c // size, "offset": c % size} if size else {"consumed": c}
            )
            if self.unit == "tokens":
                sources[name]["tokens"] = int(st["tokens"][d])
            left = st.get("left")
            if left is not None and left[d] >= 0:
                sources[name]["left_at"] = int(left[d])
        out = {
            "version": checkpoint.STATE_VERSION,
            "config": self._config(),
            "state": dict(st),
            "sources": sources,
            "changes": [[int(p), [float(x) for x in w]] for p, w in changes if p >= pos],
        }
        if self._mixer is not None:
            out["mixer"] = self._mixer.state_dict()
        plain: dict[str, Any] = json.loads(json.dumps(out))  # plain JSON types only
        return plain

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` (or from a ``StatefulDataLoader.state_dict()``).

        The next iteration continues exactly where the saved stream stopped, with any number
        of workers. A state from a different configuration (source names, seed, mode, sizes,
        ...) raises ``ValueError`` saying what differs. Weights are not configuration: a dataset
        built with other weights than the checkpoint's applies them from the resumed position
        on (recorded as a weight change, so a later resume replays it).
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"a state dict must be a dict, got {describe(state)}")
        guard = None
        if "_snapshot" in state:
            state, guard = self._from_loader_state(state)
        elif "dataset_state" in state and "_num_yielded" in state:  # StatefulDataLoader, num_workers=0
            state = state["dataset_state"]
        checkpoint.check_config(
            checkpoint.validate_header(state)["config"], self._config(), ignore=_NOT_CONFIG
        )
        state = checkpoint.validate(state, len(self.names))
        if "worker" in state:
            if not distributed.in_worker():
                raise ValueError(
                    "this is one DataLoader worker's state (from inside a worker); load the whole "
                    "StatefulDataLoader state, or a state from MixtureDataset.state_dict()"
                )
            self._worker_state = dict(state)
            return
        plan = self._plan_from(state["state"], state["changes"])  # checks ranges and consistency
        changes = list(state["changes"])
        if self._mixer is not None and "mixer" in state:
            self._mixer.load_state_dict(state["mixer"])
        elif state["config"].get("weights") != self._config()["weights"]:
            # built with other weights than the checkpoint's: they apply from here on
            pos = plan.position
            if self._schedule is not None:
                vec = self._schedule.at(pos, self._schedule.vectors(self.names))
            elif self._mixer is not None:
                vec = weight_vector(self._mixer.weights, self.names)
            else:
                vec = self._w0
            plan.add_change(pos, np.asarray(vec, np.float64))
            changes.append((pos, [float(x) for x in vec]))
        self._loaded = _state_of(plan)
        self._changes = changes
        self._history_from = plan.position
        self._resume_guard = guard
        self._engine = None
        self._epoch_cache = None
        self._checkpoint_cache = None
        self._len_cache = {}
        if not distributed.in_worker():
            self._reset_shared()
            frontier = state.get("frontier")
            if isinstance(frontier, int) and self._shared is not None:
                with self._shared.lock():
                    self._shared.header[1] = max(int(self._shared.header[1]), frontier)

    def _from_loader_state(self, loader_state: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        """Global state from a StatefulDataLoader state (any num_workers later), and why it
        cannot be resumed in another layout, if it cannot."""
        states = []
        for s in checkpoint.loader_worker_states(loader_state):
            checkpoint.check_config(
                checkpoint.validate_header(s)["config"], self._config(), ignore=_NOT_CONFIG
            )
            states.append(checkpoint.validate(s, len(self.names)))
        start = min(states, key=lambda s: s["state"]["position"])
        workers = [s["worker"] for s in states if "worker" in s]
        if not workers:
            return start, None
        # batches consumed after the snapshot (snapshot_every_n_steps > 1) come next in order
        later = loader_state.get("_steps_since_snapshot", 0)
        later = later if isinstance(later, int) and later >= 0 else 0
        batch = max(w["batch"] for w in workers)  # the DataLoader's batch size, seen by the workers
        total = checkpoint.consumed_prefix(workers)
        guard = None
        if total is None or (later and not batch):
            guard = (
                "this checkpoint's DataLoader workers consumed samples that are not a prefix of the stream "
                "(positions were dealt in blocks other than the DataLoader's batches), so it resumes exactly "
                "only in the same layout: restore it through StatefulDataLoader.load_state_dict with the "
                "same num_workers, or set MixtureDataset(batch_size=<the DataLoader's batch_size>)"
            )
            total = sum(w["yielded"] for w in workers)
        total += later * batch
        w0 = workers[0]
        pos = w0["base"] + total * w0["ranks"]
        # every change any worker had read (a later worker may have read more than the first)
        merged: dict[int, list[float]] = {}
        for st in sorted(states, key=lambda x: x["state"]["position"]):
            for p, w in st["changes"]:
                merged[p] = w
        changes = sorted(merged.items())
        plan = self._advance(self._plan_from(start["state"], changes), pos)
        out = self._wrap(_state_of(plan), changes)
        # the workers' own resume points: changes made after this load must land beyond them
        out["frontier"] = max(st["state"]["position"] for st in states)
        if "mixer" in start:
            out["mixer"] = start["mixer"]
        out["config"] = start["config"]
        return out, guard

    def __len__(self) -> int:
        """Samples this rank's iteration yields (all its DataLoader workers together): needs
        ``num_samples``. After ``load_state_dict`` it counts what is left of that epoch; with
        ``on_exhausted="stop"`` or ``"drop"``, up to where the sources run out in it."""
        if self.num_samples is None:
            raise TypeError("a MixtureDataset without num_samples is an endless stream and has no len()")
        rank, world = self._rank_world()
        n = self.num_samples
        shared = self._get_shared()
        epoch = int(shared.header[2])
        start = max(int(self._loaded["position"]), epoch * n)
        end = (start // n + 1) * n if n else 0
        if (self.on_exhausted != "cycle" or self.max_epochs) and n:
            if epoch not in self._len_cache:
                plan = self._advance(self._epoch_start(start // n), end)
                self._len_cache[epoch] = plan.position if plan.ended else end
            end = min(end, self._len_cache[epoch])
        remaining = max(0, end - start)
        block = int(shared.header[8]) or self.block
        if world > 1 and self.batch_size is None and not int(shared.header[8]):
            raise TypeError(
                "len() with several ranks depends on the DataLoader's batch size, which the dataset sees "
                "only once it is read: construct MixtureDataset(..., batch_size=<the DataLoader's "
                "batch_size>)"
            )
        full, rest = divmod(remaining, block)  # blocks from start, dealt round-robin
        mine = (full // world + (1 if rank < full % world else 0)) * block
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
        epoch = check_int("epoch", epoch, 0)
        start = self._epoch_start(epoch)
        shared = self._get_shared()
        with shared.lock():
            shared.header[2] = epoch
            self._publish_base(shared, start)

    def _epoch_start(self, epoch: int) -> dict[str, Any]:
        """The state where epoch ``epoch`` begins (or the loaded state, if it is inside it)."""
        if not self.num_samples:
            return dict(self._loaded)
        target = epoch * self.num_samples
        if self._loaded["position"] >= target:
            if self._loaded["position"] < self._history_from:  # changes from there on were dropped
                raise ValueError(
                    f"checkpoints move forward: epoch {epoch} starts at {self._loaded['position']}, before "
                    f"the last checkpoint ({self._history_from}), whose earlier history is no longer kept"
                )
            return dict(self._loaded)
        start = self._nearest_state(target)
        if start["position"] < self._history_from:
            raise ValueError(
                f"checkpoints move forward: epoch {epoch} starts before the last checkpoint "
                f"({self._history_from}), whose earlier history is no longer kept"
            )
        if start["position"] < target:
            shared = self._get_shared()
            with shared.lock():  # later weight changes must land after this point
                shared.header[1] = max(int(shared.header[1]), target)
            plan = self._with_known(self._plan_from(start))
            if self.on_exhausted != "cycle":  # the replay must know where iterables end
                lengths = plan.state()["lengths"]
                for d in self._iterables:
                    if lengths[d] < 0:
                        plan.set_length(d, self._sources.count_items(d))
            start = _state_of(self._advance(plan, target))
            self._epoch_cache = start
        return dict(start)

    def _nearest_state(self, target: int) -> dict[str, Any]:
        """The known state closest before ``target``: the loaded one, or one computed since (at
        an epoch start or a checkpoint), so that checkpoints every N samples cost O(N) each."""
        best = self._loaded
        for cache in (self._epoch_cache, self._checkpoint_cache):
            if cache is not None and best["position"] <= cache["position"] <= target:
                best = cache
        return best

    def _advance_from_nearest(self, target: int) -> dict[str, Any]:
        st = _state_of(self._advance(self._nearest_state(target), target))
        self._checkpoint_cache = st  # workers have passed target: no weight change can land before it
        # later checkpoints start from this one, and new passes from the base: changes before both
        # are no longer needed
        keep_from = target
        shared = self._shared
        if shared is not None:
            with shared.lock():
                _, base, _ = shared.read_base()
            if base is not None:
                keep_from = min(keep_from, int(base["state"]["position"]))
        if keep_from > self._history_from:
            self._changes = [(p, w) for p, w in self._changes if p >= keep_from]
            self._history_from = keep_from
        return st

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
        rank of ``process_group`` must call this together; they agree on the position by an
        all-reduce (max), with no lock held across it.
        """
        vec = weight_vector(weights, self.names)
        if position is not None:
            position = check_int("position", position, 0, MAX_POSITION)
        if sync is not None:
            sync = check_bool("sync", sync)
        shared = self._get_shared()
        with shared.lock():
            earliest = self._earliest(shared)
            if position is not None and position < earliest:
                raise ValueError(
                    f"position {position} has already been generated (the stream is prepared up to "
                    f"{earliest}); pass a position further ahead, e.g. samples consumed + a lookahead "
                    "larger than num_workers * prefetch_factor * batch_size"
                )
            pos = earliest if position is None else position
            shared.header[3] += 1  # nobody schedules past the frontier while the ranks agree
        try:
            pos = distributed.agree_on_position(pos, sync, self.process_group)
        except BaseException:
            with shared.lock():
                shared.header[3] -= 1
            raise
        # One critical section releases the freeze and publishes the change (so nobody claims
        # past it in between) and takes no engine lock (an iterating thread waiting on the
        # freeze holds its engine's lock).
        with shared.lock():
            shared.header[3] -= 1
            earliest = self._earliest(shared)
            if pos < earliest:
                raise ValueError(
                    f"the ranks agreed on position {pos}, which this rank has passed ({earliest})"
                )
            if not shared.replace_last(pos, vec):  # the last change made at a position wins
                shared.append_change(pos, vec, lambda: self._fold_base(shared))
            self._ring_seen = int(shared.header[0])  # workers created from now on know every change
            self._len_cache = {}  # where a stopping stream ends may move
            if self._changes and self._changes[-1][0] == pos:
                self._changes[-1] = (pos, vec.tolist())
            else:
                self._changes.append((pos, vec.tolist()))
        eng = self._engine
        if eng is not None and eng.row == 0:  # an in-process walk (perhaps in another thread) reads it now
            with eng.lock, shared.lock():
                eng.read_shared()
        return pos

    def _earliest(self, shared: SharedControl) -> int:
        frontier = int(shared.header[1])
        if self._engine is not None:
            frontier = max(frontier, self._engine.claimed)
        return max(frontier, int(self._loaded["position"]))

    def _fold_base(self, shared: SharedControl) -> None:
        """The ring is full of entries a new pass from the base would read: frees them, marking
        the base folded (lock held)."""
        _, base, _ = shared.read_base()
        if base is not None:
            shared.publish_base({**base, "folded": True}, int(shared.header[0]))

    def _publish_base(self, shared: SharedControl, state: Mapping[str, Any], folded: bool = False) -> None:
        """Where new passes start, and the first ring entry they need (lock held)."""
        n = int(shared.header[0])
        seq = n
        for i in range(max(0, n - len(shared.ring)), n):  # the oldest entry at or after the base
            if shared.ring[i % len(shared.ring), 0] >= state["position"]:
                seq = i
                break
        shared.publish_base({"state": dict(state), "folded": folded}, seq)

    def _on_mixer_update(self, p: np.ndarray | None, position: int | None) -> None:
        mixer = self._mixer
        assert mixer is not None
        try:
            vec = p if p is not None else weight_vector(mixer.weights, self.names)
            state = mixer.state_dict()
            json.dumps(state)  # checked before the change lands: it goes into checkpoints
        except (TypeError, ValueError) as e:
            raise type(e)(
                f"the {type(mixer).__name__}'s weights or state after update() were refused: {e}"
            ) from e
        self.set_weights(vec, position=position, sync=getattr(mixer, "sync", None))
        shared = self._get_shared()
        with shared.lock():  # workers put the controller's state into their state dicts
            shared.write_controller(state)

    def _get_shared(self) -> SharedControl:
        if self._shared is None:
            self._shared = SharedControl(len(self.names))
            self._reset_shared()
        return self._shared

    def _reset_shared(self) -> None:
        shared = self._shared
        if shared is None:
            return
        shared.reset(self._loaded["position"])
        with shared.lock():
            for p, w in self._changes[-RING:]:
                shared.append_change(p, np.asarray(w, np.float64), lambda: None)
            if self.num_samples:  # the epoch the loaded position is in (a finished one is not replayed)
                shared.header[2] = self._loaded["position"] // self.num_samples
            folded = len(self._changes) > RING  # new workers get the whole list from this process
            shared.publish_base({"state": dict(self._loaded), "folded": folded}, 0)
            self._ring_seen = int(shared.header[0])

    def __getstate__(self) -> dict[str, Any]:
        self._get_shared()  # workers must share the parent's block
        self._resolved_rank = (
            self._rank_world()
        )  # and its rank (spawned workers cannot ask torch.distributed)
        d = self.__dict__.copy()
        d["_engine"] = None
        d["process_group"] = None  # not picklable; workers use the resolved rank
        if self._token_tables is not None and all(p is not None for p in self._length_files):
            d["_token_tables"] = None  # the workers map the shared files instead
        return d

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.unit == "tokens" and self._token_tables is None:
            tables = []
            for d, path in enumerate(self._length_files):
                mapped = map_shared(path, np.int32, int(self._map[d].size))  # type: ignore[union-attr]
                if mapped is None:
                    raise ValueError(
                        f"the shared file of source {self.names[d]!r}'s item lengths ({path}) is gone: the "
                        "process that made this MixtureDataset has ended; make the dataset again"
                    )
                tables.append(_core.TokenTable(mapped))
            self._token_tables = tables
        if self._shared is not None and self._shared.missing:  # unpickled after its creator exited
            self._shared = None
            self._get_shared()

    def __deepcopy__(self, memo: dict[int, Any]) -> MixtureDataset:
        """A copy with its own shared block: steering the copy does not steer the original."""
        out = MixtureDataset.__new__(MixtureDataset)
        memo[id(self)] = out
        shared_refs = (
            "_shared",
            "_engine",
            "_pending",
            "process_group",
            "_mixer",
            "_map",
            "_iterables",
            "_iter_filters",
            "_sources",
            "_schedule",
            "_token_tables",
        )
        for key, value in self.__dict__.items():
            if key in shared_refs:
                setattr(out, key, value)  # the source data and policies are shared, not copied
            else:
                setattr(out, key, copy.deepcopy(value, memo))
        out._pending = None
        out.process_group = self.process_group
        out._engine = None
        out._mixer = self._mixer  # the copy follows the same mixer
        if self._mixer is not None:
            attach_controller(self._mixer, out._on_mixer_update)
        out._shared = None
        copied = out._get_shared()
        if self._shared is not None:  # the epoch and where passes start, as in the original
            with self._shared.lock():
                epoch = int(self._shared.header[2])
                _, base, seq = self._shared.read_base()
            with copied.lock():
                copied.header[2] = epoch
                if base is not None:
                    copied.publish_base({**base, "folded": len(out._changes) > RING}, 0)
        return out

    # ---- iteration ----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        shared = self._get_shared()
        shared.ensure_process()
        info = distributed.worker_info()
        nw, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        if nw > MAX_WORKERS:
            raise ValueError(f"at most {MAX_WORKERS} DataLoader workers are supported, got {nw}")
        rank, world = self._rank_world()
        slot, period = wid * world + rank, nw * world
        row = 0 if info is None else 1 + wid
        if whole_stream_wanted():
            row = -1  # read as another mixture's source, perhaps in several processes: no shared row
        self._engine = None  # a forked worker must not use the engine it inherited
        ws = self._worker_state
        if ws is not None and info is not None:
            w = ws["worker"]
            if (w["slot"], w["period"]) != (slot, period):
                raise ValueError(
                    f"worker state is for slot {w['slot']} of {w['period']}, "
                    f"this is slot {slot} of {period}; resume with the same num_workers and world size, "
                    "or load the state through MixtureDataset.load_state_dict for a different layout"
                )
            if ws["config"].get("weights") != self._config()["weights"] and self._mixer is None:
                raise ValueError(
                    "this StatefulDataLoader checkpoint was taken with other weights; each worker resumes "
                    "its own position there, so new weights cannot start at one position for all: load it "
                    "with ds.load_state_dict(loader.state_dict()) and iterate a plain DataLoader, or keep "
                    "the weights"
                )
            plan = self._plan_from(ws["state"], ws["changes"])
            start = {"base": w["base"], "yielded": w["yielded"], "block": w["block"]}
            self._worker_state = None
            with shared.lock():  # every change in the ring: those behind this worker are skipped
                seen = max(0, int(shared.header[0]) - RING)
        else:
            if self._resume_guard is not None:
                raise ValueError(self._resume_guard)
            plan, seen = self._pass_start(shared)
            start = {"base": plan.position, "yielded": 0, "block": 0}
        with shared.lock():
            if info is not None:
                shared.header[7] = period
            if ws is not None:  # changes made from now on must land beyond this worker's position
                shared.header[1] = max(int(shared.header[1]), plan.position)
        where = {"slot": slot, "period": period, "ranks": world, "row": row, "seen": seen}
        self._pending = (plan.copy(), dict(start), dict(where))  # until the first sample is asked for
        return itertools.chain.from_iterable(self._walk(plan, start, where))

    def _walk(self, plan: Any, start: dict[str, int], where: dict[str, int]) -> Iterator[Iterator[Any]]:
        """The engine's runs of samples. Runs when the first sample is asked for: by then a
        DataLoader's fetcher is the caller, and its batch size becomes the block size."""
        batch = loader_batch_size(sys._getframe(1))
        block = start["block"] or self.block
        if batch and self.batch_size is not None and batch != self.batch_size:
            raise ValueError(
                f"MixtureDataset(batch_size={self.batch_size}) is read by a DataLoader with batch_size="
                f"{batch}: set them equal (or leave the dataset's unset to follow the DataLoader)"
            )
        if batch and not start["block"]:
            block = batch
        shared = self._shared
        if shared is not None and where["row"] > 0:  # what the workers deal by, for consumed_samples
            with shared.lock():
                shared.header[8] = block
                shared.header[9] = batch
        eng = self._engine_for(plan, block=block, base=start["base"], yielded=start["yielded"], **where)
        eng.loader_batch = batch
        self._engine = eng
        self._pending = None
        yield from eng.run()

    def _pass_start(self, shared: SharedControl) -> tuple[Any, int]:
        """The plan a new pass starts from, moved to the epoch's start if it lies before it, and
        the first ring entry not yet in it. The main process and a new worker know every change
        since the pass began (a new worker is a copy of the main process); a persistent worker
        starting another pass reads the published base and the ring."""
        with shared.lock():
            _, base, seq = shared.read_base()
            epoch, n = int(shared.header[2]), int(shared.header[0])
        assert base is not None
        folded = bool(base["folded"])
        state = base["state"]
        target = epoch * self.num_samples if self.num_samples else state["position"]
        if not distributed.in_worker():
            if folded and self._history_from > state["position"]:
                raise RuntimeError(_FOLDED)
            plan = self._with_known(self._plan_from(state))
            seq = n
        elif not folded:
            plan = self._plan_from(state)
        else:
            if n - self._ring_seen > RING:
                raise RuntimeError(_FOLDED)
            plan = self._with_known(self._plan_from(self._nearest_state(target)))
            seq = max(0, self._ring_seen - 1)  # the newest entry may have been replaced since
        if target > plan.position:
            with shared.lock():
                changes, seq = shared.changes_since(seq)
            for _, p, w in changes:
                if p >= plan.position:
                    plan.add_change(p, w)
            plan = self._advance(plan, target)
        return plan, seq

    def _worker_state_dict(self) -> dict[str, Any]:
        eng = self._engine
        rank, world = self._rank_world()
        if eng is None:
            if self._pending is not None:  # iter() was called, no sample asked for yet
                plan, start, where = self._pending
                plan = plan.copy()
                slot, period, base, yielded, block = (
                    where["slot"],
                    where["period"],
                    start["base"],
                    start["yielded"],
                    start["block"],
                )
            else:
                shared = self._get_shared()
                plan, _ = self._pass_start(shared)
                info = distributed.worker_info()
                nw, wid = (info.num_workers, info.id) if info is not None else (1, 0)
                slot, period, base, yielded, block = wid * world + rank, nw * world, plan.position, 0, 0
            worker = {
                "slot": slot,
                "period": period,
                "ranks": world,
                "base": base,
                "yielded": yielded,
                "block": block,
                "batch": 0,
            }  # block 0: not dealt yet, the DataLoader decides
        else:
            plan = eng.resume_plan()
            worker = {
                "slot": eng.slot,
                "period": eng.period,
                "ranks": eng.ranks,
                "base": eng.base,
                "yielded": eng.yielded(),
                "block": eng.block,
                "batch": eng.loader_batch,
            }
        shared = self._get_shared()
        with eng.lock if eng is not None else contextlib.nullcontext(), shared.lock():
            if eng is not None:  # changes recorded since
                eng.read_shared()
                plan = eng.resume_plan()
            mixer = shared.read_controller()  # the main process's controller state
        state = plan.state()
        changes = state.pop("changes")
        out = self._wrap(state, changes)
        out.pop("mixer", None)  # this worker's copy of the controller is not the main process's
        if self._mixer is not None and mixer is not None:
            out["mixer"] = mixer
        out["worker"] = worker
        return out

    # ---- reporting ------------------------------------------------------------------------------

    def simulate(self, num_samples: int, window: int = 10_000) -> MixturePlan:
        """A dry run of the next ``num_samples`` positions of the stream, reading no data.

        It runs the schedule iteration uses (weights, schedules, changes recorded with
        ``position=``, ``max_epochs`` caps, sources running out, token lengths) from where a new
        pass starts (the start, or the loaded state), so its per-window counts equal what
        iterating serves at those positions. Changes an online controller will make later are
        not known yet. With ``on_exhausted="stop"`` or ``"drop"`` an iterable source whose length
        is unknown is read once to count it (as ``len()`` does).

        >>> import mixsieve as ms
        >>> ds = ms.MixtureDataset({"a": list(range(10)), "b": list(range(1000))},
        ...                        weights={"a": 1, "b": 1}, max_epochs={"a": 2})
        >>> plan = ds.simulate(100, window=25)
        >>> plan.counts[:, 0].tolist(), plan.epochs["a"]
        ([13, 7, 0, 0], 2.0)
        >>> [(e["event"], e["position"]) for e in plan.events if e.get("source") == "a"]
        [('cycled', 18), ('cycled', 38), ('capped', 40)]
        """
        n = check_int("num_samples", num_samples, 0, MAX_POSITION)
        window = check_int("window", window, 1, MAX_POSITION)
        windows = -(-n // window)
        if windows * len(self.names) > _MAX_PLAN_CELLS:
            raise ValueError(
                f"{windows:,} windows of {len(self.names)} sources is more than a plan keeps "
                f"({_MAX_PLAN_CELLS:,} cells, 24 bytes each): choose window >= "
                f"{-(-n // (_MAX_PLAN_CELLS // len(self.names))):,}"
            )
        # where a new pass starts: the loaded state, or the epoch set_epoch chose; a pass ends with
        # its epoch (num_samples), as iteration does
        epoch_end = None
        if self.num_samples:
            epoch = int(self._get_shared().header[2])
            start = self._epoch_start(epoch)
            epoch_end = (epoch + 1) * self.num_samples
            n = min(n, max(0, epoch_end - int(start["position"])))
        else:
            start = self._loaded
        plan = self._with_known(self._plan_from(start))
        lengths = plan.state()["lengths"]
        sizes: list[int | None] = []
        for d, size in enumerate(self.sizes):
            if size is None and lengths[d] >= 0:
                size = int(lengths[d])
            if size is None and self.on_exhausted != "cycle":
                size = self._sources.count_items(d)
                plan.set_length(d, size)
            sizes.append(size)
        return self._dry_run(plan, n, window, sizes, epoch_end)

    def _dry_run(
        self, plan: Any, n: int, window: int, sizes: list[int | None], epoch_end: int | None = None
    ) -> MixturePlan:
        """``plan`` advanced ``n`` positions by the native dry run, as a MixturePlan."""
        before = plan.counts.copy()
        raw = plan.simulate(n, window, np.array([x or -1 for x in sizes], np.int64))
        if epoch_end is not None and plan.position == epoch_end and not plan.ended:
            raw["events"].append((epoch_end, 4, -1, []))  # the pass ends with the epoch
        start = plan.position - int(raw["generated"])
        return MixturePlan(self.names, start, window, raw, sizes, before, self.unit == "tokens")

    def stats(self, window: int | None = None, last: int = 100) -> dict[str, Any]:
        """Per-source samples served (exactly, by this process; by its DataLoader workers, including
        batches they have prefetched, in steps of at most 1,024 samples or one batch), completed
        epochs of each source at the furthest position reached, the weights in force at the
        furthest position scheduled, and what filters removed per source. ``"left"`` maps each
        source that left the mixture (``max_epochs``, ``on_exhausted="drop"``) to the position
        where it left. With ``unit="tokens"``, ``"tokens"`` counts the tokens served per source
        (as ``"served"`` counts samples) and ``"token_shares"`` their shares of the total.
        ``"served"`` and ``"tokens"`` count what this dataset object handed out since it was
        made or last loaded (``load_state_dict``); the state holds the totals of the stream.

        ``window=W`` adds ``"windows"``: a :class:`~mixsieve.mixture.plan.MixturePlan` (as
        :meth:`simulate` returns) of the positions served, in windows of W positions, keeping the
        ``last`` windows: realised against target per window, epochs, events. The positions
        served are the stream's first ``served x ranks`` positions from where this dataset
        started (what a DataLoader has consumed is a prefix of the stream); they are recomputed
        from the schedule, without reading data."""
        served = np.zeros(len(self.names), np.int64)
        tokens = np.zeros(len(self.names), np.int64)
        reached = np.array(self._loaded["counts"], np.int64)
        left = np.array(self._loaded.get("left", [-1] * len(self.names)), np.int64)
        eng = self._engine
        weights = None
        if self._shared is not None:
            shared = self._shared
            with shared.lock():
                served += shared.rows[:, 0, :].sum(axis=0)
                tokens += shared.rows[:, 2, :].sum(axis=0)
                reached = np.maximum(reached, shared.rows[:, 1, :].max(axis=0))
                left = np.maximum(left, shared.left)
                pos = shared.readers[1:, 1]
                if pos.size and pos.max() >= 0:  # DataLoader workers: the one furthest ahead
                    weights = shared.weights[1 + int(np.argmax(pos))].copy()
        if eng is not None and eng.row == 0:
            samples, tok = eng.unpublished()  # this process's samples not yet counted in shared memory
            served += samples
            tokens += tok
            with eng.lock:
                left = np.maximum(left, eng.plan.left)
        if weights is None:
            if eng is not None:
                with eng.lock:
                    weights = eng.plan.next_weights
            else:
                weights = self._plan_from(self._loaded, self._changes).next_weights
        epochs = {}
        for d, n in enumerate(self.names):
            size = self.sizes[d]
            epochs[n] = int(reached[d] // size) if size else None
        out: dict[str, Any] = {
            "served": {n: int(v) for n, v in zip(self.names, served)},
            "epochs": epochs,
            "weights": {n: float(v) for n, v in zip(self.names, weights)},
            "removed": dict(self.removed),
        }
        if self.unit == "tokens":
            total = int(tokens.sum())
            out["tokens"] = {n: int(v) for n, v in zip(self.names, tokens)}
            out["token_shares"] = {n: (int(v) / total if total else 0.0) for n, v in zip(self.names, tokens)}
        out["left"] = {n: int(p) for n, p in zip(self.names, left) if p >= 0}
        if window is not None:
            window = check_int("window", window, 1, MAX_POSITION)
            last = check_int("last", last, 1, MAX_POSITION)
            _, world = self._rank_world()
            done = int(served.sum()) * world
            pass_start = self._loaded
            if self.num_samples:  # the current pass: the epoch set_epoch chose, at most its length
                epoch = int(self._get_shared().header[2])
                pass_start = self._epoch_start(epoch)
                done = min(done, (epoch + 1) * self.num_samples - int(pass_start["position"]))
            skip = max(0, -(-done // window) - last) * window  # whole windows before the last ones
            plan = self._with_known(self._plan_from(pass_start))
            known = plan.state()["lengths"]
            sizes = [
                s if s is not None else (int(known[d]) if known[d] >= 0 else None)
                for d, s in enumerate(self.sizes)
            ]
            if skip:  # advance without keeping per-position output
                plan.simulate(skip, skip, np.array([x or -1 for x in sizes], np.int64))
            out["windows"] = self._dry_run(plan, done - skip, window, sizes)
        return out

    def __repr__(self) -> str:
        kinds = ["map" if m is not None else "iterable" for m in self._map]
        parts = ", ".join(f"{n}:{k}" for n, k in zip(self.names, kinds))
        return f"MixtureDataset({parts}; mode={self.mode!r}, seed={self.seed})"


def _state_of(plan: Any) -> dict[str, Any]:
    """A plan's state without its recorded changes (those travel separately)."""
    st = plan.state()
    st.pop("changes")
    return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in st.items()}


def _item_lengths(name: str, src: Any, given: Any) -> np.ndarray:
    """Source ``name``'s item lengths in tokens as an int32 array of len(src), from ``lengths``
    (an array or a column name) or from the source itself."""
    n = len(src)
    where = f"lengths[{name!r}]"
    if given is None:
        method = getattr(src, "item_lengths", None)
        if method is None:
            raise ValueError(
                f'unit="tokens" needs the token count of each item of source {name!r}: give '
                f"lengths={{{name!r}: <an int array with one value per item, or a column name>}}"
            )
        try:
            arr = np.asarray(method())
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"source {name!r} cannot give its item lengths by itself ({e}); pass {where}"
            ) from e
        where = f"{type(src).__name__}.item_lengths() of source {name!r}"
    elif isinstance(given, str):
        method = getattr(src, "item_lengths", None)
        if method is not None:
            arr = np.asarray(method(given))
        elif given in (getattr(src, "column_names", None) or ()):  # a Hugging Face Dataset
            arr = np.asarray(src[given])
        else:
            columns = getattr(src, "column_names", None)
            raise ValueError(
                f"{where} = {given!r} names a column, but source {name!r} ({type(src).__name__}) "
                + (f"has the columns {list(columns)}" if columns else "has no columns")
                + "; give an int array with one value per item, or a column it has"
            )
        where = f"column {given!r} of source {name!r}"
    else:
        arr = np.asarray(given)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{where} must be 1-D with one value per item ({n}), got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.floor(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{where} must hold integers (token counts), got dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= 2**31):
        bad = int(np.flatnonzero((arr < 0) | (arr >= 2**31))[0])
        raise ValueError(f"{where}[{bad}] = {int(arr[bad])}: a length must be in [0, 2**31)")
    return arr.astype(np.int32, copy=False)  # checked to fit: the native table holds int32
