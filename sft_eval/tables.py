"""A TOML table read into a dataclass, checked against its fields: an unknown key named with its close matches, a
value of the wrong type named with the type its annotation wants. The recipe's sections are read this way."""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Mapping
from typing import Any, get_args, get_origin, get_type_hints

from sft_eval.errors import SftEvalError


def read_table(cls: type, raw: Any, where: str, name: str) -> Any:
    if not isinstance(raw, dict):
        raise SftEvalError(f"{where}: [{name}] must be a table")
    reject_unknown(raw, {f.name for f in dataclasses.fields(cls)}, where, f"{name}.")
    check_types(cls, raw, where, f"{name}.")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    except TypeError as exc:  # a required key is missing
        missing = str(exc).split("argument")[-1].strip(": '")
        raise SftEvalError(f"{where}: [{name}] is missing required key `{missing}`") from None


def reject_unknown(raw: Mapping[str, Any], known: set[str], where: str, prefix: str) -> None:
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
            raise SftEvalError(f"{where}: unknown key `{prefix}{key}`{hint}")


def check_types(cls: type, raw: Mapping[str, Any], where: str, prefix: str) -> None:
    hints = get_type_hints(cls)
    for key, value in raw.items():
        if not matches_type(value, hints[key]):
            raise SftEvalError(
                f"{where}: `{prefix}{key}` must be {describe_type(hints[key])}, not {type(value).__name__} {value!r}"
            )


def matches_type(value: Any, hint: Any) -> bool:
    args = get_args(hint)
    kind = get_origin(hint)
    if kind is dict:  # a table: string keys, values of the second type
        return isinstance(value, dict) and all(
            isinstance(k, str) and matches_type(v, args[1]) for k, v in value.items()
        )
    if kind is tuple:
        return isinstance(value, list) and all(matches_type(v, args[0]) for v in value)
    if args and kind is not tuple:  # a union such as `str | None`
        return any(matches_type(value, a) for a in args if a is not type(None))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def describe_type(hint: Any) -> str:
    if get_origin(hint) is dict:
        return f"a table of {describe_type(get_args(hint)[1]).removeprefix('a ').removeprefix('an ')}s"
    if get_origin(hint) is tuple:
        return f"a list of {describe_type(get_args(hint)[0])}"
    args = [a for a in get_args(hint) if a is not type(None)]
    if args:
        return " or ".join(describe_type(a) for a in args)
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(hint, hint.__name__)


def key_table(recipe: type, sections: Mapping[str, type]) -> str:
    """Every key of `recipe` (a dataclass) and of its `sections`, its type, default and help, as the Markdown
    table docs/recipes.md holds (generated from the fields' metadata, so the docs cannot drift from the code)."""

    def default(f: dataclasses.Field) -> str:
        if f.default is dataclasses.MISSING:
            return "required" if f.default_factory is dataclasses.MISSING else "{}"
        return "none" if f.default is None else f"`{json.dumps(f.default)}`"  # as TOML spells it

    def kind(f: dataclasses.Field) -> str:
        spelled = str(f.type).replace(" | None", "")
        return {"tuple[str, ...]": "list of strings", "Mapping[str, Any]": "table"}.get(spelled, spelled)

    rows = ["| key | type | default | what it is |", "|---|---|---|---|"]
    for f in dataclasses.fields(recipe):
        if "help" in f.metadata:
            rows.append(f"| `{f.name}` | {kind(f)} | {default(f)} | {f.metadata['help']} |")
    for section, cls in sections.items():
        for f in dataclasses.fields(cls):
            if not f.metadata.get("help"):
                raise ValueError(
                    f"recipe key `{section}.{f.name}` has no help: declare it with recipe.key(default, help)"
                )
            rows.append(f"| `{section}.{f.name}` | {kind(f)} | {default(f)} | {f.metadata['help']} |")
    return "\n".join(rows) + "\n"
