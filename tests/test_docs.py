"""The examples in the public docstrings run and print what they claim (doctest), and the
rules the README points to are where it says."""

import doctest
import importlib
from pathlib import Path

import pytest


# importlib: the function mixsieve.dedup shadows the module of the same name as an attribute.
@pytest.mark.parametrize(
    ("name", "least"),
    [
        ("mixsieve.dedup", 6),
        ("mixsieve.sampling", 6),
        ("mixsieve.weights", 6),
        ("mixsieve.sources", 3),
        ("mixsieve.columnar", 6),
        ("mixsieve.mixture.dataset", 3),
        ("mixsieve.mixup", 3),
        ("mixsieve.mixup._ops", 12),
        ("mixsieve.mixup.collate", 2),
    ],
)
def test_docstring_examples(name, least):
    if name == "mixsieve.mixture.dataset" or name.startswith("mixsieve.mixup"):
        pytest.importorskip("torch")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= least
    assert result.failed == 0


def test_help_of_dedup_holds_the_rules_the_readme_points_to():
    # README: "Normalisation is written down (in help(ms.dedup) ...)"; ms.dedup is the function.
    import mixsieve as ms

    doc = ms.dedup.__doc__
    phrases = ["general category", "lower-cased", "fewer units than", "xxh64", "at most 64", "bands * 64"]
    for phrase in phrases:
        assert phrase in doc, phrase
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "help(ms.dedup)" in readme and "docs/dedup.md" in readme


def test_readme_mixing_by_tokens_example_runs(capsys):
    # the README's "Mixing by tokens" example, as printed there, and the shares it reports
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Mixing by tokens", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    shares = namespace["ds"].stats()["token_shares"]
    assert abs(shares["web"] - 0.7) < 0.001 and abs(shares["code"] - 0.3) < 0.001
    import ast

    printed = ast.literal_eval(capsys.readouterr().out.strip())
    assert printed.keys() == {"web", "code"} and abs(printed["web"] - 0.7) < 0.001
