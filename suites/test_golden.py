"""Golden outputs: the tuned model's greedy answers are what they were. Drift prints old vs new."""

from __future__ import annotations

import json

import pytest

from sft_eval.golden import golden_drift, golden_path, golden_record, write_golden


def test_tuned_answers_match_the_golden_outputs(request, recipe, evaluation):
    if recipe.eval.backend != "transformers":
        pytest.skip("golden outputs hold the in-process engine's token ids; a served backend returns text only")
    path = golden_path(recipe)
    current = golden_record([q.question for q in evaluation.questions], evaluation.tuned)
    if request.config.getoption("--update-golden"):
        write_golden(path, current)
        return
    if path is None or not path.is_file():
        pytest.skip(f"no golden outputs for recipe {recipe.name!r} at {path}; record them with --update-golden")
    drift = golden_drift(json.loads(path.read_text(encoding="utf-8")), current)
    assert not drift, f"tuned answers drifted from {path} (rewrite with --update-golden if intended):\n{drift}"
