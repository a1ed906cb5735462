"""Issue 28: how a template renders tools, tool calls and tool results, judged by stable ids.

Broken cases are one-line edits of TRL's Qwen2.5 training template (a real template with `{% generation %}`
markers, rendered with the real Qwen2.5 tokenizer): each fires its own id, and the unedited template is quiet. Real
released templates are judged against the versions that fixed them (TRL ships both), and the tool-calling
families people fine-tune are judged as they are.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trl
from datasets import Dataset

from sft_eval.audit.checks import run_checks, tokenizer_for_template
from sft_eval.audit.tools import PROBE, TOOLS, audit_tools, check_items_served
from sft_eval.data import ToolItem, tool_rows
from sft_eval.tokenizer import load_tokenizer

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
ROWS = [{"messages": PROBE, "tools": TOOLS}]
TOOL_END = '{%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}'


def qwen_training_variants() -> dict[str, tuple[str, set[str]]]:
    """TRL's Qwen2.5 training template, and four edits of it that each break one thing: (template, ids it fires)."""
    fixed = (TRL_TEMPLATES / "qwen2_5_training.jinja").read_text(encoding="utf-8")
    edits = {
        "fixed": ([], set()),
        # the call loop renders nothing: the call turn is an empty assistant message
        "drops-tool-calls": (
            [("{%- for tool_call in message.tool_calls %}", "{%- for tool_call in [] %}")],
            {"template.tool_calls"},
        ),
        # the tool result inside the assistant mask: assistant-only loss trains what the tool returned
        "trains-tool-results": (
            [
                (
                    "{{- '\\n<tool_response>\\n' }}\n        {{- message.content }}",
                    "{%- generation %}{{- '\\n<tool_response>\\n' }}\n        {{- message.content }}"
                    "{%- endgeneration %}",
                )
            ],
            {"template.tool_loss"},
        ),
        # the tool turn is closed only when something follows it: the prompt served after a result lacks <|im_end|>
        "prompt-after-result": (
            [(TOOL_END, '{%- if not loop.last and (messages[loop.index0 + 1].role != "tool") %}')],
            {"template.tool_result"},
        ),
        # the mask covers plain answers only: a tool call is never trained
        "call-untrained": (
            [
                (
                    "{%- generation %}\n        {%- if not message.tool_calls %}",
                    "{%- if not message.tool_calls %}{%- generation %}",
                ),
                (
                    "'<|im_end|>\\n' }}\n        {%- else %}",
                    "'<|im_end|>\\n' }}{%- endgeneration %}\n        {%- else %}",
                ),
                ("        {%- endif %}\n        {%- endgeneration %}", "        {%- endif %}"),
            ],
            {"template.tool_loss"},
        ),
    }
    variants = {}
    for name, (replacements, fires) in edits.items():
        source = fixed
        for old, new in replacements:
            assert source.count(old) == 1, (name, old)  # TRL's template changed: the edit would silently not apply
            source = source.replace(old, new)
        variants[name] = (source, fires)
    return variants


VARIANTS = qwen_training_variants()


@pytest.fixture(scope="module")
def qwen(realworld_dir):
    return load_tokenizer(realworld_dir / "tokenizers" / "Qwen2.5-0.5B-Instruct")


def ids(findings) -> set[str]:
    return {f.check for f in findings}


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_broken_tool_template_fires_its_id_and_the_fixed_one_is_quiet(qwen, variant):
    source, fires = VARIANTS[variant]
    qwen.chat_template = source
    with_rows = audit_tools(qwen, ROWS)
    assert ids(with_rows) == fires and {f.severity for f in with_rows} <= {"error"}, with_rows
    alone = audit_tools(qwen)  # no tool rows: the template speaks of tools, so a warning, not an error
    assert ids(alone) == fires and {f.severity for f in alone} <= {"warning"}, alone
    if fires:
        assert all(f.evidence for f in with_rows), with_rows


def test_without_assistant_only_loss_the_mask_is_not_judged(qwen):
    qwen.chat_template = VARIANTS["trains-tool-results"][0]
    assert audit_tools(qwen, ROWS, assistant_only_loss=False) == []


# Released templates and the versions that fixed them, both shipped by TRL: (released, its ids; fixed, its ids).
PAIRS = {
    "llama3 -> llama3_1 (tools arrive with 3.1)": (
        "llama3.jinja",
        {"template.tools", "template.tool_calls"},
        "llama3_1.jinja",
        set(),
    ),
    "lfm2 -> lfm2_v2 (the call renders)": ("lfm2.jinja", {"template.tool_calls"}, "lfm2_v2.jinja", set()),
    # DeepSeek-V3 concatenates the arguments as a string: TRL's format (a dict) raises (transformers#45419). Neither
    # version renders `tools=` (DeepSeek-V3 reads tools from the system message), so both say so.
    "deepseekv3 -> its training version": (
        "deepseekv3.jinja",
        {"template.tools", "template.tool_calls", "template.tool_result"},
        "deepseekv3_training.jinja",
        {"template.tools"},
    ),
}


@pytest.mark.parametrize("pair", PAIRS)
def test_a_released_template_and_its_fix_are_judged_apart(qwen, pair):
    released, broken, fixed, left = PAIRS[pair]
    for name, expected in ((released, broken), (fixed, left)):
        tokenizer = tokenizer_for_template(qwen, (TRL_TEMPLATES / name).read_text(encoding="utf-8"))
        found = audit_tools(tokenizer, ROWS)
        assert ids(found) == expected, (name, [(f.check, f.message, f.evidence) for f in found])


HERMES = "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja"
HERMES_FIX = (  # the last tool result ends "</tool_response>\n" too, as one followed by more does
    "{{- '\n</tool_response>' }}",
    "{{- '\n</tool_response>\n' }}",
)

# The tool-calling families people fine-tune, as released (llama.cpp's copies), with the ids each fires and why.
FAMILIES = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": set(),
    "Qwen-Qwen3-0.6B.jinja": set(),
    "meta-llama-Llama-3.1-8B-Instruct.jinja": set(),
    "meta-llama-Llama-3.2-3B-Instruct.jinja": set(),
    "meta-llama-Llama-3.3-70B-Instruct.jinja": set(),
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": set(),
    "Mistral-Small-3.2-24B-Instruct-2506.jinja": set(),
    "unsloth-mistral-Devstral-Small-2507.jinja": set(),
    # Hermes closes a tool turn with "\n<|im_end|>" when more follows and "<|im_end|>" when it is last: the prompt
    # served after a result is not the text training put there
    HERMES: {"template.tool_result"},
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja": {"template.tool_result"},
    # Phi-3.5 has no tool support: tools, calls and tool messages all vanish
    "microsoft-Phi-3.5-mini-instruct.jinja": {"template.tools", "template.tool_calls", "template.tool_result"},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_tool_calling_families_are_judged_as_they_render(realworld_dir, qwen, family):
    source = (realworld_dir / "llama.cpp-templates" / family).read_text(encoding="utf-8")
    found = audit_tools(tokenizer_for_template(qwen, source), ROWS)
    assert ids(found) == FAMILIES[family], [(f.check, f.message, f.evidence) for f in found]


def test_hermes_fixed_to_close_its_tool_turn_alike_is_quiet(realworld_dir, qwen):
    source = (realworld_dir / "llama.cpp-templates" / HERMES).read_text(encoding="utf-8")
    assert source.count(HERMES_FIX[0]) == 1
    fixed = tokenizer_for_template(qwen, source.replace(*HERMES_FIX))
    assert audit_tools(fixed, ROWS) == []


def test_a_template_that_knows_no_tools_is_quiet_until_the_rows_call_one(sft_tokenizer):
    """The tiny model's ChatML template renders neither tools nor calls: nothing to say for plain rows, errors for
    rows with tools (the whole audit, so the ids come through `run_checks` as `sft-eval audit` gives them)."""
    plain = run_checks(sft_tokenizer, rows=[{"messages": [PROBE[0], PROBE[3]]}])
    assert not {f.check for f in plain if f.check.startswith("template.tool")}, plain
    tooled = run_checks(sft_tokenizer, rows=ROWS)
    errors = {f.check for f in tooled if f.severity == "error"}
    assert {"template.tools", "template.tool_calls"} <= errors, tooled
    assert "template.tool_result" not in errors  # ChatML renders a tool message as a turn of its own


@pytest.mark.parametrize("as_dataset", [False, True], ids=["list", "dataset"])
def test_tool_rows_counts_rows_that_give_call_or_answer_a_tool(as_dataset):
    plain = {"messages": [PROBE[0], PROBE[3]], "tools": []}
    only_tools = {"messages": [PROBE[0], PROBE[3]], "tools": TOOLS}
    calls = {"messages": PROBE, "tools": []}
    rows = [plain, only_tools, calls, plain]
    data = Dataset.from_list(rows) if as_dataset else rows
    assert tool_rows(data) == 2
    assert tool_rows(Dataset.from_list([plain]) if as_dataset else [plain]) == 0
    if as_dataset:  # `tools` kept as a JSON string per row, as TRL also reads it
        import json

        as_text = Dataset.from_list([{"messages": r["messages"], "tools": json.dumps(r["tools"])} for r in rows])
        assert tool_rows(as_text) == 2


# -- evaluation items served as training renders them (multi-turn consistency) --------------------------------------
QUESTION, CALL, RESULT, ANSWER = PROBE
ITEMS = [
    ToolItem([QUESTION], TOOLS, expected_call=CALL["tool_calls"][0]["function"], id="asks"),
    ToolItem([QUESTION, CALL, RESULT], TOOLS, expected=ANSWER["content"], id="after-result"),
    ToolItem(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, QUESTION],
        TOOLS,
        expected_call=CALL["tool_calls"][0]["function"],
        id="third-turn",
    ),
]
USER_TURN = "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
# a hint appended to the user turn only when it is the last message: served, never trained before an answer
HINTED = VARIANTS["fixed"][0].replace(
    USER_TURN,
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + (' (be brief)' if loop.last else '') "
    "+ '<|im_end|>' + '\\n' }}",
)


def test_each_item_is_served_the_prompt_training_renders_before_its_answer(qwen, realworld_dir):
    """The prefix-preserving contract on the items' own conversations (a call, a tool result, a third turn): TRL's
    Qwen2.5 training template and Hermes 3 fixed keep it; a template that hints the last user turn breaks it for
    the two items ending in a question, Hermes 3 as released for the one ending in a tool result."""
    assert VARIANTS["fixed"][0].count(USER_TURN) == 1 and VARIANTS["fixed"][0] != HINTED
    qwen.chat_template = VARIANTS["fixed"][0]
    assert check_items_served(qwen, ITEMS) == []
    qwen.chat_template = HINTED
    (hinted,) = check_items_served(qwen, ITEMS)
    assert (hinted.check, hinted.severity) == ("template.prefix_preserving", "error")
    assert "2 of 3 items" in hinted.message and "item 1 (asks)" in hinted.message
    assert "(be brief)" in hinted.evidence
    source = (realworld_dir / "llama.cpp-templates" / HERMES).read_text(encoding="utf-8")
    (released,) = check_items_served(tokenizer_for_template(qwen, source), ITEMS)
    assert "1 of 3 items" in released.message and "item 2 (after-result)" in released.message, released
    assert check_items_served(tokenizer_for_template(qwen, source.replace(*HERMES_FIX)), ITEMS) == []
