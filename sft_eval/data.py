"""Data: the SFT training rows and the evaluation questions a recipe names, validated row by row.

A bad row is reported with its file and line number before any training starts: a dataset that silently
drops or mangles rows is the kind of failure sft-eval exists to catch.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sft_eval.errors import SftEvalError
from sft_eval.hub import require_local_or_reachable
from sft_eval.recipe import Recipe


@dataclass(frozen=True)
class Question:
    question: str
    expected: str | None = None  # a checkable answer, when there is one
    kind: str = ""


def load_sft_rows(recipe: Recipe) -> list[dict[str, Any]]:
    """The recipe's training rows (first `data.limit`), each a `messages` conversation or prompt/completion, all
    of one format (TRL prepares a dataset by the format of its first row)."""
    source = recipe.resolve(recipe.data.train)
    path = Path(source)
    if path.is_file():
        numbered = list(_read_jsonl(path, limit=recipe.data.limit))
        where = [f"{path}:{line}" for line, _ in numbered]
        rows = [row for _, row in numbered]
    else:
        rows = _load_datasets_rows(source, recipe.data.limit)
        where = [f"{source} row {index}" for index in range(len(rows))]
    if not rows:
        raise SftEvalError(f"data.train: {source} has no rows: there is nothing to train on")
    first = _row_format(rows[0])
    for row, spot in zip(rows, where, strict=True):
        _check_row(row, spot)
        if (kind := _row_format(row)) != first:
            raise SftEvalError(
                f"{spot}: a {kind} row in a dataset whose first row ({where[0]}) is {first}: TRL prepares every "
                "row by the first one's format, so use one format throughout"
            )
    return rows


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


def _load_datasets_rows(source: str, limit: int | None) -> list[dict[str, Any]]:
    """A `save_to_disk` folder, or a hub dataset id when the hub is reachable (its train split)."""
    import datasets

    require_local_or_reachable(source, key="data.train", kind="dataset")
    try:
        loaded = datasets.load_from_disk(source) if Path(source).is_dir() else datasets.load_dataset(source)
    except Exception as exc:  # datasets raises many types; all mean "cannot read this dataset"
        raise SftEvalError(f"data.train: cannot load dataset {source!r}: {str(exc).splitlines()[0]}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise SftEvalError(f"data.train: {source!r} has no 'train' split (it has {', '.join(loaded)})")
        loaded = loaded["train"]
    if limit is not None:
        loaded = loaded.select(range(min(limit, len(loaded))))
    return list(loaded)


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


def _check_messages(messages: Any, where: str, key: str) -> None:
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
    ):
        raise SftEvalError(f'{where}: `{key}` must be a list of {{"role": ..., "content": ...}} objects')
    for m in messages:
        if m["role"] not in ROLES:
            usual = _OTHER_CONVENTIONS.get(m["role"].lower())
            hint = f" (ShareGPT-style? use {usual!r})" if usual else ""
            raise SftEvalError(f"{where}: unknown role {m['role']!r}{hint}; chat templates know {', '.join(ROLES)}")


def _check_row(row: dict[str, Any], where: str) -> None:
    if row.get("messages") is not None:
        messages = row["messages"]
        _check_messages(messages, where, "messages")
        if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
            raise SftEvalError(f"{where}: conversation has no assistant message to learn from")
    elif "prompt" in row or "completion" in row:
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), (str, list)) or not row.get(key):
                raise SftEvalError(f"{where}: prompt/completion row needs a non-empty `{key}`")
            if isinstance(row[key], list):
                _check_messages(row[key], where, key)
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
        for number, row in _read_jsonl(path):
            if not isinstance(row.get("question"), str) or not row["question"].strip():
                raise SftEvalError(f"{path}:{number}: needs a non-empty string `question`")
            expected = row.get("expected")
            if expected is not None and not isinstance(expected, str):
                raise SftEvalError(f"{path}:{number}: `expected` must be a string")
            questions.append(Question(row["question"], expected, str(row.get("kind", ""))))
    if not questions:
        where = recipe.eval.questions_file or "eval.questions"
        raise SftEvalError(f"{where}: no evaluation questions: a run would judge nothing; add at least one")
    return questions[: recipe.eval.limit]


def user_and_answer(row: dict[str, Any]) -> tuple[str, str]:
    """The first user prompt and the first assistant response of a row, as the lesson's table shows them."""
    if "messages" in row:
        user = next((m["content"] for m in row["messages"] if m["role"] == "user"), "")
        answer = next((m["content"] for m in row["messages"] if m["role"] == "assistant"), "")
        return user, answer
    return _as_text(row["prompt"]), _as_text(row["completion"])


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


def leaked_questions(rows: list[dict[str, Any]], questions: list[Question]) -> list[str]:
    """Evaluation questions that are also a user turn of a training row (after normalising): they measure
    memory, not the fine-tune."""
    trained = {normalise(turn) for row in rows for turn in user_turns(row)}
    return [q.question for q in questions if normalise(q.question) in trained]


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
