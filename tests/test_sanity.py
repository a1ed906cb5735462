"""Response metrics fire on looping, leaking, unstopped answers and stay quiet on clean ones."""

from __future__ import annotations

import pytest

from sft_eval.data import Question
from sft_eval.errors import SftEvalError
from sft_eval.records import Answer
from sft_eval.sanity import (
    Evaluation,
    QuestionRecord,
    compare,
    distinct,
    evaluate,
    evaluate_models,
    leaks,
    normalise,
    paired_bootstrap,
    repetition,
    score,
)

SPECIALS = ["<|im_end|>", "<|im_start|>", "<|pad|>", "<|endoftext|>"]


def answer(text: str, raw: str | None = None, stop: str = "eos", tokens: int = 5) -> Answer:
    return Answer("q", text, raw if raw is not None else text + "<|im_end|>", [], tokens, stop)


def test_normalised_match_ignores_case_punctuation_and_spacing():
    assert normalise("  Paris. ") == normalise("paris") and normalise("Paris") != normalise("Rome")


def test_repetition_fires_on_a_loop_and_not_on_a_sentence():
    loop = "the bird sat next to the book. " * 6
    assert repetition(loop) > 0.7 and distinct(loop) < 0.3
    assert repetition("The capital of France is Paris.") == 0.0 and distinct("The capital of France is Paris.") == 1.0


@pytest.mark.parametrize(
    ("text", "raw", "expected"),
    [
        ("Sure user: hi", "Sure<|im_end|><|im_start|>user\nhi<|im_end|>", ["<|im_end|>", "<|im_start|>"]),
        ("Fine.\nassistant: again", None, ["assistant:"]),
        ("<think>hmm</think> 4", None, ["<think>", "</think>"]),
    ],
    ids=["special-tokens", "role-header", "think-with-thinking-off"],
)
def test_leaks_fire(text, raw, expected):
    assert leaks(answer(text, raw), SPECIALS) == expected


def test_leaks_quiet_on_a_clean_answer_ending_with_its_stop_token():
    assert leaks(answer("Paris"), SPECIALS) == []
    assert leaks(answer("<think>ok</think> 4"), SPECIALS, enable_thinking=True) == []


def test_score_records_every_metric():
    s = score(Question("Capital of France?", "Paris"), answer("Paris.", tokens=3), SPECIALS)
    assert (s.matched, s.stopped_at_eos, s.empty, s.new_tokens, s.leaks) == (True, True, False, 3, [])


def test_bootstrap_interval_excludes_zero_for_a_real_improvement():
    d = paired_bootstrap("match", [0.0] * 20, [1.0] * 18 + [0.0] * 2)
    assert d.difference == pytest.approx(0.9) and d.low > 0 and d.beyond_noise


def test_bootstrap_interval_contains_zero_for_noise():
    base = [1.0, 0.0] * 10
    tuned = [0.0, 1.0] * 10  # same rate, different questions right
    d = paired_bootstrap("match", base, tuned)
    assert d.difference == 0 and d.low < 0 < d.high and not d.beyond_noise


def test_compare_pairs_per_question():
    base = [score(Question("q", "a"), answer("b", stop="length", tokens=100))] * 4
    tuned = [score(Question("q", "a"), answer("a", tokens=2))] * 4
    rows = {d.metric: d for d in compare(base, tuned)}
    assert rows["exact match"].difference == 1.0 and rows["new tokens"].difference == -98.0


def _answers(questions: list[Question], texts: list[str]) -> list[Answer]:
    return [Answer(q.question, t, t + "<|im_end|>", [], 3, "eos") for q, t in zip(questions, texts, strict=True)]


def test_records_hold_every_models_answer_by_name():
    """Any number of models, keyed by name in the order given: each answer scored against its own question, the
    views users' tests read (`base`, `tuned`, `tuned_score`) still there, and a record's JSON read back, this
    version's and the two-model one written before names."""
    questions = [Question("Calculate 1+1-1", expected="1"), Question("Capital of France?", expected="Paris")]
    answers = {
        "base": _answers(questions, ["Calculate", "France"]),
        "tuned": _answers(questions, ["1", "Paris"]),
        "baseline": _answers(questions, ["1", "Lyon"]),
    }
    evaluation = evaluate_models(questions, answers, specials=SPECIALS)
    assert evaluation.models == ["base", "tuned", "baseline"]
    assert [s.matched for s in evaluation.scores("baseline")] == [True, False]
    assert evaluation.summary("tuned").match_rate == 1.0 and evaluation.summary("baseline").match_rate == 0.5
    assert [d.difference for d in evaluation.comparison("baseline", "tuned")][0] == 0.5  # exact match, paired
    record = evaluation.records[1]
    assert (record.base.text, record.tuned_score.matched, record.answer("baseline").text) == ("France", True, "Lyon")
    assert Evaluation.from_dict(evaluation.to_dict()) == evaluation
    two = evaluate(questions, answers["base"], answers["tuned"], specials=SPECIALS)
    older = {
        "question": {"question": "Capital of France?", "expected": "Paris", "kind": ""},
        "base": two.records[1].base.to_dict(),
        "tuned": two.records[1].tuned.to_dict(),
        "base_score": two.records[1].base_score.to_dict(),
        "tuned_score": two.records[1].tuned_score.to_dict(),
    }
    assert QuestionRecord.from_dict(older) == two.records[1]


def test_a_model_with_too_few_or_other_answers_is_one_line_naming_it():
    questions = [Question("a"), Question("b")]
    good = _answers(questions, ["x", "y"])
    says = r"^eval.backend: 2 questions but 2 base and 2 tuned and 1 baseline answers$"
    with pytest.raises(SftEvalError, match=says):
        evaluate_models(questions, {"base": good, "tuned": good, "baseline": good[:1]})
    with pytest.raises(SftEvalError, match=r"answer to 'b' returned for 'a'"):
        evaluate_models(questions, {"base": good, "baseline": good[::-1]})
