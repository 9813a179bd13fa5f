"""TokenMixupCollator: a DataLoader ``collate_fn`` that pads token sequences, pairs the rows of
each batch and draws one mixing weight per token, ready for :func:`mixsieve.mixup.mix_embeddings`
and the two-target cross-entropies.

Everything random (the pairing and the weights) is keyed by (seed, batch index), never by global
state, so a run gives the same batches for any number of DataLoader workers and after a resume.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from .._checks import check_bool, check_choice, check_int, describe

PAIRINGS = ("random", "cross-source", "same-source")
_PAIR_TAG = 0x70616972  # "pair": the pairing's stream is apart from any other use of (seed, batch)
_INT64 = (-(2**63), 2**63)


class TokenMixupCollator:
    """Pad a batch of token sequences, pair its rows and draw per-token mixing weights.

    Use it as a ``DataLoader``'s ``collate_fn``. Each batch comes back as a dict of tensors:

    ============  =====================  =====================================================
    key           type                   meaning
    ============  =====================  =====================================================
    ``xa``        int64 ``[B, L]``       the sequences, right-padded with ``pad_id``
    ``va``        bool ``[B, L]``        ``True`` at real tokens, ``False`` at padding
    ``xb``        int64 ``[B, L]``       ``xa[partner]``: the sequence each row is mixed with
    ``vb``        bool ``[B, L]``        ``va[partner]``
    ``lam``       float32 ``[B, L]``     weight of ``xa`` per token, Beta(alpha, alpha)
    ``partner``   int64 ``[B]``          the row each row is mixed with
    ``source``    list of B              each row's source (``None`` where the sample has none)
    ``batch_index``  int                 the index that keyed this batch's randomness
    ============  =====================  =====================================================

    ``L`` is the longest sequence of the batch (after truncation to ``max_length``): a window of
    ``T + 1 = L`` tokens, inputs at ``0..T-1`` and next-token targets at ``1..T``. Mixing is
    directional: row ``i`` is mixed with row ``partner[i]``, which may be the partner of other
    rows too; a row whose partner is itself is not mixed (``xb == xa``, so the loss does not
    depend on ``lam``).

    Parameters
    ----------
    alpha : float
        ``lam ~ Beta(alpha, alpha)`` per token, ``alpha > 0`` (see
        :func:`mixsieve.mixup.sample_lambda`; ``alpha <= 1e-3`` draws a fair coin in {0, 1}).
    seed : int
        In ``[0, 2**64)``. With the batch index it keys the pairing and ``lam``.
    pad_id : int
        Written at padding positions. Padding is masked by ``va``/``vb`` and never read by the
        kernels, so any int64 value will do.
    pairing : ``"random"``, ``"cross-source"`` or ``"same-source"``
        ``"random"``: a random single-cycle permutation of the rows, so no row is mixed with
        itself when ``B > 1``. ``"cross-source"``: each row's partner comes from another source
        whenever the batch has a row of another source (selective mixup across the domains of an
        :class:`mixsieve.MixtureDataset`); when no source has more than half the rows the
        partners are a permutation, else the rows of the largest source share the other rows as
        partners; a batch of one source is not mixed. ``"same-source"``: a random single cycle
        within each source; a row alone in its source is not mixed. Both need each sample's
        source (``ValueError`` otherwise).
    max_length : int, optional
        Keep at most the first ``max_length`` (>= 2) tokens of each sequence.
    dominant : bool
        Draw ``max(lam, 1 - lam)``, so ``xa`` dominates every token (SeqMix, TMix).
    start_batch : int
        The batch index of the first batch. To resume, pass the number of batches already
        consumed (or the ``batch_index`` of the last one plus 1). Setting the attribute
        restarts the count there.
    key : str
        The token key of dict samples. A dict without it but with a ``"sample"`` key (what
        ``MixtureDataset(output="dict")`` makes of a non-dict sample) uses that.

    Notes
    -----
    **Samples.** A batch is a list of token sequences (lists or tuples of ints, ``bytes``, 1-D
    integer numpy arrays or torch tensors), of ``(source, tokens)`` tuples
    (``MixtureDataset(output="tuple")``), or of dicts holding the tokens under ``key`` and
    optionally a ``"source"`` (``MixtureDataset(output="dict")``). Every sequence needs at least
    2 tokens: a window holds an input and its next-token target.

    **Batch index.** Batch ``n`` of a DataLoader is keyed by ``n``: the collator counts its own
    calls and, in a DataLoader worker, reads ``torch.utils.data.get_worker_info()``: the
    DataLoader deals batches to its ``W`` workers in turn, so call ``c`` of worker ``w`` collates
    batch ``start_batch + c * W + w``. ``lam`` is
    ``sample_lambda((B, L), alpha, seed, stream=batch_index, dominant=dominant)`` and the pairing
    comes from ``numpy.random.Philox`` seeded by ``SeedSequence([seed, batch_index, tag])``.
    This holds whenever every worker delivers its share in turn, which is the case for
    map-style datasets and for a ``MixtureDataset`` whose ``batch_size`` is the DataLoader's.

    The count lives in the process that runs the collator: workers start from a copy of it each
    time the DataLoader starts them (each epoch, unless ``persistent_workers``), and their
    counts do not come back. So with ``num_workers > 0`` tell the collator where an epoch starts
    (``collate.start_batch = batches_so_far`` before ``iter(loader)``), or several epochs reuse
    the same indices. With ``persistent_workers=True`` the workers keep counting across epochs:
    indices stay distinct but match ``num_workers=0`` only when each epoch's batch count is a
    multiple of ``W``. :meth:`state_dict` holds the count of this process (exact with
    ``num_workers=0``); with workers, keep the last batch's ``batch_index`` instead.

    Examples
    --------
    >>> from mixsieve.mixup import TokenMixupCollator
    >>> collate = TokenMixupCollator(alpha=0.4, seed=0, pairing="cross-source")
    >>> out = collate([("code", [5, 6, 7]), ("prose", [8, 9]), ("prose", [1, 2, 3, 4])])
    >>> out["xa"].tolist()
    [[5, 6, 7, 0], [8, 9, 0, 0], [1, 2, 3, 4]]
    >>> out["va"].sum(1).tolist()
    [3, 2, 4]
    >>> [out["source"][j] for j in out["partner"].tolist()][0] != "code"  # another source
    True
    >>> out["lam"].shape, out["lam"].dtype, out["batch_index"]
    (torch.Size([3, 4]), torch.float32, 0)
    >>> collate([[1, 2], [3, 4]]) # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ValueError: pairing='cross-source' needs each sample's source...
    >>> again = TokenMixupCollator(alpha=0.4, seed=0, pairing="cross-source")
    >>> bool((again([("code", [5, 6, 7]), ("prose", [8, 9]), ("prose", [1, 2, 3, 4])])["lam"]
    ...       == out["lam"]).all())  # same seed, same batch index: same weights
    True
    """

    def __init__(
        self,
        alpha: float = 0.4,
        seed: int = 0,
        pad_id: int = 0,
        pairing: str = "random",
        *,
        max_length: int | None = None,
        dominant: bool = False,
        start_batch: int = 0,
        key: str = "input_ids",
    ) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
            raise TypeError(f"alpha must be a number, got {describe(alpha)}")
        if not 0.0 < float(alpha) < float("inf"):
            raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.seed = check_int("seed", seed, 0, 2**64)
        self.pad_id = check_int("pad_id", pad_id, *_INT64)
        self.pairing = check_choice("pairing", pairing, PAIRINGS)
        self.max_length = None if max_length is None else check_int("max_length", max_length, 2)
        self.dominant = check_bool("dominant", dominant)
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, got {describe(key)}")
        self.key = key
        self.start_batch = start_batch  # validated by the property

    @property
    def start_batch(self) -> int:
        """The batch index this process's count starts from; setting it restarts the count."""
        return self._start

    @start_batch.setter
    def start_batch(self, value: int) -> None:
        self._start = check_int("start_batch", value, 0, 2**63)
        self._calls = 0

    def state_dict(self) -> dict[str, int]:
        """``{"seed", "batch"}``: ``batch`` is the index of the next batch this process would
        collate (with ``num_workers=0``, the number of batches consumed plus ``start_batch``)."""
        return {"seed": self.seed, "batch": self._start + self._calls}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s batch; refuses a state saved with another seed."""
        if not isinstance(state, Mapping) or not {"seed", "batch"} <= set(state):
            raise ValueError(f"state must be a dict with 'seed' and 'batch', got {describe(state)}")
        seed = check_int("state['seed']", state["seed"], 0, 2**64)
        if seed != self.seed:
            raise ValueError(f"state was saved with seed={seed}, this collator has seed={self.seed}")
        self.start_batch = check_int("state['batch']", state["batch"], 0, 2**63)

    def __repr__(self) -> str:
        return (
            f"TokenMixupCollator(alpha={self.alpha!r}, seed={self.seed}, pad_id={self.pad_id}, "
            f"pairing={self.pairing!r}, max_length={self.max_length}, dominant={self.dominant}, "
            f"start_batch={self._start}, key={self.key!r})"
        )

    def __call__(self, batch: Sequence[Any]) -> dict[str, Any]:
        import torch
        from torch.utils.data import get_worker_info

        from ._ops import sample_lambda

        if isinstance(batch, (str, bytes)) or not isinstance(batch, Sequence):
            raise TypeError(f"batch must be a list of samples, got {describe(batch)}")
        if len(batch) == 0:
            raise ValueError("batch is empty: a mixup batch needs at least one sample")
        rows, sources = [], []
        for i, sample in enumerate(batch):
            source, tokens = self._split(i, sample)
            rows.append(_token_array(f"batch[{i}]", tokens, torch, self.max_length))
            sources.append(source)
        if self.pairing != "random":
            for i, s in enumerate(sources):
                if s is None:
                    raise ValueError(
                        f"pairing={self.pairing!r} needs each sample's source, and batch[{i}] has "
                        "none: pass (source, tokens) tuples (MixtureDataset(output='tuple')) or "
                        "dicts with a 'source' key"
                    )

        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        index = self._start + self._calls * workers + worker
        b, length = len(rows), max(len(r) for r in rows)
        xa = np.full((b, length), self.pad_id, dtype=np.int64)
        va = np.zeros((b, length), dtype=np.bool_)
        for i, r in enumerate(rows):
            xa[i, : len(r)] = r
            va[i, : len(r)] = True
        rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([self.seed, index, _PAIR_TAG])))
        partner = pair_rows(self.pairing, sources, rng)
        shape = (b, length)
        lam = sample_lambda(shape, alpha=self.alpha, seed=self.seed, stream=index, dominant=self.dominant)
        self._calls += 1

        xa_t, va_t, p = torch.from_numpy(xa), torch.from_numpy(va), torch.from_numpy(partner)
        return {
            "xa": xa_t,
            "xb": xa_t[p],
            "va": va_t,
            "vb": va_t[p],
            "lam": lam,
            "partner": p,
            "source": sources,
            "batch_index": index,
        }

    def _split(self, i: int, sample: Any) -> tuple[Any, Any]:
        """(source or None, tokens) of one sample."""
        if isinstance(sample, Mapping):
            if self.key in sample:
                tokens = sample[self.key]
            elif "sample" in sample:
                tokens = sample["sample"]
            else:
                keys = ", ".join(repr(k) for k in sample)
                raise ValueError(f"batch[{i}] is a dict without a {self.key!r} key (keys: {keys})")
            return sample.get("source"), tokens
        if isinstance(sample, tuple) and len(sample) == 2 and _is_sequence(sample[1]):
            return sample[0], sample[1]
        return None, sample


def _is_sequence(x: Any) -> bool:
    return isinstance(x, (list, tuple, bytes, bytearray)) or getattr(x, "ndim", 0) >= 1


def _token_array(where: str, tokens: Any, torch: Any, max_length: int | None) -> np.ndarray[Any, Any]:
    """``tokens`` as a 1-D integer numpy array of at least 2 entries, cut to ``max_length``."""
    if isinstance(tokens, (bytes, bytearray)):
        arr: np.ndarray[Any, Any] = np.frombuffer(tokens, dtype=np.uint8)
    elif isinstance(tokens, torch.Tensor):
        if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
            raise TypeError(f"{where}: tokens must be integers, got a tensor of {tokens.dtype}")
        arr = tokens.detach().cpu().numpy()
    else:
        try:
            arr = np.asarray(tokens)
        except (TypeError, ValueError) as e:  # ragged nesting
            raise TypeError(f"{where}: tokens must be a 1-D sequence of ints ({e})") from None
        if isinstance(tokens, str) or arr.ndim == 0:
            raise TypeError(f"{where}: tokens must be a 1-D sequence of ints, got {describe(tokens)}")
    if arr.ndim != 1:
        raise ValueError(f"{where}: tokens must be 1-D, got shape {arr.shape}")
    if arr.size < 2:
        raise ValueError(
            f"{where} has {arr.size} token(s): a window needs T + 1 >= 2 tokens (an input and its target)"
        )
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{where}: tokens must be integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and int(arr.max()) >= 2**63:
        raise ValueError(f"{where}: token {int(arr.max())} does not fit in int64")
    return arr if max_length is None else arr[:max_length]


def pair_rows(pairing: str, sources: Sequence[Hashable], rng: np.random.Generator) -> np.ndarray[Any, Any]:
    """``partner`` (int64 ``[B]``) for the rows of one batch; see :class:`TokenMixupCollator`.

    Sources are grouped in the order they first appear, so the result depends only on the
    batch and the generator's state.
    """
    b = len(sources)
    partner = np.arange(b, dtype=np.int64)
    if pairing == "random":
        _cycle(partner, np.arange(b), rng)
        return partner
    ids: dict[Hashable, int] = {}
    try:
        group = np.array([ids.setdefault(s, len(ids)) for s in sources], dtype=np.int64)
    except TypeError:
        raise TypeError(f"sources must be hashable, got {describe(list(sources))}") from None
    members = [np.flatnonzero(group == k) for k in range(len(ids))]
    if pairing == "same-source":
        for rows in members:
            _cycle(partner, rows, rng)
        return partner
    if len(ids) == 1:
        return partner  # nothing to mix with
    groups = [members[k] for k in rng.permutation(len(ids))]
    groups.sort(key=len, reverse=True)  # stable: the largest source first, ties in random order
    order = np.concatenate([rng.permutation(rows) for rows in groups])
    big = len(groups[0])
    if 2 * big <= b:
        # Rows laid out source by source; shifting by the largest source's size moves every row
        # out of its own source's run (run length <= big <= b - big), and is a permutation.
        partner[order] = np.roll(order, -big)
    else:
        # More than half the rows share one source: its rows cycle through the others, and each
        # other row takes a distinct row of that source.
        first, rest = order[:big], order[big:]
        partner[first] = rest[np.arange(big) % len(rest)]
        partner[rest] = first[: len(rest)]
    return partner


def _cycle(partner: np.ndarray[Any, Any], rows: np.ndarray[Any, Any], rng: np.random.Generator) -> None:
    """Pair ``rows`` along one random cycle: a derangement of them when there are two or more."""
    order = rng.permutation(rows)
    partner[order] = np.roll(order, -1)
