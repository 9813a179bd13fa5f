"""The C++ JSON-line scanner behind mixsieve-dedup: the decoded text field equals Python's
json.loads on generated objects (escapes, \\uXXXX, surrogate pairs, nesting, duplicate keys),
acceptance agrees with json.loads on mutated lines, and random bytes never crash it."""

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mixsieve import _core


def _py_text(value: str) -> bytes:
    # json.loads keeps lone surrogates; our scanner maps them to U+FFFD (documented).
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value).encode()


def _random_string(rng: random.Random) -> str:
    pools = [
        "abc xyz",
        '"\\/\b\f\n\r\t',
        "é中😀\u2028\x7f",
        "\x00\x01\x1f",
        "\ud83d\ude00",
        "\ud800",
        "\udc00",
    ]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(0, 30)))


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randint(0, 6 if depth < 4 else 3)
    if kind == 0:
        return _random_string(rng)
    if kind == 1:
        return rng.choice([0, -1, 3.25, 1e300, -2.5e-8, 12345678901234567890])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.choice([float("nan"), float("inf"), float("-inf"), 7])
    if kind in (4, 5):
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {_random_string(rng): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_decoded_text_matches_json_loads_on_generated_objects():
    rng = random.Random(7)
    for _ in range(3000):
        obj = {_random_string(rng): _random_value(rng) for _ in range(rng.randint(0, 5))}
        obj["text"] = _random_string(rng)
        if rng.random() < 0.3:
            obj["id"] = _random_value(rng)
        line = json.dumps(obj, ensure_ascii=rng.random() < 0.5)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # raw lone surrogates are not UTF-8: send them as \u escapes
            line = json.dumps(obj, ensure_ascii=True)
        if rng.random() < 0.2:  # duplicate key: the last one wins, as in json.loads
            line = line[:-1] + (", " if len(obj) else "") + '"text": "last"}'
        text, ident = _core.parse_json_line(line.encode("utf-8"), "text", "id")
        expect = json.loads(line)
        assert text[0] == _py_text(expect["text"]), line
        if "id" in expect:
            if isinstance(expect["id"], str):
                assert ident[0] == _py_text(expect["id"])
            else:
                raw = ident.decode()
                assert json.dumps(json.loads(raw)) == json.dumps(expect["id"])
        else:
            assert ident is None


def test_long_plain_runs_with_specials_at_every_offset():
    """The scanner copies runs of plain ASCII 16 bytes at a time: a quote, backslash, control
    character, DEL or non-ASCII byte at each offset of a 16-byte block, and runs of every length
    around the block size, decode as json.loads does (and a raw control byte is refused)."""
    specials = ['"', "\\", "\n", "\x7f", "é", "中", "😀", "\x01", "/"]
    for n in range(0, 70):
        for sp in specials:
            for at in (0, n // 2, max(n - 1, 0), n):
                value = "a" * at + sp + "b" * max(n - at, 0)
                line = json.dumps({"text": value, "id": 1}, ensure_ascii=False)
                text, _ = _core.parse_json_line(line.encode("utf-8"), "text", "id")
                assert text[0] == value.encode(), (n, sp, at)
    raw = b'{"text": "' + b"x" * 20 + b"\x01" + b"y" * 20 + b'"}'
    with pytest.raises(ValueError, match="control character"):
        _core.parse_json_line(raw, "text", "id")


def test_acceptance_agrees_with_json_loads_on_mutated_lines():
    rng = random.Random(11)
    alphabet = '{}[]":,\\ueE+-.0123456789 tfnrlaNIy\t\n' + "\x01"
    agree = 0
    for _ in range(4000):
        obj = {"text": _random_string(rng), "k": _random_value(rng)}
        line = json.dumps(obj)
        chars = list(line)
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(3)
            pos = rng.randrange(len(chars) + 1)
            if op == 0 and chars:
                del chars[min(pos, len(chars) - 1)]
            elif op == 1:
                chars.insert(pos, rng.choice(alphabet))
            elif chars:
                chars[min(pos, len(chars) - 1)] = rng.choice(alphabet)
        mutated = "".join(chars)
        try:
            py = json.loads(mutated)
            py_ok = isinstance(py, dict)
        except (ValueError, RecursionError):
            py_ok = False
        try:
            _core.parse_json_line(mutated.encode("utf-8", "surrogatepass"), "text")
            ours_ok = True
        except ValueError:
            ours_ok = False
        assert ours_ok == py_ok, repr(mutated)
        agree += 1
    assert agree == 4000


@pytest.mark.parametrize(
    ("line", "where"),
    [
        (b'{"text": "a"', "unterminated"),
        (b'{"text": "a\\x"}', "invalid escape"),
        (b'{"text": "\\u12G4"}', "invalid .u escape"),
        (b'{"a": 01}', "expected ',' or '}'"),
        (b"[1, 2]", "object"),
        (b'{"text": "a"} x', "after"),
        (b'{"a": tru}', "literal"),
        (b'{"text": "tab\there"}', "control character"),
        (b"[" * 5000, "object"),
        (b'{"a":' * 5000, "deep"),
    ],
)
def test_errors_name_the_problem(line, where):
    with pytest.raises(ValueError, match=where):
        _core.parse_json_line(line, "text")


def test_deep_nesting_is_bounded_not_a_crash():
    line = b'{"text": "x", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ValueError, match="deep"):
        _core.parse_json_line(line, "text")


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data):
    try:
        _core.parse_json_line(data, "text", "id")
    except ValueError:
        pass
