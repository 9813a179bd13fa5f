"""The mixup operators: argument checks, autograd functions, and the per-device kernel adapters.

Every tensor is checked once here (types, shapes, devices) and made contiguous; the native
kernels check values (ids, lambdas) where they read them. CPU tensors go to ``mixsieve._core``
(threads: ``torch.get_num_threads()``), CUDA tensors to ``mixsieve._core_cuda`` on the current
stream. Nothing here moves data to the host or waits for the device.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .._checks import check_bool, check_choice, check_int, describe

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


def _dtype_code(t: torch.Tensor) -> int:
    torch = torch_module()
    codes = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
    return codes[t.dtype]


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else int(t.data_ptr())


class CpuKernels:
    """The adapter over ``mixsieve._core`` (see ``_cuda.CudaKernels`` for the device one)."""

    def __init__(self) -> None:
        from .. import _core

        self.core = _core
        self.threads = int(torch_module().get_num_threads())

    def lambda_fill(self, out: torch.Tensor, alpha: float, seed: int, stream: int, dominant: bool) -> None:
        self.core.mixup_lambda(_ptr(out), out.numel(), alpha, seed, stream, dominant, self.threads)

    def embed_forward(
        self, weight: torch.Tensor, w: Windows, out: torch.Tensor
    ) -> None:  # fmt: skip
        self.core.mixup_embed_forward(
            _ptr(weight), _dtype_code(weight), weight.shape[0], weight.shape[1], *w.pointers(), _ptr(out),
            self.threads,
        )  # fmt: skip

    def embed_backward(
        self, grad_out: torch.Tensor, vocab: int, w: Windows, deterministic: bool
    ) -> torch.Tensor:
        """d loss / d table in grad_out's dtype (the table's): rows accumulate in float32 (float64
        for float64) and are written once each; always deterministic on the CPU."""
        th = torch_module()
        grad_weight: torch.Tensor = th.empty(vocab, grad_out.shape[-1], dtype=grad_out.dtype)
        self.core.mixup_embed_backward(
            _ptr(grad_out), _dtype_code(grad_out), vocab, grad_weight.shape[1], *w.pointers(),
            _ptr(grad_weight), self.threads,
        )  # fmt: skip
        return grad_weight

    def ce(
        self, logits: torch.Tensor, r0: int, w: Windows, t: Targets, loss: torch.Tensor | None,
        lse: torch.Tensor, keep: torch.Tensor | None, gtok: torch.Tensor | None, grad: torch.Tensor | None,
    ) -> None:  # fmt: skip
        self.core.mixup_ce(
            _ptr(logits), _dtype_code(logits), r0, logits.shape[0], logits.shape[1], *w.pointers(),
            t.shifted, t.ignore_index, t.eps, _ptr(loss), _ptr(lse), _ptr(keep), _ptr(gtok), _ptr(grad),
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


def same_device(name: str, t: torch.Tensor, device: torch.device) -> None:
    if t.device != device:
        raise ValueError(f"{name} is on {t.device}, but xa is on {device}: put all tensors on one device")


class Windows:
    """Checked token windows: xa, xb int64 [B, T+1], lam float32, va, vb uint8 views or None."""

    def __init__(self, xa: Any, xb: Any, lam: Any, va: Any, vb: Any, policy: str) -> None:
        torch = torch_module()
        self.policy = POLICIES[check_choice("policy", policy, tuple(POLICIES))]
        for name, t in (("xa", xa), ("xb", xb), ("lam", lam)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {describe(t)}")
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
            ids.append(t.to(torch.int64).contiguous())
        self.xa, self.xb = ids
        if not lam.dtype.is_floating_point:
            raise TypeError(f"lam must be a float tensor, got dtype {lam.dtype}")
        self._same("lam", lam, shape)
        self.lam = lam.detach().to(torch.float32).contiguous()
        masks: list[Any] = []
        for name, t in (("va", va), ("vb", vb)):
            if t is None:
                masks.append(None)
                continue
            if not isinstance(t, torch.Tensor) or t.dtype != torch.bool:
                kind = f"dtype {t.dtype}" if isinstance(t, torch.Tensor) else describe(t)
                raise TypeError(f"{name} must be a bool tensor (True = a real token) or None, got {kind}")
            self._same(name, t, shape)
            masks.append(t.contiguous().view(torch.uint8))
        self.va, self.vb = masks
        self.batch, self.width = int(shape[0]), int(shape[1])

    def _same(self, name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, but xa has shape {shape}")
        same_device(name, t, self.device)

    @property
    def steps(self) -> int:
        return self.width - 1

    def pointers(self) -> tuple[int, int, int, int, int, int, int, int]:
        return (
            _ptr(self.xa), _ptr(self.xb), _ptr(self.lam), _ptr(self.va), _ptr(self.vb),
            self.batch, self.width, self.policy,
        )  # fmt: skip

    def tensors(self) -> tuple[Any, ...]:
        return (self.xa, self.xb, self.lam, self.va, self.vb)


class Targets:
    """The loss options, checked."""

    def __init__(self, ignore_index: Any, label_smoothing: Any, reduction: Any, target_lambda: Any) -> None:
        self.ignore_index = check_int("ignore_index", ignore_index, -(2**63), 2**63)
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
            raise TypeError(f"label_smoothing must be a float, got {describe(label_smoothing)}")
        eps = float(label_smoothing)
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1], got {eps}")
        self.eps = eps
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.shifted = check_choice("target_lambda", target_lambda, TARGET_LAMBDAS) == "shifted"


def _float_tensor(name: str, t: Any) -> Any:
    torch = torch_module()
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {describe(t)}")
    if t.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        raise TypeError(f"{name} must be float64, float32, bfloat16 or float16, got dtype {t.dtype}")
    return t


def _loss_dtype(t: torch.Tensor) -> Any:
    torch = torch_module()
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _reduce(loss_tok: torch.Tensor, keep: torch.Tensor, reduction: str, batch: int, steps: int) -> Any:
    if reduction == "none":
        return loss_tok.view(batch, steps)
    total = loss_tok.sum()
    return total if reduction == "sum" else total / keep.sum().clamp_min(1)


def _token_grad(g: torch.Tensor, keep: torch.Tensor, reduction: str, n: int) -> torch.Tensor:
    """The upstream gradient of each position's loss, as a contiguous [n] tensor."""
    g = g.to(keep.dtype)
    if reduction == "none":
        return g.reshape(n).contiguous()
    if reduction == "mean":
        g = g / keep.sum().clamp_min(1)
    return g.reshape(1).expand(n).contiguous()


def _autograd() -> tuple[Any, Any]:
    torch = torch_module()
    from torch.autograd.function import once_differentiable

    return torch.autograd.Function, once_differentiable


_FUNCTIONS: dict[str, Any] = {}


def _functions() -> dict[str, Any]:
    """The autograd functions, defined on first use (torch is imported lazily)."""
    if _FUNCTIONS:
        return _FUNCTIONS
    th = torch_module()
    Function, once_differentiable = _autograd()

    class MixEmbeddings(Function):  # type: ignore[misc, valid-type]
        @staticmethod
        def forward(ctx: Any, weight: torch.Tensor, w: Windows) -> Any:
            weight_c = weight.detach().contiguous()
            out = th.empty(w.batch, w.steps, weight.shape[1], dtype=weight.dtype, device=weight.device)
            kernels(weight.device).embed_forward(weight_c, w, out)
            ctx.w = w
            ctx.vocab, ctx.dtype = weight.shape[0], weight.dtype
            return out

        @staticmethod
        @once_differentiable  # type: ignore[untyped-decorator]
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
            w: Windows = ctx.w
            grad = grad.to(ctx.dtype).contiguous()
            deterministic = bool(th.are_deterministic_algorithms_enabled())
            return kernels(grad.device).embed_backward(grad, ctx.vocab, w, deterministic), None

    class MixupCrossEntropy(Function):  # type: ignore[misc, valid-type]
        @staticmethod
        def forward(ctx: Any, logits: torch.Tensor, w: Windows, t: Targets) -> Any:
            z = logits.detach().contiguous().view(-1, logits.shape[-1])
            n = z.shape[0]
            mdt = _loss_dtype(logits)
            loss = th.empty(n, dtype=mdt, device=z.device)
            lse, keep = th.empty(n, 2, dtype=mdt, device=loss.device), th.empty_like(loss)
            kernels(z.device).ce(z, 0, w, t, loss, lse, keep, None, None)
            ctx.save_for_backward(z, lse, keep)
            ctx.w, ctx.t, ctx.shape = w, t, tuple(logits.shape)
            return _reduce(loss, keep, t.reduction, w.batch, w.steps)

        @staticmethod
        @once_differentiable  # type: ignore[untyped-decorator]
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
            z, lse, keep = ctx.saved_tensors
            t: Targets = ctx.t
            gtok = _token_grad(grad, keep, t.reduction, z.shape[0])
            out = th.empty_like(z)
            kernels(z.device).ce(z, 0, ctx.w, t, None, lse, None, gtok, out)
            return out.view(ctx.shape), None, None

    class MixupLinearCrossEntropy(Function):  # type: ignore[misc, valid-type]
        @staticmethod
        def forward(
            ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, w: Windows,
            t: Targets, chunk: int, grad_mode: bool,
        ) -> Any:  # fmt: skip
            h = hidden.detach().contiguous().view(-1, hidden.shape[-1])
            wt = weight.detach().contiguous()
            b = None if bias is None else bias.detach().contiguous()
            n, mdt = h.shape[0], _loss_dtype(weight)
            need = ctx.needs_input_grad[:3]
            # mean/sum: the gradient is computed here, chunk by chunk, and scaled in backward;
            # none: the per-position upstream gradients are unknown until backward, which recomputes
            precompute = grad_mode and any(need) and t.reduction != "none"
            loss = th.empty(n, dtype=mdt, device=h.device)
            lse, keep = th.empty(n, 2, dtype=mdt, device=loss.device), th.empty_like(loss)
            grads = _LinearGrads(h, wt, b, need) if precompute else None
            ker = kernels(h.device)
            for r0 in range(0, n, chunk):
                hc = h[r0 : r0 + chunk]
                z = _logits(hc, wt, b, mdt)
                ker.ce(z, r0, w, t, loss[r0:], lse[r0:], keep[r0:], None, z if grads else None)
                if grads is not None:
                    grads.add(r0, hc, z)
                del z  # before the next chunk's logits are made: one chunk at a time
            ctx.w, ctx.t, ctx.chunk, ctx.shape = w, t, chunk, tuple(hidden.shape)
            ctx.grads = grads
            ctx.save_for_backward(h, wt, b, lse, keep)
            return _reduce(loss, keep, t.reduction, w.batch, w.steps)

        @staticmethod
        @once_differentiable  # type: ignore[untyped-decorator]
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
            t: Targets = ctx.t
            h, wt, b, lse, keep = ctx.saved_tensors
            grads: _LinearGrads | None = ctx.grads
            # mean and sum: the gradients for an upstream gradient of 1, scaled at the end
            scale = None
            if t.reduction != "none":
                scale = grad.to(keep.dtype)
                if t.reduction == "mean":
                    scale = scale / keep.sum().clamp_min(1)
            if grads is not None:
                # computed in the forward pass, scaled in place and handed over; a second
                # backward of the same graph (retain_graph=True) recomputes them, bit for bit
                ctx.grads = None
            else:
                n = h.shape[0]
                gtok = th.ones_like(keep) if scale is not None else _token_grad(grad, keep, "none", n)
                grads = _LinearGrads(h, wt, b, ctx.needs_input_grad[:3])
                ker = kernels(h.device)
                for r0 in range(0, n, ctx.chunk):
                    hc = h[r0 : r0 + ctx.chunk]
                    z = _logits(hc, wt, b, lse.dtype)
                    ker.ce(z, r0, ctx.w, t, None, lse[r0:], None, gtok[r0:], z)
                    grads.add(r0, hc, z)
                    del z
            d_h, d_w, d_b = grads.scaled(scale)
            if d_h is not None:
                d_h = d_h.view(ctx.shape)
            return d_h, d_w, d_b, None, None, None, None

    _FUNCTIONS["embeddings"] = MixEmbeddings
    _FUNCTIONS["cross_entropy"] = MixupCrossEntropy
    _FUNCTIONS["linear_cross_entropy"] = MixupLinearCrossEntropy
    return _FUNCTIONS


def _logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, mdt: torch.dtype) -> Any:
    """One chunk of logits in the math dtype (float32 for 16-bit weights), contiguous."""
    torch = torch_module()
    z = torch.mm(h, w.t()) if b is None else torch.addmm(b, h, w.t())
    return z if z.dtype == mdt else z.to(mdt)


class _LinearGrads:
    """Gradients of the linear variant, accumulated chunk by chunk: d hidden in hidden's dtype,
    d weight and d bias in float32 (float64 for float64 weights)."""

    def __init__(self, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, need: Any) -> None:
        torch = torch_module()
        acc = _loss_dtype(w)
        self.h_dtype, self.w_dtype = h.dtype, w.dtype
        self.w = w
        self.d_h = torch.empty_like(h) if need[0] else None
        self.d_w = torch.zeros(w.shape, dtype=acc, device=w.device) if need[1] else None
        self.d_b = torch.zeros(w.shape[0], dtype=acc, device=w.device) if need[2] and b is not None else None

    def add(self, r0: int, hc: torch.Tensor, g: torch.Tensor) -> None:
        """Adds the contribution of rows [r0, r0 + len(hc)) with logit gradient g (math dtype)."""
        torch = torch_module()
        if self.d_h is not None:
            gc = g if g.dtype == self.w_dtype else g.to(self.w_dtype)
            torch.mm(gc, self.w, out=self.d_h[r0 : r0 + hc.shape[0]])
        if self.d_w is not None:
            self.d_w.addmm_(g.t(), hc if hc.dtype == self.d_w.dtype else hc.to(self.d_w.dtype))
        if self.d_b is not None:
            self.d_b += g.sum(0)

    def scaled(self, scale: torch.Tensor | None) -> tuple[Any, Any, Any]:
        out = []
        for t, dtype in ((self.d_h, self.h_dtype), (self.d_w, self.w_dtype), (self.d_b, self.w_dtype)):
            if t is not None and scale is not None:
                t.mul_(scale.to(t.dtype))
            out.append(None if t is None else t.to(dtype))
        return out[0], out[1], out[2]


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
    dims = (shape,) if isinstance(shape, (int,)) and not isinstance(shape, bool) else shape
    if not isinstance(dims, (tuple, list, th.Size)):
        raise TypeError(f"shape must be an int or a tuple of ints, got {describe(shape)}")
    dims = tuple(check_int(f"shape[{i}]", d, 0) for i, d in enumerate(dims))
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a float, got {describe(alpha)}")
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
    weight = _float_tensor("weight", weight)
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [V, D], got shape {tuple(weight.shape)}")
    w = Windows(xa, xb, lam, va, vb, policy)
    same_device("weight", weight, w.device)
    if weight.shape[0] < 1 or weight.shape[1] < 1:
        raise ValueError(f"weight must be [V, D] with V, D >= 1, got shape {tuple(weight.shape)}")
    out: torch.Tensor = _functions()["embeddings"].apply(weight, w)
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
    logits = _float_tensor("logits", logits)
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
    out: torch.Tensor = _functions()["cross_entropy"].apply(logits, w, t)
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
    hidden = _float_tensor("hidden", hidden)
    weight = _float_tensor("weight", weight)
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
    if hidden.dtype != weight.dtype:
        raise TypeError(f"hidden is {hidden.dtype} but weight is {weight.dtype}: give both the same dtype")
    if bias is not None:
        bias = _float_tensor("bias", bias)
        if tuple(bias.shape) != (vocab,) or bias.dtype != weight.dtype:
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
    out: torch.Tensor = _functions()["linear_cross_entropy"].apply(
        hidden, weight, bias, w, t, chunk, torch_module().is_grad_enabled()
    )
    return out
