"""A chat model as a pairwise judge: MT-Bench's prompt, asked in both orders, its `[[A]]`/`[[B]]`/`[[C]]` read back.

Each pair (a question, the candidate's answer, the other model's) is asked twice, the candidate shown first and
then second: a verdict that changes with the order is a tie, and counts in the flip rate. A reply with no verdict
marker is no verdict (counted and said), never a guess. The judge is any `generation.Backend` that answers
conversations (`answer_tools`): the served one sends each prompt to an OpenAI-compatible server with its retries,
timeouts and concurrency, and `generation.CachedAnswers` keeps each reply under the judge's identity and the whole
prompt (both answers, in their order), so a run that stops half-way resumes with the prompts not yet answered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sft_eval.generation import Backend, CachedAnswers, GenerationSettings
from sft_eval.judge.stats import Verdict, combined

# MT-Bench's pairwise judge (FastChat's `pair-v2`), as its paper and llm_judge code state it
MT_BENCH_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the "
    "user question displayed below. You should choose the assistant that follows the user's instructions and answers "
    "the user's question better. Your evaluation should consider factors such as the helpfulness, relevance, "
    "accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation by comparing the two "
    "responses and provide a short explanation. Avoid any position biases and ensure that the order in which the "
    "responses were presented does not influence your decision. Do not allow the length of the responses to "
    "influence your evaluation. Do not favor certain names of the assistants. Be as objective as possible. After "
    'providing your explanation, output your final verdict by strictly following this format: "[[A]]" if assistant '
    'A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
MT_BENCH_USER = (
    "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's "
    "Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]"
)
MARKER = re.compile(r"\[\[([ABC])\]\]")
JUDGE_TOKENS = 512  # the judge's reply: a short explanation, then the verdict


@dataclass(frozen=True)
class Prompt:
    """One conversation for the judge (what `Backend.answer_tools` asks): no tools, the pair in one order."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None

    @property
    def question(self) -> str:
        """What a failure line quotes: the judged question."""
        text = str(self.messages[-1]["content"])
        start = text.find("[User Question]\n") + len("[User Question]\n")
        return text[start : text.find("\n\n[The Start of Assistant A")]


def prompt(
    question: str, answer_a: str, answer_b: str, template: tuple[str, str] = (MT_BENCH_SYSTEM, MT_BENCH_USER)
) -> Prompt:
    """The pair as the judge reads it: `template` is (system message, user message with {question}, {answer_a} and
    {answer_b}); MT-Bench's by default. Braces in the answers are kept as written."""
    system, user = template
    filled = user.replace("{question}", question).replace("{answer_a}", answer_a).replace("{answer_b}", answer_b)
    return Prompt(
        [{"role": "system", "content": system}, {"role": "user", "content": filled}]
        if system
        else [{"role": "user", "content": filled}]
    )


def read_verdict(reply: str) -> str | None:
    """ "A", "B" or "C" (a tie): the last verdict marker in the reply, which MT-Bench's prompt asks for at the end,
    after the explanation; None when the reply holds none."""
    found = MARKER.findall(reply or "")
    return found[-1] if found else None


def candidate_side(marker: str | None, candidate_is: str) -> Verdict | None:
    """A marker turned to the candidate's side: "win", "tie" or "loss" (None stays None)."""
    if marker is None:
        return None
    if marker == "C":
        return "tie"
    return "win" if marker == candidate_is else "loss"


@dataclass(frozen=True)
class Pair:
    """A question and two answers to it: the candidate's (the tuned model's, a checkpoint's) and the other's."""

    question: str
    candidate: str
    other: str
    category: str = ""


@dataclass(frozen=True)
class PairVerdict:
    """A pair judged in both orders: the candidate's side with it shown first (`first`) and second (`second`),
    the two combined (`verdict`: agreeing orders, else a tie), and the judge's replies."""

    pair: Pair
    first: Verdict | None
    second: Verdict | None
    replies: tuple[str, str] = field(default=("", ""))
    rewards: tuple[float, float] | None = None  # a reward judge's scores: the candidate's, the other's

    @property
    def verdict(self) -> Verdict | None:
        return combined(self.first, self.second)

    @property
    def flipped(self) -> bool:
        return self.first is not None and self.second is not None and self.first != self.second


def judge_pairs(
    pairs: list[Pair],
    judge: Backend,
    store: Any = None,
    *,
    template: tuple[str, str] = (MT_BENCH_SYSTEM, MT_BENCH_USER),
    max_new_tokens: int = JUDGE_TOKENS,
) -> tuple[list[PairVerdict], dict[str, int]]:
    """Every pair asked of `judge` in both orders (2 prompts a pair, cached in `store`, an `AnswerCache`), read
    back: (the verdicts, how many replies came from the cache and how many were asked)."""
    prompts = []
    for p in pairs:
        prompts += [
            prompt(p.question, p.candidate, p.other, template),
            prompt(p.question, p.other, p.candidate, template),
        ]
    asked = CachedAnswers(judge, store)
    replies = [r.answer.raw for r in asked.answer_tools(prompts, GenerationSettings(max_new_tokens=max_new_tokens))]
    verdicts = [
        PairVerdict(
            p,
            candidate_side(read_verdict(replies[2 * k]), "A"),
            candidate_side(read_verdict(replies[2 * k + 1]), "B"),
            (replies[2 * k], replies[2 * k + 1]),
        )
        for k, p in enumerate(pairs)
    ]
    return verdicts, asked.counts
