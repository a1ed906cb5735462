"""Response sanity: turn "looks reasonable" into numbers a suite can hold a threshold against."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from sft_eval.data import Question
from sft_eval.generation import Answer


def normalise(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: `"Paris."` matches `"paris"`."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


@dataclass(frozen=True)
class Score:
    question: str
    expected: str | None
    answer: str
    matched: bool | None  # None: the question has no expected answer
    stopped_at_eos: bool
    empty: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score(question: Question, answer: Answer) -> Score:
    matched = None if question.expected is None else normalise(answer.text) == normalise(question.expected)
    return Score(
        question=question.question,
        expected=question.expected,
        answer=answer.text,
        matched=matched,
        stopped_at_eos=answer.stop_reason == "eos",
        empty=not answer.text.strip(),
    )


@dataclass(frozen=True)
class Summary:
    answers: int
    checkable: int
    match_rate: float | None  # share of checkable answers that match exactly (normalised)
    eos_stop_rate: float  # share of answers that ended with the end-of-turn token

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(scores: list[Score]) -> Summary:
    checkable = [s for s in scores if s.matched is not None]
    return Summary(
        answers=len(scores),
        checkable=len(checkable),
        match_rate=sum(bool(s.matched) for s in checkable) / len(checkable) if checkable else None,
        eos_stop_rate=sum(s.stopped_at_eos for s in scores) / len(scores) if scores else 0.0,
    )
