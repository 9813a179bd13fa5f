"""MinHash signatures on CUDA (``device=`` of ``MinHasher.signatures`` and ``dedup``) against
the CPU path.

On a GPU: signatures bit-identical to the CPU's on random Unicode (every plane, ill-formed
UTF-8, both units, both slot widths, several ngram / num_perm / seed choices), on the bundled
demo corpus and on a 50 MB document; ``dedup(device="cuda")`` equal to ``dedup()`` field by
field on planted near-duplicates and exact copies (the digests of ``exact`` included);
``(data, offsets)`` tensor input read in place (offsets not starting at 0 included); Arrow
input; empty input; chunks split by the byte budget. On any machine: ``device="cuda"`` raises
the RuntimeError naming what is missing, ``"cpu"`` and None leave the CPU path unchanged, bad
device strings and bad offsets are refused, the host packer copies lists and Arrow arrays
exactly, the chunk plan covers every document, and the native binding checks its arguments
before touching a device.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import textgen

torch = pytest.importorskip("torch")

import mixsieve as ms  # noqa: E402
from mixsieve import _minhash_cuda, demo  # noqa: E402
from mixsieve.mixup import _cuda  # noqa: E402

OK, WHY = _cuda.available()
gpu = pytest.mark.skipif(not OK, reason=WHY)

BAD_UTF8 = [
    b"\x80",
    b"\xc3",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xf0\x9f\x98",
    b"\xff",
    b"\xc0\xaf",
    b"\xf4\x90\x80\x80",
]


def random_docs(seed: int, n: int = 300, max_len: int = 300) -> list[bytes]:
    """Random Unicode with ill-formed bytes spliced in, empty and separator-only documents."""
    rng = random.Random(seed)
    docs: list[bytes] = [b"", b" ,.! ", b"One", "Straße İstanbul ǅ Ⱥ".encode()]
    for _ in range(n):
        parts = [textgen.random_unicode(rng, max_len).encode()]
        for _ in range(rng.randint(0, 3)):
            at = rng.randint(0, len(parts[-1]))
            parts[-1] = parts[-1][:at] + rng.choice(BAD_UTF8) + parts[-1][at:]
        docs.append(b"".join(parts))
    return docs


def pair(docs: list[bytes], lead: int = 0, device: Any = "cpu") -> tuple[Any, Any]:
    """The Arrow layout of docs as torch tensors: data (after `lead` padding bytes) and offsets."""
    blob = b"#" * lead + b"".join(docs)
    offsets = np.cumsum([lead] + [len(d) for d in docs]).astype(np.int64)
    data = torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.empty(0, dtype=torch.uint8)
    return data.to(device), torch.from_numpy(offsets).to(device)


def same_signatures(h: ms.MinHasher, docs: Any, cpu_docs: Any = None, **kw: Any) -> None:
    ref = h.signatures(docs if cpu_docs is None else cpu_docs)
    got = h.signatures(docs, device="cuda", **kw)
    assert got.device.type == "cuda" and got.dtype == (torch.uint32 if h.dtype == np.uint32 else torch.uint64)
    assert tuple(got.shape) == ref.shape
    np.testing.assert_array_equal(got.cpu().numpy(), ref)


# ---------------------------------------------------------------------------------------------
# Any machine


def test_device_cuda_says_what_is_missing() -> None:
    if OK:
        pytest.skip("CUDA runs here")
    h = ms.MinHasher(16, 2)
    for device in ("cuda", "cuda:0", torch.device("cuda")):
        with pytest.raises(
            RuntimeError, match="device='cuda(:0)?' cannot run here: .*(without CUDA|no CUDA device)"
        ):
            h.signatures(["a b c"], device=device)
    with pytest.raises(RuntimeError, match="cannot run here"):
        ms.dedup(["a b c"], device="cuda")
    data, offsets = pair([b"a b c"])
    with pytest.raises(RuntimeError, match="cannot run here"):
        h.signatures((data, offsets), device="cuda")


def test_cpu_and_none_leave_the_cpu_path_unchanged() -> None:
    docs = random_docs(1, 60)
    for dtype in (np.uint32, np.uint64):
        h = ms.MinHasher(32, 3, dtype=dtype)
        ref = h.signatures(docs)
        assert isinstance(ref, np.ndarray)
        np.testing.assert_array_equal(h.signatures(docs, device="cpu"), ref)
        np.testing.assert_array_equal(h.signatures(docs, device=None), ref)
        np.testing.assert_array_equal(h.signatures(docs, device=torch.device("cpu")), ref)
    a, b = ms.dedup(docs, ngram=2), ms.dedup(docs, ngram=2, device="cpu")
    np.testing.assert_array_equal(a.cluster, b.cluster)
    np.testing.assert_array_equal(a.exact, b.exact)


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu", "CUDA", "cuda:-1", 3])
def test_bad_device_strings(device: Any) -> None:
    with pytest.raises(ValueError, match="device must be None, 'cpu', 'cuda', 'cuda:N' or a torch.device"):
        ms.MinHasher(8, 2).signatures(["a b"], device=device)
    with pytest.raises(ValueError, match="device must be"):
        ms.dedup(["a b"], device=device)


def test_other_torch_devices_are_refused() -> None:
    with pytest.raises(ValueError, match="mixsieve runs on 'cpu' or 'cuda'"):
        ms.MinHasher(8, 2).signatures(["a b"], device=torch.device("meta"))


def test_tensor_pair_on_the_cpu_equals_the_list() -> None:
    docs = random_docs(2, 50)
    h = ms.MinHasher(16, 2, unit="char")
    ref = h.signatures(docs)
    for lead in (0, 5):
        np.testing.assert_array_equal(h.signatures(pair(docs, lead)), ref)
    res = ms.dedup(pair(docs, 3), ngram=2)
    np.testing.assert_array_equal(res.cluster, ms.dedup(docs, ngram=2).cluster)
    assert h.signatures(pair([])).shape == (0, 16)
    # a pair of texts is texts, not a pair of tensors
    np.testing.assert_array_equal(h.signatures(("a b", "c d")), h.signatures(["a b", "c d"]))


def test_bad_offsets_and_dtypes_are_refused() -> None:
    h = ms.MinHasher(8, 2)
    data, offsets = pair([b"abc", b"de", b"f"])
    with pytest.raises(ValueError, match=r"must not decrease: offsets\[2\] = 3 < offsets\[1\] = 4"):
        h.signatures((data, torch.tensor([0, 4, 3, 6])))
    with pytest.raises(ValueError, match="past the end of data"):
        h.signatures((data, torch.tensor([0, 3, 7])))
    with pytest.raises(ValueError, match="is negative"):
        h.signatures((data, torch.tensor([-1, 3])))
    with pytest.raises(ValueError, match="n \\+ 1 >= 1"):
        h.signatures((data, torch.tensor([], dtype=torch.int64)))
    with pytest.raises(TypeError, match="data must be a 1-D torch.uint8 tensor"):
        h.signatures((data.to(torch.int32), offsets))
    with pytest.raises(TypeError, match="offsets must be a 1-D torch.int64 tensor"):
        h.signatures((data, offsets.to(torch.int32)))
    with pytest.raises(ValueError, match="the CUDA kernels take up to"):
        _minhash_cuda.check_offsets(np.array([0, 2**31], np.int64), 2**31)


@pytest.mark.parametrize("budget", [1, 7, 100, 10**9])
def test_chunk_plan_covers_every_document_within_the_budget(budget: int) -> None:
    rng = np.random.default_rng(budget)
    lengths = rng.integers(0, 60, 500)
    lengths[[3, 77, 78]] = 0
    lengths[100] = 500  # longer than most budgets: a chunk of its own
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    chunks = list(_minhash_cuda._chunks(offsets, budget))
    assert chunks[0][0] == 0 and chunks[-1][1] == 500
    for (_, j), (k, _) in zip(chunks, chunks[1:]):
        assert j == k
    for i, j in chunks:
        assert j > i and (j == i + 1 or offsets[j] - offsets[i] <= budget)
        assert j == 500 or offsets[j + 1] - offsets[i] > budget  # as many documents as fit
    assert list(_minhash_cuda._chunks(np.zeros(1, np.int64), 10)) == []


def test_text_pack_copies_lists_and_arrow_arrays_exactly() -> None:
    native = pytest.importorskip("mixsieve._core_cuda")
    docs = [d.decode("utf-8", "replace") for d in random_docs(3, 80)] + ["", "end"]
    cases: list[tuple[Any, list[str]]] = [(docs, docs), ([d.encode() for d in docs], docs)]
    try:
        import pyarrow as pa
    except ImportError:
        pa = None
    if pa is not None:
        with_nulls = [None if i % 9 == 0 else d for i, d in enumerate(docs)]
        cases += [
            (pa.array(docs), docs),
            (pa.array(docs, type=pa.large_string()), docs),
            (pa.array(with_nulls).slice(4, 60), [d or "" for d in with_nulls[4:64]]),
        ]
    for texts, expected in cases:
        want = [d.encode() for d in expected]
        pack = native.TextPack(texts)
        assert len(pack) == len(want)
        offsets = pack.offsets()
        np.testing.assert_array_equal(offsets, np.cumsum([0] + [len(w) for w in want]))
        for i, j in [(0, len(want)), (5, 17), (9, 9)]:
            size = int(offsets[j] - offsets[i])
            buf = np.zeros(size + 1, np.uint8)
            assert pack.pack(i, j, buf.ctypes.data, size, 2) == size
            assert buf[:size].tobytes() == b"".join(want[i:j]) and buf[size] == 0
    pack = native.TextPack(["abc", "de"])
    buf = np.zeros(8, np.uint8)
    with pytest.raises(ValueError, match="holds 4 bytes, the documents need 5"):
        pack.pack(0, 2, buf.ctypes.data, 4)
    with pytest.raises(ValueError, match="outside"):
        pack.pack(1, 3, buf.ctypes.data, 8)
    with pytest.raises(TypeError, match="expected str or bytes"):
        native.TextPack(["a", 3])


def test_native_argument_checks_need_no_device() -> None:
    native = pytest.importorskip("mixsieve._core_cuda")
    fake = 1 << 20  # never dereferenced: the checks run before any launch
    args = dict(
        width=32, num_perm=8, ngram=2, unit=0, seed=1, a=fake, b=fake, unicode=fake, data=fake,
        data_bytes=10, offsets=fake, n=2, text_bytes=10, out=fake, digests=0, workspace=fake,
        workspace_bytes=1 << 20, cuda_stream=0,
    )  # fmt: skip
    for change, message in [
        ({"width": 16}, "width must be 32 or 64"),
        ({"num_perm": 0}, "num_perm must be in"),
        ({"ngram": 0}, "ngram must be in"),
        ({"unit": 2}, "unit must be 0"),
        ({"n": -1}, "n is out of range"),
        ({"text_bytes": 11}, "must lie in \\[0, data_bytes"),
        ({"out": 0}, "a required device pointer is 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            native.minhash_signatures(**{**args, **change})
    with pytest.raises(ValueError, match="unit must be"):
        native.minhash_workspace_bytes(1, 1, 5)
    assert len(native.minhash_unicode_tables()) > 3 * 65536


# ---------------------------------------------------------------------------------------------
# On a GPU


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("unit", ["word", "char"])
@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize(
    ("ngram", "num_perm", "seed"), [(5, 128, 1), (1, 130, 7), (3, 1, 2**64 - 1), (9, 200, 42)]
)
def test_random_unicode_same_bytes_as_cpu(
    unit: str, dtype: Any, ngram: int, num_perm: int, seed: int
) -> None:
    h = ms.MinHasher(num_perm, ngram, unit, seed, dtype=dtype)
    same_signatures(h, random_docs(seed % 1000, 400))


@pytest.mark.gpu
@gpu
def test_demo_corpus_same_bytes_as_cpu() -> None:
    _, texts = demo.local_corpus(limit=1500)
    assert len(texts) > 100
    same_signatures(ms.MinHasher(128, 5), texts)
    same_signatures(ms.MinHasher(64, 5, "char", dtype=np.uint64), texts[:300])


@pytest.mark.gpu
@gpu
def test_long_document_and_long_words() -> None:
    rng = random.Random(5)
    vocab = textgen.vocab(rng)
    words = textgen.random_words_doc(rng, vocab, 200_000)
    big = (words + " ") * (50_000_000 // (len(words) + 1) + 1)
    docs = [big[:50_000_000], "x" * 300_000 + " y " + "é" * 100_000, "中文" * 200_000]
    h = ms.MinHasher(128, 5)
    same_signatures(h, docs)
    res = ms.dedup(docs + docs[:1], ngram=5, device="cuda")
    assert res.exact.tolist() == [False, False, False, True]


@pytest.mark.gpu
@gpu
def test_dedup_on_cuda_equals_the_cpu() -> None:
    rng = random.Random(11)
    vocab = textgen.vocab(rng)
    docs = [textgen.random_words_doc(rng, vocab, rng.randint(20, 400)) for _ in range(1500)]
    for i in range(0, 1500, 7):
        docs.append(textgen.perturb_words(rng, docs[i], 0.02, vocab))  # near-duplicates
    docs += docs[:40] + ["", "!!", "One"]  # exact copies, empty documents
    for kw in ({}, {"unit": "char", "dtype": np.uint64, "ngram": 4}, {"match_empty": True, "num_perm": 64}):
        cpu = ms.dedup(docs, threshold=0.7, **kw)
        got = ms.dedup(docs, threshold=0.7, device="cuda", **kw)
        assert got.num_removed > 200 and got.num_exact >= 56  # (220, 255, 214 removed)
        for name in ("keep", "cluster", "duplicate_of", "similarity", "exact"):
            np.testing.assert_array_equal(getattr(got, name), getattr(cpu, name), err_msg=name)
        assert (got.comparisons, got.capped, got.bands, got.rows) == (
            cpu.comparisons,
            cpu.capped,
            cpu.bands,
            cpu.rows,
        )


@pytest.mark.gpu
@gpu
def test_tensor_pair_on_the_device_is_read_in_place() -> None:
    docs = random_docs(4, 300)
    h = ms.MinHasher(96, 3, dtype=np.uint64)
    ref = h.signatures(docs)
    for lead in (0, 13):
        data, offsets = pair(docs, lead, "cuda")
        got = h.signatures((data, offsets))  # device=None follows the tensors
        assert got.device == data.device
        np.testing.assert_array_equal(got.cpu().numpy(), ref)
        np.testing.assert_array_equal(h.signatures((data, offsets), device="cpu"), ref)
        # a slice of the offsets: documents 10..49 of the same buffer
        np.testing.assert_array_equal(h.signatures((data, offsets[10:51])).cpu().numpy(), ref[10:50])
    with pytest.raises(ValueError, match="must not decrease"):
        h.signatures((data, offsets.flip(0)))
    res = ms.dedup((data, offsets), ngram=3, device="cuda")
    np.testing.assert_array_equal(res.cluster, ms.dedup(docs, ngram=3).cluster)


@pytest.mark.gpu
@gpu
def test_arrow_input_on_cuda() -> None:
    pa = pytest.importorskip("pyarrow")
    docs = [d.decode("utf-8", "replace") for d in random_docs(6, 200)]
    with_nulls = [None if i % 11 == 0 else d for i, d in enumerate(docs)]
    h = ms.MinHasher(32, 2, "char")
    same_signatures(h, pa.array(with_nulls))
    same_signatures(h, pa.chunked_array([pa.array(with_nulls[:50]), pa.array(with_nulls[50:])]))
    same_signatures(h, pa.array(with_nulls, type=pa.large_string()).slice(3, 100))


@pytest.mark.gpu
@gpu
def test_empty_inputs() -> None:
    h = ms.MinHasher(16, 3)
    got = h.signatures([], device="cuda")
    assert tuple(got.shape) == (0, 16) and got.device.type == "cuda"
    same_signatures(h, ["", "", " .. "])
    data, offsets = pair([], 0, "cuda")
    assert tuple(h.signatures((data, offsets)).shape) == (0, 16)
    res = ms.dedup([], device="cuda")
    assert res.keep.size == 0


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("budget", [1, 1000, 50_000])
def test_chunks_across_the_byte_budget(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    monkeypatch.setattr(_minhash_cuda, "CHUNK_BYTES", budget)
    docs = random_docs(8, 200) + [b"w " * 40_000]
    h = ms.MinHasher(64, 2)
    same_signatures(h, docs)
    same_signatures(h, pair(docs, 7, "cuda"), cpu_docs=docs)
    cpu = ms.dedup(docs, ngram=2)
    got = ms.dedup(docs, ngram=2, device="cuda", progress=True)
    np.testing.assert_array_equal(got.cluster, cpu.cluster)
    np.testing.assert_array_equal(got.exact, cpu.exact)


@pytest.mark.gpu
@gpu
def test_threads_do_not_change_the_result() -> None:
    docs = random_docs(9, 300)
    h = ms.MinHasher(32, 2)
    one = h.signatures(docs, 1, device="cuda").cpu().numpy()
    np.testing.assert_array_equal(one, h.signatures(docs, 4, device="cuda").cpu().numpy())
    np.testing.assert_array_equal(one, h.signatures(docs))
