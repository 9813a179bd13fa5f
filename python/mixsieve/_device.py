"""Where a kernel runs: the ``device=`` argument of the MinHash and sampling functions.

``resolve(device, *inputs)`` returns ``None`` for the CPU kernels (``mixsieve._core``) or the
``torch.device`` of the CUDA kernels (``mixsieve._core_cuda``, built when a CUDA compiler was
found at install time). ``device=None`` follows the inputs: a CUDA torch tensor among them
selects its device, anything else the CPU. Asking for CUDA where it cannot run raises a
``RuntimeError`` that names what is missing (the module, torch with CUDA, a device).

The CUDA functions take raw device pointers (``ptr``) and the stream to enqueue on
(``stream``, torch's current stream of that device); results come back as torch tensors on
that device, with no copy through the host.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def _is_cuda_tensor(x: Any) -> bool:
    device = getattr(x, "device", None)
    return type(x).__module__.startswith("torch") and getattr(device, "type", "") == "cuda"


def resolve(device: Any, *inputs: Any) -> torch.device | None:
    """``None`` (the CPU) or the CUDA ``torch.device`` (with its index) to run on.

    Examples
    --------
    >>> from mixsieve import _device
    >>> _device.resolve(None) is None and _device.resolve("cpu") is None
    True
    >>> _device.resolve("tpu")
    Traceback (most recent call last):
    ...
    ValueError: device must be None, 'cpu', 'cuda', 'cuda:N' or a torch.device, got 'tpu'
    """
    if device is None:
        found = next((x for x in inputs if _is_cuda_tensor(x)), None)
        if found is None:
            return None
        device = found.device
    kind = getattr(device, "type", None)  # a torch.device
    if kind is None:
        if not isinstance(device, str) or not (
            device in ("cpu", "cuda") or re.fullmatch(r"cuda:(0|[1-9][0-9]{0,5})", device, re.ASCII)
        ):
            raise ValueError(
                f"device must be None, 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}"
            )
        kind = device.split(":")[0]
    if kind == "cpu":
        return None
    if kind != "cuda":
        raise ValueError(f"mixsieve runs on 'cpu' or 'cuda', got device {device!r}")
    _require_cuda(device)
    import torch

    dev = torch.device(device)
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    if dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return dev


def _require_cuda(device: Any) -> None:
    from .mixup import _cuda

    ok, why = _cuda.available()
    if not ok:
        raise RuntimeError(f"device={str(device)!r} cannot run here: {why} (device='cpu' runs on the CPU)")


def native() -> Any:
    """The CUDA module ``mixsieve._core_cuda`` (call ``resolve`` first: it explains its absence)."""
    from . import _core_cuda

    return _core_cuda


def stream(dev: torch.device) -> int:
    """torch's current CUDA stream on ``dev``, as the integer handle the native module takes."""
    import torch

    return int(torch.cuda.current_stream(dev).cuda_stream)


def ptr(t: torch.Tensor | None) -> int:
    """A tensor's device pointer (0 for None)."""
    return 0 if t is None else int(t.data_ptr())


def to_host(x: Any) -> Any:
    """A CPU view of ``x`` for the CPU kernels: CUDA tensors are copied to the host."""
    return x.cpu() if _is_cuda_tensor(x) else x
