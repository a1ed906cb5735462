"""Chat templates: the shipped ones, a user's .jinja file, or the tokenizer's own, and rendering helpers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sft_eval.errors import SftEvalError
from sft_eval.recipe import FIXTURES_DIR

TEMPLATES_DIR = FIXTURES_DIR / "templates"

# Strings a template writes literally and a tokenizer must know as single special tokens.
_SPECIAL_LITERAL = re.compile(
    r"<\|[A-Za-z0-9_]+\|>|<\|[A-Za-z0-9_]+>|<[A-Za-z0-9_]+\|>"  # <|im_end|>, Gemma 4's <|turn> and <turn|>
    r"|<\｜[^>]*\｜>|\[/?INST\]|<start_of_turn>|<end_of_turn>"
)


def shipped_templates() -> dict[str, Path]:
    """Name -> file of every template shipped in fixtures/templates."""
    return {p.stem: p for p in sorted(TEMPLATES_DIR.glob("*.jinja"))}


def load_template(spec: str, *, tokenizer_template: str | None = None, where: str = "model.chat_template") -> str:
    """Template source for a recipe's `chat_template` value: a shipped name, a .jinja file or "tokenizer"."""
    if spec == "tokenizer":
        if not tokenizer_template:
            raise SftEvalError(
                f'{where} = "tokenizer", but the tokenizer has no chat template; '
                f"name a shipped template ({', '.join(shipped_templates())}) or a .jinja file"
            )
        return tokenizer_template
    shipped = shipped_templates()
    if spec in shipped:
        return shipped[spec].read_text(encoding="utf-8")
    path = Path(spec).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise SftEvalError(
        f"{where} = {spec!r} is neither a shipped template ({', '.join(shipped)}) nor an existing .jinja file"
    )


def special_literals(template: str) -> list[str]:
    """The special-token strings a template emits (e.g. `<|im_start|>`), in order of first use."""
    return list(dict.fromkeys(_SPECIAL_LITERAL.findall(template)))


def end_of_turn(literals: list[str]) -> str:
    """The end-of-turn token among a template's special strings (ChatML `<|im_end|>`, Llama-3 `<|eot_id|>`...)."""
    for candidate in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"):
        if candidate in literals:
            return candidate
    return literals[-1] if literals else "<|endoftext|>"


def conversation(user_message: str, system_message: str | None = None) -> list[dict[str, Any]]:
    """The lesson's message list: an optional system turn, then the user's question."""
    messages = [{"role": "system", "content": system_message}] if system_message else []
    return messages + [{"role": "user", "content": user_message}]


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]], *, enable_thinking: bool = False) -> str:
    """The string a model is served: the conversation plus the assistant header, as the template renders it."""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )
