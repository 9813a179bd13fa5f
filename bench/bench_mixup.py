"""Per-token mixup on CPU, forward + backward: mixsieve's fused kernels vs eager PyTorch, same inputs.

Inputs: xa int64 [B, T+1] random ids, xb = xa with rows rolled by one (in-batch pairing), right
padding (each row of a keeps between 3/4 and all of its T+1 tokens; b inherits its row's mask),
lam ~ Beta(0.4, 0.4) per token, union padding policy, ignore_index -100, no label smoothing.

  1. ``mix_embeddings(weight, xa, xb, lam, va, vb)`` then ``backward(g)`` to the [V, D] table, vs
     eager ``F.embedding`` twice + ``torch.lerp`` (and the ``lam*a + (1-lam)*b`` spelling) with the
     mask, in the table's dtype. Target: >= 2x the faster eager spelling.
  2. ``mixup_cross_entropy(logits, ...)`` then ``backward()`` to logits [B, T, V], vs the careful eager
     version (one log_softmax, two gathers, weighted masked mean; fp32 log_softmax for 16-bit logits)
     and, for information, two ``F.cross_entropy(reduction="none")`` calls combined by omega.
     Targets: >= 2.5x faster, <= 1/3 of eager's peak extra memory.
  3. ``mixup_linear_cross_entropy(hidden, weight, ...)`` then ``backward()`` to hidden and weight, vs
     (a) eager ``F.linear`` + the eager lambda-CE above (targets: time <= 1.1x eager, peak extra
     memory <= 1/8 of eager's) and (b) two ``F.linear_cross_entropy(reduction="none")`` calls with
     the chunked path (``options=LinearCrossEntropyOptions()``, resolved options printed) combined
     by omega (target: >= 2x faster).

Times: medians of --runs rounds after one warm-up, the variants interleaved in every round; ratio =
their median / ours. The process CPU seconds of the same calls are reported too (on a shared machine
wall time includes waiting for a core). Peak extra memory: one fresh subprocess per (op, dtype,
variant): build the inputs, one warm-up call, drop the gradients, reset the kernel's high-water mark
(``/proc/self/clear_refs`` <- 5), then extra = VmHWM after one forward+backward - VmRSS before it
(gradients and the loss count as extra; glibc is told to mmap and return every block >= 64 KiB, so
freed memory is not hidden in the heap). A calibration child checks the method on a 256 MiB
allocation; where clear_refs is not writable the memory columns say n/a. Before timing, ours is
checked against eager once (loss and every gradient; 16-bit rows against an fp32 eager reference,
allowed 2x the eager 16-bit error): a wrong result is reported as such, its targets as not met, and
the script exits 1 after writing the JSON.

Usage: python bench/bench_mixup.py [--batch 4 --seq 1024 --dim 1024 --vocab 32000]
       [--dtypes fp32,bf16] [--linear-dtypes fp32] [--ops embed,ce,linear] [--threads N] [--runs 5]
       [--no-memory] [--out bench/results/mixup.json] [--smoke]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import run_rounds, write_result  # noqa: E402
from mixup_eager import IGNORE, targets  # noqa: E402

try:
    import mixsieve as ms
    import mixsieve.mixup as mx
except ImportError as e:  # before the Python layer lands, the eager side still runs
    ms = mx = None
    MX_ERROR = f"{type(e).__name__}: {e}"
else:
    MX_ERROR = None

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
OURS = "mixsieve"
OPS = ("embed", "ce", "linear")


# ----------------------------------------------------------------------------------------------
# Inputs and the eager baselines (torch only)


def make_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = seq + 1
    xa = torch.randint(0, vocab, (batch, w), generator=g)
    lo = (3 * w) // 4
    lengths = torch.randint(lo, w + 1, (batch,), generator=g)
    va = torch.arange(w)[None, :] < lengths[:, None]
    xa = xa.masked_fill(~va, 0)  # pad id 0
    perm = (torch.arange(batch) + 1) % batch
    xb, vb = xa[perm].contiguous(), va[perm].contiguous()
    x = torch._standard_gamma(torch.full((2, batch, w), 0.4, dtype=torch.float64), generator=g)
    lam = (x[0] / (x[0] + x[1])).float().clamp_(0, 1)
    return {"xa": xa, "xb": xb, "lam": lam, "va": va, "vb": vb}


def eager_embed(weight, xa, xb, lam, va, vb, lerp: bool = True):
    lam_e = torch.where(va & vb, lam, va.to(lam.dtype))
    lin = lam_e[:, :-1, None].to(weight.dtype)
    mi = (va | vb)[:, :-1, None]
    ea, eb = F.embedding(xa[:, :-1], weight), F.embedding(xb[:, :-1], weight)
    h = torch.lerp(eb, ea, lin) if lerp else lin * ea + (1 - lin) * eb
    return h * mi


def eager_ce(z, xa, xb, lam, va, vb):
    """The careful eager lambda-CE: one log_softmax (fp32 for 16-bit logits), two gathers."""
    ya, yb, om, lm = targets(xa, xb, lam, va, vb)
    lp = z.log_softmax(-1, dtype=torch.float32 if z.element_size() < 4 else None)
    nll_a = -lp.gather(-1, ya.clamp_min(0)[..., None]).squeeze(-1)
    nll_b = -lp.gather(-1, yb.clamp_min(0)[..., None]).squeeze(-1)
    tok = om * nll_a + (1 - om) * nll_b
    return (tok * lm).sum() / lm.sum().clamp_min(1)


def eager_ce_twice(z, xa, xb, lam, va, vb):
    """Two F.cross_entropy(reduction="none") calls (two log_softmaxes) combined by omega."""
    ya, yb, om, lm = targets(xa, xb, lam, va, vb)
    zf = z.reshape(-1, z.shape[-1])
    la = F.cross_entropy(zf, ya.reshape(-1), reduction="none", ignore_index=IGNORE).view_as(om)
    lb = F.cross_entropy(zf, yb.reshape(-1), reduction="none", ignore_index=IGNORE).view_as(om)
    tok = om * la.float() + (1 - om) * lb.float()
    return (tok * lm).sum() / lm.sum().clamp_min(1)


def lce_options():
    cls = getattr(torch.nn, "LinearCrossEntropyOptions", None)
    return cls() if cls is not None else None


def lce_options_text(n: int, dim: int, vocab: int, dtype: torch.dtype) -> str:
    opts = lce_options()
    if not hasattr(F, "linear_cross_entropy"):
        return "n/a (torch.nn.functional.linear_cross_entropy missing)"
    if opts is None:
        return "reference path (no LinearCrossEntropyOptions in this torch)"
    try:
        return "chunked: " + repr(opts._adjust(n, dim, vocab, dtype, torch.device("cpu")))
    except Exception:  # private helper; fine if it moved
        return "chunked: " + repr(opts)


def torch_lce_twice(hidden, weight, xa, xb, lam, va, vb):
    ya, yb, om, lm = targets(xa, xb, lam, va, vb)
    h2 = hidden.reshape(-1, hidden.shape[-1])
    kw = {"reduction": "none", "ignore_index": IGNORE, "options": lce_options()}
    la = F.linear_cross_entropy(h2, weight, ya.reshape(-1), **kw).view_as(om)
    lb = F.linear_cross_entropy(h2, weight, yb.reshape(-1), **kw).view_as(om)
    tok = om * la.float() + (1 - om) * lb.float()
    return (tok * lm).sum() / lm.sum().clamp_min(1)


# ----------------------------------------------------------------------------------------------
# One benchmark case: leaves requiring grad + a forward function per variant


class Case:
    """Inputs of one (op, dtype) and a fwd+bwd callable per variant; grads stay on the leaves."""

    def __init__(self, op: str, dtype: torch.dtype, a: argparse.Namespace, with_ours: bool = True):
        self.op, self.dtype = op, dtype
        b = make_batch(a.batch, a.seq, a.vocab)
        self.batch = b
        g = torch.Generator().manual_seed(1)
        B, T, D, V = a.batch, a.seq, a.dim, a.vocab
        args = (b["xa"], b["xb"], b["lam"], b["va"], b["vb"])
        fwd: dict[str, Callable[[], torch.Tensor]] = {}
        if op == "embed":
            self.weight = torch.randn(V, D, generator=g).to(dtype).requires_grad_()
            self.grad_out = torch.randn(B, T, D, generator=g).to(dtype)
            self.leaves = [self.weight]
            if with_ours and mx is not None:
                fwd[OURS] = lambda: mx.mix_embeddings(self.weight, *args)
            fwd["eager_lerp"] = lambda: eager_embed(self.weight, *args, lerp=True)
            fwd["eager_arith"] = lambda: eager_embed(self.weight, *args, lerp=False)
        elif op == "ce":
            self.logits = (torch.randn(B, T, V, generator=g) * 2).to(dtype).requires_grad_()
            self.grad_out = None
            self.leaves = [self.logits]
            if with_ours and mx is not None:
                fwd[OURS] = lambda: mx.mixup_cross_entropy(self.logits, *args)
            fwd["eager"] = lambda: eager_ce(self.logits, *args)
            fwd["eager_ce_twice"] = lambda: eager_ce_twice(self.logits, *args)
        elif op == "linear":
            self.hidden = torch.randn(B, T, D, generator=g).to(dtype).requires_grad_()
            self.weight = (torch.randn(V, D, generator=g) * D**-0.5).to(dtype).requires_grad_()
            self.grad_out = None
            self.leaves = [self.hidden, self.weight]
            if with_ours and mx is not None:
                fwd[OURS] = lambda: mx.mixup_linear_cross_entropy(self.hidden, self.weight, *args)
            fwd["eager"] = lambda: eager_ce(F.linear(self.hidden, self.weight), *args)
            if hasattr(F, "linear_cross_entropy"):
                fwd["torch_lce_chunked_x2"] = lambda: torch_lce_twice(self.hidden, self.weight, *args)
        else:
            raise ValueError(op)
        self.fwd = fwd

    def zero(self) -> None:
        for t in self.leaves:
            t.grad = None

    def step(self, name: str) -> torch.Tensor:
        """Forward + backward of one variant from fresh (None) gradients; returns the detached output."""
        self.zero()
        out = self.fwd[name]()
        out.backward(self.grad_out)
        return out.detach()

    def runner(self, name: str, cpu_log: list[float]) -> Callable[[], None]:
        """fwd+bwd of one variant; also logs the process CPU seconds (all threads) it took."""

        def go() -> None:
            t0 = _cpu_seconds()
            self.step(name)
            cpu_log.append(_cpu_seconds() - t0)

        return go


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ----------------------------------------------------------------------------------------------
# Correctness, once per case, before timing


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double(), ref.double()
    return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def check(case: Case, a: argparse.Namespace) -> dict[str, Any]:
    """ours (and every peer) vs an fp32 eager reference on the same inputs: max-abs error relative
    to the reference's max-abs, for the output and every gradient. fp32 rows: error <= 1e-4.
    16-bit rows: ours <= max(2 x the eager 16-bit error, 4e-3)."""
    ref_case = case if case.dtype == torch.float32 else Case(case.op, torch.float32, a, with_ours=False)
    if ref_case is not case:  # same values, upcast
        for t, r in zip(case.leaves, ref_case.leaves):
            r.data.copy_(t.data.float())
        if case.grad_out is not None:
            ref_case.grad_out = case.grad_out.float()
    ref_name = "eager_lerp" if case.op == "embed" else "eager"
    ref_out = ref_case.step(ref_name)
    ref_grads = [t.grad.clone() for t in ref_case.leaves]
    errs: dict[str, float] = {}
    for name in case.fwd:
        if name == ref_name and ref_case is case:
            continue
        out = case.step(name)
        errs[name] = max(
            [rel_err(out, ref_out)] + [rel_err(t.grad, r) for t, r in zip(case.leaves, ref_grads)]
        )
    case.zero()
    ref_case.zero()
    if case.dtype == torch.float32:
        tol = 1e-4
    else:
        tol = max(2 * errs.get(ref_name, 0.0), 4e-3)
    res: dict[str, Any] = {"reference": f"{ref_name} fp32", "max_rel_err": errs, "tolerance": tol}
    res["ok"] = {n: e <= tol for n, e in errs.items()}
    return res


# ----------------------------------------------------------------------------------------------
# Peak extra memory in a fresh subprocess


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _reset_hwm() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def mem_child(spec: dict[str, Any]) -> None:
    torch.set_num_threads(spec["threads"])
    try:
        _reset_hwm()
    except OSError as e:
        print(json.dumps({"extra_mb": None, "error": f"/proc/self/clear_refs not writable: {e}"}))
        return
    if spec["op"] == "calibrate":
        base = _status_mb("VmRSS:")
        _reset_hwm()
        base = _status_mb("VmRSS:")
        x = torch.empty(64 * 2**20).fill_(1)  # 256 MiB
        del x
        print(json.dumps({"extra_mb": _status_mb("VmHWM:") - base, "baseline_mb": base}))
        return
    ns = argparse.Namespace(**spec["sizes"])
    case = Case(spec["op"], DTYPES[spec["dtype"]], ns)
    name = spec["variant"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case.step(name)  # warm-up: one-time library buffers are not the op's memory
        case.zero()
        _reset_hwm()
        base = _status_mb("VmRSS:")
        case.step(name)
    hwm = _status_mb("VmHWM:")
    print(json.dumps({"extra_mb": hwm - base, "baseline_mb": base, "hwm_mb": hwm}))


def measure_memory(op: str, dtype: str, variant: str, a: argparse.Namespace) -> dict[str, Any]:
    spec = {
        "op": op,
        "dtype": dtype,
        "variant": variant,
        "threads": a.threads,
        "sizes": {"batch": a.batch, "seq": a.seq, "dim": a.dim, "vocab": a.vocab},
    }
    env = dict(os.environ)
    # Every block >= 64 KiB is mmap'd and unmapped on free, and the heap is trimmed: freed memory
    # is returned to the OS, so RSS follows the live bytes.
    env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536", MALLOC_ARENA_MAX="2")
    proc = subprocess.run(
        [sys.executable, __file__, "--_mem-child", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        return {"extra_mb": None, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def target(name: str, value: float | None, op: str, threshold: float, correct: bool) -> dict[str, Any]:
    met = value is not None and correct and (value >= threshold if op == ">=" else value <= threshold)
    return {"target": name, "value": value, "need": f"{op} {threshold:g}", "met": met}


def run_case(op: str, dname: str, a: argparse.Namespace) -> dict[str, Any]:
    dtype = DTYPES[dname]
    print(f"\n[{op} {dname}] building inputs ...", file=sys.stderr)
    case = Case(op, dtype, a)
    res: dict[str, Any] = {"op": op, "dtype": dname, "variants": list(case.fwd)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if OURS in case.fwd:
            res["correctness"] = chk = check(case, a)
            print(f"  correctness: {chk}", file=sys.stderr)
        cpu: dict[str, list[float]] = {n: [] for n in case.fwd}
        med = run_rounds({n: case.runner(n, cpu[n]) for n in case.fwd}, a.runs, f"{op} {dname}")
    res["median_s"] = med
    # On a shared machine the wall time includes waiting for a core; CPU seconds do not (they do
    # include the spinning of idle worker threads). The warm-up call is left out.
    res["median_cpu_s"] = {n: statistics.median(c[1:] or c) for n, c in cpu.items()}
    mem: dict[str, Any] = {}
    if a.memory:
        for n in case.fwd:
            print(f"  peak memory of {n} (subprocess) ...", file=sys.stderr)
            mem[n] = measure_memory(op, dname, n, a)
    res["peak_extra"] = mem
    # The gradients every variant must return (also counted in peak extra): the floor of any variant.
    res["grad_outputs_mb"] = sum(t.numel() * t.element_size() for t in case.leaves) / 2**20
    del case
    gc.collect()
    if OURS not in med:
        return res
    ours, ok = med[OURS], all(res["correctness"]["ok"].values())
    res["correct"] = ok
    res["speedup"] = {n: t / ours for n, t in med.items() if n != OURS}
    cpu_ours = res["median_cpu_s"][OURS]
    res["speedup_cpu"] = {n: t / cpu_ours for n, t in res["median_cpu_s"].items() if n != OURS}
    mb = {n: m.get("extra_mb") for n, m in mem.items()}
    res["mem_ratio_ours_over"] = {
        n: (mb[OURS] / v if mb.get(OURS) is not None and v else None) for n, v in mb.items() if n != OURS
    }
    tg = []
    if op == "embed":
        best = min(med["eager_lerp"], med["eager_arith"])
        tg.append(target("speed vs faster eager spelling", best / ours, ">=", 2.0, ok))
    elif op == "ce":
        tg.append(target("speed vs careful eager", res["speedup"]["eager"], ">=", 2.5, ok))
        if a.memory:
            tg.append(
                target("peak extra mem / eager's", res["mem_ratio_ours_over"]["eager"], "<=", 1 / 3, ok)
            )
    elif op == "linear":
        tg.append(target("time / eager's", ours / med["eager"], "<=", 1.1, ok))
        if a.memory:
            tg.append(
                target("peak extra mem / eager's", res["mem_ratio_ours_over"]["eager"], "<=", 1 / 8, ok)
            )
        if "torch_lce_chunked_x2" in med:
            tg.append(
                target(
                    "speed vs 2x F.linear_cross_entropy",
                    res["speedup"]["torch_lce_chunked_x2"],
                    ">=",
                    2.0,
                    ok,
                )
            )
    res["targets"] = tg
    return res


def fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def report(results: list[dict[str, Any]]) -> None:
    print(
        "\nfwd+bwd, median wall seconds; speedup = their time / ours; cpu s = median process CPU"
        " seconds (cpu x = their / ours);\npeak MB = peak extra RSS (MiB, gradients included); mem ratio"
        " = ours / theirs; -grads MB = peak MB minus the gradient outputs"
    )
    hdr = f"  {'op':<7}{'dtype':<6}{'variant':<22}{'median s':>9}{'speedup x':>10}{'cpu s':>8}{'cpu x':>7}"
    hdr += f"{'peak MB':>9}{'mem ratio':>10}{'-grads MB':>10}  correct"
    print(hdr)
    for r in results:
        for n in r["variants"]:
            sp = "ours" if n == OURS else fmt(r.get("speedup", {}).get(n), "8.2f")
            cx = "ours" if n == OURS else fmt(r.get("speedup_cpu", {}).get(n), "6.2f")
            mb = r["peak_extra"].get(n, {}).get("extra_mb")
            mr = r.get("mem_ratio_ours_over", {}).get(n)
            mg = None if mb is None else mb - r["grad_outputs_mb"]
            ok = r.get("correctness", {}).get("ok", {}).get(n, "ref" if OURS in r["variants"] else "-")
            if n == OURS:
                ok = r.get("correct")
            print(
                f"  {r['op']:<7}{r['dtype']:<6}{n:<22}{r['median_s'][n]:9.3f}{sp:>10}"
                f"{r['median_cpu_s'][n]:8.2f}{cx:>7}"
                f"{fmt(mb, '9.0f'):>9}{fmt(mr, '10.3f'):>10}{fmt(mg, '10.0f'):>10}  {ok}"
            )
    print("\ntargets:")
    for r in results:
        for t in r.get("targets", []):
            print(
                f"  {r['op']:<7}{r['dtype']:<6}{t['target']:<40}{fmt(t['value'], '.3f'):>8} "
                f"(need {t['need']}): {'MET' if t['met'] else 'not met'}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=1024, help="T: positions per row (windows are T+1)")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--dtypes", default="fp32,bf16", help="dtypes of the embedding and CE rows")
    ap.add_argument("--linear-dtypes", default="fp32", help="dtypes of the linear+CE rows (bf16 mm is slow)")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-memory", dest="memory", action="store_false", help="skip the memory subprocesses")
    ap.add_argument("--out", default="bench/results/mixup.json")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    ap.add_argument("--_mem-child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._mem_child is not None:
        mem_child(json.loads(a._mem_child))
        return
    if a.smoke:
        a.batch, a.seq, a.dim, a.vocab, a.runs = 2, 16, 32, 128, 1
    torch.set_num_threads(a.threads)
    ops = [o for o in a.ops.split(",") if o]
    print(f"torch {torch.__version__}, CPU {cpu_model()}, {a.threads} threads of {os.cpu_count()} cores")
    if mx is None:
        print(f"mixsieve.mixup unavailable ({MX_ERROR}): eager side only")
    n = a.batch * a.seq
    print(f"B={a.batch} T={a.seq} (B*T={n}) D={a.dim} V={a.vocab}, runs={a.runs}")
    lce = lce_options_text(n, a.dim, a.vocab, torch.float32)
    if "linear" in ops:
        print(f"F.linear_cross_entropy: {lce}")
    calib = measure_memory("calibrate", "fp32", "", a) if a.memory else None
    if calib is not None:
        print(f"memory method check: 256 MiB allocation measured as {fmt(calib.get('extra_mb'), '.0f')} MiB")
    results = []
    for op in ops:
        for d in (a.linear_dtypes if op == "linear" else a.dtypes).split(","):
            results.append(run_case(op, d, a))
    report(results)
    correct = all(r.get("correct", True) for r in results)
    out = {
        "benchmark": "mixup",
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": a.threads,
        "mixsieve": getattr(ms, "__version__", None),
        "ours_available": mx is not None,
        "sizes": {"batch": a.batch, "seq": a.seq, "tokens": n, "dim": a.dim, "vocab": a.vocab},
        "runs": a.runs,
        "torch_linear_cross_entropy": lce,
        "memory_method": "VmHWM - VmRSS after clear_refs=5, fresh subprocess per variant",
        "memory_calibration_256mib": calib,
        "results": results,
        "all_correct": correct,
    }
    write_result(a.out, out)
    if not correct:
        print("\nWRONG RESULTS: see 'correctness' above; targets not met", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
