"""Golden outputs: the tuned model's greedy answers are what they were when recorded. By default they are held to
the recorded reference within a tolerance, on any machine: the golden answer's teacher-forced log-probabilities
agree, and the greedy answer is the same or parts from it only at a near tie. A drift names, per question, the
first position that moved, both tokens and both log-probabilities. `--sft-golden exact` holds them bit for bit to
this environment's entry instead (an environment without one keeps a local baseline and says so)."""

from __future__ import annotations

import pytest

from sft_eval.plugin import option


def test_tuned_answers_match_the_golden_outputs(request, sft_pipeline, sft_recipe, sft_evaluation):
    if sft_recipe.eval.backend != "transformers":
        pytest.skip("golden outputs hold the in-process engine's token ids; a served backend returns text only")
    verdict = sft_pipeline.golden(mode=option(request.config, "golden"), update=option(request.config, "update-golden"))
    if verdict.status in ("baseline", "none"):
        pytest.skip(verdict.message)
    assert verdict.status != "drift", f"{verdict.message}:\n{verdict.diff}"
