"""The thinking check: the think block around an answer must be the same when it is served and when it is trained
(`template.thinking`)."""

from __future__ import annotations

import re
from typing import Any

from transformers import PreTrainedTokenizerBase

from sft_eval.audit import CheckId, Finding
from sft_eval.audit.rendering import assistant_turns, render, trl_training_template
from sft_eval.data import Rows, head, multi_turn_rows

_THINK_BLOCK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)


_THINK_TAGS = re.compile(r"</?think>")


def _think_blocks(text: str) -> list[str]:
    return _THINK_BLOCK.findall(text)


def _header(text: str, messages: list[dict[str, Any]], i: int) -> str:
    """What the rendering `text` writes between assistant turn i's question and its answer."""
    user = messages[i - 1]["content"]
    start = text.index(user) + len(user)
    return text[start : text.index(messages[i]["content"], start)]


def _rows_reason(rows: Rows | None) -> bool:
    """Whether any of the first rows' assistant messages carries reasoning (`reasoning_content`)."""
    return any(
        isinstance(m, dict) and m.get("reasoning_content")
        for r in head(rows or [], 100)
        for m in r.get("messages") or []
    )


def check_thinking(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    enable_thinking: bool = False,
    rows: Rows | None = None,
) -> list[Finding]:
    """The think block around an answer must be the same when it is served and when it is trained. Three causes,
    one finding each:

    - served differently: the generation prompt writes a think block that training does not put before the answer
      when that turn is the last (every row trains its last turn so, single-turn rows included): an error under
      the recipe's `enable_thinking`, a warning under the other value;
    - thinking served, none trained: with `enable_thinking` on, the served prompt leaves the think block to the
      model, but rows without reasoning train an empty one before every answer, so the model learns to close it at
      once: an error unless the rows carry `reasoning_content`;
    - dropped from history: an earlier assistant turn is rendered with another think block once the conversation
      goes on (Qwen3 drops them), so multi-turn rows train earlier turns on text never served: an error when the
      recipe's rows are multi-turn, else a warning (a bare template audit has no rows and assumes single-turn).
    """
    source = tokenizer.chat_template or ""
    if "think" not in source:
        return []
    turns = assistant_turns(messages)
    findings = []
    for value in (enable_thinking, not enable_thinking):
        for n, i in enumerate(turns, start=1):
            before = render(tokenizer, messages[:i], generation_prompt=False, enable_thinking=value)
            prompt = render(tokenizer, messages[:i], generation_prompt=True, enable_thinking=value)
            as_last = render(tokenizer, messages[: i + 1], generation_prompt=False, enable_thinking=value)
            served = _think_blocks(prompt[len(before) :]) if prompt.startswith(before) else []
            trained = _think_blocks(_header(as_last, messages, i))
            if served != trained and not as_last.startswith(prompt):
                findings.append(
                    Finding(
                        CheckId.TEMPLATE_THINKING,
                        "error" if value == enable_thinking else "warning",
                        f"enable_thinking={value}: assistant turn {n} is served with think block {served or 'none'} "
                        f"but trained with {trained or 'none'}",
                        f"served prompt adds {prompt[len(before) :]!r}; training has "
                        f"{_header(as_last, messages, i)!r} before the answer",
                    )
                )
                break
            empty = trained and not _THINK_TAGS.sub("", "".join(trained)).strip()
            if value and value == enable_thinking and empty and not served and not _rows_reason(rows):
                findings.append(
                    Finding(
                        CheckId.TEMPLATE_THINKING,
                        "error",
                        "enable_thinking=True serves the model an open turn to reason in, but the rows carry no "
                        f"reasoning: training writes the empty think block {trained[0]!r} before every answer, so the "
                        "model learns to close it at once; set enable_thinking = false, or add reasoning_content to "
                        "the rows",
                        f"served prompt adds {prompt[len(before) :]!r}; training has "
                        f"{_header(as_last, messages, i)!r} before the answer",
                    )
                )
                break
    findings += _think_block_dropped(tokenizer, messages, enable_thinking, rows)
    return findings


def _think_block_dropped(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], enable_thinking: bool, rows: Rows | None
) -> list[Finding]:
    """One finding when an earlier assistant turn's think block changes once the conversation goes on."""
    for value in (enable_thinking, not enable_thinking):
        full = render(tokenizer, messages, generation_prompt=False, enable_thinking=value)
        for n, i in enumerate(assistant_turns(messages)[:-1], start=1):
            as_last = render(tokenizer, messages[: i + 1], generation_prompt=False, enable_thinking=value)
            alone, later = _header(as_last, messages, i), _header(full, messages, i)
            if _think_blocks(alone) == _think_blocks(later):
                continue
            multi_turn = multi_turn_rows(rows)
            scope = (
                f"{multi_turn} of the recipe's rows are multi-turn: they train"
                if multi_turn
                else ("the recipe's rows are single-turn" if rows is not None else "no rows given, single-turn assumed")
                + "; multi-turn rows would train"
            )
            fix = trl_training_template(tokenizer)
            said = f"; TRL has a prefix-preserving version: trl.chat_template_utils.{fix}" if fix else ""
            return [
                Finding(
                    CheckId.TEMPLATE_THINKING,
                    "error" if multi_turn and value == enable_thinking else "warning",
                    f"enable_thinking={value}: assistant turn {n} has think block {_think_blocks(alone) or 'none'} as "
                    f"the last turn but {_think_blocks(later) or 'none'} once the conversation goes on: {scope} "
                    f"earlier turns on text never served{said}",
                    f"as the last turn {alone!r} before the answer; followed by more {later!r}",
                )
            ]
    return []
