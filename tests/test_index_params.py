"""What an index file records about the hasher that made its signatures, and index keys: a
hasher's parameters saved from Python are used by mixsieve-dedup and a mismatch is refused
(CLI, LSHIndex.load/add/query/save) naming both values; an index whose hasher is unknown is
refused by the CLI unless every hasher flag is given; version-1 files still load; keys equal
to the "no match" marker -1, or already indexed, are refused with the key named."""

import json
import struct
import subprocess

import mixsieve as ms
import numpy as np
import pytest
from mixsieve.cli import dedup_binary

BIN = dedup_binary()

DOCS = [f"alpha beta gamma delta epsilon zeta eta theta iota kappa doc{i} lambda mu nu xi" for i in range(30)]
DOCS += [f"completely unrelated text about subject {i} with many other words in it" for i in range(30)]


def run(*args, check=True):
    proc = subprocess.run([BIN, *map(str, args)], capture_output=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr.decode()}")
    return proc


def write_jsonl(path, docs):
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))


def test_index_saved_from_python_carries_its_hasher_to_the_cli(tmp_path):
    h = ms.MinHasher(ngram=3, seed=7)
    idx = ms.LSHIndex(0.8, 128, hasher=h)
    idx.add(h.signatures(DOCS[:30]))
    idx.save(tmp_path / "i.msidx")
    assert ms.LSHIndex.load(tmp_path / "i.msidx").hasher_params == h.params()
    # The same documents again: every one matches the index when the CLI hashes as h did.
    write_jsonl(tmp_path / "in.jsonl", DOCS[:30])
    run(tmp_path / "in.jsonl", "-o", tmp_path / "o.jsonl", "--index", tmp_path / "i.msidx")
    assert (tmp_path / "o.jsonl").read_text() == ""
    # Flags that disagree with the index are refused, naming both values.
    for flag, mine, theirs in [("--ngram", "5", "3"), ("--seed", "1", "7"), ("--unit", "char", "word")]:
        proc = run(
            tmp_path / "in.jsonl",
            "-o",
            tmp_path / "o2.jsonl",
            "--index",
            tmp_path / "i.msidx",
            flag,
            mine,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        assert (
            flag.encode() in proc.stderr and mine.encode() in proc.stderr and theirs.encode() in proc.stderr
        )
        assert not (tmp_path / "o2.jsonl").exists()


def test_index_saved_without_a_hasher_is_refused_by_the_cli_unless_all_flags_given(tmp_path):
    h = ms.MinHasher(ngram=3, seed=7)
    idx = ms.LSHIndex(0.8, 128)
    idx.add(h.signatures(DOCS[:30]))
    idx.save(tmp_path / "i.msidx")
    assert ms.LSHIndex.load(tmp_path / "i.msidx").hasher_params is None
    write_jsonl(tmp_path / "in.jsonl", DOCS[:30])
    proc = run(
        tmp_path / "in.jsonl", "-o", tmp_path / "o.jsonl", "--index", tmp_path / "i.msidx", check=False
    )
    assert proc.returncode == 2 and b"hasher" in proc.stderr and b"--ngram" in proc.stderr, proc.stderr
    assert not (tmp_path / "o.jsonl").exists()
    run(
        tmp_path / "in.jsonl",
        "-o",
        tmp_path / "o.jsonl",
        "--index",
        tmp_path / "i.msidx",
        "--ngram",
        "3",
        "--seed",
        "7",
        "--unit",
        "word",
    )
    assert (tmp_path / "o.jsonl").read_text() == ""


def test_cli_index_records_its_hasher_and_python_refuses_a_mismatch(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", DOCS)
    run(
        tmp_path / "in.jsonl",
        "-o",
        tmp_path / "o.jsonl",
        "--index",
        tmp_path / "i.msidx",
        "--update-index",
        "--ngram",
        "4",
        "--seed",
        "11",
    )
    loaded = ms.LSHIndex.load(tmp_path / "i.msidx")
    assert loaded.hasher_params == ms.MinHasher(ngram=4, seed=11).params()
    ok = ms.LSHIndex.load(tmp_path / "i.msidx", hasher=ms.MinHasher(ngram=4, seed=11))
    assert len(ok) == len(loaded)
    with pytest.raises(ValueError, match=r"ngram.*5.*4|ngram.*4.*5"):
        ms.LSHIndex.load(tmp_path / "i.msidx", hasher=ms.MinHasher(ngram=5, seed=11))
    with pytest.raises(ValueError, match=r"seed"):
        ms.LSHIndex.load(tmp_path / "i.msidx", hasher=ms.MinHasher(ngram=4, seed=1))
    with pytest.raises(ValueError, match=r"dtype|uint64"):
        ms.LSHIndex.load(tmp_path / "i.msidx", hasher=ms.MinHasher(ngram=4, seed=11, dtype=np.uint64))
    # add/query check a hasher named with the signatures against the recorded one.
    good, bad = ms.MinHasher(ngram=4, seed=11), ms.MinHasher(ngram=3, seed=11)
    assert (ok.add(good.signatures(DOCS[:5]), hasher=good) >= 0).all()
    assert len(ok.query(good.signature(DOCS[0]), hasher=good)) > 0
    with pytest.raises(ValueError, match="ngram"):
        ok.add(bad.signatures(DOCS[:5]), hasher=bad)
    with pytest.raises(ValueError, match="ngram"):
        ok.query(bad.signature(DOCS[0]), hasher=bad)


def test_hasher_given_at_save_and_checked_against_the_index(tmp_path):
    h = ms.MinHasher(num_perm=64, ngram=2, unit="char", seed=3)
    idx = ms.LSHIndex(0.7, 64)
    idx.add(h.signatures(DOCS))
    with pytest.raises(ValueError, match="num_perm"):
        idx.save(tmp_path / "bad.msidx", hasher=ms.MinHasher(num_perm=128))
    idx.save(tmp_path / "i.msidx", hasher=h)
    assert ms.LSHIndex.load(tmp_path / "i.msidx").hasher_params == h.params()
    with pytest.raises(ValueError, match="unit"):
        ms.LSHIndex(0.7, 64, hasher=h).save(tmp_path / "x", hasher=ms.MinHasher(num_perm=64, ngram=2, seed=3))
    with pytest.raises(ValueError, match="num_perm"):
        ms.LSHIndex(0.7, 128, hasher=h)


def _v1_file(path, meta):
    """A version-1 index file (the format before hasher parameters were recorded): header,
    metadata, no rows, checksum."""
    from mixsieve import _core

    bands, rows = ms.resolve_bands(0.8, 128)
    header = b"MXSVLSH\0" + struct.pack("<6Id2Q", 1, 4, 128, bands, rows, 1, 0.8, 0, len(meta))
    body = header + meta
    path.write_bytes(body + struct.pack("<Q", _core.xxh64(body, 0x6D69787369657665)))


def test_version_1_files_load_with_unknown_or_metadata_hasher(tmp_path):
    _v1_file(tmp_path / "plain.msidx", b"{}")
    old = ms.LSHIndex.load(tmp_path / "plain.msidx")
    assert len(old) == 0 and old.hasher_params is None
    # The old CLI wrote its hasher into the metadata: that is read as the hasher.
    meta = json.dumps({"dtype": "uint32", "ngram": 3, "num_perm": 128, "seed": 7, "unit": "word"}).encode()
    _v1_file(tmp_path / "cli.msidx", meta)
    assert ms.LSHIndex.load(tmp_path / "cli.msidx").hasher_params == ms.MinHasher(ngram=3, seed=7).params()
    write_jsonl(tmp_path / "in.jsonl", DOCS[:3])
    proc = run(
        tmp_path / "in.jsonl",
        "-o",
        tmp_path / "o.jsonl",
        "--index",
        tmp_path / "cli.msidx",
        "--ngram",
        "5",
        check=False,
    )
    assert proc.returncode == 2 and b"--ngram" in proc.stderr
    proc = run(
        tmp_path / "in.jsonl", "-o", tmp_path / "o.jsonl", "--index", tmp_path / "plain.msidx", check=False
    )
    assert proc.returncode == 2 and b"hasher" in proc.stderr


def test_key_minus_one_is_refused():
    h = ms.MinHasher()
    idx = ms.LSHIndex(0.8, 128)
    with pytest.raises(ValueError, match="-1"):
        idx.add(h.signatures(DOCS[:3]), keys=[5, -1, 6])
    assert len(idx) == 0  # nothing of a refused call is added


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        ([1, 2**63, 3], 2**63),
        ([1, 2, 2**64 - 1], 2**64 - 1),
        ([2**64, 1, 2], 2**64),
        ([1, -(2**63) - 1, 2], -(2**63) - 1),
        ([2**63, -1, 2], 2**63),
        (np.array([1, 2**63 + 5, 2], dtype=np.uint64), 2**63 + 5),
        (np.array([1, 2, 2**64 - 1], dtype=np.uint64), 2**64 - 1),
        ([1, np.uint64(2**63), 2], 2**63),
    ],
)
def test_keys_outside_int64_are_refused_as_given(keys, named):
    idx = ms.LSHIndex(0.8, 128)
    with pytest.raises(ValueError, match=rf"key {named} is outside the int64 range"):
        idx.add(ms.MinHasher().signatures(DOCS[:3]), keys=keys)
    assert len(idx) == 0


def test_uint64_keys_within_int64_are_accepted():
    idx = ms.LSHIndex(0.8, 128)
    idx.add(ms.MinHasher().signatures(DOCS[:3]), keys=np.array([0, 7, 2**63 - 1], dtype=np.uint64))
    assert idx.keys().tolist() == [0, 7, 2**63 - 1]


def test_duplicate_keys_are_refused_within_a_call_and_across_calls():
    h = ms.MinHasher()
    sigs = h.signatures(DOCS[:10])
    idx = ms.LSHIndex(0.8, 128)
    with pytest.raises(ValueError, match="key 7"):
        idx.add(sigs[:3], keys=[7, 8, 7])
    assert len(idx) == 0
    idx.add(sigs[:3], keys=[7, 8, 9])
    with pytest.raises(ValueError, match="key 8"):
        idx.add(sigs[3:6], keys=[10, 8, 11])
    assert len(idx) == 3 and idx.keys().tolist() == [7, 8, 9]
    # Default keys are positions (here 3..7), which may collide with keys given before.
    with pytest.raises(ValueError, match="key 7"):
        idx.add(sigs[3:8])
    idx.add(sigs[3:6], keys=[-2, 100, 2**63 - 1])
    assert idx.keys().tolist() == [7, 8, 9, -2, 100, 2**63 - 1]


def test_loaded_index_keeps_refusing_duplicate_keys(tmp_path):
    h = ms.MinHasher()
    idx = ms.LSHIndex(0.8, 128, hasher=h)
    idx.add(h.signatures(DOCS[:4]), keys=[10, 20, 30, 40])
    idx.save(tmp_path / "i.msidx")
    loaded = ms.LSHIndex.load(tmp_path / "i.msidx")
    with pytest.raises(ValueError, match="key 30"):
        loaded.add(h.signatures(DOCS[4:5]), keys=[30])


def test_threshold_differing_from_the_index_in_any_digit_is_refused(tmp_path):
    inp, idx = tmp_path / "in.jsonl", tmp_path / "i.msidx"
    write_jsonl(inp, DOCS)
    run(inp, "-o", tmp_path / "o.jsonl", "--index", idx, "--update-index")
    run(inp, "-o", tmp_path / "o.jsonl", "--index", idx, "--threshold", "0.8")
    # Both are 0.800000 to six decimals; the second is the double just above 0.8.
    for mine in ["0.8000001", repr(float.fromhex("0x1.999999999999bp-1"))]:
        proc = run(inp, "-o", tmp_path / "o2.jsonl", "--index", idx, "--threshold", mine, check=False)
        assert proc.returncode == 2, proc.stderr
        assert b"--threshold " + mine.encode() + b" differs" in proc.stderr, proc.stderr
        assert b"made with --threshold 0.8;" in proc.stderr, proc.stderr
        assert not (tmp_path / "o2.jsonl").exists()


def test_bands_and_rows_are_checked_against_the_index_num_perm(tmp_path):
    # 40 * 5 = 200 bands' worth of rows: too many for the default 128 permutations, not for the
    # index's 256, which the run takes when --num-perm is left out.
    inp, idx = tmp_path / "in.jsonl", tmp_path / "i.msidx"
    write_jsonl(inp, DOCS)
    banding = ["--bands", "40", "--rows", "5"]
    run(inp, "-o", tmp_path / "o.jsonl", "--index", idx, "--update-index", "--num-perm", "256", *banding)
    assert ms.LSHIndex.load(idx).num_perm == 256
    run(inp, "-o", tmp_path / "o.jsonl", "--index", idx, *banding)
    assert (tmp_path / "o.jsonl").read_text() == ""
    # Without an index (or with a new one) the flags' num_perm counts.
    for extra in [[], ["--index", tmp_path / "new.msidx", "--update-index"]]:
        proc = run(inp, "-o", tmp_path / "o2.jsonl", *banding, *extra, check=False)
        assert proc.returncode == 2 and b"exceeds --num-perm 128" in proc.stderr, proc.stderr
        assert not (tmp_path / "o2.jsonl").exists() and not (tmp_path / "new.msidx").exists()


def test_index_keys_near_the_int64_limit_do_not_wrap_around(tmp_path):
    # The run's documents get the keys after the index's largest; past 2^63 - 1 they would wrap.
    h = ms.MinHasher()
    inp = tmp_path / "in.jsonl"
    write_jsonl(inp, DOCS[30:35])  # 5 documents, none like the index's
    top = 2**63 - 1
    for largest, fits in [(top, False), (top - 4, False), (top - 5, True)]:
        idx = ms.LSHIndex(0.8, 128, hasher=h)
        idx.add(h.signatures(DOCS[:2]), keys=[-7, largest])
        path = tmp_path / f"{top - largest}.msidx"
        idx.save(path)
        proc = run(inp, "-o", tmp_path / "o.jsonl", "--index", path, "--update-index", check=False)
        if fits:
            assert proc.returncode == 0, proc.stderr
            assert ms.LSHIndex.load(path).keys().tolist() == [-7, largest, *range(largest + 1, top + 1)]
        else:
            assert proc.returncode == 2, proc.stderr
            assert f"holds key {largest}: no room".encode() in proc.stderr, proc.stderr
            assert len(ms.LSHIndex.load(path)) == 2
