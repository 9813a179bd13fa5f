"""mixsieve on Ray Data: near-duplicate removal and exact weighted samples of datasets that
outgrow one machine, with the same kernels and the same answers as on one machine.

``pip install "mixsieve[ray]"``; ``ray`` is imported when a function here is first called.

Examples
--------
>>> import ray, mixsieve.ray as msr                                        # doctest: +SKIP
>>> ds = ray.data.read_json(paths)                                        # doctest: +SKIP
>>> kept, removed = msr.dedup(ds, text_column="text", id_column="id", threshold=0.8)  # doctest: +SKIP
>>> sample = msr.weighted_sample(ds, weight_column="score", k=100_000, seed=0)  # doctest: +SKIP

How dedup runs (every step is a Ray task or a Ray Data ``map_batches``; only the last two
steps' inputs ever reach the driver):

1. **Signatures** in ``map_batches`` over Arrow batches (``batch_format="pyarrow"``): the C++
   MinHash kernel reads the Arrow string array in place (no Python loop per document) and
   appends each row's signature, digest and band keys to it. ``ds`` is executed once (when
   Ray cannot tell a lazy dataset's schema, ``ds.schema()`` also runs its first block for the
   argument checks), with Ray Data's ``preserve_order`` set for that execution (otherwise
   blocks arrive in the order their tasks finish), and the result stays in Ray's object
   store: blocks in dataset order, so that "the lowest position of a cluster is kept" means
   what it means for :func:`mixsieve.dedup` on the documents concatenated in that order.
2. **Grouping by band key**: a map-reduce shuffle written with Ray tasks. Each block sends
   (band key, row) pairs, 16 bytes per band per document, to one of ``partitions`` reducers
   chosen by key (a row is named by its block and its place in it, which sort in dataset
   order); each reducer sorts its keys and returns the rows that share a bucket with another
   document. Ray Data's own ``groupby`` would do the same, but it shuffles every row into
   hundreds of partitions and took tens of seconds for a thousand rows on two cores; a fixed,
   small number of reducers keeps the overhead per call at a few tasks.
3. **Fetching**: one task per block returns its row count and the signatures (``num_perm * 4``
   bytes each), digests (16 bytes) and ids of its rows found in step 2, and only those; the
   row counts give positions.
4. **Clustering** on the driver: the fetched signatures are clustered by the C++ LSH
   clustering that :func:`mixsieve.dedup` runs (verification against ``threshold``,
   union-find). A document that shares no bucket is alone in all of its buckets in the
   single-machine run too, so it changes no candidate list and no bucket cap there: running the
   clustering on the others, in position order, gives exactly the single-machine clusters,
   comparison counts and capped count, whatever the caps did. (One theoretical exception:
   the single-machine run's table of identical signatures is keyed by a 64-bit hash of the
   signature, so a document outside the buckets whose signature's hash collides with a
   member's could change a lookup there; at a 2^-64 chance per pair this does not happen.)
5. **Filtering**: the removed positions (with what each duplicates and the estimated Jaccard)
   are broadcast, and one task per block of step 1 splits it into kept and removed rows.

Where the limit is: step 4 holds, for each document that shares a bucket with another one, its
signature (``num_perm * 4`` bytes: 512 at 128 permutations) up to three times (as fetched,
joined, and as the numpy array the clustering reads), its digest, id and position, and the
clustering's tables (about 28 bytes per band): some 1.5 KB per such document at 128
permutations, so roughly 600 million of them per TB of driver memory (and at most 2^32 - 2,
the clustering's row limit).
Everything else is spread over the cluster. Beyond that size the clustering would need a
distributed connected-components step over the verified edges, which this module does not have.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _core
from ._checks import check_int, check_optional_int
from .dedup import DedupResult, MinHasher, _check_threshold, _exact_duplicates, resolve_bands
from .sampling import WeightedReservoir

if TYPE_CHECKING:
    import ray.data

_SIG, _DIGEST, _KEYS = "__mixsieve_sig", "__mixsieve_digest", "__mixsieve_keys"
_ADDED = (_SIG, _DIGEST, _KEYS)  # the columns dedup's step 1 adds
_INSTALL = 'mixsieve.ray needs Ray Data: pip install "mixsieve[ray]" (or pip install "ray[data]")'


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{_INSTALL} ({e})") from e
    if not ray.is_initialized():
        ray.init()  # what Ray Data would start on its own: the local machine, or RAY_ADDRESS
    return ray


def _remote(fn: Any) -> Any:
    """``ray.remote(fn)``, made once per process: each new RemoteFunction is exported to the
    cluster again on first use."""
    made = _REMOTE.get(fn)
    if made is None:
        made = _REMOTE[fn] = _ray().remote(fn)
    return made


_REMOTE: dict[Any, Any] = {}


def _check_dataset(
    ds: Any, columns: dict[str, tuple[str | None, str]], extra_columns: tuple[str, ...] = ()
) -> Any:
    """ds is a Ray Dataset holding each named column with the kind of values it must have
    ("string" or "number"), checked on the schema before any work starts, and none of the
    columns the caller adds (extra_columns). Returns the Arrow schema, or None when Ray does
    not know it as one (pandas blocks)."""
    ray = _ray()
    import pyarrow as pa

    if not isinstance(ds, ray.data.Dataset):
        raise TypeError(f"ds must be a ray.data.Dataset, got {type(ds).__name__}")
    schema = ds.schema()
    names = list(schema.names) if schema is not None else []
    base = getattr(schema, "base_schema", None)
    for arg, (col, kind) in columns.items():
        if col is None:
            continue
        if not isinstance(col, str):
            raise TypeError(f"{arg} must be a column name (str), got {type(col).__name__}")
        if col not in names:
            raise ValueError(f"{arg}={col!r} is not a column of the dataset; its columns are {names}")
        if isinstance(base, pa.Schema):  # Arrow-backed blocks: check the type now
            t = base.field(col).type
            ok = (
                (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t))
                if kind == "string"
                else (pa.types.is_floating(t) or pa.types.is_integer(t))
            )
            if kind != "any" and not ok:
                raise TypeError(f"{arg}={col!r} must hold {kind}s, got Arrow type {t}")
    for reserved in extra_columns:
        if reserved in names:
            raise ValueError(
                f"the dataset already has a column {reserved!r}, which mixsieve.ray adds; rename it"
            )
    return base if isinstance(base, pa.Schema) else None


# ---------------------------------------------------------------------------------------------
# Step 1: signatures and band keys, in dataset order


def _ordered_refs(ds: Any) -> tuple[list[Any], int]:
    """Execute ds; its blocks' ObjectRefs in dataset order, and its row count."""
    # "Dataset order" must be the order of the dataset, not the order in which Ray's tasks
    # happen to finish (Ray Data's default): preserve it for this one execution.
    options = ds.context.execution_options  # each dataset keeps its own copy of the context
    before = options.preserve_order
    options.preserve_order = True
    try:
        done = ds.materialize()
    finally:
        options.preserve_order = before
    return done.to_arrow_refs(), int(done.count())  # the count is read from block metadata


def _fixed_column(values: np.ndarray, width: int) -> Any:
    """A [rows, ...] numpy array as a FixedSizeBinary Arrow array of `width` bytes per row."""
    import pyarrow as pa

    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, pa.py_buffer(values)])


def _signature_batch(batch: Any, *, text_column: str, hasher: dict[str, Any], bands: int, rows: int) -> Any:
    """The batch with its signatures, digests and band keys appended (as FixedSizeBinary)."""
    import pyarrow as pa

    h = MinHasher(hasher["num_perm"], hasher["ngram"], hasher["unit"], hasher["seed"], dtype=hasher["dtype"])
    texts = batch.column(text_column)
    if pa.types.is_null(texts.type):  # a batch of nulls only: empty documents
        texts = texts.cast(pa.string())
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        raise TypeError(f"text_column={text_column!r} must hold strings, got Arrow type {texts.type}")
    sigs, digests = h._signatures_digests(texts, 1)  # one thread: Ray runs one task per CPU
    keys = _core.band_keys(sigs, bands, rows)
    batch = batch.append_column(_SIG, _fixed_column(sigs, sigs.shape[1] * sigs.itemsize))
    batch = batch.append_column(_DIGEST, _fixed_column(digests, 16))
    return batch.append_column(_KEYS, _fixed_column(keys, 8 * bands))


def _fixed(col: Any, dtype: Any, width: int) -> np.ndarray:
    """A FixedSizeBinary Arrow column as a [rows, width] numpy array of dtype (a copy)."""
    col = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    raw = np.frombuffer(col.buffers()[1], dtype=np.uint8)
    size = col.type.byte_width
    raw = raw[col.offset * size : (col.offset + len(col)) * size]
    out: np.ndarray = raw.view(dtype).reshape(len(col), width).copy()
    return out


# ---------------------------------------------------------------------------------------------
# Step 2: the shuffle of band keys

# A row is named by (block, row in block), packed into one int64 that sorts in dataset order:
# positions need every earlier block's row count, which the shuffle does not wait for.
_ROW_BITS = 40


def _split(block: Any, index: int, bands: int, partitions: int) -> Any:
    """A block's (band key, packed row) pairs, cut into one part per reducer by key."""
    if block.num_rows == 0 or _KEYS not in block.column_names:  # Ray skips the map on empty blocks
        empty = (np.empty(0, np.uint64), np.empty(0, np.int64))
        return empty if partitions == 1 else tuple(empty for _ in range(partitions))
    if block.num_rows >= 1 << _ROW_BITS:
        raise ValueError(f"a block of {block.num_rows} rows: at most 2^{_ROW_BITS} - 1 rows per block")
    keys = _fixed(block.column(_KEYS), np.uint64, bands)
    rows = (np.int64(index) << _ROW_BITS) + np.arange(block.num_rows, dtype=np.int64)
    # one 64-bit value per (band, key): a collision between bands only adds a document to the
    # candidates, which the clustering then treats exactly as the single-machine run does
    band = np.arange(bands, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    flat = (keys ^ band).ravel()
    owner = np.repeat(rows, bands)
    if partitions == 1:
        order = np.argsort(flat)  # sorted runs: the reducer merges them instead of sorting
        return flat[order], owner[order]
    part = (flat % np.uint64(partitions)).astype(np.uint16 if partitions <= 1 << 16 else np.int64)
    order = np.lexsort((flat, part))  # by reducer, then by key within each reducer's part
    bounds = np.searchsorted(part[order], np.arange(partitions + 1))
    parts = [(flat[order[a:b]], owner[order[a:b]]) for a, b in zip(bounds[:-1], bounds[1:])]
    return tuple(parts)


def _shared(*parts: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The packed rows, among one reducer's pairs, whose key another row has too."""
    keys = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.uint64)
    rows = np.concatenate([p[1] for p in parts]) if parts else np.empty(0, np.int64)
    # each part arrives sorted by key, so this stable sort (a merge sort that finds the runs)
    # only merges them
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    same = keys[1:] == keys[:-1]
    member = np.zeros(keys.size, dtype=bool)
    member[1:] |= same
    member[:-1] |= same
    out: np.ndarray = np.unique(rows[order[member]])
    return out


def _bucket_members(refs: list[Any], bands: int, partitions: int) -> np.ndarray:
    """Sorted packed rows of the documents that share a band bucket with another document."""
    ray = _ray()
    split = _remote(_split).options(num_returns=partitions)
    # one object per (block, reducer): each reducer reads only its share of every block
    split_refs = [split.remote(r, i, bands, partitions) for i, r in enumerate(refs)]
    if partitions == 1:
        split_refs = [[s] for s in split_refs]
    shared = _remote(_shared)
    found = ray.get([shared.remote(*[s[p] for s in split_refs]) for p in range(partitions)])
    out: np.ndarray = np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)
    return out


# ---------------------------------------------------------------------------------------------
# Step 3: fetch the members' signatures (and every block's row count)


def _take(block: Any, wanted: np.ndarray, id_column: str | None) -> tuple[int, Any]:
    """The block's row count, and the signature, digest (and id) of its rows `wanted` (sorted
    row numbers within the block), in row order."""
    import pyarrow as pa

    if wanted.size == 0 or _SIG not in block.column_names:
        return int(block.num_rows), None
    cols = [_SIG, _DIGEST] + ([id_column] if id_column is not None else [])
    return int(block.num_rows), block.select(cols).take(pa.array(wanted))


def _fetch(refs: list[Any], members: np.ndarray, num_perm: int, dtype: Any,
           id_column: str | None) -> dict[str, Any]:  # fmt: skip
    """Row counts per block, and the members' positions, signatures, digests and ids, sorted by
    position."""
    ray = _ray()
    import pyarrow as pa

    block = members >> _ROW_BITS
    cuts = np.searchsorted(block, np.arange(len(refs) + 1))
    local = members & ((1 << _ROW_BITS) - 1)
    take = _remote(_take)
    got = ray.get([take.remote(r, local[cuts[i] : cuts[i + 1]], id_column) for i, r in enumerate(refs)])
    counts = np.array([c for c, _ in got], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    parts = [t for _, t in got if t is not None]
    out: dict[str, Any] = {"starts": starts, "pos": starts[block] + local}
    if not parts:
        out.update(sigs=np.empty((0, num_perm), dtype), digests=np.empty((0, 2), np.uint64), ids=None)
        return out
    table = pa.concat_tables(parts)  # blocks in order, rows in order: sorted by position
    out.update(
        sigs=_fixed(table.column(_SIG), dtype, num_perm),
        digests=_fixed(table.column(_DIGEST), np.uint64, 2),
        ids=table.column(id_column) if id_column is not None else None,
    )
    return out


# ---------------------------------------------------------------------------------------------
# Step 5: kept and removed rows, block by block


def _filter(block: Any, start: int, removed: dict[str, Any], kept_schema: Any,
            removed_schema: Any) -> tuple[Any, Any]:  # fmt: skip
    """The block's kept rows, and its removed rows with what each duplicates (`start`: the
    position of its first row), both without the columns step 1 added. An empty block gives
    empty tables of the two schemas, where they are known."""
    import pyarrow as pa

    if block.num_rows == 0 and kept_schema is not None:
        return kept_schema.empty_table(), removed_schema.empty_table()
    block = block.drop_columns([c for c in _ADDED if c in block.column_names])
    pos = np.arange(start, start + block.num_rows, dtype=np.int64)
    removed_pos = removed["pos"]
    at = np.searchsorted(removed_pos, pos)
    mask = at < removed_pos.size
    mask[mask] = removed_pos[at[mask]] == pos[mask]
    rows = at[mask]
    kept = block.filter(pa.array(~mask))
    out = block.filter(pa.array(mask))
    out = out.append_column("duplicate_of", removed["duplicate_of"].take(pa.array(rows)))
    out = out.append_column("similarity", pa.array(removed["similarity"][rows], type=pa.float32()))
    return kept, out.append_column("exact", pa.array(removed["exact"][rows], type=pa.bool_()))


def dedup(
    ds: ray.data.Dataset,
    *,
    text_column: str = "text",
    id_column: str | None = None,
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 1,
    unit: str = "word",
    bands: int | None = None,
    rows: int | None = None,
    verify: bool = True,
    match_empty: bool = False,
    dtype: Any = np.uint32,
    partitions: int | None = None,
    batch_size: int | None = 4096,
    return_result: bool = False,
) -> tuple[ray.data.Dataset, ray.data.Dataset] | tuple[ray.data.Dataset, ray.data.Dataset, DedupResult]:
    """Remove near-duplicate rows of a Ray Dataset: the rows :func:`mixsieve.dedup` keeps.

    The kept rows are exactly those :func:`mixsieve.dedup` keeps on the texts of ``ds``
    concatenated in dataset order (the lowest position of each cluster), with the same
    normalisation, shingles, signatures, band keys, verification and bucket caps, whatever the
    number of blocks or workers. See the module docstring for the steps and what is shuffled.

    Parameters
    ----------
    ds : ray.data.Dataset
        Any dataset with a string column ``text_column``.
    text_column : str
        The documents (Arrow ``string`` or ``large_string``; nulls are empty documents).
    id_column : str or None
        A column naming each row; ``removed``'s ``duplicate_of`` then holds the id of the row
        each removed row duplicates, otherwise its position in dataset order.
    threshold, num_perm, ngram, seed, unit, bands, rows, verify, match_empty, dtype
        As for :func:`mixsieve.dedup`.
    partitions : int or None
        Reducers of the band-key shuffle (None: one per CPU of the cluster, but no more than
        one per ~256 MB of (key, row) pairs, so a small dataset gets one).
    batch_size : int or None
        Rows per ``map_batches`` call of step 1 (None: whole blocks). Small blocks are
        gathered into batches of this size, so it also sets how many blocks the later steps
        run over.
    return_result : bool
        Also return the :class:`mixsieve.DedupResult` over positions (what
        ``mixsieve.dedup`` returns for the concatenated texts; ``seconds`` is empty).

    Returns
    -------
    (kept, removed) : two Ray Datasets
        ``kept``: the rows kept, with ``ds``'s columns. ``removed``: the rows removed, with
        ``ds``'s columns plus ``duplicate_of`` (id or position of an earlier row it was
        verified to duplicate; null, or -1 without ``id_column``, for a row that joined its
        cluster only through later rows, whose ``duplicate_of`` is -1 in
        :func:`mixsieve.dedup` too), ``similarity`` (the estimated Jaccard of that pair, float32) and
        ``exact`` (the normalised texts are equal). Both are computed when ``dedup`` returns:
        their blocks are in Ray's object store (spilled to disk by Ray when it fills), one
        block of each per block of step 1, in dataset order.

    Examples
    --------
    >>> import ray, mixsieve.ray as msr                                   # doctest: +SKIP
    >>> ds = ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(
    ...     ["one two three four five six", "One two three four five six!", "else"])])  # doctest: +SKIP
    >>> kept, removed = msr.dedup(ds, id_column="id", ngram=2)           # doctest: +SKIP
    >>> [r["id"] for r in kept.take_all()], removed.take_all()[0]["duplicate_of"]  # doctest: +SKIP
    ([0, 2], 0)
    """
    hasher = MinHasher(num_perm, ngram, unit, seed, dtype=dtype)  # validates the parameters
    threshold = _check_threshold(threshold)
    if (bands is None) != (rows is None):
        raise ValueError(
            f"bands and rows go together: give both or neither (got bands={bands!r}, rows={rows!r})"
        )
    b, r = resolve_bands(threshold, num_perm, bands, rows)
    batch_size = check_optional_int("batch_size", batch_size, 1)
    partitions = check_optional_int("partitions", partitions, 1)
    if not isinstance(text_column, str):
        raise TypeError(f"text_column must be a column name (str), got {type(text_column).__name__}")
    ray = _ray()
    schema = _check_dataset(ds, {"text_column": (text_column, "string"), "id_column": (id_column, "any")},
                            (*_ADDED, "duplicate_of", "similarity", "exact"))  # fmt: skip

    params = {"num_perm": hasher.num_perm, "ngram": hasher.ngram, "unit": hasher.unit, "seed": hasher.seed,
              "dtype": hasher.dtype}  # fmt: skip
    source: Any = ds
    sig_ds = source.map_batches(
        _signature_batch, batch_format="pyarrow", batch_size=batch_size, zero_copy_batch=True,
        fn_kwargs={"text_column": text_column, "hasher": params, "bands": b, "rows": r},
    )  # fmt: skip
    refs, n = _ordered_refs(sig_ds)  # ds runs once; its rows and signatures stay in the object store
    if len(refs) >= 1 << (63 - _ROW_BITS):
        raise ValueError(
            f"the dataset came out of map_batches in {len(refs)} blocks, more than mixsieve.ray can "
            f"name (2^{63 - _ROW_BITS}); pass a larger batch_size"
        )
    if partitions is None:
        # one reducer per CPU, but no more than one per ~256 MB of (key, row) pairs, so that a
        # small dataset on a large cluster is not cut into blocks x CPUs tiny objects
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        partitions = max(1, min(cpus, -(-n * b * 16 // (1 << 28))))
    members = _bucket_members(refs, b, partitions)
    got = _fetch(refs, members, hasher.num_perm, hasher.dtype, id_column)
    starts = got["starts"]

    # The single-machine clustering on the members, in position order (module docstring, step 4).
    cluster, dup, sim, comparisons, capped = _core.cluster_signatures(
        got["sigs"], b, r, threshold, bool(verify), bool(match_empty)
    )
    pos = got["pos"]
    exact_sub = _exact_duplicates(got["digests"], got["sigs"], bool(match_empty))
    removed_at = np.flatnonzero(cluster != np.arange(pos.size))
    dup_at = dup[removed_at]
    has_dup = dup_at >= 0  # -1: joined its cluster only through later rows (as in mixsieve.dedup)
    import pyarrow as pa

    if id_column is not None and got["ids"] is not None:
        ids = got["ids"]
        # a null index takes a null: no compute kernel, so extension types (uuid, tensors) work
        dup_of = ids.take(pa.array(np.where(has_dup, dup_at, 0), mask=~has_dup))
        if isinstance(dup_of, pa.ChunkedArray):
            dup_of = pa.concat_arrays(dup_of.chunks) if dup_of.num_chunks else pa.array([], ids.type)
        dup_type = ids.type
    elif id_column is not None and schema is not None:  # no member: nothing is removed
        dup_type = schema.field(id_column).type
        dup_of = pa.array([], dup_type)
    else:
        dup_type = pa.int64()
        dup_of = pa.array(np.where(has_dup, pos[np.maximum(dup_at, 0)], -1), dup_type)
    removed = {
        "pos": pos[removed_at],
        "duplicate_of": dup_of,  # an Arrow array of dup_type
        "similarity": sim[removed_at],
        "exact": exact_sub[removed_at],
    }
    removed_ref = ray.put(removed)
    # The output schemas, so that empty blocks (which Ray may leave without columns) and an
    # empty result still have the dataset's columns
    kept_schema: Any = None
    removed_schema: Any = None
    if schema is not None:  # the dataset's (it has none of the _ADDED columns)
        kept_schema = schema
        removed_schema = kept_schema.append(pa.field("duplicate_of", dup_type)).append(
            pa.field("similarity", pa.float32())).append(pa.field("exact", pa.bool_()))  # fmt: skip
    filtered = _remote(_filter).options(num_returns=2)
    outs = [filtered.remote(ref, int(s), removed_ref, kept_schema, removed_schema)
            for ref, s in zip(refs, starts[:-1])]  # fmt: skip
    if not outs and schema is not None:
        outs = [(ray.put(kept_schema.empty_table()), ray.put(removed_schema.empty_table()))]
    kept_ds = ray.data.from_arrow_refs([k for k, _ in outs]) if outs else ds
    removed_ds = ray.data.from_arrow_refs([x for _, x in outs]) if outs else ds
    if not return_result:
        return kept_ds, removed_ds
    full_cluster = np.arange(n, dtype=np.int64)
    full_cluster[pos] = pos[cluster]
    full_dup = np.full(n, -1, dtype=np.int64)
    full_dup[pos] = np.where(dup >= 0, pos[np.maximum(dup, 0)], -1)
    full_sim = np.zeros(n, dtype=np.float32)
    full_sim[pos] = sim
    full_exact = np.zeros(n, dtype=bool)
    full_exact[pos] = exact_sub
    result = DedupResult(
        keep=full_cluster == np.arange(n), cluster=full_cluster, duplicate_of=full_dup, similarity=full_sim,
        bands=b, rows=r, comparisons=int(comparisons), capped=int(capped), exact=full_exact,
    )  # fmt: skip
    return kept_ds, removed_ds, result


# ---------------------------------------------------------------------------------------------
# weighted_sample


def _rows(block: Any) -> int:
    return int(block.num_rows)


def _block_reservoir(block: Any, start: int, weight_column: str, k: int, seed: int,
                     batch_size: int | None) -> str:  # fmt: skip
    """The state of a reservoir of the block's rows, keyed by position (``start``: the
    position of its first row), fed ``batch_size`` rows at a time."""
    import pyarrow as pa

    res = WeightedReservoir(k, seed=seed)
    if block.num_rows == 0 or weight_column not in block.column_names:  # an empty block
        return json.dumps(res.state_dict())
    w = block.column(weight_column)
    if not (pa.types.is_floating(w.type) or pa.types.is_integer(w.type)):
        raise TypeError(f"weight_column={weight_column!r} must hold numbers, got Arrow type {w.type}")
    if w.null_count:
        first = start + int(np.flatnonzero(w.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"weight_column={weight_column!r} is null at position {first} (dataset "
                         f"order; {w.null_count} nulls in its block); weights must be numbers")  # fmt: skip
    step = batch_size or block.num_rows
    for a in range(0, block.num_rows, step):
        part = w.slice(a, step).to_numpy()
        try:
            res.add(part, ids=np.arange(start + a, start + a + part.size, dtype=np.int64), threads=1)
        except ValueError as e:  # "weights[i] = ...": name the row by its position in ds
            at = re.match(r"weights\[(\d+)\]", str(e))
            if at is None:
                raise
            raise ValueError(f"weights[{start + a + int(at.group(1))}]{str(e)[at.end() :]}") from None
    return json.dumps(res.state_dict())


def _identity(batch: Any) -> Any:
    return batch


def weighted_sample(ds: ray.data.Dataset, *, weight_column: str, k: int, seed: int,
                    batch_size: int | None = None) -> np.ndarray:  # fmt: skip
    """An exact A-Res weighted sample of ``k`` rows, without replacement: the positions (in
    dataset order) that :func:`mixsieve.weighted_sample` returns for the concatenated weights.

    ``ds`` is executed once (only ``weight_column`` is kept, in dataset order); then one Ray
    task per block keeps the ``k`` best keys of its rows in a
    :class:`mixsieve.WeightedReservoir` keyed by row position (a key is a function of
    ``(seed, position)`` alone), and the driver merges the reservoirs, which is exact. What
    reaches the driver is O(k) per block.

    Parameters
    ----------
    ds : ray.data.Dataset
    weight_column : str
        Non-negative finite numbers (ints or floats); rows of weight 0 are never chosen.
    k, seed
        As for :func:`mixsieve.weighted_sample`.
    batch_size : int or None
        Rows a task converts and feeds to its reservoir at a time (None: the whole block); it
        bounds a task's temporary memory, not the result.

    Returns
    -------
    np.ndarray of int64: positions in draw order (largest key first). A position counts rows in
    dataset order (the order of ``ds.iter_rows()`` with Ray Data's ``preserve_order`` set),
    whatever order Ray's tasks finish in.

    Examples
    --------
    >>> import ray, numpy as np, mixsieve as ms, mixsieve.ray as msr     # doctest: +SKIP
    >>> w = np.arange(1.0, 101.0)
    >>> ds = ray.data.from_items([{"score": x} for x in w])               # doctest: +SKIP
    >>> (msr.weighted_sample(ds, weight_column="score", k=5, seed=0)
    ...  == ms.weighted_sample(w, 5, seed=0)).all()                      # doctest: +SKIP
    True
    """
    k = check_int("k", k, 0)
    WeightedReservoir(k, seed=seed)  # validates seed
    batch_size = check_optional_int("batch_size", batch_size, 1)
    if not isinstance(weight_column, str):
        raise TypeError(f"weight_column must be a column name (str), got {type(weight_column).__name__}")
    ray = _ray()
    _check_dataset(ds, {"weight_column": (weight_column, "number")})
    # only the weights travel; one execution of ds, in dataset order, gathering small blocks
    # into blocks of at least 2^16 rows; then a task per block
    source: Any = ds
    refs, _ = _ordered_refs(source.select_columns([weight_column]).map_batches(
        _identity, batch_format="pyarrow", batch_size=1 << 16, zero_copy_batch=True))  # fmt: skip
    counts = ray.get([_remote(_rows).remote(r) for r in refs])
    starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    reservoir = _remote(_block_reservoir)
    states = ray.get([reservoir.remote(r, int(s), weight_column, k, int(seed), batch_size)
                      for r, s in zip(refs, starts[:-1])])  # fmt: skip
    total = WeightedReservoir(k, seed=seed)
    for state in states:
        part = WeightedReservoir(k, seed=seed)
        part.load_state_dict(json.loads(state))
        total.merge(part)
    out: np.ndarray = total.ids()
    if out.size < k:
        raise ValueError(
            f"k={k} exceeds the {out.size} items with positive weight (sampling without replacement)"
        )
    return out
