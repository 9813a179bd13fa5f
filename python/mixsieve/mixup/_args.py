"""Argument checking of the mixup operators: tensors checked once, made contiguous and copied.

Every tensor the kernels read after the call returns (ids, lambdas, masks) is a private copy, so
neither another thread writing to the caller's tensors while a kernel runs without the GIL, nor
an in-place change between forward and backward, can change what the kernels read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .._checks import check_choice, check_int, describe

if TYPE_CHECKING:
    import torch

POLICIES = {"union": 0, "a-only": 1}
REDUCTIONS = ("mean", "sum", "none")
TARGET_LAMBDAS = ("shifted", "same")
# elements of one chunk of logits in mixup_linear_cross_entropy (40 MiB in float32); the rows
# of a chunk are rounded down to a multiple of 32, which the matrix products prefer
CHUNK_ELEMENTS = 10 << 20


def torch_module() -> Any:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - the test suite installs torch
        raise ImportError(
            "mixsieve.mixup needs PyTorch: pip install 'mixsieve[torch]' (or torch itself)"
        ) from e
    return torch


@contextlib.contextmanager
def unfilled_allocations() -> Iterator[None]:
    """Lets ``torch.empty`` skip the NaN fill that deterministic mode gives new tensors
    (``torch.utils.deterministic.fill_uninitialized_memory``), for buffers a kernel overwrites
    entirely: the embedding gradient (every row written once) and the sort workspace. On an
    H200 that fill of a 32k x 1024 float32 gradient was a quarter of the deterministic backward's
    time. The setting is restored on the way out, also after an error."""
    th = torch_module()
    det = getattr(getattr(th, "utils", None), "deterministic", None)
    if det is None or not th.are_deterministic_algorithms_enabled() or not det.fill_uninitialized_memory:
        yield
        return
    det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        det.fill_uninitialized_memory = True


def autocast_dtype(device: torch.device) -> Any:
    """The dtype autocast uses on ``device``'s type, or None when autocast is off there."""
    th = torch_module()
    try:
        return th.get_autocast_dtype(device.type) if th.is_autocast_enabled(device.type) else None
    except TypeError:  # torch < 2.4: one function per device type
        if device.type == "cuda" and th.is_autocast_enabled():
            return th.get_autocast_gpu_dtype()
        if device.type == "cpu" and th.is_autocast_cpu_enabled():
            return th.get_autocast_cpu_dtype()
        return None


def ptr(t: torch.Tensor | None) -> int:
    """A tensor's data pointer for the native modules (0 for None)."""
    return 0 if t is None else int(t.data_ptr())


def same_device(name: str, t: torch.Tensor, device: torch.device) -> None:
    if t.device != device:
        raise ValueError(f"{name} is on {t.device}, but xa is on {device}: put all tensors on one device")


class Windows:
    """Checked token windows: xa, xb int64 [B, T+1], lam float32, va, vb uint8 views or None."""

    def __init__(self, xa: Any, xb: Any, lam: Any, va: Any, vb: Any, policy: str) -> None:
        torch = torch_module()
        self.policy = POLICIES[check_choice("policy", policy, tuple(POLICIES))]
        for name, t in (("xa", xa), ("xb", xb), ("lam", lam), ("va", va), ("vb", vb)):
            if t is None and name in ("va", "vb"):
                continue
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {describe(t)}")
            dense(name, t)
        if xa.dim() != 2:
            raise ValueError(f"xa must be 2-D [B, T + 1], got shape {tuple(xa.shape)}")
        shape = tuple(xa.shape)
        if shape[1] < 2:
            raise ValueError(
                f"windows need T + 1 >= 2 tokens (an input and its next token), got xa of shape {shape}"
            )
        self.device = xa.device
        ids = []
        for name, t in (("xa", xa), ("xb", xb)):
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise TypeError(f"{name} must hold integer token ids, got dtype {t.dtype}")
            self._same(name, t, shape)
            ids.append(t.detach().to(torch.int64, memory_format=torch.contiguous_format, copy=True))
        self.xa, self.xb = ids
        if not lam.dtype.is_floating_point:
            raise TypeError(f"lam must be a float tensor, got dtype {lam.dtype}")
        self._same("lam", lam, shape)
        self.lam = lam.detach().to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        masks: list[Any] = []
        for name, t in (("va", va), ("vb", vb)):
            if t is None:
                masks.append(None)
                continue
            if not isinstance(t, torch.Tensor) or t.dtype != torch.bool:
                kind = f"dtype {t.dtype}" if isinstance(t, torch.Tensor) else describe(t)
                raise TypeError(f"{name} must be a bool tensor (True = a real token) or None, got {kind}")
            self._same(name, t, shape)
            masks.append(t.detach().to(torch.uint8, memory_format=torch.contiguous_format, copy=True))
        self.va, self.vb = masks
        self.batch, self.width = int(shape[0]), int(shape[1])

    def _same(self, name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
        if tuple(t.shape) != shape:
            per_row = name == "lam" and t.shape[-1:] == (1,)
            hint = " (one lambda per row: lam.expand_as(xa))" if per_row else ""
            raise ValueError(f"{name} has shape {tuple(t.shape)}, but xa has shape {shape}{hint}")
        same_device(name, t, self.device)

    @property
    def steps(self) -> int:
        return self.width - 1

    def pointers(self) -> tuple[int, int, int, int, int, int, int, int]:
        return (
            ptr(self.xa), ptr(self.xb), ptr(self.lam), ptr(self.va), ptr(self.vb),
            self.batch, self.width, self.policy,
        )  # fmt: skip

    def tensors(self) -> tuple[Any, ...]:
        return (self.xa, self.xb, self.lam, self.va, self.vb)


class Targets:
    """The loss options, checked."""

    def __init__(self, ignore_index: Any, label_smoothing: Any, reduction: Any, target_lambda: Any) -> None:
        self.ignore_index = check_int("ignore_index", ignore_index, -(2**63), 2**63)
        eps = real_number("label_smoothing", label_smoothing)
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1], got {eps}")
        self.eps = eps
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.shifted = check_choice("target_lambda", target_lambda, TARGET_LAMBDAS) == "shifted"


def real_number(name: str, value: Any) -> float:
    """``value`` as a float: Python and numpy numbers, not bools; too large for a float is a
    ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {describe(value)}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} = {value} is too large for a float") from None


def dense(name: str, t: torch.Tensor) -> None:
    if t.layout != torch_module().strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}: call .to_dense()")


def float_tensor(name: str, t: Any) -> Any:
    torch = torch_module()
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {describe(t)}")
    dense(name, t)
    if t.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        raise TypeError(f"{name} must be float64, float32, bfloat16 or float16, got dtype {t.dtype}")
    return t
