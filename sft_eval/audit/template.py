"""Template checks: does the chat template render what training and serving both need, token for token?

All checks render the same probe conversation (system, two user/assistant exchanges, every content unique
so it can be found again in the rendering) through `tokenizer.apply_chat_template`, exactly as TRL's
SFTTrainer and a serving stack do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from sft_eval.audit import RAISED, CheckId, Finding, guarded, mark
from sft_eval.audit.rendering import EXCHANGES as EXCHANGES
from sft_eval.audit.rendering import SYSTEM as SYSTEM
from sft_eval.audit.rendering import (
    assistant_turns,
    first_difference,
    probe_conversation,
    render,
    token_ids,
    trl_training_template,
)
from sft_eval.audit.thinking import check_thinking
from sft_eval.chat import RENDER_TIMEOUT_S, RUNAWAY, time_limit
from sft_eval.chat import render as bounded_render
from sft_eval.data import Rows, multi_turn_rows, rows_with_text

_JINJA_LEFTOVER = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}|message\[['\"]|\bmessages?\.(role|content)\b")
_THINK_ANY = re.compile(r"<think>(?:.*?</think>)?\s*", re.DOTALL)  # closed, or opened for the model to fill


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


def check_generation_prompt(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], enable_thinking: bool = False
) -> list[Finding]:
    """`add_generation_prompt=True` must append the assistant header that training puts before an answer."""
    i = assistant_turns(messages)[0]
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
    for i in assistant_turns(messages):
        prompt = render(tokenizer, messages[:i], generation_prompt=True, enable_thinking=enable_thinking)
        trained = render(tokenizer, messages[: i + 1], generation_prompt=False, enable_thinking=enable_thinking)
        turn = f"assistant turn {assistant_turns(messages).index(i) + 1}"
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
    content = messages[assistant_turns(messages)[0]]["content"]
    end = text.index(content) + len(content)
    for token in token_ids(tokenizer, text[end:]):
        if str(tokenizer.decode([token])).strip():
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
    turns = assistant_turns(messages)[:-1]
    for n, i in enumerate(turns, start=1):
        earlier = render(tokenizer, messages[: i + 1], generation_prompt=False, enable_thinking=enable_thinking)
        if full.startswith(earlier):
            continue
        spot = first_difference(earlier, full)
        if "think>" in earlier[spot - 10 : spot + 40] + full[spot - 10 : spot + 40]:
            continue  # a think block kept or dropped: template.thinking reports it (one cause, one finding)
        answered = earlier.rindex(messages[i]["content"]) + len(messages[i]["content"])
        token, _ = end_of_turn_token(tokenizer, messages[: i + 1])
        closing = str(tokenizer.decode([token])) if token is not None else ""
        if closing and closing in earlier[answered:spot]:
            continue  # only what follows the end-of-turn token differs (Phi-3's final eos): generation stops first
        multi_turn = multi_turn_rows(rows)
        fix = trl_training_template(tokenizer)
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

    asked = messages[: assistant_turns(messages)[-1]]  # the served prompt of the last answer

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
