"""Small in-memory sources shared by the mixture tests and their helper processes."""

from __future__ import annotations

from typing import Any

import mixsieve as ms


class Countdown:
    """An iterable source that can be iterated again (a fresh pass each time)."""

    def __init__(self, n: int, tag: str):
        self.n, self.tag = n, tag

    def __iter__(self):
        return iter(f"{self.tag}{i}" for i in range(self.n))


# DataLoader warns when asked for more workers than this 2-core machine suggests; torchdata
# 0.11 calls torch.set_vital, which torch 2.13 deprecates.
LOADER_WARNINGS = [
    "ignore:This DataLoader will create:UserWarning",
    "ignore:'set_vital' is deprecated:UserWarning",
]


def as_list(batch: list[Any]) -> list[Any]:
    """A collate_fn that keeps a batch as the list of samples."""
    return batch


def sources() -> dict[str, Any]:
    return {
        "web": [f"w{i}" for i in range(700)],
        "code": Countdown(113, "c"),  # iterable: read by every worker, buffer-shuffled
        "math": [f"m{i}" for i in range(41)],
    }


def make_dataset(**kw: Any) -> ms.MixtureDataset:
    args: dict[str, Any] = dict(weights={"web": 0.6, "code": 0.3, "math": 0.1}, seed=7, num_samples=2400)
    args.update(kw)
    return ms.MixtureDataset(sources(), **args)
