"""Conversations as rows and items carry them, checked: roles and contents, tool calls against the tools a row
offers, each tool's parameters schema (its `$ref`s resolved), and JSONL read line by line. A bad row or line is one
error naming it; `data` (training rows) and `questions` (questions and tool items) share these checks."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from sft_eval.errors import SftEvalError


def read_jsonl(path: Path, limit: int | None = None):
    """(line number, object) for each non-blank line; a malformed line is an error naming it."""
    count = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SftEvalError(
                    f"{path}:{number}: not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1})"
                ) from None
            if not line.strip():
                continue
            if limit is not None and count >= limit:
                return
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SftEvalError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            except RecursionError:
                raise SftEvalError(f"{path}:{number}: JSON nested too deeply to be a row") from None
            if not isinstance(row, dict):
                raise SftEvalError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            count += 1
            yield number, row


# The roles chat templates know (OpenAI's and transformers' names); anything else is a typo or another dataset
# convention (ShareGPT's human/gpt) that templates render wrong or silently drop.
ROLES = ("system", "developer", "user", "assistant", "tool", "function", "ipython")


_OTHER_CONVENTIONS = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}


def row_format(row: dict[str, Any]) -> str:
    if row.get("messages") is not None:
        return "`messages`"
    if isinstance(row.get("prompt"), list) or isinstance(row.get("completion"), list):
        return "conversational prompt/completion"
    return "text prompt/completion"


def check_messages(messages: Any, where: str, key: str, tools: list[str] | None = None) -> None:
    """A list of {role, content} messages with known roles; an assistant message may instead (or also) carry
    `tool_calls`, each checked (`tools`: the row's tool names, which a call must be one of)."""
    if not isinstance(messages, list) or not all(
        isinstance(m, dict)
        and isinstance(m.get("role"), str)
        and (isinstance(m.get("content"), str) or (m.get("tool_calls") and m.get("content") is None))
        for m in messages
    ):
        raise SftEvalError(f'{where}: `{key}` must be a list of {{"role": ..., "content": ...}} objects')
    for index, m in enumerate(messages):
        if m["role"] not in ROLES:
            usual = _OTHER_CONVENTIONS.get(m["role"].lower())
            hint = f" (ShareGPT-style? use {usual!r})" if usual else ""
            raise SftEvalError(f"{where}: unknown role {m['role']!r}{hint}; chat templates know {', '.join(ROLES)}")
        if m.get("tool_calls") is not None:
            if m["role"] != "assistant":
                raise SftEvalError(
                    f"{where}: `{key}`[{index}], a {m['role']} message, has `tool_calls`: only an assistant calls tools"
                )
            check_tool_calls(m["tool_calls"], f"{where}: `{key}`[{index}].tool_calls", tools)


def check_tool_calls(calls: Any, where: str, tools: list[str] | None) -> None:
    """TRL's (and transformers') call format: `{"type": "function", "function": {"name": ..., "arguments": {...}}}`,
    or the flat `{"name": ..., "arguments": ...}`; arguments a JSON object, or a string holding one."""
    if not isinstance(calls, list) or not calls:
        raise SftEvalError(f"{where} must be a non-empty list of calls")
    for k, call in enumerate(calls):
        function = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise SftEvalError(
                f'{where}[{k}] is not a call: use {{"type": "function", "function": {{"name": ..., '
                '"arguments": {...}}}'
            )
        name = function.get("name")
        if not isinstance(name, str) or not name.strip():
            raise SftEvalError(f"{where}[{k}] has no function name")
        try:
            arguments = parsed_arguments(function.get("arguments", {}))
        except json.JSONDecodeError as exc:
            raise SftEvalError(
                f"{where}[{k}] ({name}): its arguments are not valid JSON ({exc.msg}, column {exc.colno})"
            ) from None
        if not isinstance(arguments, dict):
            raise SftEvalError(
                f"{where}[{k}] ({name}): its arguments must be a JSON object, not {type(arguments).__name__}"
            )
        if tools is not None and name not in tools:
            raise SftEvalError(
                f"{where}[{k}] calls {name!r}, which is not among the row's tools ({', '.join(tools) or 'none'}): "
                "the model would learn to call a tool it was never offered"
            )


def parsed_arguments(arguments: Any) -> Any:
    """A call's arguments: a string (as some datasets and parsers give them) read as JSON, anything else as given;
    json.JSONDecodeError for a string that is not JSON."""
    return json.loads(arguments) if isinstance(arguments, str) else arguments


def row_tools(row: dict[str, Any], where: str) -> list[dict[str, Any]] | None:
    """A row's `tools` (a list of JSON-schema functions, or a string holding one, as TRL reads it), each checked to
    be a named function; None when the row gives none."""
    tools = row.get("tools")
    if tools is None or tools == "":
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as exc:
            raise SftEvalError(f"{where}: `tools` is not valid JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(tools, list):
        raise SftEvalError(f"{where}: `tools` must be a list of function schemas, not {type(tools).__name__}")
    for k, tool in enumerate(tools):
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise SftEvalError(
                f'{where}: `tools`[{k}] is not a function schema: use {{"type": "function", "function": {{"name": ..., '
                '"description": ..., "parameters": {...}}}'
            )
        if "parameters" in function:
            check_parameters(function["parameters"], f"{where}: `tools`[{k}] ({function['name']}) parameters")
    return tools


def check_parameters(schema: Any, where: str) -> None:
    """A tool's `parameters`: a JSON Schema object that jsonschema's own `check_schema` accepts (types, a
    `properties` mapping, `pattern`s that are regular expressions) whose every `$ref` resolves inside it; a schema
    that is not one would break the template that renders it, or the scoring of every call."""
    if not isinstance(schema, dict):
        raise SftEvalError(f"{where} must be a JSON Schema object, not {type(schema).__name__}")
    problem = _schema_problem(json.dumps(schema, sort_keys=True))
    if problem:
        raise SftEvalError(f"{where}{problem}")


@functools.lru_cache(maxsize=1024)  # every row of a tool dataset usually offers the same few tools
def _schema_problem(text: str) -> str:
    """What is wrong with the JSON Schema object `text` (its place and the reason, to follow the key that names
    it), or "" when nothing is."""
    from jsonschema import exceptions, validators
    from referencing import Registry, Resource
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    schema = json.loads(text)
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        at = "".join(f"[{p!r}]" for p in exc.path)
        return f"{at} is not a valid JSON Schema: {exc.message}"
    resolver = Registry().with_resource("", Resource.from_contents(schema, DRAFT202012)).resolver()
    for ref in _refs(schema):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            return f": `$ref` {ref!r} does not resolve inside the schema"
    return ""


def _refs(node: Any) -> list[str]:
    """Every `$ref` string in a schema, at any depth."""
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def tool_names(tools: list[dict[str, Any]] | None) -> list[str] | None:
    """The function names of checked `tools` (`row_tools`); None when there are none."""
    return None if tools is None else [tool.get("function", tool)["name"] for tool in tools]


def check_row(row: dict[str, Any], where: str) -> None:
    tools = tool_names(row_tools(row, where))
    if row.get("messages") is not None:
        messages = row["messages"]
        check_messages(messages, where, "messages", tools)
        if not any(
            m["role"] == "assistant" and ((m.get("content") or "").strip() or m.get("tool_calls")) for m in messages
        ):
            raise SftEvalError(f"{where}: conversation has no assistant message to learn from")
    elif "prompt" in row or "completion" in row:
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), (str, list)) or not row.get(key):
                raise SftEvalError(f"{where}: prompt/completion row needs a non-empty `{key}`")
            if isinstance(row[key], list):
                check_messages(row[key], where, key, tools)
        if isinstance(row["prompt"], str) != isinstance(row["completion"], str):
            raise SftEvalError(f"{where}: `prompt` and `completion` must both be text or both be message lists")
    else:
        has = ", ".join(row) or "nothing"
        raise SftEvalError(f"{where}: row needs `messages` or `prompt`+`completion` (has {has})")
