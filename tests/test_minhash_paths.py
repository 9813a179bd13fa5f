"""MinHash vector paths: every level this CPU runs (scalar, AVX2, AVX-512), forced with the
_core._minhash_force_path hook, gives the same normalised text and the same signature bytes
as the scalar path, on ASCII, non-ASCII, mixed, empty and invalid UTF-8 documents, for both
units and dtypes and slot counts that do and do not fill whole vectors."""

from __future__ import annotations

import random

import mixsieve as ms
import numpy as np
import oracles
import pytest
import textgen
from mixsieve import _core

LEVELS = [lv for lv in (1, 2) if _core._minhash_simd_level() >= lv]


def _documents() -> list[str | bytes]:
    rng = random.Random(2024)
    vocab = textgen.vocab(rng, 500)
    bad = [b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\xc0\xaf", b"\x80"]
    docs: list[str | bytes] = ["", " ", "...", "a", "A b", "x" * 200, ("Word " * 30).strip()]
    docs += [textgen.random_words_doc(rng, vocab, rng.randint(1, 400)) for _ in range(40)]
    docs += [textgen.random_unicode(rng, 400) for _ in range(40)]
    for _ in range(40):  # mostly ASCII with non-ASCII and invalid bytes at random places
        parts = []
        for _ in range(rng.randint(0, 120)):
            r = rng.random()
            if r < 0.1:
                parts.append(rng.choice(bad))
            elif r < 0.2:
                parts.append(rng.choice(["Ünï", "straße", "ΣΊΣΥΦΟΣ", "中文", "😀", "\u00a0", "İ"]).encode())
            else:
                parts.append(rng.choice(vocab).encode() + rng.choice([b" ", b", ", b".\n", b"", b"-", b"9"]))
        docs.append(b"".join(parts))
    # Long documents: several streaming pieces, words longer than a vector, digit runs.
    docs.append(textgen.random_words_doc(rng, vocab, 40_000))
    docs.append(" ".join("Ab9" * rng.randint(1, 40) for _ in range(3000)))
    docs.append("é".join(rng.choice(vocab) for _ in range(20_000)))
    return docs


DOCS = _documents()


@pytest.fixture
def force_level():
    old = _core._minhash_force_path(-1)
    yield lambda lv: _core._minhash_force_path(lv)
    _core._minhash_force_path(old)


@pytest.mark.parametrize("level", LEVELS)
def test_normalized_text_equals_scalar(level, force_level):
    force_level(0)
    want = [_core.normalize_text(d) for d in DOCS]
    force_level(level)
    assert [_core.normalize_text(d) for d in DOCS] == want


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("unit", ["word", "char"])
@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("num_perm,ngram", [(128, 5), (37, 3), (200, 1), (1, 2), (16, 5)])
def test_signatures_equal_scalar(level, unit, dtype, num_perm, ngram, force_level):
    h = ms.MinHasher(num_perm=num_perm, ngram=ngram, unit=unit, seed=7, dtype=dtype)
    force_level(0)
    want = h.signatures(DOCS, threads=1)
    force_level(level)
    got = h.signatures(DOCS, threads=1)
    assert got.tobytes() == want.tobytes()


def test_scalar_path_matches_oracle(force_level):
    force_level(0)
    h = ms.MinHasher(num_perm=37, ngram=3, seed=7)
    small = [d for d in DOCS if len(d) < 5000]
    for d, s in zip(small, h.signatures(small)):
        assert s.tolist() == oracles.signature(d, num_perm=37, ngram=3, unit="word", seed=7), d


def test_force_path_rejects_bad_level():
    with pytest.raises(ValueError):
        _core._minhash_force_path(3)
