"""Label checks: does the recipe's own trainer train the tokens it should, ending on the end-of-turn token?

The batch inspected is the real one: TRL's `SFTTrainer` is built with the recipe's `SFTConfig`, tokenizer and
rows, and its prepared dataset is collated by its own data collator. What is expected is derived separately,
from the rendered conversation and the tokenizer's offsets, so a template or masking bug cannot hide by
agreeing with itself. TRL silently drops rows left with no trainable token; those are counted here.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sft_eval.audit import CheckId, Finding
from sft_eval.chat import check_rows_render, render
from sft_eval.data import Rows, head, rows_dataset
from sft_eval.errors import SftEvalError
from sft_eval.recipe import Recipe
from sft_eval.trainer_config import sft_config

AUDIT_ROWS = 512  # the first rows of a large dataset are a sample, and the evidence says so
ROW_KEY = "sft_eval_row"


@dataclass(frozen=True)
class TrainerBatch:
    """The recipe trainer's collated rows, unpadded, each with the index of the source row it came from."""

    rows_in: int
    source: list[int]
    input_ids: list[list[int]]
    labels: list[list[int]]
    max_length: int | None
    assistant_only: bool
    completion_only: bool
    chat_template: str | None  # the template TRL rendered with (it swaps in a training template when it must)


def trainer_batch(
    recipe: Recipe,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Rows,
    *,
    limit: int | None = AUDIT_ROWS,
) -> TrainerBatch:
    """Build the recipe's SFTTrainer on `rows` (the first `limit`; None: all) and collate its prepared dataset."""
    from trl import SFTTrainer

    sample = [dict(row, **{ROW_KEY: i}) for i, row in enumerate(head(rows, len(rows) if limit is None else limit))]
    tokenizer = copy.deepcopy(tokenizer)  # the trainer may set its pad token
    with tempfile.TemporaryDirectory() as out:
        config, _ = sft_config(recipe, out)
        trainer = SFTTrainer(model=model, args=config, train_dataset=rows_dataset(sample), processing_class=tokenizer)
        prepared: Any = trainer.train_dataset  # a map-style Dataset: SFTTrainer prepared it
        source, input_ids, labels = [], [], []
        for start in range(0, len(prepared), 64):
            chunk = prepared[start : start + 64]
            features = [
                {"input_ids": i, "labels": lab} for i, lab in zip(chunk["input_ids"], chunk["labels"], strict=True)
            ]
            batch = trainer.data_collator(features)
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            for row, length in enumerate(lengths):
                input_ids.append(batch["input_ids"][row, :length].tolist())
                labels.append(batch["labels"][row, :length].tolist())
            source += chunk[ROW_KEY]
    return TrainerBatch(
        rows_in=len(sample),
        source=source,
        input_ids=input_ids,
        labels=labels,
        max_length=config.max_length,
        assistant_only=bool(config.assistant_only_loss),
        completion_only=bool(trainer.completion_only_loss),
        chat_template=trainer.chat_template or tokenizer.chat_template,
    )


def _tokens(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[str]:
    return list(tokenizer.convert_ids_to_tokens(ids))


def check_eos(batch: TrainerBatch, tokenizer: PreTrainedTokenizerBase) -> list[Finding]:
    """Each row's last trainable (non-blank) label must be the end-of-turn token: else the model never stops."""
    eos = tokenizer.eos_token_id
    bad, truncated = [], 0
    for k, (ids, labels) in enumerate(zip(batch.input_ids, batch.labels, strict=True)):
        trained = [t for t in labels if t != -100 and str(tokenizer.decode([t])).strip()]
        if not trained or trained[-1] != eos:
            bad.append(k)
            truncated += batch.max_length is not None and len(ids) >= batch.max_length
    if not bad:
        return []
    k = bad[0]
    last = [t for t in batch.labels[k] if t != -100][-5:]
    share = len(bad) / len(batch.labels)
    cut = f"; {truncated} of them cut by max_length={batch.max_length}" if truncated else ""
    return [
        Finding(
            CheckId.LABELS_EOS,
            "error",
            f"{len(bad)} of {len(batch.labels)} rows ({share:.0%}) do not end their trainable labels on "
            f"{tokenizer.eos_token!r}{cut}: the model is not taught to stop there",
            f"row {batch.source[k]}: last trainable tokens {_tokens(tokenizer, last)}",
        )
    ]


def _regions(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, Any]], template: str | None
) -> tuple[str, list[tuple[int, int, int, int]]]:
    """The rendered text and, per assistant turn, (allowed start, content start, content end, turn end) offsets.

    Allowed: from the end of the generation prompt to the end of the turn's end-of-turn token (a think block
    may be trained). Required: the content and that end-of-turn token.
    """
    text = render(tokenizer, messages, chat_template=template)
    regions, cursor = [], 0
    eos = tokenizer.eos_token or ""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = render(tokenizer, messages[:i], add_generation_prompt=True, chat_template=template)
            cursor = max(cursor, len(prompt)) if text.startswith(prompt) else cursor
        allowed = cursor  # search after the header: '<|im_start|>' contains 'star'
        start = text.find(message["content"], cursor) if message.get("content") else -1
        if start < 0:
            continue
        end = cursor = start + len(message["content"])
        if message["role"] != "assistant":
            continue
        after = text[end:]
        closes = bool(eos) and after.lstrip().startswith(eos)
        turn_end = end + (len(after) - len(after.lstrip()) + len(eos) if closes else 0)
        regions.append((allowed, start, end, turn_end))
    return text, regions


def check_scope(batch: TrainerBatch, tokenizer: PreTrainedTokenizerBase, rows: Rows) -> list[Finding]:
    """With assistant-only or completion-only loss: train exactly the answers and their end-of-turn tokens."""
    if not (batch.assistant_only or batch.completion_only):
        return []
    findings = []
    dropped = sorted(set(range(batch.rows_in)) - set(batch.source))
    if dropped:
        findings.append(
            Finding(
                CheckId.LABELS_SCOPE,
                "error",
                f"{len(dropped)} of {batch.rows_in} rows have no trainable token (TRL drops them without a word)",
                f"rows {dropped[:10]}",
            )
        )
    if batch.assistant_only:
        from trl.chat_template_utils import is_chat_template_stop_token_trained

        if not is_chat_template_stop_token_trained(tokenizer, chat_template=batch.chat_template):
            findings.append(
                Finding(
                    CheckId.LABELS_SCOPE,
                    "error",
                    "the template's {% generation %} block leaves the assistant's end-of-turn token out of the loss "
                    "mask (trl's is_chat_template_stop_token_trained): the model never learns to stop",
                    f"template: {(batch.chat_template or '')[:200]!r}",
                )
            )
    outside, missing = [], []
    for k, source in enumerate(batch.source):
        row = rows[source]
        if "messages" not in row:
            continue
        text, regions = _regions(tokenizer, row["messages"], batch.chat_template)
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, labels = batch.input_ids[k], batch.labels[k]
        if encoded["input_ids"][: len(ids)] != ids:
            continue  # the trainer tokenized differently (e.g. a processor); nothing to align against
        for position, ((a, b), label) in enumerate(zip(encoded["offset_mapping"], labels, strict=False)):
            allowed = any(lo <= a and b <= hi for lo, _, _, hi in regions)
            required = any(a < end and b > start for _, start, end, _ in regions) or any(
                end <= a and b <= hi and hi > end for _, _, end, hi in regions
            )
            if label != -100 and not allowed:
                outside.append((source, position, ids[position]))
            elif label == -100 and required:
                missing.append((source, position, ids[position]))
    for found, what in (
        (outside, "trainable tokens lie outside the assistant turns"),
        (missing, "tokens of an assistant answer or its end-of-turn token are not trainable"),
    ):
        if found:
            rows_hit = sorted({s for s, _, _ in found})
            source, position, token = found[0]
            findings.append(
                Finding(
                    CheckId.LABELS_SCOPE,
                    "error",
                    f"{what} ({len(found)} tokens in {len(rows_hit)} rows)",
                    f"row {source}, token {position}: {_tokens(tokenizer, [token])[0]!r}",
                )
            )
    return findings


PACKING_ROWS = 16  # rows packed for the contamination check: enough for several packs of two or more


@dataclass(frozen=True)
class PackedRow:
    """One source row found inside a pack, after another row: where, and how its predictions compare."""

    pack: int
    offset: int
    length: int
    max_logprob_difference: float  # packed vs the row alone, over the row's own positions
    boundary_label: int  # the label at the row's first token in the pack (-100: not trained across the seam)


def packed_rows(
    recipe: Recipe, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: Rows
) -> tuple[list[PackedRow], int]:
    """The recipe's own packed batch (its SFTTrainer, collator and [sft]) against each row run alone: every row
    found whole inside a pack after another row, with how far its log-probabilities moved. Returns those rows and
    how many packs were built."""
    import torch
    from trl import SFTTrainer

    sample = head(rows, PACKING_ROWS)
    tokenizer = copy.deepcopy(tokenizer)
    prepared = {}
    with tempfile.TemporaryDirectory() as out:
        for packed in (True, False):
            config, _ = sft_config(recipe.with_sft(packing=packed), out)
            trainer = SFTTrainer(
                model=model, args=config, train_dataset=rows_dataset(sample), processing_class=tokenizer
            )
            prepared[packed] = trainer
        packs: Any = prepared[True].train_dataset
        batch = prepared[True].data_collator([packs[i] for i in range(len(packs))])
        unpacked: Any = prepared[False].train_dataset
        alone = [ids for ids in unpacked["input_ids"] if len(ids) > 1]
    model.eval()
    inputs = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in batch.items() if k != "labels"}
    found = []
    with torch.no_grad():
        packed_logprobs = model(**inputs).logits.float().log_softmax(-1)
        for p, sequence in enumerate(batch["input_ids"].tolist()):
            for ids in alone:
                offset = _find(sequence, ids)
                if offset is None:
                    continue
                own = model(input_ids=torch.tensor([ids], device=model.device)).logits.float().log_softmax(-1)[0]
                moved = (packed_logprobs[p, offset : offset + len(ids)] - own).abs().max().item()
                label = int(batch["labels"][p, offset])
                found.append(PackedRow(p, offset, len(ids), moved, label))
    return found, len(packs)


def _find(sequence: list[int], ids: list[int]) -> int | None:
    """The first offset after 0 where `ids` lies whole in `sequence` (a row packed after another one)."""
    for offset in range(1, len(sequence) - len(ids) + 1):
        if sequence[offset] == ids[0] and sequence[offset : offset + len(ids)] == ids:
            return offset
    return None


def check_packing(recipe: Recipe, found: list[PackedRow], packs: int, dtype: Any) -> list[Finding]:
    """With `sft.packing`, each row must be trained as if alone: its predictions unchanged by the rows packed before
    it (TRL's padding-free packing with position ids, and an attention that honours them), and its first token not
    trained as the continuation of the previous row."""
    import torch

    tolerance = 1e-3 if dtype == torch.float32 else 5e-2
    strategy = recipe.sft.get("packing_strategy", "bfd")
    findings = []
    mixed = [r for r in found if r.max_logprob_difference > tolerance]
    if mixed:
        worst = max(mixed, key=lambda r: r.max_logprob_difference)
        findings.append(
            Finding(
                CheckId.LABELS_PACKING,
                "error",
                f"packed rows attend to the rows packed before them: {len(mixed)} of {len(found)} rows found inside "
                f"a pack predict differently than alone (packing_strategy={strategy!r}), so each trains on its "
                "neighbours' text; use TRL's padding-free 'bfd' packing with an attention that honours position ids",
                f"pack {worst.pack}, offset {worst.offset}: log-probs moved by up to "
                f"{worst.max_logprob_difference:.3g} (tolerance {tolerance:g})",
            )
        )
    seams = [r for r in found if r.boundary_label != -100]
    if seams:
        findings.append(
            Finding(
                CheckId.LABELS_PACKING,
                "error",
                f"{len(seams)} of {len(found)} packed rows have their first token trained as the continuation of "
                "the row before them: the model learns to run one example into the next",
                f"pack {seams[0].pack}, offset {seams[0].offset}: label {seams[0].boundary_label}",
            )
        )
    if not found:
        findings.append(
            Finding(
                CheckId.LABELS_PACKING,
                "info",
                f"no pack of the first {PACKING_ROWS} rows held two whole rows ({packs} pack(s)): packing not checked",
                "",
            )
        )
    return findings


def audit_labels(
    recipe: Recipe, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: Rows
) -> list[Finding]:
    """`labels.eos` and `labels.scope` on the recipe trainer's own batch (per row: unpacked, as TRL tokenizes
    before it packs), and with `sft.packing` `labels.packing` on its packed batch."""
    try:  # the trainer renders every sampled row unbounded: they are rendered under the limits first
        check_rows_render(tokenizer, head(rows, AUDIT_ROWS))
    except SftEvalError as exc:
        return [Finding(CheckId.LABELS_SCOPE, "error", f"labels not checked: {exc}", "")]
    packing = bool(recipe.sft.get("packing"))
    batch = trainer_batch(recipe.with_sft(packing=False) if packing else recipe, model, tokenizer, rows)
    sampled = f" (first {AUDIT_ROWS} of {len(rows)} rows)" if len(rows) > AUDIT_ROWS else ""
    findings = check_eos(batch, tokenizer) + check_scope(batch, tokenizer, rows)
    findings = [Finding(f.check, f.severity, f.message + sampled, f.evidence) for f in findings]
    if packing:
        found, packs = packed_rows(recipe, model, tokenizer, rows)
        findings += check_packing(recipe, found, packs, model.dtype)
    return findings
