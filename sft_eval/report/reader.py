"""A report's JSON (`sft_report.json`) read back: its format version, and what the page and `compare` read of it,
checked before anything is drawn or compared. A bad value is one line naming the file, the card and the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from sft_eval import validate
from sft_eval.errors import SftEvalError
from sft_eval.schema import REPORT_FORMAT, ReportData, ServedBenchData
from sft_eval.validate import conform

SIGNAL_THRESHOLDS = ("min_eval_loss_drop", "max_forgetting", "max_expected_nll_rise", "max_length_ratio")


def check_report(context: dict[str, Any], where: str) -> None:
    """A report's JSON checked against the format's types (`format.conform`, every field all the way down), then
    what one field says of another, which types cannot: the models beyond the base and the tuned one each have an
    answer on every card and a summary, the signals come with their thresholds, a loss pair with its ratio, each
    tool item's message with its role. A bad value is one line naming the field (`cards[3].tuned.text is null,
    not a string`)."""
    conform(context, ReportData, where)
    report = cast(ReportData, context)
    models = report.get("models", ["base", "tuned"])
    if models[:2] != ["base", "tuned"]:
        raise SftEvalError(f'{where}: models is {validate.shown(models)}, not a list starting ["base", "tuned"]')
    for name in models[2:]:
        if name not in report["summary"].get("others", {}):
            raise SftEvalError(f"{where}: summary.others has no `{name}`, a model the report names (models)")
        for k, card in enumerate(report["cards"]):
            if name not in card.get("others", {}):
                raise SftEvalError(f"{where}: cards[{k}].others has no `{name}`, a model the report names (models)")
    signals = report["signals"]
    if signals is not None:
        missing = [k for k in SIGNAL_THRESHOLDS if k not in report["thresholds"]]
        if missing:
            raise SftEvalError(f"{where}: thresholds has no `{missing[0]}`, which the signals are judged by")
        if (signals["eval_loss"] is None) != (signals["eval_loss_drop"] is None) or (
            signals["general_loss"] is None
        ) != (signals["forgetting"] is None):
            raise SftEvalError(f"{where}: signals: a loss pair and its ratio must be given together")
    tools = report.get("tools")
    for k, tool_card in enumerate(tools["cards"] if tools else []):
        for j, message in enumerate(tool_card["messages"]):
            if not isinstance(message.get("role"), str):
                raise SftEvalError(f"{where}: tools.cards[{k}].messages[{j}] has no `role`")


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
    return cast(ReportData, context)


def read_bench_json(path: str | Path) -> ServedBenchData:
    """`sft-eval bench --served --json`'s output, read and checked against its types; anything else is one line
    naming the file and the field."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"), parse_constant=_not_a_number(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SftEvalError(
            f"{path}: not a readable `sft-eval bench --served --json` file: {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(data, dict) or "results" not in data or "served" not in data:
        raise SftEvalError(f"{path}: not the JSON of `sft-eval bench --served` (no `served` and `results`)")
    conform(data, ServedBenchData, str(path))
    return cast(ServedBenchData, data)
