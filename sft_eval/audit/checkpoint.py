"""Checkpoint checks: does the model's vocabulary match the tokenizer's, and are the rows the chat template's
special tokens need trained at all?

Only the safetensors headers and the embedding tensors are read (never the whole model, never a pickle): a 7B
checkpoint is audited in the time it takes to read its embedding matrix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import PreTrainedTokenizerBase

from sft_eval.audit import CheckId, Finding, guarded
from sft_eval.chat import special_literals

_INPUT_EMBEDDING = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")
_OUTPUT_EMBEDDING = ("lm_head.weight", "embed_out.weight")
# A row whose norm is this far below the median row's was never updated in pretraining (Llama-3 base ships its
# chat tokens' rows at ~0): a model starting from it cannot emit that token until training moves the row.
UNTRAINED_NORM_RATIO = 0.05


@dataclass(frozen=True)
class Embedding:
    file: Path
    name: str
    rows: int


def embeddings(folder: str | Path) -> dict[str, Embedding]:
    """The input (`"input"`) and untied output (`"output"`) embedding tensors of a safetensors checkpoint, from
    its headers only; empty for a folder without safetensors weights."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        located = {name: folder / file for name, file in weight_map.items()}
    elif (folder / "model.safetensors").is_file():
        with safe_open(folder / "model.safetensors", framework="pt") as handle:
            located = dict.fromkeys(handle.keys(), folder / "model.safetensors")
    else:
        return {}
    found = {}
    for role, suffixes in (("input", _INPUT_EMBEDDING), ("output", _OUTPUT_EMBEDDING)):
        name = next((n for n in sorted(located) if n.endswith(suffixes)), None)
        if name is not None:
            with safe_open(located[name], framework="pt") as handle:
                found[role] = Embedding(located[name], name, handle.get_slice(name).get_shape()[0])
    return found


def template_token_ids(tokenizer: PreTrainedTokenizerBase, *, pad: bool = True) -> dict[str, int]:
    """The special tokens the chat template writes and the tokenizer's eos/bos (and pad), by string."""
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    tokens = [*special_literals(template), tokenizer.eos_token, tokenizer.bos_token]
    tokens += [tokenizer.pad_token] if pad else []
    ids = {}
    for token in dict.fromkeys(t for t in tokens if t):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids[token] = token_id
    return ids


def check_vocab(tokenizer: PreTrainedTokenizerBase, rows: int) -> list[Finding]:
    """The embedding must have a row for every token id, and not vastly more rows than the tokenizer has tokens
    (the model then generates ids the tokenizer cannot decode: blank answers that score as clean)."""
    size = len(tokenizer)
    beyond = {t: i for t, i in template_token_ids(tokenizer).items() if i >= rows}
    if size > rows or beyond:
        return [
            Finding(
                CheckId.CHECKPOINT_VOCAB,
                "error",
                f"the model's embedding has {rows:,} rows but the tokenizer has {size:,} tokens: ids from {rows:,} "
                "on have no row, and training or generation fails or reads another token's row",
                f"template tokens beyond the embedding: {beyond}" if beyond else f"tokenizer size {size:,}",
            )
        ]
    if rows - size > max(1024, size // 10):  # real checkpoints pad a few hundred rows for speed; not thousands
        return [
            Finding(
                CheckId.CHECKPOINT_VOCAB,
                "warning",
                f"the model's embedding has {rows:,} rows for a tokenizer of {size:,} tokens: they are not "
                "made for each other, and the model can generate ids the tokenizer cannot decode (blank answers)",
                f"{rows - size:,} rows no token maps to",
            )
        ]
    return []


def row_norms(embedding: Embedding, chunk: int = 8192) -> torch.Tensor:
    """Every row's L2 norm, read in chunks (a 7B model's embedding is a gigabyte)."""
    norms = []
    with safe_open(embedding.file, framework="pt") as handle:
        tensor = handle.get_slice(embedding.name)
        for start in range(0, embedding.rows, chunk):
            norms.append(tensor[start : start + chunk].float().norm(dim=1))
    return torch.cat(norms)


def check_untrained_tokens(tokenizer: PreTrainedTokenizerBase, tensors: dict[str, Embedding]) -> list[Finding]:
    """The template's special tokens (end-of-turn above all) must have trained rows in the base model's input and
    output embeddings. Full fine-tuning can still move an untrained row; a run that freezes the embeddings (LoRA
    without them in `modules_to_save` or `trainable_token_indices`) cannot, and the model never learns to stop."""
    findings = []
    needed = template_token_ids(tokenizer, pad=False)  # a pad row is zero by design (nn.Embedding's padding_idx)
    for role, embedding in tensors.items():
        norms = row_norms(embedding)
        median = float(norms.median())
        weak = {t: float(norms[i]) for t, i in needed.items() if i < embedding.rows}
        weak = {t: n for t, n in weak.items() if n < UNTRAINED_NORM_RATIO * median}
        if weak:
            listed = ", ".join(f"{t!r} (norm {n:.2g})" for t, n in weak.items())
            findings.append(
                Finding(
                    CheckId.CHECKPOINT_UNTRAINED_TOKENS,
                    "warning",
                    f"the {role} embedding rows of {listed} are untrained (below {UNTRAINED_NORM_RATIO:.0%} of the "
                    f"median row norm {median:.2g}): full fine-tuning must move them; a LoRA run that freezes the "
                    "embeddings never learns to write them, and a model that cannot write its end-of-turn token "
                    "never stops",
                    f"{embedding.name} in {embedding.file.name}",
                )
            )
    return findings


def audit_checkpoint(tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> list[Finding]:
    """The checkpoint checks on a model folder (nothing for a folder without safetensors weights)."""
    tensors = embeddings(folder) if Path(folder).is_dir() else {}
    if "input" not in tensors:
        return []
    return guarded(CheckId.CHECKPOINT_VOCAB, lambda: check_vocab(tokenizer, tensors["input"].rows)) + guarded(
        CheckId.CHECKPOINT_UNTRAINED_TOKENS, lambda: check_untrained_tokens(tokenizer, tensors)
    )
