"""A dry run of a mixture's stream: what :meth:`MixtureDataset.simulate` returns.

The run uses the schedule the dataset iterates with (weights, schedules, recorded changes,
caps, exhaustion, token lengths), advanced position by position in C++, and reads no data; so
its per-window counts are exactly what iterating the dataset serves at those positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_KINDS = {0: "weights", 2: "dropped", 3: "capped", 4: "ended"}


class MixturePlan:
    """Per window of positions, what a mixture serves and what it aims at.

    Attributes
    ----------
    names : list of str
        The sources, in column order.
    start, window : int
        The first global position simulated and the positions per window (the last window
        may be shorter: ``window_sizes``).
    counts : int array [windows, sources]
        Samples of each source in each window.
    tokens : int array [windows, sources] or None
        Tokens of each source in each window (``unit="tokens"``; None in sample mode).
    targets : float array [windows, sources]
        The weights in force, averaged over the window's positions (normalised; a source that
        left has weight 0).
    events : list of dict
        In position order: ``{"position", "event": "weights", "weights": {...}}`` (a recorded
        change or a schedule point), ``{"position", "event": "cycled", "source", "epoch"}`` (the
        source finished its ``epoch``-th pass with the item at that position), ``{"position",
        "event": "capped" | "dropped", "source"}`` (it left: ``max_epochs``, or it ran out with
        ``on_exhausted="drop"``), ``{"position", "event": "ended", "source"}``.
    epochs : dict name -> float or None
        Passes over each source at the end (items served / items per epoch; None for an
        iterable whose length is not known).
    """

    def __init__(
        self,
        names: Sequence[str],
        start: int,
        window: int,
        raw: dict[str, Any],
        sizes: Sequence[int | None],
        counts_before: Sequence[int],
        token_mode: bool,
    ) -> None:
        self.names = list(names)
        self.start = int(start)
        self.window = int(window)
        self.generated = int(raw["generated"])
        used = max(1, -(-self.generated // self.window)) if self.generated else 0
        self.window_sizes: np.ndarray = raw["window_sizes"][:used]
        self.counts: np.ndarray = raw["counts"][:used]
        self.tokens: np.ndarray | None = raw["tokens"][:used] if token_mode else None
        sizes_f = np.maximum(self.window_sizes, 1).astype(np.float64)[:, None]
        self.targets: np.ndarray = raw["weight_sums"][:used] / sizes_f
        events: list[dict[str, Any]] = []
        for pos, kind, source, weights in raw["events"]:
            name = self.names[source] if source >= 0 else None
            if kind == 0:
                events.append(
                    {"position": pos, "event": "weights", "weights": dict(zip(self.names, weights))}
                )
            else:
                events.append({"position": pos, "event": _KINDS[kind], "source": name})
        for pos, source, epoch in raw["epoch_events"].tolist():
            events.append({"position": pos, "event": "cycled", "source": self.names[source], "epoch": epoch})
        order = {"weights": 0, "cycled": 1, "capped": 2, "dropped": 2, "ended": 3}
        self.events = sorted(events, key=lambda e: (e["position"], order[e["event"]]))
        self._sizes = list(sizes)
        self._before = np.asarray(counts_before, np.int64)
        total = self._before + self.counts.sum(axis=0)
        self.epochs: dict[str, float | None] = {
            n: (float(total[d]) / size if size else None)
            for d, (n, size) in enumerate(zip(self.names, sizes))
        }

    # ---- reading it ------------------------------------------------------------------------

    def events_end(self) -> bool:
        """Whether the stream ended inside the run (every source left, or one ran out with
        ``on_exhausted="stop"``)."""
        return any(e["event"] == "ended" for e in self.events)

    def shares(self, unit: str = "samples") -> np.ndarray:
        """Realised shares per window ([windows, sources]) of samples, or of tokens."""
        if unit not in ("samples", "tokens"):
            raise ValueError(f'unit must be "samples" or "tokens", got {unit!r}')
        m = self.counts if unit == "samples" else self.tokens
        if m is None:
            raise ValueError('token shares need a MixtureDataset with unit="tokens"')
        tot = m.sum(axis=1, keepdims=True)
        out: np.ndarray = np.divide(m, tot, out=np.zeros(m.shape), where=tot > 0)
        return out

    def summary(self) -> str:
        """A text table per source: target and realised share over the whole run, epochs at the
        end, and when the source cycled, left or ended the stream."""
        n = max(self.generated, 1)
        # the target over the run: each window's weights, weighted by what it served (positions,
        # or tokens in token mode, where the weights are shares of tokens)
        served = self.window_sizes if self.tokens is None else self.tokens.sum(axis=1)
        target = (self.targets * served[:, None]).sum(axis=0) / max(int(served.sum()), 1)
        realised = self.counts.sum(axis=0) / n
        head = ["source", "target", "samples"]
        tok_share = None
        if self.tokens is not None:
            t = self.tokens.sum(axis=0)
            tok_share = t / max(int(t.sum()), 1)
            head.append("tokens")
        head += ["epochs", "events"]
        rows = []
        for d, name in enumerate(self.names):
            cycles = [e for e in self.events if e.get("source") == name and e["event"] == "cycled"]
            other = [e for e in self.events if e.get("source") == name and e["event"] != "cycled"]
            notes = []
            if cycles:
                ep_done = int(self.epochs[name] or 0)
                done = f"{ep_done} pass{'es' if ep_done > 1 else ''} done"
                notes.append(f"{done} (last at {cycles[-1]['position']:,})")
            notes += [f"{e['event']} at {e['position']:,}" for e in other]
            ep = self.epochs[name]
            row = [name, f"{target[d]:.4f}", f"{realised[d]:.4f}"]
            if tok_share is not None:
                row.append(f"{tok_share[d]:.4f}")
            row += ["-" if ep is None else f"{ep:.2f}", "; ".join(notes) or "-"]
            rows.append(row)
        changes = sum(1 for e in self.events if e["event"] == "weights" and e["position"] > self.start)
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        lines = [
            f"{self.generated:,} positions from {self.start:,} in windows of {self.window:,}; "
            f"{changes} weight change(s) after the start",
            "  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(),
            "  ".join("-" * w for w in widths),
        ]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join(lines)

    def plot(self, path: str, unit: str | None = None) -> str:
        """Writes a PNG: realised share (solid) against target (dashed) per window, and each
        source's passes over its data. Needs matplotlib (``pip install "mixsieve[plot]"``).
        ``unit``: ``"samples"`` or ``"tokens"`` (default: tokens in token mode)."""
        try:  # a Figure of its own, drawn by the Agg canvas: the user's pyplot backend is untouched
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as e:
            raise ImportError(
                'MixturePlan.plot needs matplotlib: pip install "mixsieve[plot]" (or matplotlib)'
            ) from e
        unit = unit or ("tokens" if self.tokens is not None else "samples")
        shares = self.shares(unit)
        if not self.generated:
            raise ValueError("this plan has no positions to plot (simulate(n) with n > 0)")
        x = self.start + np.cumsum(self.window_sizes)
        fig = Figure(figsize=(9, 6.5))
        FigureCanvasAgg(fig)
        top, bottom = fig.subplots(2, 1, sharex=True)
        for d, name in enumerate(self.names):
            (line,) = top.plot(x, shares[:, d], label=name)
            top.plot(x, self.targets[:, d], linestyle="--", color=line.get_color(), linewidth=1)
            size = self._sizes[d]
            if size:
                passes = (self._before[d] + self.counts[:, d].cumsum()) / size
                bottom.plot(x, passes, color=line.get_color(), label=name)
        for ev in self.events:
            if ev["event"] in ("capped", "dropped", "ended"):
                top.axvline(ev["position"], color="grey", linewidth=0.6, linestyle=":")
        top.set_ylabel(f"share of {unit}")
        top.set_title("served per window (solid) against the target in force (dashed)", fontsize="medium")
        if len(self.names) <= 20:
            top.legend(loc="upper right", fontsize="small")
        else:  # a legend of many sources hides the lines: name the 10 largest only
            largest = np.argsort(-self.counts.sum(axis=0))[:10]
            handles = [top.lines[2 * d] for d in largest]
            top.legend(handles, [self.names[d] for d in largest], loc="upper right", fontsize="x-small")
        bottom.set_ylabel("passes over the source")
        bottom.set_xlabel("position")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return path

    def __repr__(self) -> str:
        return (
            f"MixturePlan({len(self.names)} sources, {self.generated:,} positions from {self.start:,}, "
            f"{len(self.counts)} windows of {self.window:,})"
        )
