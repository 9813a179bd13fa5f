"""Streaming input (csrc/include/mixsieve/byte_source.hpp) through the test hooks
``_core._decompress_file`` and ``_core._source_info``.

Covers format detection by magic bytes (plain, gzip, zstd; xz and bzip2 refused with a way to pipe
them in), concatenated gzip members and zstd frames, skippable zstd frames, empty, truncated and
corrupt data, every read size from one byte up, standard input, a missing libzstd
(MIXSIEVE_ZSTD_LIBRARY, in a subprocess) and random or mutated bytes, which must give bytes or a
ValueError, never a crash. Decoded bytes are compared with the original data: gzip files are made
by Python's gzip module and zstd files with ctypes on libzstd.so.1 (so the zstd CLI is not needed).
"""

from __future__ import annotations

import ctypes
import gzip
import os
import random
import struct
import subprocess
import sys
import textwrap
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mixsieve import _core

PYTHONPATH = str(Path(_core.__file__).resolve().parent.parent)
CHUNK_SIZES = [1, 7, 4096, 1 << 20, 3 << 20]


def _load_libzstd() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL("libzstd.so.1")
    except OSError:
        return None
    lib.ZSTD_compressBound.restype = ctypes.c_size_t
    lib.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
    lib.ZSTD_compress.restype = ctypes.c_size_t
    size, buffer = ctypes.c_size_t, ctypes.c_char_p
    lib.ZSTD_compress.argtypes = [buffer, size, buffer, size, ctypes.c_int]
    lib.ZSTD_isError.restype = ctypes.c_uint
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    return lib


LIBZSTD = _load_libzstd()
needs_zstd = pytest.mark.skipif(LIBZSTD is None, reason="libzstd.so.1 cannot be loaded by ctypes")
HAVE_GZIP = not _core.build_info()["decompression"].startswith("no gzip")
needs_gzip = pytest.mark.skipif(not HAVE_GZIP, reason="_core was built without zlib")


def zstd_frame(data: bytes, level: int = 3) -> bytes:
    assert LIBZSTD is not None
    bound = LIBZSTD.ZSTD_compressBound(len(data))
    out = ctypes.create_string_buffer(bound)
    n = LIBZSTD.ZSTD_compress(out, bound, data, len(data), level)
    assert not LIBZSTD.ZSTD_isError(n)
    return out.raw[:n]


def skippable_frame(payload: bytes, variant: int = 0) -> bytes:
    return struct.pack("<II", 0x184D2A50 + variant, len(payload)) + payload


def text(n: int, seed: int = 0) -> bytes:
    """n bytes of compressible JSON lines."""
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"\xc3\xa9t\xc3\xa9", b"42", b"x" * 17]
    out = bytearray()
    while len(out) < n:
        out += b'{"text": "' + b" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) + b'"}\n'
    return bytes(out[:n])


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def decode_error(path: str) -> str:
    with pytest.raises(ValueError) as info:
        _core._decompress_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


# --- plain -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"x", b"\x1f", b"\x28\xb5\x2f", b"BZh", b"BZh9 is a plain line\n", b"\xfd7zX", text(3 << 20)],
)
@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_plain_bytes_come_back_unchanged(tmp_path, data, chunk_size):
    path = write(tmp_path, "plain.txt.gz", data)  # the name says gzip: only the bytes count
    assert _core._decompress_file(path, chunk_size=chunk_size) == data
    assert _core._source_info(path, chunk_size=chunk_size) == ("plain", len(data), len(data), len(data))


def test_missing_file_and_directory(tmp_path):
    assert "cannot open (No such file or directory)" in decode_error(str(tmp_path / "absent.jsonl"))
    assert "cannot read (is a directory)" in decode_error(str(tmp_path))


def test_zero_chunk_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="chunk_size"):
        _core._decompress_file(write(tmp_path, "a", b"abc"), chunk_size=0)


# --- gzip --------------------------------------------------------------------------------------


@needs_gzip
@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_gzip_members_are_concatenated(tmp_path, chunk_size):
    parts = [text(5000, 1), b"", text(3 << 20, 2), b"last line without newline"]
    raw = b"".join(gzip.compress(p, compresslevel=1 + i) for i, p in enumerate(parts))
    path = write(tmp_path, "data", raw)
    assert _core._decompress_file(path, chunk_size=chunk_size) == b"".join(parts)
    expected = ("gzip", sum(map(len, parts)), len(raw), len(raw))
    assert _core._source_info(path, chunk_size=chunk_size) == expected


@needs_gzip
def test_gzip_of_nothing_is_empty(tmp_path):
    assert _core._decompress_file(write(tmp_path, "e.gz", gzip.compress(b""))) == b""
    assert _core._decompress_file(write(tmp_path, "ee.gz", gzip.compress(b"") * 3)) == b""


@needs_gzip
def test_gzip_incompressible_data(tmp_path):
    data = random.Random(5).randbytes(2_500_000)  # stored blocks
    assert _core._decompress_file(write(tmp_path, "r.gz", gzip.compress(data)), chunk_size=999) == data


@needs_gzip
def test_gzip_truncated_anywhere_is_an_error(tmp_path):
    raw = gzip.compress(text(200_000, 3))
    for cut in [2, 3, 10, 11, 100, len(raw) // 2, len(raw) - 8, len(raw) - 1]:
        path = write(tmp_path, f"cut{cut}.gz", raw[:cut])
        assert "corrupt or truncated gzip data" in decode_error(path), cut


@needs_gzip
def test_gzip_corrupt_is_an_error(tmp_path):
    raw = bytearray(gzip.compress(text(200_000, 4)))
    crc = bytearray(raw)
    crc[-6] ^= 0x01  # the CRC-32 of the trailer
    message = decode_error(write(tmp_path, "c.gz", crc))
    assert "corrupt or truncated gzip data (incorrect data check)" in message
    method = bytearray(raw)
    method[2] = 7  # compression method other than deflate
    assert "corrupt or truncated gzip data" in decode_error(write(tmp_path, "m.gz", method))
    trailing = bytes(raw) + b"\x00" * 16
    assert "corrupt or truncated gzip data" in decode_error(write(tmp_path, "t.gz", trailing))


@needs_gzip
def test_gzip_with_zlib_wrapper_is_refused(tmp_path):
    # 1F 8B then a zlib (not gzip) stream: the magic says gzip, the decoder must refuse it cleanly
    raw = b"\x1f\x8b" + zlib.compress(b"hello")
    assert "corrupt or truncated gzip data" in decode_error(write(tmp_path, "z.gz", raw))


@pytest.mark.skipif(HAVE_GZIP, reason="_core was built with zlib")
def test_gzip_without_zlib_names_the_fix(tmp_path):
    path = write(tmp_path, "a.gz", gzip.compress(b"x"))
    message = decode_error(path)
    assert "gzip-compressed input, but this build of mixsieve has no zlib" in message
    assert f"gzip -dc {path} | mixsieve-dedup - " in message


# --- zstd --------------------------------------------------------------------------------------


@needs_zstd
@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_zstd_frames_are_concatenated(tmp_path, chunk_size):
    parts = [text(5000, 1), b"", text(1 << 20, 2), b"end"]
    raw = b"".join(zstd_frame(p, level=1 + i) for i, p in enumerate(parts))
    path = write(tmp_path, "data.bin", raw)
    assert _core._decompress_file(path, chunk_size=chunk_size) == b"".join(parts)
    expected = ("zstd", sum(map(len, parts)), len(raw), len(raw))
    assert _core._source_info(path, chunk_size=chunk_size) == expected


@needs_zstd
def test_zstd_skippable_frames_are_skipped(tmp_path):
    a, b = text(70_000, 5), text(1234, 6)
    raw = (
        skippable_frame(b"metadata", 0)
        + zstd_frame(a)
        + skippable_frame(b"", 15)
        + zstd_frame(b)
        + skippable_frame(b"\x28\xb5\x2f\xfd" * 100, 7)
    )
    for chunk_size in CHUNK_SIZES:
        assert _core._decompress_file(write(tmp_path, "s.zst", raw), chunk_size=chunk_size) == a + b
    only_skippable = skippable_frame(b"nothing to see")
    n = len(only_skippable)
    assert _core._source_info(write(tmp_path, "o.zst", only_skippable)) == ("zstd", 0, n, n)


@needs_zstd
def test_zstd_large_input(tmp_path):
    rng = random.Random(7)
    data = text(9 << 20, 7) + rng.randbytes(1 << 20) + text(1 << 20, 8)  # > 8 MiB, a stored stretch
    raw = zstd_frame(data, level=5)
    path = write(tmp_path, "big.zst", raw)
    for chunk_size in [4093, 1 << 20, 16 << 20]:
        assert _core._decompress_file(path, chunk_size=chunk_size) == data
    assert _core._source_info(path) == ("zstd", len(data), len(raw), len(raw))


@needs_zstd
def test_zstd_truncated_anywhere_is_an_error(tmp_path):
    raw = zstd_frame(text(300_000, 9)) + zstd_frame(b"second")
    first = len(zstd_frame(text(300_000, 9)))
    for cut in [4, 5, 9, 100, first // 2, first - 1, first + 5, len(raw) - 1]:
        message = decode_error(write(tmp_path, f"cut{cut}.zst", raw[:cut]))
        assert "corrupt or truncated zstd data (" in message, cut
    skip = skippable_frame(b"payload")
    message = decode_error(write(tmp_path, "skip.zst", skip[:-3]))
    assert "corrupt or truncated zstd data (" in message


@needs_zstd
def test_zstd_corrupt_is_an_error(tmp_path):
    raw = zstd_frame(text(300_000, 10), level=3)
    bad_magic_after = raw + b"\x00\x00\x00\x00garbage"
    message = decode_error(write(tmp_path, "g.zst", bad_magic_after))
    assert "corrupt or truncated zstd data (Unknown frame descriptor)" in message
    reserved = bytearray(raw)
    reserved[4] |= 0x08  # the frame header descriptor's reserved bit
    assert "corrupt or truncated zstd data (" in decode_error(write(tmp_path, "r.zst", reserved))
    flipped = bytearray(raw)
    for i in range(6, len(flipped), max(1, len(flipped) // 50)):
        flipped[i] ^= 0x5A
    assert "corrupt or truncated zstd data (" in decode_error(write(tmp_path, "f.zst", flipped))


def zstd_raw_frame(window_log: int, content: bytes) -> bytes:
    """A frame written by hand: its window size declared, content in one raw block."""
    header = b"\x28\xb5\x2f\xfd" + bytes([0x00, (window_log - 10) << 3])  # no content size: window set
    block = (1 | len(content) << 3).to_bytes(3, "little")  # last block, raw
    return header + block + content


@needs_zstd
def test_zstd_window_beyond_the_default_limit(tmp_path):
    small = write(tmp_path, "w20.zst", zstd_raw_frame(20, b"small window"))
    assert _core._decompress_file(small) == b"small window"
    path = write(tmp_path, "w28.zst", zstd_raw_frame(28, b"x"))  # what zstd --long=28 writes
    message = decode_error(path)
    assert "zstd data that declares a decoding window over 128 MiB" in message
    assert f"zstd -dc --long=31 {path} | mixsieve-dedup - " in message


# --- formats we do not decode ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "magic"),
    [
        ("xz", b"\xfd7zXZ\x00\x00\x04\xe6\xd6\xb4\x46"),
        ("bzip2", b"BZh91AY&SY\x00\x01\x02"),
        ("bzip2", b"BZh1\x17\x72\x45\x38\x50\x90\x00\x00\x00\x00"),
    ],
)
def test_xz_and_bzip2_say_how_to_pipe(tmp_path, tool, magic):
    path = write(tmp_path, "data.jsonl", magic + b"rest")
    message = decode_error(path)
    assert f"{tool}-compressed input" in message
    assert f"{tool} -dc {path} | mixsieve-dedup - " in message


# --- standard input, the library override, threads: in subprocesses ----------------------------


def run_python(code: str, *, stdin: bytes | None = None, env: dict[str, str] | None = None) -> str:
    full_env = {**os.environ, "PYTHONPATH": PYTHONPATH, **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        input=stdin,
        capture_output=True,
        env=full_env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


PRINT_STDIN = """
    import hashlib, sys
    from mixsieve import _core
    data = _core._decompress_file("-", chunk_size=1000)
    print(hashlib.sha256(data).hexdigest())
"""


@needs_gzip
def test_standard_input(tmp_path):
    import hashlib

    data = text(2 << 20, 11)
    digest = hashlib.sha256(data).hexdigest()
    for raw in [data, gzip.compress(data)] + ([zstd_frame(data)] if LIBZSTD else []):
        assert run_python(PRINT_STDIN, stdin=raw).split() == [digest]
    info = run_python(
        "from mixsieve import _core; print(*_core._source_info('-'))", stdin=gzip.compress(data)
    ).split()
    assert info == ["gzip", str(len(data)), str(len(gzip.compress(data))), "0"]  # a pipe: size unknown
    path = write(tmp_path, "in.gz", gzip.compress(data))
    with open(path, "rb") as f:  # standard input that is a file: its size is known
        result = subprocess.run(
            [sys.executable, "-c", "from mixsieve import _core; print(*_core._source_info('-'))"],
            stdin=f,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": PYTHONPATH},
            check=True,
        )
    size = os.path.getsize(path)
    assert result.stdout.decode().split() == ["gzip", str(len(data)), str(size), str(size)]


MISSING_LIBRARY = """
    from mixsieve import _core
    try:
        _core._decompress_file({path!r})
    except ValueError as e:
        print(e)
    print(_core._decompress_file({gz!r}).decode())
    print(_core.build_info()["decompression"])
"""


@needs_gzip
def test_missing_libzstd_gives_a_clear_error(tmp_path):
    # The frame is written by hand: the message must come whether or not this machine has libzstd.
    path = write(tmp_path, "data.zst", b"\x28\xb5\x2f\xfd" + b"\x00" * 8)
    gz = write(tmp_path, "ok.gz", gzip.compress(b"gzip still works"))
    out = run_python(
        MISSING_LIBRARY.format(path=path, gz=gz), env={"MIXSIEVE_ZSTD_LIBRARY": "/nonexistent/libzstd.so.1"}
    ).splitlines()
    assert out[0].startswith(f"{path}: zstd-compressed input needs libzstd.so.1, which could not be loaded (")
    assert "/nonexistent/libzstd.so.1" in out[0]
    assert "apt install libzstd1 / dnf install libzstd" in out[0]
    assert f"zstd -dc {path} | mixsieve-dedup - " in out[0]
    assert out[1] == "gzip still works"
    assert "no zstd: /nonexistent/libzstd.so.1" in out[2]


@needs_gzip
def test_library_without_zstd_symbols_is_refused(tmp_path):
    path = write(tmp_path, "data.zst", b"\x28\xb5\x2f\xfd" + b"\x00" * 8)
    out = run_python(
        MISSING_LIBRARY.format(path=path, gz=write(tmp_path, "ok.gz", gzip.compress(b"x"))),
        env={"MIXSIEVE_ZSTD_LIBRARY": zlib_library()},
    ).splitlines()
    assert "no symbol ZSTD_createDStream" in out[0]


def zlib_library() -> str:
    """A loadable shared library that is not libzstd: the one _core links for gzip, or libc."""
    maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
    for line in maps.splitlines():
        if "libz.so" in line or "libc.so" in line:
            return line.split()[-1]
    return "libc.so.6"


@needs_zstd
def test_library_override_to_the_real_library(tmp_path):
    path = write(tmp_path, "d.zst", zstd_frame(b"via the override"))
    libzstd = next(
        line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "libzstd.so" in line
    )
    code = f"from mixsieve import _core; print(_core._decompress_file({path!r}).decode())"
    assert run_python(code, env={"MIXSIEVE_ZSTD_LIBRARY": libzstd}).strip() == "via the override"


@needs_zstd
def test_first_zstd_use_from_many_threads(tmp_path):
    # A fresh process: the library is loaded by whichever of the threads gets there first.
    paths = []
    for i in range(8):
        data = text(300_000 + i, 20 + i)
        paths.append((write(tmp_path, f"{i}.zst", zstd_frame(data)), len(data)))
    code = f"""
        from concurrent.futures import ThreadPoolExecutor
        from mixsieve import _core
        paths = {paths!r}
        with ThreadPoolExecutor(8) as pool:
            sizes = list(pool.map(lambda p: len(_core._decompress_file(p[0], chunk_size=4096)), paths))
        print(sizes == [n for _, n in paths])
    """
    assert run_python(code).strip() == "True"


@needs_gzip
def test_sources_read_concurrently(tmp_path):
    items = []
    for i in range(12):
        data = text(200_000 + 1000 * i, 40 + i)
        if i % 3 == 0:
            raw = gzip.compress(data)
        elif i % 3 == 1 and LIBZSTD is not None:
            raw = zstd_frame(data)
        else:
            raw = data
        items.append((write(tmp_path, f"c{i}", raw), data))
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda it: _core._decompress_file(it[0], chunk_size=777), items))
    assert got == [data for _, data in items]


# --- arbitrary bytes never crash ---------------------------------------------------------------

# nothing, gzip, gzip with deflate, zstd, the first and last skippable frame magic
PREFIXES = [b"", b"\x1f\x8b", b"\x1f\x8b\x08\x00", b"\x28\xb5\x2f\xfd", b"P*M\x18", b"_*M\x18"]


def decode_or_error(path: str, chunk_size: int) -> None:
    try:
        out = _core._decompress_file(path, chunk_size=chunk_size)
    except ValueError as e:
        assert str(e).startswith(f"{path}: ")
        known = ("corrupt or truncated", "compressed input", "declares a decoding window")
        assert any(k in str(e) for k in known), e
    else:
        assert isinstance(out, bytes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(PREFIXES), st.binary(max_size=300), st.sampled_from([1, 5, 4096]))
def test_random_bytes_never_crash(tmp_path, prefix, body, chunk_size):
    decode_or_error(write(tmp_path, "fuzz", prefix + body), chunk_size)


def test_mutated_streams_never_crash(tmp_path):
    rng = random.Random(2026)
    seeds = [gzip.compress(text(20_000, 1)) + gzip.compress(b"tail")] if HAVE_GZIP else []
    if LIBZSTD is not None:
        seeds += [zstd_frame(text(20_000, 2)) + skippable_frame(b"meta") + zstd_frame(b"")]
        seeds += [zstd_frame(rng.randbytes(5000), level=19)]
    if not seeds:
        pytest.skip("neither gzip nor zstd streams can be read here")
    for i in range(600):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            op = rng.random()
            if op < 0.5:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op < 0.75:
                del data[rng.randrange(len(data)) :]
            else:
                at = rng.randrange(len(data) + 1)
                data[at:at] = rng.randbytes(rng.randint(1, 16))
            if not data:
                data = bytearray(b"\x1f\x8b")
        decode_or_error(write(tmp_path, f"m{i % 10}", bytes(data)), rng.choice([1, 3, 64, 1 << 20]))
