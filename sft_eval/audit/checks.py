"""All audits on one tokenizer, and the adapter that lets any template be audited with the embedded tokenizer."""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

from transformers import PreTrainedTokenizerBase

from sft_eval.audit import CheckId, Finding, guarded, registered_checks
from sft_eval.audit.template import EXCHANGES, audit_template, could_not_run, render, renders
from sft_eval.audit.tokenizer import check_pad
from sft_eval.audit.tools import audit_tools
from sft_eval.chat import RenderRunaway, special_literals
from sft_eval.data import Rows


def run_checks(
    tokenizer: PreTrainedTokenizerBase,
    *,
    enable_thinking: bool = False,
    generation_eos: list[int] | None = None,
    rows: Rows | None = None,
    system_message: str = "",
    assistant_only_loss: bool = True,
) -> list[Finding]:
    """Every template and tokenizer check, built-in and registered. What depends on the data's shape (multi-turn
    rows, system messages, reasoning) is read from `rows` and `system_message`; with no rows (a template or
    tokenizer audited alone) single-turn rows without a system message are assumed, and the findings say so. Tool
    checks are errors for rows with tools, warnings for a template that speaks of tools audited without them;
    `assistant_only_loss` says whether the tool mask is judged (a template audited alone: it is)."""
    if tokenizer.chat_template:
        try:
            render(tokenizer, EXCHANGES, generation_prompt=False)
        except RenderRunaway as exc:  # every other check would run away again: one finding, then stop
            return [Finding(CheckId.TEMPLATE_RENDER, "error", f"{exc}; no other check could run", "")]
        except Exception:  # noqa: S110 - a template that raises is audited check by check below
            pass
    findings = audit_template(
        tokenizer,
        enable_thinking=enable_thinking,
        generation_eos=generation_eos,
        rows=rows,
        system_message=system_message,
    )
    if renders(findings):  # tools, calls and results: on a template that renders a plain conversation
        findings += audit_tools(
            tokenizer, rows, assistant_only_loss=assistant_only_loss, enable_thinking=enable_thinking
        )
    findings += guarded(CheckId.TOKENIZER_PAD, lambda: check_pad(tokenizer))
    for check_id, check in registered_checks().items():  # users' own checks, after the built-in ones
        findings += guarded(check_id, functools.partial(check, tokenizer))
    return could_not_run(findings)


def tokenizer_for_template(tokenizer: PreTrainedTokenizerBase, template: str) -> PreTrainedTokenizerBase:
    """A copy of `tokenizer` made for `template`, as a model's own tokenizer would be.

    The template's special strings become special tokens; eos becomes the literal the template writes right
    after an assistant answer (its end-of-turn token), or `</s>` where it writes the `eos_token` variable;
    `<s>` is the bos where it writes `bos_token`. What stays wrong after that is the template's own doing.
    """
    literals = special_literals(template)
    adapted = copy.deepcopy(tokenizer)
    specials: dict[str, Any] = {"eos_token": "</s>", "additional_special_tokens": literals}
    if re.search(r"\bbos_token\b", template):
        specials["bos_token"] = "<s>"
    adapted.add_special_tokens(specials, replace_extra_special_tokens=False)
    adapted.chat_template = template
    try:
        text = render(adapted, EXCHANGES, generation_prompt=False)
    except Exception:  # a template that does not render keeps </s>; template.render reports why
        return adapted
    answer = EXCHANGES[1]["content"]
    after = text[text.index(answer) + len(answer) :].lstrip() if answer in text else ""
    closing = next((t for t in sorted(literals, key=len, reverse=True) if after.startswith(t)), None)
    tag = _CLOSING_TAG.match(after)
    if closing is None and tag:  # a closing token of its own shape: <seed:eos>, </assistant>, MiniMax's [e~[
        closing = tag.group(0)
        adapted.add_special_tokens({"additional_special_tokens": [closing]}, replace_extra_special_tokens=False)
    if closing:
        adapted.eos_token = closing
    return adapted


_CLOSING_TAG = re.compile(r"<[^<>\s]{1,48}>|\[[^\[\]\s]{1,8}\[")
