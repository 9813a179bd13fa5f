"""Helpers the bench scripts share: interleaved timing rounds with medians, and the JSON result."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable


def run_rounds(
    methods: dict[str, Callable[[], Any]], runs: int, label: str, warmup: bool = True
) -> dict[str, float]:
    """Median seconds of each method over `runs` rounds; every round runs each method once, so
    drift on a shared machine hits all of them alike. Progress goes to stderr."""
    for fn in methods.values() if warmup else ():
        fn()
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(runs):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        print(
            f"  {label} round {r + 1}/{runs}: " + ", ".join(f"{m} {t[-1]:.3f}s" for m, t in times.items()),
            file=sys.stderr,
        )
    return {m: statistics.median(t) for m, t in times.items()}


def write_result(path: str, result: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {path}")
