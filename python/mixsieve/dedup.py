"""MinHash near-duplicate detection: signatures, LSH search and clustering.

The text-normalisation and clustering rules are in the docstring of :func:`dedup`
(``help(mixsieve.dedup)``) and in the project's ``docs/dedup.md``.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union, overload

import numpy as np

from . import _core, _device, _minhash_cuda

Text = Union[str, bytes]
_UNITS = {"word": 0, "char": 1}
_DTYPES = {np.dtype(np.uint32): 32, np.dtype(np.uint64): 64}
_PROGRESS_MIN_DOCS = 50_000


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {bound}, got {v}")
    return v


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(f"threshold must be a float, got {type(threshold).__name__}")
    t = float(threshold)
    if not 0.0 < t < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    return t


def _check_dtype(dtype: Any) -> np.dtype[Any]:
    try:
        dt: np.dtype[Any] = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype must be np.uint32 or np.uint64, got {dtype!r}") from e
    if dt not in _DTYPES:
        raise TypeError(f"dtype must be np.uint32 or np.uint64, got {dt}")
    return dt


def _threads(threads: int | None) -> int:
    if threads is None:
        return 0
    return _check_int("threads", threads, 1)


def _positional(texts: Any) -> Any:
    """pandas Series/Index read by position (the native readers index with ``texts[i]``,
    which a Series answers by label): their values as an object array; anything else as is."""
    if type(texts).__module__.startswith("pandas") and hasattr(texts, "to_numpy"):
        return texts.to_numpy(dtype=object)
    return texts


def _arrow_chunks(texts: Any) -> list[Any]:
    """The pieces to hash in one native call each: a pyarrow.ChunkedArray's chunks, else the
    texts themselves."""
    chunks = getattr(texts, "chunks", None)
    if chunks is not None and not hasattr(texts, "__arrow_c_array__"):  # pyarrow.ChunkedArray
        return list(chunks)
    return [texts]


class MinHasher:
    """Turns documents into MinHash signatures, normalising and shingling in C++.

    Parameters
    ----------
    num_perm : int
        Slots per signature (permutations), >= 1.
    ngram : int
        Shingle width in units, >= 1.
    unit : {"word", "char"}
        Shingle unit; see :func:`dedup` (``help(mixsieve.dedup)``) for the exact rules.
    seed : int
        Seeds the shingle hash and the permutations (0 <= seed < 2**64). Equal seeds and
        parameters give equal signatures on every machine and for every thread count.
    dtype : np.uint32 or np.uint64
        Slot type (keyword-only). uint32 halves memory; uint64 for very large sets.

    Examples
    --------
    >>> import mixsieve as ms
    >>> h = ms.MinHasher(num_perm=128, ngram=3, seed=1)
    >>> sigs = h.signatures(["the quick brown fox jumps", "The quick brown fox jumps!"])
    >>> sigs.shape, sigs.dtype.name
    ((2, 128), 'uint32')
    >>> ms.estimate_jaccard(sigs[0], sigs[1])
    1.0
    """

    def __init__(
        self,
        num_perm: int = 128,
        ngram: int = 5,
        unit: str = "word",
        seed: int = 1,
        *,
        dtype: Any = np.uint32,
    ) -> None:
        self.num_perm = _check_int("num_perm", num_perm, 1, 1 << 16)
        self.ngram = _check_int("ngram", ngram, 1, 1 << 16)
        if unit not in _UNITS:
            raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
        self.unit = unit
        self.seed = _check_int("seed", seed, 0, (1 << 64) - 1)
        self.dtype = _check_dtype(dtype)
        cls = _core.MinHasher32 if _DTYPES[self.dtype] == 32 else _core.MinHasher64
        self._core: _core.MinHasher32 = cls(self.num_perm, self.ngram, _UNITS[unit], self.seed)
        self._device_params: dict[int, Any] = {}  # CUDA device index -> the permutations there

    @overload
    def signatures(
        self, texts: Sequence[Text], threads: int | None = None, *, device: Literal["cpu"] | None = None
    ) -> np.ndarray: ...
    @overload
    def signatures(self, texts: Any, threads: int | None = None, *, device: Any = None) -> Any: ...
    def signatures(self, texts: Any, threads: int | None = None, *, device: Any = None) -> Any:
        """Signatures of many documents, computed on ``threads`` cores (None: all) without the GIL,
        or on a CUDA device.

        Parameters
        ----------
        texts : sequence of str or bytes, an Arrow string array, or a ``(data, offsets)`` tensor pair
            One document per item. Arrow ``string``/``large_string`` arrays (anything with
            ``__arrow_c_array__``, e.g. ``pyarrow.Array``, or a ``pyarrow.ChunkedArray``) are read
            in place, without copying the text; nulls count as empty documents. A pair of torch
            tensors ``(data, offsets)``, uint8 ``[bytes]`` and int64 ``[n + 1]`` (the Arrow
            layout: document i is ``data[offsets[i]:offsets[i + 1]]``), is read where it is: on a
            CUDA device without a copy (``ValueError`` if the offsets decrease or leave ``data``).
        threads : int or None
            Worker threads (on CUDA: threads copying host text into the upload buffer); the
            output does not depend on it.
        device : None, "cpu", "cuda", "cuda:N" or torch.device (keyword-only)
            Where to compute. None follows the input: CUDA tensors run on their device, anything
            else on the CPU. On CUDA, texts from the host are uploaded once (in chunks of at
            most 64 MiB of text) and normalised, shingled and hashed on the device; the result
            is the same bytes as on the CPU. ``RuntimeError`` (naming what is missing) if CUDA
            is asked for and cannot run.

        Returns
        -------
        np.ndarray of shape (len(texts), num_perm) and this hasher's dtype; on CUDA a torch
        tensor of that shape (torch.uint32 or torch.uint64) on the device.

        Examples
        --------
        >>> import mixsieve as ms
        >>> h = ms.MinHasher(num_perm=4, ngram=2)
        >>> h.signatures(["a b c", "A b, c!"], device="cpu").tolist() == h.signatures(["a b c"] * 2).tolist()
        True

        On a GPU (``h.signatures(docs, device="cuda").cpu().numpy()`` equals ``h.signatures(docs)``):

        >>> sigs = h.signatures(["a b c"], device="cuda")  # doctest: +SKIP
        >>> sigs.dtype, sigs.device.type  # doctest: +SKIP
        (torch.uint32, 'cuda')
        """
        nthreads = _threads(threads)
        texts = _positional(texts)
        pair = _minhash_cuda.is_tensor_pair(texts)
        dev = _device.resolve(device, *(texts if pair else ()))
        if dev is not None:
            return _minhash_cuda.signatures(self, texts, dev, nthreads)[0]
        if pair:
            texts = _minhash_cuda.host_texts(texts)
        parts = [self._core.signatures(c, nthreads) for c in _arrow_chunks(texts)]
        if len(parts) == 1:
            out: np.ndarray = parts[0]  # no copy
            return out
        return np.concatenate(parts) if parts else np.empty((0, self.num_perm), self.dtype)

    def _signatures_digests(self, texts: Any, threads: int) -> tuple[np.ndarray, np.ndarray]:
        """Signatures and the [n, 2] uint64 digests of the normalised texts (see dedup's
        ``exact``)."""
        parts = [self._core.signatures_digests(c, threads) for c in _arrow_chunks(texts)]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return np.empty((0, self.num_perm), self.dtype), np.empty((0, 2), np.uint64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def signature(self, text: Text) -> np.ndarray:
        """The signature of one document, shape (num_perm,)."""
        if not isinstance(text, (str, bytes)):
            raise TypeError(f"text must be str or bytes, got {type(text).__name__}")
        out: np.ndarray = self._core.signatures([text], 1)[0]
        return out

    def params(self) -> dict[str, Any]:
        """The parameters that define these signatures (stored with saved indexes).

        ``scheme`` is the version of the normalisation, shingling and hashing rules of this
        mixsieve; signatures made under different schemes are not comparable.
        """
        return {
            "num_perm": self.num_perm,
            "ngram": self.ngram,
            "unit": self.unit,
            "seed": self.seed,
            "dtype": self.dtype.name,
            "scheme": int(_core.SIGNATURE_SCHEME),
        }

    def __repr__(self) -> str:
        return (
            f"MinHasher(num_perm={self.num_perm}, ngram={self.ngram}, unit={self.unit!r}, "
            f"seed={self.seed}, dtype=np.{self.dtype.name})"
        )


def estimate_jaccard(a: np.ndarray, b: np.ndarray) -> float | np.ndarray:
    """Estimated Jaccard similarity: the fraction of equal slots.

    Two 1-D signatures give a float; two 2-D arrays of equal shape give one estimate per row.

    >>> import numpy as np, mixsieve as ms
    >>> ms.estimate_jaccard(np.array([1, 2, 3, 4], np.uint32), np.array([1, 2, 0, 4], np.uint32))
    0.75
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.dtype != b.dtype:
        raise TypeError(f"signature dtypes differ: {a.dtype} and {b.dtype}")
    dt = _check_dtype(a.dtype)
    if a.shape != b.shape:
        raise ValueError(f"signature shapes differ: {a.shape} and {b.shape}")
    if a.ndim not in (1, 2) or a.shape[-1] == 0:
        raise ValueError(f"signatures must be non-empty 1-D or 2-D arrays, got shape {a.shape}")
    out = _core.jaccard(np.ascontiguousarray(a, dt), np.ascontiguousarray(b, dt))
    return float(out[0]) if a.ndim == 1 else out


def resolve_bands(
    threshold: float,
    num_perm: int,
    bands: int | None = None,
    rows: int | None = None,
    weights: tuple[float, float] = (0.5, 0.5),
) -> tuple[int, int]:
    """Bands and rows for an LSH index.

    With neither given, they minimise ``weights[0] * false-positive area + weights[1] *
    false-negative area`` under the S-curve ``1 - (1 - s**rows)**bands`` (datasketch's rule);
    with one given, the other is ``num_perm // given`` (which must divide evenly).

    >>> resolve_bands(0.8, 128)
    (9, 13)
    """
    threshold = _check_threshold(threshold)
    num_perm = _check_int("num_perm", num_perm, 1, 1 << 16)
    if bands is None and rows is None:
        fp, fn = (float(w) for w in weights)
        if not (fp >= 0 and fn >= 0 and fp + fn > 0):
            raise ValueError(f"weights must be two non-negative numbers, not both 0, got {weights!r}")
        b, r = _core.optimal_bands(threshold, num_perm, fp, fn)
        return int(b), int(r)
    if bands is not None:
        bands = _check_int("bands", bands, 1)
    if rows is not None:
        rows = _check_int("rows", rows, 1)
    if rows is None:
        assert bands is not None
        if num_perm % bands:
            raise ValueError(
                f"num_perm={num_perm} is not divisible by bands={bands}; pass rows= too or pick a divisor"
            )
        rows = num_perm // bands
    if bands is None:
        if num_perm % rows:
            raise ValueError(
                f"num_perm={num_perm} is not divisible by rows={rows}; pass bands= too or pick a divisor"
            )
        bands = num_perm // rows
    if bands * rows > num_perm:
        raise ValueError(f"bands * rows = {bands} * {rows} = {bands * rows} exceeds num_perm={num_perm}")
    return bands, rows


_INT64_MAX = 2**63 - 1


def _check_key_range(key: int) -> None:
    if not -(2**63) <= key <= _INT64_MAX:
        raise ValueError(f"key {key} is outside the int64 range [-2**63, 2**63 - 1]")


class LSHIndex:
    """An in-memory banded LSH index of MinHash signatures, saveable and appendable.

    Each band of ``rows`` slots is hashed to an 8-byte key. Rows that share a band key with an
    indexed row are candidates; with ``verify=True`` (default) a candidate counts only if the
    signatures' estimated Jaccard is >= ``threshold``, which drops banding's false positives.

    Parameters
    ----------
    threshold : float in (0, 1)
        Jaccard similarity that makes two documents near-duplicates.
    num_perm : int
        Signature length; every added signature must have it.
    bands, rows : int, optional (keyword-only)
        Banding; by default chosen from the threshold (see :func:`resolve_bands`).
    verify : bool
        Check candidates against the signature estimate.
    match_empty : bool
        Let documents without shingles (all-maximum signatures) match each other.
    weights : (float, float)
        False-positive and false-negative weights for choosing bands and rows.
    hasher : MinHasher, optional (keyword-only)
        The hasher whose signatures this index holds. Its parameters are saved with the index,
        so ``mixsieve-dedup --index`` and :meth:`load` hash new documents the same way, and a
        different hasher given later (to :meth:`add`, :meth:`query`, :meth:`save`,
        :meth:`load`) is refused with ``ValueError``. Without it the index records no hasher
        (``hasher_params`` is None) until one is given.

    Keys are int64 and unique within an index; ``-1`` is reserved (it means "no match" in the
    result of :meth:`add`). :meth:`add` refuses a repeated or reserved key with ``ValueError``
    naming it, and then adds nothing of that call.

    Examples
    --------
    >>> import mixsieve as ms
    >>> h = ms.MinHasher(num_perm=128, ngram=2)
    >>> idx = ms.LSHIndex(threshold=0.8, num_perm=128)
    >>> idx.add(h.signatures(["a b c d e f g h", "x y z", "a b c d e f g h"])).tolist()
    [-1, -1, 0]
    >>> idx.query(h.signature("A b c d e f g h.")).tolist()
    [0, 2]
    """

    def __init__(
        self,
        threshold: float = 0.8,
        num_perm: int = 128,
        *,
        bands: int | None = None,
        rows: int | None = None,
        verify: bool = True,
        match_empty: bool = False,
        weights: tuple[float, float] = (0.5, 0.5),
        hasher: MinHasher | None = None,
    ) -> None:
        self.threshold = _check_threshold(threshold)
        self.num_perm = _check_int("num_perm", num_perm, 1, 1 << 16)
        self.bands, self.rows = resolve_bands(self.threshold, self.num_perm, bands, rows, weights)
        self.verify = bool(verify)
        self.match_empty = bool(match_empty)
        self.meta: dict[str, Any] = {}
        self._core: _core.LSHIndex32 | None = None
        self._dtype: np.dtype[Any] | None = None
        self._hasher: dict[str, Any] | None = None
        if hasher is not None:
            self.check_hasher(hasher)

    @property
    def hasher_params(self) -> dict[str, Any] | None:
        """The recorded hasher's :meth:`MinHasher.params`, or None if no hasher is known."""
        return None if self._hasher is None else dict(self._hasher)

    def check_hasher(self, hasher: MinHasher, *, where: str = "this index") -> None:
        """Refuse (``ValueError``, naming both values) a hasher whose signatures this index
        cannot hold; record it if the index has no hasher yet."""
        if not isinstance(hasher, MinHasher):
            raise TypeError(f"hasher must be a MinHasher, got {type(hasher).__name__}")
        mine = hasher.params()
        if mine["num_perm"] != self.num_perm:
            raise ValueError(f"{where} has num_perm={self.num_perm}, the hasher num_perm={mine['num_perm']}")
        if self._dtype is not None and mine["dtype"] != self._dtype.name:
            raise ValueError(f"{where} holds {self._dtype.name} signatures, the hasher makes {mine['dtype']}")
        if self._hasher is None:
            self._hasher = mine
            return
        for name in ("ngram", "unit", "seed", "dtype", "scheme"):
            if self._hasher[name] != mine[name]:
                raise ValueError(
                    f"{where} was built by a hasher with {name}={self._hasher[name]!r}, "
                    f"but this hasher has {name}={mine[name]!r}"
                )

    @property
    def dtype(self) -> np.dtype[Any] | None:
        """Slot dtype of the indexed signatures (None until the first add)."""
        return self._dtype

    def _core_for(self, dtype: np.dtype[Any]) -> _core.LSHIndex32:
        if self._core is None:
            if self._hasher is not None and self._hasher["dtype"] != dtype.name:
                raise TypeError(
                    f"signatures have dtype {dtype}, but this index's hasher makes {self._hasher['dtype']}"
                )
            cls = _core.LSHIndex32 if _DTYPES[dtype] == 32 else _core.LSHIndex64
            self._core = cls(
                self.num_perm, self.bands, self.rows, self.threshold, self.verify, self.match_empty
            )
            self._dtype = dtype
        elif dtype != self._dtype:
            raise TypeError(f"signatures have dtype {dtype}, but this index holds {self._dtype}")
        return self._core

    def _signatures(self, signatures: Any, ndim: tuple[int, ...]) -> np.ndarray:
        sigs = np.asarray(signatures)
        _check_dtype(sigs.dtype)
        if sigs.ndim not in ndim:
            want = " or ".join(f"{d}-D" for d in ndim)
            raise ValueError(f"signatures must be {want}, got shape {sigs.shape}")
        if sigs.shape[-1] != self.num_perm:
            raise ValueError(
                f"signatures have {sigs.shape[-1]} slots, this index expects num_perm={self.num_perm}"
            )
        return sigs

    def add(
        self,
        signatures: np.ndarray,
        *,
        keys: Any = None,
        return_similarity: bool = False,
        hasher: MinHasher | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Index signatures; for each, report an earlier near-duplicate.

        Rows are added in order, so a row can match earlier rows of the same call.

        Parameters
        ----------
        signatures : np.ndarray, (n, num_perm) or (num_perm,), uint32 or uint64
        keys : array-like of int64, optional
            A key per row (e.g. document ids), distinct, not -1 and not already indexed;
            default: running positions ``len(self), len(self) + 1, ...`` (which must be free).
        return_similarity : bool
            Also return the estimated Jaccard of each reported match (float32, 0 for none).
        hasher : MinHasher, optional
            The hasher that made ``signatures``: checked against (or recorded as) the index's.

        Returns
        -------
        np.ndarray of int64, one per row: the key of the most similar earlier indexed
        near-duplicate (ties: the earliest), or -1.
        """
        sigs = self._signatures(signatures, (1, 2))
        n = 1 if sigs.ndim == 1 else sigs.shape[0]
        if hasher is not None:
            self.check_hasher(hasher)
        core = self._core_for(sigs.dtype)
        if keys is None:
            keys = np.arange(len(core), len(core) + n, dtype=np.int64)
        else:
            if not isinstance(keys, np.ndarray):
                # Python ints beyond int64 would make numpy pick uint64, float64 or object (and
                # the cast below would wrap or round them): name the first such key as given.
                for x in keys:
                    if isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)):
                        _check_key_range(int(x))
            k = np.asarray(keys)
            if k.ndim != 1 or k.shape[0] != n:
                raise ValueError(f"keys must be 1-D with one key per row ({n}), got shape {k.shape}")
            if k.dtype.kind not in "iu":
                raise TypeError(f"keys must be integers, got dtype {k.dtype}")
            if k.dtype.kind == "u" and k.size and int(k.max()) > _INT64_MAX:
                _check_key_range(int(k[np.argmax(k > _INT64_MAX)]))
            keys = k.astype(np.int64)
        dup_key, _, sim = core.add(sigs, keys)
        return (dup_key, sim) if return_similarity else dup_key

    def query(self, signature: np.ndarray, *, hasher: MinHasher | None = None) -> np.ndarray:
        """Keys of indexed near-duplicates of one signature (int64, in insertion order).

        ``hasher``, if given, is checked against the index's recorded hasher (not recorded).
        """
        sig = self._signatures(signature, (1,))
        if hasher is not None and self._hasher is not None:
            self.check_hasher(hasher)
        if self._core is None:
            return np.empty(0, dtype=np.int64)
        return self._core_for(sig.dtype).query(sig)

    def keys(self) -> np.ndarray:
        """Keys of all indexed rows, in insertion order."""
        return np.empty(0, np.int64) if self._core is None else self._core.keys()

    def signatures(self) -> np.ndarray:
        """A copy of all indexed signatures, in insertion order."""
        if self._core is None:
            return np.empty((0, self.num_perm), np.uint32)
        out: np.ndarray = self._core.signatures()
        return out

    def __len__(self) -> int:
        return 0 if self._core is None else len(self._core)

    def save(self, path: str | os.PathLike[str], *, hasher: MinHasher | None = None) -> None:
        """Write the index to ``path`` (atomically: a temporary file renamed into place).

        The file holds the parameters, the hasher's parameters (when known; ``hasher`` is
        checked against or recorded as the index's), ``meta``, keys and signatures with a
        checksum; loading rebuilds the band tables exactly, so a loaded index answers as the
        saved one did. The format is described in the project's ``docs/index-format.md``.
        """
        if hasher is not None:
            self.check_hasher(hasher)
        default = np.dtype(self._hasher["dtype"]) if self._hasher else np.dtype(np.uint32)
        core = self._core_for(self._dtype or default)
        hp = None
        if self._hasher is not None:
            h = self._hasher
            hp = (int(h["ngram"]), _UNITS[h["unit"]], int(h["seed"]), int(h["scheme"]))
        path = os.fspath(path)
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "LSHIndex.save needs a file path, not a folder", path)
        payload = core.to_bytes(json.dumps(self.meta, sort_keys=True).encode(), hp)
        folder = os.path.dirname(os.path.abspath(path))
        # Created with mode 0666 less the umask, as any new file (and mixsieve-dedup's outputs):
        # tempfile.mkstemp would leave the index readable by its owner only.
        while True:
            tmp = os.path.join(folder, f".mixsieve-{secrets.token_hex(8)}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
                break
            except FileExistsError:
                continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, hasher: MinHasher | None = None) -> LSHIndex:
        """Read an index written by :meth:`save` (or by ``mixsieve-dedup --update-index``).

        With ``hasher``, refuse (``ValueError`` naming both values) an index whose recorded
        hasher differs; an index without one records ``hasher``. Files of format 1 (before
        hashers were recorded) load with ``hasher_params`` None, or with the hasher an older
        ``mixsieve-dedup`` wrote into ``meta``.

        Raises ValueError if the file is truncated, corrupt or not a mixsieve index.
        """
        with open(path, "rb") as f:
            data = f.read()
        try:
            width = _core.index_width(data)
            core_cls = _core.LSHIndex32 if width == 4 else _core.LSHIndex64
            core, meta, hp, version = core_cls.from_bytes(data)
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)}: {e}") from None
        p = core.params()
        self = cls.__new__(cls)
        self.threshold, self.num_perm, self.bands, self.rows = (
            p["threshold"],
            p["num_perm"],
            p["bands"],
            p["rows"],
        )
        self.verify, self.match_empty = p["verify"], p["match_empty"]
        try:
            self.meta = json.loads(meta.decode()) if meta else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{os.fspath(path)}: index metadata is not valid JSON") from e
        self._core = core
        self._dtype = np.dtype(np.uint32 if width == 4 else np.uint64)
        self._hasher = None
        if hp is None and version == 1:
            hp = _hasher_from_v1_meta(self.meta)
        if hp is not None:
            units = {v: k for k, v in _UNITS.items()}
            self._hasher = {
                "num_perm": self.num_perm,
                "ngram": hp[0],
                "unit": units[hp[1]],
                "seed": hp[2],
                "dtype": self._dtype.name,
                "scheme": hp[3],
            }
        if hasher is not None:
            self.check_hasher(hasher, where=f"index {os.fspath(path)}")
        return self

    def __repr__(self) -> str:
        return (
            f"LSHIndex(threshold={self.threshold}, num_perm={self.num_perm}, bands={self.bands}, "
            f"rows={self.rows}, size={len(self)})"
        )


def _hasher_from_v1_meta(meta: dict[str, Any]) -> tuple[int, int, int, int] | None:
    """An older mixsieve-dedup wrote its hasher into a format-1 file's metadata."""
    ngram, unit, seed = meta.get("ngram"), meta.get("unit"), meta.get("seed")
    if isinstance(ngram, int) and isinstance(seed, int) and unit in _UNITS and ngram >= 1 and seed >= 0:
        return ngram, _UNITS[unit], seed, 1
    return None


def _exact_duplicates(digests: np.ndarray, sigs: np.ndarray, match_empty: bool) -> np.ndarray:
    """True where a document's normalised text equals an earlier document's (equal 128-bit
    digests). Documents without shingles count only with match_empty, as in clustering."""
    n = digests.shape[0]
    exact = np.ones(n, dtype=bool)
    if n:
        pairs = np.ascontiguousarray(digests).view(np.dtype([("lo", "<u8"), ("hi", "<u8")])).ravel()
        _, first = np.unique(pairs, return_index=True)
        exact[first] = False
    if not match_empty and n:
        exact &= (sigs != np.iinfo(sigs.dtype).max).any(axis=1)
    return exact


@dataclass
class DedupResult:
    """What :func:`dedup` found.

    Attributes
    ----------
    keep : np.ndarray[bool]
        True for the one kept document of each cluster (its lowest index).
    cluster : np.ndarray[int64]
        Cluster id of each document: the index of the cluster's kept document.
    duplicate_of : np.ndarray[int64]
        For each document, an earlier document it was verified to be a near-duplicate of (the
        most similar among the candidates that were checked; candidates already in its cluster
        are not checked again), or -1.
    similarity : np.ndarray[float32]
        The estimated Jaccard of that match (0 where there is none).
    exact : np.ndarray[bool]
        True where the document's normalised text (what the shingles are made of) equals an
        earlier document's, by a 128-bit digest: an exact duplicate. Such documents always
        land in the cluster of that earlier document (equal text, equal signature); documents
        without shingles count only with ``match_empty=True``.
    comparisons : int
        Candidate pairs whose estimated Jaccard was computed: at most
        ``n * bands * 64`` (see the clustering rule in :func:`dedup`).
    capped : int
        Documents that some band bucket refused to store (rule 4 of :func:`dedup`). When it is
        0, the caps changed nothing: the clusters are exactly the connected components of the
        verified candidate pairs. Otherwise pairs whose only shared buckets were full may have
        been missed.
    """

    keep: np.ndarray
    cluster: np.ndarray
    duplicate_of: np.ndarray
    similarity: np.ndarray
    bands: int
    rows: int
    seconds: dict[str, float] = field(default_factory=dict)
    comparisons: int = 0
    capped: int = 0
    exact: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def num_exact(self) -> int:
        """Documents that are exact duplicates of an earlier one (see ``exact``)."""
        return int(np.count_nonzero(self.exact))

    @property
    def num_removed(self) -> int:
        return int(self.keep.size - np.count_nonzero(self.keep))

    @property
    def num_clusters(self) -> int:
        """Clusters with more than one document."""
        if self.cluster.size == 0:
            return 0
        counts = np.bincount(self.cluster, minlength=self.cluster.size)
        return int(np.count_nonzero(counts > 1))

    def __repr__(self) -> str:
        return (
            f"DedupResult(documents={self.keep.size}, kept={self.keep.size - self.num_removed}, "
            f"num_removed={self.num_removed}, num_exact={self.num_exact}, "
            f"num_clusters={self.num_clusters}, bands={self.bands}, rows={self.rows})"
        )


_SIGNATURE_CHUNK = 20_000  # documents hashed per native call in dedup


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self.t0 = total, enabled, time.perf_counter()

    def update(self, done: int, nbytes: int) -> None:
        if self.enabled:
            dt = max(time.perf_counter() - self.t0, 1e-9)
            sys.stderr.write(
                f"\rmixsieve: signatures {done:,}/{self.total:,} docs, {nbytes / dt / 1e6:.1f} MB/s"
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def dedup(
    texts: Sequence[Text],
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
    threads: int | None = None,
    *,
    unit: str = "word",
    seed: int = 1,
    bands: int | None = None,
    rows: int | None = None,
    verify: bool = True,
    match_empty: bool = False,
    dtype: Any = np.uint32,
    progress: bool | None = None,
    device: Any = None,
) -> DedupResult:
    """Find near-duplicate clusters and keep one document (the lowest index) per cluster.

    Signatures are computed on all cores; candidate pairs from LSH banding are verified
    against the signature Jaccard estimate (``verify=True``) and joined by a C++ union-find.
    The result is identical for every thread count.

    Clustering rule (documents are added in order; ``comparisons`` in the result counts the
    verifications):

    1. A document's candidates are the earlier documents that share one of its band keys;
       each band bucket contributes at most 64 of them (the most recently stored).
    2. A candidate already in the document's cluster is not verified again; any other joins
       the clusters if its estimated Jaccard is >= ``threshold`` (any candidate with
       ``verify=False``).
    3. A document whose signature equals an earlier one's always joins that one's cluster.
    4. A document is stored in a bucket only while the bucket holds fewer than 64 documents
       and fewer than 8 of its own cluster.

    So each document costs at most ``bands * 64`` verifications and the total work is linear
    in the number of documents, whatever the data. What this gives up is stated by
    ``DedupResult.capped``, the number of documents some bucket refused to store: when it is
    0 (no bucket held 64 documents, and no cluster 8 documents in one bucket), the clusters are
    exactly the connected components of verified candidate pairs, as without caps. Otherwise a
    pair whose only shared band buckets were full when the later document arrived is not
    compared: identical documents are still always found (rule 3), and most near-duplicates
    share several band keys, but a near-duplicate pair that shares a single, full bucket is
    missed (on 3,000 templated pages with planted edited copies, 8 of 149 pairs at estimated
    Jaccard 0.83-0.92 were). Buckets fill up when many documents share text without being
    near-duplicates (templated web pages, boilerplate), or when one cluster is large.

    Text normalisation (done in C++, restated in plain Python in the tests' oracle):

    * UTF-8 throughout. ``bytes`` items are decoded with ill-formed sequences replaced, as
      ``bytes.decode("utf-8", "replace")`` does.
    * A *word* is a maximal run of characters whose Unicode general category is a letter (L*),
      mark (M*) or number (N*). Everything else -- punctuation, symbols, whitespace, control
      characters -- separates words and is dropped.
    * Word characters are lower-cased one code point at a time with the simple mapping
      (``ch.lower()`` where that is one code point; ``"İ"`` stays as it is, and a final sigma is
      not special). The normalised text is the words joined by single spaces.
    * ``unit="word"``: shingles are ``ngram`` consecutive words joined by one space.
      ``unit="char"``: shingles are ``ngram`` consecutive code points of the normalised text; use
      it for text written without spaces (Chinese, Japanese, Thai), which ``unit="word"`` sees
      as a few very long words.
    * A document with fewer units than ``ngram`` has one shingle: all of it. A document with no
      words (empty, or only punctuation) has no shingles; its signature has every slot at the
      dtype's maximum, and such documents never match anything unless ``match_empty=True``.

    Each shingle is hashed with xxh64 (seeded with ``seed``); slot ``k`` of the signature is the
    minimum over shingles of ``a_k * x + b_k`` modulo 2**32 (uint32; ``x`` is the 64-bit hash
    folded as ``h ^ (h >> 32)``) or 2**64 (uint64), with odd ``a_k``: a bijection, so the
    permutation adds no collisions. ``a_k, b_k`` come from a SplitMix64 stream keyed by ``seed``.

    Parameters
    ----------
    texts : sequence of str or bytes, an Arrow string array, or a ``(data, offsets)`` tensor pair
        See :meth:`MinHasher.signatures`.
    threshold, num_perm, ngram, unit, seed, dtype
        As for :class:`MinHasher` and :class:`LSHIndex`.
    threads : int or None
        Threads for the signatures (None: all cores).
    progress : bool or None
        Progress on stderr; None shows it for large inputs when stderr is a terminal.
    device : None, "cpu", "cuda", "cuda:N" or torch.device (keyword-only)
        Where the signatures and the digests of ``exact`` are computed (see
        :meth:`MinHasher.signatures`); they come back to the host and the clustering runs there
        as always. The result is identical on every device: ``dedup(docs, device="cuda")``
        equals ``dedup(docs)``.

    Examples
    --------
    >>> import mixsieve as ms
    >>> docs = ["one two three four five six", "One two three four five six!", "something else entirely"]
    >>> res = ms.dedup(docs, threshold=0.8, ngram=2)
    >>> res.keep.tolist(), res.cluster.tolist()
    ([True, False, True], [0, 0, 2])
    """
    hasher = MinHasher(num_perm, ngram, unit, seed, dtype=dtype)
    threshold = _check_threshold(threshold)
    if (bands is None) != (rows is None):
        raise ValueError(
            f"bands and rows go together: give both or neither (got bands={bands!r}, rows={rows!r})"
        )
    b, r = resolve_bands(threshold, num_perm, bands, rows)
    _threads(threads)  # validate early, before any work
    texts = _positional(texts)
    pair = _minhash_cuda.is_tensor_pair(texts)
    dev = _device.resolve(device, *(texts if pair else ()))
    if pair and dev is None:
        texts, pair = _minhash_cuda.host_texts(texts), False
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a sequence of documents, not a single str/bytes (wrap it in a list)")
    if not (hasattr(texts, "__len__") and hasattr(texts, "__getitem__")):
        raise TypeError(f"texts must be a list (or Arrow string array) of str, got {type(texts).__name__}")
    n = _minhash_cuda.pair_length(texts) if pair else len(texts)
    if progress is None:
        progress = n >= _PROGRESS_MIN_DOCS and sys.stderr.isatty()
    t0 = time.perf_counter()
    # In chunks, so that Ctrl-C (handled between native calls) stops a long run promptly; the
    # clustering checks for it itself.
    bar = _Progress(n, bool(progress))
    nbytes, step = 0, _SIGNATURE_CHUNK
    nthreads = _threads(threads)
    if dev is not None:
        sigs, digests = _minhash_cuda.signatures(
            hasher,
            texts,
            dev,
            nthreads,
            digests=True,
            to_host=True,
            progress=bar.update if progress else None,
        )
    elif n <= step and not progress:
        sigs, digests = hasher._signatures_digests(texts, nthreads)
    else:
        sigs = np.empty((n, num_perm), hasher.dtype)
        digests = np.empty((n, 2), np.uint64)
        for i in range(0, n, step):
            chunk = texts[i : i + step]
            sigs[i : i + step], digests[i : i + step] = hasher._signatures_digests(chunk, nthreads)
            if progress:
                nbytes += sum(len(t) for t in chunk)
                bar.update(min(i + step, n), nbytes)
    bar.close()
    t1 = time.perf_counter()
    cluster, dup_pos, sim, comparisons, capped = _core.cluster_signatures(
        sigs, b, r, threshold, bool(verify), bool(match_empty)
    )
    t2 = time.perf_counter()
    keep = cluster == np.arange(n, dtype=np.int64)
    exact = _exact_duplicates(digests, sigs, bool(match_empty))
    return DedupResult(
        keep=keep,
        exact=exact,
        cluster=cluster,
        duplicate_of=dup_pos,
        similarity=sim,
        bands=b,
        rows=r,
        seconds={"signatures": t1 - t0, "clustering": t2 - t1},
        comparisons=int(comparisons),
        capped=int(capped),
    )
