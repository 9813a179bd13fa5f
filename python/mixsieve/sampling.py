"""Weighted sampling: one-pass samples and reservoirs that merge across shards, and FLYT's
Soft Cap Sampling.

Two meanings of "weighted sample without replacement" exist, and the method picks one:

* ``"ares"`` and ``"expj"``: successive sampling. Items are drawn one after another, each
  with probability ``w_i / (sum of the weights not yet drawn)``; this is what
  ``numpy.random.Generator.choice(replace=False, p=...)`` and ``torch.multinomial`` do, and the
  returned order is the draw order. Inclusion probabilities are *not* proportional to weight.
* ``"pps"``: inclusion probability proportional to weight, ``P(i in sample) = min(1, c * w_i)``
  with the probabilities summing to ``k`` (Chao 1982, heavy "certainty" items kept with
  probability 1). The order of the returned ids carries no meaning (ascending id).

Keys are kept in log space (``log(u) / w``), never ``u ** (1 / w)``, which loses all
resolution for small or large weights. For ``"ares"`` and ``"pps"`` the random number of an
item is a pure function of ``(seed, item id)``: the sample does not depend on batch
boundaries, thread count, or how a stream was split into shards and merged. ``"expj"`` draws
few random numbers (exponential jumps over the cumulative weight), each keyed by the item it
is drawn at: it does not depend on batch boundaries, and merging shards (same seed, disjoint
ids) gives a valid sample of the same distribution, but not the same bytes as one unsharded
stream, since where the jumps land depends on the order of the stream. ``"ares"`` is the
default everywhere, because its merges are exact.

Any finite weights work, from the smallest subnormal (5e-324) to 1.8e308, in float32 and
float64. Only relative weights matter, and the samplers keep them so: ``"ares"`` orders keys
exactly even where ``log(u) / w`` underflows or overflows a double (such samples take a slower
exact path); ``"expj"``, ``"pps"`` and ``replace=True`` multiply the weights by a power of two
when the largest lies outside [2**-256, 2**256], which changes no probability and leaves the
results of ordinary weights byte for byte as they were. Weights spanning more than the double
range inside one sample (e.g. ``[1e-320, 2e-320, 1.0, 1e308]`` with k = 4) are ordered exactly
by ``"ares"`` (and by ``weighted_sample(method="expj")``, which then draws the same
distribution through ``"ares"``); a ``WeightedReservoir(method="expj")`` and ``"pps"`` refuse
them with ``ValueError``. See docs/sampling.md.

For ``"ares"``, ``u_id`` has 52 random bits: the top 32 are one half of a SplitMix64 output
shared by the two ids that differ only in bit 3, the other 20 come from a second SplitMix64
stream of the id alone (``csrc/include/mixsieve/ares_keys.hpp``). A first pass needs only the
top bits (``log u <= u - 1 < (top + 1) * 2**-32 - 1``) to rule out almost every item, so one
hash serves two items and only the few survivors get a logarithm.

Weight 0 is never chosen. Negative, NaN or infinite weights raise ``ValueError`` naming the
first offending index.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from . import _checks, _core, _device

_METHODS = {"ares": 0, "expj": 1, "pps": 2}
# Version 2 added the power-of-two exponent (expj, pps), the weight outside the certain set
# (pps), wide [id, -frac, exp] items (ares, and expj when its exponent is not 0) and the range
# of default ids used. Version-1 states, which have none of these, still load.
_STATE_VERSION = 2
_READABLE_VERSIONS = (1, 2)


def _as_weights(weights: Any, name: str = "weights") -> np.ndarray:
    """A 1-D C-contiguous float32/float64 view of weights (numpy or CPU torch), copying only if needed."""
    if type(weights).__module__.startswith("torch"):
        if weights.device.type != "cpu":
            raise ValueError(f"{name} must be on the CPU, got a tensor on {weights.device}")
        weights = weights.detach()
        if not weights.dtype.is_complex and weights.dtype.is_floating_point and weights.element_size() < 4:
            weights = weights.double()  # bfloat16 and float8 have no numpy dtype; the conversion is exact
        weights = weights.numpy()
    arr = np.asarray(weights)
    if arr.dtype not in (np.float32, np.float64):
        if arr.dtype.kind == "f" and arr.dtype.itemsize in (4, 8):  # the other byte order
            arr = arr.astype(arr.dtype.newbyteorder("="))
        elif (arr.dtype.kind == "f" and arr.dtype.itemsize == 2) or arr.dtype.kind in "iub" or not arr.size:
            arr = arr.astype(np.float64)  # float16, ints and bools: exact in float64
        else:
            raise TypeError(
                f"{name} must hold real numbers: float16, float32 or float64 (either byte order), ints or "
                f"bools, got dtype {arr.dtype}"
            )
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < 1 << 64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return int(seed)


def _check_count(name: str, value: Any, lo: int, hi: int = 1 << 63, hi_text: str = "2**63") -> int:
    """``value`` as an int in ``[lo, hi)`` (default: what an int64 holds)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if int(value) < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    if int(value) >= hi:
        raise ValueError(f"{name} must be < {hi_text}, got {value}")
    return int(value)


def _check_method(method: str) -> int:
    if method not in _METHODS:
        raise ValueError(f"method must be one of {sorted(_METHODS)}, got {method!r}")
    return _METHODS[method]


def _threads(threads: int | None) -> int:
    return 0 if threads is None else _check_count("threads", threads, 1, 1 << 31, "2**31")


def weighted_sample(
    weights: Any,
    k: int,
    *,
    seed: int,
    replace: bool = False,
    method: str = "ares",
    return_keys: bool = False,
    threads: int | None = None,
    device: Any = None,
) -> Any:
    """Draw ``k`` indices from ``weights`` in one pass.

    Parameters
    ----------
    weights : 1-D array-like of float (numpy float32/float64 or a torch tensor: no copy)
        Non-negative, finite; zero weights are never chosen. float16, the other byte order, ints and bools are
        converted to float64 (or native float32); other dtypes raise TypeError.
    k : int
        Sample size. Without replacement, at most the number of positive weights.
    seed : int
        0 <= seed < 2**64. The same seed and weights give the same sample for any thread count
        and on either device.
    replace : bool
        ``True``: ``k`` independent draws with probability ``w_i / sum(w)``, in draw order,
        written straight into the result. Memory: 8 bytes per draw (16 with
        ``return_keys``) plus 8 bytes per weight for the prefix sums, nothing else; a size
        that does not fit in the available memory raises ``MemoryError`` before any work.
    method : {"ares", "expj", "pps"}
        See the module docstring. Ignored when ``replace=True``.
    return_keys : bool
        Also return the keys: ``log(u) / w`` for ares/expj (descending; rounded to a double,
        so -0.0, subnormal or -inf for weights that push the key out of range, while the order
        stays exact), the inclusion probability for pps, NaN with replacement.
    threads : int or None
        Threads for ``"ares"`` on the CPU (None: all cores). The result does not depend on it.
    device : None, "cpu", "cuda", "cuda:N" or torch.device
        Where to sample. ``None`` follows ``weights``: a CUDA torch tensor samples on its
        device, anything else on the CPU. ``"cpu"`` copies a CUDA tensor to the host first.
        On CUDA (``method="ares"``, ``replace=False`` only; anything else raises
        ``ValueError``) a CUDA tensor is read in place, numpy and CPU tensors are uploaded
        once, and the results are torch tensors on the device: the same ids, in the same
        order, with the same keys as on the CPU, bit for bit (docs/gpu.md). Weights whose
        keys leave the double range (weights above ~1e292, where ``log(u) / w`` can
        underflow, or spanning more than the double range; see the module docstring) are
        sampled by the CPU path from a host copy, with the result copied back: exact either
        way. Raises ``RuntimeError`` naming what is missing
        when CUDA cannot run here.

    Returns
    -------
    np.ndarray of int64, shape (k,): ares/expj in draw order (largest key first), pps by id.
    A torch int64 tensor on the device when sampling on CUDA. With ``return_keys``, the pair
    ``(ids, keys)`` (float64).

    Examples
    --------
    >>> import numpy as np, mixsieve as ms
    >>> idx = ms.weighted_sample(np.array([1.0, 0.0, 5.0, 2.0]), 2, seed=7)
    >>> sorted(idx.tolist()) in ([0, 2], [0, 3], [2, 3])
    True
    >>> 1 in ms.weighted_sample(np.array([1.0, 0.0, 5.0, 2.0]), 3, seed=1)
    False
    >>> ms.weighted_sample(np.array([1e-320, 1.0, 1e308]), 3, seed=0).tolist()  # the whole range
    [2, 1, 0]

    On a GPU (a CUDA tensor selects it; ``device="cuda"`` uploads numpy weights)::

        w = torch.rand(10**8, device="cuda", dtype=torch.float64)
        ids = ms.weighted_sample(w, 10**5, seed=3)  # int64 tensor on the GPU
        assert ids.tolist() == ms.weighted_sample(w.cpu(), 10**5, seed=3).tolist()
    """
    dev = _device.resolve(device, weights)
    if dev is not None:
        return _weighted_sample_cuda(weights, k, seed, replace, method, return_keys, threads, dev)
    w = _as_weights(_device.to_host(weights))
    k = _check_count("k", k, 0)
    m = _check_method(method)
    ids, keys = _core.weighted_sample(
        w, k, _check_seed(seed), bool(replace), m, _threads(threads), bool(return_keys)
    )
    return (ids, keys) if return_keys else ids


# Keyword arguments of _core_cuda.ares_sample that force its paths (tests only).
_CUDA_TUNING: dict[str, Any] = {}


def _cuda_weights(weights: Any, dev: Any) -> Any:
    """``weights`` as a 1-D contiguous float32/float64 tensor on ``dev``, converted as
    ``_as_weights`` converts host arrays (16-bit floats, ints and bools to float64)."""
    import torch

    if not _device._is_cuda_tensor(weights):
        host = _as_weights(weights)
        with warnings.catch_warnings():  # a read-only array is only read (copied to the device)
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(host).to(dev)
    t = weights.detach()
    if t.dtype not in (torch.float32, torch.float64):
        if t.dtype.is_complex and t.numel():
            raise TypeError(
                f"weights must hold real numbers: float16, float32 or float64 (either byte order), ints or "
                f"bools, got dtype {t.dtype}"
            )
        # float16, bfloat16, ints and bools, as numpy converts them (and an empty complex tensor)
        t = (t.real if t.dtype.is_complex else t).to(torch.float64)
    if t.dim() != 1:
        raise ValueError(f"weights must be 1-D, got shape {tuple(t.shape)}")
    return t.to(dev).contiguous()


def _weighted_sample_cuda(
    weights: Any,
    k: int,
    seed: int,
    replace: bool,
    method: str,
    return_keys: bool,
    threads: int | None,
    dev: Any,
) -> Any:
    """weighted_sample on CUDA device ``dev`` (see its docstring)."""
    import torch

    k = _check_count("k", k, 0)
    _check_method(method)
    seed = _check_seed(seed)
    nthreads = _threads(threads)
    if replace or method != "ares":
        raise ValueError(
            "on CUDA, weighted_sample runs method='ares' without replacement only, got "
            f"method={method!r}, replace={bool(replace)}; pass device='cpu' for the others"
        )
    w = _cuda_weights(weights, dev)  # after every check: a refused call uploads nothing
    ids = torch.empty(k, dtype=torch.int64, device=dev)
    keys = torch.empty(k, dtype=torch.float64, device=dev) if return_keys else None
    native = _device.native()
    with torch.cuda.device(dev):
        # scratch from torch's caching allocator, which keeps it for the next call
        ws_bytes = native.ares_workspace_bytes(w.numel(), k, **_CUDA_TUNING)
        ws = torch.empty(ws_bytes, dtype=torch.uint8, device=dev)
        info = native.ares_sample(
            _device.ptr(w), w.dtype == torch.float32, w.numel(), k, seed, _device.ptr(ids), _device.ptr(keys),
            _device.ptr(ws), ws_bytes, _device.stream(dev), **_CUDA_TUNING,
        )  # fmt: skip
    if not info["done"]:
        # Keys out of the double range (or more weights than one device sort takes): the
        # CPU's exact wide keys, on a host copy.
        host_ids, host_keys = _core.weighted_sample(w.cpu().numpy(), k, seed, False, 0, nthreads, return_keys)
        ids = torch.from_numpy(host_ids).to(dev)
        keys = torch.from_numpy(host_keys).to(dev) if return_keys else None
    return (ids, keys) if return_keys else ids


class WeightedReservoir:
    """A bounded weighted sample of a stream, fed in batches, mergeable and resumable.

    Memory is O(k) whatever the stream length. ``add`` takes a batch of weights (numpy or CPU
    torch, float32/float64) and optional int64 ids (default: running positions 0, 1, 2, ...
    across all batches of this reservoir). For ``"ares"`` the result equals
    :func:`weighted_sample` over the concatenated stream, byte for byte, however the stream
    was batched, sharded or merged.

    Shards: the id names the item (its random number is a function of seed and id), so shards
    must use disjoint ids -- pass ``ids=`` (e.g. global positions) to each shard's ``add``.
    Two reservoirs that both used the default ids, or whose samples hold the same id, refuse
    to ``merge`` with a ``ValueError`` naming an id.

    Parameters
    ----------
    k : int
        Sample size.
    seed : int
    method : {"ares", "expj", "pps"}
        Default ``"ares"`` (it was ``"expj"`` in 0.1.0): the same method as
        :func:`weighted_sample`, and the one whose merges are exact.

    Examples
    --------
    >>> import numpy as np, mixsieve as ms
    >>> w = np.arange(1.0, 11.0)
    >>> a, b = ms.WeightedReservoir(3, seed=1), ms.WeightedReservoir(3, seed=1)
    >>> a.add(w[:6], ids=np.arange(6)); b.add(w[6:], ids=np.arange(6, 10)); a.merge(b)
    >>> a.ids().tolist() == ms.weighted_sample(w, 3, seed=1).tolist()
    True
    >>> c, d = ms.WeightedReservoir(3, seed=1), ms.WeightedReservoir(3, seed=1)
    >>> c.add(w[:6]); d.add(w[6:]); c.merge(d)  # both used default ids 0, 1, ...
    Traceback (most recent call last):
    ...
    ValueError: both reservoirs used the default ids (running positions), so id 0 names an item of each; ...
    """

    def __init__(self, k: int, *, seed: int, method: str = "ares") -> None:
        self.k = _check_count("k", k, 0)
        self.seed = _check_seed(seed)
        self.method = method
        self._core = _core.WeightedReservoir(self.k, self.seed, _check_method(method))

    def add(self, weights: Any, ids: Any = None, *, threads: int | None = None) -> None:
        """Feed one batch of the stream (ids must be unique across the whole stream)."""
        w = _as_weights(weights)
        if ids is not None:
            ids_arr = np.asarray(ids)
            if ids_arr.ndim != 1 or ids_arr.shape[0] != w.shape[0]:
                raise ValueError(
                    f"ids must be 1-D with one id per weight ({w.shape[0]}), got shape {ids_arr.shape}"
                )
            if ids_arr.size and ids_arr.dtype.kind not in "iu":
                raise TypeError(f"ids must be integers, got dtype {ids_arr.dtype}")
            if ids_arr.size and ids_arr.dtype.kind == "u" and ids_arr.max() > np.iinfo(np.int64).max:
                raise ValueError(f"ids must fit in int64, got id {int(ids_arr.max())}")
            ids = ids_arr.astype(np.int64, copy=False)
        self._check_new_ids(ids, w.shape[0])
        self._core.add(w, ids, _threads(threads))

    def _check_new_ids(self, ids: np.ndarray | None, n: int) -> None:
        """Refuses ids repeated within the batch or naming an item the reservoir already has an id
        for: an id it holds, or (explicit ids) one of the default ids it has handed out."""
        if n == 0:
            return
        held = self._core.items()[0]
        if ids is None:  # default ids: the running positions seen, seen + 1, ...
            seen = int(self._core.state()["seen"])
            clash = held[(held >= seen) & (held - seen < n)] if seen <= np.iinfo(np.int64).max - n else held
            if clash.size:
                raise ValueError(
                    f"default id {int(clash.min())} (running position) is already held by the reservoir as "
                    "an explicit id; pass ids= to every add"
                )
            return
        uniq, first, cnt = np.unique(ids, return_index=True, return_counts=True)
        if (cnt > 1).any():
            dup = ids[np.min(first[cnt > 1])]
            raise ValueError(f"ids must be unique, got id {int(dup)} more than once in this add")
        lo, hi = (int(x) for x in self._core.state().get("default_ids", (0, 0)))
        bad = ids[((ids >= lo) & (ids < hi)) | np.isin(ids, held)] if lo < hi else ids[np.isin(ids, held)]
        if bad.size:
            raise ValueError(
                f"id {int(bad[0])} already names an item of this reservoir (a default id, i.e. a running "
                f"position in [{lo}, {hi}), or an id it holds); ids must be unique across the stream"
            )

    def merge(self, other: WeightedReservoir) -> None:
        """Fold another reservoir (same k, seed and method, disjoint ids) into this one.

        Exact for ``"ares"`` and ``"expj"``: the result is a valid sample of both streams
        (for ``"ares"``: the same bytes as one reservoir over both). ``"pps"`` cannot merge.
        Raises ``ValueError`` (and changes nothing) when both reservoirs used the default ids
        or their samples share an id.
        """
        if not isinstance(other, WeightedReservoir):
            raise TypeError(f"can only merge a WeightedReservoir, got {type(other).__name__}")
        self._core.merge(other._core)

    def ids(self) -> np.ndarray:
        """The current sample (int64): ares/expj best key first, pps by id."""
        ids: np.ndarray = self._core.items()[0]
        return ids

    def keys(self) -> np.ndarray:
        """Keys of ``ids()``: ``log(u) / w`` (ares/expj; rounded to a double, so -0.0, subnormal
        or -inf where that leaves the double range), inclusion probabilities (pps)."""
        keys: np.ndarray = self._core.items()[1]
        return keys

    def __len__(self) -> int:
        return len(self._core)

    def state_dict(self) -> dict[str, Any]:
        """A small JSON-serialisable snapshot (O(k)): ``load_state_dict`` resumes exactly.

        ares/expj ``items`` are ``[id, key]``, or, with ``"wide": true``, ``[id, -frac, exp]``
        for the key ``-frac * 2**exp`` (keys that a double may not hold: ares after weights
        beyond the double range, expj whenever it rescales its weights by ``2**-exponent``).
        """
        state = dict(self._core.state())
        for key in ("items", "certain", "ordinary"):
            if key in state:  # [id, key] or, for wide keys, [id, -frac, exp]
                state[key] = [[int(t[0]), float(t[1]), *(int(x) for x in t[2:])] for t in state[key]]
        if "default_ids" in state:
            state["default_ids"] = [int(x) for x in state["default_ids"]]
        return {"version": _STATE_VERSION, "k": self.k, "seed": self.seed, "method": self.method, **state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a snapshot taken by ``state_dict`` from a reservoir with the same k, seed, method.

        Reads states of versions 1 (mixsieve 0.1.0) and 2; any other version is refused.
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        version = state.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version not in _READABLE_VERSIONS:
            raise ValueError(
                f"state version {version!r} is not supported: this mixsieve reads versions 1 and 2"
            )
        for key in ("k", "seed"):
            if key in state:
                _checks.check_int(f"state[{key!r}]", state[key])
        mine = {"k": self.k, "seed": self.seed, "method": self.method}
        diff = [
            f"{key}: state has {state.get(key)!r}, reservoir has {v!r}"
            for key, v in mine.items()
            if state.get(key) != v
        ]
        if diff:
            raise ValueError("state does not match this reservoir (" + "; ".join(diff) + ")")
        self._check_state(state)
        try:
            self._core.restore({k: v for k, v in state.items() if k not in mine})  # with "version"
        except (KeyError, RuntimeError) as e:
            raise ValueError(f"state is incomplete or malformed: {e}") from e

    def _check_state(self, state: dict[str, Any]) -> None:
        """Types and consistency of a state's fields, each error naming the field."""
        i64 = 2**63
        if "seen" not in state:
            raise ValueError("state is incomplete or malformed: no 'seen'")
        seen = _checks.check_int("state['seen']", state["seen"], 0, 2**64)
        if "default_ids" in state:
            lo, hi = _checks.check_int_list("state['default_ids']", state["default_ids"], 2)
            if not (0 <= lo < hi <= i64):
                raise ValueError(
                    f"state['default_ids'] must be [first, end], 0 <= first < end <= 2**63, got {[lo, hi]}"
                )
        fields = ("certain", "ordinary") if self.method == "pps" else ("items",)
        wide = False
        if self.method != "pps" and "wide" in state:
            wide = _checks.check_bool("state['wide']", state["wide"])
        held: dict[int, str] = {}
        for field in fields:
            if field not in state:
                raise ValueError(f"state is incomplete or malformed: no {field!r}")
            items = _checks.check_list(f"state[{field!r}]", state[field])
            for j, item in enumerate(items):
                name = f"state[{field!r}][{j}]"
                if wide:
                    entry = _checks.check_list(name, item, 3)
                    _checks.check_float_list(name, entry[:2], 2)
                    _checks.check_int(f"{name}[2]", entry[2])
                else:
                    entry = _checks.check_list(name, item, 2)
                    _checks.check_float_list(name, entry[1:], 1)
                ident = _checks.check_int(f"{name}[0]", entry[0], -i64, i64)
                if ident in held:
                    raise ValueError(f"{name} repeats id {ident} (also in {held[ident]}): ids must be unique")
                held[ident] = name
        if len(held) > self.k:
            raise ValueError(f"state holds {len(held)} items, more than k = {self.k}")
        if seen < len(held):
            raise ValueError(f"state['seen'] = {seen} is less than the {len(held)} items the state holds")
        for key in ("skip", "total", "outside", "scale"):
            if key in state:
                _checks.check_float_list(f"state[{key!r}]", [state[key]], 1)
        if "exponent" in state:
            _checks.check_int("state['exponent']", state["exponent"])

    def __repr__(self) -> str:
        return f"WeightedReservoir(k={self.k}, seed={self.seed}, method={self.method!r}, size={len(self)})"


def soft_cap_sample(
    scores: Any,
    total: int,
    *,
    penalty: float,
    batch_size: int,
    seed: int,
    return_indices: bool = False,
    threads: int | None = None,
    device: Any = None,
) -> Any:
    """FLYT's Soft Cap Sampling: repeat examples by score without over-representing any.

    Builds a training multiset of ``total`` picks in batches of ``batch_size``: each batch is
    a without-replacement sample from ``softmax(scores - penalty * counts)``, so every pick
    multiplies that example's weight by ``exp(-penalty)``. Implemented exactly as the b
    smallest exponential-race keys per batch, generated as Poisson points over the cumulative
    weight of fixed segments of 65,536 examples (random numbers keyed by seed, batch, band and
    segment), on all cores. The same seed gives the same output for any thread count, and on
    CUDA the same output as on the CPU, byte for byte. Outputs for a given seed differ from
    mixsieve 0.1.0's (see docs/sampling.md).

    Parameters
    ----------
    scores : 1-D float array (numpy, or a torch tensor on the CPU or a CUDA device)
        Per-example logits, finite. Adding a constant changes nothing.
    total : int
        Number of picks, >= 0.
    penalty : float
        Score drop per pick (FLYT's ``repetition_penalty``, e.g. 0.15), > 0.
    batch_size : int
        Picks per batch (>= 1); an example appears at most once per batch, so no count
        exceeds the number of batches.
    return_indices : bool
        Return the picked indices in pick order (length ``total``) instead of the counts.
    threads : int, optional
        CPU threads (default: all cores); ignored on CUDA.
    device : None, "cpu", "cuda", "cuda:N" or torch.device
        Where to run. None follows ``scores``: a CUDA tensor runs on its device, anything else
        on the CPU. "cpu" copies a CUDA tensor to the host. On CUDA, float32/float64 tensors
        on the device are read in place, anything else is converted like on the CPU and
        uploaded once; fewer than 2**31 examples.

    Returns
    -------
    int64 counts per example (summing to ``total``), or the picked indices: an ``np.ndarray``
    on the CPU, a ``torch.Tensor`` on the CUDA device.

    Examples
    --------
    >>> import numpy as np, mixsieve as ms
    >>> c = ms.soft_cap_sample(np.array([2.0, 1.0, 0.0, -5.0]), 8, penalty=0.5, batch_size=2, seed=0)
    >>> int(c.sum()), bool(c.max() <= 4)
    (8, True)

    On a GPU (scores already there; the counts come back as a tensor on it, equal to the CPU's):

    >>> import torch  # doctest: +SKIP
    >>> s = torch.randn(10**7, device="cuda", dtype=torch.float64)  # doctest: +SKIP
    >>> c = ms.soft_cap_sample(s, 10**7, penalty=0.15, batch_size=10**5, seed=0)  # doctest: +SKIP
    >>> bool((c.cpu().numpy() == ms.soft_cap_sample(s.cpu().numpy(), 10**7, penalty=0.15,
    ...     batch_size=10**5, seed=0)).all())  # doctest: +SKIP
    True
    """
    from . import _device

    dev = _device.resolve(device, scores)
    # the scalars first: a bad one must not cost an upload of the scores
    total = _check_count("total", total, 0)
    batch_size = _check_count("batch_size", batch_size, 1)
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float, np.integer, np.floating)):
        raise TypeError(f"penalty must be a float, got {type(penalty).__name__}")
    try:
        penalty = float(penalty)
    except OverflowError:
        raise ValueError(f"penalty must be a finite number > 0, got {penalty!r}") from None
    if not (penalty > 0 and math.isfinite(penalty)):
        raise ValueError(f"penalty must be a finite number > 0, got {penalty!r}")
    s: Any  # a numpy array for the CPU, a torch tensor on the device for CUDA
    if dev is None:
        s = _as_weights(_device.to_host(scores), "scores")
    else:
        from . import _soft_cap_cuda

        s = _soft_cap_cuda.device_scores(scores, dev)
    n = int(s.shape[0])
    if total > 0 and batch_size > n and total > n:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {n} examples: a batch samples without replacement"
        )
    seed = _check_seed(seed)
    nthreads = _threads(threads)
    if dev is not None:
        return _soft_cap_cuda.sample(s, total, float(penalty), batch_size, seed, bool(return_indices), dev)
    counts, picks = _core.soft_cap_sample(
        s, total, float(penalty), batch_size, seed, nthreads, bool(return_indices)
    )
    out: np.ndarray = picks if return_indices else counts
    return out
