"""labels.eos and labels.scope fire on the recipe trainer's real batch when it is broken, and only then."""

from __future__ import annotations

import copy

import pytest

from sft_eval.audit.labels import audit_labels
from sft_eval.data import head
from sft_eval.recipe import DEFAULT_RECIPE, load_recipe

ROWS = [
    {"messages": [{"role": "user", "content": f"Echo the word '{w}'."}, {"role": "assistant", "content": w}]}
    for w in ("star", "river", "garden", "cloud")
] + [
    {
        "messages": [
            {"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Hello! How can I help you today?"},
            {"role": "user", "content": "Translate 'cat' to French."},
            {"role": "assistant", "content": "chat"},
        ]
    }
]


def recipe_with(**sft):
    base = load_recipe(DEFAULT_RECIPE)
    return base.with_sft(**sft)


@pytest.fixture()
def labels_of(sft_pipeline, sft_tokenizer):
    def audit(recipe=None, template=None, rows=ROWS):
        tok = copy.deepcopy(sft_tokenizer)
        if template is not None:
            tok.chat_template = template
        findings = audit_labels(recipe or sft_pipeline.recipe, sft_pipeline.load_base_model(), tok, rows)
        return [f for f in findings if f.severity == "error"]

    return audit


def test_the_default_recipe_trains_exactly_the_answers(labels_of, sft_pipeline):
    assert labels_of(rows=sft_pipeline.rows) == []


def test_labels_eos_fires_when_max_length_cuts_the_answers(labels_of):
    found = [f for f in labels_of(recipe_with(max_length=20)) if f.check == "labels.eos"]
    assert found and "cut by max_length=20" in found[0].message, found


def test_labels_eos_and_scope_fire_when_the_generation_block_leaves_out_the_end_of_turn(labels_of, sft_tokenizer):
    broken = sft_tokenizer.chat_template.replace(
        "{{- message['content'] + '<|im_end|>' -}}\n{%- endgeneration -%}",
        "{{- message['content'] -}}\n{%- endgeneration -%}\n{{- '<|im_end|>' -}}",
    )
    assert broken != sft_tokenizer.chat_template
    found = {f.check: f for f in labels_of(template=broken)}
    assert "labels.eos" in found and "5 of 5 rows (100%)" in found["labels.eos"].message
    scope = [f.message for f in labels_of(template=broken) if f.check == "labels.scope"]
    assert any("is_chat_template_stop_token_trained" in m for m in scope)
    assert any("end-of-turn token are not trainable" in m for m in scope)


def test_labels_scope_fires_when_user_turns_are_trained(labels_of, sft_tokenizer):
    broken = "{%- generation -%}" + sft_tokenizer.chat_template + "{%- endgeneration -%}"
    found = [f for f in labels_of(template=broken) if f.check == "labels.scope"]
    assert any("outside the assistant turns" in f.message for f in found), found


def test_labels_scope_counts_rows_the_trainer_drops(labels_of):
    long_prompt = {"messages": [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "ok"}]}
    found = [f for f in labels_of(rows=[*ROWS, long_prompt]) if f.check == "labels.scope"]
    assert found and found[0].message.startswith("1 of 6 rows have no trainable token"), found
    assert "rows [5]" in found[0].evidence


def test_full_sequence_loss_skips_scope_but_still_checks_eos(labels_of):
    assert labels_of(recipe_with(assistant_only_loss=False)) == []


def test_bfd_packing_keeps_each_row_as_if_alone(sft_pipeline, sft_tokenizer):
    """Issue 15: TRL's padding-free 'bfd' packing with position ids, on transformers' sdpa attention: every row
    inside a pack predicts as it does alone, and no row's first token is trained across the seam."""
    recipe = recipe_with(packing=True, max_length=64)
    findings = audit_labels(recipe, sft_pipeline.load_base_model(), sft_tokenizer, head(sft_pipeline.rows, 16))
    assert [f for f in findings if f.check == "labels.packing"] == [], findings
    assert not [f for f in findings if f.severity == "error"], findings


def test_wrapped_packing_mixes_rows_and_is_caught(sft_pipeline, sft_tokenizer):
    """The broken case: 'wrapped' packing cuts the concatenated rows into blocks with one causal mask, so a row
    attends to the rows before it in its block."""
    recipe = recipe_with(packing=True, packing_strategy="wrapped", max_length=64)
    findings = audit_labels(recipe, sft_pipeline.load_base_model(), sft_tokenizer, head(sft_pipeline.rows, 16))
    found = [f for f in findings if f.check == "labels.packing" and f.severity == "error"]
    assert found and "attend to the rows packed before them" in found[0].message, findings
