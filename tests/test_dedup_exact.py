"""Exact duplicates in ms.dedup: DedupResult.exact is True exactly where a document's
normalised text (docs/dedup.md: words of Unicode letters, marks and numbers, lower-cased code
point by code point, joined by single spaces) equals an earlier document's. The oracle
normalises in pure Python; the kept set is the same with and without exact copies."""

import random
import unicodedata

import mixsieve as ms
import numpy as np
import pytest
import textgen


def normalise(text: str) -> str:
    words, cur = [], []
    for ch in text:
        if unicodedata.category(ch)[0] in "LMN":
            low = ch.lower()
            cur.append(low if len(low) == 1 else ch)
        elif cur:
            words.append("".join(cur))
            cur = []
    if cur:
        words.append("".join(cur))
    return " ".join(words)


def oracle_exact(texts, match_empty=False):
    seen, out = set(), []
    for t in texts:
        n = normalise(t)
        out.append(n in seen and (bool(n) or match_empty))
        seen.add(n)
    return np.array(out, dtype=bool)


def variants(rng, doc, vocab):
    """Copies that normalise alike (case, punctuation, spacing) and ones that do not."""
    same = [doc, doc.upper(), "  " + doc.replace(" ", " ,  ") + " !", doc.replace(" ", "\n\t")]
    differ = [textgen.perturb_words(rng, doc, 0.02, vocab), doc + " extra", doc.replace(" ", "")]
    return same, differ


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_matches_the_normalising_oracle(seed):
    rng = random.Random(seed)
    vocab = textgen.vocab(rng, 500) + ["Straße", "ΣΊΣΥΦΟΣ", "naïve", "日本語", "e\u0301t\u00e9", "١٢٣"]
    base = [textgen.random_words_doc(rng, vocab, rng.randint(1, 60)) for _ in range(300)]
    docs = list(base)
    for _ in range(400):
        same, differ = variants(rng, rng.choice(base), vocab)
        docs.insert(rng.randrange(len(docs) + 1), rng.choice(same + differ))
    docs += ["", "   ", "!!! ...", ""]  # no words: exact only with match_empty
    for match_empty in (False, True):
        res = ms.dedup(docs, ngram=3, match_empty=match_empty)
        want = oracle_exact(docs, match_empty)
        assert want.sum() > 100
        np.testing.assert_array_equal(res.exact, want)
        assert res.num_exact == int(want.sum())
        # an exact duplicate is never kept: it joins the cluster of its earlier copy
        assert not (res.exact & res.keep).any()


def test_exact_copies_do_not_change_the_kept_set():
    rng = random.Random(5)
    vocab = textgen.vocab(rng, 800)
    docs = [textgen.random_words_doc(rng, vocab, rng.randint(40, 200)) for _ in range(500)]
    with_copies = list(docs)
    for i in range(0, 500, 7):
        with_copies.insert(with_copies.index(docs[i]) + 1, docs[i].upper())
    a, b = ms.dedup(docs), ms.dedup(with_copies)
    kept_a = [d for d, k in zip(docs, a.keep) if k]
    kept_b = [d for d, k in zip(with_copies, b.keep) if k]
    assert kept_a == kept_b
    assert b.num_exact == len(range(0, 500, 7)) and a.num_exact == 0


def test_long_documents_and_arrow_input():
    """Documents longer than one 64 KiB normalisation piece, and Arrow string arrays."""
    pa = pytest.importorskip("pyarrow")
    rng = random.Random(9)
    vocab = textgen.vocab(rng, 2000)
    long_doc = textgen.random_words_doc(rng, vocab, 40000)
    assert len(long_doc.encode()) > 3 * 65536
    # spacing moves the 64 KiB piece boundaries: the digest does not depend on them
    docs = [
        long_doc,
        long_doc.upper(),
        long_doc.replace(" ", " ,  "),
        long_doc + " x",
        "short one",
        "SHORT one",
    ]
    want = oracle_exact(docs)
    np.testing.assert_array_equal(ms.dedup(docs).exact, want)
    np.testing.assert_array_equal(ms.dedup(pa.array(docs)).exact, want)
    np.testing.assert_array_equal(ms.dedup(pa.chunked_array([docs[:2], docs[2:]])).exact, want)
