"""MinHash signatures on CUDA: the host side of ``csrc/cuda/minhash.cu``.

``MinHasher.signatures(..., device="cuda")`` and ``dedup(..., device="cuda")`` come here once
``_device.resolve`` has picked a CUDA device. Documents reach the GPU in the Arrow layout, one
byte buffer and n + 1 int64 offsets:

* texts on the host (a list of str/bytes, an Arrow string array) are read as views by
  ``_core_cuda.TextPack``, copied on ``threads`` threads without the GIL into pinned host
  memory (with their offsets after them) and uploaded in one copy per chunk;
* a ``(data, offsets)`` pair of CUDA tensors (uint8 [bytes], int64 [n + 1]) is used where it is.

Either way the offsets are checked on the host first (a copy of n + 1 integers). Work goes in
chunks of at most ``CHUNK_BYTES`` of text (a longer document is a chunk of its own), so device
memory stays bounded: about 7 bytes per byte of the chunk's text (the text, its normalised copy,
word or character offsets, scan scratch) plus the outputs. Kernels are enqueued on torch's
current stream without waiting, uploads on a side stream: packing the next chunk on the host
and uploading it overlap the kernels of the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _device
from .mixup._args import unfilled_allocations

if TYPE_CHECKING:
    import torch

    from .dedup import MinHasher

CHUNK_BYTES = 64 << 20  # text per kernel call: small enough for uploads to overlap kernels
MAX_DOCUMENT_BYTES = 2**31 - 1  # positions inside one normalised document are 32-bit

_TABLES: dict[int, Any] = {}  # device index -> the Unicode tables on that device
_COPY_STREAMS: dict[int, Any] = {}  # device index -> the stream uploads run on
_UNITS = {"word": 0, "char": 1}


def is_tensor_pair(texts: Any) -> bool:
    """Whether ``texts`` is a ``(data, offsets)`` pair of torch tensors (not a pair of texts)."""
    return (
        isinstance(texts, tuple)
        and len(texts) == 2
        and all(type(x).__module__.startswith("torch") and hasattr(x, "dtype") for x in texts)
    )


def pair_length(texts: Any) -> int:
    """Documents in a ``(data, offsets)`` pair."""
    return int(texts[1].numel()) - 1


def check_offsets(offsets: np.ndarray, data_bytes: int) -> None:
    """ValueError naming the first offset that is negative, decreasing, past the data or that
    makes a document longer than the CUDA kernels take."""
    if offsets.ndim != 1 or offsets.size < 1:
        raise ValueError(
            f"offsets must be a 1-D int64 tensor of n + 1 >= 1 values, got shape {offsets.shape}"
        )
    if offsets[0] < 0:
        raise ValueError(f"offsets[0] = {offsets[0]} is negative")
    lengths = np.diff(offsets)
    bad = np.flatnonzero(lengths < 0)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"offsets must not decrease: offsets[{i + 1}] = {offsets[i + 1]} < offsets[{i}] = {offsets[i]}"
        )
    if offsets[-1] > data_bytes:
        raise ValueError(f"offsets[-1] = {offsets[-1]} is past the end of data ({data_bytes} bytes)")
    long = np.flatnonzero(lengths > MAX_DOCUMENT_BYTES)
    if long.size:
        i = int(long[0])
        raise ValueError(
            f"document {i} has {lengths[i]} bytes; the CUDA kernels take up to {MAX_DOCUMENT_BYTES}"
        )


def _tensor_pair(texts: Any) -> tuple[Any, Any, np.ndarray]:
    data, offsets = texts
    torch = _torch()
    if data.dtype != torch.uint8 or data.dim() != 1:
        raise TypeError(
            f"data must be a 1-D torch.uint8 tensor, got {data.dtype} of shape {tuple(data.shape)}"
        )
    if offsets.dtype != torch.int64 or offsets.dim() != 1:
        raise TypeError(
            f"offsets must be a 1-D torch.int64 tensor, got {offsets.dtype} of shape {tuple(offsets.shape)}"
        )
    host = offsets.cpu().numpy()
    check_offsets(host, data.numel())
    return data, offsets, host


def host_texts(texts: Any) -> list[bytes]:
    """The documents of a ``(data, offsets)`` tensor pair as a list of bytes, for the CPU path
    (a copy through the host)."""
    data, _, offsets = _tensor_pair(texts)
    buf = data.cpu().numpy()
    return [buf[offsets[i] : offsets[i + 1]].tobytes() for i in range(offsets.size - 1)]


def _torch() -> Any:
    import torch

    return torch


def _pinned(nbytes: int) -> Any:
    """A uint8 tensor in page-locked host memory (an upload from it runs asynchronously)."""
    return _torch().empty(nbytes, dtype=_torch().uint8, pin_memory=True)


def _upload(pinned: Any, dev: torch.device) -> Any:
    """A device copy of ``pinned``, made on a side stream so that it overlaps the kernels already
    queued on the current stream, which waits for it. (torch keeps the pinned block from reuse
    until the copy has run, and the device block until the current stream's work has.)"""
    torch = _torch()
    index = int(dev.index or 0)
    if index not in _COPY_STREAMS:
        _COPY_STREAMS[index] = torch.cuda.Stream(dev)
    side, main = _COPY_STREAMS[index], torch.cuda.current_stream(dev)
    with torch.cuda.stream(side):
        buf = pinned.to(dev, non_blocking=True)
    main.wait_stream(side)
    buf.record_stream(main)
    return buf


def _tables(dev: torch.device) -> Any:
    index = int(dev.index or 0)
    if index not in _TABLES:
        blob = np.frombuffer(_device.native().minhash_unicode_tables(), dtype=np.uint8).copy()
        _TABLES[index] = _torch().from_numpy(blob).to(dev)
    return _TABLES[index]


def _permutations(hasher: MinHasher, dev: torch.device) -> tuple[Any, Any]:
    key = int(dev.index or 0)
    cached = hasher._device_params.get(key)
    if cached is None:
        raw = np.int32 if hasher.dtype == np.uint32 else np.int64  # the kernels read the bits
        torch = _torch()
        cached = tuple(
            torch.from_numpy(np.ascontiguousarray(v).view(raw)).to(dev)
            for v in (hasher._core.a, hasher._core.b)
        )
        hasher._device_params[key] = cached
    return cached


def _chunks(offsets: np.ndarray, budget: int) -> Iterator[tuple[int, int]]:
    """Document ranges [i, j) of at most ``budget`` bytes (at least one document each)."""
    n = offsets.size - 1
    i = 0
    while i < n:
        j = int(np.searchsorted(offsets, offsets[i] + budget, side="right")) - 1
        j = min(max(j, i + 1), n)
        yield i, j
        i = j


class _Source:
    """One piece of input: its host offsets and, per chunk, the device buffers to read."""

    def __init__(self, texts: Any, dev: torch.device, threads: int) -> None:
        self.dev, self.threads = dev, threads
        if is_tensor_pair(texts):
            data, offsets, self.offsets = _tensor_pair(texts)
            self.data = data.to(dev).contiguous()
            self.device_offsets = offsets.to(dev).contiguous()
            self.pack: Any = None
        else:
            self.pack = _device.native().TextPack(texts)
            self.offsets = self.pack.offsets()
            check_offsets(self.offsets, int(self.offsets[-1]))

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    def chunk(self, i: int, j: int) -> tuple[Any, int, int, int, Any]:
        """Documents [i, j) on the device: (what to keep alive until the launch, data pointer, data
        bytes, offsets pointer, the pinned host copy or None)."""
        if self.pack is None:
            return (
                self.data,
                _device.ptr(self.data),
                self.data.numel(),
                _device.ptr(self.device_offsets) + 8 * i,
                None,
            )
        text = int(self.offsets[j] - self.offsets[i])
        at = (text + 15) // 16 * 16  # the offsets follow the text, 16-byte aligned
        pinned = _pinned(at + 8 * (j - i + 1))
        self.pack.pack(i, j, pinned.data_ptr(), text, self.threads)
        host = pinned.numpy()
        host[at:].view(np.int64)[:] = self.offsets[i : j + 1] - self.offsets[i]
        buf = _upload(pinned, self.dev)
        return buf, _device.ptr(buf), text, _device.ptr(buf) + at, pinned


def sources(texts: Any, dev: torch.device, threads: int) -> list[_Source]:
    """The pieces of ``texts`` (a ``pyarrow.ChunkedArray``'s chunks, else ``texts``)."""
    if is_tensor_pair(texts):
        return [_Source(texts, dev, threads)]
    chunks = getattr(texts, "chunks", None)
    if chunks is not None and not hasattr(texts, "__arrow_c_array__"):  # pyarrow.ChunkedArray
        return [_Source(c, dev, threads) for c in chunks]
    return [_Source(texts, dev, threads)]


def signatures(
    hasher: MinHasher,
    texts: Any,
    dev: torch.device,
    threads: int,
    *,
    digests: bool = False,
    to_host: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Any, Any]:
    """Signatures [n, num_perm] (and digests [n, 2] uint64, or None) of ``texts`` on ``dev``.

    With ``to_host`` the results are numpy arrays, copied back chunk by chunk (``progress(docs
    done, bytes done)`` after each); otherwise torch tensors on ``dev``, and nothing waits.
    """
    torch = _torch()
    native = _device.native()
    width = 32 if hasher.dtype == np.uint32 else 64
    k = hasher.num_perm
    unit = _UNITS[hasher.unit]
    if not hasattr(torch, "uint32"):  # the unsigned tensor types came with torch 2.3
        raise RuntimeError(
            f"MinHash signatures on CUDA need torch >= 2.3 (uint32/uint64 tensors), this is torch "
            f"{torch.__version__}; upgrade torch or pass device='cpu'"
        )
    tdtype = torch.uint32 if width == 32 else torch.uint64
    with torch.cuda.device(dev), unfilled_allocations():
        parts = sources(texts, dev, threads)
        n = sum(len(p) for p in parts)
        if to_host:
            out: Any = np.empty((n, k), hasher.dtype)
            dig: Any = np.empty((n, 2), np.uint64) if digests else None
        else:
            out = torch.empty((n, k), dtype=tdtype, device=dev)
            dig = torch.empty((n, 2), dtype=torch.uint64, device=dev) if digests else None
        if n == 0:
            return out, dig
        tables = _tables(dev)
        a, b = _permutations(hasher, dev)
        stream = _device.stream(dev)
        row, done_bytes = 0, 0
        for part in parts:
            for i, j in _chunks(part.offsets, CHUNK_BYTES):
                m = j - i
                text = int(part.offsets[j] - part.offsets[i])
                keep, data, data_bytes, offsets, _pinned = part.chunk(i, j)
                nbytes = int(native.minhash_workspace_bytes(m, text, unit))
                workspace = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=dev)
                if to_host:
                    o = torch.empty((m, k), dtype=tdtype, device=dev)
                    d = torch.empty((m, 2), dtype=torch.uint64, device=dev) if digests else None
                    out_ptr, dig_ptr = _device.ptr(o), _device.ptr(d)
                else:
                    out_ptr = _device.ptr(out) + row * k * width // 8
                    dig_ptr = _device.ptr(dig) + row * 16 if digests else 0
                native.minhash_signatures(
                    width, k, hasher.ngram, unit, hasher.seed, _device.ptr(a), _device.ptr(b),
                    _device.ptr(tables), data, data_bytes, offsets, m, text, out_ptr, dig_ptr,
                    _device.ptr(workspace), nbytes, stream,
                )  # fmt: skip
                del keep, workspace  # stream-ordered: later work on the stream reuses the memory safely
                if to_host:
                    out[row : row + m] = o.cpu().numpy()
                    if d is not None:
                        dig[row : row + m] = d.cpu().numpy()
                row += m
                done_bytes += text
                if progress is not None:
                    progress(row, done_bytes)
    return out, dig
