"""The installed mixsieve-dedup binary, run as a subprocess: planted near-duplicates in JSONL,
text and gzip inputs, byte-identical kept output, agreement with mixsieve.dedup and across
thread counts, incremental dedup against a saved index, every bad input with its message and
exit code, and interrupted runs."""

import gzip
import json
import os
import random
import signal
import subprocess
import time

import mixsieve as ms
import numpy as np
import pytest
import textgen
from mixsieve.cli import dedup_binary

BIN = dedup_binary()


def run(*args, check=True, stdin=None):
    proc = subprocess.run([BIN, *map(str, args)], capture_output=True, input=stdin, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr.decode()}")
    return proc


@pytest.fixture(scope="module")
def corpus():
    """Documents with planted near-duplicates (and a few exact copies)."""
    rng = random.Random(42)
    vocab = textgen.vocab(rng, 3000)
    base = [textgen.random_words_doc(rng, vocab, rng.randint(80, 300)) for _ in range(400)]
    docs = list(base)
    for i in range(200):
        docs.insert(
            rng.randrange(len(docs) + 1), textgen.perturb_words(rng, rng.choice(base), 0.02 * (i % 4), vocab)
        )
    docs += ['Grüße, 日本語のテキスト — \u00e9t\u00e9 "quoted" \\ back\tslash\n\u2028'] * 2
    return docs


def write_jsonl(path, docs, *, gz=False, extra=None):
    lines = [
        json.dumps({"id": f"doc-{i}", "text": d, **(extra or {})}, ensure_ascii=i % 2 == 0) + "\n"
        for i, d in enumerate(docs)
    ]
    data = "".join(lines).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return [line.encode() for line in lines]


def test_jsonl_matches_python_dedup_byte_for_byte(tmp_path, corpus):
    lines = write_jsonl(tmp_path / "in.jsonl", corpus)
    out = tmp_path / "out.jsonl"
    rep = tmp_path / "dups.jsonl"
    proc = run(tmp_path / "in.jsonl", "-o", out, "--report", rep, "--id-field", "id", "--threads", 2)
    res = ms.dedup(corpus)
    expected = b"".join(line for line, k in zip(lines, res.keep) if k)
    assert out.read_bytes() == expected
    assert res.num_removed > 50
    report = [json.loads(x) for x in rep.read_text().splitlines()]
    assert len(report) == res.num_removed
    removed = [i for i, k in enumerate(res.keep) if not k]
    for r, i in zip(report, removed):
        assert r["file"] == str(tmp_path / "in.jsonl") and r["line"] == i + 1 and r["id"] == f"doc-{i}"
        j = r["duplicate_of"]["line"] - 1
        assert j != i and res.cluster[j] == res.cluster[i] and r["duplicate_of"]["id"] == f"doc-{j}"
        assert 0.0 < r["jaccard"] <= 1.0
    assert b"removed" in proc.stderr and str(res.num_removed).encode() in proc.stderr


def test_same_result_for_one_and_two_threads_and_gzip(tmp_path, corpus):
    write_jsonl(tmp_path / "a.jsonl", corpus)
    write_jsonl(tmp_path / "b.jsonl.gz", corpus, gz=True)
    run(tmp_path / "a.jsonl", "-o", tmp_path / "one.jsonl", "--threads", 1)
    run(tmp_path / "a.jsonl", "-o", tmp_path / "two.jsonl", "--threads", 2)
    run(tmp_path / "b.jsonl.gz", "-o", tmp_path / "gz.jsonl", "--threads", 2)
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "two.jsonl").read_bytes()
    assert (tmp_path / "gz.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()


def test_text_lines_directories_and_stdin(tmp_path, corpus):
    docs = [d.replace("\n", " ") for d in corpus]
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    half = len(docs) // 2
    (d / "b.txt").write_text("\n".join(docs[:half]) + "\n")
    (d / "sub" / "c.txt.gz").write_bytes(gzip.compress(("\n".join(docs[half:]) + "\n").encode()))
    (d / "ignored.md").write_text("not a text input\n")
    run(d, "--format", "lines", "-o", tmp_path / "out.txt")
    res = ms.dedup(docs)
    assert (tmp_path / "out.txt").read_text() == "".join(x + "\n" for x, k in zip(docs, res.keep) if k)
    proc = run(
        "-", "--format", "lines", "-o", tmp_path / "stdin.txt", stdin=("\n".join(docs) + "\n").encode()
    )
    assert (tmp_path / "stdin.txt").read_text() == (tmp_path / "out.txt").read_text()
    assert b"removed" in proc.stderr


def test_one_document_per_file(tmp_path, corpus):
    d = tmp_path / "files"
    d.mkdir()
    for i, doc in enumerate(corpus[:60]):
        (d / f"{i:03d}.txt").write_text(doc)
    run(d, "--format", "file", "-o", tmp_path / "out.jsonl")
    kept = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    res = ms.dedup(corpus[:60])
    assert [k["text"] for k in kept] == [doc for doc, k in zip(corpus[:60], res.keep) if k]
    assert kept[0]["file"].endswith("000.txt")


def test_incremental_dedup_against_saved_index(tmp_path, corpus):
    first, second = corpus[:300], corpus[300:]
    write_jsonl(tmp_path / "first.jsonl", first)
    lines2 = write_jsonl(tmp_path / "second.jsonl", second)
    idx = tmp_path / "corpus.msidx"
    run(tmp_path / "first.jsonl", "-o", tmp_path / "o1.jsonl", "--index", idx, "--update-index")
    res1 = ms.dedup(first)
    loaded = ms.LSHIndex.load(idx)  # the same file format as LSHIndex.save
    assert len(loaded) == int(res1.keep.sum()) and loaded.meta["ngram"] == 5
    run(
        tmp_path / "second.jsonl",
        "-o",
        tmp_path / "o2.jsonl",
        "--index",
        idx,
        "--report",
        tmp_path / "r2.jsonl",
    )
    # Reference in Python: the kept documents of the first run, then the second run's.
    h = ms.MinHasher()
    ref = ms.LSHIndex(0.8, 128)
    ref.add(h.signatures([d for d, k in zip(first, res1.keep) if k]))
    m = len(ref)
    dup = ref.add(h.signatures(second))
    res2 = ms.dedup(second)
    expect_keep = [dup[i] < 0 or dup[i] >= m for i in range(len(second))]
    expect_keep = [ek and k for ek, k in zip(expect_keep, res2.keep)]
    got = (tmp_path / "o2.jsonl").read_bytes()
    against_index = [
        json.loads(x)
        for x in (tmp_path / "r2.jsonl").read_text().splitlines()
        if "index_key" in json.loads(x)["duplicate_of"]
    ]
    assert against_index, "documents of the second set duplicate the first"
    assert got == b"".join(line for line, k in zip(lines2, expect_keep) if k)
    assert not (tmp_path / "o2.jsonl.tmp").exists()


def test_help_documents_every_flag_and_version():
    help_text = run("--help").stdout.decode()
    for flag in [
        "-o",
        "--text-field",
        "--id-field",
        "--threshold",
        "--num-perm",
        "--ngram",
        "--unit",
        "--bands",
        "--rows",
        "--seed",
        "--threads",
        "--index",
        "--update-index",
        "--report",
        "--on-error",
        "--progress",
        "--quiet",
        "--format",
        "--invalid-utf8",
        "--version",
        "exit status",
    ]:
        assert flag in help_text, flag
    assert run("--version").stdout.decode().strip() == f"mixsieve-dedup {ms.__version__}"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"id": 1, "text": "ok"\n', b"malformed JSON"),
        (b"not json at all\n", b"malformed JSON"),
        (b'{"id": 1, "body": "no text here"}\n', b"no field 'text'"),
        (b'{"id": 1, "text": 42}\n', b"field 'text' is not a string"),
        (b'{"id": 1, "text": "bad \xff\xfe utf8"}\n', b"invalid UTF-8"),
    ],
)
def test_bad_records_fail_with_file_line(tmp_path, line, message):
    good = b'{"text": "a fine first document"}\n'
    (tmp_path / "in.jsonl").write_bytes(good + good + line + good)
    proc = run(tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl", check=False)
    assert proc.returncode == 1
    assert f"{tmp_path / 'in.jsonl'}:3: ".encode() in proc.stderr and message in proc.stderr
    assert not (tmp_path / "out.jsonl").exists()
    # --on-error skip: counted, reported, passed through unchanged.
    proc = run(tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl", "--on-error", "skip")
    assert (tmp_path / "out.jsonl").read_bytes() == good + line
    assert b"skipped" in proc.stderr and b"1 bad records passed through" in proc.stderr


def test_invalid_utf8_can_be_replaced(tmp_path):
    (tmp_path / "in.txt").write_bytes(b"caf\xe9 au lait\nplain line\n")
    assert run(tmp_path / "in.txt", "--format", "lines", "-o", tmp_path / "o", check=False).returncode == 1
    run(tmp_path / "in.txt", "--format", "lines", "-o", tmp_path / "o", "--invalid-utf8", "replace")
    assert (tmp_path / "o").read_bytes() == b"caf\xe9 au lait\nplain line\n"


def test_usage_and_io_errors(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    cases = [
        ([tmp_path / "missing.jsonl", "-o", tmp_path / "o"], 1, b"no such file"),
        ([tmp_path / "in.jsonl", "-o", tmp_path / "in.jsonl"], 2, b"is also an input"),
        ([tmp_path / "in.jsonl"], 2, b"-o OUT is required"),
        ([tmp_path / "in.jsonl", "-o", tmp_path / "o", "--threshold", "1.5"], 2, b"--threshold"),
        ([tmp_path / "in.jsonl", "-o", tmp_path / "o", "--bogus"], 2, b"unknown option --bogus"),
        (
            [tmp_path / "in.jsonl", "-o", tmp_path / "o", "--index", tmp_path / "nope.idx"],
            1,
            b"no such index",
        ),
        ([tmp_path / "in.jsonl", "-o", tmp_path / "o", "--bands", "20", "--rows", "10"], 2, b"exceeds"),
    ]
    for args, code, message in cases:
        proc = run(*args, check=False)
        assert proc.returncode == code, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
    (tmp_path / "bad.idx").write_bytes(b"garbage" * 20)
    proc = run(tmp_path / "in.jsonl", "-o", tmp_path / "o", "--index", tmp_path / "bad.idx", check=False)
    assert proc.returncode == 1 and b"not a mixsieve LSH index" in proc.stderr
    (tmp_path / "broken.jsonl.gz").write_bytes(gzip.compress(b'{"text": "x"}\n' * 100)[:40])
    proc = run(tmp_path / "broken.jsonl.gz", "-o", tmp_path / "o", check=False)
    assert proc.returncode == 1 and b"gzip" in proc.stderr


def test_killed_run_leaves_no_complete_looking_output(tmp_path):
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([BIN, "-", "-o", str(out)], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(b'{"text": "a document that is never finished"}\n' * 1000)
    proc.stdin.flush()
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdin.close()
    proc.stderr.close()
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith("out")]


def test_python_module_wraps_the_binary(tmp_path, corpus):
    write_jsonl(tmp_path / "in.jsonl", corpus[:50])
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mixsieve",
            "dedup",
            str(tmp_path / "in.jsonl"),
            "-o",
            str(tmp_path / "o.jsonl"),
            "--quiet",
        ],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == b""
    assert (tmp_path / "o.jsonl").exists()
    assert np.sum(ms.dedup(corpus[:50]).keep) == len((tmp_path / "o.jsonl").read_text().splitlines())


def test_file_format_output_is_valid_json_even_for_ill_formed_utf8(tmp_path):
    d = tmp_path / "files"
    d.mkdir()
    (d / "a.txt").write_bytes(b'caf\xe9 \xff\xfe with "quotes" and \\ and \x01 control')
    (d / "b.txt").write_text("plain text document")
    run(d, "--format", "file", "-o", tmp_path / "out.jsonl", "--invalid-utf8", "replace")
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows[0]["text"] == 'caf\ufffd \ufffd\ufffd with "quotes" and \\ and \x01 control'
    assert rows[1]["text"] == "plain text document"
