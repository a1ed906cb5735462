"""Issues 32 and 42: bad input is answered in one line (exit 2) before torch, transformers or TRL are imported, so a
typo costs a user a fraction of a second, not the seconds those imports take. Shown by running `sft-eval` where
`import torch` fails outright (a shim package first on PYTHONPATH), on an empty cache (a fresh machine: SFTConfig's
fields are read from TRL's sources, not from a cache a first run filled): each answer still comes, as the one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sft_eval.recipe import FIXTURES_DIR

TRAIN = (FIXTURES_DIR / "data" / "sft_train.jsonl").resolve()

# Representative bad inputs: (its text, a fragment the one line must hold); `train` rows and questions too.
BAD_INPUTS = {
    "missing-file": (None, "recipe file not found"),
    "toml-syntax": ('name = "x"\n[model\n', "not valid TOML"),
    "unknown-key": (f'name = "x"\n[model]\nbogus = 1\n[data]\ntrain = "{TRAIN}"\n', "unknown key `model.bogus`"),
    "sft-typo": (
        f'name = "x"\n[data]\ntrain = "{TRAIN}"\n[sft]\nlearning_rat = 1e-4\n',
        "did you mean sft.learning_rate",
    ),
    "row-without-answer": (
        'name = "x"\n[data]\ntrain = "rows.jsonl"\n[eval]\nquestions = ["Hi"]\n',
        "rows.jsonl:1: conversation has no assistant message",
    ),
    "questions-line": (
        f'name = "x"\n[data]\ntrain = "{TRAIN}"\n[eval]\nquestions_file = "q.jsonl"\n',
        "q.jsonl:2: not valid JSON",
    ),
    "train-missing": (
        'name = "x"\n[data]\ntrain = "gone.jsonl"\n[eval]\nquestions = ["Hi"]\n',
        "data.train: dataset",
    ),
    "questions-folder": (
        f'name = "x"\n[data]\ntrain = "{TRAIN}"\n[eval]\nquestions_file = "qdir"\n',
        "qdir is a folder",
    ),
}
# `plan` reads the rows (their count) and no questions: the inputs it answers.
PLAN_INPUTS = ("missing-file", "toml-syntax", "unknown-key", "sft-typo", "row-without-answer", "train-missing")


def write_bad_input(folder: Path, name: str) -> Path:
    text, _ = BAD_INPUTS[name]
    recipe = folder / f"{name}.toml"
    if text is not None:
        recipe.write_text(text, encoding="utf-8")
        (folder / "q.jsonl").write_text('{"question": "ok"}\n{"question": \n', encoding="utf-8")
        (folder / "rows.jsonl").write_text('{"messages": [{"role": "user", "content": "Hi"}]}\n', encoding="utf-8")
        (folder / "qdir").mkdir(exist_ok=True)
    return recipe


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory) -> str:
    """A folder whose `torch` package raises ImportError on import, for PYTHONPATH."""
    shim = tmp_path_factory.mktemp("no-torch")
    (shim / "torch").mkdir()
    (shim / "torch" / "__init__.py").write_text('raise ImportError("torch cannot be imported (test shim)")\n')
    return str(shim)


def test_the_shim_really_breaks_torch(no_torch, cli):
    """The broken case: with the shim, anything that imports torch fails (an audit that gets past the recipe)."""
    result = cli.run("audit", env={"PYTHONPATH": no_torch})
    assert result.returncode != 0 and "torch cannot be imported" in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_without_torch_on_an_empty_cache(name, tmp_path, no_torch, cli):
    recipe = write_bad_input(tmp_path, name)
    for command in ("audit", "train", "report", *(["plan"] if name in PLAN_INPUTS else [])):
        cache = tmp_path / f"cache-{command}"
        result = cli.run(command, "--recipe", str(recipe), env={"PYTHONPATH": no_torch, "SFT_EVAL_CACHE": str(cache)})
        cli.bad_input(result, BAD_INPUTS[name][1])
