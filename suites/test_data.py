"""Is the evaluation honest? A question the model was trained on measures memory, not the fine-tune."""

from __future__ import annotations

from sft_eval.data import leaked_questions


def test_evaluation_questions_are_held_out(sft_pipeline):
    leaked = leaked_questions(sft_pipeline.rows, sft_pipeline.questions)
    assert not leaked, f"{len(leaked)} evaluation question(s) appear in the training rows: {leaked[:5]}"
