"""Values from outside, checked where they enter: a run's `trainer_state.json` and recorder files, answer-cache
entries, a server's replies. Each reader checks the types and ranges the code after it relies on, so that code
trusts what it gets; a bad value is one `SftEvalError` naming the file, the field and the entry:
`trainer_state.json: log_history[3].loss is "abc", not a number`.

Plain functions over the dataclasses and JSON we already have: the formats are small, and a schema library would
add a dependency to say the same thing less exactly.
"""

from __future__ import annotations

import json
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from typing_extensions import is_typeddict

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


def conform(value: Any, hint: Any, where: str) -> None:
    """`value` (read from JSON) checked against the type `hint` of this module, all the way down: a record's
    required fields there and no field it does not declare, each value of its declared type. The types above are
    the one statement of the format; this is how sft-eval reads a report against them (pydantic, in the tests,
    reads the same types). A value that does not conform is one `SftEvalError` naming the field by its path
    (`cards[3].tuned.text is null, not a string`)."""
    problem = _problem(value, hint, "")
    if problem:
        raise SftEvalError(f"{where}: {problem}")


def _at(path: str, key: str | int) -> str:
    """The path of a field (`cards[3].tuned`) below `path` ("" at the top)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _problem(value: Any, hint: Any, path: str) -> str:
    """Why `value` at `path` does not conform to `hint`; empty when it does."""
    where = path or "the report"
    if hint is Any:
        return ""
    if is_typeddict(hint):
        if not isinstance(value, dict):
            return f"{where} is {shown(value)}, not an object"
        fields = get_type_hints(hint)
        missing = [k for k in fields if k in hint.__required_keys__ and k not in value]
        if missing:
            return f"{where} has no `{missing[0]}`"
        extra = [k for k in value if k not in fields]
        if extra:
            return f"{where} holds `{extra[0]}`, which the format ({hint.__name__}) does not declare"
        return next((p for k, v in value.items() if (p := _problem(v, fields[k], _at(path, k)))), "")
    kind, args = get_origin(hint), get_args(hint)
    if kind in (Union, UnionType):
        if any(not _problem(value, a, where) for a in args):
            return ""
        if value is not None and type(None) in args:  # an optional record or list: its own problem is the news
            real = [a for a in args if a is not type(None)]
            if len(real) == 1 and (is_typeddict(real[0]) or get_origin(real[0]) in (list, dict, tuple)):
                return _problem(value, real[0], path)
        return f"{where} is {shown(value)}, not {_words(hint)}"
    if kind is Literal:
        return "" if value in args else f"{where} is {shown(value)}, not {_words(hint)}"
    if kind is list:
        if not isinstance(value, list):
            return f"{where} is {shown(value)}, not {_words(hint)}"
        return next((p for k, v in enumerate(value) if (p := _problem(v, args[0], _at(path, k)))), "")
    if kind is tuple:  # a JSON list of fixed length (a [step, loss] pair)
        if not isinstance(value, list) or len(value) != len(args):
            return f"{where} is {shown(value)}, not {_words(hint)}"
        pairs = enumerate(zip(value, args, strict=True))
        return next((p for k, (v, a) in pairs if (p := _problem(v, a, _at(path, k)))), "")
    if kind is dict:
        if not isinstance(value, dict):
            return f"{where} is {shown(value)}, not an object"
        return next((p for k, v in value.items() if (p := _problem(v, args[1], _at(path, k)))), "")
    if hint is type(None):
        return "" if value is None else f"{where} is {shown(value)}, not null"
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    return "" if ok else f"{where} is {shown(value)}, not {_words(hint)}"


def _words(hint: Any) -> str:
    """A type as the error line says it."""
    kind, args = get_origin(hint), get_args(hint)
    if kind in (Union, UnionType):
        return " or ".join(_words(a) for a in args)
    if kind is Literal:
        return " or ".join(json.dumps(a) for a in args)
    if kind is list:
        return f"a list of {_words(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if kind is tuple:
        bare = (_words(a).removeprefix("a ").removeprefix("an ") for a in args)
        return "a [" + ", ".join(bare) + "]" + (" pair" if len(args) == 2 else " list")
    if kind is dict or is_typeddict(hint):
        return "an object"
    words = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}
    return words.get(hint, getattr(hint, "__name__", str(hint)))
