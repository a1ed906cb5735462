"""Data: the SFT training rows and the evaluation questions a recipe names, validated row by row.

A bad row is reported with its file and line number before any training starts: a dataset that silently
drops or mangles rows is the kind of failure sft-eval exists to catch.
"""

from __future__ import annotations

import inspect
import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from sft_eval.cache import default_cache_dir
from sft_eval.conversations import ROLES, check_row, parsed_arguments, read_jsonl, row_format
from sft_eval.errors import SftEvalError
from sft_eval.hub import require_local_or_reachable

# what a recipe asks, and the row checks, live in their own modules; named here too, as before they moved
from sft_eval.questions import Question as Question
from sft_eval.questions import ToolItem as ToolItem
from sft_eval.questions import load_general_text as load_general_text
from sft_eval.questions import load_questions as load_questions
from sft_eval.questions import load_tool_items as load_tool_items
from sft_eval.recipe import Recipe

# Training rows as stages take them: the Arrow `Dataset` `load_sft_rows` returns, or a list of row dicts (a sample
# a test builds). Iterating either gives dicts; slice a `Dataset` with `head`, never `[:n]` (which gives columns).
Rows = Dataset | list[dict[str, Any]]


def load_sft_rows(recipe: Recipe, *, cache_dir: str | Path | None = None, key: str = "data.train") -> Dataset:
    """The recipe's training rows (first `data.limit`), or with `key="data.eval"` its held-out rows (all), as an
    Arrow `datasets.Dataset`, each a `messages` conversation or prompt/completion, all of one format (TRL prepares a
    dataset by the format of its first row).

    A JSONL file is read by `datasets`' JSON builder into memory-mapped Arrow files under `cache_dir` (default:
    `datasets/` in the sft-eval cache) and validated column by column with pyarrow compute. Only when Arrow cannot
    read the file, or a column does not pass, is it scanned line by line: that scan names the first bad line (or
    vouches for rows the columnar check could not, e.g. a column of mixed types that Arrow reads as one)."""
    named = recipe.data.train if key == "data.train" else recipe.data.eval
    assert named is not None, key  # data.eval is read only when the recipe names it
    source = recipe.resolve(named)
    path = Path(source)
    limit = recipe.data.limit if key == "data.train" else None
    if path.is_file():
        dataset = arrow_jsonl(path, cache_dir)
        if dataset is not None:
            dataset = _first(dataset, limit)
        if dataset is None or not rows_pass(dataset):
            numbered = list(read_jsonl(path, limit=limit))
            rows = validated_rows([row for _, row in numbered], [f"{path}:{line}" for line, _ in numbered])
            dataset = dataset if dataset is not None else _from_rows(rows, path)
    else:
        dataset = _first(_load_datasets_rows(source, key), limit)
        if not rows_pass(dataset):
            validated_rows(dataset, [f"{source} row {index}" for index in range(len(dataset))])
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


def validated_rows(rows: Any, where: list[str]) -> Any:
    """The row-by-row check: the first bad row is one `SftEvalError` naming its line (or row index). No rows pass
    here: `load_sft_rows` says a dataset is empty, once, whichever way it was read."""
    if not len(rows):
        return rows
    first = row_format(rows[0])
    for row, spot in zip(rows, where, strict=True):
        check_row(row, spot)
        if (kind := row_format(row)) != first:
            raise SftEvalError(
                f"{spot}: a {kind} row in a dataset whose first row ({where[0]}) is {first}: TRL prepares every "
                "row by the first one's format, so use one format throughout"
            )
    return rows


def _first(dataset: Dataset, limit: int | None) -> Dataset:
    """The first `limit` rows: a contiguous range, which `datasets` selects as a slice of the memory map."""
    return dataset if limit is None or limit >= len(dataset) else dataset.select(range(limit))


def arrow_jsonl(path: Path, cache_dir: str | Path | None) -> Dataset | None:
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
    return Dataset.from_list(rows, **MIXED_AS_JSON)


# `datasets` >= 4.8 keeps a column of mixed shapes as JSON; an older one widens it (or fails, said in one line)
MIXED_AS_JSON = (
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
