"""Issue 28: tool-calling evaluation items, parsed with the template's own response parser, scored field by field;
and the shipped tiny tool recipe, which learns to call (and a run with its calls masked out, which does not).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import pytest

from sft_eval.data import ToolItem, load_tool_items
from sft_eval.errors import SftEvalError
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import FIXTURES_DIR, load_recipe, recipe_from_dict
from sft_eval.records import Answer
from sft_eval.report import check_report, render_html
from sft_eval.tokenizer import load_tokenizer
from sft_eval.toolcalls import (
    SHIPPED_TOOL_TEMPLATE,
    parse_answer,
    report_data,
    response_parser,
    score_answers,
    score_item,
    summarize,
    tool_prompt,
)
from sft_eval.verdict import tool_checks

TOOLS_RECIPE = FIXTURES_DIR / "recipes" / "tiny_tools.toml"
REPO = Path(__file__).resolve().parent.parent
TOOL_DATA = FIXTURES_DIR / "data"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather now.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
ASK = [{"role": "user", "content": "Weather in Oslo?"}]
CALL_ITEM = ToolItem(ASK, [WEATHER], expected_call={"name": "get_weather", "arguments": {"city": "Oslo"}})
TEXT_ITEM = ToolItem([{"role": "user", "content": "Hi!"}], [WEATHER], expected="Hello!")


def call(name: str, arguments) -> dict:
    return {
        "role": "assistant",
        "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}],
    }


@pytest.mark.parametrize(
    ("parsed", "expected"),
    [
        (call("get_weather", {"city": "Oslo"}), dict(has_call=True, name=True, valid=True, callable=True, exact=True)),
        (call("get_weather", {"city": "Rome"}), dict(name=True, valid=True, callable=True, exact=False, recall=0.0)),
        (call("get_time", {"city": "Oslo"}), dict(name=False, callable=False, exact=False, recall=1.0)),
        (call("get_weather", {}), dict(name=True, valid=False, callable=False, error="'city' is a required property")),
        (call("get_weather", {"city": 7}), dict(valid=False, error="7 is not of type 'string'")),
        (call("get_weather", {"city": "Oslo", "days": 2}), dict(valid=True, exact=False, precision=0.5, recall=1.0)),
        ({"role": "assistant", "content": "It is cold."}, dict(has_call=False, callable=False)),
        ({"role": "assistant", "content": "<tool_call>", "error": "json"}, dict(has_call=True, valid=False)),
    ],
    ids=["exact", "wrong-city", "wrong-tool", "missing-field", "wrong-type", "extra-field", "no-call", "not-json"],
)
def test_a_call_is_scored_field_by_field_against_the_tools_schema(parsed, expected):
    score = score_item(CALL_ITEM, parsed)
    for field, value in expected.items():
        got = getattr(score, field)
        assert (value in got) if field == "error" else got == value, (field, score)


def test_a_text_item_is_matched_and_a_call_there_counted():
    assert score_item(TEXT_ITEM, {"role": "assistant", "content": "hello!"}).matched
    called = score_item(TEXT_ITEM, call("get_weather", {"city": "Oslo"}))
    assert called.has_call and not called.matched
    summary = summarize([score_item(CALL_ITEM, call("get_weather", {"city": "Oslo"})), called])
    assert (summary.calls, summary.texts, summary.exact, summary.text_called) == (1, 1, 1.0, 1.0)


def test_the_checks_fire_below_their_thresholds_and_not_above():
    thresholds = load_recipe(TOOLS_RECIPE).thresholds
    good = summarize([score_item(CALL_ITEM, call("get_weather", {"city": "Oslo"}))])
    bad = summarize([score_item(CALL_ITEM, {"role": "assistant", "content": "It is cold."})])
    assert tool_checks(thresholds, good)["tools.call"].passed is True
    failing = tool_checks(thresholds, bad, good)["tools.call"]
    assert (
        failing.passed is False
        and "0% of 1 items" in failing.message
        and "base's executable calls: 100%" in failing.message
    )
    assert tool_checks(thresholds, good)["tools.call_exact"].passed is None  # the tiny recipe does not judge it


def test_answers_are_parsed_by_the_templates_own_parser(realworld_dir, sft_tokenizer, tools_tokenizer):
    """The shipped tool template gets TRL's Qwen response template; a released Qwen2.5 tokenizer TRL's own for it;
    a template no parser knows is a reason, not a regex; a call whose JSON is broken is an error, not a crash."""
    parser, how = response_parser(tools_tokenizer)
    assert parser is not None and "Qwen" in how
    prompt = tool_prompt(tools_tokenizer, CALL_ITEM)
    raw = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>'
    parsed = parse_answer(parser, prompt, Answer(ASK[0]["content"], "", raw, [], 0, "eos"))
    assert parsed["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": {"city": "Oslo"}}
    broken = parse_answer(parser, prompt, Answer("q", "x", raw.replace('"Oslo"', "Oslo"), [], 0, "eos"))
    assert broken["error"] and not broken.get("tool_calls")
    qwen = load_tokenizer(realworld_dir / "tokenizers" / "Qwen2.5-0.5B-Instruct")
    assert response_parser(qwen)[0] is not None
    assert response_parser(sft_tokenizer)[0] is None and "response_template" in response_parser(sft_tokenizer)[1]


CITIES = ("Oslo", "Rome", "Lima", "Pune", "Kyiv", "Baku", "Doha", "Riga", "Bern", "Oran", "Lome", "Suva")


def weather_call(city: str) -> str:
    """An answer calling get_weather as the shipped tool template writes calls (Qwen's format)."""
    return f'<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{city}"}}}}\n</tool_call><|im_end|>'


def answered(tokenizer, items: list[ToolItem], raws: list[str]):
    """`items` asked and answered with `raws` (written here, not generated), parsed and scored as a model's are."""
    parser, _ = response_parser(tokenizer)
    prompts = [tool_prompt(tokenizer, item) for item in items]
    answers = [
        Answer(i.question, r.replace("<|im_end|>", ""), r, [], 9, "eos") for i, r in zip(items, raws, strict=True)
    ]
    return score_answers(parser, items, prompts, answers)


@pytest.fixture(scope="module")
def tools_tokenizer(sft_tokenizer):
    """The tiny tokenizer with the shipped tool template (a copy: the session's tokenizer keeps ChatML)."""
    tokenizer = sft_tokenizer.__class__.from_pretrained(sft_tokenizer.name_or_path)
    tokenizer.chat_template = Path(SHIPPED_TOOL_TEMPLATE).read_text(encoding="utf-8")
    return tokenizer


def tool_report(tools_tokenizer, tuned_calls: int) -> dict:
    """Twelve call items and two text items; the base answers each in words, the tuned model calls the right tool
    with the right city on the first `tuned_calls` items, with the wrong city on the rest, and answers the text
    items (one of its questions holding markup, which the page must show as text)."""
    calls = [
        ToolItem(
            [{"role": "user", "content": f"Weather in {c}?"}],
            [WEATHER],
            {"name": "get_weather", "arguments": {"city": c}},
            id=f"w{k}",
        )
        for k, c in enumerate(CITIES)
    ]
    texts = [TEXT_ITEM, ToolItem([{"role": "user", "content": "<b>bold</b> hi?"}], [WEATHER], expected="Hello!")]
    items = calls + texts
    base = ["It is cold.<|im_end|>"] * len(calls) + ["Hello!<|im_end|>"] * 2
    tuned = [weather_call(c if k < tuned_calls else "Nowhere") for k, c in enumerate(CITIES)] + [
        "Hello!<|im_end|>",
        weather_call("Oslo"),
    ]
    return report_data(
        {"base": answered(tools_tokenizer, items, base), "tuned": answered(tools_tokenizer, items, tuned)}
    )


def test_the_report_holds_rates_paired_statistics_and_a_card_per_item(tools_tokenizer):
    """Tuned minus base per tool metric, paired over the items: a tuned model that calls where the base never did
    is beyond noise; where both behave alike (the text items' matches) it is not."""
    data = tool_report(tools_tokenizer, tuned_calls=10)
    assert data["summary"]["tuned"]["callable"] == 1.0 and data["summary"]["base"]["callable"] == 0.0
    assert data["summary"]["tuned"]["exact"] == pytest.approx(10 / 12)
    rows = {d["metric"]: d for d in data["comparison"]}
    assert rows["callable call"]["difference"] == 1.0 and rows["callable call"]["beyond_noise"]
    assert rows["callable call"]["questions"] == 12 and rows["text matched"]["questions"] == 2
    assert rows["exact call"]["low"] > 0  # 10 of 12 exact against none
    assert rows["text matched"]["difference"] == -0.5 and not rows["text matched"]["beyond_noise"]  # 2 items: noise
    card = data["cards"][11]
    assert card["expected_call"] == {"name": "get_weather", "arguments": {"city": "Suva"}}
    assert card["tuned"]["calls"] == [{"name": "get_weather", "arguments": {"city": "Nowhere"}}]
    assert card["tuned"]["score"]["callable"] and not card["tuned"]["score"]["exact"]
    assert card["base"]["content"] == "It is cold." and not card["base"]["calls"]
    alike = {d["metric"]: d for d in tool_report(tools_tokenizer, tuned_calls=0)["comparison"]}
    assert alike["exact call"]["difference"] == 0 and not alike["exact call"]["beyond_noise"]


def test_the_page_shows_each_items_conversation_and_call_and_refuses_a_broken_one(tools_tokenizer, sft_pipeline):
    context = {**sft_pipeline.report_context(), "tools": tool_report(tools_tokenizer, tuned_calls=10)}
    context = json.loads(json.dumps(context, default=str))  # as read back from the JSON
    from pydantic import TypeAdapter

    from sft_eval.schema import ReportData

    TypeAdapter(ReportData).validate_json(json.dumps(context))  # the format's types hold the tools field, closed
    check_report(context, "sft_report.json")
    html = render_html(context)
    section = html[html.index('<section id="tools">') : html.index("</section>", html.index('<section id="tools">'))]
    assert section.count('class="card tool-card"') == 14
    assert 'get_weather({"city": "Suva"})' in section  # expected and parsed calls, as text
    assert "&lt;b&gt;bold&lt;/b&gt;" in section and "<b>bold</b>" not in section
    assert f"at least {context['thresholds']['min_tool_call_rate']}" in section  # the check's threshold, beside it
    assert "beyond noise" in section
    broken = copy.deepcopy(context)
    del broken["tools"]["cards"][3]["messages"][0]["role"]
    with pytest.raises(SftEvalError, match=re.escape("tools.cards[3].messages[0] has no `role`")):
        check_report(broken, "sft_report.json")
    broken = copy.deepcopy(context)
    broken["tools"]["summary"]["tuned"]["callable"] = "1.0"
    with pytest.raises(SftEvalError, match=re.escape("tools.summary.tuned.callable is")):
        check_report(broken, "sft_report.json")


def write_items(tmp_path, rows: list) -> Path:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def with_parameters(parameters) -> dict:
    """GOOD_ITEM whose one tool declares `parameters` instead of its own."""
    tool = copy.deepcopy(WEATHER)
    tool.get("function", tool)["parameters"] = parameters
    return {**GOOD_ITEM, "tools": [tool]}


GOOD_ITEM = {
    "messages": ASK,
    "tools": [WEATHER],
    "expected_call": {"name": "get_weather", "arguments": {"city": "Oslo"}},
}


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({**GOOD_ITEM, "expected": "x"}, "give one of `expected_call`"),
        ({k: v for k, v in GOOD_ITEM.items() if k != "expected_call"}, "give one of `expected_call`"),
        ({**GOOD_ITEM, "expected_call": {"name": "get_time", "arguments": {}}}, "not among the row's tools"),
        ({**GOOD_ITEM, "messages": [*ASK, {"role": "assistant", "content": "x"}]}, "must end with the user's question"),
        ({**GOOD_ITEM, "messages": []}, "needs `messages`"),
        # issue 44, cause 3: what crashed the prompt's rendering or the report, or raised from jsonschema
        ({**GOOD_ITEM, "expected_call": {"name": "get_weather"}}, "`expected_call` has no `arguments`"),
        (with_parameters({"type": "object", "properties": ["city"]}), r"parameters\['properties'\] is not a valid"),
        (with_parameters({"type": "object", "properties": {"city": {"type": "town"}}}), "is not a valid JSON Schema"),
        (with_parameters({"type": "object", "properties": {"city": {"pattern": "(["}}}), "is not a 'regex'"),
        (with_parameters({"properties": {"city": {"$ref": "#/$defs/city"}}}), "does not resolve inside the schema"),
        (with_parameters("city: string"), "parameters must be a JSON Schema object"),
    ],
    ids=[
        "both",
        "neither",
        "unknown-tool",
        "ends-with-answer",
        "no-messages",
        "call-without-arguments",
        "properties-not-a-mapping",
        "unknown-type",
        "bad-pattern",
        "dangling-ref",
        "parameters-a-string",
    ],
)
def test_a_bad_tool_item_is_one_line_naming_its_line(tmp_path, cli, row, fragment):
    path = write_items(tmp_path, [GOOD_ITEM, row])
    recipe = recipe_from_dict(
        {"name": "t", "data": {"train": "x.jsonl"}, "eval": {"questions": ["q"], "tool_items": str(path)}}
    )
    with pytest.raises(SftEvalError, match=rf"^{path}:2: .*{fragment}"):
        load_tool_items(recipe)


def test_a_call_taking_no_arguments_is_expected_with_an_empty_object(tmp_path):
    """The nearby correct case: `arguments: {}` is a call's arguments; a schema with a `$ref` that resolves loads."""
    tool = copy.deepcopy(WEATHER)
    function = tool.get("function", tool)
    function["parameters"] = {
        "type": "object",
        "properties": {"city": {"$ref": "#/$defs/city"}},
        "$defs": {"city": {"type": "string", "pattern": "^[A-Z]"}},
    }
    rows = [{**GOOD_ITEM, "tools": [tool], "expected_call": {"name": "get_weather", "arguments": {}}}]
    recipe = recipe_from_dict(
        {
            "name": "t",
            "data": {"train": "x.jsonl"},
            "eval": {"questions": ["q"], "tool_items": str(write_items(tmp_path, rows))},
        }
    )
    (item,) = load_tool_items(recipe)
    assert item.expected_call["arguments"] == {}


def test_a_bad_tool_item_stops_the_cli_before_any_work(tmp_path, cli):
    path = write_items(tmp_path, [{**GOOD_ITEM, "expected_call": {"name": "get_weather", "arguments": "{city"}}])
    recipe = TOOLS_RECIPE.read_text(encoding="utf-8").replace('"../data/tool_eval.jsonl"', json.dumps(str(path)))
    recipe = recipe.replace('"../data/', json.dumps(str(TOOL_DATA))[:-1] + "/")
    (tmp_path / "r.toml").write_text(recipe, encoding="utf-8")
    cli.bad_input(cli.main("report", "--recipe", str(tmp_path / "r.toml")), f"{path}:1", "not valid JSON")


def test_no_evaluation_item_is_a_training_prompt():
    """The held-out items ask (wording, city) pairs no training row asks: a call right is generalisation."""
    train = [json.loads(line) for line in (TOOL_DATA / "tool_train.jsonl").read_text(encoding="utf-8").splitlines()]
    asked = {json.dumps(row["messages"][:1]) for row in train if "tool_calls" in row["messages"][1]}
    items = load_tool_items(load_recipe(TOOLS_RECIPE))
    calls = [item for item in items if item.expected_call is not None]
    assert len(calls) == 32 and not [i for i in calls if json.dumps(i.messages) in asked]


# -- the tiny tool recipe, trained ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tool_pipeline(sft_pipeline) -> Pipeline:
    """The shipped tiny tool recipe, trained here (the one training of its kind: a tokenizer and base for its rows,
    then 165 SFT steps), cached beside the default's fixtures."""
    return Pipeline(load_recipe(TOOLS_RECIPE), sft_pipeline.cache, device="cpu")


def masked_calls_template(tmp_path: Path) -> Path:
    """The shipped tool template with its calls outside the `{% generation %}` mask: assistant-only loss trains
    plain answers and never a call (what `template.tool_loss` catches before training)."""
    source = Path(SHIPPED_TOOL_TEMPLATE).read_text(encoding="utf-8")
    edits = [
        (
            "        {%- generation %}\n        {%- if message['content'] %}",
            "        {%- if message['content'] %}{%- generation %}",
        ),
        (
            "            {{- message['content'] }}\n        {%- endif %}",
            "            {{- message['content'] }}{%- endgeneration %}\n        {%- endif %}",
        ),
        (
            "        {{- '<|im_end|>' }}\n        {%- endgeneration %}",
            "        {%- generation %}{{- '<|im_end|>' }}{%- endgeneration %}",
        ),
    ]
    for old, new in edits:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    path = tmp_path / "chatml_tools_masked.jinja"
    path.write_text(source, encoding="utf-8")
    return path


@pytest.mark.slow  # trains the tool recipe, and its masked twin
def test_the_tiny_tool_caller_learns_and_a_run_that_never_trained_calls_does_not(tool_pipeline, tmp_path):
    """The tuned model calls the expected tool with schema-valid arguments on the held-out items above the recipe's
    threshold; the base never calls. A run whose template masks the calls out (a second SFT run on the same base:
    the broken case must be trained to show the check fires; 22 steps) fails the same check, and the audit says
    why first."""
    thresholds = tool_pipeline.recipe.thresholds
    tuned, base = tool_pipeline.tool_summary("tuned"), tool_pipeline.tool_summary("base")
    checks = tool_checks(thresholds, tuned, base)
    assert checks["tools.call"].passed, checks["tools.call"].message
    assert tuned.callable >= thresholds.min_tool_call_rate + 0.1  # a margin, not a coin toss
    assert base.has_call == 0 and base.callable == 0
    assert tuned.text_called == 0  # the plain questions are answered, not called
    rows = {d["metric"]: d for d in tool_pipeline.tool_report()["comparison"]}  # the report's paired rows
    assert rows["callable call"]["questions"] == tuned.calls and rows["callable call"]["low"] > 0, rows

    raw = TOOLS_RECIPE.read_text(encoding="utf-8").replace('"../data/', json.dumps(str(TOOL_DATA))[:-1] + "/")
    raw = raw.replace(
        'chat_template = "chatml_tools"', f"chat_template = {json.dumps(str(masked_calls_template(tmp_path)))}"
    )
    # 2 epochs, not 15: no call token is ever in the loss, so no number of steps teaches one (the tuned run above
    # calls after 15)
    raw = raw.replace("num_train_epochs = 15", "num_train_epochs = 2")
    (tmp_path / "masked.toml").write_text(raw, encoding="utf-8")
    masked = Pipeline(load_recipe(tmp_path / "masked.toml"), tool_pipeline.cache, device="cpu")
    assert masked.artifacts.base_key == tool_pipeline.artifacts.base_key  # the same base: only the mask differs
    assert "template.tool_loss" in {f.check for f in masked.audit() if f.severity == "error"}
    from trl.chat_template_utils import qwen3_template

    masked.tokenizer.response_template = qwen3_template  # an edited template: its parser named, as a user would
    broken = tool_checks(thresholds, masked.tool_summary("tuned"))["tools.call"]
    assert broken.passed is False, broken.message


@pytest.mark.slow  # the tool recipe's training, then three processes
def test_the_readmes_tool_walkthrough_runs_as_written(tool_pipeline, cli):
    """README's Tool calls commands, from the checkout's root, on the cache the fixture above trained: the audit of
    the shipped tool template and rows is clean, the tool suite passes on the tuned model, and the report holds the
    Tool calls section with a card per item."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Tool calls") : text.index("## Documentation")]
    (commands,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    env = {"SFT_EVAL_CACHE": str(tool_pipeline.cache.root)}
    lines = [shlex.split(line, comments=True) for line in commands.splitlines() if line.strip()]
    assert [line[0] for line in lines] == ["sft-eval", "pytest", "sft-eval"], lines
    audit = cli.run(*lines[0][1:], "--json", cwd=REPO, env=env)
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]
    assert not [f for f in json.loads(audit.stdout)["findings"] if f["severity"] == "error"]
    suite = cli.pytest(*lines[1][1:], "-v", "-p", "no:randomly", cwd=REPO, env=env)
    assert suite.returncode == 0, suite.stdout[-3000:]
    passed = re.findall(r"test_tool_calls\.py::(\S+) PASSED", suite.stdout)
    assert "test_tuned_model_makes_the_expected_calls[tools.call]" in passed, suite.stdout[-3000:]
    report = cli.run(*lines[2][1:], cwd=REPO, env=env)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    out = REPO / lines[2][lines[2].index("--out") + 1]
    data = json.loads((out / "sft_report.json").read_text(encoding="utf-8"))
    assert len(data["tools"]["cards"]) == 68 and data["tools"]["summary"]["base"]["callable"] == 0
    assert '<section id="tools">' in (out / "sft_report.html").read_text(encoding="utf-8")


def test_multi_turn_items_without_tools_need_no_call_parser(tiny_variant, sft_pipeline, sft_evaluation, tmp_path):
    """Conversations that offer no tools and expect text are asked as their last turn on a template no call parser
    knows (the tiny model's ChatML), scored by their text; the audit finds their served prompts consistent. Uses
    the session's tuned model; generates 2 answers per model."""
    record = next(r for r in sft_evaluation.records if r.tuned_score.matched)
    question, expected = record.question.question, record.question.expected
    first = {"role": "user", "content": question}
    rows = [
        {"messages": [first], "expected": expected, "id": "one-turn"},
        {
            "messages": [first, {"role": "assistant", "content": expected}, {"role": "user", "content": question}],
            "expected": expected,
            "id": "asked-again",
        },
    ]
    items = tmp_path / "conversations.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = tiny_variant({"[eval]\n": f"[eval]\ntool_items = {json.dumps(str(items))}\n"})
    pipeline = Pipeline(load_recipe(recipe), sft_pipeline.cache, device="cpu")
    assert pipeline.artifacts.base_key == sft_pipeline.artifacts.base_key  # the session's models, nothing trained
    tuned = pipeline.tool_records("tuned")
    assert [r.score.kind for r in tuned] == ["text", "text"]
    assert tuned[0].score.matched  # the same prompt the questions ask, so the same answer
    assert tuned[0].prompt == pipeline.tokenizer.apply_chat_template(
        [first], tokenize=False, add_generation_prompt=True
    )
    report = pipeline.tool_report()
    assert report["summary"]["tuned"]["texts"] == 2 and report["summary"]["tuned"]["calls"] == 0
    assert not [f for f in pipeline.findings if f.check == "template.prefix_preserving"]
