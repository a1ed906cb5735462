"""The embedded default is what it claims: a real tokenizer, a real base model, a real SFT run."""

from __future__ import annotations

import torch
from transformers import LlamaForCausalLM

from sft_eval.artifacts import corpus
from sft_eval.models import perplexity, tiny_config
from sft_eval.tokenizer import DOCUMENT_SEPARATOR


def test_chat_tokens_are_single_special_tokens(sft_tokenizer):
    for literal in ("<|im_start|>", "<|im_end|>", sft_tokenizer.pad_token):
        ids = sft_tokenizer(literal, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, f"{literal!r} tokenizes to {sft_tokenizer.convert_ids_to_tokens(ids)}, not one token"
        assert literal in sft_tokenizer.all_special_tokens


def test_eos_is_the_end_of_turn_token_and_pad_is_distinct(sft_tokenizer):
    assert sft_tokenizer.eos_token == "<|im_end|>"
    assert sft_tokenizer.pad_token_id is not None and sft_tokenizer.pad_token_id != sft_tokenizer.eos_token_id
    assert sft_tokenizer.padding_side == "left"


def test_tokenizer_round_trips_text(sft_tokenizer):
    text = "The capital of France is Paris. Ça va? 3+4=7 \u2014 \U0001f600"
    assert sft_tokenizer.decode(sft_tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_base_model_learned_prose_in_pretraining(sft_tokenizer, sft_base_model):
    """Pretraining must make held-in prose far more likely than an untrained model of the same shape finds it."""
    torch.manual_seed(0)
    untrained = LlamaForCausalLM(tiny_config(sft_tokenizer)).eval()
    text = " ".join(corpus()[:3])
    trained_ppl, untrained_ppl = (
        perplexity(sft_base_model, sft_tokenizer, text),
        perplexity(untrained, sft_tokenizer, text),
    )
    assert trained_ppl < untrained_ppl / 10, f"perplexity {trained_ppl:.1f} pretrained vs {untrained_ppl:.1f} untrained"


def test_base_model_is_small_and_never_saw_a_chat_turn(sft_base_model, sft_tokenizer):
    assert 0.5e6 < sft_base_model.num_parameters() < 5e6
    assert sft_tokenizer.eos_token != DOCUMENT_SEPARATOR
    assert not any("<|im_start|>" in doc or "<|im_end|>" in doc for doc in corpus())


def test_training_run_is_a_trl_sft_run_with_the_recipes_settings(sft_training_run, sft_recipe):
    assert sft_training_run.sft_config["learning_rate"] == sft_recipe.sft["learning_rate"]
    assert sft_training_run.sft_config["per_device_train_batch_size"] == sft_recipe.sft["per_device_train_batch_size"]
    assert sft_training_run.global_step == sft_training_run.max_steps > 0
    assert sft_training_run.train_rows > 300
