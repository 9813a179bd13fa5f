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
MAX_POSITIONS = 10_000_000_000  # a plan runs at tens of millions of positions a second


class ConfigError(ValueError):
    """A mixture file that does not follow the schema; the message names the key and the line."""


def _line_of(text: str, table: str | None, key: str | None, index: int = 0) -> int | None:
    """The line (1-based) of ``key`` inside ``[table]`` (the ``index``-th ``[[table]]`` for an
    array of tables), or of the table's header; ``key = ...`` and ``table.key = ...`` forms."""
    current: str | None = None
    seen = -1
    header_line = None
    parts = table.split(".") if table else []
    for i, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith(("'", '"')) else raw.strip()
        if line.startswith("["):
            current = line.strip("[]").strip().replace('"', "").replace("'", "")
            if current == table:
                seen += 1
                if seen == index and header_line is None:
                    header_line = i
            continue
        if "=" not in line or key is None:
            continue
        name = line.split("=", 1)[0].strip().replace('"', "").replace("'", "")
        here = current == table and seen == index
        if (here and name == key) or (current is None and name == ".".join([*parts, key])):
            return i
        if current is not None and table and name == ".".join([*parts[len(current.split(".")) :], key]):
            if table.startswith(current + "."):
                return i
    return header_line


class _Reader:
    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text

    def fail(self, table: str | None, key: str | None, why: str, index: int = 0) -> ConfigError:
        where = f"[{table}]" if table else "top level"
        if table == "schedule":
            where = f"[[schedule]] entry {index}"
        if key:
            where += f" {key}"
        line = _line_of(self.text, table, key, index)
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
    if not isinstance(mix, Mapping):
        raise r.fail(None, "mixture", "must be a table: [mixture]")
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
    if out["plot"] is not None and not isinstance(out["plot"], str):
        raise r.fail("mixture", "plot", f"must be a file name (a string), got {out['plot']!r}")
    if not isinstance(out["shuffle"], bool):
        raise r.fail("mixture", "shuffle", f"must be true or false, got {out['shuffle']!r}")
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
            if s["tokens"] // s["documents"] >= 2**31 - 1:
                raise r.fail(table, "tokens", "more than 2**31 tokens per document on average")
        elif unit == "tokens":
            raise r.fail(table, None, 'unit = "tokens" needs tokens = N for every source')
        for key, integer in (("weight", False), ("max_epochs", False)):
            if key in spec:
                s[key] = r.number(table, spec, key, integer=integer, positive=key == "max_epochs")
        srcs[name] = s
    out["sources"] = srcs
    policy = doc.get("policy")
    if policy is not None:
        if not isinstance(policy, Mapping):
            raise r.fail(None, "policy", "must be a table: [policy]")
        given = [n for n, s_ in srcs.items() if "weight" in s_]
        if given:
            raise r.fail(
                f"sources.{given[0]}",
                "weight",
                "a [policy] sets the weights: drop weight here or the [policy]",
            )
        for key in set(policy) - _POLICY_KEYS:
            raise r.fail("policy", key, f"unknown key (expected one of {sorted(_POLICY_KEYS)})")
        kind = policy.get("kind")
        if kind not in ("temperature", "unimax"):
            raise r.fail("policy", "kind", f'must be "temperature" or "unimax", got {kind!r}')
        other = "max_epochs" if kind == "temperature" else "tau"
        if other in policy:
            raise r.fail("policy", other, f'is not a setting of kind = "{kind}"')
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
    schedule: list[tuple[int, dict[str, float]]] = []
    points = doc.get("schedule", [])
    if not isinstance(points, list):
        raise r.fail(None, "schedule", "must be an array of tables: [[schedule]] entries")
    for i, point in enumerate(points):
        if not isinstance(point, Mapping) or "position" not in point or "weights" not in point:
            raise r.fail("schedule", None, "needs position = P and weights = {name = w, ...}", i)
        for key in set(point) - {"position", "weights"}:
            raise r.fail("schedule", key, "unknown key (expected position, weights)", i)
        pos = point["position"]
        if isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos < 2**62:
            raise r.fail("schedule", "position", f"must be an integer in [0, 2**62), got {pos!r}", i)
        if schedule and pos <= schedule[-1][0]:
            raise r.fail(
                "schedule", "position", f"must be after the entry before ({schedule[-1][0]}), got {pos}", i
            )
        w = point["weights"]
        if not isinstance(w, Mapping):
            raise r.fail("schedule", "weights", f"must be a table {{name = w, ...}}, got {w!r}", i)
        bad = [n for n in w if n not in srcs]
        if bad:
            raise r.fail("schedule", "weights", f"names unknown sources {bad}", i)
        for n, v in w.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise r.fail("schedule", "weights", f"weight of {n!r} must be a number >= 0, got {v!r}", i)
        if not any(float(v) > 0 for v in w.values()):
            raise r.fail("schedule", "weights", "at least one weight must be > 0", i)
        schedule.append((pos, {n: float(w.get(n, 0.0)) for n in srcs}))
    out["schedule"] = schedule
    if policy is None and not any(s_["weight"] > 0 for s_ in srcs.values()):
        raise r.fail(f"sources.{next(iter(srcs))}", "weight", "at least one source needs a weight > 0")
    out["_path"] = path
    out["_text"] = text
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
        try:
            base = wts.unimax(size, budget=cfg["budget"], max_epochs=policy["max_epochs"])
        except ValueError as e:
            path = cfg.get("_path", "the plan file")
            line = _line_of(cfg.get("_text", ""), "mixture", "budget")
            raise ConfigError(f"{path}:{line}: [mixture] budget: {e}" if line else f"{path}: {e}") from e
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
    if n_pos > MAX_POSITIONS:
        path = cfg.get("_path", "the plan file")
        line = _line_of(cfg.get("_text", ""), "mixture", "budget")
        raise ConfigError(
            f"{path}:{line}: [mixture] budget: needs {n_pos:,} positions, more than a plan runs "
            f"({MAX_POSITIONS:,}): plan a fraction of the budget and scale the shares"
        )
    window = cfg["window"] or max(1, n_pos // 100)
    return ds, n_pos, window


def main(path: str, plot: str | None = None, window: int | None = None) -> int:
    cfg = load(path)
    if window is not None:
        cfg["window"] = window
    try:
        ds, n, win = build(cfg)
        plan = ds.simulate(n, window=win)
        for _ in range(6):  # the first estimate assumed the first weights: rescale to the budget
            if cfg["unit"] != "tokens" or plan.tokens is None:
                break
            got = int(plan.tokens.sum())
            if (
                not got
                or abs(got - cfg["budget"]) <= 0.001 * cfg["budget"]
                or (got < cfg["budget"] and plan.events_end())
            ):
                break
            n = max(1, int(math.ceil(n * cfg["budget"] / got)))
            if n > MAX_POSITIONS:
                break
            ds, _, _ = build(cfg)
            plan = ds.simulate(n, window=cfg["window"] or max(1, n // 100))
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path}: {e}") from e
    print(plan.summary())
    unit = cfg["unit"]
    got = int(plan.tokens.sum()) if unit == "tokens" and plan.tokens is not None else plan.generated
    print(f"{unit} planned: {got:,} of a budget of {cfg['budget']:,}")
    if plan.events_end() and got < cfg["budget"]:
        end = next(e["position"] for e in plan.events if e["event"] == "ended")
        print(
            f"warning: the stream ends at position {end:,}, before the budget: every source left "
            "(caps) or ran out; raise max_epochs or add data",
            file=sys.stderr,
        )
    out = plot or cfg["plot"] or os.path.splitext(path)[0] + ".png"
    try:
        plan.plot(out)
        print(f"plot: {out}")
    except ImportError as e:
        print(f"no plot: {e}", file=sys.stderr)
    return 0
