"""ArrowSource serves a pyarrow Table or RecordBatch as rows (dicts of Python values) equal to
Table.to_pylist(); item_lengths reads one integer column and refuses a bad one by name; pickles
round-trip; mixsieve imports without pyarrow and the sources ask for ``mixsieve[arrow]``."""

import doctest
import pickle
import subprocess
import sys

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

from mixsieve import columnar  # noqa: E402
from mixsieve.sources import ArrowSource  # noqa: E402


def table():
    return pa.table(
        {
            "text": ["a", "b c", None, "d e f", "g"],
            "n_tokens": pa.array([1, 2, 0, 3, 1], pa.int32()),
            "meta": [{"k": 1}, {"k": 2}, {"k": 3}, {"k": 4}, {"k": 5}],
        }
    )


def test_rows_equal_to_pylist_for_tables_batches_and_chunked_columns():
    t = table()
    chunked = pa.concat_tables([t.slice(0, 2), t.slice(2)])
    assert chunked.column("text").num_chunks == 2
    for given in (t, t.to_batches()[0], chunked):
        src = ArrowSource(given)
        rows = t.to_pylist()
        assert len(src) == 5
        assert [src[i] for i in range(5)] == rows
        assert src[-2] == rows[3]
        assert src.__getitems__([4, 0, 4, 2]) == [rows[4], rows[0], rows[4], rows[2]]
        assert src.__getitems__(np.array([1, -1])) == [rows[1], rows[4]]
        assert src.__getitems__([]) == []


def test_columns_select_what_rows_hold():
    src = ArrowSource(table(), columns=["meta", "text"])
    assert src[1] == {"meta": {"k": 2}, "text": "b c"}
    with pytest.raises(ValueError, match="no column 'nope'"):
        ArrowSource(table(), columns=["text", "nope"])
    with pytest.raises(TypeError, match="list of names"):
        ArrowSource(table(), columns="text")
    with pytest.raises(TypeError, match="Table or RecordBatch"):
        ArrowSource({"text": ["a"]})


def test_indexing_errors():
    src = ArrowSource(table())
    for bad in (5, -6):
        with pytest.raises(IndexError):
            src[bad]
        with pytest.raises(IndexError):
            src.__getitems__([0, bad])
    for bad in (1.5, "0", None):
        with pytest.raises(TypeError):
            src[bad]
        with pytest.raises(TypeError):
            src.__getitems__([bad])


def test_item_lengths_reads_one_integer_column_even_when_not_served():
    src = ArrowSource(table(), columns=["text"])
    got = src.item_lengths("n_tokens")
    assert got.dtype == np.int64 and got.shape == (5,) and got.tolist() == [1, 2, 0, 3, 1]
    chunked = ArrowSource(pa.concat_tables([table().slice(0, 3), table().slice(3)]))
    assert chunked.item_lengths("n_tokens").tolist() == [1, 2, 0, 3, 1]


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        (None, None, "give the column holding each row's token count"),
        ("absent", None, "no column 'absent'"),
        ("n", pa.array([1.0, 2.0, 3.0]), "not integers"),
        ("n", pa.array(["1", "2", "3"]), "not integers"),
        ("n", pa.array([1, None, 3], pa.int64()), "nulls"),
        ("n", pa.array([1, -2, 3], pa.int16()), "negative at row 1"),
        ("n", pa.array([1, 2**63, 3], pa.uint64()), "beyond int64"),
    ],
)
def test_item_lengths_refuses_a_bad_column_by_name(column, values, message):
    t = pa.table({"text": ["x", "y", "z"]})
    if values is not None:
        t = t.append_column("n", values)
    with pytest.raises(ValueError, match=message) as err:
        ArrowSource(t).item_lengths(column)
    assert "ArrowSource" in str(err.value)
    if column is not None:
        assert repr(column) in str(err.value)


def test_unsigned_and_narrow_lengths_convert():
    t = pa.table({"n": pa.array([0, 7, 65535], pa.uint16())})
    assert ArrowSource(t).item_lengths("n").tolist() == [0, 7, 65535]


def test_pickle_round_trip():
    src = ArrowSource(table(), columns=["text"])
    copy = pickle.loads(pickle.dumps(src))
    assert [copy[i] for i in range(5)] == [src[i] for i in range(5)]
    assert copy.item_lengths("n_tokens").tolist() == [1, 2, 0, 3, 1]
    assert repr(copy) == "ArrowSource(5 rows, 1 columns)"


def test_docstring_examples_run():
    result = doctest.testmod(columnar, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0


def test_importing_mixsieve_does_not_import_pyarrow():
    code = "import sys, mixsieve, mixsieve.sources; print('pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_without_pyarrow_the_sources_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    from mixsieve.sources import ParquetSource

    with pytest.raises(ImportError, match=r"pip install 'mixsieve\[arrow\]'"):
        ArrowSource(object())
    with pytest.raises(ImportError, match=r"pip install 'mixsieve\[arrow\]'"):
        ParquetSource(tmp_path)
