"""Checkpoint checks fire on a model whose vocabulary does not fit its tokenizer and on untrained template-token
rows, on real safetensors checkpoints written here, and stay quiet on a checkpoint made for its tokenizer."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file

from sft_eval.audit.checkpoint import audit_checkpoint, check_untrained_tokens, check_vocab, embeddings
from sft_eval.models import save_random_checkpoint

SMALL = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}


def checkpoint(folder, tokenizer, **config):
    return save_random_checkpoint(folder, tokenizer, **{**SMALL, "vocab_size": len(tokenizer), **config})


def zero_row(folder, tensor: str, row: int) -> None:
    weights = load_file(folder / "model.safetensors")
    weights[tensor][row] = 0.0
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def severities(findings, check):
    return [f.severity for f in findings if f.check == check]


@pytest.mark.parametrize(
    ("extra_rows", "expected"),
    [(-100, ["error"]), (0, []), (64, []), (48_000, ["warning"])],
    ids=["fewer-rows-than-tokens", "same", "padded-for-speed", "another-models-vocabulary"],
)
def test_vocab(sft_tokenizer, tmp_path, extra_rows, expected):
    folder = checkpoint(tmp_path / "m", sft_tokenizer, vocab_size=len(sft_tokenizer) + extra_rows)
    rows = embeddings(folder)["input"].rows
    assert rows == len(sft_tokenizer) + extra_rows
    assert severities(check_vocab(sft_tokenizer, rows), "checkpoint.vocab") == expected


def test_vocab_names_template_tokens_beyond_the_embedding(sft_tokenizer):
    end_of_turn = sft_tokenizer.convert_tokens_to_ids("<|im_end|>")
    found = check_vocab(sft_tokenizer, end_of_turn)  # rows stop just before the end-of-turn token's id
    assert severities(found, "checkpoint.vocab") == ["error"] and "<|im_end|>" in found[0].evidence


def test_untrained_end_of_turn_row_fires_for_the_input_embedding(sft_tokenizer, tmp_path):
    folder = checkpoint(tmp_path / "m", sft_tokenizer)
    assert check_untrained_tokens(sft_tokenizer, embeddings(folder)) == [], "random rows all have similar norms"
    zero_row(folder, "model.embed_tokens.weight", sft_tokenizer.convert_tokens_to_ids("<|im_end|>"))
    found = check_untrained_tokens(sft_tokenizer, embeddings(folder))
    assert severities(found, "checkpoint.untrained_tokens") == ["warning"], found
    assert "'<|im_end|>'" in found[0].message and "input embedding" in found[0].message


def test_untrained_row_of_an_untied_output_embedding_fires_for_that_one(sft_tokenizer, tmp_path):
    folder = checkpoint(tmp_path / "m", sft_tokenizer, tie_word_embeddings=False)
    assert set(embeddings(folder)) == {"input", "output"}
    zero_row(folder, "lm_head.weight", sft_tokenizer.convert_tokens_to_ids("<|im_end|>"))
    found = check_untrained_tokens(sft_tokenizer, embeddings(folder))
    assert [f.message.split(" embedding")[0] for f in found] == ["the output"], found


def test_a_folder_without_safetensors_weights_has_no_checkpoint_findings(sft_tokenizer, tmp_path):
    sft_tokenizer.save_pretrained(tmp_path)
    assert audit_checkpoint(sft_tokenizer, tmp_path) == []


def test_cli_audit_of_a_stand_in_with_another_models_vocabulary(sft_tokenizer, tmp_path, cli):
    """The guide's random stand-in mistake: SmolLM2's 49,152-row shape saved beside the tiny tokenizer."""
    folder = checkpoint(tmp_path / "stand-in", sft_tokenizer, vocab_size=49_152)
    result = cli.main("audit", "--tokenizer", str(folder), "--json")
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr[-2000:]
    found = [f for f in json.loads(result.stdout)["findings"] if f["check"] == "checkpoint.vocab"]
    assert [f["severity"] for f in found] == ["warning"] and "49,152 rows" in found[0]["message"], found
