"""A report's JSON (`sft_report.json`) read back: its format version, and what the page and `compare` read of it,
checked before anything is drawn or compared. A bad value is one line naming the file, the card and the field."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sft_eval import validate
from sft_eval.errors import SftEvalError
from sft_eval.report.format import REPORT_FORMAT, ReportData


def _optional_bool(value: Any, where: str) -> None:
    if value is not None and not isinstance(value, bool):
        raise SftEvalError(f"{where} is {validate.shown(value)}, not true, false or null")


def _number_or_null(value: Any, where: str) -> None:
    if value is not None:
        validate.number(value, where)


def _pair_list(check: Callable[[Any, str], Any]) -> Callable[[Any, str], None]:
    """A checker of a list of [first, second] pairs whose second item `check` accepts."""

    def pairs(value: Any, where: str) -> None:
        for k, pair in enumerate(validate.a_list(value, where)):
            if not isinstance(pair, list) or len(pair) != 2:
                raise SftEvalError(f"{where}[{k}] is {validate.shown(pair)}, not a pair")
            check(pair[1], f"{where}[{k}][1]")

    return pairs


_SIDE = {
    "text": validate.text,
    "raw": validate.text,
    "stop_reason": validate.text,
    "new_tokens": validate.integer,
    "repetition": validate.number,
    "leaks": validate.a_list,
    "matched": _optional_bool,
}


_SUMMARY = dict.fromkeys(("eos_stop_rate", "mean_repetition", "leak_rate"), validate.number)  # what the page reads


def check_report(context: dict[str, Any], where: str) -> None:
    """What the page reads of a report's JSON, checked before it is drawn: each card's question, answers and
    badges, the loss curve's points (a null loss is a non-finite one), the repetition threshold. A bad value is one
    line naming the card and field (`cards[3].tuned.text is null, not a string`)."""
    validate.objects(context["cards"], f"{where}: cards")
    _thresholds(context.get("thresholds"), f"{where}: thresholds")
    training = context["training"]
    if not isinstance(training, dict):
        raise SftEvalError(f"{where}: training is {validate.shown(training)}, not an object")
    validate.fields(training, f"{where}: training", required={"losses": _pair_list(_number_or_null)}, optional={})
    for k, check in enumerate(validate.objects(context.get("checks", []), f"{where}: checks")):
        at = f"{where}: checks[{k}]"
        validate.fields(check, at, required={"name": validate.text, "message": validate.text}, optional={})
        if check.get("passed") not in (True, False, None):
            raise SftEvalError(f"{at}.passed is {validate.shown(check.get('passed'))}, not true, false or null")
    against = context.get("against_baseline")
    if against is not None:
        at = f"{where}: against_baseline"
        if not isinstance(against, dict):
            raise SftEvalError(f"{at} is {validate.shown(against)}, not an object")
        lists = dict.fromkeys(("regressions", "improvements", "only_in_baseline", "only_in_candidate"), validate.a_list)
        validate.fields(
            against, at, required={"baseline": validate.text, "metrics": validate.objects, **lists}, optional={}
        )
        numbers = dict.fromkeys(  # null: a metric not comparable (a score that was not a number)
            ("baseline", "candidate", "difference", "low", "high", "p_value", "p_holm"), _number_or_null
        )
        for k, metric in enumerate(against["metrics"]):
            validate.fields(metric, f"{at}.metrics[{k}]", required={"metric": validate.text, **numbers}, optional={})
    _signals(context.get("signals"), f"{where}: signals")
    _tools(context.get("tools"), f"{where}: tools")
    _category_rows(context.get("categories") or [], f"{where}: categories")
    if context.get("signals") is not None:  # its section shows the thresholds the signals are judged by
        keys = ("min_eval_loss_drop", "max_forgetting", "max_expected_nll_rise", "max_length_ratio")
        validate.fields(
            context["thresholds"], f"{where}: thresholds", required=dict.fromkeys(keys, validate.number), optional={}
        )
    others = _other_models(context, where)
    for k, card in enumerate(context["cards"]):
        at = f"{where}: cards[{k}]"
        validate.fields(card, at, required={"question": validate.text, "diff": _pair_list(validate.text)}, optional={})
        _sides(card, at, _SIDE)
        _nll_pair(card, at)
        if others:
            _sides(card.get("others") or {}, f"{at}.others", _SIDE, others)


def _other_models(context: dict[str, Any], where: str) -> list[str]:
    """The models a report holds beyond the base and the tuned one (`models`), each with its summary."""
    models = context.get("models", ["base", "tuned"])
    if not isinstance(models, list) or models[:2] != ["base", "tuned"]:
        raise SftEvalError(f'{where}: models is {validate.shown(models)}, not a list starting ["base", "tuned"]')
    others = [validate.text(name, f"{where}: models[{k + 2}]") for k, name in enumerate(models[2:])]
    if others:
        summaries = context["summary"].get("others") if isinstance(context["summary"], dict) else None
        _sides(summaries if isinstance(summaries, dict) else {}, f"{where}: summary.others", _SUMMARY, others)
    return others


def _category_rows(value: Any, where: str) -> None:
    """The By category section's rows: a name, a count and both models' summaries."""
    for k, row in enumerate(validate.objects(value, where)):
        at = f"{where}[{k}]"
        validate.fields(row, at, required={"category": validate.text, "questions": validate.integer}, optional={})
        _sides(row, at, _SUMMARY)
        for side in ("base", "tuned"):
            for key in ("match_rate", "mean_chrf"):
                _number_or_null(row[side].get(key), f"{at}.{side}.{key}")
        _nll_pair(row, at)


def _sides(entry: dict[str, Any], at: str, fields: dict[str, Any], names: Sequence[str] = ("base", "tuned")) -> None:
    """`entry`'s "base" and "tuned" objects (or those `names`), each with `fields`."""
    for side in names:
        if not isinstance(entry.get(side), dict):
            raise SftEvalError(f"{at}.{side} is {validate.shown(entry.get(side))}, not an object")
        validate.fields(entry[side], f"{at}.{side}", required=fields, optional={})


def _nll_pair(entry: dict[str, Any], at: str) -> None:
    """`entry`'s optional "expected_nll": a base and a tuned number."""
    nll = entry.get("expected_nll")
    if nll is None:
        return
    if not isinstance(nll, dict):
        raise SftEvalError(f"{at}.expected_nll is {validate.shown(nll)}, not an object")
    validate.fields(nll, f"{at}.expected_nll", required=dict.fromkeys(("base", "tuned"), validate.number), optional={})


def _signals(value: Any, where: str) -> None:
    """The Quality signals section's data: its comparison rows, per-row losses and the summary numbers."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise SftEvalError(f"{where} is {validate.shown(value)}, not an object")
    rows = dict.fromkeys(("held_out", "expected", "general"), validate.objects)
    validate.fields(value, where, required={"comparison": validate.objects, **rows}, optional={})
    numbers = dict.fromkeys(("base", "tuned", "difference", "low", "high"), validate.number)
    for k, row in enumerate(value["comparison"]):
        validate.fields(row, f"{where}.comparison[{k}]", required={"metric": validate.text, **numbers}, optional={})
    for name in rows:
        for k, row in enumerate(value[name]):
            fields = {"label": validate.text, "base": validate.number, "tuned": validate.number}
            validate.fields(row, f"{where}.{name}[{k}]", required=fields, optional={})
    for key in ("eval_loss_drop", "forgetting"):
        _number_or_null(value.get(key), f"{where}.{key}")
    for key in ("eval_loss", "general_loss"):
        pair = value.get(key)
        if pair is not None and (not isinstance(pair, list) or len(pair) != 2):
            raise SftEvalError(f"{where}.{key} is {validate.shown(pair)}, not a [base, tuned] pair")
        for k, number in enumerate(pair or []):
            validate.number(number, f"{where}.{key}[{k}]")
    if (value.get("eval_loss") is None) != (value.get("eval_loss_drop") is None) or (
        value.get("general_loss") is None
    ) != (value.get("forgetting") is None):
        raise SftEvalError(f"{where}: a loss pair and its ratio must be given together")
    lengths = value.get("lengths")
    if lengths is not None:
        if not isinstance(lengths, dict):
            raise SftEvalError(f"{where}.lengths is {validate.shown(lengths)}, not an object")
        for key in ("median_base", "median_tuned", "median_training", "ratio"):
            _number_or_null(lengths.get(key), f"{where}.lengths.{key}")


_TOOL_RATES = ("has_call", "name", "valid", "callable", "recall", "exact", "text_matched", "text_called")


_TOOL_SIDE = {"raw": validate.text, "content": validate.text, "stop_reason": validate.text, "calls": validate.objects}


def _tools(value: Any, where: str) -> None:
    """The Tool calls section's data: both models' rates, the paired rows and each card's conversation and
    answers."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise SftEvalError(f"{where} is {validate.shown(value)}, not an object")
    lists = dict.fromkeys(("comparison", "cards"), validate.objects)
    validate.fields(value, where, required={"summary": validate.an_object, **lists}, optional={})
    rates = {"calls": validate.integer, "texts": validate.integer, **dict.fromkeys(_TOOL_RATES, validate.number)}
    _sides(value["summary"], f"{where}.summary", rates)
    numbers = dict.fromkeys(("difference", "low", "high"), validate.number)
    for k, row in enumerate(value["comparison"]):
        fields = {"metric": validate.text, "questions": validate.integer, **numbers}
        validate.fields(row, f"{where}.comparison[{k}]", required=fields, optional={})
    for k, card in enumerate(value["cards"]):
        at = f"{where}.cards[{k}]"
        validate.fields(card, at, required={"messages": validate.objects, "tools": validate.a_list}, optional={})
        for j, message in enumerate(card["messages"]):
            validate.fields(message, f"{at}.messages[{j}]", required={"role": validate.text}, optional={})
        _sides(card, at, {**_TOOL_SIDE, "score": validate.an_object})
        for side in ("base", "tuned"):
            score = card[side]["score"]
            validate.fields(score, f"{at}.{side}.score", required={"kind": validate.text}, optional={})


def _thresholds(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise SftEvalError(f"{where} is {validate.shown(value)}, not an object")
    validate.fields(value, where, required={"max_repetition": validate.number}, optional={})


def _not_a_number(path: str | Path) -> Callable[[str], Any]:
    """json's hook for `NaN`, `Infinity` and `-Infinity`, which are not JSON: sft-eval writes null where a number
    was not finite, so a report holding them was written or edited by something else, and a NaN read as a number
    would enter compare's statistics (a NaN chrF read as an improvement)."""

    def refuse(constant: str) -> Any:
        raise SftEvalError(
            f"{path}: holds {constant}, which is not JSON and not a score (sft-eval writes null where a number was "
            "not finite); write the report again with `sft-eval report`, or put null there"
        )

    return refuse


def read_report_json(path: str | Path) -> ReportData:
    """A report's JSON (`sft_report.json`, `ReportData`), read and checked: this format version, and what the page
    and `compare` read of it (its cards' questions, answers and badges). Anything else is one line naming the file."""
    try:
        context = json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=_not_a_number(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SftEvalError(f"{path}: not a readable sft-eval report JSON: {str(exc).splitlines()[0]}") from None
    missing = [
        k
        for k in ("title", "training", "cards", "summary", "audit")
        if not isinstance(context, dict) or k not in context
    ]
    if missing:
        raise SftEvalError(f"{path}: not an sft-eval report JSON (no {', '.join(missing)})")
    if context.get("format") != REPORT_FORMAT:
        said = f"format {validate.shown(context['format'])}" if "format" in context else "no `format`"
        raise SftEvalError(
            f"{path}: report JSON with {said}; this sft-eval reads {REPORT_FORMAT}: use the sft-eval that "
            "wrote it, or write it again with `sft-eval report`"
        )
    check_report(context, str(path))
    return context
