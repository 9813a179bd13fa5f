"""Where this process stands: its data-parallel rank, and its DataLoader worker slot.

Rank and world size come from, in order: the ``rank``/``world_size`` arguments; the
``process_group`` argument (tensor- and pipeline-parallel jobs pass their data-parallel group, so
ranks that hold the same data get the same samples); the default ``torch.distributed`` group when
it is initialised; the ``RANK``/``WORLD_SIZE`` variables torchrun sets; else 0 of 1.

The weight-change position is agreed by an all-reduce (max). Its tensor lives where the group's
backend can reduce it: on the CPU for gloo (or a backend that has a CPU part), on the current
CUDA device for NCCL. No lock is held across the collective.
"""

from __future__ import annotations

import os
from typing import Any

from .._checks import check_int


def worker_info() -> Any:
    try:
        from torch.utils.data import get_worker_info
    except ImportError:  # pragma: no cover
        return None
    return get_worker_info()


def in_worker() -> bool:
    return worker_info() is not None


def check_rank(rank: Any, world: Any) -> None:
    if (rank is None) != (world is None):
        raise ValueError("give both rank and world_size, or neither")
    if world is not None:
        check_int("world_size", world, 1)
        check_int("rank", rank, 0)
        if not rank < world:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank!r}, world_size={world!r}")


def _dist() -> Any:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return None
    return dist if dist.is_available() and dist.is_initialized() else None


def group_rank_world(group: Any) -> tuple[int, int] | None:
    """(rank, world) in ``group`` (None: the default group), or None if no process group is up."""
    dist = _dist()
    if dist is None:
        return None
    if group is None:
        return dist.get_rank(), dist.get_world_size()
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("this process is not a member of the process_group given to MixtureDataset")
    return rank, dist.get_world_size(group)


def env_rank_world() -> tuple[int, int] | None:
    """RANK / WORLD_SIZE set by torchrun (or alike), when both are."""
    has_rank, has_world = "RANK" in os.environ, "WORLD_SIZE" in os.environ
    if has_rank != has_world:
        raise ValueError(
            "RANK and WORLD_SIZE must be set together (one of them is in the environment); or pass "
            "rank= and world_size= to MixtureDataset"
        )
    if not has_rank:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except ValueError:
        raise ValueError(
            f"RANK={os.environ['RANK']!r} / WORLD_SIZE={os.environ['WORLD_SIZE']!r} are not integers"
        ) from None
    check_rank(rank, world)
    return rank, world


def collective_device(backend: str) -> str:
    """Where a tensor must live for ``backend`` to all-reduce it: "cpu", "cuda", or "accelerator"
    (the current device of torch.accelerator, for device-only backends such as hccl or xccl)."""
    parts = [p.split(":")[-1] for p in str(backend).lower().split(",")]
    if any(p in ("gloo", "mpi", "ucc") for p in parts):
        return "cpu"
    if any(p == "nccl" for p in parts):
        return "cuda"
    return "accelerator"


def agree_on_position(pos: int, sync: bool | None, group: Any) -> int:
    """The largest ``pos`` over the ranks of ``group`` (every rank calls this together)."""
    dist = _dist()
    if sync is False or dist is None:
        return pos
    import torch

    device = collective_device(dist.get_backend(group))
    if device == "cuda":
        device = f"cuda:{torch.cuda.current_device()}"
    elif device == "accelerator":
        acc = torch.accelerator.current_accelerator() if hasattr(torch, "accelerator") else None
        device = str(acc) if acc is not None else "cpu"
    t = torch.tensor([pos], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return int(t.item())
