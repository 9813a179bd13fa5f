"""mixsieve-dedup's outputs and flags, run as a subprocess: outputs that name the same file as
another output or an input (directly, through a link, or found in an input folder) are refused
before any work; a killed run leaves nothing behind; unwritable outputs, empty folders, folders
given as an index, compressed input and out-of-range numbers get a clear message and exit
code; ``-o -`` writes to standard output; a UTF-8 byte order mark is accepted. The reference
for kept output is mixsieve.dedup on the same texts."""

import json
import os
import signal
import stat
import subprocess
import time

import mixsieve as ms
import pytest
from mixsieve.cli import dedup_binary

BIN = dedup_binary()


def run(*args, check=True, stdin=None, cwd=None):
    proc = subprocess.run([BIN, *map(str, args)], capture_output=True, input=stdin, timeout=300, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr.decode()}")
    return proc


DOCS = [f"document number {i} says something about topic {i % 7} in its own words" for i in range(40)]
DOCS += [DOCS[3], DOCS[5] + "!", DOCS[3].upper()]


def write_jsonl(path, docs=DOCS):
    data = "".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(docs)).encode()
    path.write_bytes(data)
    return data


def kept_lines(docs=DOCS):
    res = ms.dedup(docs)
    return "".join(
        json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(docs) if res.keep[i]
    ).encode()


def make_index(tmp_path, name="seen.msidx"):
    write_jsonl(tmp_path / "seed.jsonl", DOCS[:10])
    run(
        tmp_path / "seed.jsonl",
        "-o",
        tmp_path / "seed-out.jsonl",
        "--index",
        tmp_path / name,
        "--update-index",
    )
    return tmp_path / name


def test_two_outputs_naming_one_file_are_refused_before_any_work(tmp_path):
    write_jsonl(tmp_path / "in.jsonl")
    idx = make_index(tmp_path)
    idx_bytes = idx.read_bytes()
    (tmp_path / "same.jsonl").write_bytes(b"precious\n")
    os.link(idx, tmp_path / "hard.msidx")
    os.symlink(tmp_path / "same.jsonl", tmp_path / "sym.jsonl")
    inp = tmp_path / "in.jsonl"
    cases = [
        [inp, "-o", tmp_path / "same.jsonl", "--report", tmp_path / "same.jsonl"],
        [inp, "-o", tmp_path / "same.jsonl", "--report", tmp_path / "sym.jsonl"],
        [inp, "-o", tmp_path / "new.jsonl", "--report", tmp_path / "sub" / ".." / "new.jsonl"],
        [inp, "--index", idx, "--update-index", "-o", idx],
        [inp, "--index", idx, "--update-index", "-o", tmp_path / "hard.msidx"],
        [inp, "--index", idx, "--update-index", "-o", tmp_path / "o.jsonl", "--report", idx],
        [inp, "--index", idx, "-o", tmp_path / "o.jsonl", "--report", idx],
        [inp, "-o", "-", "--report", "-"],
    ]
    (tmp_path / "sub").mkdir()
    for args in cases:
        proc = run(*args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert b"same file" in proc.stderr, (args, proc.stderr)
        assert idx.read_bytes() == idx_bytes
        assert (tmp_path / "same.jsonl").read_bytes() == b"precious\n"
        assert not (tmp_path / "new.jsonl").exists() and not (tmp_path / "o.jsonl").exists()


def test_an_input_is_never_an_output(tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl")
    os.link(tmp_path / "in.jsonl", tmp_path / "hard.jsonl")
    idx = make_index(tmp_path)
    for args in [
        [tmp_path / "in.jsonl", "-o", tmp_path / "hard.jsonl"],
        [tmp_path / "in.jsonl", "-o", tmp_path / "o.jsonl", "--report", tmp_path / "in.jsonl"],
        [
            tmp_path / "in.jsonl",
            "-o",
            tmp_path / "o.jsonl",
            "--index",
            tmp_path / "in.jsonl",
            "--update-index",
        ],
        [idx, "-o", tmp_path / "o.jsonl", "--index", idx, "--update-index", "--format", "file"],
    ]:
        proc = run(*args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert b"same file" in proc.stderr or b"is also an input" in proc.stderr, proc.stderr
    assert (tmp_path / "in.jsonl").read_bytes() == data


def test_folder_input_never_reads_the_runs_own_outputs(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    write_jsonl(d / "a.jsonl")
    # A previous run's output and report lie in the input folder: they are not inputs.
    (d / "out.jsonl").write_text(json.dumps({"text": "stale output of an earlier run"}) + "\n")
    (d / "report.jsonl").write_text(json.dumps({"text": "stale report of an earlier run"}) + "\n")
    run(d, "-o", d / "out.jsonl", "--report", d / "report.jsonl")
    assert (d / "out.jsonl").read_bytes() == kept_lines()
    run(d, "-o", d / "out.jsonl", "--report", d / "report.jsonl")
    assert (d / "out.jsonl").read_bytes() == kept_lines()


def _big_input(path, n=60_000):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"text": f"row {i} " + " ".join(f"w{(i * 7 + j) % 5003}" for j in range(60))}))
            f.write("\n")


def _fds_into(pid, folder):
    found = []
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(folder)):
                found.append(target)
    except FileNotFoundError:
        pass
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to see the open outputs")
def test_sigkill_while_writing_leaves_nothing_behind(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _big_input(src / "in.jsonl")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    idx = out_dir / "seen.msidx"
    args = [str(src / "in.jsonl"), "-o", str(out_dir / "kept.jsonl"), "--report", str(out_dir / "rep.jsonl")]
    args += ["--index", str(idx), "--update-index", "--threads", "1", "--quiet"]
    proc = subprocess.Popen([BIN, *args], stderr=subprocess.PIPE)
    # Kill it once it holds an output file open in the output folder (a named temporary or
    # an unnamed O_TMPFILE one): the moment a crash would leave debris.
    deadline = time.monotonic() + 120
    while not _fds_into(proc.pid, out_dir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert os.listdir(out_dir) == []


@pytest.mark.parametrize("named", [False, True], ids=["o_tmpfile", "named_temporary"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_terminated_run_leaves_nothing_behind(tmp_path, sig, named):
    # named: the fallback for file systems without O_TMPFILE (a hidden name removed on signals).
    env = dict(os.environ, MIXSIEVE_DEDUP_NO_TMPFILE="1" if named else "0")
    src = tmp_path / "src"
    src.mkdir()
    _big_input(src / "in.jsonl", 30_000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen(
        [BIN, str(src / "in.jsonl"), "-o", str(out_dir / "kept.jsonl"), "--threads", "1", "--quiet"],
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.monotonic() + 120
    while not _fds_into(proc.pid, out_dir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(sig)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode != 0
    assert os.listdir(out_dir) == []


def test_unwritable_output_is_reported_before_reading_the_input(tmp_path):
    # The input is broken at line 1: a run that reads it first would report that instead.
    (tmp_path / "in.jsonl").write_bytes(b"not json\n")
    (tmp_path / "afile").write_text("x")
    for flag in ["-o", "--report", "--index"]:
        args = [tmp_path / "in.jsonl", "-o", tmp_path / "o.jsonl", "--update-index"]
        if flag == "-o":
            args[2] = tmp_path / "afile" / "o.jsonl"
        elif flag == "--report":
            args += ["--report", tmp_path / "afile" / "r.jsonl"]
        else:
            args += ["--index", tmp_path / "afile" / "i.msidx"]
        if flag != "--index":
            args.remove("--update-index")
        proc = run(*args, check=False)
        assert proc.returncode == 1, (flag, proc.stderr)
        assert b"cannot write" in proc.stderr and b"afile" in proc.stderr, (flag, proc.stderr)
        assert b"malformed JSON" not in proc.stderr


def test_dash_o_writes_to_standard_output(tmp_path):
    write_jsonl(tmp_path / "in.jsonl")
    proc = run(tmp_path / "in.jsonl", "-o", "-", "--quiet", cwd=tmp_path)
    assert proc.stdout == kept_lines()
    assert not (tmp_path / "-").exists()
    proc = run("-", "-o", "-", "--report", tmp_path / "r.jsonl", "--quiet", stdin=write_jsonl(tmp_path / "x"))
    assert proc.stdout == kept_lines()
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == len(DOCS) - kept_lines().count(b"\n")


def test_empty_folder_or_folder_without_matching_files_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.md").write_text("no jsonl here\n")
    for folder in ["empty", "other"]:
        proc = run(tmp_path / folder, "-o", tmp_path / "o.jsonl", check=False)
        assert proc.returncode == 2, proc.stderr
        assert str(tmp_path / folder).encode() in proc.stderr and b"no input files" in proc.stderr
        assert not (tmp_path / "o.jsonl").exists()


def test_byte_order_mark_is_accepted(tmp_path):
    bom = b"\xef\xbb\xbf"
    data = write_jsonl(tmp_path / "plain.jsonl")
    (tmp_path / "bom.jsonl").write_bytes(bom + data)
    run(tmp_path / "bom.jsonl", "-o", tmp_path / "o.jsonl")
    run(tmp_path / "plain.jsonl", "-o", tmp_path / "p.jsonl")
    assert (tmp_path / "o.jsonl").read_bytes() == bom + (tmp_path / "p.jsonl").read_bytes()
    # Files joined with cat carry a mark at the start of a line.
    (tmp_path / "cat.jsonl").write_bytes(bom + data + bom + b'{"text": "one more document here"}\n')
    run(tmp_path / "cat.jsonl", "-o", tmp_path / "c.jsonl")
    assert (tmp_path / "c.jsonl").read_bytes().endswith(bom + b'{"text": "one more document here"}\n')
    # Plain text: the mark is not part of the first document.
    text = "\n".join(DOCS) + "\n"
    (tmp_path / "bom.txt").write_bytes(bom + text.encode())
    (tmp_path / "plain.txt").write_text(text)
    run(tmp_path / "bom.txt", "--format", "lines", "-o", tmp_path / "bt")
    run(tmp_path / "plain.txt", "--format", "lines", "-o", tmp_path / "pt")
    assert (tmp_path / "bt").read_bytes() == bom + (tmp_path / "pt").read_bytes()


def test_corrupt_zstd_input_is_named_as_such(tmp_path):
    (tmp_path / "in.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(range(64)))
    proc = run(tmp_path / "in.jsonl.zst", "-o", tmp_path / "o.jsonl", check=False)
    assert proc.returncode == 1
    assert str(tmp_path / "in.jsonl.zst").encode() + b": corrupt or truncated zstd data" in proc.stderr
    assert b"malformed JSON" not in proc.stderr
    # through a pipe (copied first) the message still names the input as given
    proc = subprocess.run(
        [BIN, "-", "-o", str(tmp_path / "o.jsonl")],
        input=b"\x28\xb5\x2f\xfd" + bytes(64),
        capture_output=True,
    )
    assert proc.returncode == 1 and proc.stderr.startswith(
        b"mixsieve-dedup: -: corrupt or truncated zstd data"
    )


def test_output_that_is_a_folder_is_refused_before_the_work(tmp_path):
    write_jsonl(tmp_path / "in.jsonl")
    (tmp_path / "d").mkdir()
    for flag in ["-o", "--report"]:
        args = [tmp_path / "in.jsonl", "-o", tmp_path / "o.jsonl", flag, tmp_path / "d"]
        proc = run(*args, check=False)
        assert proc.returncode == 2 and b"is a directory" in proc.stderr, proc.stderr
        assert os.listdir(tmp_path / "d") == [] and not (tmp_path / "o.jsonl").exists()


def test_index_that_is_a_folder(tmp_path):
    write_jsonl(tmp_path / "in.jsonl")
    (tmp_path / "idx").mkdir()
    for extra in [[], ["--update-index"]]:
        proc = run(
            tmp_path / "in.jsonl",
            "-o",
            tmp_path / "o.jsonl",
            "--index",
            tmp_path / "idx",
            *extra,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        assert b"is a directory" in proc.stderr and b"basic_filebuf" not in proc.stderr


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--threads", "4294967297"),
        ("--threads", "-1"),
        ("--threads", "0"),
        ("--num-perm", "4294967424"),
        ("--ngram", "4294967297"),
        ("--ngram", "0"),
        ("--bands", "4294967297"),
        ("--rows", "-3"),
        ("--seed", "-1"),
        ("--seed", "18446744073709551616"),
        ("--threshold", "nan"),
        ("--threshold", "1e999"),
    ],
)
def test_numeric_flags_are_range_checked(tmp_path, flag, value):
    write_jsonl(tmp_path / "in.jsonl")
    args = [tmp_path / "in.jsonl", "-o", tmp_path / "o.jsonl", flag, value]
    if flag in ("--bands", "--rows"):
        args += ["--rows" if flag == "--bands" else "--bands", "4"]
    proc = run(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert flag.encode() in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_largest_seed_is_accepted(tmp_path):
    write_jsonl(tmp_path / "in.jsonl")
    run(tmp_path / "in.jsonl", "-o", tmp_path / "o.jsonl", "--seed", str(2**64 - 1))
    res = ms.dedup(DOCS, seed=2**64 - 1)
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == int(res.keep.sum())


def test_closed_standard_output_does_not_swallow_the_output_file(tmp_path):
    # `>&-`: with fd 1 closed, the output's temporary file gets number 1; the output must still
    # be published (not mistaken for standard output and dropped with exit 0).
    write_jsonl(tmp_path / "in.jsonl")
    for named in ["0", "1"]:
        out = tmp_path / f"o{named}.jsonl"
        args = [tmp_path / "in.jsonl", "-o", out, "--report", tmp_path / "r"]
        proc = subprocess.run(
            ["sh", "-c", 'exec "$0" "$@" >&-', BIN, *args],
            capture_output=True,
            timeout=300,
            env=dict(os.environ, MIXSIEVE_DEDUP_NO_TMPFILE=named),
        )
        assert proc.returncode == 0, proc.stderr
        assert out.read_bytes() == kept_lines()
        assert len((tmp_path / "r").read_text().splitlines()) == len(DOCS) - kept_lines().count(b"\n")
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "o0.jsonl", "o1.jsonl", "r"]
    # Asked to write to a closed standard output (or read a closed standard input): an error.
    for redirect, args in [(">&-", [tmp_path / "in.jsonl", "-o", "-"]), ("<&-", ["-", "-o", tmp_path / "x"])]:
        proc = subprocess.run(
            ["sh", "-c", f'exec "$0" "$@" {redirect}', BIN, *args], capture_output=True, timeout=300
        )
        assert proc.returncode == 1, proc.stderr
        assert b"is closed" in proc.stderr, proc.stderr
    assert not (tmp_path / "x").exists()


def test_fifo_output_is_written_in_place(tmp_path):
    # Renaming over a FIFO would replace it with a file its reader never sees.
    write_jsonl(tmp_path / "in.jsonl")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # The reader's end, opened first (O_RDWR does not wait for a writer on Linux); the output
    # is a few KB, well inside the pipe's buffer.
    reader = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        for named in ["0", "1"]:
            proc = subprocess.run(
                [BIN, tmp_path / "in.jsonl", "-o", fifo, "--quiet"],
                capture_output=True,
                timeout=300,
                env=dict(os.environ, MIXSIEVE_DEDUP_NO_TMPFILE=named),
            )
            assert proc.returncode == 0, proc.stderr
            got = b""
            try:
                while chunk := os.read(reader, 1 << 16):
                    got += chunk
            except BlockingIOError:
                pass
            assert got == kept_lines()
            assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
            assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "pipe"]
    finally:
        os.close(reader)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")
def test_device_output_is_written_in_place(tmp_path):
    write_jsonl(tmp_path / "in.jsonl")
    null = tmp_path / "null"
    try:
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
    except PermissionError:
        pytest.skip("mknod is not allowed here")
    run(tmp_path / "in.jsonl", "-o", null, "--report", tmp_path / "r", "--quiet")
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "null", "r"]


def test_symlinked_output_is_written_through(tmp_path):
    write_jsonl(tmp_path / "in.jsonl")
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "kept.jsonl").write_bytes(b"old\n")
    os.symlink("real/kept.jsonl", tmp_path / "link.jsonl")  # relative
    os.symlink(tmp_path / "link.jsonl", tmp_path / "chain.jsonl")  # a link to a link
    os.symlink("real/new.jsonl", tmp_path / "dangling.jsonl")  # its target does not exist yet
    for named in ["0", "1"]:
        env = dict(os.environ, MIXSIEVE_DEDUP_NO_TMPFILE=named)
        for link, target in [("link", "kept"), ("chain", "kept"), ("dangling", "new")]:
            (tmp_path / "real" / "kept.jsonl").write_bytes(b"old\n")
            proc = subprocess.run(
                [BIN, tmp_path / "in.jsonl", "-o", tmp_path / f"{link}.jsonl", "--quiet"],
                capture_output=True,
                timeout=300,
                env=env,
            )
            assert proc.returncode == 0, proc.stderr
            assert os.path.islink(tmp_path / f"{link}.jsonl")
            assert (tmp_path / "real" / f"{target}.jsonl").read_bytes() == kept_lines()
            real = ["kept.jsonl", "new.jsonl"] if target == "new" else ["kept.jsonl"]
            assert sorted(os.listdir(tmp_path / "real")) == real
            links = ["chain.jsonl", "dangling.jsonl", "link.jsonl"]
            assert sorted(os.listdir(tmp_path)) == sorted([*links, "in.jsonl", "real"])
        os.unlink(tmp_path / "real" / "new.jsonl")
    # A dangling link and its target are one file.
    proc = run(
        tmp_path / "in.jsonl",
        "-o",
        tmp_path / "dangling.jsonl",
        "--report",
        tmp_path / "real" / "new.jsonl",
        check=False,
    )
    assert proc.returncode == 2 and b"same file" in proc.stderr, proc.stderr


@pytest.mark.parametrize("name", ["/proc/self/fd/1", "/dev/fd/1", "/dev/stdout"])
def test_names_of_standard_output_are_standard_output(tmp_path, name):
    if not os.path.exists(name):
        pytest.skip(f"{name} does not exist here")
    write_jsonl(tmp_path / "in.jsonl")
    # Standard output is a pipe here: the name and '-' are one output.
    proc = run(tmp_path / "in.jsonl", "-o", name, "--report", "-", check=False)
    assert proc.returncode == 2 and b"same file" in proc.stderr, proc.stderr
    proc = run(tmp_path / "in.jsonl", "-o", "-", "--report", name, check=False)
    assert proc.returncode == 2 and b"same file" in proc.stderr, proc.stderr
    # Alone, it writes to standard output (the name stays what it was).
    before = os.lstat(name)
    proc = run(tmp_path / "in.jsonl", "-o", name, "--quiet")
    assert proc.stdout == kept_lines()
    after = os.lstat(name)
    assert (before.st_mode, before.st_ino) == (after.st_mode, after.st_ino)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to see the open outputs")
@pytest.mark.parametrize("named", [False, True], ids=["o_tmpfile", "named_temporary"])
def test_ignored_sighup_stays_ignored(tmp_path, named):
    # As under nohup: the run must not install its cleanup handler over an ignored signal.
    env = dict(os.environ, MIXSIEVE_DEDUP_NO_TMPFILE="1" if named else "0")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen(
        [BIN, "-", "-o", out_dir / "kept.jsonl", "--quiet"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    # The output is opened (and the handlers installed) before standard input is read, so the
    # run is waiting for its input while it gets the signal.
    deadline = time.monotonic() + 120
    while not _fds_into(proc.pid, out_dir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(write_jsonl(tmp_path / "in.jsonl"), timeout=300)
    assert proc.returncode == 0, err
    assert (out_dir / "kept.jsonl").read_bytes() == kept_lines()
    assert os.listdir(out_dir) == ["kept.jsonl"]


@pytest.mark.parametrize("named", [False, True], ids=["o_tmpfile", "named_temporary"])
@pytest.mark.parametrize(
    "name", ["o" * 234 + ".jsonl", "é" * 124 + ".jsonl", "k" * 255], ids=["240", "254_utf8", "255"]
)
def test_long_output_names_are_written(tmp_path, name, named):
    # The hidden temporary name must fit in NAME_MAX whatever the output's name (up to 255 bytes).
    env = dict(os.environ, MIXSIEVE_DEDUP_NO_TMPFILE="1" if named else "0")
    write_jsonl(tmp_path / "in.jsonl")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    report = name[:-1] + "r"
    proc = subprocess.run(
        [BIN, tmp_path / "in.jsonl", "-o", out_dir / name, "--report", out_dir / report, "--quiet"],
        capture_output=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out_dir / name).read_bytes() == kept_lines()
    assert sorted(os.listdir(out_dir)) == sorted([name, report])


@pytest.mark.parametrize("fmt", ["jsonl", "lines"])
@pytest.mark.parametrize("folder", [False, True])
def test_input_without_a_final_newline_keeps_records_on_their_own_lines(tmp_path, fmt, folder):
    first = '{"text": "a b c d e f g"}' if fmt == "jsonl" else "a b c d e f g"
    second = '{"text": "completely different words here"}' if fmt == "jsonl" else "completely different words"
    src = tmp_path / "in"
    src.mkdir()
    ext = ".jsonl" if fmt == "jsonl" else ".txt"  # what a folder holds for each format
    (src / f"a{ext}").write_text(first)  # no final newline
    (src / f"b{ext}").write_text(second + "\n")
    (src / f"c{ext}").write_text(second.replace("here", "there").replace("words", "terms"))
    inputs = [src] if folder else [src / f"a{ext}", src / f"b{ext}", src / f"c{ext}"]
    run(*inputs, "--format", fmt, "-o", tmp_path / "o.jsonl")
    got = (tmp_path / "o.jsonl").read_text()
    assert got.endswith("\n")
    assert got.splitlines() == [first, second, second.replace("here", "there").replace("words", "terms")]


@pytest.mark.parametrize("flag", ["-o", "--report", "--index"])
def test_an_empty_path_is_refused_by_name(tmp_path, flag):
    write_jsonl(tmp_path / "in.jsonl")
    args = ["-o", tmp_path / "o.jsonl", flag, ""] if flag != "-o" else ["-o", ""]
    proc = run(tmp_path / "in.jsonl", *args, check=False)
    assert proc.returncode == 2
    assert "empty" in proc.stderr.decode() and flag in proc.stderr.decode()
    assert not (tmp_path / "o.jsonl").exists()
