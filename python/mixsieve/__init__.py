"""mixsieve: fast, deterministic training-data sampling for language models.

Near-duplicate detection (MinHash + LSH) today; weighted sampling and streaming mixtures build
on the same native core. See ``help(mixsieve.dedup)`` for the text-normalisation rules.
"""

from importlib.metadata import PackageNotFoundError, version

from .dedup import DedupResult, LSHIndex, MinHasher, dedup, estimate_jaccard, resolve_bands

try:
    __version__ = version("mixsieve")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "DedupResult",
    "LSHIndex",
    "MinHasher",
    "__version__",
    "dedup",
    "estimate_jaccard",
    "resolve_bands",
]
