"""``soft_cap_sample`` on CUDA: ``mixsieve._core_cuda.soft_cap_sample`` on torch's current stream.

``sampling.soft_cap_sample`` calls here when its ``device`` resolves to a CUDA device. The
scores become a 1-D contiguous float32 or float64 tensor on that device: a CUDA tensor of
those dtypes is used where it lies, anything else is converted as the CPU path converts it
(float16, ints and bools to float64, exactly) and uploaded once. The native call returns when
the results are written (its batch loop runs on the host and waits for the stream; see
csrc/cuda/soft_cap.cu), so the tensors it returns are ready. Its scratch buffers, which grow
with what a batch finds, come from torch's caching allocator (``TorchMemory``): memory torch
holds cached serves them, and they go back to torch's cache when the call ends.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from . import _device

if TYPE_CHECKING:
    import torch


def device_scores(scores: Any, dev: torch.device) -> torch.Tensor:
    """``scores`` as a 1-D contiguous float32/float64 tensor on ``dev`` (no copy when it already is one)."""
    import torch

    if isinstance(scores, torch.Tensor):
        t = scores.detach()
        if t.dtype not in (torch.float32, torch.float64):
            if t.is_complex() or (t.is_floating_point() and t.dtype not in (torch.float16, torch.bfloat16)):
                raise TypeError(
                    "scores must hold real numbers: float16, bfloat16, float32 or float64, ints or bools, "
                    f"got dtype {t.dtype}"
                )
            t = t.to(dev, torch.float64)  # exact for all of these
        t = t.to(dev)
    else:
        from .sampling import _as_weights

        host = _as_weights(scores, "scores")
        with warnings.catch_warnings():  # a read-only array is only read (copied to the device)
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(host).to(dev)
    if t.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {tuple(t.shape)}")
    return t.contiguous()


class TorchMemory:
    """The native call's device buffers, as uint8 tensors from torch's caching allocator on
    ``dev`` (on the current stream, the one the call runs on). ``alloc`` returns a tensor's
    data pointer and keeps the tensor until ``free`` gets that pointer back."""

    def __init__(self, dev: torch.device) -> None:
        self.dev = dev
        self.held: dict[int, torch.Tensor] = {}

    def alloc(self, nbytes: int) -> int:
        import torch

        t = torch.empty(nbytes, dtype=torch.uint8, device=self.dev)  # OutOfMemoryError names the size
        ptr = int(t.data_ptr())
        self.held[ptr] = t
        return ptr

    def free(self, ptr: int) -> None:
        del self.held[ptr]


def sample(
    scores: torch.Tensor,
    total: int,
    penalty: float,
    batch_size: int,
    seed: int,
    return_indices: bool,
    dev: torch.device,
) -> torch.Tensor:
    """Counts (int64 [n]) or picks (int64 [total]) on ``dev``; arguments already checked."""
    import torch

    n = int(scores.shape[0])
    with torch.cuda.device(dev):
        counts = torch.empty(n, dtype=torch.int64, device=dev)
        picks = torch.empty(total if return_indices else 0, dtype=torch.int64, device=dev)
        memory = TorchMemory(dev)
        _device.native().soft_cap_sample(
            _device.ptr(scores),
            scores.dtype == torch.float32,
            n,
            total,
            penalty,
            batch_size,
            seed,
            _device.ptr(counts),
            _device.ptr(picks) if return_indices and total > 0 else 0,
            _device.stream(dev),
            alloc=memory.alloc,
            free=memory.free,
        )
    return picks if return_indices else counts
