"""Tool checks: does the chat template render tools, tool calls and tool results the way training and serving
both need them?

One probe conversation, in the format TRL trains on and transformers' templates take (`tools=` with JSON-schema
functions, an assistant message with `tool_calls`, a `tool` message with the result, the final answer), rendered
through `tokenizer.apply_chat_template` as TRL's `SFTTrainer` and a serving stack render it. Every content is
unique, so each part can be found in the rendered text again.

The checks run when the recipe's rows use tools (then a failure is an error: the recipe trains on it), or when the
template speaks of tools (then a warning: tool-calling data would meet it). A template that knows nothing of tools,
audited for rows without them, has nothing to answer for.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from sft_eval.audit import CheckId, Finding, Severity, guarded, mark
from sft_eval.audit.template import first_difference, token_ids, tokens_merge
from sft_eval.chat import RENDER_TIMEOUT_S, time_limit
from sft_eval.chat import render as bounded_render
from sft_eval.data import Rows, ToolItem, tool_rows

CALL_ID = "call7Qx2Z"  # nine letters and digits: Mistral's templates refuse any other shape of id
DESCRIPTION = "Look up the current weather in a city."
PARAMETER = "The city to look up."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": DESCRIPTION,
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": PARAMETER}},
                "required": ["city"],
            },
        },
    }
]
QUESTION = {"role": "user", "content": "What is the weather like in Lisbon today?"}
CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [
        {"id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Lisbon"}}}
    ],
}
RESULT = {
    "role": "tool",
    "tool_call_id": CALL_ID,
    "name": "get_weather",
    "content": '{"sky": "overcast", "celsius": 17}',
}
ANSWER = {"role": "assistant", "content": "It is overcast in Lisbon, 17 degrees."}
PROBE: list[dict[str, Any]] = [QUESTION, CALL, RESULT, ANSWER]
RESULT_WORD = "overcast"  # in the tool result (and the answer after it, which comes later)
_TOOL_WORDS = re.compile(r"\btools?\b|tool_calls")


def speaks_tools(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the template reads `tools`, `tool_calls` or tool messages at all."""
    source = tokenizer.chat_template
    source = source.get("default", "") if isinstance(source, dict) else source or ""
    return bool(_TOOL_WORDS.search(source))


def _render(tokenizer: PreTrainedTokenizerBase, count: int, *, prompt: bool, thinking: bool) -> str:
    """The probe's first `count` messages with the tools, as training (`prompt` False) or serving renders them."""
    return bounded_render(
        tokenizer,
        copy.deepcopy(PROBE[:count]),
        add_generation_prompt=prompt,
        tools=copy.deepcopy(TOOLS),
        enable_thinking=thinking,
    )


def _think_only(earlier: str, later: str, spot: int) -> bool:
    """Whether two renderings part at a think block: template.thinking's finding, not a tool one."""
    return "think>" in earlier[spot - 10 : spot + 40] + later[spot - 10 : spot + 40]


def _after(text: str, anchor: str) -> str:
    """The text after `anchor`'s first occurrence (all of it when it is missing)."""
    return text[text.index(anchor) + len(anchor) :] if anchor in text else text


@dataclass(frozen=True)
class ToolAudit:
    """What every tool check takes: the tokenizer, the severity and scope the recipe's rows give a failure, and
    `enable_thinking` as the recipe renders."""

    tokenizer: PreTrainedTokenizerBase
    severity: Severity
    scope: str
    thinking: bool = False

    def render(self, count: int, *, prompt: bool) -> str:
        return _render(self.tokenizer, count, prompt=prompt, thinking=self.thinking)

    def finding(self, check: CheckId, message: str, evidence: str) -> list[Finding]:
        return [Finding(check, self.severity, message, evidence)]

    @functools.cached_property
    def closing(self) -> str:
        """The end-of-turn token the template writes after the final answer (empty when it writes none)."""
        text = self.render(len(PROBE), prompt=False)
        after = text[text.rindex(ANSWER["content"]) + len(ANSWER["content"]) :] if ANSWER["content"] in text else ""
        words = (self.tokenizer.decode([t]) for t in token_ids(self.tokenizer, after))
        return str(next((w for w in words if str(w).strip()), ""))

    def parted(self, earlier: str, later: str, *, turn_ends_after: str = "") -> str:
        """Empty when `later` continues `earlier` token for token, or parts from it at a think block
        (template.thinking's finding), or, given `turn_ends_after` (the last turn's own text), only after the
        end-of-turn token that closes that turn (never generated); else the spot where they part, marked in both."""
        if later.startswith(earlier):
            # a merge across a think tag the tokenizer does not keep whole is template.prefix's, on plain turns
            return "" if earlier.rstrip().endswith("think>") else tokens_merge(self.tokenizer, earlier, later)
        spot = first_difference(earlier, later)
        if _think_only(earlier, later, spot):
            return ""
        if turn_ends_after and self.closing and turn_ends_after in earlier:
            end = earlier.rindex(turn_ends_after) + len(turn_ends_after)
            if self.closing in earlier[end:spot]:
                return ""
        return f"{mark(earlier, spot)} vs {mark(later, spot)}"


def check_tools_block(audit: ToolAudit) -> list[Finding]:
    """Tools passed with `tools=` must reach the prompt: the function's name, its description and its parameters'."""
    prompt = audit.render(1, prompt=True)
    missing = [part for part in ("get_weather", DESCRIPTION, PARAMETER) if part not in prompt]
    if not missing:
        return []
    what = "the tools passed with tools= do not appear" if "get_weather" in missing else "the tools lose parts"
    return audit.finding(
        CheckId.TEMPLATE_TOOLS,
        f"{what} in the prompt: {audit.scope} train and serve a model that is never told what it can call",
        f"missing {missing}; the prompt ends {prompt[-120:]!r}",
    )


def check_tool_calls(audit: ToolAudit) -> list[Finding]:
    """An assistant `tool_calls` message must render its call (name, argument name and value), after the
    generation prompt serving sends before it, and the same when the conversation goes on after the tool ran."""
    trained = audit.render(2, prompt=False)
    after_question = _after(trained, QUESTION["content"])
    missing = [part for part in ("get_weather", "city", "Lisbon") if part not in after_question]
    if missing:
        return audit.finding(
            CheckId.TEMPLATE_TOOL_CALLS,
            f"the template drops the assistant's tool_calls ({', '.join(missing)} missing after the question): "
            f"{audit.scope} train the model to answer a tool request with nothing",
            f"the call turn renders {after_question[:160]!r}",
        )
    served = audit.render(1, prompt=True)
    parted = audit.parted(served, trained)
    if parted:
        return audit.finding(
            CheckId.TEMPLATE_TOOL_CALLS,
            f"the prompt served before a tool call is not the text training puts before it: {audit.scope} ask for "
            "calls after a prompt the model never saw",
            f"served, then trained: {parted}",
        )
    parted = audit.parted(trained, audit.render(3, prompt=True), turn_ends_after="Lisbon")
    if parted:
        return audit.finding(
            CheckId.TEMPLATE_TOOL_CALLS,
            f"the call renders differently once its result follows: {audit.scope} train the call as the model "
            "writes it and serve the next turn with another",
            f"as trained, then after the result: {parted}",
        )
    return []


def check_tool_result(audit: ToolAudit) -> list[Finding]:
    """A `tool` message must render its result, and the generation prompt after it must be what training puts
    before the answer that follows."""
    with_result = audit.render(3, prompt=False)
    if RESULT_WORD not in _after(with_result, "Lisbon"):
        return audit.finding(
            CheckId.TEMPLATE_TOOL_RESULT,
            f"the template drops the tool message: {audit.scope} train answers to results the model is never shown",
            f"the conversation after the call renders {_after(with_result, QUESTION['content'])[-160:]!r}",
        )
    parted = audit.parted(audit.render(3, prompt=True), audit.render(4, prompt=False))
    if not parted:
        return []
    return audit.finding(
        CheckId.TEMPLATE_TOOL_RESULT,
        f"the generation prompt after a tool result is not what training puts before the answer: {audit.scope} "
        "serve the model a string it never saw after a result",
        f"served, then trained: {parted}",
    )


def _trained_template(tokenizer: PreTrainedTokenizerBase) -> tuple[str | None, str]:
    """The template assistant-only loss trains with: the tokenizer's own when it marks `{% generation %}`, else the
    training template TRL swaps in (and its name), else None."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    source = tokenizer.chat_template
    if isinstance(source, str) and has_generation_markers(source):
        return source, "the template's"
    try:
        fixed = get_training_chat_template(tokenizer)
    except Exception:  # TRL raises for templates it has no training version of
        return None, ""
    return fixed, "TRL's training template's"


def check_tool_loss(audit: ToolAudit) -> list[Finding]:
    """With assistant-only loss (the `{% generation %}` mask TRL trains through), the call must be trained, and the
    tool result and the tools block never: a model trained on results learns to make them up."""
    tokenizer = audit.tokenizer
    template, whose = _trained_template(tokenizer)
    if template is None:
        return []  # no mask to judge: labels.scope and TRL say what assistant_only_loss does without markers
    given: dict[str, Any] = {
        "tools": copy.deepcopy(TOOLS),
        "chat_template": template,
        "enable_thinking": audit.thinking,
    }
    with time_limit(RENDER_TIMEOUT_S):
        encoded: Any = tokenizer.apply_chat_template(
            copy.deepcopy(PROBE), tokenize=True, return_dict=True, return_assistant_tokens_mask=True, **given
        )
        text = str(tokenizer.apply_chat_template(copy.deepcopy(PROBE), tokenize=False, **given))
    ids, mask = list(encoded["input_ids"]), list(encoded["assistant_masks"])
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(encoding["input_ids"]) != ids:
        return []  # the text does not tokenize alone as in the template's own pass: no token to locate
    question_end = text.find(QUESTION["content"]) + len(QUESTION["content"])
    call = text.find("get_weather", question_end)
    result = text.find(RESULT_WORD, call)
    parts = {  # where each part starts, its length, and whether it is trained
        "the call": (call, len("get_weather"), 1),
        "the tool result": (result, len(RESULT_WORD), 0),
        "the tools block": (text.find(DESCRIPTION), len(DESCRIPTION), 0),
    }
    wrong = []
    for part, (start, length, trained) in parts.items():
        if start < 0:
            continue  # a part the template does not render: template.tools or template.tool_calls says so
        marks = [
            m for m, (a, b) in zip(mask, encoding["offset_mapping"], strict=True) if a < start + length and b > start
        ]
        if any(m != trained for m in marks):
            wrong.append(f"{part} is {'not ' if trained else ''}trained ({mark(text, start, 40)})")
    if not wrong:
        return []
    return audit.finding(
        CheckId.TEMPLATE_TOOL_LOSS,
        f"with assistant_only_loss, {whose} {{% generation %}} mask gets tool turns wrong: {'; '.join(wrong)}: "
        f"{audit.scope} train the model to write what tools return, or never to call",
        f"{sum(mask)} of {len(ids)} tokens trained",
    )


def audit_tools(
    tokenizer: PreTrainedTokenizerBase,
    rows: Rows | None = None,
    *,
    assistant_only_loss: bool = True,
    enable_thinking: bool = False,
) -> list[Finding]:
    """Every tool check: errors when the recipe's rows use tools, warnings when only the template speaks of them,
    nothing when neither does. `assistant_only_loss`: whether the recipe trains through the assistant mask (a
    template audited alone: assumed, as TRL's tool-calling recipes do). The mask is judged only on a template that
    renders the whole tool exchange: one that drops or refuses a part has that finding, once."""
    used = tool_rows(rows)
    if not used and not speaks_tools(tokenizer):
        return []
    audit = ToolAudit(
        tokenizer,
        "error" if used else "warning",
        f"the recipe's {used} rows with tools" if used else "tool-calling rows",
        enable_thinking,
    )
    checks: list[tuple[CheckId, Callable[[ToolAudit], list[Finding]]]] = [
        (CheckId.TEMPLATE_TOOLS, check_tools_block),
        (CheckId.TEMPLATE_TOOL_CALLS, check_tool_calls),
        (CheckId.TEMPLATE_TOOL_RESULT, check_tool_result),
    ]
    findings: list[Finding] = []
    for check, run in checks:
        findings += guarded(check, functools.partial(run, audit))
    if assistant_only_loss and not any(f.check != CheckId.TEMPLATE_TOOLS for f in findings):
        findings += guarded(CheckId.TEMPLATE_TOOL_LOSS, lambda: check_tool_loss(audit))
    # a template that raises on a tool conversation fails rows that have one: for rows without, that is a warning
    return [Finding(f.check, audit.severity, f.message, f.evidence) for f in findings]


def expected_answer(item: ToolItem) -> dict[str, Any]:
    """The assistant message an item expects, as a training row would hold it: its call, or its text."""
    if item.expected_call is not None:
        call = item.expected_call.get("function", item.expected_call)
        return {"role": "assistant", "tool_calls": [{"type": "function", "function": copy.deepcopy(call)}]}
    return {"role": "assistant", "content": item.expected or ""}


def check_items_served(
    tokenizer: PreTrainedTokenizerBase, items: Sequence[ToolItem], *, enable_thinking: bool = False
) -> list[Finding]:
    """Each evaluation item is asked as the last turn of its conversation (earlier turns, calls and tool results,
    with its tools): the prompt served must be the start of what training renders for that conversation with the
    item's answer, token for token, as the prefix-preserving contract promises. Otherwise the answer is judged on a
    prompt the model never saw in training: a template that renders the last user turn or tool result one way when
    it is last and another once an answer follows. A think block kept or dropped is template.thinking's, and text
    after the end-of-turn token is never generated, so neither counts. One error naming the first such item."""
    audit = ToolAudit(tokenizer, "error", "", enable_thinking)
    parted = []
    for k, item in enumerate(items):
        common = {"tools": copy.deepcopy(item.tools), "enable_thinking": enable_thinking}
        served = bounded_render(tokenizer, copy.deepcopy(item.messages), add_generation_prompt=True, **common)
        conversation = [*copy.deepcopy(item.messages), expected_answer(item)]
        trained = bounded_render(tokenizer, conversation, add_generation_prompt=False, **common)
        spot = audit.parted(served, trained)
        if spot:
            parted.append((k, item, spot))
    if not parted:
        return []
    k, item, spot = parted[0]
    name = f"item {k + 1}" + (f" ({item.id})" if item.id else "")
    return [
        Finding(
            CheckId.TEMPLATE_PREFIX_PRESERVING,
            "error",
            f"eval.tool_items: {len(parted)} of {len(items)} items are served a prompt that is not the start of what "
            f"training renders for their conversation with the answer (first: {name}): their answers are judged on "
            "a prompt the model was never trained on",
            f"served vs trained: {spot}",
        )
    ]
