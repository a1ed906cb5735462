"""The tuned checkpoint's contract with whoever serves it: what a server reads from the folder is what training used.

Trained here or elsewhere (`[model] tuned`), a full checkpoint or a LoRA adapter folder, the folder must carry the
chat template training rendered with, stop at the end-of-turn token the template writes, keep the KV cache on, and
not sample by default (an adapter folder's config and generation config are its base's). Each check reads JSON
and template files only, never the weights.
"""

from __future__ import annotations

import pytest

from sft_eval.audit import CheckId
from sft_eval.audit.checkpoint import audit_tuned_checkpoint

CONTRACT = [
    CheckId.CHECKPOINT_TEMPLATE,
    CheckId.CHECKPOINT_EOS,
    CheckId.CHECKPOINT_USE_CACHE,
    CheckId.CHECKPOINT_SAMPLING,
]


@pytest.fixture(scope="module")
def contract(sft_pipeline, sft_tokenizer):
    # a LoRA adapter folder carries the tokenizer; the config and generation config it is served with are the base's
    configs = sft_pipeline.base_model_dir if sft_pipeline.tuned_is_adapter else None
    return audit_tuned_checkpoint(sft_tokenizer, sft_pipeline.tuned_model_dir, config_folder=configs)


@pytest.mark.parametrize("check", CONTRACT, ids=[str(c) for c in CONTRACT])
def test_tuned_checkpoint_keeps_its_contract(contract, check, sft_pipeline):
    found = [f for f in contract if f.check == check and f.severity in ("error", "warning")]
    assert not found, f"{sft_pipeline.tuned_model_dir}: " + "; ".join(f"{f.message} [{f.evidence}]" for f in found)
