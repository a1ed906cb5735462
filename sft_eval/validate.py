"""Values from outside, checked where they enter: a run's `trainer_state.json` and recorder files, answer-cache
entries, a server's replies. Each reader checks the types and ranges the code after it relies on, so that code
trusts what it gets; a bad value is one `SftEvalError` naming the file, the field and the entry:
`trainer_state.json: log_history[3].loss is "abc", not a number`.

Plain functions over the dataclasses and JSON we already have: the formats are small, and a schema library would
add a dependency to say the same thing less exactly.
"""

from __future__ import annotations

import json
from typing import Any

from sft_eval.errors import SftEvalError


def shown(value: Any) -> str:
    """A value as the one line shows it: JSON, cut short."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def number(value: Any, where: str) -> float:
    """A JSON number (int or float, NaN and infinities included: a diverged run logs them), not a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SftEvalError(f"{where} is {shown(value)}, not a number")
    return float(value)


def integer(value: Any, where: str, *, minimum: int | None = None) -> int:
    """A JSON integer (not a bool, not 2.0), at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SftEvalError(f"{where} is {shown(value)}, not an integer")
    if minimum is not None and value < minimum:
        raise SftEvalError(f"{where} is {value}, below {minimum}")
    return value


def text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SftEvalError(f"{where} is {shown(value)}, not a string")
    return value


def a_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise SftEvalError(f"{where} is {shown(value)}, not a list")
    return value


def an_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SftEvalError(f"{where} is {shown(value)}, not an object")
    return value


def objects(value: Any, where: str) -> list[dict[str, Any]]:
    """A JSON list of objects."""
    for k, item in enumerate(a_list(value, where)):
        if not isinstance(item, dict):
            raise SftEvalError(f"{where}[{k}] is {shown(item)}, not an object")
    return value


def fields(entry: dict[str, Any], where: str, *, required: dict[str, Any], optional: dict[str, Any]) -> None:
    """Each `required` key present and each present `optional` key valid, by its checker (`number`, `integer`...);
    a JSON null in an optional key counts as absent."""
    for key, check in required.items():
        if key not in entry:
            raise SftEvalError(f"{where} has no `{key}`")
        check(entry[key], f"{where}.{key}")
    for key, check in optional.items():
        if entry.get(key) is not None:
            check(entry[key], f"{where}.{key}")
