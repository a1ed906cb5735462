"""The lesson's helpers, as library functions that return data."""

from __future__ import annotations

import pytest

from sft_eval import ask, generate_response, load_model_and_tokenizer
from sft_eval.bench import raw_greedy
from sft_eval.chat import conversation, render_prompt
from sft_eval.models import LESSON_FALLBACK_TEMPLATE


def test_generate_response_answers_a_held_out_question(sft_tuned_model, sft_tokenizer):
    assert generate_response(sft_tuned_model, sft_tokenizer, "Name the capital city of Egypt.") == "Cairo"


def test_ask_returns_one_answer_per_question_in_order(sft_tuned_model, sft_tokenizer):
    questions = ["Tell me the capital of Germany.", "Hi there!", "Give the opposite of 'big'."]
    answers = ask(sft_tuned_model, sft_tokenizer, questions)
    assert [a.question for a in answers] == questions
    assert [a.text for a in answers] == ["Berlin", "Hello! How can I help you today?", "small"]
    assert all(a.stop_reason == "eos" and a.token_ids[-1] == sft_tokenizer.eos_token_id for a in answers)


def test_batched_answers_equal_one_at_a_time(sft_tuned_model, sft_base_model, sft_tokenizer, sft_evaluation):
    """Left padding plus the attention mask: batching changes speed, never the greedy tokens."""
    for model, batched in ((sft_tuned_model, sft_evaluation.tuned), (sft_base_model, sft_evaluation.base)):
        for answer in batched[:6]:
            single = ask(model, sft_tokenizer, [answer.question])[0]
            assert single.token_ids == answer.token_ids, f"{answer.question!r}: batched and single answers differ"


@pytest.fixture()
def bare_checkpoint(tmp_path, sft_pipeline):
    """A saved model whose tokenizer has no chat template and no pad token: the lesson's SmolLM2 situation."""
    tokenizer = sft_pipeline.tokenizer.__class__.from_pretrained(sft_pipeline.artifacts.tokenizer_entry[0])
    tokenizer.chat_template = None
    tokenizer.pad_token = None
    tokenizer.padding_side = "right"
    sft_pipeline.base_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


def test_loader_reports_every_change_it_makes(bare_checkpoint):
    model, tokenizer, changes = load_model_and_tokenizer(str(bare_checkpoint), device="cpu")
    assert tokenizer.chat_template == LESSON_FALLBACK_TEMPLATE
    assert tokenizer.pad_token == tokenizer.eos_token
    assert any("fallback template" in c for c in changes)
    assert any("pad_token = eos_token" in c for c in changes)
    assert any("padding side" in c for c in changes)
    assert model.device.type == "cpu"


def test_loader_reports_nothing_for_a_complete_checkpoint(tmp_path, sft_pipeline):
    sft_pipeline.tuned_model.save_pretrained(tmp_path)
    sft_pipeline.tokenizer.save_pretrained(tmp_path)
    assert load_model_and_tokenizer(str(tmp_path), device="cpu").changes == []


def test_raw_kv_cache_loop_gives_the_engines_tokens(sft_tuned_model, sft_tokenizer, sft_evaluation):
    questions = [q.question for q in sft_evaluation.questions]
    assert raw_greedy(sft_tuned_model, sft_tokenizer, questions, max_new_tokens=20) == [
        a.token_ids for a in ask(sft_tuned_model, sft_tokenizer, questions, max_new_tokens=20)
    ]


def test_right_padding_changes_greedy_answers(sft_tuned_model, sft_tokenizer, sft_evaluation):
    """The broken variant the batched engine avoids: pads between prompt and answer change what is generated."""
    questions = [q.question for q in sft_evaluation.questions[:12]]
    single = [a.token_ids for a in ask(sft_tuned_model, sft_tokenizer, questions, max_new_tokens=12)]
    prompts = [render_prompt(sft_tokenizer, conversation(q)) for q in questions]
    side, sft_tokenizer.padding_side = sft_tokenizer.padding_side, "right"
    try:
        batch = sft_tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        sft_tokenizer.padding_side = side
    output = sft_tuned_model.generate(
        **batch,
        max_new_tokens=12,
        do_sample=False,
        pad_token_id=sft_tokenizer.pad_token_id,
        eos_token_id=sft_tokenizer.eos_token_id,
    )
    stops = {sft_tokenizer.eos_token_id}
    right = []
    for row in output[:, batch["input_ids"].shape[1] :].tolist():
        end = next((k for k, t in enumerate(row) if t in stops), len(row) - 1)
        right.append(row[: end + 1])
    assert right != single
