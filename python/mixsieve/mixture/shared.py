"""Shared-memory control of one MixtureDataset: what its processes tell each other.

The main process and its DataLoader workers (forked or spawned) share one small file-backed
block (in ``/dev/shm`` where it exists): the furthest position any process has scheduled (weight
changes may only land beyond it), the epoch, the lengths of iterable sources once someone has
read to their end, per-process statistics, a ring of weight changes, the weights controller's state,
and a *base*: the schedule state where every new pass starts (published by the main process).

Locking: ``flock`` on the block excludes processes, a ``threading.Lock`` the threads of one
process (``flock`` does not). Liveness: the owner holds a shared ``flock`` on a companion
``.live`` file for its lifetime (its forked children inherit it); a block whose ``.live`` lock
nobody holds belongs to a dead process and is removed by the next dataset created. No process
IDs are involved, so containers that share ``/dev/shm`` across PID namespaces are safe.

The ring never overwrites an entry that a reading process has not read: the writer waits for
lagging readers (they read at every chunk of positions). Entries before the base are free; when
the ring fills with entries a new pass from the base would need, the base is marked folded and a
new pass needs a fresh base (``set_epoch``) instead of a replay from the old one.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import tempfile
import threading
import time
import weakref
from typing import Any, Callable

import numpy as np

from ..sources import remove_if_unlocked

MAX_WORKERS = 64
RING = 4096  # weight changes the ring holds
# n_changes, frontier, epoch, freeze, base_seq, base_len, base_gen, slots, block, loader batch,
# controller state length (-1: too large to share)
_HEADER = 11
_CONTROLLER_BYTES = 1 << 16  # a weights controller's state, as JSON
_PREFIX = "mixsieve-"
_WAIT_S = 5.0  # how long a writer waits for a lagging reader before it gives up


def _base_bytes(k: int) -> int:
    return 4096 + 700 * k  # a state without its changes: ~11 numbers per source


def _layout(k: int) -> dict[str, tuple[int, int]]:
    """(offset, count) of each int64/float64 array, and the base's byte area."""
    out = {}
    off = 0
    for name, count in (
        ("header", _HEADER),
        ("lengths", k),
        ("left", k),
        ("rows", (MAX_WORKERS + 1) * 3 * k),
        ("readers", (MAX_WORKERS + 1) * 3),
        ("weights", (MAX_WORKERS + 1) * k),
        ("ring", RING * (1 + k)),
    ):
        out[name] = (off, count)
        off += 8 * count
    out["base"] = (off, _base_bytes(k))
    out["controller"] = (off + _base_bytes(k), _CONTROLLER_BYTES)
    out["size"] = (off + _base_bytes(k) + _CONTROLLER_BYTES, 0)
    return out


class SharedControl:
    """The block (see the module docstring). Picklable: a spawned worker opens it by name."""

    def __init__(self, k: int, path: str | None = None):
        self.k = k
        self.size = _layout(k)["size"][0]
        self._live_fd = -1
        self.missing = False
        if path is None:
            path = self._create()
        self.path = path
        self._open()

    def _create(self) -> str:
        root = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
        sweep(root)
        fd, path = tempfile.mkstemp(prefix=_PREFIX, dir=root)
        try:
            # the liveness lock is taken under a temporary name and renamed into place, so a
            # sweeper never sees it unlocked
            lfd, tmp = tempfile.mkstemp(prefix=_PREFIX + "tmp-", suffix=".live", dir=root)
            fcntl.flock(lfd, fcntl.LOCK_SH)
            os.rename(tmp, path + ".live")
            os.ftruncate(fd, self.size)
        finally:
            os.close(fd)
        self._live_fd = lfd
        weakref.finalize(self, _remove, path, lfd, os.getpid())
        return path

    def _open(self) -> None:
        self._pid = os.getpid()
        self._tlock = threading.Lock()
        self._fd = os.open(self.path, os.O_RDWR)
        weakref.finalize(self, os.close, self._fd)
        self._mm = mmap.mmap(self._fd, self.size)
        k, lay = self.k, _layout(self.k)

        def arr(name: str, dtype: Any) -> np.ndarray:
            off, count = lay[name]
            return np.frombuffer(self._mm, dtype, count, off)

        self.header = arr("header", np.int64)
        self.lengths = arr("lengths", np.int64)
        # per process: samples served, items reached (per source), tokens served
        self.rows = arr("rows", np.int64).reshape(MAX_WORKERS + 1, 3, k)
        self.left = arr("left", np.int64)  # where each source left the mixture (-1: in it)
        # (ring seq read or -1, position, owner token) per reading process
        self.readers = arr("readers", np.int64).reshape(MAX_WORKERS + 1, 3)
        self.weights = arr("weights", np.float64).reshape(MAX_WORKERS + 1, k)  # in force at that position
        self.ring = arr("ring", np.float64).reshape(RING, 1 + k)
        self._base = lay["base"]
        self._controller = lay["controller"]

    def reset(self, frontier: int) -> None:
        with self.lock():
            self.header[:] = 0
            self.header[1] = frontier
            self.lengths[:] = -1
            self.left[:] = -1
            self.rows[:] = 0
            self.readers[:, 0] = -1
            self.readers[:, 1] = -1
            self.readers[:, 2] = 0
            self.weights[:] = 0

    def ensure_process(self) -> None:
        if self._pid != os.getpid():  # forked: same mapping, but flock needs our own descriptor
            self._open()

    def lock(self) -> _Lock:
        self.ensure_process()
        return _Lock(self._fd, self._tlock)

    # ---- the base: where every new pass starts ----

    def publish_base(self, state: dict[str, Any], seq: int) -> None:
        """Call with the lock held. ``state`` is a schedule state without its changes; changes
        recorded at positions from it on are the ring's entries from ``seq``."""
        data = json.dumps(state, separators=(",", ":")).encode()
        off, cap = self._base
        if len(data) > cap:
            raise RuntimeError(
                f"the schedule state ({len(data)} bytes) does not fit the shared block ({cap})"
            )
        self._mm[off : off + len(data)] = data
        self.header[4] = seq
        self.header[5] = len(data)
        self.header[6] += 1

    def read_base(self) -> tuple[int, dict[str, Any] | None, int]:
        """(generation, state or None if none was published, seq). Call with the lock held."""
        n = int(self.header[5])
        if n == 0:
            return 0, None, 0
        off, _ = self._base
        return int(self.header[6]), json.loads(bytes(self._mm[off : off + n])), int(self.header[4])

    # ---- the weights controller's state (for the workers' own state dicts) ----

    def write_controller(self, state: dict[str, Any]) -> None:
        """Call with the lock held. A state too large for the block is not shared (workers'
        state dicts then leave it out, and a resume from them keeps the controller as it is)."""
        try:
            data = json.dumps(state, separators=(",", ":")).encode()
        except (TypeError, ValueError) as e:
            raise TypeError(
                "a weights controller's state_dict() must be JSON-serialisable (it goes into "
                f"checkpoints): {e}"
            ) from e
        off, cap = self._controller
        if len(data) > cap:
            self.header[10] = -1
            return
        self._mm[off : off + len(data)] = data
        self.header[10] = len(data)

    def read_controller(self) -> dict[str, Any] | None:
        """The controller's last shared state, or None. Call with the lock held."""
        n = int(self.header[10])
        if n <= 0:
            return None
        off, _ = self._controller
        out: dict[str, Any] = json.loads(bytes(self._mm[off : off + n]))
        return out

    # ---- the ring of weight changes ----

    def changes_since(self, seq: int) -> tuple[list[tuple[int, int, np.ndarray]], int]:
        """Entries (seq, position, weights) from ``seq`` on, and the next seq. Lock held."""
        n = int(self.header[0])
        if n - seq > RING:
            raise RuntimeError(f"weight change {seq} was overwritten in the shared ring (now at {n})")
        out = [
            (i, int(self.ring[i % RING, 0]), self.ring[i % RING, 1:].copy()) for i in range(max(seq, 0), n)
        ]
        return out, n

    def append_change(self, pos: int, vec: np.ndarray, fold_base: Callable[[], None]) -> int:
        """Writes a change (call with the lock held; it may be released while waiting for a
        lagging reader). ``fold_base()`` is called, lock held, when the entry to overwrite is one
        a new pass from the base would read: the base is then marked folded (a new pass must
        start from a base published later, by set_epoch). Returns the entry's seq."""
        deadline = time.monotonic() + _WAIT_S
        while True:
            n = int(self.header[0])
            old = n - RING  # the entry this write overwrites
            active = self.readers[:, 0] >= 0
            lagging = bool(np.any(self.readers[active, 0] <= old)) if old >= 0 else False
            if not lagging:
                if 0 <= old and old >= int(self.header[4]):
                    fold_base()
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{RING} weight changes at distinct positions are waiting for a DataLoader worker that "
                    f"has not read them for {_WAIT_S:.0f} s (workers read them as they schedule positions, "
                    "and wait while this process does not consume batches): make fewer changes between "
                    "batches, or let them land at the default position (one entry per position)"
                )
            self.pause()
        slot = n % RING
        self.ring[slot, 0] = pos
        self.ring[slot, 1:] = vec
        self.header[0] = n + 1
        return n

    def replace_last(self, pos: int, vec: np.ndarray) -> bool:
        """Overwrites the newest entry if it is at ``pos`` and no reading process has read it (the
        last change made at a position wins, so one entry does). Lock held."""
        n = int(self.header[0])
        if n == 0 or int(self.ring[(n - 1) % RING, 0]) != pos or n - 1 < int(self.header[4]):
            return False
        active = self.readers[:, 0] >= 0
        if np.any(self.readers[active, 0] >= n):
            return False
        self.ring[(n - 1) % RING, 1:] = vec
        return True

    def pause(self) -> None:
        """Lets others take the lock for a moment (call with the lock held)."""
        self._tlock.release()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        time.sleep(0.001)
        self._tlock.acquire()
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __getstate__(self) -> dict[str, Any]:
        return {"k": self.k, "path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.k = state["k"]
        self.path = state["path"]
        self.size = _layout(self.k)["size"][0]
        self._live_fd = -1
        self.missing = not os.path.exists(self.path)  # its owner is gone: the dataset makes a new one
        if not self.missing:
            self._open()


class _Lock:
    def __init__(self, fd: int, tlock: threading.Lock):
        self.fd = fd
        self.tlock = tlock

    def __enter__(self) -> None:
        self.tlock.acquire()
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.tlock.release()
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self.tlock.release()


def sweep(root: str) -> None:
    """Removes blocks whose owner is gone: nobody holds their ``.live`` lock."""
    try:
        names = [n for n in os.listdir(root) if n.startswith(_PREFIX) and n.endswith(".live")]
    except OSError:
        return
    for name in names:
        live = os.path.join(root, name)
        # a temporary .live of a creator that died also goes
        remove_if_unlocked(live, live[: -len(".live")], live)


def _remove(path: str, live_fd: int, owner_pid: int) -> None:
    if os.getpid() != owner_pid:  # a forked worker's copy going away must not remove the parent's file
        return
    for p in (path, path + ".live"):
        try:
            os.unlink(p)
        except OSError:
            pass
    try:
        os.close(live_fd)
    except OSError:
        pass
