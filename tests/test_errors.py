"""Bad input gives a ValueError/TypeError that names the offending value, never a crash."""

import mixsieve as ms
import numpy as np
import pytest


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"num_perm": 0}, ValueError, "num_perm"),
        ({"num_perm": -5}, ValueError, "num_perm"),
        ({"num_perm": 12.5}, TypeError, "num_perm"),
        ({"ngram": 0}, ValueError, "ngram"),
        ({"unit": "token"}, ValueError, "token"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1 << 64}, ValueError, "seed"),
        ({"dtype": np.float32}, TypeError, "float32"),
        ({"dtype": np.int32}, TypeError, "int32"),
    ],
)
def test_minhasher_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ms.MinHasher(**kwargs)


def test_signatures_bad_texts():
    h = ms.MinHasher(num_perm=8)
    with pytest.raises(TypeError, match=r"texts\[2\] is int"):
        h.signatures(["a", "b", 3])
    with pytest.raises(TypeError, match=r"texts\[0\] is NoneType"):
        h.signatures([None])
    with pytest.raises(TypeError, match="single str"):
        h.signatures("just one string")
    with pytest.raises(ValueError, match=r"texts\[1\].*surrogate"):
        h.signatures(["ok", "bad \ud800 surrogate"])
    with pytest.raises(ValueError, match="threads"):
        h.signatures(["a"], threads=0)
    with pytest.raises(TypeError):
        h.signatures(12)
    assert h.signatures([]).shape == (0, 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": -0.3}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"bands": 10}, "not divisible by bands=10"),
        ({"rows": 7}, "not divisible by rows=7"),
        ({"bands": 20, "rows": 7}, "exceeds num_perm=128"),
        ({"bands": 0}, "bands"),
        ({"weights": (0, 0)}, "weights"),
    ],
)
def test_lsh_bad_arguments(kwargs, match):
    args = {"threshold": 0.8, "num_perm": 128, **kwargs}
    with pytest.raises(ValueError, match=match):
        ms.LSHIndex(**args)


def test_lsh_bad_signatures():
    idx = ms.LSHIndex(threshold=0.8, num_perm=16)
    with pytest.raises(ValueError, match="num_perm=16"):
        idx.add(np.zeros((3, 15), np.uint32))
    with pytest.raises(TypeError, match="float64"):
        idx.add(np.zeros((3, 16)))
    with pytest.raises(ValueError, match=r"shape \(2, 3, 16\)"):
        idx.add(np.zeros((2, 3, 16), np.uint32))
    with pytest.raises(ValueError, match="keys"):
        idx.add(np.zeros((3, 16), np.uint32), keys=[1, 2])
    with pytest.raises(TypeError, match="keys"):
        idx.add(np.zeros((2, 16), np.uint32), keys=np.array([1.5, 2.5]))
    idx.add(np.zeros((2, 16), np.uint32))
    with pytest.raises(TypeError, match="uint64"):
        idx.add(np.zeros((2, 16), np.uint64))
    with pytest.raises(ValueError, match="1-D"):
        idx.query(np.zeros((2, 16), np.uint32))


def test_estimate_jaccard_bad_input():
    a = np.zeros(8, np.uint32)
    with pytest.raises(ValueError, match="shapes differ"):
        ms.estimate_jaccard(a, np.zeros(9, np.uint32))
    with pytest.raises(TypeError, match="dtypes differ"):
        ms.estimate_jaccard(a, np.zeros(8, np.uint64))
    with pytest.raises(TypeError, match="float64"):
        ms.estimate_jaccard(np.zeros(8), np.zeros(8))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        ms.estimate_jaccard(np.zeros((1, 1, 8), np.uint32), np.zeros((1, 1, 8), np.uint32))


def test_dedup_bad_input(tmp_path):
    with pytest.raises(TypeError, match="single str"):
        ms.dedup("one document")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        ms.dedup(["a", 1.5])
    with pytest.raises(ValueError, match="threshold"):
        ms.dedup(["a"], threshold=2)
    with pytest.raises(FileNotFoundError):
        ms.LSHIndex.load(tmp_path / "missing.idx")
