"""Training rows and questions: bad rows are refused with file and line before anything trains."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from sft_eval.data import (
    Question,
    all_user_turns,
    dataset_table,
    head,
    leaked_questions,
    load_questions,
    load_sft_rows,
    multi_turn_rows,
    rows_pass,
    rows_with_text,
)
from sft_eval.errors import SftEvalError
from sft_eval.recipe import DEFAULT_RECIPE, load_recipe, recipe_from_dict

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """The Arrow files `load_sft_rows` writes go to this test's folder, not the user's cache."""
    monkeypatch.setenv("SFT_EVAL_CACHE", str(tmp_path / "cache"))


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
    assert load_sft_rows(recipe).to_list() == [{"prompt": "2+2?", "completion": "4"}]


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


# -- the Arrow path ----------------------------------------------------------------------------------------------
def _turns(*pairs):
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


def test_rows_are_a_memory_mapped_arrow_dataset_handed_on_as_is(tmp_path):
    """The rows TRL gets are the Arrow table `datasets` wrote under the cache (no Python-list round trip)."""
    rows = [dict(GOOD, id=i) for i in range(50)]
    recipe, _ = recipe_for(tmp_path, rows, limit=20)
    dataset = load_sft_rows(recipe, cache_dir=tmp_path / "arrow")
    assert isinstance(dataset, Dataset) and len(dataset) == 20
    assert dataset.cache_files and all(str(tmp_path / "arrow") in f["filename"] for f in dataset.cache_files)
    assert head(dataset, 2) == [dict(GOOD, id=0), dict(GOOD, id=1)] and head([1, 2, 3], 2) == [1, 2]


GOOD_TABLES = {
    "messages": [GOOD, _turns(("system", "s"), ("user", "u"), ("assistant", "a"), ("user", "v"), ("assistant", "b"))],
    "text prompt/completion": [{"prompt": "2+2?", "completion": "4"}] * 2,
    "conversational prompt/completion": [
        {"prompt": [{"role": "user", "content": "2+2?"}], "completion": [{"role": "assistant", "content": "4"}]}
    ],
}


@pytest.mark.parametrize("name", list(GOOD_TABLES))
def test_the_columnar_check_vouches_for_good_rows(name):
    assert rows_pass(Dataset.from_list(GOOD_TABLES[name]))


BAD_TABLES = {
    "unknown role": [GOOD, _turns(("human", "u"), ("assistant", "a"))],
    "no assistant": [GOOD, _turns(("user", "u"))],
    "blank assistant": [GOOD, _turns(("user", "u"), ("assistant", " \n "))],
    "empty conversation": [GOOD, {"messages": []}],
    "a message without content": [GOOD, {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}],
    "mixed formats": [GOOD, {"prompt": "p", "completion": "c"}],
    "empty completion": [{"prompt": "p", "completion": "c"}, {"prompt": "p", "completion": ""}],
    "empty prompt list": [
        {"prompt": [{"role": "user", "content": "p"}], "completion": [{"role": "assistant", "content": "c"}]},
        {"prompt": [], "completion": [{"role": "assistant", "content": "c"}]},
    ],
    "no known columns": [{"text": "hello"}],
}


@pytest.mark.parametrize("name", list(BAD_TABLES))
def test_the_columnar_check_refuses_what_the_row_check_refuses(name, tmp_path):
    """Each table the columnar check refuses, the line scan refuses too, naming the second line."""
    rows = BAD_TABLES[name]
    assert not rows_pass(Dataset.from_list(rows))
    recipe, path = recipe_for(tmp_path, rows)
    with pytest.raises(SftEvalError, match=rf"{path}:{len(rows)}: "):
        load_sft_rows(recipe)


def test_a_key_whose_type_changes_between_rows_loads_unchanged(tmp_path):
    """`datasets` 5 reads a key that is a number in one row and a string in the next as a `Json` column."""
    recipe, _ = recipe_for(tmp_path, [dict(GOOD, meta=1), dict(GOOD, meta="x")])
    assert load_sft_rows(recipe).to_list() == [dict(GOOD, meta=1), dict(GOOD, meta="x")]


def test_rows_no_table_can_hold_are_one_line(tmp_path, monkeypatch):
    """When Arrow cannot read the file and the line scan vouches for its rows, they become a table from the list
    (a column of mixed types kept as JSON, each row's value as written), or one line naming the file when no table
    can hold them (an older `datasets`, without the `Json` feature: simulated)."""
    import sft_eval.data

    monkeypatch.setattr(sft_eval.data, "arrow_jsonl", lambda path, cache_dir: None)
    recipe, path = recipe_for(tmp_path, [dict(GOOD, meta=1), dict(GOOD, meta="x")])
    assert [row["meta"] for row in load_sft_rows(recipe)] == [1, "x"]
    monkeypatch.setattr(sft_eval.data, "MIXED_AS_JSON", {})
    with pytest.raises(SftEvalError, match=rf"^{path}: the rows do not form one table .*int64"):
        load_sft_rows(recipe)
    recipe, _ = recipe_for(tmp_path, [dict(GOOD, meta=1), dict(GOOD, meta=2)])
    assert load_sft_rows(recipe).to_list() == [dict(GOOD, meta=1), dict(GOOD, meta=2)]


def test_a_bad_line_past_the_limit_is_not_read(tmp_path):
    """`data.limit` rows are what trains: a broken line after them stops nothing (Arrow fails, the scan stops)."""
    recipe, _ = recipe_for(tmp_path, [], limit=2, raw_lines=[json.dumps(GOOD)] * 2 + ['{"messages": ['])
    assert len(load_sft_rows(recipe)) == 2


def test_column_wise_helpers_agree_with_row_by_row():
    rows = [
        _turns(("user", "What is <|im_end|>?"), ("assistant", "a")),
        _turns(("user", "u1"), ("assistant", "a"), ("user", "u2"), ("assistant", "b")),
        _turns(("user", "plain"), ("assistant", "has <|im_start|> in it")),
    ]
    dataset = Dataset.from_list(rows)
    for both in (rows, dataset):
        assert rows_with_text(both, ["<|im_end|>", "<|im_start|>"]) == [0, 2]
        assert rows_with_text(both, ["absent"]) == []
        assert multi_turn_rows(both) == 1
        assert all_user_turns(both) == ["What is <|im_end|>?", "u1", "u2", "plain"]
    text = [{"prompt": "p1", "completion": "c"}, {"prompt": "p2", "completion": "c"}]
    conversational = GOOD_TABLES["conversational prompt/completion"]
    for rows, turns in ((text, ["p1", "p2"]), (conversational, ["2+2?"])):
        assert all_user_turns(rows) == all_user_turns(Dataset.from_list(rows)) == turns


# -- rows with tools (issue 28): TRL's format loads as written; a malformed call is one line naming it ----------------
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
MULTIPLY = {
    "type": "function",
    "function": {
        "name": "multiply",
        "description": "a times b.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
    },
}


def tool_row(name: str, arguments, tools=(WEATHER, MULTIPLY), content=None) -> dict:
    call = {
        "role": "assistant",
        "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}],
    }
    if content is not None:
        call["content"] = content
    return {
        "messages": [
            {"role": "user", "content": f"Please use {name}."},
            call,
            {"role": "tool", "name": name, "content": "42"},
            {"role": "assistant", "content": "It is 42."},
        ],
        "tools": list(tools),
    }


def test_tool_rows_load_with_each_calls_own_arguments(tmp_path):
    """Rows whose calls take different arguments: Arrow would widen them to one struct and every call would carry
    the other rows' keys as nulls (`{"city": "Lisbon", "a": null, "b": null}`); each call keeps its own, read by
    `datasets`' JSON builder or, when a column defeats Arrow, line by line."""
    rows = [tool_row("get_weather", {"city": "Lisbon"}), tool_row("multiply", {"a": 3, "b": 4}, content="")]
    recipe, _ = recipe_for(tmp_path, rows)
    loaded = load_sft_rows(recipe)
    calls = [row["messages"][1]["tool_calls"][0]["function"]["arguments"] for row in loaded]
    assert calls == [{"city": "Lisbon"}, {"a": 3, "b": 4}]
    from sft_eval.data import rows_dataset

    assert [r["messages"][1]["tool_calls"][0]["function"]["arguments"] for r in rows_dataset(rows)] == calls
    widened = Dataset.from_list(rows)  # the broken case: what a plain from_list does to the same rows
    assert widened[0]["messages"][1]["tool_calls"][0]["function"]["arguments"] == {
        "city": "Lisbon",
        "a": None,
        "b": None,
    }


def test_a_tool_calling_turn_shows_its_call_in_the_preview_and_is_no_answer_text():
    """The report's data preview and the answer-length signal read rows whose assistant turn is a call with no
    `content` (it raised KeyError in the report of the tiny tool recipe)."""
    from sft_eval.data import assistant_texts

    rows = [tool_row("get_weather", {"city": "Lisbon"}), tool_row("multiply", '{"a": 3, "b": 4}', content="")]
    assert dataset_table(rows).rows == [
        ("Please use get_weather.", 'get_weather({"city": "Lisbon"})'),
        ("Please use multiply.", 'multiply({"a": 3, "b": 4})'),  # arguments given as a JSON string
    ]
    assert [assistant_texts(r) for r in rows] == [["It is 42."], ["", "It is 42."]]


@pytest.mark.parametrize(
    ("row", "fragments"),
    [
        (tool_row("get_weather", '{"city": Lisbon}'), ["tool_calls[0] (get_weather)", "not valid JSON", "column 10"]),
        (tool_row("get_weather", ["Lisbon"]), ["tool_calls[0] (get_weather)", "a JSON object, not list"]),
        (tool_row("get_time", {}), ["calls 'get_time'", "not among the row's tools (get_weather, multiply)"]),
        (tool_row("", {}), ["`messages`[1].tool_calls[0] has no function name"]),
        ({**tool_row("get_weather", {}), "tools": "[{"}, ["`tools` is not valid JSON"]),
        ({**tool_row("get_weather", {}), "tools": [{"type": "function"}]}, ["`tools`[0] is not a function schema"]),
    ],
    ids=["arguments-not-json", "arguments-not-object", "unknown-tool", "no-name", "tools-not-json", "tools-not-schema"],
)
def test_a_malformed_call_is_one_line_naming_its_line_and_call(tmp_path, row, fragments):
    good = tool_row("multiply", {"a": 1, "b": 2})
    recipe, path = recipe_for(tmp_path, [good, good, row])
    with pytest.raises(SftEvalError) as caught:
        load_sft_rows(recipe)
    line = str(caught.value)
    assert line.startswith(f"{path}:3: ") and "\n" not in line, line
    for fragment in fragments:
        assert fragment in line, line
