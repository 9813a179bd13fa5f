"""The examples in the public docstrings run and print what they claim (doctest)."""

import doctest
import importlib

import pytest


# importlib: the function mixsieve.dedup shadows the module of the same name as an attribute.
@pytest.mark.parametrize(
    ("name", "least"),
    [
        ("mixsieve.dedup", 6),
        ("mixsieve.sampling", 6),
        ("mixsieve.weights", 6),
        ("mixsieve.sources", 3),
        ("mixsieve.mixture.dataset", 3),
    ],
)
def test_docstring_examples(name, least):
    if name == "mixsieve.mixture.dataset":
        pytest.importorskip("torch")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= least
    assert result.failed == 0
