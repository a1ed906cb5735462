"""Template checks: does the chat template render what training and serving both need, token for token?

All checks render the same probe conversation (system, two user/assistant exchanges, every content unique
so it can be found again in the rendering) through `tokenizer.apply_chat_template`, exactly as TRL's
SFTTrainer and a serving stack do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from sft_eval.audit import RAISED, CheckId, Finding, guarded, mark
from sft_eval.chat import RENDER_TIMEOUT_S, RUNAWAY, time_limit
from sft_eval.chat import render as bounded_render
from sft_eval.data import Rows, head, multi_turn_rows, rows_with_text, system_rows

SYSTEM = {"role": "system", "content": "You are a careful assistant."}
EXCHANGES = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And the capital of Italy?"},
    {"role": "assistant", "content": "It is Rome."},
]
_JINJA_LEFTOVER = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}|message\[['\"]|\bmessages?\.(role|content)\b")
_THINK_BLOCK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)
_THINK_TAGS = re.compile(r"</?think>")
_THINK_ANY = re.compile(r"<think>(?:.*?</think>)?\s*", re.DOTALL)  # closed, or opened for the model to fill


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
    findings = []
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


FAILS_TO_RENDER = "the template fails to render a multi-turn conversation"


def renders(findings: list[Finding]) -> bool:
    """False when the audit found the template cannot render the probe conversation at all (it raises): the
    checks that need a rendering are skipped. Content it drops or syntax it leaves is reported, and the other
    checks still run on what it renders."""
    raised = (FAILS_TO_RENDER, RAISED, RUNAWAY)
    return not any(f.check == CheckId.TEMPLATE_RENDER and f.message.startswith(raised) for f in findings)


def could_not_run(findings: list[Finding]) -> list[Finding]:
    """One cause, one finding: when the template does not render the probe at all (`template.render` says why), a
    check that raised on it is not a second error of its own but info that it could not run."""
    if renders(findings):
        return findings
    return [
        Finding(
            f.check,
            "info",
            f"{f.check} could not run: the chat template does not render (see template.render)",
            f"{f.message}: {f.evidence}",
        )
        if f.check != CheckId.TEMPLATE_RENDER and f.severity == "error" and f.message.startswith(RAISED)
        else f
        for f in findings
    ]


def check_render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]]) -> list[Finding]:
    """The conversation renders, multi-turn, every content appears, and no Jinja or role syntax is left."""
    try:
        text = render(tokenizer, messages, generation_prompt=False)
        render(tokenizer, messages[:-1], generation_prompt=True)
    except (TemplateError, TypeError, ValueError) as exc:
        return [
            Finding(
                CheckId.TEMPLATE_RENDER,
                "error",
                FAILS_TO_RENDER,
                f"{type(exc).__name__}: {exc}",
            )
        ]
    findings = []
    for message in messages:
        if message["content"] not in text:
            findings.append(
                Finding(
                    CheckId.TEMPLATE_RENDER,
                    "error",
                    f"the {message['role']} message's content is missing from the rendering: the model never sees it",
                    f"content {message['content']!r} not in {text!r}",
                )
            )
    leftover = _JINJA_LEFTOVER.search(text)
    if leftover:
        findings.append(
            Finding(
                CheckId.TEMPLATE_RENDER,
                "error",
                "template syntax or role placeholders are left in the rendered text",
                mark(text, leftover.start()),
            )
        )
    return findings


def _scaffolding(text: str, messages: list[dict[str, Any]]) -> str:
    """The rendering with every message content replaced by a marker: what the template itself writes."""
    for message in messages:
        text = text.replace(message["content"], "\x00", 1)
    return text


def check_whitespace(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]]) -> list[Finding]:
    """Indentation or space-only lines leaking from template source; spaces before an end-of-turn token."""
    text = render(tokenizer, messages, generation_prompt=False)
    scaffold = _scaffolding(text, messages)
    findings = []
    leak = re.search(r"(?m)^(?:[ \t]+\S|[ \t]+$)", scaffold)
    if leak:
        findings.append(
            Finding(
                CheckId.TEMPLATE_WHITESPACE,
                "error",
                "indentation from the template source leaks into the rendered text; the model learns it as output",
                mark(scaffold.replace("\x00", "…"), leak.start()),
            )
        )
    blank = re.search(r"\x00[ \t]*\n[ \t]*\n(?!\x00)", scaffold)  # content, blank line, then template text
    if blank:
        findings.append(
            Finding(
                CheckId.TEMPLATE_WHITESPACE,
                "warning",
                "a blank line follows a message's content: the template's source layout leaks into the text",
                mark(scaffold.replace("\x00", "…"), blank.start() + 1),
            )
        )
    eos = tokenizer.eos_token
    if eos:
        trailing = re.search(r"[ \t]+" + re.escape(eos), text)
        if trailing:
            findings.append(
                Finding(
                    CheckId.TEMPLATE_WHITESPACE,
                    "warning",
                    f"whitespace before the end-of-turn token {eos!r}: the model must learn to emit it before stopping",
                    mark(text, trailing.start()),
                )
            )
    return findings


def _assistant_turns(messages: list[dict[str, Any]]) -> list[int]:
    return [i for i, m in enumerate(messages) if m["role"] == "assistant"]


def check_generation_prompt(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], enable_thinking: bool = False
) -> list[Finding]:
    """`add_generation_prompt=True` must append the assistant header that training puts before an answer."""
    i = _assistant_turns(messages)[0]
    before = render(tokenizer, messages[:i], generation_prompt=False, enable_thinking=enable_thinking)
    prompt = render(tokenizer, messages[:i], generation_prompt=True, enable_thinking=enable_thinking)
    trained = render(tokenizer, messages[: i + 1], generation_prompt=False, enable_thinking=enable_thinking)
    content = messages[i]["content"]
    cue_in_user_turn = trained.startswith(before) and not trained[len(before) :].split(content)[0].strip()
    if prompt == before and cue_in_user_turn:
        # Mistral's [/INST] closes the user turn: no header is needed. But a template that writes the assistant
        # header after every turn, whatever add_generation_prompt says, also writes it after the last answer.
        question = messages[i - 1]["content"] if i and messages[i - 1]["content"] in before else None
        cue = before[before.rindex(question) + len(question) :] if question else ""
        after_answer = trained[trained.rindex(content) + len(content) :]
        header = cue.replace(tokenizer.eos_token or "\x00", "").strip()  # an end-of-turn token is not a header
        if header and after_answer.rstrip().endswith(cue.rstrip()):
            return [
                Finding(
                    CheckId.TEMPLATE_GENERATION_PROMPT,
                    "error",
                    "the template writes the assistant header after every turn, whatever add_generation_prompt "
                    "says: training puts a header after each answer, so the model learns to open a new turn "
                    "instead of stopping",
                    f"after the answer training has {after_answer!r}; after the question {cue!r}",
                )
            ]
        return []
    if prompt == before:
        return [
            Finding(
                CheckId.TEMPLATE_GENERATION_PROMPT,
                "error",
                "add_generation_prompt=True does not change the rendering: the served prompt has no assistant header, "
                "so the model continues the user's turn",
                f"prompt ends {prompt[-60:]!r}",
            )
        ]
    if not (prompt.startswith(before) and trained.startswith(before) and content in trained[len(before) :]):
        return []  # not prefix-shaped: template.prefix reports it with evidence
    added = prompt[len(before) :]
    header = trained[len(before) : trained.index(content, len(before))]
    if _THINK_ANY.sub("", added) == _THINK_ANY.sub("", header) or added.startswith(header):
        return []
    if header.startswith(added) and header[len(added) :].isspace():
        # the prompt stops before whitespace that training writes ahead of the answer: right for BPE, where the
        # space belongs to the answer's first token; whether the tokens agree is template.prefix's one verdict
        return []
    return [
        Finding(
            CheckId.TEMPLATE_GENERATION_PROMPT,
            "error",
            "the generation prompt does not end with the assistant header that training puts before an answer",
            f"generation prompt adds {added!r}; training has {header!r} before the answer",
        )
    ]


def check_prefix(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], enable_thinking: bool = False
) -> list[Finding]:
    """For every assistant turn i, render(messages[:i], prompt) must be a token prefix of render(messages[:i+1])."""
    findings = []
    for i in _assistant_turns(messages):
        prompt = render(tokenizer, messages[:i], generation_prompt=True, enable_thinking=enable_thinking)
        trained = render(tokenizer, messages[: i + 1], generation_prompt=False, enable_thinking=enable_thinking)
        turn = f"assistant turn {_assistant_turns(messages).index(i) + 1}"
        if not trained.startswith(prompt):
            spot = first_difference(prompt, trained)
            if "think>" in prompt[spot - 10 :] + trained[spot - 10 : spot + 40]:
                continue  # a think-block difference: template.thinking reports it
            findings.append(
                Finding(
                    CheckId.TEMPLATE_PREFIX,
                    "error",
                    f"{turn}: the served prompt is not a prefix of the training text; the model is served a string "
                    "it never saw in training",
                    f"served {mark(prompt, spot)}; trained {mark(trained, spot)}",
                )
            )
            continue
        merged = tokens_merge(tokenizer, prompt, trained)
        if merged:
            findings.append(
                Finding(
                    CheckId.TEMPLATE_PREFIX,
                    "error",
                    f"{turn}: the strings are prefixes but the tokens are not: BPE merges across the prompt/answer "
                    "boundary, so the served prompt ends in a token training never put there",
                    merged,
                )
            )
    return findings


def tokens_merge(tokenizer: PreTrainedTokenizerBase, prompt: str, trained: str) -> str:
    """Evidence when `prompt`, a string prefix of `trained`, is not a token prefix of it (BPE merges across the
    boundary); empty when its tokens are."""
    served_ids, trained_ids = token_ids(tokenizer, prompt), token_ids(tokenizer, trained)
    if trained_ids[: len(served_ids)] == served_ids:
        return ""
    k = first_difference(served_ids, trained_ids)
    return (
        f"served tokens {tokenizer.convert_ids_to_tokens(served_ids[max(0, k - 3) : k + 2])} vs trained "
        f"{tokenizer.convert_ids_to_tokens(trained_ids[max(0, k - 3) : k + 3])} (differ at token {k})"
    )


def check_double_bos(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]]) -> list[Finding]:
    """A rendered prompt tokenized the lesson's way (`tokenizer(prompt)`) must not start with two BOS tokens."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
    prompt = render(tokenizer, messages[: first_user + 1], generation_prompt=True)  # a prompt serving sends
    ids = tokenizer(prompt)["input_ids"]  # add_special_tokens=True: what most inference code does
    if ids[:2] == [bos, bos]:
        return [
            Finding(
                CheckId.TEMPLATE_DOUBLE_BOS,
                "error",
                f"the template writes {tokenizer.bos_token!r} and the tokenizer adds another: every prompt starts "
                "with two BOS tokens; tokenize rendered text with add_special_tokens=False",
                f"first tokens {tokenizer.convert_ids_to_tokens(ids[:4])}",
            )
        ]
    return []


def end_of_turn_token(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]]) -> tuple[int | None, str]:
    """The first non-blank token the template writes after the first assistant answer, and the text around it."""
    text = render(tokenizer, messages, generation_prompt=False)
    content = messages[_assistant_turns(messages)[0]]["content"]
    end = text.index(content) + len(content)
    for token in token_ids(tokenizer, text[end:]):
        if tokenizer.decode([token]).strip():
            return token, mark(text, end)
    return None, mark(text, end)


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The token the template writes to end an assistant turn (a system + user + assistant conversation)."""
    return end_of_turn_token(tokenizer, [SYSTEM, *EXCHANGES[:2]])[0]


def check_stop_token(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], generation_eos: list[int] | None = None
) -> list[Finding]:
    """An assistant turn must end with a token generation stops at. `model.generate`, vLLM and sft-eval's engine
    stop at `generation_config.eos_token_id` when the checkpoint has one (vLLM also at the tokenizer's eos); code
    that reads only `tokenizer.eos_token_id` stops there alone. Error where nothing would stop; a warning naming
    the stacks that would run on where only some stop."""
    token, where = end_of_turn_token(tokenizer, messages)
    eos = tokenizer.eos_token_id
    configured = "" if generation_eos is None else f", generation_config.eos_token_id {generation_eos}"
    evidence = f"{where}; tokenizer eos {tokenizer.eos_token!r} (id {eos}){configured}"
    described = "nothing" if token is None else f"{tokenizer.convert_ids_to_tokens(token)!r} (id {token})"
    in_config = generation_eos is not None and token in generation_eos
    if token is not None and token == eos and (generation_eos is None or in_config):
        return []
    if token is not None and in_config:  # generate, vLLM and sft-eval stop; only tokenizer-eos loops run on
        return [
            Finding(
                CheckId.TEMPLATE_STOP_TOKEN,
                "warning",
                f"an assistant turn ends with {described}: model.generate, vLLM and sft-eval stop there "
                "(generation_config.json), but code that stops on tokenizer.eos_token_id alone (hand-written "
                "loops, the lesson's) runs on; set the tokenizer's eos_token to it",
                evidence,
            )
        ]
    if token is not None and token == eos:  # vLLM and eos-only loops stop; generate reads generation_config
        return [
            Finding(
                CheckId.TEMPLATE_STOP_TOKEN,
                "warning",
                f"an assistant turn ends with {described}, the tokenizer's eos, but generation_config.json does not "
                "list it: model.generate runs on past the answer (vLLM and tokenizer-eos loops stop); add it to "
                "generation_config.eos_token_id",
                evidence,
            )
        ]
    return [
        Finding(
            CheckId.TEMPLATE_STOP_TOKEN,
            "error",
            f"an assistant turn ends with {described}, which generation does not stop at: the model will never stop",
            evidence,
        )
    ]


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
    turns = _assistant_turns(messages)
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
        for n, i in enumerate(_assistant_turns(messages)[:-1], start=1):
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
            fix = _trl_training_template(tokenizer)
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


def check_prefix_preserving(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    rows: Rows | None = None,
    enable_thinking: bool = False,
) -> list[Finding]:
    """A conversation's first turns must render the same whatever follows them: rendering up to assistant turn k is
    a prefix of rendering the whole conversation. Otherwise multi-turn SFT (each assistant turn trained in one
    sequence) trains earlier turns on text the model never sees when they are the last turn at inference. An error
    when the recipe's rows have multi-turn conversations, a warning for a template audited alone. A think block
    kept or dropped (Qwen3) is template.thinking's finding, and text after the turn's end-of-turn token is never
    generated, so neither counts here. TRL's `get_training_chat_template` names the fixed template where it has one."""
    full = render(tokenizer, messages, generation_prompt=False, enable_thinking=enable_thinking)
    turns = _assistant_turns(messages)[:-1]
    for n, i in enumerate(turns, start=1):
        earlier = render(tokenizer, messages[: i + 1], generation_prompt=False, enable_thinking=enable_thinking)
        if full.startswith(earlier):
            continue
        spot = first_difference(earlier, full)
        if "think>" in earlier[spot - 10 : spot + 40] + full[spot - 10 : spot + 40]:
            continue  # a think block kept or dropped: template.thinking reports it (one cause, one finding)
        answered = earlier.rindex(messages[i]["content"]) + len(messages[i]["content"])
        token, _ = end_of_turn_token(tokenizer, messages[: i + 1])
        closing = tokenizer.decode([token]) if token is not None else ""
        if closing and closing in earlier[answered:spot]:
            continue  # only what follows the end-of-turn token differs (Phi-3's final eos): generation stops first
        multi_turn = multi_turn_rows(rows)
        fix = _trl_training_template(tokenizer)
        said = f"; TRL has a prefix-preserving version: trl.chat_template_utils.{fix}" if fix else ""
        scope = f"{multi_turn} of the recipe's rows are multi-turn: they" if multi_turn else "multi-turn data"
        return [
            Finding(
                CheckId.TEMPLATE_PREFIX_PRESERVING,
                "error" if multi_turn else "warning",
                f"assistant turn {n} renders differently once the conversation goes on: {scope} would train "
                f"earlier turns on text never served when they are the last turn{said}",
                f"as the last turn {mark(earlier, spot)}; followed by more {mark(full, spot)}",
            )
        ]
    return []


def _trl_training_template(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """The name of TRL's training version of this template (`qwen3_training_chat_template`...), when TRL has one."""
    from trl import chat_template_utils

    try:
        fixed = chat_template_utils.get_training_chat_template(tokenizer)
    except Exception:  # TRL raises for templates it has no training version of
        return None
    names = [n for n in dir(chat_template_utils) if n.endswith("_training_chat_template")]
    return next((n for n in names if getattr(chat_template_utils, n) == fixed), None) if fixed else None


def render_at(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], moment: datetime) -> str:
    """The generation prompt as the template renders it when `strftime_now` reads `moment`: transformers' compiled
    template (its sandbox, extensions and globals), with that one global replaced; bounded like every render.
    transformers passes only plain data to templates, so a function cannot be handed over as a variable."""
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
    except ImportError:  # a transformers without it: the real clock (a random template is still caught)
        return bounded_render(tokenizer, messages, add_generation_prompt=True)
    source = tokenizer.get_chat_template()  # the default of a tokenizer with named templates
    template = _compile_jinja_template(source).environment.from_string(
        source, globals={"strftime_now": moment.strftime}
    )
    with time_limit(RENDER_TIMEOUT_S):
        return template.render(messages=messages, add_generation_prompt=True, **tokenizer.special_tokens_map)


# Two far-apart moments: a template that stamps the date (strftime_now) renders differently at each.
_MOMENTS = (datetime(2024, 1, 15, 9, 30, 5), datetime(2025, 7, 4, 18, 45, 50))


def check_nondeterministic(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]]) -> list[Finding]:
    """The same conversation must render to the same text: twice at one moment, and on two dates. transformers
    gives templates `strftime_now`; one that stamps today's date into every prompt trains on one day's text and is
    served another's, and golden outputs change overnight. Each moment is given to the template as its own
    `strftime_now` (a template-level global in transformers' own Jinja environment), so nothing is patched."""

    asked = messages[: _assistant_turns(messages)[-1]]  # the served prompt of the last answer

    def at(moment: datetime) -> str:
        return render_at(tokenizer, asked, moment)

    first, again, other = at(_MOMENTS[0]), at(_MOMENTS[0]), at(_MOMENTS[1])
    if first != again:
        spot = first_difference(first, again)
        return [
            Finding(
                CheckId.TEMPLATE_NONDETERMINISTIC,
                "error",
                "the template renders the same conversation differently each time: training text and served "
                "prompts are random",
                f"first {mark(first, spot)}; again {mark(again, spot)}",
            )
        ]
    if first != other:
        spot = first_difference(first, other)
        return [
            Finding(
                CheckId.TEMPLATE_NONDETERMINISTIC,
                "warning",
                "the template writes the current date or time (strftime_now): a prompt rendered on another day is "
                "another prompt, so training and serving differ and golden outputs change overnight; pass a fixed "
                "date (its date variable) or remove it",
                f"on {_MOMENTS[0]:%Y-%m-%d} {mark(first, spot)}; on {_MOMENTS[1]:%Y-%m-%d} {mark(other, spot)}",
            )
        ]
    return []


def check_special_in_content(tokenizer: PreTrainedTokenizerBase, rows: Any) -> list[Finding]:
    """Message text containing a special token's literal string forges a turn boundary when tokenized. On a
    `Dataset` the message contents are searched column-wise (pyarrow's substring match), so a million rows cost
    seconds; only rows with a hit are read as Python."""
    specials = [t for t in dict.fromkeys(tokenizer.all_special_tokens) if t]
    findings = []
    for index in rows_with_text(rows, specials):
        for message in rows[index].get("messages") or []:
            content = message.get("content")
            if not isinstance(content, str):
                continue
            for special in specials:
                position = content.find(special)
                if position >= 0:
                    findings.append(
                        Finding(
                            CheckId.TEMPLATE_SPECIAL_IN_CONTENT,
                            "error",
                            f"row {index}: a {message.get('role')} message contains the special token {special!r}; "
                            "tokenized, it becomes a real turn boundary",
                            mark(content, position),
                        )
                    )
    return findings


def _conversation_it_shows(
    tokenizer: PreTrainedTokenizerBase, candidates: list[list[dict[str, Any]]]
) -> list[dict[str, Any]] | None:
    """The first candidate conversation whose every message content appears in its rendering (the probe, or the
    probe without its system message for a template that drops it); None when none does (a multimodal template
    that renders only typed content parts)."""
    for messages in candidates:
        try:
            text = render(tokenizer, messages, generation_prompt=False)
        except Exception:  # noqa: S112 - a candidate the template cannot render is not the one to check on
            continue
        if all(m["content"] in text for m in messages):
            return messages
    return None


def audit_template(
    tokenizer: PreTrainedTokenizerBase,
    *,
    enable_thinking: bool = False,
    generation_eos: list[int] | None = None,
    rows: Rows | None = None,
    system_message: str = "",
) -> list[Finding]:
    """Every template check on the tokenizer's chat template. A template that raises on the probe stops there; one
    that renders it wrong (drops a message, leaves syntax) is reported and the other checks still run, those that
    find messages in the text on the conversation whose contents it does render."""
    if not tokenizer.chat_template:
        return [Finding(CheckId.TEMPLATE_RENDER, "error", "the tokenizer has no chat template", "")]
    messages, findings = probe_conversation(tokenizer, rows, system_message)
    findings += guarded(CheckId.TEMPLATE_RENDER, lambda: check_render(tokenizer, messages))
    if not renders(findings):  # it raises on the probe: every other check would only raise again
        return findings
    shown = _conversation_it_shows(tokenizer, [messages, list(EXCHANGES)])
    checks: list[tuple[CheckId, Callable[[], list[Finding]]]] = [
        (CheckId.TEMPLATE_DOUBLE_BOS, lambda: check_double_bos(tokenizer, messages)),
        (CheckId.TEMPLATE_SPECIAL_IN_CONTENT, lambda: check_special_in_content(tokenizer, rows or [])),
        (CheckId.TEMPLATE_NONDETERMINISTIC, lambda: check_nondeterministic(tokenizer, messages)),
    ]
    if shown is not None:  # checks that locate each message's content in the rendered text
        checks += [
            (CheckId.TEMPLATE_WHITESPACE, lambda: check_whitespace(tokenizer, shown)),
            (CheckId.TEMPLATE_GENERATION_PROMPT, lambda: check_generation_prompt(tokenizer, shown, enable_thinking)),
            (CheckId.TEMPLATE_PREFIX, lambda: check_prefix(tokenizer, shown, enable_thinking)),
            (CheckId.TEMPLATE_STOP_TOKEN, lambda: check_stop_token(tokenizer, shown, generation_eos)),
            (CheckId.TEMPLATE_THINKING, lambda: check_thinking(tokenizer, shown, enable_thinking, rows)),
            (
                CheckId.TEMPLATE_PREFIX_PRESERVING,
                lambda: check_prefix_preserving(tokenizer, shown, rows, enable_thinking),
            ),
        ]
    for check, run in checks:  # each on its own: one that a template breaks does not stop the others
        findings += guarded(check, run)
    return findings
