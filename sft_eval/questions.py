"""What a recipe asks the models: its evaluation questions (inline or a JSONL file), its tool items (conversations
with tools, expecting a call or a text) and its general text, each line checked and a bad one named."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sft_eval.conversations import check_messages, check_tool_calls, read_jsonl, row_tools, tool_names
from sft_eval.errors import SftEvalError
from sft_eval.recipe import Recipe, read_text


@dataclass(frozen=True)
class Question:
    question: str
    expected: str | None = None  # a checkable answer, when there is one
    category: str = ""  # the questions file's `category` (or its older name `kind`): metrics are broken down by it
    id: str = ""  # the questions file's `id`, when it gives one: what `compare` pairs questions by (else the text)
    cluster: str = ""  # the questions file's `cluster` (questions from one source): compare's clustered errors


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
        for number, row in read_jsonl(path):
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
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        offered = row_tools(row, where)
        tools = tool_names(offered)
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages:
            raise SftEvalError(f"{where}: needs `messages`, the conversation to ask")
        check_messages(messages, where, "messages", tools)
        if messages[-1]["role"] not in ("user", "tool"):
            raise SftEvalError(f"{where}: the conversation must end with the user's question or a tool's result")
        call, expected = row.get("expected_call"), row.get("expected")
        if (call is None) == (expected is None):
            raise SftEvalError(f"{where}: give one of `expected_call` ({{name, arguments}}) or `expected` (a text)")
        if call is not None:
            check_tool_calls([call], f"{where}: `expected_call`", tools)
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


def load_general_text(path: str | Path) -> list[str]:
    """`eval.general_text`'s documents: a .txt file's non-blank lines, or a .jsonl file's `text` fields (each a
    non-empty string, else one line naming the file and line)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        documents = []
        for number, row in read_jsonl(path):
            if not isinstance(row.get("text"), str) or not row["text"].strip():
                raise SftEvalError(f"eval.general_text: {path}:{number}: needs a non-empty string `text`")
            documents.append(row["text"])
    else:
        documents = [line for line in read_text(path).splitlines() if line.strip()]
    if not documents:
        raise SftEvalError(f"eval.general_text: {path} holds no text")
    return documents
