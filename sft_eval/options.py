"""The options sft-eval takes, defined once for the CLI, the pytest plugin and the torchrun entry.

Each is spelled `--recipe`, `--device`, ... on the command line and `--sft-recipe`, `--sft-device`, ... in pytest:
the plugin loads into every pytest session of an environment where sft-eval is installed, so it claims no
generic name there (a project's own `--device` must keep working). `--sft-cache` is spelled the same in both.
Like pytest-benchmark's `add_*_options(prefix)`, `add_options(add, names, prefix)` registers them with either
`argparse.ArgumentParser.add_argument` or pytest's `OptionGroup.addoption`, which take the same keywords.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sft_eval.recipe import DEFAULT_RECIPE

PLUGIN_PREFIX = "sft-"


def positive_int(text: str) -> int:
    """A whole number of at least 1 (row and question caps, batch sizes): anything else is a usage error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0 (epochs): `nan`, `inf`, 0 and words are usage errors."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, not {text!r}")
    return value


def probability(text: str) -> float:
    """A number strictly between 0 and 1 (a significance level)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, not {text!r}")
    return value


@dataclass(frozen=True)
class Option:
    name: str  # the CLI spelling without dashes; the plugin's adds PLUGIN_PREFIX unless it already has it
    help: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def flag(self, prefix: str = "") -> str:
        return f"--{self.name if self.name.startswith(PLUGIN_PREFIX) else prefix + self.name}"


OPTIONS = {
    option.name: option
    for option in (
        Option(
            "recipe",
            "recipe TOML the fixtures are built from (default: the shipped tiny recipe)",
            {"metavar": "PATH", "default": str(DEFAULT_RECIPE)},
        ),
        Option(
            "sft-cache",
            "fixture and answer cache folder (default: $SFT_EVAL_CACHE, else ~/.cache/sft-eval)",
            {"metavar": "DIR", "default": None},
        ),
        Option(
            "device",
            "torch device for models and training: auto (the GPU when there is one), cpu, cuda, cuda:1 ... "
            "(default: auto)",
            {"metavar": "DEVICE", "default": "auto"},
        ),
        Option(
            "max-train-rows",
            "train on at most N of the recipe's rows: a quick smoke run of a big recipe (default: all)",
            {"metavar": "N", "type": positive_int, "default": None},
        ),
        Option(
            "max-eval-questions",
            "ask at most N of the recipe's questions (default: all)",
            {"metavar": "N", "type": positive_int, "default": None},
        ),
        Option(
            "no-answer-cache",
            "generate every answer again instead of reading the answer cache (in the --sft-cache folder); fresh "
            "answers are not stored either (default: off)",
            {"action": "store_true", "default": False},
        ),
        Option(
            "report-dir",
            "where the HTML and JSON report are written (default: reports)",
            {"metavar": "DIR", "default": "reports"},
        ),
        Option(
            "baseline",
            "the last accepted run's sft_report.json: the suites' regression test holds this run's tuned model "
            "to it, question by question (default: none, the test skips)",
            {"metavar": "FILE", "default": None},
        ),
        Option(
            "sweep",
            "judge every checkpoint of the run model.tuned names (suites/test_sweep.py): the best one, overfitting, "
            "the last against the best; writes sweep.html into the report folder (default: off, the test skips)",
            {"action": "store_true", "default": False},
        ),
        Option(
            "update-golden",
            "write this environment's entry of the recipe's golden outputs (<recipe folder>/golden/<name>.json or "
            "[eval] golden) from the current answers, keeping other environments' entries (default: off)",
            {"action": "store_true", "default": False},
        ),
        Option(
            "golden",
            "how the tuned answers are held to the golden outputs: tolerance (the reference's log-probabilities, "
            "on any machine) or exact (bit for bit, this environment's entry) (default: the recipe's "
            "eval.golden_mode, tolerance)",
            {"choices": ["tolerance", "exact"], "default": None},
        ),
    )
}

# What each consumer takes.
RUN = ("recipe", "sft-cache", "device", "max-train-rows")  # anything that builds or trains
EVALUATE = (*RUN, "max-eval-questions", "no-answer-cache")  # anything that also asks the questions
PLUGIN = (*EVALUATE, "report-dir", "update-golden", "golden", "baseline", "sweep")


def add_options(add: Callable[..., Any], names: Iterable[str], prefix: str = "") -> None:
    """Register the named options with `add` (argparse's `add_argument` or pytest's `addoption`)."""
    for name in names:
        option = OPTIONS[name]
        add(option.flag(prefix), help=option.help, **option.kwargs)


def dest(name: str, prefix: str = "") -> str:
    """The attribute an option's value lands on (`sft_max_train_rows` for the plugin's `--sft-max-train-rows`)."""
    return OPTIONS[name].flag(prefix).lstrip("-").replace("-", "_")
