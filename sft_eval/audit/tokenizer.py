"""Tokenizer checks: will padding hide the token the model must learn to emit?

The pad check collates a real batch with the collator training uses (TRL's, by default) and looks at the
labels under each end-of-turn token: TRL's collator keeps them when pad = eos, transformers'
`DataCollatorForLanguageModeling(mlm=False)` masks every pad id, and so every eos, and the model never
learns to stop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from sft_eval.audit import CheckId, Finding
from sft_eval.audit.template import EXCHANGES
from sft_eval.chat import render


def trl_collator(tokenizer: PreTrainedTokenizerBase) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """The collator SFTTrainer builds for language-modeling data, with its pad fallback (pad, else eos)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return DataCollatorForLanguageModeling(pad_token_id=pad)


def check_pad(
    tokenizer: PreTrainedTokenizerBase, collator: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None
) -> list[Finding]:
    """No pad token; pad = eos with a collator that masks eos labels; right padding for generation."""
    findings = []
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token_id is None:
        findings.append(
            Finding(
                CheckId.TOKENIZER_PAD,
                "warning",
                "no pad token: TRL pads with eos instead, and any collator that masks pad ids then masks eos",
                f"eos {tokenizer.eos_token!r} (id {eos})",
            )
        )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if pad == eos and eos is not None:
        conversations = [EXCHANGES[:2], EXCHANGES]  # different lengths, so the batch is padded
        features = [
            {"input_ids": tokenizer(render(tokenizer, c), add_special_tokens=False)["input_ids"]} for c in conversations
        ]
        batch = (collator or trl_collator(tokenizer))(features)
        ids, labels = torch.as_tensor(batch["input_ids"]), torch.as_tensor(batch["labels"])
        real = torch.as_tensor(batch.get("attention_mask", torch.ones_like(ids))).bool()
        at_eos = (ids == eos) & real
        masked = int((labels[at_eos] == -100).sum())
        if masked:
            findings.append(
                Finding(
                    CheckId.TOKENIZER_PAD,
                    "error",
                    f"pad = eos ({tokenizer.eos_token!r}) and the collator masks the labels of {masked} of "
                    f"{int(at_eos.sum())} end-of-turn tokens: the model never learns to stop",
                    f"row 0 input_ids {ids[0].tolist()} labels {labels[0].tolist()}",
                )
            )
        else:
            findings.append(
                Finding(
                    CheckId.TOKENIZER_PAD,
                    "info",
                    f"pad = eos ({tokenizer.eos_token!r}); this collator keeps end-of-turn labels, a collator that "
                    "masks pad ids would not",
                    f"{int(at_eos.sum())} end-of-turn tokens, all trainable",
                )
            )
    if tokenizer.padding_side == "right":
        findings.append(
            Finding(
                CheckId.TOKENIZER_PAD,
                "warning",
                "padding side is right: batched generation puts pads between prompt and answer; use left padding",
                f"tokenizer.padding_side = {tokenizer.padding_side!r}",
            )
        )
    return findings
