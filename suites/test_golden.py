"""Golden outputs: the tuned model's greedy answers are what they were in this environment. Drift prints old vs
new; an environment the golden file has no entry for (another CPU kind, a GPU) is compared with its own local
baseline from the next run on, and says so."""

from __future__ import annotations

import pytest

from sft_eval.golden import check_golden, environment, golden_path, golden_record
from sft_eval.plugin import option


def test_tuned_answers_match_the_golden_outputs(request, sft_pipeline, sft_recipe, sft_evaluation):
    if sft_recipe.eval.backend != "transformers":
        pytest.skip("golden outputs hold the in-process engine's token ids; a served backend returns text only")
    verdict = check_golden(
        golden_path(sft_recipe),
        golden_record(sft_evaluation.tuned),
        environment(str(sft_pipeline.device)),
        sft_pipeline.cache.root / "golden-local",
        update=option(request.config, "update-golden"),
    )
    if verdict.status in ("baseline", "none"):
        pytest.skip(verdict.message)
    assert verdict.status != "drift", f"{verdict.message}:\n{verdict.diff}"
