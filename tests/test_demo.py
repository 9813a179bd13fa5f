"""The README's main job (mixsieve demo) on the real text of this machine: it finds the
near-duplicates every Python install has, and every document it names as a match exists and
belongs to the same cluster as the document it was matched with; then it mixes the deduplicated
sources through a 2-worker DataLoader, and the realised shares it prints hold the exact bound."""

import io
import re

import mixsieve as ms
from mixsieve import demo


def test_demo_reports_real_matches():
    out = io.StringIO()
    removed = demo.run(out=out, samples=5000)
    text = out.getvalue()
    names, texts = demo.local_corpus()
    assert removed > 0 and "clusters of near-duplicates" in text
    res = ms.dedup(texts)
    where = {n: i for i, n in enumerate(names)}
    pairs = re.findall(r"drop (\S+)  \((?:J~[0-9.]+ with|same cluster as) (\S+)\)", text)
    pairs += re.findall(r"J~[0-9.]+  (\S+)  ~  (\S+)", text)
    assert pairs
    for a, b in pairs:
        assert res.cluster[where[a]] == res.cluster[where[b]], (a, b)


def test_demo_mixes_the_deduplicated_sources():
    names, texts = demo.local_corpus()
    res = ms.dedup(texts)
    out = io.StringIO()
    realised = demo.mix_report(names, texts, res.keep, samples=3000, workers=2, out=out)
    text = out.getvalue()
    assert "through a DataLoader with 2 workers" in text
    total = sum(demo.MIX_TARGETS[k] for k in realised)
    for k, share in realised.items():
        assert abs(share * 3000 - 3000 * demo.MIX_TARGETS[k] / total) < 1  # exact mode
        removed = int(re.search(rf"\n  {k}\s+[0-9,]+\s+([0-9,]+)", text).group(1).replace(",", ""))
        groups = [i for i, n in enumerate(names) if demo._source_of(n) == k]
        assert removed == int((~res.keep[groups]).sum())
