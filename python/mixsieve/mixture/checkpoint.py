"""The MixtureDataset checkpoint: its JSON format, its validation, and global states from the
per-worker states a ``torchdata`` ``StatefulDataLoader`` collects.

A state dict is ``{"version": 2, "config": ..., "state": ..., "changes": [...], "sources": ...}``
plus ``"mixer"`` (a weights controller's state) and, inside a DataLoader worker, ``"worker"`` (its
slot, the number of slots, where its dealing started, and how many samples it yielded).
``state`` is the schedule's state (``_core.MixPlan.state()`` without its changes); ``changes``
are the weight changes recorded at positions from ``state["position"]`` on. docs/mixing.md
describes every field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._checks import check_bool, check_float_list, check_int, check_int_list, check_list, describe

STATE_VERSION = 2
_MAX = 2**62  # positions and counts stay below this
WORKER_KEYS = ("slot", "period", "ranks", "base", "yielded", "block", "batch")


def _where(path: str, key: str) -> str:
    return f"{path}[{key!r}]"


def _need(d: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in d:
        raise ValueError(f"corrupt MixtureDataset state: {path} has no {key!r}")
    return d[key]


def validate_header(state: Any) -> Mapping[str, Any]:
    """The state dict's format version and configuration (checked before its contents)."""
    if not isinstance(state, Mapping) or "config" not in state or "state" not in state:
        raise ValueError("not a MixtureDataset state dict (missing 'config'/'state')")
    version = state.get("version")
    if version != STATE_VERSION or isinstance(version, bool):
        raise ValueError(
            f"MixtureDataset state version {version!r} is not one this mixsieve reads ({STATE_VERSION}); "
            "it comes from another release, or the checkpoint is corrupt"
        )
    if not isinstance(state["config"], Mapping):
        raise TypeError(f"state['config'] must be a dict, got {describe(state['config'])}")
    return state


def validate(state: Any, k: int) -> dict[str, Any]:
    """Checks the types, lengths and ranges of a state dict; a clear error names the bad field."""
    validate_header(state)
    st = state["state"]
    if not isinstance(st, Mapping):
        raise TypeError(f"state['state'] must be a dict, got {describe(st)}")
    p = "state['state']"
    out: dict[str, Any] = {
        "position": check_int(_where(p, "position"), _need(st, "position", p), 0, _MAX),
        "segment_start": check_int(_where(p, "segment_start"), _need(st, "segment_start", p), 0, _MAX),
        "weights": check_float_list(_where(p, "weights"), _need(st, "weights", p), k),
        "counts": check_int_list(_where(p, "counts"), _need(st, "counts", p), k, 0, _MAX),
        "segment_counts": check_int_list(
            _where(p, "segment_counts"), _need(st, "segment_counts", p), k, 0, _MAX
        ),
        "carry": check_float_list(_where(p, "carry"), _need(st, "carry", p), k),
        "policy": check_float_list(_where(p, "policy"), _need(st, "policy", p), k),
        "dropped": check_int_list(_where(p, "dropped"), _need(st, "dropped", p), None, 0, _MAX),
        "lengths": check_int_list(_where(p, "lengths"), _need(st, "lengths", p), k, -1, _MAX),
        "ended": check_bool(_where(p, "ended"), _need(st, "ended", p)),
    }
    # token counts and where sources left: absent from states saved before they existed
    for key, lo in (("tokens", 0), ("segment_tokens", 0), ("left", -1)):
        if key in st:
            out[key] = check_int_list(_where(p, key), st[key], k, lo, _MAX)
    bad = [d for d in out["dropped"] if d >= k]
    if bad:
        raise ValueError(f"{_where(p, 'dropped')} names source {bad[0]}, but there are {k} sources")
    result = dict(state)
    result["state"] = out
    result["changes"] = validate_changes(state.get("changes", []), k, out["position"])
    if "worker" in state:
        w = state["worker"]
        if not isinstance(w, Mapping):
            raise TypeError(f"state['worker'] must be a dict, got {describe(w)}")
        worker = {
            key: check_int(_where("state['worker']", key), _need(w, key, "state['worker']"), 0)
            for key in WORKER_KEYS
        }
        if not (1 <= worker["ranks"] <= worker["period"] and worker["period"] % worker["ranks"] == 0):
            raise ValueError(f"state['worker'] has period {worker['period']} for {worker['ranks']} ranks")
        if worker["slot"] >= worker["period"]:
            raise ValueError(f"state['worker'] has slot {worker['slot']} of {worker['period']}")
        result["worker"] = worker
    return result


def validate_changes(changes: Any, k: int, position: int) -> list[tuple[int, list[float]]]:
    out = []
    for i, c in enumerate(check_list("state['changes']", changes)):
        pair = check_list(f"state['changes'][{i}]", c, 2)
        pos = check_int(f"state['changes'][{i}][0]", pair[0], position, _MAX)
        out.append((pos, check_float_list(f"state['changes'][{i}][1]", pair[1], k)))
    return out


def check_config(saved: Mapping[str, Any], mine: Mapping[str, Any], ignore: tuple[str, ...]) -> None:
    keys = list(mine) + [key for key in saved if key not in mine]  # a key either side may lack
    diffs = [
        f"{key}: state has {saved.get(key)!r}, dataset has {mine.get(key)!r}"
        for key in keys
        if key not in ignore and saved.get(key) != mine.get(key)
    ]
    if diffs:
        raise ValueError("state dict is from a different MixtureDataset configuration; " + "; ".join(diffs))


def loader_worker_states(loader_state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The dataset states inside a StatefulDataLoader state (one per worker, or the main one)."""
    snap = loader_state.get("_snapshot", {})
    if not isinstance(snap, Mapping):
        raise TypeError(f"the StatefulDataLoader state's '_snapshot' must be a dict, got {describe(snap)}")
    workers = snap.get("_worker_snapshots") or {}
    if not isinstance(workers, Mapping):
        raise TypeError(f"'_worker_snapshots' must be a dict, got {describe(workers)}")
    states = [
        ws["dataset_state"]
        for ws in workers.values()
        if isinstance(ws, Mapping) and ws.get("dataset_state") is not None
    ]
    if not states:
        main = snap.get("_main_snapshot", {})
        ds_state = main.get("dataset_state") if isinstance(main, Mapping) else None
        if ds_state is None:
            raise ValueError("the StatefulDataLoader state holds no MixtureDataset state")
        states.append(ds_state)
    return states


def consumed_prefix(workers: list[Mapping[str, Any]]) -> int | None:
    """Positions of this rank consumed, if the workers' samples are the first ones of the rank's
    share of the stream (a prefix of it); None if they are not (the DataLoader's batch size
    differs from the dataset's ``batch_size``, so workers' batches interleave)."""
    if not workers:
        return 0
    ranks: int = workers[0]["ranks"]
    period = workers[0]["period"]
    block = max(w["block"] for w in workers) or 1  # 0: a worker that had not started dealing
    nw = period // ranks
    total: int = sum(w["yielded"] for w in workers)
    full, rest = divmod(total, block)  # the rank's blocks: block q belongs to worker q % nw
    for w in workers:
        wid = w["slot"] // ranks
        expect = block * (full // nw + (1 if wid < full % nw else 0)) + (rest if full % nw == wid else 0)
        if w["yielded"] != expect:
            return None
    if ranks > 1 and rest:
        return None  # lock-step ranks each hold part of a block: not a global prefix
    return total
