"""One process's walk along the mixed stream.

The schedule's state lives in one ``_core.MixPlan``: the engine only asks it for the next piece
of (source, item) pairs, feeds it the weight changes and iterable lengths other processes
published, keeps this process's positions (blocks of ``block`` positions, block ``b`` belongs to
slot ``b % period``), reads their items, and remembers the plan as it was before the current
piece, so that the state at any position inside the piece is a short replay away.

Threads: the plan is used under ``Engine.lock``; a thread that records a weight change (the
training loop calling ``set_weights`` while another thread iterates) takes the same lock.
"""

from __future__ import annotations

import itertools
import operator
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from .. import _core
from .readers import Sources, objects
from .shared import SharedControl

_STEP = 1024  # workers publish served counts at least every this many samples


class Engine:
    def __init__(
        self,
        sources: Sources,
        plan: Any,
        shared: SharedControl | None,
        *,
        chunk_size: int,
        output_dict: bool,
        block: int,
        base: int,
        slot: int,
        period: int,
        ranks: int,
        row: int,
        yielded: int,
        seen: int,
        end: int | None,
        advance: Callable[[Any, int], Any],
        on_end: Callable[[Any], None],
    ) -> None:
        self.src = sources
        self.k = len(sources.names)
        self.plan = plan
        self.start = plan.copy()
        self.shared = shared
        self.chunk_size = chunk_size
        self.output_dict = output_dict
        self.block = block
        self.base = base
        self.slot, self.period, self.ranks, self.row = slot, period, ranks, row
        self.seen = seen  # shared-ring entries already fed to the plan
        # entries from here on were made after this walk began: they must not land behind it
        self.fresh_from = int(shared.header[0]) if shared is not None else 0
        self.token = int.from_bytes(os.urandom(7), "little") + 1  # marks this walk's reader row
        self.end = end
        self.advance = advance  # (plan or state, position) -> plan, replayed without data
        self.on_end = on_end  # called with the plan when the walk reaches ``end``
        self.lock = threading.RLock()
        self.loader_batch = 0  # the DataLoader's batch size, when one reads this walk
        self.claimed = plan.position
        self.yielded_before = yielded
        self.yielded_pieces = 0
        self._published = 0  # samples of the current piece counted in shared memory
        self._snap: Any = None  # the plan before the current piece
        self._cur: Iterator[Any] | None = None
        self._cur_len = 0
        self._cur_end = 0  # where the current run of the piece ends
        self._cur_pos = np.zeros(0, np.int64)
        self._cur_src = np.zeros(0, np.int32)
        self._cur_tok: np.ndarray | None = None  # token mode: the length of each sample of the piece
        self.tokens = bool(plan.token_mode)
        self.iters = {d: sources.reader(d) for d in sources.iterables}
        self._skipped = not self.iters
        maps = sources.maps
        self.lists = [m.data if m is not None and type(m.data) is list else None for m in maps]
        self.tables = [m.table if m is not None else None for m in maps]
        self.sizes = np.array([m.size if m is not None else 0 for m in maps], np.int64)
        self.keys = np.array(sources.keys, np.uint64)

    # -- states --

    def _consumed_in_piece(self) -> int:
        if self._cur is None:
            return 0
        return self._cur_end - operator.length_hint(self._cur)

    def yielded(self) -> int:
        return self.yielded_before + self.yielded_pieces + self._consumed_in_piece()

    def unpublished(self) -> tuple[np.ndarray, np.ndarray]:
        """Samples and tokens taken of the current piece and not yet counted in shared memory."""
        t = max(self._consumed_in_piece(), self._published)
        return self._counts(self._published, t)

    def _counts(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Per source, samples and tokens among samples [lo, hi) of the current piece."""
        src = self._cur_src[lo:hi]
        n = np.bincount(src, minlength=self.k)
        if self._cur_tok is None:
            return n, n
        tok = np.bincount(src, weights=self._cur_tok[lo:hi], minlength=self.k)
        return n, np.rint(tok).astype(np.int64)

    def _plan_at(self, pos: int) -> Any:
        """The plan at global position ``pos`` inside the current piece, with the changes
        recorded since the piece began."""
        plan = self._snap.copy()
        for p, w in self.plan.state()["changes"]:
            plan.add_change(p, np.asarray(w, np.float64))
        plan.fill(pos - plan.position)
        return plan

    def resume_plan(self) -> Any:
        """The plan at this process's next own position (what a restarted worker continues from)."""
        with self.lock:
            if self._snap is None:
                return self.start.copy()
            t = self._consumed_in_piece()
            if t < self._cur_len:
                return self._plan_at(int(self._cur_pos[t]))
            return self.plan.copy()

    def global_plan(self) -> Any:
        """The plan at the global position consumed so far (lock-step ranks, whole blocks)."""
        if self.period == 1:
            return self.resume_plan()
        n = self.yielded()
        if self.ranks > 1 and n % self.block:
            raise ValueError(
                f"this rank has yielded {n} samples, not a whole number of blocks of {self.block}: the "
                "ranks' samples so far are not a prefix of the stream; take the state at a batch "
                "boundary, or pass consumed_samples"
            )
        pos = self.base + n * self.ranks
        with self.lock:
            if self._snap is not None and self._snap.position <= pos <= self.plan.position:
                return self._plan_at(pos)
        return self.advance(self.start, pos)

    # -- the walk --

    def _sync(self, chunk_end: int) -> None:
        """Claims positions up to chunk_end and takes in what other processes published."""
        shared = self.shared
        if shared is None or self.row < 0:
            return
        with shared.lock():
            while shared.header[3] and shared.header[1] < chunk_end:  # a change is being agreed on
                shared.pause()
            if shared.header[1] < chunk_end:
                shared.header[1] = chunk_end
            self.read_shared()
        self.claimed = max(self.claimed, chunk_end)

    def read_shared(self) -> None:
        """New weight changes and iterable lengths (call with the shared lock and self.lock held)."""
        shared = self.shared
        assert shared is not None
        changes, self.seen = shared.changes_since(self.seen)
        for seq, pos, vec in changes:
            if pos < self.plan.position:
                if pos < self.start.position and seq < self.fresh_from:
                    continue  # recorded before this walk began: already in its start state
                raise RuntimeError(
                    f"a weight change at position {pos} arrived after this process passed it (it is at "
                    f"{self.plan.position}); after restoring DataLoader workers' own states, load the same "
                    "state into the dataset in the main process (ds.load_state_dict(loader.state_dict())) "
                    "so that changes land beyond them, or pass position= beyond the resumed position"
                )
            self.plan.add_change(pos, vec)
        if self.row >= 0:
            shared.readers[self.row] = (self.seen, self.plan.position, self.token)
            shared.weights[self.row] = self.plan.next_weights
        for d, ln in enumerate(shared.lengths.tolist()):
            if ln >= 0:
                self.plan.set_length(d, ln)

    def pieces(self, end: int | None, with_data: bool) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yields (start, src, item) of consecutive pieces of the schedule."""
        chunk = self.chunk_size
        while True:
            with self.lock:
                if self.plan.ended:
                    return
                pos = self.plan.position
                if end is not None and pos >= end:
                    return
                stop = (pos // chunk + 1) * chunk if end is None else min((pos // chunk + 1) * chunk, end)
                self._sync(stop)
                snap = self.plan.copy()
                src, item = self.plan.fill(stop - pos)
                if with_data and self.iters:
                    ended = self._pull_iterables(src, item)
                    if ended:  # an iterable ended inside this piece: again, with its length known
                        for d, n in ended:
                            snap.set_length(d, n)
                        self.plan = snap
                        continue
                self._snap = snap
            if len(src):
                yield pos, src, item

    def replay(self, position: int) -> None:
        for _ in self.pieces(position, with_data=False):
            pass

    def _pull_iterables(self, src: np.ndarray, item: np.ndarray) -> list[tuple[int, int]]:
        ended = []
        shared = self.shared
        for d, it in self.iters.items():
            sel = item[src == d]
            if not len(sel):
                continue
            n = it.pull_until(int(sel[-1]), self.src.cycles(d))
            if n is not None:
                ended.append((d, n))
                if shared is not None and self.row >= 0:
                    with shared.lock():
                        shared.lengths[d] = n
        return ended

    def _skip_iterables(self) -> None:
        if self._skipped:
            return
        counts = self.plan.counts
        for d, it in self.iters.items():
            it.skip_to(int(counts[d]), self.src.cycles(d))
        self._skipped = True

    def register(self) -> None:
        """Starts reading the shared ring (and counting in its statistics) as row ``row``."""
        shared = self.shared
        if shared is not None and self.row >= 0:
            with shared.lock():
                shared.readers[self.row] = (self.seen, self.plan.position, self.token)

    def run(self) -> Iterator[Iterator[Any]]:
        """Iterators over consecutive runs of this process's samples; chain them to get the
        samples. Per-sample cost is one C-level step of a zip over ready lists; Python runs once
        per run (at most ``_STEP`` samples, or one block)."""
        self.register()
        self._skip_iterables()
        block, period, slot, base = self.block, self.period, self.slot, self.base
        shared = self.shared
        row = self.row
        # workers publish what they serve every run (for the main process's stats); this process
        # counts its partial run when asked, so it reads a whole piece as one run
        step = max(_STEP, block) if row > 0 else 1 << 62
        try:
            for pos, src, item in self.pieces(self.end, with_data=True):
                n = len(src)
                g = np.arange(pos, pos + n, dtype=np.int64)
                mine = ((g - base) // block) % period == slot if period > 1 else np.ones(n, bool)
                own_src = src[mine] if period > 1 else src
                own_item = item[mine] if period > 1 else item
                m = len(own_src)
                prefetched: list[np.ndarray | None] = [None] * self.k
                present = np.bincount(own_src, minlength=self.k) if m else np.zeros(self.k, np.int64)
                for d in np.flatnonzero(present).tolist():
                    if self.lists[d] is None and self.src.maps[d] is not None:  # lists are read in C++
                        prefetched[d] = self.src.fetch_map(
                            d, own_item if present[d] == m else own_item[own_src == d]
                        )
                for d, it in self.iters.items():  # every process drops the others' share of the iterables
                    sel = src == d
                    if sel.any():
                        got = it.take(item[sel], mine[sel])
                        prefetched[d] = objects(got, len(got))
                self._finish_piece()
                if not m:
                    continue
                self._cur_pos = g[mine] if period > 1 else g
                self._cur_src = own_src
                self._cur_tok = self.plan.item_lengths(own_src, own_item) if self.tokens else None
                self._cur_len = m
                names, values = _core.gather_piece(
                    own_src,
                    own_item,
                    self.lists,
                    self.tables,
                    prefetched,
                    self.src.names,
                    self.sizes,
                    self.src.shuffle,
                    self.src.seed,
                    self.keys,
                )
                # each run is a zip over two list iterators (zip reuses its result tuple when the
                # consumer lets go of it); the names iterator's length hint tells how many samples
                # of the run were taken (states)
                for lo in range(0, m, step):
                    self._publish(lo)
                    hi = min(m, lo + step)
                    run_names = names if step >= m else names[lo:hi]
                    run_values = values if step >= m else values[lo:hi]
                    self._cur_end = hi
                    self._cur = iter(run_names)
                    part = zip(self._cur, run_values)
                    yield itertools.starmap(_as_dict, part) if self.output_dict else part
            self._finish_piece()
            if self.end is not None and self.plan.position >= self.end:
                self.on_end(self.plan)
        finally:
            self._publish(self._consumed_in_piece())  # an early break: what was taken is served
            if shared is not None and row >= 0:
                try:
                    with shared.lock():
                        if shared.readers[row, 2] == self.token:  # not a newer walk's registration
                            shared.readers[row, 0] = -1  # this process no longer reads the ring
                except (OSError, ValueError):  # collected after the block was closed: nobody reads it
                    pass

    def _publish(self, upto: int) -> None:
        """Counts samples [published, upto) of the current piece as served, in shared memory."""
        shared = self.shared
        if shared is not None and self.row >= 0 and upto > self._published:
            n, tok = self._counts(self._published, upto)
            shared.rows[self.row, 0] += n
            shared.rows[self.row, 2] += tok
        self._published = max(self._published, upto)

    def _finish_piece(self) -> None:
        """Counts the piece just finished as served."""
        if self._cur_len:
            self._publish(self._cur_len)
            self.yielded_pieces += self._cur_len
            self._cur_len = 0
            self._cur_src = self._cur_src[:0]
            self._cur = None
        self._published = 0
        shared = self.shared
        if shared is not None and self.row >= 0:
            np.maximum(shared.rows[self.row, 1], self.plan.counts, out=shared.rows[self.row, 1])
            np.maximum(shared.left, self.plan.left, out=shared.left)


def _as_dict(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        out = dict(value)
        out["source"] = name
        return out
    return {"source": name, "sample": value}
