"""Per-token mixup on a CUDA GPU: mixsieve's kernels vs eager PyTorch on the same device, same inputs.

Inputs as bench_mixup.py: xa int64 [B, T+1] random ids, xb = xa with rows rolled by one, right
padding (each row keeps 3/4 to all of its tokens; b inherits its row's mask), lam ~ Beta(0.4, 0.4)
per token, union policy, ignore_index -100, no label smoothing.

  1. ``mix_embeddings`` forward bandwidth on a large batch (--bw-batch x --bw-seq positions):
     bytes the kernel must move (both table rows at mixed positions, one row where lambda is 0
     or 1, none at dropped positions, the output, ids, lambdas and masks) / median kernel time,
     as a fraction of --hbm-tbps (H200: 4.8 TB/s; H100 SXM: 3.35). Target >= 0.75. Eager
     (``F.embedding`` twice + ``torch.lerp``) for comparison.
  2. Embedding backward: the deterministic path (stable radix sort + one block per row) vs the
     atomic one, the kernels alone (through the CUDA adapter) at --batch x --seq. Target <= 1.3.
  3. ``mixup_cross_entropy`` fwd+bwd to logits [B, T, V] vs the careful eager version (one
     log_softmax, two gathers), time and peak extra memory (torch.cuda.max_memory_allocated).
  4. ``mixup_linear_cross_entropy`` fwd+bwd to hidden and weight vs eager ``F.linear`` + the eager
     lambda-CE (and two ``F.linear_cross_entropy`` calls when torch has it): time and peak extra
     memory; expected extra for ours: one chunk of fp32 logits + the fp32 dW (+ d hidden).

Times are medians of --runs CUDA-event timings after warm-up. Every variant is checked against an
fp32 eager reference first (max error relative to the reference's max). JSON to --out.

Usage: python bench/bench_mixup_gpu.py [--batch 4 --seq 1024 --dim 1024 --vocab 32000]
       [--bw-batch 32 --bw-seq 2048] [--dtypes fp32,bf16] [--runs 20] [--hbm-tbps 4.8]
       [--out bench/results/mixup_gpu.json] [--smoke]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import mixsieve as ms
import torch
import torch.nn.functional as F
from mixsieve.info import build_info
from mixsieve.mixup import _cuda, _ops
from mixup_eager import IGNORE, targets  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
DEV = torch.device("cuda")


def make_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = seq + 1
    xa = torch.randint(0, vocab, (batch, w), generator=g)
    lengths = torch.randint((3 * w) // 4, w + 1, (batch,), generator=g)
    va = torch.arange(w)[None, :] < lengths[:, None]
    xa = xa.masked_fill(~va, 0)
    perm = (torch.arange(batch) + 1) % batch
    xb, vb = xa[perm].contiguous(), va[perm].contiguous()
    lam = ms.mixup.sample_lambda((batch, w), alpha=0.4, seed=seed)
    return {k: v.to(DEV) for k, v in {"xa": xa, "xb": xb, "lam": lam, "va": va, "vb": vb}.items()}


def eager_embed(weight: Any, xa: Any, xb: Any, lam: Any, va: Any, vb: Any) -> Any:
    lam_e = torch.where(va & vb, lam, va.to(lam.dtype))
    lin = lam_e[:, :-1, None].to(weight.dtype)
    mi = (va | vb)[:, :-1, None]
    return torch.lerp(F.embedding(xb[:, :-1], weight), F.embedding(xa[:, :-1], weight), lin) * mi


def eager_ce(z: Any, xa: Any, xb: Any, lam: Any, va: Any, vb: Any) -> Any:
    ya, yb, om, lm = targets(xa, xb, lam, va, vb)
    lp = z.log_softmax(-1, dtype=torch.float32 if z.element_size() < 4 else None)
    nll_a = -lp.gather(-1, ya.clamp_min(0)[..., None]).squeeze(-1)
    nll_b = -lp.gather(-1, yb.clamp_min(0)[..., None]).squeeze(-1)
    return ((om * nll_a + (1 - om) * nll_b) * lm).sum() / lm.sum().clamp_min(1)


def torch_lce_twice(hidden: Any, weight: Any, xa: Any, xb: Any, lam: Any, va: Any, vb: Any) -> Any:
    ya, yb, om, lm = targets(xa, xb, lam, va, vb)
    h2 = hidden.reshape(-1, hidden.shape[-1])
    la = F.linear_cross_entropy(h2, weight, ya.reshape(-1), reduction="none", ignore_index=IGNORE)
    lb = F.linear_cross_entropy(h2, weight, yb.reshape(-1), reduction="none", ignore_index=IGNORE)
    tok = om * la.view_as(om).float() + (1 - om) * lb.view_as(om).float()
    return (tok * lm).sum() / lm.sum().clamp_min(1)


# ----------------------------------------------------------------------------------------------
# Timing and memory


def cuda_median(fn: Callable[[], Any], runs: int, warmup: int = 3) -> float:
    """Median seconds of fn() between two CUDA events on the current stream."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def peak_extra_mb(fn: Callable[[], Any], reset: Callable[[], None]) -> float:
    """Device memory allocated at the peak of one call beyond what was allocated before it (MiB)."""
    fn()
    reset()
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    extra = (torch.cuda.max_memory_allocated() - base) / 2**20
    reset()
    return extra


def rel_err(x: Any, ref: Any) -> float:
    x, ref = x.double(), ref.double()
    return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def target(name: str, value: float | None, op: str, threshold: float, ok: bool = True) -> dict[str, Any]:
    met = value is not None and ok and (value >= threshold if op == ">=" else value <= threshold)
    return {"target": name, "value": value, "need": f"{op} {threshold:g}", "met": met}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# 1. forward bandwidth


def embed_bytes(b: dict[str, Any], dim: int, elem: int) -> int:
    """Bytes the forward must move: table rows it reads, the output, and the windows it reads."""
    va, vb, lam = b["va"], b["vb"], b["lam"]
    lam_e = torch.where(va & vb, lam, va.to(lam.dtype))[:, :-1]
    keep = (va | vb)[:, :-1]
    rows_read = (keep & (lam_e != 0)).sum() + (keep & (lam_e != 1)).sum()
    positions = keep.numel()
    per_position = 8 + 8 + 4 + 1 + 1  # xa, xb, lam, va, vb
    return int(rows_read) * dim * elem + positions * dim * elem + positions * per_position


def bench_forward(a: argparse.Namespace, dname: str) -> dict[str, Any]:
    dtype = DTYPES[dname]
    b = make_batch(a.bw_batch, a.bw_seq, a.vocab, seed=1)
    weight = torch.randn(a.vocab, a.dim, device=DEV).to(dtype)
    out = torch.empty(a.bw_batch, a.bw_seq, a.dim, device=DEV, dtype=dtype)
    w = _ops.Windows(b["xa"], b["xb"], b["lam"], b["va"], b["vb"], "union")
    ker = _cuda.CudaKernels(DEV)
    ker.embed_forward(weight, w, out)
    ref = eager_embed(weight.float(), **b)
    err = rel_err(out, ref)
    ok = err <= (1e-6 if dtype == torch.float32 else 8e-3)
    t_kernel = cuda_median(lambda: ker.embed_forward(weight, w, out), a.runs)
    t_api = cuda_median(lambda: ms.mixup.mix_embeddings(weight, **b), a.runs)
    t_eager = cuda_median(lambda: eager_embed(weight, **b), a.runs)
    nbytes = embed_bytes(b, a.dim, weight.element_size())
    tbps = nbytes / t_kernel / 1e12
    res = {
        "op": "embed_forward",
        "dtype": dname,
        "positions": a.bw_batch * a.bw_seq,
        "bytes": nbytes,
        "max_rel_err_vs_fp32_eager": err,
        "correct": ok,
        "median_s": {"kernel": t_kernel, "mix_embeddings": t_api, "eager_lerp": t_eager},
        "tb_per_s": tbps,
        "hbm_fraction": tbps / a.hbm_tbps,
        "speedup_vs_eager": t_eager / t_api,
    }
    res["targets"] = [target("forward HBM bandwidth fraction", tbps / a.hbm_tbps, ">=", 0.75, ok)]
    log(f"[embed forward {dname}] {tbps:.2f} TB/s = {tbps / a.hbm_tbps:.1%} of {a.hbm_tbps} TB/s")
    return res


# ----------------------------------------------------------------------------------------------
# 2. deterministic vs atomic backward


def bench_backward(a: argparse.Namespace, dname: str, batch: int, seq: int) -> dict[str, Any]:
    dtype = DTYPES[dname]
    b = make_batch(batch, seq, a.vocab, seed=2)
    w = _ops.Windows(b["xa"], b["xb"], b["lam"], b["va"], b["vb"], "union")
    g = torch.randn(batch, seq, a.dim, device=DEV).to(dtype)
    ker = _cuda.CudaKernels(DEV)
    # the adapter returns the gradient in the table's dtype (a float32 accumulator converted
    # once for 16-bit tables); the caching allocator makes its allocation free
    gw_det = ker.embed_backward(g, a.vocab, w, True)
    gw_atomic = ker.embed_backward(g, a.vocab, w, False)
    again = ker.embed_backward(g, a.vocab, w, True)
    bits = {torch.float64: torch.int64, torch.float32: torch.int32}.get(gw_det.dtype, torch.int16)
    bitwise = bool(torch.equal(gw_det.view(bits), again.view(bits)))
    err = rel_err(gw_atomic.float(), gw_det.float())
    ok = bitwise and err <= (1e-12 if dtype == torch.float64 else 1e-5 if dtype == torch.float32 else 1e-2)
    t_det = cuda_median(lambda: ker.embed_backward(g, a.vocab, w, True), a.runs)
    t_atomic = cuda_median(lambda: ker.embed_backward(g, a.vocab, w, False), a.runs)
    ratio = t_det / t_atomic
    # for information: forward + backward through the public API with each mode; in
    # deterministic mode torch also fills the uninitialised [V, D] gradient buffer it allocates
    weight = torch.randn(a.vocab, a.dim, device=DEV).to(dtype).requires_grad_()

    def api() -> None:
        weight.grad = None
        ms.mixup.mix_embeddings(weight, **b).backward(g)

    before = torch.are_deterministic_algorithms_enabled()
    api_times = {}
    for mode in (True, False):
        torch.use_deterministic_algorithms(mode)
        api_times["deterministic" if mode else "atomic"] = cuda_median(api, a.runs)
    torch.use_deterministic_algorithms(before)
    res = {
        "op": "embed_backward",
        "dtype": dname,
        "positions": batch * seq,
        "vocab": a.vocab,
        "dim": a.dim,
        "deterministic_bitwise_repeatable": bitwise,
        "atomic_max_rel_err_vs_deterministic": err,
        "correct": ok,
        "median_s": {"deterministic": t_det, "atomic": t_atomic},
        "deterministic_over_atomic": ratio,
        "api_fwd_bwd_median_s": api_times,
        "targets": [target("deterministic / atomic time", ratio, "<=", 1.3, ok)],
    }
    log(f"[embed backward {dname} {batch}x{seq}] det {t_det * 1e6:.0f} us, atomic {t_atomic * 1e6:.0f} us")
    return res


# ----------------------------------------------------------------------------------------------
# 3 and 4. cross-entropy and the linear variant, fwd + bwd


def fwd_bwd_case(a: argparse.Namespace, op: str, dname: str) -> dict[str, Any]:
    dtype = DTYPES[dname]
    b = make_batch(a.batch, a.seq, a.vocab, seed=3)
    B, T, D, V = a.batch, a.seq, a.dim, a.vocab
    gen = torch.Generator(device=DEV).manual_seed(4)
    variants: dict[str, Callable[[], Any]] = {}
    if op == "ce":
        z = (2 * torch.randn(B, T, V, device=DEV, generator=gen)).to(dtype).requires_grad_()
        leaves = [z]
        variants["mixsieve"] = lambda: ms.mixup.mixup_cross_entropy(z, **b)
        variants["eager"] = lambda: eager_ce(z, **b)
    else:
        h = torch.randn(B, T, D, device=DEV, generator=gen).to(dtype).requires_grad_()
        wt = (torch.randn(V, D, device=DEV, generator=gen) * D**-0.5).to(dtype).requires_grad_()
        leaves = [h, wt]
        variants["mixsieve"] = lambda: ms.mixup.mixup_linear_cross_entropy(h, wt, **b)
        variants["eager"] = lambda: eager_ce(F.linear(h, wt), **b)
        if hasattr(F, "linear_cross_entropy"):
            variants["torch_lce_x2"] = lambda: torch_lce_twice(h, wt, **b)

    def zero() -> None:
        for t in leaves:
            t.grad = None

    def step(name: str) -> Callable[[], None]:
        def go() -> None:
            zero()
            variants[name]().backward()

        return go

    # correctness against an fp32 eager reference on the same values
    ref_leaves = [t.detach().float().requires_grad_() for t in leaves]
    if op == "ce":
        ref = eager_ce(ref_leaves[0], **b)
    else:
        ref = eager_ce(F.linear(ref_leaves[0], ref_leaves[1]), **b)
    ref.backward()
    errs: dict[str, float] = {}
    for name, fn in variants.items():
        zero()
        out = fn()
        out.backward()
        errs[name] = max(
            [rel_err(out.detach(), ref.detach())]
            + [rel_err(t.grad, r.grad) for t, r in zip(leaves, ref_leaves)]
        )
    del ref_leaves, ref
    zero()
    tol = 1e-4 if dtype == torch.float32 else max(2 * errs.get("eager", 0.0), 4e-3)
    ok = errs["mixsieve"] <= tol
    times = {n: cuda_median(step(n), a.runs) for n in variants}
    mem = {n: peak_extra_mb(step(n), zero) for n in variants}
    res: dict[str, Any] = {
        "op": op,
        "dtype": dname,
        "sizes": {"batch": B, "seq": T, "dim": D, "vocab": V},
        "max_rel_err_vs_fp32_eager": errs,
        "tolerance": tol,
        "correct": ok,
        "median_s": times,
        "peak_extra_mb": mem,
        "speedup": {n: t / times["mixsieve"] for n, t in times.items() if n != "mixsieve"},
        "mem_ratio_ours_over": {n: mem["mixsieve"] / m for n, m in mem.items() if n != "mixsieve" and m},
    }
    grads_mb = sum(t.numel() * t.element_size() for t in leaves) / 2**20
    res["grad_outputs_mb"] = grads_mb
    # the targets: the cross-entropy >= 2.5x the careful eager version, the linear
    # variant's time <= 1.1x eager's
    tg = [target("speed vs eager", res["speedup"]["eager"], ">=", 2.5 if op == "ce" else 1 / 1.1, ok)]
    if op == "linear":
        chunk = max(1, _ops.CHUNK_ELEMENTS // V)
        expected = (min(chunk, B * T) * V * 4 + V * D * 4 + B * T * D * h.element_size()) / 2**20
        res["expected_extra_mb"] = {"one_fp32_chunk_plus_fp32_dW_plus_dhidden": expected}
        tg.append(
            target("peak extra / (one chunk + fp32 dW + d hidden)", mem["mixsieve"] / expected, "<=", 1.5, ok)
        )
        tg.append(
            target("peak extra mem / eager's", res["mem_ratio_ours_over"].get("eager"), "<=", 1 / 8, ok)
        )
    res["targets"] = tg
    log(f"[{op} {dname}] times {times}, peak extra MiB {mem}, errors {errs}")
    return res


# ----------------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--bw-batch", type=int, default=32)
    p.add_argument("--bw-seq", type=int, default=2048)
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--ops", default="forward,backward,ce,linear")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--hbm-tbps", type=float, default=4.8, help="peak HBM bandwidth (H200 4.8, H100 SXM 3.35)")
    default_out = os.path.join(os.environ.get("OUT") or "bench/results", "mixup_gpu.json")
    p.add_argument("--out", default=default_out)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 2 runs: checks the script runs")
    a = p.parse_args()
    if a.smoke:
        a.batch, a.seq, a.dim, a.vocab, a.bw_batch, a.bw_seq, a.runs = 2, 64, 64, 1000, 2, 128, 2
    ok, why = _cuda.available()
    result: dict[str, Any] = {
        "args": vars(a),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "mixsieve_cuda": why,
        "mixsieve_build": {k: str(v) for k, v in build_info().items()},
        "python": platform.python_version(),
        "cases": [],
    }
    if not ok:
        result["error"] = why
        write(a.out, result)
        log(f"cannot run: {why}")
        return 2
    ops = a.ops.split(",")
    torch.backends.cuda.matmul.allow_tf32 = False
    for dname in a.dtypes.split(","):
        if "forward" in ops:
            result["cases"].append(bench_forward(a, dname))
        if "backward" in ops:
            result["cases"].append(bench_backward(a, dname, a.batch, a.seq))
            result["cases"].append(bench_backward(a, dname, a.bw_batch, a.bw_seq))
        for op in ("ce", "linear"):
            if op in ops:
                result["cases"].append(fwd_bwd_case(a, op, dname))
                gc.collect()
                torch.cuda.empty_cache()
        write(a.out, result)  # partial results survive a timeout
    result["targets"] = [
        dict(t, case=f"{c['op']} {c['dtype']}") for c in result["cases"] for t in c.get("targets", [])
    ]
    write(a.out, result)
    print(json.dumps(result["targets"], indent=1))
    return 0 if all(c.get("correct", False) for c in result["cases"]) else 1


def write(path: str, result: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
