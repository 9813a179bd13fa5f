"""Work and memory bounds of dedup, measured without clocks: on templated documents (one shared
page plus a few unique words, estimated Jaccard just under the threshold) the number of
candidate comparisons grows linearly with the number of documents and stays within the
documented bound, while planted near-duplicates among them are still found; the peak memory
of hashing one very large document (in Python and in mixsieve-dedup) stays close to the size
of the document."""

import json
import os
import random
import subprocess
import sys
import textwrap

import mixsieve as ms
import oracles
import pytest
from mixsieve.cli import dedup_binary

BUCKET_CAP = 64  # documented in DedupResult.comparisons and docs/dedup.md


def templated(n, seed=0, planted=0):
    """n pages of one 300-word template with 20 unique words in 4 runs (estimated Jaccard of
    two pages about 0.7), then `planted` one-word edits of earlier pages."""
    rng = random.Random(seed)
    vocab = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8)))
        for _ in range(5000)
    ]
    tmpl = [rng.choice(vocab) for _ in range(300)]
    docs = []
    for i in range(n):
        words = list(tmpl)
        for r in range(4):
            pos = rng.randrange(len(words) + 1)
            words[pos:pos] = [f"u{i}x{r}y{j}" for j in range(5)]
        docs.append(words)
    pairs = []
    for _ in range(planted):
        src = rng.randrange(n)
        words = list(docs[src])
        words[rng.randrange(len(words))] = "edited"
        pairs.append((src, len(docs)))
        docs.append(words)
    return [" ".join(w) for w in docs], pairs


def test_templated_pages_cost_linear_work():
    small, _ = templated(3000)
    large, _ = templated(12000)
    rs, rl = ms.dedup(small), ms.dedup(large)
    for res, n in [(rs, 3000), (rl, 12000)]:
        assert 0 < res.comparisons <= n * res.bands * BUCKET_CAP
        assert res.capped > 0  # the caps did change the result here, and the result says so
    # Four times the documents, about four times the comparisons (a quadratic rule: sixteen).
    assert rl.comparisons < 6 * rs.comparisons, (rs.comparisons, rl.comparisons)


def test_planted_near_duplicates_among_templates_are_found():
    docs, pairs = templated(6000, seed=3, planted=300)
    res = ms.dedup(docs)
    assert all(res.cluster[a] == res.cluster[b] for a, b in pairs)
    # Each reported match is a verified one: estimated Jaccard at or above the threshold.
    for i in range(len(docs)):
        if res.duplicate_of[i] >= 0:
            assert res.similarity[i] >= 0.8 and res.duplicate_of[i] < i


@pytest.mark.parametrize(("unit", "ngram"), [("word", 1), ("word", 5), ("char", 1), ("char", 4)])
def test_long_documents_hashed_in_pieces_match_the_oracle(unit, ngram):
    # Documents longer than one piece (64 KiB), with multi-byte characters, ill-formed bytes,
    # long words and separators falling on every kind of piece boundary.
    rng = random.Random(ngram * 10 + (unit == "char"))
    h = ms.MinHasher(num_perm=16, ngram=ngram, unit=unit, seed=5)
    docs = []
    for size in [65535, 65536, 65537, 140_000]:
        parts, n = [], 0
        while n < size:
            piece = rng.choice(
                ["word ", "Ünïcödé ", "日本語", "x" * rng.randint(1, 40), " ", "\n", "é", "😀 ", "İs ", "A1"]
            )
            parts.append(piece)
            n += len(piece.encode())
        text = "".join(parts).encode()
        docs.append(text)
        docs.append(text[:65535] + b"\xe6\x97" + text[65535:])  # a split and ill-formed sequence
        docs.append(b"long" * 50_000)  # one 200 KB word
    want = [oracles.signature(d, num_perm=16, ngram=ngram, unit=unit, seed=5) for d in docs]
    assert h.signatures(docs).tolist() == want


def _peak_rss_delta_mb(code):
    """Run `code` in a fresh interpreter; it prints the peak RSS increase in MiB."""
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip().splitlines()[-1])


BIG_MB = 40


@pytest.mark.parametrize("unit", ["word", "char"])
def test_signature_of_one_huge_document_uses_memory_close_to_its_size(unit):
    delta = _peak_rss_delta_mb(
        f"""
        import resource, mixsieve as ms
        words = ["alpha", "beta", "gamma", "delta", "kappa", "zeta"]
        # Built from a 1 MB block, so making it does not raise the peak much above its size.
        block = " ".join(words[(i * 7) % 6] + str(i % 9973) for i in range(1024 * 1024 // 11)) + " "
        doc = block * {BIG_MB}
        del block
        h = ms.MinHasher(unit="{unit}")
        h.signature("warm up")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        h.signature(doc)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) / 1024)
        """
    )
    # The text itself is already in memory; hashing it may add a small working set only.
    assert delta < 0.25 * BIG_MB, delta


@pytest.mark.skipif(not hasattr(os, "wait4"), reason="needs os.wait4 for a child's peak RSS")
def test_cli_peak_memory_for_one_huge_document(tmp_path):
    words = ["alpha", "beta", "gamma", "delta", "kappa", "zeta"]
    doc = " ".join(words[(i * 7) % 6] + str(i % 9973) for i in range(BIG_MB * 1024 * 1024 // 11))
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"text": doc}) + "\n" + json.dumps({"text": "a small one"}) + "\n")
    size_mb = path.stat().st_size / 2**20
    del doc
    # Launched from a fresh, small interpreter: a child forked from this (large) test process
    # would count the parent's resident pages in its peak.
    launcher = (
        "import os, subprocess, sys\n"
        "p = subprocess.Popen(sys.argv[1:])\n"
        "_, status, usage = os.wait4(p.pid, 0)\n"
        "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n"
    )
    args = [dedup_binary(), str(path), "-o", str(tmp_path / "o.jsonl"), "--quiet"]
    out = subprocess.run([sys.executable, "-c", launcher, *args], capture_output=True, text=True, timeout=300)
    rc, maxrss_kb = map(int, out.stdout.split())
    assert rc == 0, out.stderr
    peak_mb = maxrss_kb / 1024
    # The input as read plus its decoded text field, and a small working set.
    assert peak_mb < 2 * size_mb + 48, (peak_mb, size_mb)
