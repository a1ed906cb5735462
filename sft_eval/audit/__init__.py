"""Audits: the silent SFT bugs, found before a GPU hour is spent.

Every check is a function returning `Finding`s with a stable id (`template.prefix`, `tokenizer.pad`, ...);
users' CI filters and the report match on those ids, so an id is never renamed, only added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from sft_eval import schema
from sft_eval.chat import RenderRunaway
from sft_eval.registry import Registry

Severity = Literal["error", "warning", "info"]


class CheckId(StrEnum):
    """Every finding id, in one place: a typo cannot invent one, and docs/audit.md's table is tested against this list.
    Values are the stable strings users filter on; add members, never rename one."""

    TEMPLATE_RENDER = "template.render"
    TEMPLATE_WHITESPACE = "template.whitespace"
    TEMPLATE_GENERATION_PROMPT = "template.generation_prompt"
    TEMPLATE_PREFIX = "template.prefix"
    TEMPLATE_DOUBLE_BOS = "template.double_bos"
    TEMPLATE_STOP_TOKEN = "template.stop_token"
    TEMPLATE_THINKING = "template.thinking"
    TEMPLATE_SPECIAL_IN_CONTENT = "template.special_in_content"
    TEMPLATE_NONDETERMINISTIC = "template.nondeterministic"
    TEMPLATE_PREFIX_PRESERVING = "template.prefix_preserving"
    TEMPLATE_TOOLS = "template.tools"
    TEMPLATE_TOOL_CALLS = "template.tool_calls"
    TEMPLATE_TOOL_RESULT = "template.tool_result"
    TEMPLATE_TOOL_LOSS = "template.tool_loss"
    TOKENIZER_PAD = "tokenizer.pad"
    CHECKPOINT_VOCAB = "checkpoint.vocab"
    CHECKPOINT_UNTRAINED_TOKENS = "checkpoint.untrained_tokens"
    CHECKPOINT_TEMPLATE = "checkpoint.template"
    CHECKPOINT_EOS = "checkpoint.eos"
    CHECKPOINT_USE_CACHE = "checkpoint.use_cache"
    CHECKPOINT_SAMPLING = "checkpoint.sampling"
    PEFT_TRAINABLE_TOKENS = "peft.trainable_tokens"
    PEFT_MERGE = "peft.merge"
    PEFT_BASE = "peft.base"
    LABELS_EOS = "labels.eos"
    LABELS_SCOPE = "labels.scope"
    LABELS_PACKING = "labels.packing"
    SWEEP_OVERFITTING = "sweep.overfitting"
    SWEEP_BEST_MISSING = "sweep.best_missing"
    SWEEP_EVAL_LOSS_DISAGREES = "sweep.eval_loss_disagrees"
    SWEEP_LAST_WORSE = "sweep.last_worse"


# Checks added with `register_check`: their ids, and what runs them on the audited tokenizer. The built-in finding
# ids are reserved: a check cannot take one.
CHECKS = Registry("audit check", reserved=dict.fromkeys(CheckId.__members__.values(), "a built-in finding id"))


def register_check(check_id: str, run: Callable[[Any], list[Finding]]) -> None:
    """Add a check of one's own to every audit: `run(tokenizer)` (the audited tokenizer, with its chat template)
    returns `Finding`s of `check_id`. A check that raises becomes an error finding of its id, like the built-in
    ones. Ids are dotted (`myteam.system_prompt`); one taken (a built-in id, another registration's) is a
    ValueError naming both owners."""
    if not isinstance(check_id, str) or "." not in check_id or check_id != check_id.strip():
        raise ValueError(f"finding ids are dotted, like 'myteam.system_prompt', not {check_id!r}")
    CHECKS.register(check_id, run)


def registered_checks() -> dict[str, Callable[[Any], list[Finding]]]:
    return CHECKS.registered()


@dataclass(frozen=True)
class Finding:
    check: str  # stable id, e.g. "template.prefix"
    severity: Severity
    message: str  # one line: what is wrong and what follows from it
    evidence: str = ""  # the offending text or tokens, the spot marked

    def __post_init__(self) -> None:
        if self.check not in CheckId.__members__.values() and self.check not in CHECKS:
            raise ValueError(
                f"unknown finding id {self.check!r}: add it to CheckId (and docs/audit.md) or register_check it"
            )

    def to_dict(self) -> schema.Finding:
        return schema.Finding(check=self.check, severity=self.severity, message=self.message, evidence=self.evidence)


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def unexplained_errors(findings: list[Finding], expected: set[str], reason: str, name: str) -> str:
    """Empty when the error-level check ids are exactly `expected`; else one line saying what differs and why
    it was expected (for suites that explain every finding on real-world material)."""
    errors = [f for f in findings if f.severity == "error"]
    found = {f.check for f in errors}
    if found == expected:
        return ""
    details = "; ".join(f"{f.check}: {f.message}" for f in errors)
    return f"{name}: expected {sorted(expected)} ({reason}), found {sorted(found)}: {details}"


def mark(text: str, position: int, width: int = 60) -> str:
    """`text` around `position`, escaped to one line, with the spot marked by ⟦here⟧."""
    start = max(0, position - width)
    before, after = text[start:position], text[position : position + width]
    prefix = "…" if start else ""
    suffix = "…" if position + width < len(text) else ""
    return f"{prefix}{before!r}⟦here⟧{after!r}{suffix}"


RAISED = "the template or tokenizer raised"


def guarded(check: str, run: Callable[[], list[Finding]]) -> list[Finding]:
    """`run()`'s findings; if a user's template or tokenizer raises inside it, that becomes an error finding of
    `check` (with the template line where Jinja gives one) instead of ending the audit: the other checks run."""
    try:
        return run()
    except RenderRunaway as exc:
        return [Finding(check, "error", str(exc), "")]
    except Exception as exc:  # anything a user's Jinja, tokenizer or config can raise is a finding, not a crash
        line = getattr(exc, "lineno", None)
        where = f" (template line {line})" if line else ""
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        return [
            Finding(
                check,
                "error",
                f"{RAISED} {type(exc).__name__} during this check{where}: it fails on "
                "conversations that training or serving will send",
                reason,
            )
        ]
