"""Did SFT teach the model to answer and to stop? Base and tuned answers to the recipe's questions."""

from __future__ import annotations

import pytest

from sft_eval.verdict import response_checks


def _record(node, prefix: str, score) -> None:
    """The answer and its metrics in the test's `user_properties`: hooks and plugins read them, and junit-xml
    writes them as properties with `-o junit_family=legacy` (xunit2, pytest's default, has no per-test ones)."""
    for key in ("answer", "matched", "stopped_at_eos", "new_tokens", "repetition", "distinct_2", "leaks"):
        node.user_properties.append((f"{prefix}.{key}", getattr(score, key)))


@pytest.mark.parametrize("model", ["base", "tuned"])
def test_answer_is_well_formed(sft_evaluation, sft_recipe, question_index, model, request):
    """Both models, every question: the engine's answer is consistent (new tokens within the budget; `length`
    exactly when the budget ran out). Quality is recorded here, judged for the tuned model only."""
    record = sft_evaluation.records[question_index]
    answer, score = record.answer(model), record.score(model)
    _record(request.node, model, score)
    budget = sft_recipe.eval.max_new_tokens
    assert 0 < answer.new_tokens <= budget, f"{model} answer has {answer.new_tokens} new tokens, budget {budget}"
    ran_out = answer.new_tokens == budget and answer.stop_reason == "length"
    assert answer.stop_reason == "eos" or ran_out, (
        f"{model} answer stopped for {answer.stop_reason!r} after {answer.new_tokens} of {budget} tokens"
    )


def test_tuned_answer_is_sane(sft_evaluation, sft_recipe, question_index):
    """Every tuned answer: not empty, not looping past `max_repetition`, no template markers in the text."""
    s = sft_evaluation.records[question_index].tuned_score
    problems = []
    if s.empty:
        problems.append("it is empty")
    if s.repetition > sft_recipe.thresholds.max_repetition:
        problems.append(f"{s.repetition:.0%} of it repeats (max {sft_recipe.thresholds.max_repetition:.0%})")
    if s.leaks:
        problems.append(f"it leaks {s.leaks}")
    assert not problems, f"tuned answer to {s.question!r} is {s.answer[:80]!r}: " + "; ".join(problems)


def _check(name, sft_evaluation, sft_recipe, sft_tokenizer):
    """One of the response checks `sft-eval report` judges too (`sft_eval.verdict`): skipped where not judged."""
    check = response_checks(sft_recipe.thresholds, sft_evaluation, sft_tokenizer.eos_token)[name]
    if check.passed is None:
        pytest.skip(check.message)
    assert check.passed, check.message


def test_tuned_answers_match_expected(sft_evaluation, sft_recipe, sft_tokenizer):
    _check("responses.match_rate", sft_evaluation, sft_recipe, sft_tokenizer)


def test_tuned_answers_are_close_to_expected(sft_evaluation, sft_recipe, sft_tokenizer):
    """Graded where exact match is all-or-nothing: the tuned answers' mean chrF (sacrebleu's) against the expected
    answers is at least `min_chrf`."""
    _check("responses.chrf", sft_evaluation, sft_recipe, sft_tokenizer)


def test_tuned_model_stops_at_end_of_turn(sft_evaluation, sft_recipe, sft_tokenizer):
    _check("responses.eos_stop_rate", sft_evaluation, sft_recipe, sft_tokenizer)


def test_base_model_does_not_stop_like_a_chat_model(sft_evaluation, sft_recipe, sft_tokenizer):
    """A base model that already ends turns was not a base model: the before/after comparison means nothing."""
    _check("responses.base_eos_stop_rate", sft_evaluation, sft_recipe, sft_tokenizer)


def test_tuned_answers_do_not_loop(sft_evaluation, sft_recipe, sft_tokenizer):
    _check("responses.repetition", sft_evaluation, sft_recipe, sft_tokenizer)


def test_tuned_answers_leak_no_special_tokens_or_template_markers(sft_evaluation, sft_recipe, sft_tokenizer):
    _check("responses.leaks", sft_evaluation, sft_recipe, sft_tokenizer)
