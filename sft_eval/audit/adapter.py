"""LoRA checks: the two ways a PEFT run fails silently.

`peft.trainable_tokens`, judged before training from the LoRA settings and the base's embedding rows: a special
token the chat template needs (end-of-turn above all) whose row is untrained in the base stays untrained under
LoRA unless the run trains that row (`row_trained` says which settings do, as TRL's SFTTrainer trains): the model
never learns to write its end-of-turn token and never stops, while the loss looks fine.

`peft.merge`, judged on the trained adapter: the model served after `merge_and_unload` (or the merged folder the
recipe names) must give the adapter's logits on the evaluation prompts; rows lost in a merge (resized embeddings,
tied weights, a hand-written merge that skips `modules_to_save`) make the served model another one than the one
evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from sft_eval.adapters import recorded_base
from sft_eval.audit import CheckId, Finding
from sft_eval.audit.checkpoint import UNTRAINED_NORM_RATIO, Embedding, embeddings, row_norms, template_token_ids

# The merged model's logits may differ from the adapter's by rounding only: W + s*B@A is summed once in the
# weights' dtype instead of in every forward. Measured on the tiny LoRA recipe in float32 (merge, save, load back):
# 1.7e-5 absolute, 1.1e-6 of the largest |logit|, so 1e-4 leaves a ninetyfold margin; a hand-rolled merge that
# lost the trained embedding: 17.9, 1.2 of it. bfloat16 keeps 8 bits of mantissa (rounding 4e-3 per weight): its
# tolerance is set from that, not measured.
MERGE_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def _module(embedding: Embedding) -> str:
    return embedding.name.removesuffix(".weight")


def _named(module: str, names: Sequence[str]) -> bool:
    """PEFT's suffix match of module names (`embed_tokens` names `model.embed_tokens`)."""
    return any(module == n or module.endswith("." + n) for n in names)


def row_trained(lora: Mapping[str, Any], role: str, token_id: int, *, embed: str, head: str, tied: bool) -> bool:
    """Whether a LoRA run as TRL's `SFTTrainer` trains it moves row `token_id` of the input embedding (`role`
    "input", module `embed`) or of the output head (`"output"`, module `head`; with `tied`, one matrix for both).

    `modules_to_save`, LoRA on the embedding (`target_modules`) and `trainable_token_indices` train input rows.
    TRL 1.16 computes the loss from `lm_head.weight` directly, so only a `modules_to_save` copy of the head trains
    output rows (TRL refuses LoRA on the head). Measured with PEFT 0.21 on the tiny tied model: a copy of the
    embedding leaves the head on the frozen original unless `ensure_weight_tying` ties them again (PEFT's table in
    huggingface/peft#2864: "treat as separate"); `trainable_token_indices` on a tied model stops TRL's fused head
    with an AttributeError (loud, so not judged here)."""
    saved = list(lora.get("modules_to_save") or [])
    targets = lora.get("target_modules")
    indices = lora.get("trainable_token_indices")

    def embedding_trained() -> bool:
        if _named(embed, saved):
            return True
        if isinstance(targets, str) and targets != "all-linear" and re.fullmatch(targets, embed):
            return True
        if isinstance(targets, (list, tuple)) and _named(embed, targets):
            return True
        if isinstance(indices, (list, tuple)):
            return token_id in indices
        return isinstance(indices, Mapping) and any(_named(embed, [n]) and token_id in i for n, i in indices.items())

    if role == "input":
        return embedding_trained()
    if _named(head, saved):
        return True
    return tied and bool(lora.get("ensure_weight_tying")) and embedding_trained()


def check_trainable_tokens(
    tokenizer: PreTrainedTokenizerBase, base_dir: str | Path, lora: Mapping[str, Any]
) -> list[Finding]:
    """Every special token the template writes whose base row is untrained (or missing) must be trained by the
    LoRA run, as input and as output row; `lora`: the recipe's `[peft]` or the adapter's config. Reads only the
    embedding tensors."""
    tensors = embeddings(base_dir)
    if "input" not in tensors:
        return []
    tied = "output" not in tensors  # one matrix read as the input embedding and the output head
    embed = _module(tensors["input"])
    head = _module(tensors["output"]) if not tied else "lm_head"
    frozen = []
    norms = {}
    for role in ("input", "output"):
        embedding = tensors.get(role, tensors["input"])
        if embedding.name not in norms:
            norms[embedding.name] = row_norms(embedding)
        row_norm = norms[embedding.name]
        median = float(row_norm.median())
        for token, token_id in template_token_ids(tokenizer, pad=False).items():
            norm = float(row_norm[token_id]) if token_id < embedding.rows else 0.0
            if norm >= UNTRAINED_NORM_RATIO * median:
                continue
            if not row_trained(lora, role, token_id, embed=embed, head=head, tied=tied):
                frozen.append((role, token, token_id, norm, median))
    if not frozen:
        return []
    ids = sorted({token_id for _, _, token_id, _, _ in frozen})
    listed = ", ".join(f"{t!r} (id {i}, {role} row norm {n:.2g}, median {m:.2g})" for role, t, i, n, m in frozen)
    leaf_embed, leaf_head = embed.rsplit(".", 1)[-1], head.rsplit(".", 1)[-1]
    fix = (
        f'`modules_to_save = ["{leaf_embed}"]` with `ensure_weight_tying = true` (the head is tied to it)'
        if tied
        else f'`modules_to_save = ["{leaf_embed}", "{leaf_head}"]`'
    )
    return [
        Finding(
            CheckId.PEFT_TRAINABLE_TOKENS,
            "error",
            f"the LoRA run leaves untrained rows of template tokens frozen: {listed}; LoRA never moves them, so the "
            "model cannot learn to read or write those tokens (without an output row for its end-of-turn token it "
            f"never stops) while the loss still falls; train them: {fix}",
            f"ids {ids}; modules_to_save {lora.get('modules_to_save')!r}, trainable_token_indices "
            f"{lora.get('trainable_token_indices')!r}, ensure_weight_tying {lora.get('ensure_weight_tying')!r}",
        )
    ]


MERGE_BATCH = 4  # prompts per forward: logits are prompts x positions x vocabulary (150k for Qwen) floats


def check_adapter_base(adapter: str | Path, base_dir: str | Path, base_spec: str) -> list[Finding]:
    """An adapter trained on a hub model (its `base_model_name_or_path`) applied to a local `model.base` folder
    that does not name that model: every module's shape fits (a misfit is refused before this), so the adapter
    applies, but nothing ties the folder's weights to the model it was trained on. Worth knowing, not wrong."""
    recorded = recorded_base(Path(adapter), base_spec, Path(base_dir))
    if recorded is None:
        return []
    return [
        Finding(
            CheckId.PEFT_BASE,
            "info",
            f"the adapter was trained on {recorded!r} (its base_model_name_or_path) and is applied to model.base, "
            f"the local folder {base_dir}: its shapes fit, but if that folder is not {recorded}'s weights the "
            "answers judged are not the adapter's",
            f"{Path(adapter) / 'adapter_config.json'}: base_model_name_or_path = {recorded!r}",
        )
    ]


@torch.no_grad()
def check_merge(
    adapted: Any, merged: Any, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], merged_name: str
) -> list[Finding]:
    """The adapter applied (`adapted`, a PeftModel) and the merged model (`merged`, as served) give the same
    next-token logits at every position of `prompts` (rendered evaluation prompts) within `MERGE_TOLERANCE` of the
    largest |logit| for the weights' dtype; `merged_name` says where the merged model came from. Compared
    `MERGE_BATCH` prompts at a time, keeping only the largest differences."""
    scale, worst, greedy, by_token = 0.0, 0.0, 0, None
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(prompts), MERGE_BATCH):
            batch = tokenizer(
                list(prompts[start : start + MERGE_BATCH]), return_tensors="pt", padding=True, add_special_tokens=False
            )
            mask = batch["attention_mask"].bool()
            ours = adapted(**batch.to(adapted.device)).logits[mask.to(adapted.device)].float().cpu()
            theirs = merged(**batch.to(merged.device)).logits[mask.to(merged.device)].float().cpu()
            last = mask.sum(dim=1).cumsum(0) - 1  # each prompt's last position among the kept rows
            greedy += int((ours[last].argmax(-1) != theirs[last].argmax(-1)).sum())
            difference = (ours - theirs).abs().amax(dim=0)
            by_token = difference if by_token is None else torch.maximum(by_token, difference)
            scale = max(scale, float(ours.abs().max()))
    finally:
        tokenizer.padding_side = side
    if by_token is None:
        return []
    dtype = next(merged.parameters()).dtype
    tolerance = MERGE_TOLERANCE.get(dtype, MERGE_TOLERANCE[torch.bfloat16])
    worst = float(by_token.max())
    if worst <= tolerance * max(scale, 1.0):
        return []
    top = by_token.topk(min(5, by_token.numel()))
    values, ids = top.values.tolist(), top.indices.tolist()
    rows = ", ".join(
        f"{tokenizer.convert_ids_to_tokens(i)!r} (id {i}) {v:.3g}" for v, i in zip(values, ids, strict=True)
    )
    return [
        Finding(
            CheckId.PEFT_MERGE,
            "error",
            f"the merged model ({merged_name}) is not the adapter that was evaluated: next-token logits differ by up "
            f"to {worst:.3g} ({worst / max(scale, 1.0):.2g} of the largest |logit|; tolerance {tolerance:g} for "
            f"{str(dtype).removeprefix('torch.')}) on {len(prompts)} evaluation prompts, and the greedy next token "
            f"differs on {greedy}",
            f"tokens whose logits differ most: {rows}",
        )
    ]
