"""Against the last accepted run: with `--sft-baseline BASELINE.json` (a report's JSON, kept from the run you
accepted), or with `[model] baseline` (the accepted model's folder, whose answers are generated here), this run's
tuned model is held to that run's, question by question. A metric worse beyond noise (exact
McNemar or the paired bootstrap, Holm-Bonferroni across metrics) fails, naming the effect, its interval and the
flipped questions; improvements never fail. Under `[thresholds] gate = "non-inferiority"` each metric with a
margin in `[thresholds.max_regression]` must be shown within it (docs/compare.md). `sft-eval compare BASELINE.json
NEW.json` is the same check on two reports."""

from __future__ import annotations

import pytest

from sft_eval.compare import compare_outcomes, outcomes_from_evaluation, outcomes_from_report
from sft_eval.comparison_text import describe, write_step_summary
from sft_eval.plugin import baseline_report, option


def test_no_regression_against_the_baseline(request, sft_recipe, sft_evaluation, sft_signals):
    baseline = baseline_report(request.config)
    if baseline is None:
        pytest.skip("no --sft-baseline: give the accepted run's sft_report.json to hold this run to it")
    comparison = compare_outcomes(
        outcomes_from_report(baseline),
        outcomes_from_evaluation(sft_evaluation, signals=sft_signals),
        baseline_name=option(request.config, "baseline"),
        candidate_name="this run",
        gate=sft_recipe.thresholds.gate,
        margins=sft_recipe.thresholds.max_regression,
    )
    write_step_summary(comparison)
    assert comparison.passed, "\n".join(describe(comparison))


def test_no_regression_against_the_baseline_model(sft_pipeline, sft_recipe):
    if sft_recipe.model.baseline is None:
        pytest.skip('no [model] baseline: name the accepted model\'s folder (model.baseline = "runs/accepted")')
    comparison = sft_pipeline.baseline_comparison()
    write_step_summary(comparison)
    assert comparison.passed, "\n".join(describe(comparison))
