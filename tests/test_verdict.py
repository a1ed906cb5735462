"""One verdict: `sft-eval report` judges the checks the suites assert (`sft_eval.verdict`), shows them in the
report's Verdict and exits 1 when one fails; the same run through the suites fails the same check.

The broken run is the default one held to a match rate it does not reach (a threshold edit: nothing retrains, the
answers come from the session's cache); the correct case is the default recipe as shipped.
"""

from __future__ import annotations

import json

from sft_eval.verdict import failed, judge, response_checks


def test_the_shipped_recipe_fails_no_check(sft_pipeline):
    checks = sft_pipeline.checks()
    names = [c.name for c in checks]
    assert names[:3] == ["audit.errors", "training.loss", "training.plan"] and "responses.eos_stop_rate" in names
    assert failed(checks) == [], [c.message for c in failed(checks)]
    assert all(c.passed for c in checks), [(c.name, c.message) for c in checks if not c.passed]


def test_each_threshold_fails_its_check_alone(sft_pipeline):
    """The shipped thresholds pass; each moved past what the run did fails exactly its own check."""
    import dataclasses

    thresholds, evaluation = sft_pipeline.recipe.thresholds, sft_pipeline.evaluation
    eos = sft_pipeline.tokenizer.eos_token
    tuned, base = evaluation.tuned_summary, evaluation.base_summary
    moved = {
        "responses.match_rate": {"min_match_rate": tuned.match_rate + 0.01},
        "responses.eos_stop_rate": {"min_eos_stop_rate": 1.01},
        "responses.base_eos_stop_rate": {"max_base_eos_stop_rate": base.eos_stop_rate - 0.01},
    }
    for name, change in moved.items():
        checks = response_checks(dataclasses.replace(thresholds, **change), evaluation, eos)
        assert [c.name for c in checks.values() if c.passed is False] == [name], change
    run = sft_pipeline.training_run
    strict = judge(dataclasses.replace(thresholds, min_loss_drop=0.999), evaluation, run, [], eos)
    assert [c.name for c in failed(strict)] == ["training.loss"]


def test_a_report_below_its_threshold_exits_1_and_the_suites_fail_the_same_check(
    sft_pipeline, tiny_variant, tmp_path, cli
):
    recipe = tiny_variant({"min_match_rate = 0.6": "min_match_rate = 0.99"})
    env = {"SFT_EVAL_CACHE": str(sft_pipeline.cache.root)}
    result = cli.main("report", "--recipe", str(recipe), "--out", str(tmp_path / "out"), env=env)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stdout.startswith("FAILED responses.match_rate: tuned model matched"), result.stdout
    written = json.loads((tmp_path / "out" / "sft_report.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in written["checks"] if c["passed"] is False] == ["responses.match_rate"]
    html = (tmp_path / "out" / "sft_report.html").read_text(encoding="utf-8")
    assert "1 failed" in html and "<code>responses.match_rate</code></td><td>FAILED" in html
    suites = cli.pytest(
        "--pyargs", "sft_eval.suites", "--sft-recipe", str(recipe), "-k", "match_expected or stops_at_end",
        "-p", "no:randomly", "--sft-report-dir", str(tmp_path / "pytest"), cwd=tmp_path, env=env,
    )  # fmt: skip
    assert suites.returncode == 1 and "1 failed, 1 passed" in suites.stdout, suites.stdout[-3000:]
    assert "test_tuned_answers_match_expected FAILED" in suites.stdout or "tuned model matched" in suites.stdout
