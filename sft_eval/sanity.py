"""Response sanity: turn "looks reasonable, sometimes repetitive" into numbers a suite can hold a threshold against."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sft_eval import schema
from sft_eval.data import Question, normalise
from sft_eval.errors import SftEvalError
from sft_eval.records import Answer

# Template scaffolding that must never reach the text a user reads.
_ROLE_HEADER = re.compile(r"(?im)^\s*(system|user|assistant|human|model)\s*:|<\|?(im_start|im_end|eot_id|end)\|?>")
_THINK = re.compile(r"</?think>")


def repetition(text: str, n: int = 3) -> float:
    """Share of the answer's words that repeat an n-gram already said earlier in it (0 = none, ~1 = a loop)."""
    words = text.split()
    seen: set[tuple[str, ...]] = set()
    repeated = [False] * len(words)
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in seen:
            repeated[i : i + n] = [True] * n
        seen.add(gram)
    return sum(repeated) / len(words) if words else 0.0


def distinct(text: str, n: int = 2) -> float:
    """distinct-n: unique word n-grams over all n-grams (1 = no n-gram twice)."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def leaks(answer: Answer, specials: Sequence[str], enable_thinking: bool = False) -> list[str]:
    """Special tokens, role headers or (with thinking off) think tags in the answer, before its stop token."""
    body = answer.raw
    for stop in specials:  # the stop token that ended the answer is not a leak
        if body.endswith(stop):
            body = body[: -len(stop)]
            break
    found = [s for s in specials if s and s in body]
    found += [m.group(0).strip() for m in _ROLE_HEADER.finditer(answer.text)]
    if not enable_thinking:
        found += _THINK.findall(answer.text)
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class Score:
    question: str
    expected: str | None
    answer: str
    matched: bool | None  # None: the question has no expected answer
    stopped_at_eos: bool
    empty: bool
    new_tokens: int
    repetition: float
    distinct_2: float
    leaks: list[str]
    chrf: float | None = None  # chrF (0-100) of the answer against `expected`; None without one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def _chrf_metric() -> Any:
    from sacrebleu.metrics import CHRF

    return CHRF()  # sacrebleu's defaults: character 6-grams, beta 2 (chrF2), as its `sacrebleu -m chrf`


def chrf(answer: str, expected: str) -> float:
    """sacrebleu's sentence-level chrF of `answer` against `expected`, 0 to 100: character n-gram F-score, so a
    sentence that says the same with other inflections or word order scores high where exact match says no."""
    return float(_chrf_metric().sentence_score(answer, [expected]).score)


def score(question: Question, answer: Answer, specials: Sequence[str] = (), enable_thinking: bool = False) -> Score:
    matched = None if question.expected is None else normalise(answer.text) == normalise(question.expected)
    return Score(
        question=question.question,
        expected=question.expected,
        answer=answer.text,
        matched=matched,
        stopped_at_eos=answer.stop_reason == "eos",
        empty=not answer.text.strip(),
        new_tokens=answer.new_tokens,
        repetition=repetition(answer.text),
        distinct_2=distinct(answer.text),
        leaks=leaks(answer, specials, enable_thinking),
        chrf=None if question.expected is None else chrf(answer.text, question.expected),
    )


@dataclass(frozen=True)
class Summary:
    answers: int
    checkable: int
    match_rate: float | None  # share of checkable answers that match exactly (normalised)
    eos_stop_rate: float  # share of answers that ended with the end-of-turn token
    mean_new_tokens: float
    mean_repetition: float
    leak_rate: float  # share of answers with leaked special tokens or template markers
    mean_chrf: float | None = None  # mean chrF of the checkable answers against their expected answers

    def to_dict(self) -> schema.Summary:
        return schema.Summary(
            answers=self.answers,
            checkable=self.checkable,
            match_rate=self.match_rate,
            eos_stop_rate=self.eos_stop_rate,
            mean_new_tokens=self.mean_new_tokens,
            mean_repetition=self.mean_repetition,
            leak_rate=self.leak_rate,
            mean_chrf=self.mean_chrf,
        )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def summarise(scores: list[Score]) -> Summary:
    checkable = [s for s in scores if s.matched is not None]
    return Summary(
        answers=len(scores),
        checkable=len(checkable),
        match_rate=_mean([float(bool(s.matched)) for s in checkable]) if checkable else None,
        eos_stop_rate=_mean([float(s.stopped_at_eos) for s in scores]),
        mean_new_tokens=_mean([float(s.new_tokens) for s in scores]),
        mean_repetition=_mean([s.repetition for s in scores]),
        leak_rate=_mean([float(bool(s.leaks)) for s in scores]),
        mean_chrf=_mean([s.chrf for s in checkable if s.chrf is not None]) if checkable else None,
    )


@dataclass(frozen=True)
class PairedDifference:
    """tuned - base, averaged over questions, with a bootstrap interval over the same questions."""

    metric: str
    base: float
    tuned: float
    difference: float
    low: float
    high: float
    questions: int
    # two-sided bootstrap p-value: twice the share of resampled means on the far side of zero (the test the
    # interval inverts: it is below 1 - confidence where the interval excludes zero); `compare` corrects it
    p_value: float = 1.0

    @property
    def beyond_noise(self) -> bool:
        """The interval excludes zero: the change is more than the luck of which questions were asked."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> schema.Difference:
        return schema.Difference(
            metric=self.metric,
            base=self.base,
            tuned=self.tuned,
            difference=self.difference,
            low=self.low,
            high=self.high,
            questions=self.questions,
            p_value=self.p_value,
            beyond_noise=self.beyond_noise,
        )


def paired_bootstrap(
    metric: str,
    base: Sequence[float],
    tuned: Sequence[float],
    *,
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedDifference:
    """Percentile bootstrap of the mean paired difference, resampling questions (pairs stay together), with numpy:
    `resamples` x n indices drawn at once (in chunks, so 10,000 questions stay within a few MB)."""
    import numpy as np

    diffs = np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float)
    n = len(diffs)
    if n == 0:
        return PairedDifference(metric, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)  # resamples per draw: at most 2e6 indices (16 MB) at a time
    means = np.concatenate(
        [
            diffs[rng.integers(0, n, size=(min(chunk, resamples - start), n))].mean(axis=1)
            for start in range(0, resamples, chunk)
        ]
    )
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail], method="lower")
    p_value = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    return PairedDifference(metric, _mean(base), _mean(tuned), float(diffs.mean()), float(low), float(high), n, p_value)


def compare(base: list[Score], tuned: list[Score]) -> list[PairedDifference]:
    """Base vs tuned on each summary metric, paired per question."""
    checkable = [(b, t) for b, t in zip(base, tuned, strict=True) if b.matched is not None]
    rows = [
        ("exact match", [float(bool(b.matched)) for b, _ in checkable], [float(bool(t.matched)) for _, t in checkable]),
        ("chrF", [b.chrf or 0.0 for b, _ in checkable], [t.chrf or 0.0 for _, t in checkable]),
        ("ends at end-of-turn", [float(s.stopped_at_eos) for s in base], [float(s.stopped_at_eos) for s in tuned]),
        ("new tokens", [float(s.new_tokens) for s in base], [float(s.new_tokens) for s in tuned]),
        ("repetition", [s.repetition for s in base], [s.repetition for s in tuned]),
        ("leaks", [float(bool(s.leaks)) for s in base], [float(bool(s.leaks)) for s in tuned]),
    ]
    return [paired_bootstrap(name, b, t) for name, b, t in rows if b]


@dataclass(frozen=True)
class QuestionRecord:
    """One evaluation question and everything known about it: the question (with its expected answer), and each
    model's answer and score, keyed by the model's name ("base", "tuned", "baseline", ...) in the order the models
    were evaluated. Generation, scoring, the suites and the report pass these, never lists matched by position."""

    question: Question
    answers: dict[str, Answer]
    scores: dict[str, Score]

    @property
    def models(self) -> list[str]:
        return list(self.answers)

    def answer(self, which: str) -> Answer:
        return self.answers[which]

    def score(self, which: str) -> Score:
        return self.scores[which]

    # the two every run has, by name (users' tests read `record.tuned`, `record.tuned_score`)
    @property
    def base(self) -> Answer:
        return self.answers["base"]

    @property
    def tuned(self) -> Answer:
        return self.answers["tuned"]

    @property
    def base_score(self) -> Score:
        return self.scores["base"]

    @property
    def tuned_score(self) -> Score:
        return self.scores["tuned"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": asdict(self.question),
            "answers": {name: a.to_dict() for name, a in self.answers.items()},
            "scores": {name: asdict(s) for name, s in self.scores.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuestionRecord:
        """This version's record, or an older one's (`base`, `tuned`, `base_score`, `tuned_score`)."""
        if "answers" not in data:
            data = {
                "question": data["question"],
                "answers": {"base": data["base"], "tuned": data["tuned"]},
                "scores": {"base": data["base_score"], "tuned": data["tuned_score"]},
            }
        return cls(
            question=_question(data["question"]),
            answers={name: Answer.from_dict(a) for name, a in data["answers"].items()},
            scores={name: Score(**s) for name, s in data["scores"].items()},
        )


def _question(data: dict[str, Any]) -> Question:
    """A record's question, from this version's JSON or an older one's (`kind` before it was `category`)."""
    data = dict(data)
    if "kind" in data:
        data.setdefault("category", data.pop("kind"))
    return Question(**data)


def by_category(records: Sequence[QuestionRecord]) -> dict[str, list[QuestionRecord]]:
    """The records grouped by their question's category ("" for none), in order of first appearance."""
    groups: dict[str, list[QuestionRecord]] = {}
    for record in records:
        groups.setdefault(record.question.category, []).append(record)
    return groups


@dataclass(frozen=True)
class Evaluation:
    """The evaluation of a recipe: one record per question, in the recipe's order, each with every model's answer."""

    records: list[QuestionRecord]

    @property
    def models(self) -> list[str]:
        """The models evaluated, by name, in order ("base", "tuned", then any other the recipe names)."""
        return self.records[0].models if self.records else ["base", "tuned"]

    # Views over the records, for callers that want one column (users' tests read `sft_evaluation.tuned`).
    @property
    def questions(self) -> list[Question]:
        return [r.question for r in self.records]

    def answers(self, which: str) -> list[Answer]:
        return [r.answer(which) for r in self.records]

    def scores(self, which: str) -> list[Score]:
        return [r.score(which) for r in self.records]

    def summary(self, which: str) -> Summary:
        return summarise(self.scores(which))

    @property
    def base(self) -> list[Answer]:
        return self.answers("base")

    @property
    def tuned(self) -> list[Answer]:
        return self.answers("tuned")

    @property
    def base_scores(self) -> list[Score]:
        return self.scores("base")

    @property
    def tuned_scores(self) -> list[Score]:
        return self.scores("tuned")

    @property
    def base_summary(self) -> Summary:
        return self.summary("base")

    @property
    def tuned_summary(self) -> Summary:
        return self.summary("tuned")

    def comparison(self, first: str = "base", second: str = "tuned") -> list[PairedDifference]:
        """`second` minus `first` per metric (tuned minus base by default), with a paired bootstrap interval over
        the questions."""
        return compare(self.scores(first), self.scores(second))

    def to_dict(self) -> dict[str, Any]:
        return {"records": [r.to_dict() for r in self.records]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        return cls([QuestionRecord.from_dict(r) for r in data["records"]])


def evaluate(
    questions: Sequence[Question],
    base: Sequence[Answer],
    tuned: Sequence[Answer],
    *,
    specials: Sequence[str] = (),
    enable_thinking: bool = False,
) -> Evaluation:
    """`evaluate_models` of the two every run has, the base's answers and the tuned model's."""
    return evaluate_models(
        questions, {"base": base, "tuned": tuned}, specials=specials, enable_thinking=enable_thinking
    )


def evaluate_models(
    questions: Sequence[Question],
    answers: Mapping[str, Sequence[Answer]],
    *,
    specials: Sequence[str] = (),
    enable_thinking: bool = False,
) -> Evaluation:
    """Score each question's answer from every model, keyed by the model's name (a backend answers each question
    once, in order); a backend that answers too few questions, or another question, is one line naming
    `eval.backend` (a user's backend that misbehaves is bad input, not a traceback), never an answer scored against
    the wrong question."""
    counts = {name: len(given) for name, given in answers.items()}
    if any(n != len(questions) for n in counts.values()):
        said = " and ".join(f"{n} {name}" for name, n in counts.items())
        raise SftEvalError(f"eval.backend: {len(questions)} questions but {said} answers")
    records = []
    for i, question in enumerate(questions):
        asked = {name: given[i] for name, given in answers.items()}
        for answer in asked.values():
            if answer.question != question.question:
                raise SftEvalError(f"eval.backend: answer to {answer.question!r} returned for {question.question!r}")
        scores = {name: score(question, a, specials, enable_thinking) for name, a in asked.items()}
        records.append(QuestionRecord(question=question, answers=asked, scores=scores))
    return Evaluation(records)
