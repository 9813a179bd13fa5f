"""The examples in the public docstrings run and print what they claim (doctest)."""

import doctest
import importlib

import pytest


# importlib: the function mixsieve.dedup shadows the module of the same name as an attribute.
@pytest.mark.parametrize("name", ["mixsieve.dedup", "mixsieve.sampling"])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 5
    assert result.failed == 0
