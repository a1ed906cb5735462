"""The probe conversation every template check renders, and the rendering helpers they share: a conversation
rendered through the template exactly as TRL's SFTTrainer and a serving stack render it, token ids, the first
place two renderings part."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from sft_eval.audit import CheckId, Finding
from sft_eval.chat import render as bounded_render
from sft_eval.data import Rows, system_rows

SYSTEM = {"role": "system", "content": "You are a careful assistant."}


EXCHANGES = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And the capital of Italy?"},
    {"role": "assistant", "content": "It is Rome."},
]


def render(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    *,
    generation_prompt: bool,
    enable_thinking: bool = False,
) -> str:
    return bounded_render(tokenizer, messages, add_generation_prompt=generation_prompt, enable_thinking=enable_thinking)


def first_difference(a: Sequence[Any], b: Sequence[Any]) -> int:
    """The first position where two texts (or token lists) differ; the shorter one's length when it is a prefix."""
    return next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a rendered string as TRL tokenizes it (the template supplies any special tokens)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def probe_conversation(
    tokenizer: PreTrainedTokenizerBase, rows: Rows | None = None, system_message: str = ""
) -> tuple[list[dict[str, Any]], list[Finding]]:
    """The probe with a system message, or without one when the template refuses system messages: an error when
    the recipe sends one (rows with a system message, or `eval.system_message`), else a warning."""
    findings: list[Finding] = []
    try:
        render(tokenizer, [SYSTEM, *EXCHANGES], generation_prompt=False)
        return [SYSTEM, *EXCHANGES], findings
    except Exception as exc:  # whatever a user's template raises on a system message
        try:
            render(tokenizer, list(EXCHANGES), generation_prompt=False)
        except Exception:  # it fails without one too (a syntax error...): not about system messages; see render
            return list(EXCHANGES), findings
        with_system = system_rows(rows)
        if with_system:
            said = f", and {with_system} of the recipe's rows have one: training fails on them"
        elif system_message:
            said = ", and the recipe's eval.system_message sends one: every served prompt fails"
        else:
            said = "; system prompts in data or at serving time will fail"
        findings.append(
            Finding(
                CheckId.TEMPLATE_RENDER,
                "error" if with_system or system_message else "warning",
                f"the template refuses a system message{said}",
                f"{type(exc).__name__}: {exc}",
            )
        )
    return list(EXCHANGES), findings


def assistant_turns(messages: list[dict[str, Any]]) -> list[int]:
    return [i for i, m in enumerate(messages) if m["role"] == "assistant"]


def trl_training_template(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The name of TRL's training version of this template (`qwen3_training_chat_template`...), when TRL has one."""
    from trl import chat_template_utils

    try:
        fixed = chat_template_utils.get_training_chat_template(tokenizer)
    except Exception:  # TRL raises for templates it has no training version of
        return None
    names = [n for n in dir(chat_template_utils) if n.endswith("_training_chat_template")]
    return next((n for n in names if getattr(chat_template_utils, n) == fixed), None) if fixed else None
