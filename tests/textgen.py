"""Seeded generators of test text: random Unicode from many scripts, and word documents."""

from __future__ import annotations

import random

# Code point ranges mixing the cases the normaliser must get right: ASCII letters, digits and
# punctuation, Latin-1 and Latin Extended (case pairs, U+0130), Greek with final sigma,
# Cyrillic, combining marks, Devanagari, CJK, Hangul, emoji (astral), Unicode spaces and
# punctuation, controls.
RANGES = [
    (0x20, 0x7E),
    (0x20, 0x7E),
    (0x20, 0x7E),
    (0x09, 0x0D),
    (0xA0, 0xFF),
    (0x100, 0x17F),
    (0x180, 0x24F),
    (0x370, 0x3FF),
    (0x400, 0x4FF),
    (0x300, 0x36F),
    (0x900, 0x97F),
    (0x4E00, 0x4FFF),
    (0xAC00, 0xACFF),
    (0x1F600, 0x1F64F),
    (0x2000, 0x206F),
    (0x3000, 0x303F),
    (0x10400, 0x1044F),
    (0x1D400, 0x1D7FF),
    (0xFF00, 0xFFEF),
    (0x1E900, 0x1E95F),
]


def random_unicode(rng: random.Random, max_len: int = 200) -> str:
    n = rng.randint(0, max_len)
    out = []
    for _ in range(n):
        lo, hi = rng.choice(RANGES)
        cp = rng.randint(lo, hi)
        if 0xD800 <= cp <= 0xDFFF:
            continue
        out.append(chr(cp))
    return "".join(out)


def random_words_doc(rng: random.Random, vocab: list[str], n_words: int) -> str:
    seps = [" ", " ", " ", ", ", ". ", "\n", " -- ", "\t"]
    parts = []
    for i in range(n_words):
        w = rng.choice(vocab)
        if rng.random() < 0.1:
            w = w.capitalize()
        parts.append(w)
        parts.append(rng.choice(seps) if i + 1 < n_words else "")
    return "".join(parts)


def vocab(rng: random.Random, size: int = 3000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(size)]


def perturb_words(rng: random.Random, text: str, rate: float, vocab_: list[str]) -> str:
    out = []
    for w in text.split():
        r = rng.random()
        if r < rate / 3:
            continue
        if r < 2 * rate / 3:
            out.append(rng.choice(vocab_))
            continue
        out.append(w)
        if r < rate:
            out.append(rng.choice(vocab_))
    return " ".join(out)
