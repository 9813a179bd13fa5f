"""LSH index and dedup: band choice against datasketch's rule (oracle + published vectors),
clusters against a brute-force oracle, recall and precision on planted near-duplicates,
save/load round trips, incremental dedup, corrupt files, thread invariance."""

import random

import mixsieve as ms
import numpy as np
import oracles
import pytest
import textgen

MAX32 = np.iinfo(np.uint32).max


@pytest.mark.parametrize(("t", "expected"), [(0.5, (25, 5)), (0.7, (14, 9)), (0.8, (9, 13)), (0.9, (5, 25))])
def test_bands_match_datasketch_published_values(t, expected):
    # Values computed with datasketch's _optimal_param (datasketch/lsh.py) for these thresholds.
    assert ms.resolve_bands(t, 128) == expected


@pytest.mark.parametrize(
    ("t", "k", "w"), [(0.3, 64, (0.5, 0.5)), (0.85, 96, (0.5, 0.5)), (0.75, 128, (0.3, 0.7))]
)
def test_bands_match_oracle(t, k, w):
    assert ms.resolve_bands(t, k, weights=w) == oracles.optimal_bands(t, k, *w)


def test_bands_rows_given():
    assert ms.resolve_bands(0.8, 128, bands=16) == (16, 8)
    assert ms.resolve_bands(0.8, 128, rows=4) == (32, 4)
    assert ms.resolve_bands(0.8, 128, bands=10, rows=12) == (10, 12)


def _planted_corpus(seed, n_base=300, n_dup=300, ngram=5):
    rng = random.Random(seed)
    vocab = textgen.vocab(rng, 4000)
    base = [textgen.random_words_doc(rng, vocab, rng.randint(150, 500)) for _ in range(n_base)]
    docs = list(base)
    rates = [0.0, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.15, 0.25]
    planted = []
    for i in range(n_dup):
        src = rng.randrange(n_base)
        docs.append(textgen.perturb_words(rng, base[src], rates[i % len(rates)], vocab))
        planted.append((src, len(docs) - 1))
    order = list(range(len(docs)))
    rng.shuffle(order)
    pos = {old: new for new, old in enumerate(order)}
    docs = [docs[o] for o in order]
    planted = [(min(pos[a], pos[b]), max(pos[a], pos[b])) for a, b in planted]
    sh = [oracles.shingles(d, "word", ngram) for d in docs]
    return docs, planted, sh


@pytest.mark.parametrize("threshold", [0.7, 0.8])
def test_recall_and_precision_on_planted_near_duplicates(threshold):
    docs, planted, sh = _planted_corpus(17, n_base=400, n_dup=600)
    res = ms.dedup(docs, threshold=threshold, num_perm=128, ngram=5)
    exact = {p: oracles.jaccard(sh[p[0]], sh[p[1]]) for p in planted}
    high = [p for p, j in exact.items() if j >= threshold + 0.1]
    assert len(high) > 100
    found = sum(res.cluster[a] == res.cluster[b] for a, b in high)
    assert found / len(high) >= 0.98, found / len(high)
    # Every reported match (a document and the earlier document it duplicates) is a real one.
    reported = [(int(d), i) for i, d in enumerate(res.duplicate_of) if d >= 0]
    assert reported
    worst = min(oracles.jaccard(sh[a], sh[b]) for a, b in reported)
    assert worst >= threshold - 0.15, worst
    # The kept document is the lowest index of its cluster.
    for i, c in enumerate(res.cluster):
        assert c <= i and res.keep[c] and (res.keep[i] == (c == i))


def test_clusters_match_oracle_connected_components():
    docs, _, _ = _planted_corpus(5, n_base=120, n_dup=180, ngram=3)
    docs += ["", "  !!! ", ""]  # empty documents never match each other by default
    h = ms.MinHasher(num_perm=64, ngram=3, seed=9)
    sigs = h.signatures(docs)
    for threshold, match_empty in [(0.5, False), (0.75, False), (0.75, True)]:
        b, r = ms.resolve_bands(threshold, 64)
        res = ms.dedup(docs, threshold=threshold, num_perm=64, ngram=3, seed=9, match_empty=match_empty)
        want = oracles.clusters(sigs.tolist(), b, r, threshold, empty=MAX32, match_empty=match_empty)
        assert res.cluster.tolist() == want
        assert res.capped == 0  # no bucket cap was reached, so the result is the exact rule's
    assert res.cluster[-1] == len(docs) - 3  # match_empty=True joins the empty ones


def test_empty_documents_are_not_duplicates_unless_asked():
    res = ms.dedup(["", "", "...", "real words here", ""], ngram=2)
    assert res.keep.tolist() == [True, True, True, True, True]
    res = ms.dedup(["", "", "...", "real words here", ""], ngram=2, match_empty=True)
    assert res.keep.tolist() == [True, False, False, True, False]


def test_dedup_thread_invariance_and_exact_copies():
    docs, _, _ = _planted_corpus(8, n_base=200, n_dup=200)
    docs = docs + docs[:50] * 3  # exact copies ride on their first occurrence
    ref = ms.dedup(docs, threads=1)
    for t in [2, 4, None]:
        res = ms.dedup(docs, threads=t)
        np.testing.assert_array_equal(res.cluster, ref.cluster)
        np.testing.assert_array_equal(res.duplicate_of, ref.duplicate_of)
    n = len(docs) - 150
    for i in range(150):
        assert ref.cluster[n + i] == ref.cluster[i % 50]
        assert ref.similarity[n + i] == 1.0


def test_index_add_reports_best_earlier_match_and_query():
    h = ms.MinHasher(num_perm=128, ngram=2)
    docs = ["a b c d e f g h i j", "x y z w v u", "a b c d e f g h i j", "a b c d e f g h i k", "x y z w v u"]
    idx = ms.LSHIndex(threshold=0.5, num_perm=128)
    dup, sim = idx.add(h.signatures(docs), return_similarity=True)
    assert dup.tolist() == [-1, -1, 0, 0, 1]
    assert sim[2] == 1.0 and 0.5 <= sim[3] < 1.0
    assert idx.query(h.signature("A b c d e f g h i j!")).tolist() == [0, 2, 3]
    assert idx.query(h.signature("nothing like the others at all")).tolist() == []
    assert len(idx) == 5 and idx.keys().tolist() == [0, 1, 2, 3, 4]


def test_save_load_round_trip_and_incremental_dedup(tmp_path):
    docs, _, _ = _planted_corpus(23, n_base=200, n_dup=100)
    h = ms.MinHasher(num_perm=128, ngram=5)
    first, second = docs[:200], docs[200:]
    idx = ms.LSHIndex(threshold=0.8, num_perm=128)
    idx.meta = {"hasher": h.params(), "dataset": "first"}
    keys = np.arange(1000, 1200)
    idx.add(h.signatures(first), keys=keys)
    path = tmp_path / "first.msidx"
    idx.save(path)
    loaded = ms.LSHIndex.load(path)
    assert (loaded.threshold, loaded.num_perm, loaded.bands, loaded.rows) == (0.8, 128, idx.bands, idx.rows)
    assert loaded.meta == idx.meta and len(loaded) == 200
    np.testing.assert_array_equal(loaded.keys(), keys)
    np.testing.assert_array_equal(loaded.signatures(), idx.signatures())
    s2 = h.signatures(second)
    for q in s2[:40]:
        np.testing.assert_array_equal(loaded.query(q), idx.query(q))
    # New documents report which earlier key they matched; the reference is a fresh index.
    got = loaded.add(s2)
    ref_idx = ms.LSHIndex(threshold=0.8, num_perm=128)
    ref_idx.add(h.signatures(first), keys=keys)
    np.testing.assert_array_equal(got, ref_idx.add(s2))
    assert (got >= 1000).sum() >= 10
    # Saving again after the append keeps everything.
    loaded.save(path)
    again = ms.LSHIndex.load(path)
    assert len(again) == 300
    np.testing.assert_array_equal(again.keys()[200:], np.arange(200, 300))


def test_load_rejects_truncated_corrupt_and_foreign_files(tmp_path):
    h = ms.MinHasher(num_perm=64, ngram=2)
    idx = ms.LSHIndex(threshold=0.6, num_perm=64)
    idx.add(h.signatures([f"doc number {i} with words" for i in range(50)]))
    good = tmp_path / "good.idx"
    idx.save(good)
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "one byte short": data[:-1],
        "trailing": data + b"\0",
        "bit flip": data[:100] + bytes([data[100] ^ 1]) + data[101:],
        "foreign": b"PK\x03\x04" + b"\0" * 200,
        "empty": b"",
        "header only": data[:48],
    }
    for name, blob in cases.items():
        p = tmp_path / f"{name}.idx"
        p.write_bytes(blob)
        with pytest.raises(ValueError, match=str(p).replace("\\", "\\\\")):
            ms.LSHIndex.load(p)
    rng = random.Random(1)
    for _ in range(300):  # random corruption never crashes
        blob = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        p = tmp_path / "fuzz.idx"
        p.write_bytes(bytes(blob[: rng.randint(0, len(blob))]))
        try:
            ms.LSHIndex.load(p)
        except ValueError:
            pass


def test_uint64_signatures_index_and_dedup(tmp_path):
    docs, planted, _ = _planted_corpus(2, n_base=100, n_dup=50)
    res32 = ms.dedup(docs)
    res64 = ms.dedup(docs, dtype=np.uint64)
    assert abs(int(res32.keep.sum()) - int(res64.keep.sum())) <= 3
    h = ms.MinHasher(num_perm=128, dtype=np.uint64)
    idx = ms.LSHIndex(0.8, 128)
    idx.add(h.signatures(docs))
    idx.save(tmp_path / "x")
    loaded = ms.LSHIndex.load(tmp_path / "x")
    assert loaded.dtype == np.uint64
    with pytest.raises(TypeError, match="uint64"):
        loaded.add(ms.MinHasher().signatures(["a b c"]))


def test_large_cluster_of_near_identical_documents():
    # Thousands of one-word edits of one template, among unrelated documents: one cluster, the
    # template kept, every edit removed with a real near-duplicate named (exact Jaccard checked).
    rng = random.Random(31)
    vocab = textgen.vocab(rng, 3000)
    template = textgen.random_words_doc(rng, vocab, 400).split()
    docs, edited = [], []
    for i in range(3000):
        w = list(template)
        w[rng.randrange(len(w))] = f"edit{i}"
        edited.append(len(docs))
        docs.append(" ".join(w))
        if i % 10 == 0:
            docs.append(textgen.random_words_doc(rng, vocab, 200))
    res = ms.dedup(docs, threshold=0.8)
    first = edited[0]
    assert all(res.cluster[i] == first for i in edited)
    others = [i for i in range(len(docs)) if i not in set(edited)]
    assert all(res.keep[i] for i in others)
    sh = {i: oracles.shingles(docs[i], "word", 5) for i in rng.sample(edited[1:], 50)}
    for i in sh:
        j = int(res.duplicate_of[i])
        assert j in set(edited) and oracles.jaccard(sh[i], oracles.shingles(docs[j], "word", 5)) >= 0.8


def test_save_gives_the_usual_file_mode(tmp_path):
    import os

    idx = ms.LSHIndex(0.8, 128)
    idx.add(ms.MinHasher().signatures(["a b c d e f", "g h i j k l"]))
    old = os.umask(0o022)
    try:
        idx.save(tmp_path / "a.msidx")
        os.umask(0o077)
        idx.save(tmp_path / "b.msidx")
    finally:
        os.umask(old)
    assert (tmp_path / "a.msidx").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.msidx").stat().st_mode & 0o777 == 0o600
    assert ms.LSHIndex.load(tmp_path / "a.msidx").keys().tolist() == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.msidx", "b.msidx"]


def test_save_to_a_folder_is_refused_before_writing(tmp_path):
    idx = ms.LSHIndex(0.8, 128)
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError, match="not a folder") as e:
        idx.save(tmp_path / "dir")
    assert ".mixsieve-" not in str(e.value)
    assert list(tmp_path.iterdir()) == [tmp_path / "dir"] and not any((tmp_path / "dir").iterdir())


@pytest.mark.parametrize("raising", [False, True])
def test_clustering_runs_signal_handlers_while_it_works(raising):
    # A helper thread sends SIGUSR1 while the clustering runs without the GIL (a huge switch
    # interval keeps it from running Python at any other time). Handlers that run only after
    # the native call returns run once (pending signals coalesce); handlers run from inside the
    # clustering run once per check that found a new signal.
    import signal
    import sys
    import threading
    import time

    from mixsieve import _core

    sigs = np.random.default_rng(5).integers(0, 2**32, size=(300_000, 16), dtype=np.uint32)
    calls = []
    state = {"in_call": False, "done": False}
    gate = threading.Lock()

    def handler(signum, frame):
        if state["in_call"]:
            calls.append(signum)
            if raising and len(calls) == 1:
                raise KeyboardInterrupt

    def sender():
        with gate:
            while not state["done"]:
                signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
                time.sleep(0.0005)

    old_handler = signal.signal(signal.SIGUSR1, handler)
    old_interval = sys.getswitchinterval()
    gate.acquire()
    t = threading.Thread(target=sender)
    t.start()
    sys.setswitchinterval(1000)
    try:
        state["in_call"] = True
        gate.release()
        if raising:  # the handler's exception stops the clustering and comes out of it
            with pytest.raises(KeyboardInterrupt):
                _core.cluster_signatures(sigs, 4, 4, 0.8, True, False)
        else:
            _core.cluster_signatures(sigs, 4, 4, 0.8, True, False)
    finally:
        state["in_call"] = False
        state["done"] = True
        sys.setswitchinterval(old_interval)
        t.join()
        signal.signal(signal.SIGUSR1, old_handler)
    assert len(calls) > 1 or raising


@pytest.mark.parametrize("texts", [None, (t for t in ["a b c", "d e f"]), 5])
def test_dedup_texts_that_are_not_a_list_are_named(texts):
    with pytest.raises(TypeError, match=r"texts must be a list \(or Arrow string array\) of str"):
        ms.dedup(texts)


def test_dedup_result_repr_uses_the_attribute_names():
    res = ms.dedup(["one two three four five six", "one two three four five six", "else"], ngram=2)
    text = repr(res)
    assert f"num_removed={res.num_removed}" in text and f"num_clusters={res.num_clusters}" in text
    assert " removed=" not in text and " clusters=" not in text


@pytest.mark.parametrize("kw", [{"bands": 2}, {"rows": 64}])
def test_dedup_bands_and_rows_go_together(kw):
    with pytest.raises(ValueError, match="bands and rows go together"):
        ms.dedup(["a b c"], **kw)
    assert ms.dedup(["a b c", "a b c"], bands=2, rows=64).num_removed == 1
