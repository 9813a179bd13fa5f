"""The autograd functions of the mixup operators, defined on first use (torch loads lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._args import Targets, Windows, torch_module
from ._kernels import kernels

if TYPE_CHECKING:
    import torch


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


def no_double_backward(name: str) -> None:
    """Raises when backward runs with create_graph=True: the kernels' gradients are not
    differentiable, and a silent constant would make a gradient penalty wrong."""
    if torch_module().is_grad_enabled():
        raise RuntimeError(
            f"{name} does not support double backward (create_graph=True): its gradient is computed "
            "by a kernel that autograd cannot differentiate"
        )


_FUNCTIONS: dict[str, Any] = {}


def functions() -> dict[str, Any]:
    """The autograd functions, defined on first use (torch is imported lazily)."""
    if _FUNCTIONS:
        return _FUNCTIONS
    th = torch_module()
    Function = th.autograd.Function

    class MixEmbeddings(Function):  # type: ignore[misc, valid-type]
        @staticmethod
        def forward(ctx: Any, weight: torch.Tensor, w: Windows) -> Any:
            weight_c = weight.detach().contiguous()
            out = th.empty(w.batch, w.steps, weight.shape[1], dtype=weight.dtype, device=weight.device)
            kernels(weight.device).embed_forward(weight_c, w, out)
            ctx.w = w
            ctx.save_for_backward(*w.tensors())  # so that a second backward is refused, as usual
            ctx.vocab, ctx.dtype = weight.shape[0], weight.dtype
            return out

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
            no_double_backward("mix_embeddings")
            _ = ctx.saved_tensors  # raises if the graph was freed by an earlier backward
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
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
            no_double_backward("mixup_cross_entropy")
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
            t: Targets, chunk: int, grad_mode: bool, cast: torch.dtype | None,
        ) -> Any:  # fmt: skip
            # under autocast the products run in its dtype (cast), as F.linear's would; the rest
            # of the work is not autocast, and backward recomputes under the same rule
            cd = cast or weight.dtype
            dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
            with th.autocast(device_type=hidden.device.type, enabled=False):
                h = hidden.detach().reshape(-1, hidden.shape[-1]).to(cd).contiguous()
                wt = weight.detach().to(cd).contiguous()
                b = None if bias is None else bias.detach().to(cd).contiguous()
                n, mdt = h.shape[0], _loss_dtype(wt)
                need = ctx.needs_input_grad[:3]
                # mean/sum: the gradient is computed here, chunk by chunk, and scaled in backward;
                # none: the per-position upstream gradients are unknown until backward, which
                # recomputes
                precompute = grad_mode and any(need) and t.reduction != "none"
                loss = th.empty(n, dtype=mdt, device=h.device)
                lse, keep = th.empty(n, 2, dtype=mdt, device=loss.device), th.empty_like(loss)
                grads = _LinearGrads(h, wt, b, need, dtypes) if precompute else None
                ker = kernels(h.device)
                for r0 in range(0, n, chunk):
                    hc = h[r0 : r0 + chunk]
                    z = _logits(hc, wt, b, mdt)
                    ker.ce(z, r0, w, t, loss[r0:], lse[r0:], keep[r0:], None, z if grads else None)
                    if grads is not None:
                        grads.add(r0, hc, z)
                    del z  # before the next chunk's logits are made: one chunk at a time
                out = _reduce(loss, keep, t.reduction, w.batch, w.steps)
            ctx.w, ctx.t, ctx.chunk, ctx.shape, ctx.dtypes = w, t, chunk, tuple(hidden.shape), dtypes
            ctx.grads = grads
            ctx.save_for_backward(h, wt, b, lse, keep)
            return out

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
            no_double_backward("mixup_linear_cross_entropy")
            t: Targets = ctx.t
            h, wt, b, lse, keep = ctx.saved_tensors
            grads: _LinearGrads | None = ctx.grads
            with th.autocast(device_type=h.device.type, enabled=False):
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
                    grads = _LinearGrads(h, wt, b, ctx.needs_input_grad[:3], ctx.dtypes)
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
            return d_h, d_w, d_b, None, None, None, None, None

    _FUNCTIONS["embeddings"] = MixEmbeddings
    _FUNCTIONS["cross_entropy"] = MixupCrossEntropy
    _FUNCTIONS["linear_cross_entropy"] = MixupLinearCrossEntropy
    return _FUNCTIONS


def _logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, mdt: torch.dtype) -> Any:
    """One chunk of logits: the product in the weights' dtype (as F.linear), then converted to the
    math dtype (float32 for 16-bit weights) for the cross-entropy kernel."""
    torch = torch_module()
    z = torch.mm(h, w.t()) if b is None else torch.addmm(b, h, w.t())
    return z if z.dtype == mdt else z.to(mdt)


_LOW_PRECISION_ADDMM = [True]  # cleared the first time torch refuses the mixed-dtype product


def _addmm_low_precision(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> bool:
    """acc += a @ b for 16-bit a, b on CUDA, products accumulated into the float32 acc by one
    tensor-core GEMM (torch's ``out_dtype``), as the eager bf16 backward does but without its
    rounding of the weight gradient to 16 bits. An fp32 GEMM of upcast copies (the fallback)
    runs several times slower. Returns False when not applicable or not supported by torch."""
    torch = torch_module()
    if not (_LOW_PRECISION_ADDMM[0] and acc.is_cuda and acc.dtype == torch.float32):
        return False
    if a.dtype != b.dtype or a.dtype not in (torch.bfloat16, torch.float16):
        return False
    try:
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    except (RuntimeError, TypeError):  # a torch without mm's out_dtype (before 2.8)
        _LOW_PRECISION_ADDMM[0] = False
        return False
    return True


class _LinearGrads:
    """Gradients of the linear variant, accumulated chunk by chunk: d hidden in the products'
    dtype, d weight and d bias in float32 (float64 for float64 weights); handed out in the
    dtypes of the caller's hidden, weight and bias."""

    def __init__(
        self, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, need: Any, dtypes: Any
    ) -> None:
        torch = torch_module()
        acc = _loss_dtype(w)
        self.dtypes = dtypes
        self.w_dtype = w.dtype
        self.w = w
        self.d_h = torch.empty_like(h) if need[0] else None
        self.d_w = torch.zeros(w.shape, dtype=acc, device=w.device) if need[1] else None
        self.d_b = torch.zeros(w.shape[0], dtype=acc, device=w.device) if need[2] and b is not None else None

    def add(self, r0: int, hc: torch.Tensor, g: torch.Tensor) -> None:
        """Adds the contribution of rows [r0, r0 + len(hc)) with logit gradient g (math dtype)."""
        torch = torch_module()
        gc = g if g.dtype == self.w_dtype else g.to(self.w_dtype)
        if self.d_h is not None:
            torch.mm(gc, self.w, out=self.d_h[r0 : r0 + hc.shape[0]])
        if self.d_w is not None and not _addmm_low_precision(self.d_w, gc.t(), hc):
            self.d_w.addmm_(g.t(), hc if hc.dtype == self.d_w.dtype else hc.to(self.d_w.dtype))
        if self.d_b is not None:
            self.d_b += g.sum(0)

    def scaled(self, scale: torch.Tensor | None) -> tuple[Any, Any, Any]:
        out = []
        for t, dtype in zip((self.d_h, self.d_w, self.d_b), self.dtypes):
            if t is not None and scale is not None:
                t.mul_(scale.to(t.dtype))
            out.append(None if t is None else t.to(dtype))
        return out[0], out[1], out[2]
