"""The CPU kernel adapter and the dispatch by device.

An adapter passes contiguous tensors' data pointers, sizes and dtype codes to a native module:
``mixsieve._core`` here (threads: ``torch.get_num_threads()``), ``mixsieve._core_cuda`` in
``_cuda.CudaKernels`` (torch's current stream). Both have the same methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._args import Targets, Windows, ptr, torch_module, unfilled_allocations

if TYPE_CHECKING:
    import torch


def dtype_code(t: torch.Tensor) -> int:
    torch = torch_module()
    codes = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
    return codes[t.dtype]


class CpuKernels:
    """The adapter over ``mixsieve._core`` (see ``_cuda.CudaKernels`` for the device one)."""

    def __init__(self) -> None:
        from .. import _core

        self.core = _core
        self.threads = int(torch_module().get_num_threads())

    def lambda_fill(self, out: torch.Tensor, alpha: float, seed: int, stream: int, dominant: bool) -> None:
        self.core.mixup_lambda(ptr(out), out.numel(), alpha, seed, stream, dominant, self.threads)

    def embed_forward(
        self, weight: torch.Tensor, w: Windows, out: torch.Tensor
    ) -> None:  # fmt: skip
        self.core.mixup_embed_forward(
            ptr(weight), dtype_code(weight), weight.shape[0], weight.shape[1], *w.pointers(), ptr(out),
            self.threads,
        )  # fmt: skip

    def embed_backward(
        self, grad_out: torch.Tensor, vocab: int, w: Windows, deterministic: bool
    ) -> torch.Tensor:
        """d loss / d table in grad_out's dtype (the table's): rows accumulate in float32 (float64
        for float64) and are written once each; always deterministic on the CPU."""
        th = torch_module()
        with unfilled_allocations():  # every row is written
            grad_weight: torch.Tensor = th.empty(vocab, grad_out.shape[-1], dtype=grad_out.dtype)
        self.core.mixup_embed_backward(
            ptr(grad_out), dtype_code(grad_out), vocab, grad_weight.shape[1], *w.pointers(),
            ptr(grad_weight), self.threads,
        )  # fmt: skip
        return grad_weight

    def ce(
        self, logits: torch.Tensor, r0: int, w: Windows, t: Targets, loss: torch.Tensor | None,
        lse: torch.Tensor, keep: torch.Tensor | None, gtok: torch.Tensor | None, grad: torch.Tensor | None,
    ) -> None:  # fmt: skip
        self.core.mixup_ce(
            ptr(logits), dtype_code(logits), r0, logits.shape[0], logits.shape[1], *w.pointers(),
            t.shifted, t.ignore_index, t.eps, ptr(loss), ptr(lse), ptr(keep), ptr(gtok), ptr(grad),
            self.threads,
        )  # fmt: skip


def kernels(device: torch.device) -> Any:
    """The kernel adapter for tensors on ``device``."""
    if device.type == "cpu":
        return CpuKernels()
    if device.type == "cuda":
        import importlib

        _cuda = importlib.import_module("._cuda", __package__)
        ok, why = _cuda.available()
        if not ok:
            raise RuntimeError(f"mixsieve.mixup cannot run on {device}: {why}")
        return _cuda.CudaKernels(device)
    raise ValueError(f"mixsieve.mixup runs on CPU and CUDA tensors, got a tensor on {device}")
