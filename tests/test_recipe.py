"""The recipe contract: the shipped recipes load; every kind of bad recipe is one line naming file and key."""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import pytest

from sft_eval.errors import SftEvalError
from sft_eval.recipe import DEFAULT_RECIPE, FIXTURES_DIR, load_recipe
from sft_eval.trainer_config import sft_config

SEED = FIXTURES_DIR / "recipes" / "seed_lesson.toml"
MINIMAL = 'name = "r"\n[data]\ntrain = "rows.jsonl"\n[eval]\nquestions = ["Hi"]\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_default_recipe_loads_with_paths_relative_to_it():
    recipe = load_recipe(DEFAULT_RECIPE)
    assert recipe.model.base == "tiny" and recipe.model.template == "chatml"
    assert Path(recipe.resolve(recipe.data.train)) == FIXTURES_DIR / "data" / "sft_train.jsonl"


def test_seed_lesson_recipe_is_the_lessons_configuration():
    recipe = load_recipe(SEED)
    assert recipe.model.base == "HuggingFaceTB/SmolLM2-135M"
    assert recipe.data.train == "banghua/DL-SFT-Dataset" and recipe.data.limit == 100
    assert dict(recipe.sft) == {
        "learning_rate": 8e-5,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 8,
        "gradient_checkpointing": False,
        "logging_steps": 2,
    }
    assert recipe.eval.questions == (
        "Give me an 1-sentence introduction of LLM.",
        "Calculate 1+1-1",
        "What's the difference between thread and process?",
    )
    assert recipe.eval.enable_thinking is False


def test_recipe_is_frozen(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    with pytest.raises(AttributeError):
        recipe.seed = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        recipe.sft["learning_rate"] = 1.0  # type: ignore[index]


def test_hub_ids_stay_hub_ids_and_missing_paths_resolve_against_the_recipe(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    assert recipe.resolve("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert recipe.resolve("rows.jsonl") == str(tmp_path / "rows.jsonl")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "[sft]\nlearning_rat = 1e-4\n", "unknown key `sft.learning_rat`; did you mean sft.learning_rate"),
        (MINIMAL.replace("[eval]", "[eval]\nmax_new_tokenz = 5"), "unknown key `eval.max_new_tokenz`"),
        (MINIMAL + "[modle]\nbase = 'tiny'\n", "unknown key `modle`; did you mean model"),
        (MINIMAL.replace('name = "r"', "name = 3"), "`name` must be a string, not int 3"),
        (MINIMAL.replace("[eval]", "[eval]\nmax_new_tokens = 'many'"), "`eval.max_new_tokens` must be an integer"),
        (MINIMAL.replace("[eval]", "[eval]\nenable_thinking = 1"), "`eval.enable_thinking` must be true or false"),
        (MINIMAL.replace('["Hi"]', '["Hi", 2]'), "`eval.questions` must be a list of a string"),
        (MINIMAL + "[thresholds]\nmin_match_rate = 80\n", "`thresholds.min_match_rate` must be between 0 and 1"),
        ('name = "r"\n[eval]\nquestions = ["Hi"]\n', "missing section [data]"),
        ('name = "r"\n[data]\nlimit = 3\n[eval]\nquestions = ["Hi"]\n', "[data] is missing required key `train`"),
        ('name = "r"\n[data]\ntrain = "x"\n', "[eval] needs `questions` or `questions_file`"),
        (MINIMAL + "[sft]\noutput_dir = 'out'\n", "`sft.output_dir` is chosen by sft-eval"),
        ("name = \n", "not valid TOML"),
        (MINIMAL.replace("[eval]", "[eval]\nbackend = 'vllm'"), "`eval.backend` must be one of transformers, openai"),
        (MINIMAL.replace("[eval]", "[eval]\nbackend = 'openai'"), '`eval.backend = "openai"` needs `eval.base_url`'),
        (MINIMAL.replace("[eval]", "[eval]\nbase_url = 'http://x/v1'"), "`eval.base_url` is for a served model"),
        (MINIMAL + "[sft]\ngradient_accumulation_steps = 0\n", "`sft.gradient_accumulation_steps` must be a whole"),
        (MINIMAL + "[sft]\nper_device_train_batch_size = 0\n", "`sft.per_device_train_batch_size` must be a whole"),
        (MINIMAL + "[sft]\nlearning_rate = -1\n", "`sft.learning_rate` must be above 0"),
        (MINIMAL + "[sft]\nlearning_rate = 'fast'\n", "`sft.learning_rate` must be a number, not str 'fast'"),
        (MINIMAL + "[sft]\nlearning_rate = nan\n", "`sft.learning_rate` must be finite"),
        (MINIMAL + "[sft]\nseed = -1\n", "`sft.seed` must be between 0 and 2**32 - 1"),
        (MINIMAL.replace('name = "r"', 'name = "r"\nseed = -1'), "`seed` must be between 0 and 2**32 - 1"),
        (MINIMAL + "[sft]\nnum_train_epochs = 0\n", "`sft.num_train_epochs` must be above 0"),
        (MINIMAL + "[sft]\nmax_steps = 0\n", "`sft.max_steps` must be at least 1"),
        (MINIMAL + "[sft]\nmax_length = -1\n", "`sft.max_length` must be a whole number of at least 1"),
        (MINIMAL.replace('["Hi"]', '["Hi", "  "]'), "`eval.questions` has a blank question"),
        (MINIMAL + "[sft]\nlogging_steps = 0\n", "`sft.logging_steps` must be above 0"),
    ],
    ids=[
        "sft-typo",
        "eval-typo",
        "section-typo",
        "name-type",
        "int-type",
        "bool-type",
        "list-item-type",
        "threshold-range",
        "no-data",
        "no-train",
        "no-questions",
        "output-dir",
        "bad-toml",
        "unknown-backend",
        "openai-without-url",
        "url-without-openai",
        "sft-accumulation-0",
        "sft-batch-0",
        "sft-negative-lr",
        "sft-lr-string",
        "sft-lr-nan",
        "sft-negative-seed",
        "negative-seed",
        "sft-0-epochs",
        "sft-0-max-steps",
        "sft-negative-max-length",
        "blank-question",
        "sft-logging-0",
    ],
)
def test_bad_recipe_is_one_line_naming_file_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(SftEvalError) as error:
        load_recipe(path)
    message = str(error.value)
    assert expected in message, f"expected {expected!r} in {message!r}"
    assert str(path) in message and "\n" not in message


def test_a_served_recipe_loads(tmp_path):
    text = MINIMAL.replace("[eval]", "[eval]\nbackend = 'openai'\nbase_url = 'http://127.0.0.1:8000/v1'\nmodel = 'm'")
    settings = load_recipe(write(tmp_path, text)).eval
    assert (settings.backend, settings.base_url, settings.model, settings.base_model) == (
        "openai",
        "http://127.0.0.1:8000/v1",
        "m",
        None,
    )


def test_missing_recipe_file_is_named(tmp_path):
    with pytest.raises(SftEvalError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.toml")


def test_sft_values_the_trainer_accepts_still_load(tmp_path):
    """The value checks are not stricter than the trainer: a max_steps run with 0 epochs, fractional epochs."""
    text = MINIMAL + "[sft]\nmax_steps = 2\nnum_train_epochs = 0\nlearning_rate = 1e-9\nseed = 4294967295\n"
    assert load_recipe(write(tmp_path, text)).sft["max_steps"] == 2
    assert load_recipe(write(tmp_path, MINIMAL + "[sft]\nnum_train_epochs = 1.5\n")).sft["num_train_epochs"] == 1.5
    assert load_recipe(write(tmp_path, MINIMAL + "[sft]\nlogging_steps = 0.1\n")).sft["logging_steps"] == 0.1


def test_a_questions_file_with_no_question_is_one_line(tmp_path):
    from sft_eval.data import load_questions

    (tmp_path / "empty.jsonl").write_text("", encoding="utf-8")
    recipe = load_recipe(
        write(tmp_path, 'name = "r"\n[data]\ntrain = "rows.jsonl"\n[eval]\nquestions_file = "empty.jsonl"\n')
    )
    with pytest.raises(SftEvalError, match="empty.jsonl: no evaluation questions"):
        load_questions(recipe)


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        ('{"question": "a", "id": 1}\n{"question": "b", "id": "q2"}\n', None),
        ('{"question": "a", "id": true}\n', "questions.jsonl:1: `id` must be a string or an integer"),
        (
            '{"question": "a", "id": 7}\n{"question": "b"}\n{"question": "c", "id": "7"}\n',
            "questions.jsonl:3: `id` '7'",
        ),
    ],
    ids=["ids", "a-bool", "twice"],
)
def test_question_ids_are_strings_once_each(tmp_path, rows, says):
    """`compare` pairs questions by id: a bool or a repeated id would pair the wrong ones, so each is one line."""
    from sft_eval.data import load_questions

    (tmp_path / "questions.jsonl").write_text(rows, encoding="utf-8")
    recipe = load_recipe(
        write(tmp_path, 'name = "r"\n[data]\ntrain = "rows.jsonl"\n[eval]\nquestions_file = "questions.jsonl"\n')
    )
    if says is None:
        assert [q.id for q in load_questions(recipe)] == ["1", "q2"]
    else:
        with pytest.raises(SftEvalError, match=re.escape(says)):
            load_questions(recipe)


@pytest.mark.parametrize(
    ("sft", "expected"), [({}, True), ({"gradient_checkpointing": False}, False)], ids=["trl-default", "lesson"]
)
def test_checkpointing_reaches_sftconfig_by_its_new_name_without_a_warning(tmp_path, sft, expected):
    """TRL defaults the deprecated `gradient_checkpointing` (True), so a bare SFTConfig warns (FutureWarning); the
    recipe's value, or TRL's default, is passed as `activation_checkpointing` and nothing warns."""
    recipe = load_recipe(DEFAULT_RECIPE)
    others = {k: v for k, v in recipe.sft.items() if k != "gradient_checkpointing"}
    recipe = dataclasses.replace(recipe, sft={**others, **sft})
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        config, _ = sft_config(recipe, str(tmp_path))
    assert config.activation_checkpointing is expected and config.gradient_checkpointing is expected


def test_the_recipe_key_table_in_the_docs_is_generated_from_the_fields():
    """docs/recipes.md's table is `key_table()`'s output: a key added, renamed or given a new default or help in
    recipe.py and not regenerated fails here (regenerate: paste `key_table()` between the markers)."""
    from sft_eval.recipe import key_table

    text = (Path(__file__).resolve().parent.parent / "docs" / "recipes.md").read_text(encoding="utf-8")
    start = text.index("<!-- recipe keys: generated by sft_eval.recipe.key_table() -->\n")
    block = text[start : text.index("<!-- end of recipe keys -->")].split("\n", 1)[1]
    assert block == key_table()
    assert '| `eval.golden_mode` | str | `"tolerance"` |' in block


def test_a_recipe_key_without_help_fails_the_table(monkeypatch):
    import dataclasses

    from sft_eval import recipe as recipe_module

    @dataclasses.dataclass(frozen=True)
    class WithAnUndocumentedKey:
        documented: int = recipe_module.key(1, "has its help")
        undocumented: int = 2

    monkeypatch.setitem(recipe_module.SECTIONS, "extra", WithAnUndocumentedKey)
    with pytest.raises(ValueError, match=r"recipe key `extra.undocumented` has no help"):
        recipe_module.key_table()
