"""The CUDA adapter of the mixup kernels: ``mixsieve._core_cuda`` on torch's current stream.

``_kernels.kernels(device)`` hands CUDA tensors here. Each method passes the tensors' device
pointers and ``torch.cuda.current_stream(device).cuda_stream`` to the native module, under
``torch.cuda.device(device)``; the kernels only enqueue work on that stream (no host sync).
The native module is optional (built when a CUDA compiler was found at install time) and is
imported on first use.

What differs from the CPU adapter:

- values are not checked on the device (that would need a host sync): an id outside [0, V) or
  a lambda outside [0, 1] gives NaN in the affected output row or loss instead of a
  ``ValueError``, and never an out-of-bounds access;
- the embedding backward has two paths: ``deterministic=True`` (stable radix sort of the
  contributions by row, then one block per row sums them in the CPU kernel's order: the same
  bytes as the CPU) and ``False`` (zero-fill and ``atomicAdd``: faster, order not fixed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._args import Targets, Windows, torch_module, unfilled_allocations
from ._args import ptr as _ptr
from ._kernels import dtype_code as _dtype_code

if TYPE_CHECKING:
    import torch

_NOT_BUILT = "mixsieve was built without CUDA: install nvcc (the CUDA toolkit) and reinstall mixsieve"

# what available() found, once a device was seen (the answer does not change afterwards)
_READY: list[str] = []


def _native() -> Any:
    from .. import _core_cuda

    return _core_cuda


def available() -> tuple[bool, str]:
    """Whether mixup can run on CUDA here: ``(True, what)`` or ``(False, what is missing)``.

    Examples
    --------
    >>> from mixsieve.mixup import _cuda
    >>> ok, why = _cuda.available()
    >>> isinstance(ok, bool) and isinstance(why, str)
    True
    """
    if _READY:
        return True, _READY[0]
    try:
        native = _native()
    except ImportError as e:
        return False, f"{_NOT_BUILT} ({e})"
    try:
        torch = torch_module()
    except ImportError as e:
        return False, str(e)
    info = native.build_info()
    runtime = _version(int(info["cuda_runtime"]))
    if torch.version.cuda is None:
        return False, f"no CUDA device: torch {torch.__version__} was built without CUDA"
    if not torch.cuda.is_available():
        return False, "no CUDA device: torch.cuda.is_available() is False"
    count, error = native.device_count()
    if count == 0:
        # e.g. a driver older than the CUDA runtime the module was built with
        return False, (
            f"no CUDA device for mixsieve's CUDA module (CUDA runtime {runtime}, "
            f"driver {_version(int(info['cuda_driver']))}): {error or 'none found'}"
        )
    _READY.append(f"CUDA runtime {runtime}, architectures {info['architectures']}, {count} device(s)")
    return True, _READY[0]


def _version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}" if v else "none"


class CudaKernels:
    """The adapter over ``mixsieve._core_cuda`` for tensors on one CUDA device (see
    ``_kernels.CpuKernels`` for the interface)."""

    def __init__(self, device: torch.device) -> None:
        self.native = _native()
        self.torch = torch_module()
        self.device = device

    def _stream(self) -> int:
        return int(self.torch.cuda.current_stream(self.device).cuda_stream)

    def lambda_fill(self, out: torch.Tensor, alpha: float, seed: int, stream: int, dominant: bool) -> None:
        with self.torch.cuda.device(self.device):
            self.native.mixup_lambda(_ptr(out), out.numel(), alpha, seed, stream, dominant, self._stream())

    def embed_forward(self, weight: torch.Tensor, w: Windows, out: torch.Tensor) -> None:
        with self.torch.cuda.device(self.device):
            self.native.mixup_embed_forward(
                _ptr(weight), _dtype_code(weight), weight.shape[0], weight.shape[1], *w.pointers(), _ptr(out),
                self._stream(),
            )  # fmt: skip

    def embed_backward(
        self, grad_out: torch.Tensor, vocab: int, w: Windows, deterministic: bool
    ) -> torch.Tensor:
        """d loss / d table in grad_out's dtype (the table's), accumulated in float32 (float64 for
        float64): the kernels overwrite every row of the accumulator (no zero-fill needed)."""
        th = self.torch
        acc = th.float64 if grad_out.dtype == th.float64 else th.float32
        with self.torch.cuda.device(self.device), unfilled_allocations():  # all of it is written
            grad_weight: torch.Tensor = th.empty(vocab, grad_out.shape[-1], dtype=acc, device=grad_out.device)
            workspace, nbytes = None, 0
            if deterministic:
                # the sort buffers come from torch's caching allocator rather than cudaMallocAsync:
                # they show in torch.cuda.memory_allocated and reuse its cache; allocated on the
                # current stream, so freeing them when this returns is safe (later work on that
                # stream is ordered after the kernels)
                nbytes = int(self.native.mixup_embed_backward_workspace(w.batch, w.width, vocab))
                workspace = self.torch.empty(max(nbytes, 16), dtype=self.torch.uint8, device=self.device)
            self.native.mixup_embed_backward(
                _ptr(grad_out), _dtype_code(grad_out), vocab, grad_weight.shape[1], *w.pointers(),
                _ptr(grad_weight), deterministic, self._stream(), _ptr(workspace), nbytes,
            )  # fmt: skip
        return grad_weight if grad_weight.dtype == grad_out.dtype else grad_weight.to(grad_out.dtype)

    def ce(
        self, logits: torch.Tensor, r0: int, w: Windows, t: Targets, loss: torch.Tensor | None,
        lse: torch.Tensor, keep: torch.Tensor | None, gtok: torch.Tensor | None, grad: torch.Tensor | None,
    ) -> None:  # fmt: skip
        with self.torch.cuda.device(self.device):
            self.native.mixup_ce(
                _ptr(logits), _dtype_code(logits), r0, logits.shape[0], logits.shape[1], *w.pointers(),
                t.shifted, t.ignore_index, t.eps, _ptr(loss), _ptr(lse), _ptr(keep), _ptr(gtok), _ptr(grad),
                self._stream(),
            )  # fmt: skip
