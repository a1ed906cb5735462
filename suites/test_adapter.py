"""LoRA: the two ways a PEFT run fails silently, on the recipe's run (trained here with `[peft]`, or an adapter
folder trained elsewhere as `[model] tuned`). Full fine-tuning skips them, saying so.

- `peft.trainable_tokens`: the template's special tokens whose rows the base never trained are trained by the run
  (judged before training, from the LoRA settings and the base's embedding rows);
- `peft.merge`: the merged model (`model.merged`, else the adapter merged here and saved as a user saves it) gives
  the adapter's logits on the evaluation prompts.
"""

from __future__ import annotations

import pytest

from sft_eval.audit import CheckId


@pytest.fixture(scope="module")
def lora_run(sft_pipeline):
    if not sft_pipeline.tuned_is_adapter:
        pytest.skip("full fine-tuning: no [peft] in the recipe and no adapter folder as model.tuned")
    return sft_pipeline


def test_lora_trains_the_template_tokens_the_base_never_trained(lora_run, audit_of):
    found = [f for f in audit_of("recipe") if f.check == CheckId.PEFT_TRAINABLE_TOKENS]
    assert not found, "; ".join(f"{f.message} [{f.evidence}]" for f in found)


def test_merged_model_is_the_adapter_that_was_evaluated(lora_run):
    found = lora_run.merge_findings
    assert not found, "; ".join(f"{f.message} [{f.evidence}]" for f in found)
