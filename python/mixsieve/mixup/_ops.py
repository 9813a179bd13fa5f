"""The public mixup operators.

Arguments are checked in ``_args``, the autograd functions live in ``_autograd`` and the kernel
adapters in ``_kernels`` (CPU) and ``_cuda``. The native kernels check values (ids, lambdas)
where they read them. Nothing here moves data to the host or waits for the device.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .._checks import check_bool, check_int, describe
from ._args import (
    CHUNK_ELEMENTS,
    POLICIES,
    REDUCTIONS,
    TARGET_LAMBDAS,
    Targets,
    Windows,
    autocast_dtype,
    float_tensor,
    real_number,
    same_device,
    torch_module,
)
from ._autograd import functions
from ._kernels import CpuKernels, kernels

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHUNK_ELEMENTS", "POLICIES", "REDUCTIONS", "TARGET_LAMBDAS", "CpuKernels", "Targets", "Windows",
    "kernels", "mix_embeddings", "mixup_cross_entropy", "mixup_linear_cross_entropy", "sample_lambda",
    "torch_module",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Public functions


def sample_lambda(
    shape: Any,
    alpha: float = 0.4,
    seed: int = 0,
    device: Any = None,
    *,
    dominant: bool = False,
    stream: int = 0,
) -> torch.Tensor:
    """Per-token mixing weights: a float32 tensor of i.i.d. Beta(``alpha``, ``alpha``) draws.

    Element ``i`` (row-major) is a pure function of ``(seed, stream, i)`` from a counter-based
    generator, so the values do not depend on the thread count, the device (CPU and CUDA give
    the same bytes) or how a run is split into calls of the same shape.

    Parameters
    ----------
    shape : int or tuple of int
        Usually ``(B, T + 1)``: one lambda per token of each window.
    alpha : float
        The Beta parameter (> 0). Small alpha puts the mass near 0 and 1; ``alpha <= 1e-3`` is
        drawn as a fair coin on {0, 1} (the limit), large alpha concentrates near 1/2.
    seed : int
        In [0, 2**64).
    device : str or torch.device, optional
        Where the tensor is made (default CPU).
    dominant : bool
        Return ``max(lam, 1 - lam)`` (sequence a dominates, as in SeqMix and MixText).
    stream : int
        An independent stream under the same seed, e.g. the batch index.

    Examples
    --------
    >>> import mixsieve as ms
    >>> lam = ms.mixup.sample_lambda((2, 5), alpha=0.4, seed=0)
    >>> lam.shape, lam.dtype
    (torch.Size([2, 5]), torch.float32)
    >>> bool(((lam >= 0) & (lam <= 1)).all())
    True
    """
    th = torch_module()
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list, th.Size)):
        raise TypeError(f"shape must be an int or a tuple of ints, got {describe(shape)}")
    dims = tuple(check_int(f"shape[{i}]", d, 0, 2**63) for i, d in enumerate(shape))
    alpha = real_number("alpha", alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
    seed = check_int("seed", seed, 0, 2**64)
    stream = check_int("stream", stream, 0, 2**64)
    dominant = check_bool("dominant", dominant)
    dev = th.device("cpu" if device is None else device)
    out: torch.Tensor = th.empty(dims, dtype=th.float32, device=dev)
    if out.numel():
        kernels(dev).lambda_fill(out, float(alpha), seed, stream, dominant)
    return out


def mix_embeddings(
    weight: torch.Tensor,
    xa: torch.Tensor,
    xb: torch.Tensor,
    lam: torch.Tensor,
    va: torch.Tensor | None = None,
    vb: torch.Tensor | None = None,
    policy: str = "union",
) -> torch.Tensor:
    """Mixed input embeddings of two token windows, token by token, in one pass.

    ``h[b, t] = keep * (lam_e * weight[xa[b, t]] + (1 - lam_e) * weight[xb[b, t]])`` for
    ``t < T``, where ``lam_e`` is ``lam[b, t]`` after the padding policy and ``keep`` drops
    positions the policy drops (their rows are zero):

    ========  ========  ====================  =======================
    a valid   b valid   ``"union"``           ``"a-only"``
    ========  ========  ====================  =======================
    yes       yes       lam                   lam
    yes       no        1                     1
    no        yes       0                     dropped
    no        no        dropped               dropped
    ========  ========  ====================  =======================

    Parameters
    ----------
    weight : Tensor [V, D]
        The embedding table (``nn.Embedding.weight``): float64, float32, bfloat16 or float16.
        Gradients flow to it (accumulated in float32, float64 for a float64 table; the CPU
        backward is deterministic, the CUDA one too when
        ``torch.use_deterministic_algorithms(True)``).
    xa, xb : int Tensor [B, T + 1]
        The two windows (the inputs are ``[:, :-1]``; the last token is only a target).
        Ids are read, and must lie in [0, V), only where their weight is non-zero.
    lam : float Tensor [B, T + 1]
        One lambda per token, in [0, 1] (used as float32), e.g. from :func:`sample_lambda`.
    va, vb : bool Tensor [B, T + 1], optional
        True at real tokens, False at padding (default: all real).
    policy : ``"union"`` or ``"a-only"``

    Returns
    -------
    Tensor [B, T, D] in ``weight.dtype`` (computed in float32, float64 for float64).

    Examples
    --------
    >>> import torch, mixsieve as ms
    >>> emb = torch.nn.Embedding(10, 4)
    >>> xa = torch.tensor([[1, 2, 3]]); xb = torch.tensor([[4, 5, 6]])
    >>> lam = torch.tensor([[1.0, 0.0, 0.5]])
    >>> h = ms.mixup.mix_embeddings(emb.weight, xa, xb, lam)
    >>> h.shape
    torch.Size([1, 2, 4])
    >>> torch.equal(h[0, 0], emb.weight[1]) and torch.equal(h[0, 1], emb.weight[5])
    True
    """
    weight = float_tensor("weight", weight)
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [V, D], got shape {tuple(weight.shape)}")
    w = Windows(xa, xb, lam, va, vb, policy)
    same_device("weight", weight, w.device)
    if weight.shape[0] < 1 or weight.shape[1] < 1:
        raise ValueError(f"weight must be [V, D] with V, D >= 1, got shape {tuple(weight.shape)}")
    out: torch.Tensor = functions()["embeddings"].apply(weight, w)
    return out


def mixup_cross_entropy(
    logits: torch.Tensor,
    xa: torch.Tensor,
    xb: torch.Tensor,
    lam: torch.Tensor,
    va: torch.Tensor | None = None,
    vb: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    target_lambda: str = "shifted",
    policy: str = "union",
) -> torch.Tensor:
    """Cross-entropy against two next tokens at once, weighted per token, from logits.

    At step ``t`` the targets are ``xa[:, t + 1]`` and ``xb[:, t + 1]`` with weight ``omega``,
    the (policy-adjusted) lambda of the predicted token (``target_lambda="shifted"``) or of the
    input token (``"same"``)::

        loss_t = lse(z) - (1 - eps) (omega z[ya] + (1 - omega) z[yb]) - eps mean(z)

    which is the cross-entropy with the soft target ``omega e_ya + (1 - omega) e_yb`` (label
    smoothing ``eps`` as in ``F.cross_entropy``). A target that is padding or equals
    ``ignore_index`` gives all the weight to the other; a position with neither (or whose input
    the policy drops) is left out. With ``policy="a-only"`` a position whose a-target is left
    out is left out. The kernel reads each row of logits twice forward and once backward and
    never builds a [B, T, V] target.

    Parameters
    ----------
    logits : Tensor [B, T, V]
        float64, float32, bfloat16 or float16; math in float32 (float64 for float64).
    xa, xb, lam, va, vb, policy
        As in :func:`mix_embeddings`.
    reduction : ``"mean"`` (over kept positions; 0 when none is kept), ``"sum"`` or ``"none"``
        (a [B, T] tensor, 0 at left-out positions).

    Returns
    -------
    The loss in float32 (float64 for float64 logits). Gradients flow to ``logits``.

    Examples
    --------
    >>> import torch, mixsieve as ms
    >>> logits = torch.zeros(1, 2, 5, requires_grad=True)
    >>> xa = torch.tensor([[1, 2, 3]]); xb = torch.tensor([[4, 0, 1]])
    >>> loss = ms.mixup.mixup_cross_entropy(logits, xa, xb, torch.full((1, 3), 0.3))
    >>> round(loss.item(), 4)  # log 5: uniform logits
    1.6094
    >>> loss.backward()
    """
    logits = float_tensor("logits", logits)
    w = Windows(xa, xb, lam, va, vb, policy)
    t = Targets(ignore_index, label_smoothing, reduction, target_lambda)
    if logits.dim() != 3 or tuple(logits.shape[:2]) != (w.batch, w.steps):
        raise ValueError(
            f"logits must be [B, T, V] = [{w.batch}, {w.steps}, V] for windows xa of shape "
            f"{(w.batch, w.width)}, got shape {tuple(logits.shape)}"
        )
    if logits.shape[2] < 1:
        raise ValueError("logits must have a vocabulary dimension V >= 1")
    same_device("logits", logits, w.device)
    out: torch.Tensor = functions()["cross_entropy"].apply(logits, w, t)
    return out


def mixup_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    xa: torch.Tensor,
    xb: torch.Tensor,
    lam: torch.Tensor,
    va: torch.Tensor | None = None,
    vb: torch.Tensor | None = None,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    chunk_size: int | None = None,
    target_lambda: str = "shifted",
    policy: str = "union",
) -> torch.Tensor:
    """:func:`mixup_cross_entropy` of ``hidden @ weight.T + bias`` without the [B*T, V] logits.

    The positions are processed ``chunk_size`` rows at a time: one chunk of logits exists at a
    time, and (for ``reduction="mean"`` or ``"sum"``) the gradients to ``hidden``, ``weight`` and
    ``bias`` are accumulated during the forward pass (weight and bias in float32), so backward
    only scales them. With ``reduction="none"`` backward recomputes each chunk instead. Extra
    memory: one chunk of float32 logits plus the float32 weight gradient.

    Parameters
    ----------
    hidden : Tensor [B, T, D]
        The last hidden states, in ``weight``'s dtype.
    weight : Tensor [V, D]
        The LM head (``nn.Linear(D, V).weight``, or the tied embedding table).
    bias : Tensor [V], optional
    chunk_size : int, optional
        Rows per chunk; default: about 10M logits per chunk (40 MiB in float32), in multiples of
        32 rows (320 rows for V = 32000).
    Others
        As in :func:`mixup_cross_entropy`.

    Examples
    --------
    >>> import torch, mixsieve as ms
    >>> head = torch.nn.Linear(8, 11, bias=False)
    >>> hidden = torch.randn(2, 3, 8, requires_grad=True)
    >>> xa = torch.randint(0, 11, (2, 4)); xb = torch.randint(0, 11, (2, 4))
    >>> lam = ms.mixup.sample_lambda((2, 4), seed=0)
    >>> loss = ms.mixup.mixup_linear_cross_entropy(hidden, head.weight, xa, xb, lam)
    >>> loss.backward()
    >>> hidden.grad.shape, head.weight.grad.shape
    (torch.Size([2, 3, 8]), torch.Size([11, 8]))
    """
    hidden = float_tensor("hidden", hidden)
    weight = float_tensor("weight", weight)
    w = Windows(xa, xb, lam, va, vb, policy)
    t = Targets(ignore_index, label_smoothing, reduction, target_lambda)
    if weight.dim() != 2 or weight.shape[0] < 1 or weight.shape[1] < 1:
        raise ValueError(f"weight must be [V, D] with V, D >= 1, got shape {tuple(weight.shape)}")
    vocab, dim = weight.shape
    if hidden.dim() != 3 or tuple(hidden.shape) != (w.batch, w.steps, dim):
        raise ValueError(
            f"hidden must be [B, T, D] = [{w.batch}, {w.steps}, {dim}] (windows of shape "
            f"{(w.batch, w.width)}, weight [V, D] = {tuple(weight.shape)}), got shape {tuple(hidden.shape)}"
        )
    cast = autocast_dtype(w.device)  # under autocast the products run in its dtype
    if cast is None and hidden.dtype != weight.dtype:
        raise TypeError(f"hidden is {hidden.dtype} but weight is {weight.dtype}: give both the same dtype")
    if bias is not None:
        bias = float_tensor("bias", bias)
        if tuple(bias.shape) != (vocab,) or (cast is None and bias.dtype != weight.dtype):
            raise ValueError(
                f"bias must be [V] = [{vocab}] in {weight.dtype}, got shape {tuple(bias.shape)} {bias.dtype}"
            )
    for name, x in (("hidden", hidden), ("weight", weight), ("bias", bias)):
        if x is not None:
            same_device(name, x, w.device)
    if chunk_size is None:
        chunk = max(1, CHUNK_ELEMENTS // vocab)
        chunk = chunk - chunk % 32 if chunk >= 32 else chunk
    else:
        chunk = check_int("chunk_size", chunk_size, 1)
    out: torch.Tensor = functions()["linear_cross_entropy"].apply(
        hidden, weight, bias, w, t, chunk, torch_module().is_grad_enabled(), cast
    )
    return out
