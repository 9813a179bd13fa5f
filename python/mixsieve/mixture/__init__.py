"""The weighted mixture of data sources for the PyTorch DataLoader (:class:`MixtureDataset`).

One idea per module: ``dataset`` (the public class), ``engine`` (one process's walk, driving the
native schedule ``_core.MixPlan``), ``readers`` (map-style and iterable sources), ``shared``
(shared-memory control between the main process and DataLoader workers), ``checkpoint`` (the
state format) and ``distributed`` (ranks, workers, process groups).
"""

from .dataset import MixtureDataset
from .readers import SourceError

__all__ = ["MixtureDataset", "SourceError"]
