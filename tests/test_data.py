"""Training rows and questions: bad rows are refused with file and line before anything trains."""

from __future__ import annotations

import json

import pytest

from sft_eval.data import Question, dataset_table, leaked_questions, load_questions, load_sft_rows
from sft_eval.errors import SftEvalError
from sft_eval.recipe import DEFAULT_RECIPE, load_recipe, recipe_from_dict

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def recipe_for(tmp_path, rows: list, limit: int | None = None, raw_lines: list[str] | None = None):
    path = tmp_path / "rows.jsonl"
    lines = raw_lines if raw_lines is not None else [json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = {"train": str(path)} | ({"limit": limit} if limit else {})
    return recipe_from_dict({"name": "t", "data": data, "eval": {"questions": ["q"]}}, tmp_path / "r.toml"), path


def test_shipped_rows_load():
    rows = load_sft_rows(load_recipe(DEFAULT_RECIPE))
    assert len(rows) > 300 and all("messages" in r for r in rows)


def test_limit_takes_the_first_rows_like_the_lessons_select(tmp_path):
    rows = [dict(GOOD, id=i) for i in range(10)]
    recipe, _ = recipe_for(tmp_path, rows, limit=3)
    assert [r["id"] for r in load_sft_rows(recipe)] == [0, 1, 2]


def test_prompt_completion_rows_are_accepted(tmp_path):
    recipe, _ = recipe_for(tmp_path, [{"prompt": "2+2?", "completion": "4"}])
    assert load_sft_rows(recipe) == [{"prompt": "2+2?", "completion": "4"}]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"messages": [{"role": "user", "content": "Hi"}]}, "conversation has no assistant message"),
        ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]}, "no assistant"),
        ({"messages": "Hi"}, "`messages` must be a list"),
        ({"prompt": "2+2?"}, "needs a non-empty `completion`"),
        ({"text": "hello"}, "row needs `messages` or `prompt`+`completion` (has text)"),
    ],
    ids=["no-assistant", "empty-assistant", "messages-not-list", "no-completion", "unknown-format"],
)
def test_bad_row_names_file_and_line(tmp_path, row, expected):
    recipe, path = recipe_for(tmp_path, [GOOD, row])
    with pytest.raises(SftEvalError) as error:
        load_sft_rows(recipe)
    assert f"{path}:2: " in str(error.value) and expected in str(error.value)


def test_malformed_json_line_is_named(tmp_path):
    recipe, path = recipe_for(tmp_path, [], raw_lines=[json.dumps(GOOD), "", '{"messages": [', json.dumps(GOOD)])
    with pytest.raises(SftEvalError, match=rf"{path}:3: not valid JSON"):
        load_sft_rows(recipe)


def test_missing_data_file_is_named(tmp_path):
    recipe = recipe_from_dict(
        {"name": "t", "data": {"train": "./absent.jsonl"}, "eval": {"questions": ["q"]}}, tmp_path / "r.toml"
    )
    with pytest.raises(SftEvalError, match="data.train: dataset .*absent.jsonl.* does not exist"):
        load_sft_rows(recipe)


def test_questions_combine_inline_and_file():
    questions = load_questions(load_recipe(DEFAULT_RECIPE))
    assert questions[0].question == "Give me an 1-sentence introduction of LLM." and questions[0].expected is None
    assert sum(q.expected is not None for q in questions) >= 20


def test_dataset_table_shows_user_prompt_and_assistant_response():
    table = dataset_table([GOOD, {"prompt": "2+2?", "completion": "4"}], n=3)
    assert table.rows == [("Hi", "Hello!"), ("2+2?", "4")]
    text = str(table)
    assert text.splitlines()[0].startswith("User Prompt") and "Hello!" in text and "2+2?" in text


ROWS = [
    {
        "messages": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris"},
        ]
    },
    {"prompt": "Calculate 1+1-1", "completion": "1"},
    {"prompt": [{"role": "user", "content": "Hi there!"}], "completion": [{"role": "assistant", "content": "Hello"}]},
]


@pytest.mark.parametrize(
    "question",
    ["what is the capital of france", "Calculate 1+1-1.", "hi there"],
    ids=["messages", "prompt", "prompt-list"],
)
def test_a_question_trained_on_is_caught_in_every_row_format(question):
    assert leaked_questions(ROWS, [Question(question)]) == [question]


def test_a_held_out_question_is_not_flagged():
    assert leaked_questions(ROWS, [Question("What is the capital of Spain?")]) == []
