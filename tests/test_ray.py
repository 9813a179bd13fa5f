"""mixsieve.ray on a local Ray runtime (2 CPUs, no dashboard) against the single-process
functions: the kept rows of ``msr.dedup`` are those of ``ms.dedup`` on the concatenated texts
(with the same duplicate_of, similarity and exact flags, comparisons and capped counts), and
``msr.weighted_sample`` equals ``ms.weighted_sample`` on the concatenated weights, for 1, 4
and 16 blocks."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import mixsieve as ms
import numpy as np
import pytest
import textgen

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
import mixsieve.ray as msr  # noqa: E402
import pyarrow as pa  # noqa: E402  (ray.data needs it)

# Ray warns about its own deprecated settings when a DataContext is created
pytestmark = [
    pytest.mark.ray,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Use 'expr' instead of 'fn':UserWarning"),
]


@pytest.fixture(scope="module", autouse=True)
def runtime() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield
    ray.shutdown()


def in_order(ds: Any) -> list[dict[str, Any]]:
    """The rows of ds in dataset order (Ray Data's default gives them as tasks finish)."""
    options = ds.context.execution_options
    before, options.preserve_order = options.preserve_order, True
    try:
        return ds.take_all()
    finally:
        options.preserve_order = before


def planted_corpus(n_base: int = 1500, seed: int = 5) -> list[str]:
    """Random documents, each of the first third followed later by an edited copy (2% of the
    words changed), some verbatim copies, empty and punctuation-only documents."""
    rng = random.Random(seed)
    vocab = textgen.vocab(rng, 3000)
    docs = [textgen.random_words_doc(rng, vocab, rng.randint(20, 120)) for _ in range(n_base)]
    for i in range(0, n_base, 3):
        docs.append(textgen.perturb_words(rng, docs[i], 0.02, vocab))
    docs += docs[:40] + ["", "!!", "", "..."]
    rng.shuffle(docs)
    return docs


def rows(texts: list[str], ids: list[Any] | None = None) -> list[dict[str, Any]]:
    ids = list(range(len(texts))) if ids is None else ids
    return [{"id": i, "text": t, "other": len(t)} for i, t in zip(ids, texts)]


def assert_same_as_single_process(texts: list[str], blocks: int, partitions: int | None = None,
                                  batch_size: int | None = None, **kw: Any) -> None:  # fmt: skip
    # ids that are not positions, so that the rows' order and the ids' alignment are checked
    ids = [int(i) for i in np.random.default_rng(len(texts)).permutation(len(texts)) * 3 + 5]
    ds = ray.data.from_items(rows(texts, ids=ids), override_num_blocks=blocks)
    # batch_size=None: step 1 maps whole blocks, so the later steps run over `blocks` blocks
    # (the default, 4096 rows, would gather these small blocks into one)
    kept, removed, result = msr.dedup(ds, id_column="id", return_result=True, partitions=partitions,
                                      batch_size=batch_size, **kw)  # fmt: skip
    assert kept.num_blocks() == blocks or batch_size is not None
    want = ms.dedup(texts, **kw)
    assert want.num_removed > 0
    np.testing.assert_array_equal(result.keep, want.keep)
    np.testing.assert_array_equal(result.cluster, want.cluster)
    np.testing.assert_array_equal(result.duplicate_of, want.duplicate_of)
    np.testing.assert_array_equal(result.similarity, want.similarity)
    np.testing.assert_array_equal(result.exact, want.exact)
    assert (result.comparisons, result.capped) == (want.comparisons, want.capped)
    # both outputs come in dataset order, with the dataset's columns and nothing added
    kept_rows = kept.take_all()
    assert [r["id"] for r in kept_rows] == [ids[i] for i in np.flatnonzero(want.keep)]
    assert [r["text"] for r in kept_rows] == [texts[i] for i in np.flatnonzero(want.keep)]
    assert all(set(r) == {"id", "text", "other"} for r in kept_rows)
    removed_rows = removed.take_all()
    gone = np.flatnonzero(~want.keep)
    assert [r["id"] for r in removed_rows] == [ids[i] for i in gone]
    for i, r in zip(gone, removed_rows):
        assert r["text"] == texts[i]
        d = want.duplicate_of[i]
        assert r["duplicate_of"] == (None if d < 0 else ids[d])
        assert r["similarity"] == pytest.approx(float(want.similarity[i]), abs=0)
        assert r["exact"] == bool(want.exact[i])


@pytest.mark.parametrize("blocks", [1, 4, 16])
def test_dedup_equals_single_process(blocks: int) -> None:
    assert_same_as_single_process(planted_corpus(), blocks, threshold=0.8, ngram=5)
    # several reducers (a small dataset gets one by default), and blocks cut into batches
    assert_same_as_single_process(
        planted_corpus(), blocks, partitions=3, batch_size=37, threshold=0.8, ngram=5
    )


def test_dedup_with_capped_buckets_and_other_settings() -> None:
    # 30 copies of one page and 80 pages sharing a long template: buckets fill up (capped > 0),
    # and the rules that depend on document order still give the single-process answer
    rng = random.Random(9)
    vocab = textgen.vocab(rng, 400)
    template = textgen.random_words_doc(rng, vocab, 200)
    texts = [template + " " + textgen.random_words_doc(rng, vocab, 6) for _ in range(80)]
    texts += [texts[3]] * 30 + planted_corpus(200, seed=2)
    rng.shuffle(texts)
    want = ms.dedup(texts, threshold=0.7, ngram=3, unit="word", seed=4)
    assert want.capped > 0
    for blocks, partitions in ((3, None), (16, 5)):
        assert_same_as_single_process(texts, blocks, partitions, threshold=0.7, ngram=3, unit="word", seed=4)
    assert_same_as_single_process(texts, 5, threshold=0.9, ngram=4, unit="char", match_empty=True,
                                  dtype=np.uint64, num_perm=64)  # fmt: skip


def test_duplicate_of_reports_ids_or_positions() -> None:
    texts = ["alpha beta gamma delta epsilon zeta eta", "x y z", "Alpha beta gamma delta epsilon zeta eta!"]
    ds = ray.data.from_items(rows(texts, ids=["a", "b", "c"]), override_num_blocks=2)
    kept, removed = msr.dedup(ds, id_column="id", ngram=2)
    assert [r["id"] for r in kept.take_all()] == ["a", "b"]
    assert [(r["id"], r["duplicate_of"], r["exact"]) for r in removed.take_all()] == [("c", "a", True)]
    _, removed = msr.dedup(ds, ngram=2)  # no id column: positions
    assert [r["duplicate_of"] for r in removed.take_all()] == [0]


def test_dedup_of_an_empty_dataset_and_of_unique_rows() -> None:
    ds = ray.data.from_items(rows(["one two", "three four"], ids=["p", "q"]))
    kept, removed = msr.dedup(ds, id_column="id", ngram=1)
    assert kept.count() == 2 and removed.count() == 0
    # nothing removed: duplicate_of still has the id column's type
    assert removed.schema().base_schema.field("duplicate_of").type == pa.string()
    for empty in (ray.data.from_items(rows(["a b", "c d"])).filter(lambda r: False),
                  ray.data.from_items(rows(["a b", "c d"])).limit(0)):  # fmt: skip
        kept, removed, result = msr.dedup(empty, ngram=1, return_result=True)
        assert kept.count() == 0 and removed.count() == 0 and result.keep.size == 0
        # an empty result has the columns a non-empty one has
        assert kept.schema().names == ["id", "text", "other"]
        assert removed.schema().names == ["id", "text", "other", "duplicate_of", "similarity", "exact"]
    # zero-row blocks among others, and a single reducer
    mixed = ray.data.from_items(rows(planted_corpus(60)), override_num_blocks=8).filter(
        lambda r: r["id"] % 7 != 3
    )
    texts = [r["text"] for r in in_order(mixed)]
    _, _, result = msr.dedup(mixed, partitions=1, return_result=True)
    np.testing.assert_array_equal(result.keep, ms.dedup(texts).keep)


def test_dataset_order_is_the_files_order_whatever_finishes_first(tmp_path: Any) -> None:
    # the first file is much larger (slowest to read): positions must still follow the files
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = planted_corpus(600, seed=3)
    texts[0] = texts[-1] = texts[-2] = "the same words in the first and the last files " * 3
    cuts = [0, len(texts) - 30, len(texts) - 20, len(texts) - 10, len(texts)]
    for f, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        pq.write_table(
            pa.table({"id": list(range(a, b)), "text": texts[a:b]}), tmp_path / f"part-{f}.parquet"
        )
    ds = ray.data.read_parquet(str(tmp_path)).map_batches(lambda b: b, batch_format="pyarrow")
    kept, removed, result = msr.dedup(ds, id_column="id", return_result=True)
    want = ms.dedup(texts)
    np.testing.assert_array_equal(result.keep, want.keep)
    assert 0 in {r["id"] for r in kept.take_all()}
    w = np.array([len(t) for t in texts], dtype=np.float64)
    scored = ds.map_batches(
        lambda b: b.append_column("w", pa.compute.utf8_length(b["text"])), batch_format="pyarrow"
    )
    got = msr.weighted_sample(scored, weight_column="w", k=50, seed=5)
    np.testing.assert_array_equal(got, ms.weighted_sample(w, 50, seed=5))


@pytest.mark.parametrize("partitions", [1, 3, 7])
def test_shuffle_sends_every_pair_to_its_keys_reducer_sorted(partitions: int) -> None:
    # one block's (band key, row) pairs: each reducer gets exactly the keys it owns, sorted
    # (the reducer only merges sorted runs), named by (block, row in block)
    rng = np.random.default_rng(3)
    bands, n = 5, 300
    keys = rng.integers(0, 50, size=(n, bands), dtype=np.uint64)  # repeats within and across rows
    block = pa.table({"text": ["x"] * n, msr._KEYS: msr._fixed_column(keys, 8 * bands)})
    out = msr._split(block, 6, bands, partitions)
    parts = [out] if partitions == 1 else list(out)
    assert len(parts) == partitions
    band = np.arange(bands, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    want = sorted(zip((keys ^ band).ravel().tolist(), np.repeat((6 << 40) + np.arange(n), bands).tolist()))
    got = []
    for p, (k, rows) in enumerate(parts):
        assert (k % np.uint64(partitions) == p).all()
        assert (k[1:] >= k[:-1]).all()
        got += list(zip(k.tolist(), rows.tolist()))
    assert sorted(got) == want
    # the reducers find exactly the rows whose key another pair has too, across blocks
    other_keys = rng.integers(0, 400, size=(40, bands), dtype=np.uint64)
    other_block = pa.table({msr._KEYS: msr._fixed_column(other_keys, 8 * bands)})
    other = msr._split(other_block, 7, bands, partitions)
    shared = np.concatenate([msr._shared(a, b) for a, b in zip(parts, [other] if partitions == 1 else other)])
    pairs = want + sorted(zip((other_keys ^ band).ravel().tolist(),
                              np.repeat((7 << 40) + np.arange(40), bands).tolist()))  # fmt: skip
    count: dict[int, int] = {}
    for k, _ in pairs:
        count[k] = count.get(k, 0) + 1
    brute = sorted({r for k, r in pairs if count[k] > 1})
    assert sorted(set(shared.tolist())) == brute
    assert any(r >> 40 == 7 for r in brute) and len(brute) < n + 40  # some, not all


def test_columns_mixsieve_adds_must_not_exist() -> None:
    ds = ray.data.from_items([{"text": "a b", "exact": 1}])
    with pytest.raises(ValueError, match="already has a column 'exact'"):
        msr.dedup(ds)


def test_ids_of_extension_types_and_texts_that_are_all_null() -> None:
    import uuid

    texts = planted_corpus(80)
    ids = [uuid.UUID(int=i + 1) for i in range(len(texts))]
    ds = ray.data.from_items(rows(texts, ids=ids), override_num_blocks=3)
    kept, removed = msr.dedup(ds, id_column="id")
    want = ms.dedup(texts)
    assert want.num_removed > 0
    assert sorted(r["id"] for r in kept.take_all()) == [ids[i] for i in np.flatnonzero(want.keep)]
    got = {r["id"]: r["duplicate_of"] for r in removed.take_all()}
    assert got == {ids[i]: ids[want.duplicate_of[i]] for i in np.flatnonzero(~want.keep)}
    # a text column Ray types as null (every text missing) holds empty documents
    nulls = ray.data.from_items([{"text": None} for _ in range(5)])
    _, _, result = msr.dedup(nulls, match_empty=True, return_result=True)
    np.testing.assert_array_equal(
        result.keep, ms.dedup(pa.array([None] * 5, pa.string()), match_empty=True).keep
    )
    assert result.keep.sum() == 1


def test_errors_name_what_to_fix() -> None:
    ds = ray.data.from_items(rows(["a b c"]))
    with pytest.raises(TypeError, match="text_column must be a column name"):
        msr.dedup(ds, text_column=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="partitions must be None or an int >= 1"):
        msr.dedup(ds, partitions=0)
    kept, _ = msr.dedup(ds, partitions=np.int64(2), batch_size=np.int64(7))
    assert kept.count() == 1
    with pytest.raises(ValueError, match="text_column='body' is not a column"):
        msr.dedup(ds, text_column="body")
    with pytest.raises(TypeError, match="text_column='other' must hold strings, got Arrow type int64"):
        msr.dedup(ds, text_column="other")
    with pytest.raises(TypeError, match="ray.data.Dataset"):
        msr.dedup(["a b c"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        msr.dedup(ds, threshold=1.5)
    with pytest.raises(ValueError, match="weight_column='w' is not a column"):
        msr.weighted_sample(ds, weight_column="w", k=1, seed=0)


@pytest.mark.parametrize("blocks", [1, 4, 16])
def test_weighted_sample_equals_single_process(blocks: int) -> None:
    rng = np.random.default_rng(3)
    w = rng.lognormal(0, 2, 20_000)
    w[rng.random(w.size) < 0.1] = 0.0
    ds = ray.data.from_numpy(w).rename_columns({"data": "score"}).repartition(blocks)
    for k in (1, 100, 5000):
        got = msr.weighted_sample(ds, weight_column="score", k=k, seed=11, batch_size=3000)
        np.testing.assert_array_equal(got, ms.weighted_sample(w, k, seed=11))


def test_weighted_sample_whole_double_range_and_errors() -> None:
    w = np.array([1e-320, 2e-320, 1.0, 1e308, 0.0, 3.0] * 50)
    ds = ray.data.from_items([{"score": float(x)} for x in w], override_num_blocks=4)
    np.testing.assert_array_equal(msr.weighted_sample(ds, weight_column="score", k=250, seed=2),
                                  ms.weighted_sample(w, 250, seed=2))  # fmt: skip
    with pytest.raises(ValueError, match="exceeds the 250 items with positive weight"):
        msr.weighted_sample(ds, weight_column="score", k=251, seed=2)
    bad = ray.data.from_items([{"score": 1.0}, {"score": -1.0}])
    with pytest.raises(Exception, match="negative|must be"):
        msr.weighted_sample(bad, weight_column="score", k=1, seed=0)
    # errors name the row by its position in the dataset, as ms.weighted_sample does
    w = np.ones(1000)
    w[777] = np.nan
    with pytest.raises(ValueError) as want:
        ms.weighted_sample(w, 3, seed=0)
    nan = ray.data.from_numpy(w).rename_columns({"data": "score"}).repartition(4)
    with pytest.raises(Exception, match=re.escape(str(want.value))):
        msr.weighted_sample(nan, weight_column="score", k=3, seed=0, batch_size=100)
    with_null = ray.data.from_items([{"score": 1.0}] * 5 + [{"score": None}] + [{"score": 2.0}] * 3)
    with pytest.raises(Exception, match="is null at position 5"):
        msr.weighted_sample(with_null, weight_column="score", k=1, seed=0)


def test_missing_ray_says_how_to_install(tmp_path: Any) -> None:
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "import mixsieve.ray as msr\n"
        "try:\n    msr.dedup(None)\nexcept ImportError as e:\n    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert 'pip install "mixsieve[ray]"' in out.stdout, out.stdout + out.stderr
