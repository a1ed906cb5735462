"""Is the evaluation honest? A question the model was trained on measures memory, not the fine-tune."""

from __future__ import annotations

from sft_eval.sanity import normalise


def test_evaluation_questions_are_held_out(sft_pipeline, evaluation):
    trained = {
        normalise(m["content"])
        for row in sft_pipeline.rows
        for m in row.get("messages", [{"role": "user", "content": row.get("prompt", "")}])
        if m["role"] == "user"
    }
    leaked = [q.question for q in evaluation.questions if normalise(q.question) in trained]
    assert not leaked, f"{len(leaked)} evaluation question(s) appear in the training rows: {leaked[:5]}"
