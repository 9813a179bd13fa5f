"""mixsieve: fast, deterministic training-data sampling for language models.

Near-duplicate detection (MinHash + LSH), weighted sampling (A-Res, A-ExpJ, Chao PPS, reservoirs
that merge across shards) and FLYT soft-cap sampling, on one native core. See
``help(mixsieve.dedup)`` for the text-normalisation rules.
"""

from importlib.metadata import PackageNotFoundError, version

from . import mixup, sources, weights
from .dedup import DedupResult, LSHIndex, MinHasher, dedup, estimate_jaccard, resolve_bands
from .sampling import WeightedReservoir, soft_cap_sample, weighted_sample

try:
    __version__ = version("mixsieve")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "DedupResult",
    "LSHIndex",
    "MixtureDataset",
    "MinHasher",
    "SourceError",
    "WeightedReservoir",
    "__version__",
    "dedup",
    "estimate_jaccard",
    "mixup",
    "resolve_bands",
    "soft_cap_sample",
    "sources",
    "weighted_sample",
    "weights",
]


def __getattr__(name: str) -> object:
    # MixtureDataset imports torch (when installed), so it loads on first use only.
    if name in ("MixtureDataset", "SourceError"):
        from . import mixture

        return getattr(mixture, name)
    raise AttributeError(f"module 'mixsieve' has no attribute {name!r}")
