"""Chat templates: the shipped ones, a user's .jinja file, or the tokenizer's own, and rendering helpers."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sft_eval.errors import SftEvalError
from sft_eval.recipe import FIXTURES_DIR, read_text

TEMPLATES_DIR = FIXTURES_DIR / "templates"
_JINJA_TAG = re.compile(r"\{\{|\{%")

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
        source = read_text(path)
        if not _JINJA_TAG.search(source):
            raise SftEvalError(
                f"{where} = {spec!r}: {path} has no Jinja tag ({{{{ }}}} or {{% %}}), so it renders every "
                "conversation as the same text; name a chat template file"
            )
        return source
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


# A user's template is code: it can loop or write without end. Every render sft-eval does is bounded in time
# (on the main thread, where a timer signal can stop it) and in size, then reported, never waited on.
RENDER_TIMEOUT_S = float(os.environ.get("SFT_EVAL_RENDER_TIMEOUT_S", "10"))
RENDER_MAX_CHARS = 1 << 20  # beyond the conversation's own text; a real template adds a few hundred characters


RUNAWAY = "render stopped:"


class RenderRunaway(SftEvalError):
    """A chat template render that ran past the time or size limit (a loop, a huge output); its message starts
    with `RUNAWAY`."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise `RenderRunaway` in this block after `seconds` (main thread, POSIX timers; elsewhere unbounded)."""
    timer_free = signal.getitimer(signal.ITIMER_REAL)[0] == 0 if hasattr(signal, "setitimer") else False
    if not timer_free or threading.current_thread() is not threading.main_thread():
        yield  # another timer runs (an outer limit, pytest-timeout), or no signals here: render unbounded
        return

    def stop(signum: int, frame: Any) -> None:
        raise RenderRunaway(
            f"{RUNAWAY} the chat template was still rendering after {seconds:g} s (a loop that never ends?)"
        )

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def render(tokenizer: Any, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    """`tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)`, stopped with `RenderRunaway` after
    `RENDER_TIMEOUT_S` ($SFT_EVAL_RENDER_TIMEOUT_S) or when the text outgrows the conversation by
    `RENDER_MAX_CHARS`. Any other error the template raises passes through unchanged."""
    with time_limit(RENDER_TIMEOUT_S):
        text = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    content = sum(len(m["content"]) for m in messages if isinstance(m.get("content"), str))
    if isinstance(text, str) and len(text) > content + RENDER_MAX_CHARS:
        raise RenderRunaway(
            f"{RUNAWAY} the chat template rendered {len(text):,} characters for a conversation of {content:,}: "
            f"over the limit of {RENDER_MAX_CHARS:,} more"
        )
    return text


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]], *, enable_thinking: bool = False) -> str:
    """The string a model is served: the conversation plus the assistant header, as the template renders it. A
    template that fails on it is one `SftEvalError` (bad input), not a traceback from the middle of a run."""
    try:
        return render(tokenizer, messages, add_generation_prompt=True, enable_thinking=enable_thinking)
    except Exception as exc:  # anything a user's template raises
        question = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        raise SftEvalError(f"model.chat_template on the question {question[:60]!r}: {template_failure(exc)}") from None


def render_conversation(tokenizer: Any, messages: list[dict[str, Any]], *, enable_thinking: bool = False) -> str:
    """A whole conversation as training renders it (no generation prompt); a template that fails on it is one
    `SftEvalError`, as in `render_prompt`."""
    try:
        return render(tokenizer, messages, enable_thinking=enable_thinking)
    except Exception as exc:  # anything a user's template raises
        question = next((m["content"] for m in messages if m.get("role") == "user"), "")
        raise SftEvalError(f"model.chat_template on the question {question[:60]!r}: {template_failure(exc)}") from None


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The ids an answer ends with: the template's end-of-turn token where the vocabulary has it, and the
    tokenizer's eos."""
    literal = end_of_turn(special_literals(tokenizer.chat_template or ""))
    found = tokenizer.convert_tokens_to_ids(literal) if literal in tokenizer.get_vocab() else None
    return [t for t in dict.fromkeys([found, tokenizer.eos_token_id]) if t is not None]


def template_failure(exc: Exception) -> str:
    """What a chat template's exception says, in one line, with the template line where Jinja gives one."""
    if isinstance(exc, RenderRunaway):
        return str(exc)
    line = getattr(exc, "lineno", None)
    where = f" at template line {line}" if line else ""
    reason = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"the chat template raised {type(exc).__name__}{where}: {reason}"


# Rows rendered up front before a run: a template that fails on the recipe's data fails on the first ones.
RENDER_CHECK_ROWS = 1000


def check_rows_render(tokenizer: Any, rows: Any, *, where: str = "data.train") -> None:
    """Render the first `RENDER_CHECK_ROWS` conversational rows with the chat template, bounded, as TRL will
    before training: a template that raises, loops or explodes on the recipe's own rows is one `SftEvalError`
    naming the row, instead of a traceback from deep inside the trainer's dataset preparation."""
    for index in range(min(len(rows), RENDER_CHECK_ROWS)):
        row = rows[index]
        if "messages" in row and row["messages"] is not None:
            messages = row["messages"]
        elif isinstance(row.get("prompt"), list) and isinstance(row.get("completion"), list):
            messages = row["prompt"] + row["completion"]
        else:
            continue  # plain text prompt/completion: no template involved
        try:
            render(tokenizer, messages)
        except Exception as exc:  # anything a user's template raises, said once with the row it failed on
            raise SftEvalError(f"model.chat_template on {where} row {index + 1}: {template_failure(exc)}") from None
