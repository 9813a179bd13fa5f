"""``mixsieve plan mixture.toml``: plan a mixture before any data exists.

The file names the sources by their sizes (documents, and tokens for a token budget), the
weights (per source, or a policy: temperature or UniMax), a budget, caps and a schedule. The plan
runs the exact schedule ``MixtureDataset`` would run (``simulate``) over stand-in sources of
those sizes, prints the summary (shares, epochs, when each source runs out) and writes the plot.

Example (``examples/mixture.toml`` has a longer one)::

    [mixture]
    unit = "tokens"            # the budget and the weights are in tokens ("samples": documents)
    budget = 2_000_000_000
    plot = "mixture.png"

    [policy]                   # optional: weights from a policy instead of per-source weight
    kind = "unimax"            # "temperature" (tau = ...) or "unimax" (max_epochs = ...)
    max_epochs = 4

    [sources.web]
    documents = 3_000_000
    tokens = 2_400_000_000

    [sources.code]
    documents = 400_000
    tokens = 300_000_000
    max_epochs = 2             # a cap of its own

    [[schedule]]               # optional: weights from a position on (positions are documents)
    position = 1_000_000
    weights = { web = 0.7, code = 0.3 }
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

_MIXTURE_KEYS = {"unit", "budget", "window", "seed", "mode", "on_exhausted", "plot", "shuffle"}
_SOURCE_KEYS = {"documents", "tokens", "weight", "max_epochs"}
_POLICY_KEYS = {"kind", "tau", "max_epochs"}
MAX_DOCUMENTS = 200_000_000  # per source: a stand-in holds 4 bytes per document in token mode


class ConfigError(ValueError):
    """A mixture file that does not follow the schema; the message names the key and the line."""


def _line_of(text: str, table: str | None, key: str | None) -> int | None:
    """The line (1-based) of ``key`` inside ``[table]`` (or of the table's header)."""
    current: str | None = None
    header_line = None
    for i, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("["):
            current = line.strip("[]").strip()
            if current == table and header_line is None:
                header_line = i
            continue
        if current == table and key is not None:
            name = line.split("=", 1)[0].strip().strip('"')
            if "=" in line and name == key:
                return i
    return header_line


class _Reader:
    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text

    def fail(self, table: str | None, key: str | None, why: str) -> ConfigError:
        where = f"[{table}]" if table else "top level"
        if key:
            where += f" {key}"
        line = _line_of(self.text, table, key)
        at = f"{self.path}:{line}" if line else self.path
        return ConfigError(f"{at}: {where}: {why}")

    def number(self, table: str, d: Mapping[str, Any], key: str, *, integer: bool, positive: bool) -> Any:
        v = d[key]
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok:
            kind = "an integer" if integer else "a number"
            raise self.fail(table, key, f"must be {kind}, got {v!r}")
        if not math.isfinite(v) or v < 0 or (positive and v == 0):
            raise self.fail(table, key, f"must be {'> 0' if positive else '>= 0'}, got {v!r}")
        return v


def load(path: str) -> dict[str, Any]:
    """Reads and checks a mixture file; ``ConfigError`` names the key and the line."""
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python < 3.11
        try:
            import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
        except ImportError as e:
            raise ImportError("reading TOML on Python < 3.11 needs tomli: pip install tomli") from e
    with open(path, "rb") as fh:
        raw = fh.read()
    text = raw.decode("utf-8", "replace")
    r = _Reader(path, text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    unknown = set(doc) - {"mixture", "sources", "policy", "schedule"}
    if unknown:
        raise r.fail(sorted(unknown)[0], None, "unknown table (expected mixture, sources, policy, schedule)")
    mix = doc.get("mixture", {})
    for key in set(mix) - _MIXTURE_KEYS:
        raise r.fail("mixture", key, f"unknown key (expected one of {sorted(_MIXTURE_KEYS)})")
    unit = mix.get("unit", "samples")
    if unit not in ("samples", "tokens"):
        raise r.fail("mixture", "unit", f'must be "samples" or "tokens", got {unit!r}')
    if "budget" not in mix:
        raise r.fail("mixture", None, "needs budget = <samples or tokens to plan for>")
    out: dict[str, Any] = {
        "unit": unit,
        "budget": r.number("mixture", mix, "budget", integer=True, positive=True),
        "seed": r.number("mixture", mix, "seed", integer=True, positive=False) if "seed" in mix else 0,
        "mode": mix.get("mode", "exact"),
        "on_exhausted": mix.get("on_exhausted", "cycle"),
        "shuffle": mix.get("shuffle", True),
        "plot": mix.get("plot"),
        "window": r.number("mixture", mix, "window", integer=True, positive=True)
        if "window" in mix
        else None,
    }
    if out["mode"] not in ("exact", "random"):
        raise r.fail("mixture", "mode", f'must be "exact" or "random", got {out["mode"]!r}')
    if out["on_exhausted"] not in ("cycle", "stop", "drop"):
        raise r.fail(
            "mixture", "on_exhausted", f'must be "cycle", "stop" or "drop", got {out["on_exhausted"]!r}'
        )
    sources = doc.get("sources")
    if not isinstance(sources, Mapping) or not sources:
        raise r.fail(None, None, "needs at least one [sources.NAME] table with documents = N")
    srcs: dict[str, dict[str, Any]] = {}
    for name, spec in sources.items():
        table = f"sources.{name}"
        if not isinstance(spec, Mapping):
            raise r.fail(table, None, "must be a table")
        for key in set(spec) - _SOURCE_KEYS:
            raise r.fail(table, key, f"unknown key (expected one of {sorted(_SOURCE_KEYS)})")
        if "documents" not in spec:
            raise r.fail(table, None, "needs documents = N")
        s = {"documents": r.number(table, spec, "documents", integer=True, positive=True)}
        if s["documents"] > MAX_DOCUMENTS:
            raise r.fail(table, "documents", f"at most {MAX_DOCUMENTS:,} per source in a plan")
        if "tokens" in spec:
            s["tokens"] = r.number(table, spec, "tokens", integer=True, positive=True)
            if s["tokens"] < s["documents"]:
                raise r.fail(table, "tokens", "must be at least documents (one token per document)")
        elif unit == "tokens":
            raise r.fail(table, None, 'unit = "tokens" needs tokens = N for every source')
        for key, integer in (("weight", False), ("max_epochs", False)):
            if key in spec:
                s[key] = r.number(table, spec, key, integer=integer, positive=key == "max_epochs")
        srcs[name] = s
    out["sources"] = srcs
    policy = doc.get("policy")
    if policy is not None:
        for key in set(policy) - _POLICY_KEYS:
            raise r.fail("policy", key, f"unknown key (expected one of {sorted(_POLICY_KEYS)})")
        kind = policy.get("kind")
        if kind not in ("temperature", "unimax"):
            raise r.fail("policy", "kind", f'must be "temperature" or "unimax", got {kind!r}')
        p: dict[str, Any] = {"kind": kind}
        if kind == "temperature":
            p["tau"] = (
                r.number("policy", policy, "tau", integer=False, positive=True) if "tau" in policy else 1.0
            )
        else:
            p["max_epochs"] = (
                r.number("policy", policy, "max_epochs", integer=False, positive=True)
                if "max_epochs" in policy
                else 4.0
            )
        out["policy"] = p
    elif not all("weight" in s for s in srcs.values()):
        missing = next(n for n, s in srcs.items() if "weight" not in s)
        raise r.fail(f"sources.{missing}", None, "needs weight = W (or give a [policy] table)")
    schedule = []
    for i, point in enumerate(doc.get("schedule", [])):
        if not isinstance(point, Mapping) or "position" not in point or "weights" not in point:
            raise r.fail("schedule", None, f"entry {i} needs position = P and weights = {{name = w, ...}}")
        pos = point["position"]
        if isinstance(pos, bool) or not isinstance(pos, int) or pos < 0:
            raise r.fail("schedule", "position", f"entry {i}: must be an integer >= 0, got {pos!r}")
        w = point["weights"]
        bad = [n for n in w if n not in srcs]
        if bad:
            raise r.fail("schedule", "weights", f"entry {i} names unknown sources {bad}")
        schedule.append((pos, {n: float(w.get(n, 0.0)) for n in srcs}))
    out["schedule"] = schedule
    return out


def build(cfg: Mapping[str, Any]) -> tuple[Any, int, int]:
    """(a MixtureDataset over stand-in sources of the configured sizes, positions to simulate,
    window)."""
    from . import weights as wts
    from .mixture import MixtureDataset

    names = list(cfg["sources"])
    srcs = cfg["sources"]
    unit = cfg["unit"]
    size = {n: srcs[n]["tokens"] if unit == "tokens" else srcs[n]["documents"] for n in names}
    caps = {n: s["max_epochs"] for n, s in srcs.items() if "max_epochs" in s}
    policy = cfg.get("policy")
    if policy is None:
        base = {n: srcs[n]["weight"] for n in names}
    elif policy["kind"] == "temperature":
        base = wts.temperature(size, tau=policy["tau"])
    else:
        base = wts.unimax(size, budget=cfg["budget"], max_epochs=policy["max_epochs"])
        for n in names:
            caps.setdefault(n, policy["max_epochs"])
    weights: Any = base
    if cfg["schedule"]:
        points = [(0, base)] if cfg["schedule"][0][0] > 0 else []
        weights = wts.schedule(points + [(p, w) for p, w in cfg["schedule"]])
    lengths = None
    if unit == "tokens":
        lengths = {}
        for n in names:  # each document gets the mean length; the remainder goes to the first ones
            docs, toks = srcs[n]["documents"], srcs[n]["tokens"]
            arr = np.full(docs, toks // docs, np.int32)
            arr[: toks % docs] += 1
            lengths[n] = arr
    ds = MixtureDataset(
        {n: range(srcs[n]["documents"]) for n in names},
        weights=weights,
        seed=cfg["seed"],
        mode=cfg["mode"],
        shuffle=cfg["shuffle"],
        on_exhausted=cfg["on_exhausted"],
        unit=unit,
        lengths=lengths,
        max_epochs=caps or None,
    )
    if unit == "tokens":  # positions that hold the budget: tokens per item is 1 / sum(w_d / mean_d)
        w = np.array([float(base[n]) for n in names])
        w = w / w.sum()
        means = np.array([srcs[n]["tokens"] / srcs[n]["documents"] for n in names])
        n_pos = int(math.ceil(cfg["budget"] * float((w / means).sum())))
    else:
        n_pos = int(cfg["budget"])
    window = cfg["window"] or max(1, n_pos // 100)
    return ds, n_pos, window


def main(path: str, plot: str | None = None, window: int | None = None) -> int:
    cfg = load(path)
    if window is not None:
        cfg["window"] = window
    ds, n, win = build(cfg)
    plan = ds.simulate(n, window=win)
    if cfg["unit"] == "tokens" and plan.tokens is not None and not plan.events_end():
        # the estimate of positions assumed the first weights: scale it by what the run served
        got = int(plan.tokens.sum())
        if got and abs(got - cfg["budget"]) > 0.001 * cfg["budget"]:
            n = int(math.ceil(n * cfg["budget"] / got))
            ds, _, _ = build(cfg)
            plan = ds.simulate(n, window=cfg["window"] or max(1, n // 100))
    print(plan.summary())
    if cfg["unit"] == "tokens" and plan.tokens is not None:
        print(f"tokens planned: {int(plan.tokens.sum()):,} of a budget of {cfg['budget']:,}")
    out = plot or cfg["plot"] or os.path.splitext(path)[0] + ".png"
    try:
        plan.plot(out)
        print(f"plot: {out}")
    except ImportError as e:
        print(f"no plot: {e}", file=sys.stderr)
    return 0
