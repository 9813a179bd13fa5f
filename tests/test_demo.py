"""The README's main job (mixsieve demo) on the real text of this machine: it finds the
near-duplicates every Python install has, and every document it names as a match exists and
belongs to the same cluster as the document it was matched with."""

import io
import re

import mixsieve as ms
from mixsieve import demo


def test_demo_reports_real_matches():
    out = io.StringIO()
    removed = demo.run(out=out)
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
