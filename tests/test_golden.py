"""Golden drift is shown as old vs new, and only when something changed."""

from __future__ import annotations

from pathlib import Path

from sft_eval.generation import Answer
from sft_eval.golden import golden_drift, golden_path, golden_record
from sft_eval.recipe import DEFAULT_RECIPE, FIXTURES_DIR, load_recipe


def record(*texts: str) -> dict:
    answers = [Answer(f"q{i}", t, t, [i, 7], 2, "eos") for i, t in enumerate(texts)]
    return golden_record([a.question for a in answers], answers)


def test_no_drift_no_diff():
    assert golden_drift(record("Paris", "Rome"), record("Paris", "Rome")) == ""


def test_a_changed_answer_shows_old_and_new():
    drift = golden_drift(record("Paris", "Rome"), record("Paris", "Roma"))
    assert "-'q1' -> 'Rome'" in drift and "+'q1' -> 'Roma'" in drift and "Paris" not in drift


def test_changed_token_ids_with_the_same_text_are_drift():
    old, new = record("Paris"), record("Paris")
    new["answers"][0]["token_ids"] = [0, 8]
    assert golden_drift(old, new)


def test_the_shipped_recipe_has_its_golden_file():
    path = golden_path(load_recipe(DEFAULT_RECIPE))
    assert path == FIXTURES_DIR / "golden" / "tiny.json" and Path(path).is_file()
