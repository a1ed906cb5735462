"""Is the tuned answer better where no reference exists? The recipe's `[judge]` compares each tuned answer with the
base's: a chat judge in both orders, a reward model by the difference of its rewards (docs/judge.md).

The judge is trusted only when it is right on the calibration pairs (a right fact against a wrong one, a stop
against a loop, a short answer against the same padded); a judge that changes its verdict with the order fails
`judge.flip_rate` (a reward judge has no order: not judged); a trusted judge must prefer the tuned answers on
`min_judge_win_rate` of the pairs. Skipped for a recipe without a judge.
"""

from __future__ import annotations

import pytest

from sft_eval.verdict import judge_checks


@pytest.fixture(scope="session")
def judged(sft_pipeline):
    verdicts = sft_pipeline.assessment.judgement
    if verdicts is None:
        pytest.skip("the recipe has no [judge]")
    return judge_checks(sft_pipeline.recipe.thresholds, verdicts)


@pytest.mark.parametrize("check", ["judge.trusted", "judge.flip_rate", "judge.win_rate"])
def test_the_judge_prefers_the_tuned_answers(judged, check):
    """`judge.trusted`: right on the calibration pairs; `judge.flip_rate`: the same verdict in both orders;
    `judge.win_rate`: the tuned answers preferred (ties half)."""
    verdict = judged[check]
    if verdict.passed is None:
        pytest.skip(verdict.message)
    assert verdict.passed, verdict.message
