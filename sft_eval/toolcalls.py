"""Tool calls: ask conversations with tools, parse each answer's call with the template's own response parser,
and score it against the expected call, field by field.

The parser is transformers' `tokenizer.parse_response` driven by a response template: the tokenizer's own, else
the one TRL's `add_response_schema` knows for the model family, else (the shipped tiny tool template, which writes
calls in Qwen's format) TRL's Qwen template. No per-family regex is written here.

Per item expecting a call, as NeMo's tool-call evaluator counts them: has_call, the name right, the arguments
valid JSON (the parser raised otherwise), argument precision and recall field by field, and exact match. Items
expecting text: the answer matches (normalised) and makes no call.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from transformers import PreTrainedTokenizerBase

from sft_eval import schema
from sft_eval.chat import TEMPLATES_DIR
from sft_eval.data import ToolItem, normalise, parsed_arguments
from sft_eval.generation.local import tool_prompt as tool_prompt  # rendered as generation asks it
from sft_eval.records import Answer
from sft_eval.sanity import PairedDifference, paired_bootstrap

SHIPPED_TOOL_TEMPLATE = TEMPLATES_DIR / "chatml_tools.jinja"


def response_parser(tokenizer: PreTrainedTokenizerBase) -> tuple[PreTrainedTokenizerBase | None, str]:
    """A copy of `tokenizer` that `parse_response` works on, and where its response template came from; (None,
    why) when no parser is known for its chat template."""
    if getattr(tokenizer, "response_template", None) or getattr(tokenizer, "response_schema", None):
        return tokenizer, "the tokenizer's own response template"
    from trl.chat_template_utils import add_response_schema, qwen3_template

    parser = copy.deepcopy(tokenizer)
    try:
        return add_response_schema(parser), "TRL's response template for this model family"
    except ValueError:
        pass
    if parser.chat_template == Path(SHIPPED_TOOL_TEMPLATE).read_text(encoding="utf-8"):
        parser.response_template = qwen3_template  # the shipped template writes calls as Qwen does
        return parser, "TRL's Qwen response template (the shipped chatml_tools template writes Qwen's format)"
    return None, (
        "no response parser is known for this chat template: set `tokenizer.response_template` (transformers' "
        "response templates) or use a template TRL's add_response_schema knows"
    )


def parse_answer(parser: PreTrainedTokenizerBase | None, prompt: str, answer: Answer) -> dict[str, Any]:
    """The answer as a message (`content`, `tool_calls`), parsed with the prompt as prefix; `{"error": ...}` when
    the parser refuses it (a call whose arguments are not JSON). No parser (items that offer no tools and expect
    text: plain multi-turn conversations): the answer's text as its content."""
    if parser is None:
        return {"role": "assistant", "content": answer.text}
    try:
        parsed = parser.parse_response(answer.raw, prefix=prompt)
    except Exception as exc:  # the parser's JSON stage and schema checks raise ValueError; report, not crash
        return {"role": "assistant", "content": answer.text, "error": str(exc).splitlines()[0][:200]}
    return parsed if isinstance(parsed, dict) else {"role": "assistant", "content": answer.text}


def _arguments(value: Any) -> Any:
    """A call's arguments as an object where they are JSON; a string that is not stays as written (not valid)."""
    try:
        return parsed_arguments(value)
    except json.JSONDecodeError:
        return value


@dataclass(frozen=True)
class ToolScore:
    """One item's verdict. For an item expecting a call: has_call (the answer makes one), name (the first call
    names the expected tool), valid (its arguments are a JSON object that the tool's `parameters` schema accepts:
    a call a caller can execute), callable (name and valid), precision and recall (of the argument fields given and
    expected, the share with the expected value), exact (one call, name and arguments equal). For an item expecting
    text: matched (normalised equality), has_call (it called a tool instead)."""

    kind: str  # "call" or "text"
    has_call: bool
    name: bool = False
    valid: bool = False
    callable: bool = False
    precision: float = 0.0
    recall: float = 0.0
    exact: bool = False
    matched: bool = False
    error: str = ""  # why the parser refused the answer, or why the arguments fail the schema

    def to_dict(self) -> schema.ToolScore:
        return schema.ToolScore(
            kind=cast(Literal["call", "text"], self.kind),
            has_call=self.has_call,
            name=self.name,
            valid=self.valid,
            callable=self.callable,
            precision=self.precision,
            recall=self.recall,
            exact=self.exact,
            matched=self.matched,
            error=self.error,
        )


def schema_problem(item: ToolItem, name: str, arguments: Any) -> str:
    """Why `arguments` cannot be passed to the item's tool `name` (not an object, or its JSON schema refuses
    them: a required field missing, a wrong type); empty when they can, or the item lists no such tool."""
    if not isinstance(arguments, dict):
        return f"the arguments are {type(arguments).__name__}, not a JSON object"
    tool = next((t.get("function", t) for t in item.tools or [] if t.get("function", t).get("name") == name), None)
    schema = (tool or {}).get("parameters")
    if not isinstance(schema, dict):
        return ""
    from jsonschema import exceptions, validators
    from referencing.exceptions import Unresolvable

    try:  # checked when the items were loaded (conversations.check_parameters); a schema that still breaks is said
        errors = sorted(validators.validator_for(schema)(schema).iter_errors(arguments), key=lambda e: list(e.path))
    except (exceptions.SchemaError, Unresolvable) as exc:
        return f"{name}: its parameters schema cannot be applied ({str(exc).splitlines()[0]})"
    return f"{name}: {errors[0].message}" if errors else ""


def score_item(item: ToolItem, parsed: dict[str, Any]) -> ToolScore:
    calls = parsed.get("tool_calls") or []
    error = parsed.get("error", "")
    if item.expected_call is None:
        matched = not calls and not error and normalise(parsed.get("content") or "") == normalise(item.expected or "")
        return ToolScore("text", bool(calls) or bool(error), matched=matched, error=error)
    expected = item.expected_call.get("function", item.expected_call)
    want = _arguments(expected.get("arguments", {}))
    if not calls:
        return ToolScore("call", bool(error), error=error)  # a call the parser refused is a call, not a valid one
    first = calls[0].get("function", calls[0]) if isinstance(calls[0], dict) else {}
    given = _arguments(first.get("arguments", {}))
    problem = schema_problem(item, str(first.get("name")), given)
    valid = not problem
    right = sum(1 for k, v in given.items() if k in want and want[k] == v) if isinstance(given, dict) else 0
    precision = right / len(given) if isinstance(given, dict) and given else float(not want)
    recall = right / len(want) if want else 1.0
    name = first.get("name") == expected.get("name")
    exact = len(calls) == 1 and name and given == want
    return ToolScore("call", True, name, valid, name and valid, precision, recall, exact, error=problem)


@dataclass(frozen=True)
class ToolSummary:
    """Rates over the items expecting a call (`calls` of them) and those expecting text (`texts`)."""

    calls: int
    texts: int
    has_call: float
    name: float
    valid: float
    callable: float
    precision: float
    recall: float
    exact: float
    text_matched: float
    text_called: float

    def to_dict(self) -> schema.ToolSummary:
        return schema.ToolSummary(
            calls=self.calls,
            texts=self.texts,
            has_call=self.has_call,
            name=self.name,
            valid=self.valid,
            callable=self.callable,
            precision=self.precision,
            recall=self.recall,
            exact=self.exact,
            text_matched=self.text_matched,
            text_called=self.text_called,
        )


def summarize(scores: list[ToolScore]) -> ToolSummary:
    calls = [s for s in scores if s.kind == "call"]
    texts = [s for s in scores if s.kind == "text"]

    def rate(items: list[ToolScore], field: str) -> float:
        return sum(float(getattr(s, field)) for s in items) / len(items) if items else 0.0

    return ToolSummary(
        calls=len(calls),
        texts=len(texts),
        has_call=rate(calls, "has_call"),
        name=rate(calls, "name"),
        valid=rate(calls, "valid"),
        callable=rate(calls, "callable"),
        precision=rate(calls, "precision"),
        recall=rate(calls, "recall"),
        exact=rate(calls, "exact"),
        text_matched=rate(texts, "matched"),
        text_called=rate(texts, "has_call"),
    )


@dataclass(frozen=True)
class ToolRecord:
    """An item asked: its prompt, the answer, the parsed message and its score."""

    item: ToolItem
    prompt: str
    answer: Answer
    parsed: dict[str, Any]
    score: ToolScore


def score_answers(
    parser: PreTrainedTokenizerBase | None, items: list[ToolItem], prompts: list[str], answers: list[Answer]
) -> list[ToolRecord]:
    """Every item's answer parsed and scored (plain data in, plain data out)."""
    records = []
    for item, prompt, answer in zip(items, prompts, answers, strict=True):
        parsed = parse_answer(parser, prompt, answer)
        records.append(ToolRecord(item, prompt, answer, parsed, score_item(item, parsed)))
    return records


# What the report compares, item by item (pairs kept together): (metric, items of this kind, the score's field).
# On items expecting a call: made one, named the right tool, one a caller can execute, the argument fields right,
# exact; on items expecting text: answered it, called a tool instead (lower is better).
PAIRED_METRICS = (
    ("has call", "call", "has_call"),
    ("right tool", "call", "name"),
    ("callable call", "call", "callable"),
    ("argument recall", "call", "recall"),
    ("exact call", "call", "exact"),
    ("text matched", "text", "matched"),
    ("text answered with a call", "text", "has_call"),
)


def compare_scores(base: list[ToolScore], tuned: list[ToolScore]) -> list[PairedDifference]:
    """Tuned minus base per tool metric, with the paired bootstrap over the items both were asked."""
    found = []
    for metric, kind, field in PAIRED_METRICS:
        pairs = [(b, t) for b, t in zip(base, tuned, strict=True) if b.kind == kind]
        if pairs:
            found.append(
                paired_bootstrap(
                    metric, [float(getattr(b, field)) for b, _ in pairs], [float(getattr(t, field)) for _, t in pairs]
                )
            )
    return found


def _side(record: ToolRecord) -> schema.ToolSide:
    calls = record.parsed.get("tool_calls") or []
    return schema.ToolSide(
        raw=record.answer.raw,
        content=str(record.parsed.get("content") or ""),
        calls=[c.get("function", c) if isinstance(c, dict) else {"value": c} for c in calls],
        new_tokens=record.answer.new_tokens,
        stop_reason=record.answer.stop_reason,
        score=record.score.to_dict(),
    )


def report_data(records: dict[str, list[ToolRecord]]) -> schema.ToolReport:
    """The tool items for the report (`report.format.ToolReport`), from each model's records (`base` and `tuned`,
    the same items in the same order): every model's rates, tuned minus base with paired intervals, and one card
    per item with its conversation, the tools offered, what it expects and each model's answer and parsed call."""
    base, tuned = records["base"], records["tuned"]
    return schema.ToolReport(
        summary={name: summarize([r.score for r in rs]).to_dict() for name, rs in records.items()},
        comparison=[d.to_dict() for d in compare_scores([r.score for r in base], [r.score for r in tuned])],
        cards=[
            schema.ToolCard(
                id=b.item.id,
                category=b.item.category,
                messages=b.item.messages,
                tools=[str(t.get("function", t).get("name", "")) for t in b.item.tools or []],
                expected_call=b.item.expected_call,
                expected=b.item.expected,
                base=_side(b),
                tuned=_side(t),
            )
            for b, t in zip(base, tuned, strict=True)
        ],
    )
