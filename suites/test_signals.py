"""Did the tuned model get better at the task without losing what the base knew? Teacher-forced signals, base vs
tuned, judged by `sft_eval.verdict.signal_checks` (the function `sft-eval report` judges them with)."""

from __future__ import annotations

import pytest

from sft_eval.verdict import signal_checks


def _check(name, sft_signals, sft_recipe):
    """One signal check; skipped, saying what would give it, where the recipe gives nothing to measure on."""
    check = signal_checks(sft_recipe.thresholds, sft_signals)[name]
    if check.passed is None:
        pytest.skip(check.message)
    assert check.passed, check.message


def test_held_out_loss_fell(sft_signals, sft_recipe):
    """The held-out rows' loss, on exactly the tokens the recipe's trainer trains, is at least
    `min_eval_loss_drop` below the base's."""
    _check("signals.eval_loss", sft_signals, sft_recipe)


def test_general_text_not_forgotten(sft_signals, sft_recipe):
    """The general text's loss under the tuned model is at most `max_forgetting` times the base's."""
    _check("signals.forgetting", sft_signals, sft_recipe)


def test_expected_answers_not_less_likely(sft_signals, sft_recipe):
    """No expected answer (with its end-of-turn token) became more than `max_expected_nll_rise` nats/token less
    likely under the tuned model; the failure names each question."""
    _check("signals.expected_likelihood", sft_signals, sft_recipe)


def test_answer_length_like_training(sft_signals, sft_recipe):
    """The tuned answers' median length is within `max_length_ratio` of the training answers' (either way)."""
    _check("signals.length", sft_signals, sft_recipe)
