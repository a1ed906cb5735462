"""Data: the SFT training rows and the evaluation questions a recipe names, validated row by row.

A bad row is reported with its file and line number before any training starts: a dataset that silently
drops or mangles rows is the kind of failure sft-eval exists to catch.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from sft_eval.cache import default_cache_dir
from sft_eval.errors import SftEvalError
from sft_eval.hub import require_local_or_reachable
from sft_eval.recipe import Recipe, read_text

# Training rows as stages take them: the Arrow `Dataset` `load_sft_rows` returns, or a list of row dicts (a sample
# a test builds). Iterating either gives dicts; slice a `Dataset` with `head`, never `[:n]` (which gives columns).
Rows = Dataset | list[dict[str, Any]]


@dataclass(frozen=True)
class Question:
    question: str
    expected: str | None = None  # a checkable answer, when there is one
    category: str = ""  # the questions file's `category` (or its older name `kind`): metrics are broken down by it
    id: str = ""  # the questions file's `id`, when it gives one: what `compare` pairs questions by (else the text)
    cluster: str = ""  # the questions file's `cluster` (questions from one source): compare's clustered errors


def load_sft_rows(recipe: Recipe, *, cache_dir: str | Path | None = None, key: str = "data.train") -> Dataset:
    """The recipe's training rows (first `data.limit`), or with `key="data.eval"` its held-out rows (all), as an
    Arrow `datasets.Dataset`, each a `messages` conversation or prompt/completion, all of one format (TRL prepares a
    dataset by the format of its first row).

    A JSONL file is read by `datasets`' JSON builder into memory-mapped Arrow files under `cache_dir` (default:
    `datasets/` in the sft-eval cache) and validated column by column with pyarrow compute. Only when Arrow cannot
    read the file, or a column does not pass, is it scanned line by line: that scan names the first bad line (or
    vouches for rows the columnar check could not, e.g. a column of mixed types that Arrow reads as one)."""
    source = recipe.resolve(recipe.data.train if key == "data.train" else recipe.data.eval)
    path = Path(source)
    limit = recipe.data.limit if key == "data.train" else None
    if path.is_file():
        dataset = _arrow_jsonl(path, cache_dir)
        if dataset is not None:
            dataset = _first(dataset, limit)
        if dataset is None or not rows_pass(dataset):
            numbered = list(_read_jsonl(path, limit=limit))
            rows = _validated([row for _, row in numbered], [f"{path}:{line}" for line, _ in numbered])
            dataset = dataset if dataset is not None else _from_rows(rows, path)
    else:
        dataset = _first(_load_datasets_rows(source, key), limit)
        if not rows_pass(dataset):
            _validated(dataset, [f"{source} row {index}" for index in range(len(dataset))])
    if not len(dataset):
        raise SftEvalError(
            f"{key}: {source} has no rows: there is nothing to {'train' if key == 'data.train' else 'score'} on"
        )
    return dataset


def split_held_out(rows: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(training rows, held-out rows): `fraction` of `rows` drawn with `seed` (at least one each side), both in
    their file order; the same recipe always holds out the same rows."""
    import numpy as np

    held = round(len(rows) * fraction)
    if not 0 < held < len(rows):
        raise SftEvalError(
            f"data.eval_fraction: {fraction} of {len(rows)} rows holds out {held}: at least one row must be held out "
            "and one trained on"
        )
    chosen = set(np.random.default_rng(seed).permutation(len(rows))[:held].tolist())
    return (
        rows.select([i for i in range(len(rows)) if i not in chosen]),
        rows.select(sorted(chosen)),
    )


def training_rows(recipe: Recipe, *, cache_dir: str | Path | None = None) -> Dataset:
    """The rows the recipe trains on: `data.train` (first `data.limit`) less its `data.eval_fraction` share."""
    rows = load_sft_rows(recipe, cache_dir=cache_dir)
    if recipe.data.eval_fraction is None:
        return rows
    return split_held_out(rows, recipe.data.eval_fraction, recipe.seed)[0]


def _validated(rows: Any, where: list[str]) -> Any:
    """The row-by-row check: the first bad row is one `SftEvalError` naming its line (or row index). No rows pass
    here: `load_sft_rows` says a dataset is empty, once, whichever way it was read."""
    if not len(rows):
        return rows
    first = _row_format(rows[0])
    for row, spot in zip(rows, where, strict=True):
        _check_row(row, spot)
        if (kind := _row_format(row)) != first:
            raise SftEvalError(
                f"{spot}: a {kind} row in a dataset whose first row ({where[0]}) is {first}: TRL prepares every "
                "row by the first one's format, so use one format throughout"
            )
    return rows


def _first(dataset: Dataset, limit: int | None) -> Dataset:
    """The first `limit` rows: a contiguous range, which `datasets` selects as a slice of the memory map."""
    return dataset if limit is None or limit >= len(dataset) else dataset.select(range(limit))


def _arrow_jsonl(path: Path, cache_dir: str | Path | None) -> Dataset | None:
    """The JSONL file through `datasets`' JSON builder (cached Arrow, memory-mapped), or None when Arrow cannot
    read it (bad JSON, bad UTF-8, a line that is not an object, a key whose type changes between rows)."""
    import datasets

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "datasets"
    bars = datasets.is_progress_bar_enabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its "Failed to load JSON" is not our one line
    try:
        return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(folder))
    except Exception:  # noqa: BLE001 - any failure means "scan it line by line", which names the line
        return None
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


def _from_rows(rows: list[dict[str, Any]], path: Path) -> Dataset:
    """Rows the line scan vouched for but Arrow could not read as one table (a key with a number in one row and a
    string in another): `Dataset.from_list` says which column when it cannot either."""
    try:
        return rows_dataset(rows)
    except Exception as exc:  # noqa: BLE001 - pyarrow's type errors, said once with the file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SftEvalError(
            f"{path}: the rows do not form one table (a key changes type between rows): {reason}"
        ) from None


VALIDATE_BATCH = 100_000  # rows checked per Arrow batch: memory stays bounded at millions of rows


def rows_pass(dataset: Dataset) -> bool:
    """Whether every row passes the row check, decided on Arrow columns (no Python dict per row). False is not an
    error: it means "check row by row", which then raises with the row's line, or accepts what this could not."""
    columns = set(dataset.column_names)
    if "tools" in columns or any(_has_tool_calls(_column_type(dataset, c)) for c in ("messages", "completion")):
        return False  # calls and tool schemas are checked row by row (tool data is small)
    if "messages" in columns:
        check = _messages_rows_pass
    elif {"prompt", "completion"} <= columns:
        check = _prompt_completion_rows_pass
    else:
        return False
    return all(check(batch) for batch in dataset.with_format("arrow").iter(batch_size=VALIDATE_BATCH))


def _has_tool_calls(kind: Any) -> bool:
    """Whether an Arrow message-list type has a `tool_calls` field."""
    import pyarrow as pa

    if kind is None or not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        return False
    return pa.types.is_struct(kind.value_type) and kind.value_type.get_field_index("tool_calls") >= 0


def rows_dataset(rows: list[dict[str, Any]]) -> Dataset:
    """Rows as a `Dataset`, with a column whose values differ in shape kept as JSON (`datasets`' Json type): Arrow
    would otherwise widen tool-call arguments (and tool schemas) to one struct of every row's keys, and each call
    would render with the other rows' keys set to null (`{"city": "Lisbon", "a": null}`)."""
    return Dataset.from_list(rows, **_MIXED_AS_JSON)


# `datasets` >= 4.8 keeps a column of mixed shapes as JSON; an older one widens it (or fails, said in one line)
_MIXED_AS_JSON = (
    {"on_mixed_types": "use_json"} if "on_mixed_types" in inspect.signature(Dataset.from_list).parameters else {}
)


def _is_messages_type(kind: Any) -> bool:
    import pyarrow as pa

    if (
        kind is None
        or not (pa.types.is_list(kind) or pa.types.is_large_list(kind))
        or not pa.types.is_struct(kind.value_type)
    ):
        return False
    fields = {field.name: field.type for field in kind.value_type}
    return all(
        name in fields and (pa.types.is_string(fields[name]) or pa.types.is_large_string(fields[name]))
        for name in ("role", "content")
    )


def _messages_pass(column: Any, *, need_assistant: bool) -> bool:
    """Every row a non-empty list of {role, content} strings with a known role (and, for `messages`, an assistant
    message with text)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not _is_messages_type(column.type) or column.null_count:
        return False
    lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    messages = lists.flatten()
    role, content = pc.struct_field(messages, "role"), pc.struct_field(messages, "content")
    if messages.null_count or role.null_count or content.null_count:
        return False
    if not _all(pc.is_in(role, value_set=pa.array(ROLES))):
        return False
    if not need_assistant:
        return _all(pc.greater(pc.list_value_length(lists), 0))
    answered = pc.and_(pc.equal(role, "assistant"), pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(content)), 0))
    parents = pc.list_parent_indices(lists).to_numpy()
    counts = np.bincount(parents[answered.to_numpy(zero_copy_only=False)], minlength=len(lists))
    return bool((counts > 0).all())


def _all(mask: Any) -> bool:
    """True when every value of a boolean Arrow array is true (an empty array included)."""
    import pyarrow.compute as pc

    return pc.all(mask).as_py() is not False


def _messages_rows_pass(batch: Any) -> bool:
    return _messages_pass(batch.column("messages"), need_assistant=True)


def _prompt_completion_rows_pass(batch: Any) -> bool:
    import pyarrow as pa
    import pyarrow.compute as pc

    prompt, completion = batch.column("prompt"), batch.column("completion")
    if all(pa.types.is_string(c.type) or pa.types.is_large_string(c.type) for c in (prompt, completion)):
        return all(not c.null_count and _all(pc.greater(pc.utf8_length(c), 0)) for c in (prompt, completion))
    return all(_messages_pass(c, need_assistant=False) for c in (prompt, completion))


def _read_jsonl(path: Path, limit: int | None = None):
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


def _load_datasets_rows(source: str, key: str = "data.train") -> Dataset:
    """A `save_to_disk` folder, or a hub dataset id when the hub is reachable (its train split)."""
    import datasets

    require_local_or_reachable(source, key=key, kind="dataset")
    try:
        loaded = datasets.load_from_disk(source) if Path(source).is_dir() else datasets.load_dataset(source)
    except Exception as exc:  # datasets raises many types; all mean "cannot read this dataset"
        raise SftEvalError(f"{key}: cannot load dataset {source!r}: {str(exc).splitlines()[0]}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise SftEvalError(f"{key}: {source!r} has no 'train' split (it has {', '.join(loaded)})")
        loaded = loaded["train"]
    return loaded


# The roles chat templates know (OpenAI's and transformers' names); anything else is a typo or another dataset
# convention (ShareGPT's human/gpt) that templates render wrong or silently drop.
ROLES = ("system", "developer", "user", "assistant", "tool", "function", "ipython")
_OTHER_CONVENTIONS = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}


def _row_format(row: dict[str, Any]) -> str:
    if row.get("messages") is not None:
        return "`messages`"
    if isinstance(row.get("prompt"), list) or isinstance(row.get("completion"), list):
        return "conversational prompt/completion"
    return "text prompt/completion"


def _check_messages(messages: Any, where: str, key: str, tools: list[str] | None = None) -> None:
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
            _check_tool_calls(m["tool_calls"], f"{where}: `{key}`[{index}].tool_calls", tools)


def _check_tool_calls(calls: Any, where: str, tools: list[str] | None) -> None:
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


def _row_tools(row: dict[str, Any], where: str) -> list[dict[str, Any]] | None:
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
            _check_parameters(function["parameters"], f"{where}: `tools`[{k}] ({function['name']}) parameters")
    return tools


def _check_parameters(schema: Any, where: str) -> None:
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


def _names(tools: list[dict[str, Any]] | None) -> list[str] | None:
    """The function names of checked `tools` (`_row_tools`); None when there are none."""
    return None if tools is None else [tool.get("function", tool)["name"] for tool in tools]


def _check_row(row: dict[str, Any], where: str) -> None:
    tools = _names(_row_tools(row, where))
    if row.get("messages") is not None:
        messages = row["messages"]
        _check_messages(messages, where, "messages", tools)
        if not any(
            m["role"] == "assistant" and ((m.get("content") or "").strip() or m.get("tool_calls")) for m in messages
        ):
            raise SftEvalError(f"{where}: conversation has no assistant message to learn from")
    elif "prompt" in row or "completion" in row:
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), (str, list)) or not row.get(key):
                raise SftEvalError(f"{where}: prompt/completion row needs a non-empty `{key}`")
            if isinstance(row[key], list):
                _check_messages(row[key], where, key, tools)
        if isinstance(row["prompt"], str) != isinstance(row["completion"], str):
            raise SftEvalError(f"{where}: `prompt` and `completion` must both be text or both be message lists")
    else:
        has = ", ".join(row) or "nothing"
        raise SftEvalError(f"{where}: row needs `messages` or `prompt`+`completion` (has {has})")


def load_questions(recipe: Recipe) -> list[Question]:
    """The recipe's evaluation questions: inline `questions`, then those of `questions_file`."""
    questions = [Question(q) for q in recipe.eval.questions]
    if recipe.eval.questions_file:
        path = Path(recipe.resolve(recipe.eval.questions_file))
        if path.is_dir():
            raise SftEvalError(f"eval.questions_file: {path} is a folder, not a JSONL file of questions")
        if not path.is_file():
            raise SftEvalError(f"eval.questions_file: {path} does not exist")
        ids: dict[str, int] = {}
        for number, row in _read_jsonl(path):
            if not isinstance(row.get("question"), str) or not row["question"].strip():
                raise SftEvalError(f"{path}:{number}: needs a non-empty string `question`")
            expected = row.get("expected")
            if expected is not None and not isinstance(expected, str):
                raise SftEvalError(f"{path}:{number}: `expected` must be a string")
            ident = row.get("id", "")
            if isinstance(ident, bool) or not isinstance(ident, str | int):
                raise SftEvalError(f"{path}:{number}: `id` must be a string or an integer")
            ident = str(ident)
            if ident in ids:
                raise SftEvalError(f"{path}:{number}: `id` {ident!r} is also line {ids[ident]}'s")
            if ident:
                ids[ident] = number
            category = row.get("category", row.get("kind", ""))
            if not isinstance(category, str):
                raise SftEvalError(f"{path}:{number}: `category` must be a string")
            cluster = row.get("cluster", "")
            if isinstance(cluster, bool) or not isinstance(cluster, str | int):
                raise SftEvalError(f"{path}:{number}: `cluster` must be a string or an integer")
            questions.append(Question(row["question"], expected, category, ident, str(cluster)))
    if not questions:
        where = recipe.eval.questions_file or "eval.questions"
        raise SftEvalError(f"{where}: no evaluation questions: a run would judge nothing; add at least one")
    return questions[: recipe.eval.limit]


@dataclass(frozen=True)
class ToolItem:
    """A tool-calling evaluation item: a conversation (its last message the user's question or a tool's result)
    with the tools it offers, expecting a call (`expected_call`: name and arguments) or a text (`expected`)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    expected_call: dict[str, Any] | None = None
    expected: str | None = None
    category: str = ""
    id: str = ""

    @property
    def question(self) -> str:
        """What the item asks, in one line: the last message's text."""
        return str(self.messages[-1].get("content") or "")


def load_tool_items(recipe: Recipe) -> list[ToolItem]:
    """The recipe's `eval.tool_items`, each line checked as a training row is (roles, calls, tools) plus what it
    expects; a bad line is one error naming it."""
    if not recipe.eval.tool_items:
        return []
    path = Path(recipe.resolve(recipe.eval.tool_items))
    if not path.is_file():
        raise SftEvalError(f"eval.tool_items: {path} {'is a folder' if path.is_dir() else 'does not exist'}")
    items = []
    for number, row in _read_jsonl(path):
        where = f"{path}:{number}"
        offered = _row_tools(row, where)
        tools = _names(offered)
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise SftEvalError(f"{where}: needs `messages`, the conversation to ask")
        _check_messages(messages, where, "messages", tools)
        if messages[-1]["role"] not in ("user", "tool"):
            raise SftEvalError(f"{where}: the conversation must end with the user's question or a tool's result")
        call, expected = row.get("expected_call"), row.get("expected")
        if (call is None) == (expected is None):
            raise SftEvalError(f"{where}: give one of `expected_call` ({{name, arguments}}) or `expected` (a text)")
        if call is not None:
            _check_tool_calls([call], f"{where}: `expected_call`", tools)
            if "arguments" not in call.get("function", call):
                raise SftEvalError(
                    f"{where}: `expected_call` has no `arguments`: give the call's arguments as a JSON object "
                    "(`{}` for a call that takes none)"
                )
        elif not isinstance(expected, str):
            raise SftEvalError(f"{where}: `expected` must be a string")
        items.append(
            ToolItem(messages, offered or None, call, expected, str(row.get("category", "")), str(row.get("id", "")))
        )
    if not items:
        raise SftEvalError(f"eval.tool_items: {path} has no items")
    return items


def row_texts(row: dict[str, Any]) -> list[str]:
    """The texts a row's rendering carries: each message's content, and its calls and tools as the JSON a template
    writes them in (what the tiny tokenizer is trained on)."""
    texts = []
    for message in row.get("messages") or []:
        if isinstance(message.get("content"), str):
            texts.append(message["content"])
        if message.get("tool_calls"):
            texts.append(json.dumps(message["tool_calls"]))
    if row.get("tools"):
        texts.append(row["tools"] if isinstance(row["tools"], str) else json.dumps(row["tools"]))
    return texts


def _shown(message: dict[str, Any]) -> str:
    """A message as a table shows it: its text, else its calls as `name({arguments})` (a tool-calling turn)."""
    if isinstance(message.get("content"), str) and message["content"]:
        return message["content"]
    calls = [c.get("function", c) for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    return "; ".join(f"{c.get('name')}({_arguments_shown(c.get('arguments'))})" for c in calls)


def _arguments_shown(arguments: Any) -> str:
    try:
        return json.dumps(parsed_arguments(arguments), ensure_ascii=False)
    except json.JSONDecodeError:
        return str(arguments)


def user_and_answer(row: dict[str, Any]) -> tuple[str, str]:
    """The first user prompt and the first assistant response of a row (its call, for a tool-calling turn), as the
    lesson's table shows them."""
    if "messages" in row:
        user = next((_shown(m) for m in row["messages"] if m["role"] == "user"), "")
        answer = next((_shown(m) for m in row["messages"] if m["role"] == "assistant"), "")
        return user, answer
    return _as_text(row["prompt"]), _as_text(row["completion"])


def assistant_texts(row: dict[str, Any]) -> list[str]:
    """What a row trains the model to say in words: each assistant turn's text (not its calls), or the
    completion."""
    if "messages" in row:
        return [m["content"] for m in row["messages"] if m["role"] == "assistant" and isinstance(m.get("content"), str)]
    return [_as_text(row["completion"])]


def load_general_text(path: str | Path) -> list[str]:
    """`eval.general_text`'s documents: a .txt file's non-blank lines, or a .jsonl file's `text` fields (each a
    non-empty string, else one line naming the file and line)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        documents = []
        for number, row in _read_jsonl(path):
            if not isinstance(row.get("text"), str) or not row["text"].strip():
                raise SftEvalError(f"eval.general_text: {path}:{number}: needs a non-empty string `text`")
            documents.append(row["text"])
    else:
        documents = [line for line in read_text(path).splitlines() if line.strip()]
    if not documents:
        raise SftEvalError(f"eval.general_text: {path} holds no text")
    return documents


def user_turns(row: dict[str, Any]) -> list[str]:
    """Every user message of a row: `messages` conversations, and prompts (a string, or a list of messages)."""
    if "messages" in row:
        return [m["content"] for m in row["messages"] if m["role"] == "user"]
    prompt = row["prompt"]
    return [prompt] if isinstance(prompt, str) else [m.get("content", "") for m in prompt if m.get("role") == "user"]


def normalise(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: `"Paris."` matches `"paris"` (answers against their
    expected text, questions against training turns)."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def leaked_questions(rows: Any, questions: list[Question]) -> list[str]:
    """Evaluation questions that are also a user turn of a training row (after normalising): they measure
    memory, not the fine-tune. Rows are a `Dataset` (its user turns read column-wise) or a list of rows."""
    trained = {normalise(turn) for turn in all_user_turns(rows)}
    return [q.question for q in questions if normalise(q.question) in trained]


def all_user_turns(rows: Any) -> list[str]:
    """Every user message of every row. On a `Dataset` of `messages` (or message-list prompts) the user contents
    are picked out with pyarrow compute, batch by batch, never a Python dict per row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = next((c for c in ("messages", "prompt") if c in getattr(rows, "column_names", ())), None)
    kind = _column_type(rows, column) if column else None
    if column == "prompt" and kind is not None and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return [p for batch in rows.select_columns([column]).iter(batch_size=VALIDATE_BATCH) for p in batch[column]]
    if column is None or not _is_messages_type(kind):  # a list of rows, or a column Arrow typed otherwise (Json)
        return [turn for row in rows for turn in user_turns(row)]

    turns: list[str] = []
    for _, messages, _ in _message_batches(rows, column):
        user = pc.equal(pc.struct_field(messages, "role"), "user")
        turns += pc.filter(pc.struct_field(messages, "content"), user).to_pylist()
    return turns


def _message_batches(rows: Dataset, column: str) -> Any:
    """(row count, the batch's messages flattened, each message's row index) per Arrow batch of a message-list
    column: `VALIDATE_BATCH` rows at a time, never a Python dict per row."""
    import pyarrow.compute as pc

    for batch in rows.with_format("arrow").select_columns([column]).iter(batch_size=VALIDATE_BATCH):
        lists = batch.column(column).combine_chunks()
        yield len(lists), lists.flatten(), pc.list_parent_indices(lists).to_numpy()


def rows_with_text(rows: Any, needles: list[str]) -> list[int]:
    """Indices of the `messages` rows whose message contents contain any of `needles`, in order."""
    if not needles:
        return []
    if not isinstance(rows, Dataset) or not _is_messages_type(_column_type(rows, "messages")):
        return [
            i
            for i, row in enumerate(rows)
            if any(
                isinstance(m.get("content"), str) and any(n in m["content"] for n in needles)
                for m in row.get("messages") or []
            )
        ]
    import numpy as np
    import pyarrow.compute as pc

    found: list[int] = []
    start = 0
    for count, messages, parents in _message_batches(rows, "messages"):
        content = pc.struct_field(messages, "content")
        hit = np.zeros(len(content), dtype=bool)
        for needle in needles:
            hit |= pc.fill_null(pc.match_substring(content, needle), False).to_numpy(zero_copy_only=False)
        found += (np.unique(parents[hit]) + start).tolist()
        start += count
    return found


def multi_turn_rows(rows: Any) -> int:
    """How many `messages` rows have more than one assistant message (column-wise on a `Dataset`)."""
    return _rows_with_role(rows, "assistant", at_least=2)


def system_rows(rows: Any) -> int:
    """How many `messages` rows have a system message (column-wise on a `Dataset`)."""
    return _rows_with_role(rows, "system", at_least=1)


def tool_rows(rows: Any) -> int:
    """How many rows use tools: give a `tools` list, or have an assistant's `tool_calls` or a `tool` message (from
    Arrow columns on a `Dataset`: only the row indices of hits are kept)."""
    if not isinstance(rows, Dataset) or not _is_messages_type(_column_type(rows, "messages")):
        return sum(
            bool(row.get("tools"))
            or any(m.get("role") == "tool" or m.get("tool_calls") for m in row.get("messages") or [])
            for row in rows or []
        )
    import numpy as np
    import pyarrow.compute as pc

    used: set[int] = set()
    if "tools" in rows.column_names:
        batches = rows.with_format("arrow").select_columns(["tools"]).iter(batch_size=VALIDATE_BATCH)
        for number, batch in enumerate(batches):
            tools = batch.column("tools")
            size = pc.utf8_length(tools) if _is_text(tools.type) else pc.list_value_length(tools)
            given = pc.fill_null(pc.greater(size, 2 if _is_text(tools.type) else 0), False)  # not "" nor "[]"
            used.update((np.flatnonzero(given.to_numpy(zero_copy_only=False)) + number * VALIDATE_BATCH).tolist())
    offset = 0
    fields = {field.name for field in _column_type(rows, "messages").value_type}
    for count, messages, parents in _message_batches(rows, "messages"):
        hit = pc.equal(pc.struct_field(messages, "role"), "tool").to_numpy(zero_copy_only=False)
        if "tool_calls" in fields:
            calls = pc.struct_field(messages, "tool_calls")
            hit |= pc.fill_null(pc.greater(pc.list_value_length(calls), 0), False).to_numpy(zero_copy_only=False)
        used.update((np.unique(parents[hit]) + offset).tolist())
        offset += count
    return len(used)


def _is_text(kind: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _rows_with_role(rows: Any, role: str, *, at_least: int) -> int:
    if not isinstance(rows, Dataset) or not _is_messages_type(_column_type(rows, "messages")):
        return sum(sum(m.get("role") == role for m in r.get("messages") or []) >= at_least for r in rows or [])
    import numpy as np
    import pyarrow.compute as pc

    total = 0
    for count, messages, parents in _message_batches(rows, "messages"):
        matches = pc.equal(pc.struct_field(messages, "role"), role).to_numpy(zero_copy_only=False)
        total += int((np.bincount(parents[matches], minlength=count) >= at_least).sum())
    return total


def _column_type(dataset: Dataset, column: str) -> Any:
    schema = dataset.features.arrow_schema
    return schema.field(column).type if column in schema.names else None


def head(rows: Any, n: int) -> list[dict[str, Any]]:
    """The first `n` rows as a list of dicts, from a `Dataset` (slicing one gives columns, not rows) or a list."""
    if isinstance(rows, Dataset):
        return rows.select(range(min(n, len(rows)))).to_list()
    return list(rows[:n])


def _as_text(value: str | list[dict[str, Any]]) -> str:
    return value if isinstance(value, str) else " ".join(m.get("content", "") for m in value)


@dataclass(frozen=True)
class DatasetTable:
    """The lesson's display_dataset: the first rows as user prompt / assistant response."""

    rows: list[tuple[str, str]]

    def __str__(self) -> str:
        width = 48
        lines = [f"{'User Prompt':<{width}} | Assistant Response", "-" * (2 * width + 3)]
        for user, answer in self.rows:
            left = textwrap.wrap(user, width) or [""]
            right = textwrap.wrap(answer, width) or [""]
            for i in range(max(len(left), len(right))):
                a = left[i] if i < len(left) else ""
                b = right[i] if i < len(right) else ""
                lines.append(f"{a:<{width}} | {b}")
        return "\n".join(lines)


def dataset_table(dataset: Any, n: int = 3) -> DatasetTable:
    """First `n` rows of a list of rows or a `datasets.Dataset`."""
    return DatasetTable([user_and_answer(dataset[i]) for i in range(min(n, len(dataset)))])
