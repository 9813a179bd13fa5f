"""``mixsieve plan mixture.toml``: the example file plans and plots; a file that breaks the schema
gets an error naming the key and its line; the plan is the dataset's own dry run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mixsieve as ms
import pytest
from mixsieve import planning

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("torch")


def test_the_example_file_prints_the_summary_and_writes_the_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plan.png"
    env = dict(os.environ)  # the mixsieve this test imports (installed, or on PYTHONPATH)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mixsieve",
            "plan",
            str(ROOT / "examples" / "mixture.toml"),
            "--plot",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    for name in ("web", "code", "math", "books"):
        assert name in run.stdout
    assert "capped at" in run.stdout  # math's own cap of two passes
    assert "tokens planned" in run.stdout
    assert out.stat().st_size > 10_000


def write(tmp_path, text):
    p = tmp_path / "m.toml"
    p.write_text(text)
    return str(p)


GOOD = """
[mixture]
budget = 5000

[sources.a]
documents = 100
weight = 1

[sources.b]
documents = 20
weight = 1
max_epochs = 2
"""


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (GOOD.replace("budget = 5000", "budget = -5"), r"m\.toml:3: \[mixture\] budget: must be > 0"),
        (GOOD.replace("budget = 5000", "budjet = 5000"), r"m\.toml:3: \[mixture\] budjet: unknown key"),
        (
            GOOD.replace("documents = 20", "documents = 2.5"),
            r"m\.toml:10: \[sources\.b\] documents: must be an integer",
        ),
        (
            GOOD.replace("weight = 1\nmax", "wieght = 1\nmax"),
            r"m\.toml:11: \[sources\.b\] wieght: unknown key",
        ),
        (
            GOOD.replace("[mixture]\nbudget = 5000\n", '[mixture]\nunit = "tokens"\nbudget = 5000\n'),
            r"needs tokens = N",
        ),
        (
            GOOD.replace("weight = 1\n", "") + "\n[policy]\nkind = 'zipf'\n",
            r"m\.toml:13: \[policy\] kind: must be \"temperature\" or \"unimax\"",
        ),
        (
            GOOD + "\n[policy]\nkind = 'unimax'\n",
            r"m\.toml:7: \[sources\.a\] weight: a \[policy\] sets the weights",
        ),
        (
            GOOD
            + "\n[[schedule]] # first\nposition = 10\nweights = { a = 1 }\n\n[[schedule]]\nposition = -5\n"
            "weights = { a = 1 }\n",
            r"m\.toml:19: \[\[schedule\]\] entry 1 position: must be an integer in \[0, ",
        ),
        (
            GOOD
            + "\n[[schedule]]\nposition = 10\nweights = { a = 1 }\n"  # noqa: ISC003
            + "[[schedule]]\nposition = 5\nweights = { a = 1 }\n",
            r"m\.toml:18: \[\[schedule\]\] entry 1 position: must be after the entry before",
        ),
        (
            GOOD + "\n[[schedule]]\nposition = 10\nweights = 3\n",
            r"m\.toml:16: \[\[schedule\]\] entry 0 weights: must be a table",
        ),
        (
            GOOD + "\n[[schedule]]\nposition = 10\nweights = { a = 'lots' }\n",
            r"m\.toml:16: .*weight of 'a' must be a number",
        ),
        (
            GOOD + "\n[[schedule]]\nposition = 10\nweights = { a = 1 }\nsmooth = 1\n",
            r"m\.toml:17: .*smooth: unknown key",
        ),
        (
            GOOD.replace("budget = 5000", "budget = 5000\nplot = 5"),
            r"m\.toml:4: \[mixture\] plot: must be a file name",
        ),
        (
            GOOD.replace("budget = 5000", "budget = 5000\nshuffle = 'yes'"),
            r"m\.toml:4: \[mixture\] shuffle: must be true or false",
        ),
        (
            "mixture = 3\n[sources.a]\ndocuments = 1\nweight = 1\n",
            r"m\.toml:1: top level mixture: must be a table",
        ),
        (GOOD + "\n[[schedule]]\nposition = 10\nweights = { c = 1 }\n", r"names unknown sources \['c'\]"),
        ("[mixture]\nbudget = 1\n", r"needs at least one \[sources\.NAME\]"),
        (GOOD + "\n[extra]\nx = 1\n", r"m\.toml:\d+: \[extra\]: unknown table"),
        ("[mixture\nbudget = 1\n", r"not valid TOML"),
    ],
)
def test_schema_errors_name_the_key_and_the_line(tmp_path, text, match):
    with pytest.raises(planning.ConfigError, match=match):
        planning.load(write(tmp_path, text))


def test_the_plan_is_the_datasets_dry_run(tmp_path):
    cfg = planning.load(write(tmp_path, GOOD))
    ds, n, window = planning.build(cfg)
    plan = ds.simulate(n, window=window)
    names = [
        s
        for s, _ in ms.MixtureDataset(
            {"a": range(100), "b": range(20)}, weights={"a": 1, "b": 1}, max_epochs={"b": 2}, num_samples=n
        )
    ]
    assert plan.generated == len(names) == 5000
    assert names.count("b") == 40 and int(plan.counts[:, 1].sum()) == 40
    assert plan.epochs["b"] == 2.0


def test_cli_reports_a_bad_file_as_a_usage_error(tmp_path):
    env = dict(os.environ)  # the mixsieve this test imports (installed, or on PYTHONPATH)
    bad = write(tmp_path, GOOD.replace("budget = 5000", "budget = 0"))
    run = subprocess.run(
        [sys.executable, "-m", "mixsieve", "plan", bad], capture_output=True, text=True, env=env
    )
    assert run.returncode == 2 and "budget: must be > 0" in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "mixsieve", "plan", str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 2 and "missing.toml" in run.stderr


def test_comments_after_headers_keep_line_numbers(tmp_path):
    text = GOOD.replace("[sources.b]", "[sources.b]  # small").replace("documents = 20", "documents = 2.5")
    with pytest.raises(
        planning.ConfigError, match=r"m\.toml:10: \[sources\.b\] documents: must be an integer"
    ):
        planning.load(write(tmp_path, text))


def test_budgets_beyond_a_plan_and_plans_that_cannot_spend_them(tmp_path, capsys):
    huge = GOOD.replace("budget = 5000", "budget = 1_000_000_000_000_000")
    with pytest.raises(planning.ConfigError, match=r"m\.toml:3: \[mixture\] budget: needs .* positions"):
        planning.build(planning.load(write(tmp_path, huge)))
    capped = GOOD.replace("weight = 1\n\n[sources.b]", "weight = 1\nmax_epochs = 1\n\n[sources.b]")
    planning.main(write(tmp_path, capped), plot=str(tmp_path / "p.png"))
    err = capsys.readouterr().err
    assert "before the budget" in err  # 100 + 40 samples, then every source has left
    per_doc = GOOD.replace("[mixture]\n", '[mixture]\nunit = "tokens"\n').replace(
        "documents = 100\n", "documents = 100\ntokens = 1_000_000_000_000\n"
    )
    with pytest.raises(planning.ConfigError, match=r"tokens: more than 2\*\*31 tokens per document"):
        planning.load(write(tmp_path, per_doc))
