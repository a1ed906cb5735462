"""Teacher-forced scoring: how likely a model finds given tokens, with no generation.

A `Scored` sequence is token ids with labels as a trainer gives them (unshifted; -100 where nothing is scored).
`score_sequences` runs a model over many of them in padded batches, longest first, and returns each sequence's
per-token log-probabilities of its labelled tokens: the held-out loss, the expected answer's likelihood and the
general-text loss (forgetting) are all means of these. The signals' records and their judgement (`Signals`)
are plain data built from these numbers; nothing here loads a model or reads a file.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sft_eval import schema
from sft_eval.sanity import PairedDifference, paired_bootstrap

IGNORE = -100  # the label of a token nothing is scored on (transformers' and TRL's ignore index)
LOGITS_BUDGET = 1 << 26  # logit values per forward pass (256 MiB in float32): rows x longest row x vocabulary


def batch_tokens_for(model: Any) -> int:
    """Padded tokens per forward pass so that a batch's logits stay within `LOGITS_BUDGET`, whatever the
    vocabulary (SmolLM2's 49,152: 1,365 tokens; Qwen's 151,936: 441); at least 256."""
    vocabulary = int(getattr(model.config, "vocab_size", 0) or 32_000)
    return max(256, LOGITS_BUDGET // vocabulary)


@dataclass(frozen=True)
class Scored:
    """One teacher-forced sequence: `input_ids`, and `labels` (same length) naming the tokens scored."""

    input_ids: list[int]
    labels: list[int]


def _forward_batches(model: Any, sequences: Sequence[Scored], batch_tokens: int | None) -> Iterator[tuple[Any, ...]]:
    """Runs `model` over `sequences` in padded batches, longest first (at most `batch_tokens` padded tokens a
    batch), in inference mode: yields (the sequences' indices, the logits, the targets (position t's label is
    label t + 1; -100 where nothing is scored), the mask of scored positions)."""
    import torch

    batch_tokens = batch_tokens or batch_tokens_for(model)
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].input_ids))
    device = next(model.parameters()).device
    start = 0
    while start < len(order):
        longest = max(len(sequences[order[start]].input_ids), 1)
        rows = order[start : start + max(1, batch_tokens // longest)]
        start += len(rows)
        ids = torch.zeros((len(rows), longest), dtype=torch.long)
        labels = torch.full((len(rows), longest), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for r, i in enumerate(rows):
            n = len(sequences[i].input_ids)
            ids[r, :n] = torch.tensor(sequences[i].input_ids)
            labels[r, :n] = torch.tensor(sequences[i].labels)
            mask[r, :n] = 1
        # position t predicts label t + 1: the labels move left instead of the logits (a view of the logits
        # stays contiguous, so the loss reads them in place, never a copy the size of batch x length x vocabulary)
        targets = torch.cat([labels[:, 1:], torch.full((len(rows), 1), IGNORE, dtype=torch.long)], dim=1)
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            yield rows, logits, targets.to(device), targets != IGNORE


def score_sequences(model: Any, sequences: Sequence[Scored], *, batch_tokens: int | None = None) -> list[list[float]]:
    """Per sequence, the log-probability the model gives each labelled token (position t's label predicted from
    the tokens before t, as the model's own loss shifts them), in order. Batched by length (sorted, right-padded,
    at most `batch_tokens` padded tokens a batch, by default `batch_tokens_for(model)`), in inference mode,
    log-softmax in float32."""
    import torch

    out: list[list[float]] = [[] for _ in sequences]
    for rows, logits, targets, kept in _forward_batches(model, sequences, batch_tokens):
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE, reduction="none"
        ).view(len(rows), -1)
        values = (-nll).cpu()
        for r, i in enumerate(rows):
            out[i] = values[r][kept[r]].tolist()
    return out


@dataclass(frozen=True)
class TopK:
    """A sequence's labelled tokens under a model: each one's log-probability, and at each of their positions the
    model's `k` most likely tokens (ids, then their log-probabilities, most likely first)."""

    logprobs: list[float]
    top_ids: list[list[int]]
    top_logprobs: list[list[float]]


def score_top_k(model: Any, sequences: Sequence[Scored], k: int = 5, *, batch_tokens: int | None = None) -> list[TopK]:
    """`score_sequences`, with the `k` most likely tokens at each labelled position (log-softmax in float32)."""
    import torch

    out: list[TopK] = [TopK([], [], []) for _ in sequences]
    for rows, logits, targets, kept in _forward_batches(model, sequences, batch_tokens):
        for r, i in enumerate(rows):
            scored = torch.log_softmax(logits[r][kept[r].to(logits.device)].float(), dim=-1)
            chosen = scored.gather(1, targets[r][kept[r].to(targets.device)].unsqueeze(1)).squeeze(1)
            top = scored.topk(min(k, scored.shape[-1]), dim=-1)
            out[i] = TopK(chosen.cpu().tolist(), top.indices.cpu().tolist(), top.values.cpu().tolist())
    return out


def mean_nll(logprobs: Sequence[float]) -> float:
    """The mean negative log-likelihood per token (nan for a sequence with no scored token)."""
    return -sum(logprobs) / len(logprobs) if logprobs else math.nan


def token_weighted_nll(rows: Sequence[Sequence[float]]) -> float:
    """The loss of a set of rows as a trainer averages it: over all their scored tokens together."""
    tokens = sum(len(r) for r in rows)
    return -sum(sum(r) for r in rows) / tokens if tokens else math.nan


# -- building the sequences ----------------------------------------------------------------------------------
def text_sequences(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[Scored]:
    """General text scored as pretraining scores it: every token after the first, each document cut to
    `max_length` tokens (a document of one token has nothing to score and is left out)."""
    encoded = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    return [Scored(list(ids), list(ids)) for ids in encoded if len(ids) > 1]


def answer_sequence(tokenizer: Any, prompt: str, full: str, expected: str, stops: Sequence[int]) -> Scored:
    """The served `prompt` followed by the expected answer and the end-of-turn token, only the answer scored.
    The answer's tokens are the template's own rendering of the assistant turn (`full`, the conversation with the
    expected answer, minus the prompt), up to and including its first stop token; when the template does not
    render the prompt as a prefix of it, the expected text's tokens then the first stop token."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer: list[int] = []
    if full.startswith(prompt):
        rendered = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        end = next((k for k, t in enumerate(rendered) if t in stops), None)
        answer = rendered[: end + 1] if end is not None else []
    if not answer:
        answer = tokenizer(expected, add_special_tokens=False)["input_ids"] + list(stops[:1])
    return Scored(prompt_ids + answer, [IGNORE] * len(prompt_ids) + answer)


# -- the signals' records --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowLoss:
    """One scored row (a held-out row, a general-text document, a question's expected answer): its mean token
    NLL under each model and how many tokens it scores."""

    label: str  # the question, or "row N" / "document N"
    tokens: int
    base: float
    tuned: float

    @property
    def rise(self) -> float:
        return self.tuned - self.base


@dataclass(frozen=True)
class Lengths:
    """Answer lengths in tokens: the base's and tuned model's answers, and the training answers'."""

    base: list[int]
    tuned: list[int]
    training: list[int]

    @property
    def ratio(self) -> float | None:
        """The tuned median over the training answers' median (None without both)."""
        if not self.tuned or not self.training:
            return None
        return max(statistics.median(self.tuned), 1) / max(statistics.median(self.training), 1)

    def to_dict(self) -> schema.LengthsData:
        def median(values: list[int]) -> float | None:
            return statistics.median(values) if values else None

        return schema.LengthsData(
            base=list(self.base),
            tuned=list(self.tuned),
            training=list(self.training),
            median_base=median(self.base),
            median_tuned=median(self.tuned),
            median_training=median(self.training),
            ratio=self.ratio,
        )


@dataclass(frozen=True)
class Signals:
    """The teacher-forced signals of a base and a tuned model, per row, plus the answers' lengths. A list is
    empty when the recipe gives nothing to score it on (no held-out rows, no expected answer, no general text)."""

    held_out: list[RowLoss] = field(default_factory=list)
    expected: list[RowLoss] = field(default_factory=list)
    general: list[RowLoss] = field(default_factory=list)
    lengths: Lengths | None = None
    held_out_source: str = ""  # where the held-out rows came from ("data.eval: FILE", "data.eval_fraction 0.1")
    unscored: str = ""  # why nothing was scored teacher-forced (a served model), when nothing was

    def loss(self, name: str) -> tuple[float, float] | None:
        """(base, tuned) token-weighted NLL of `held_out` or `general` rows; None when there are none."""
        rows = getattr(self, name)
        if not rows:
            return None
        weight = sum(r.tokens for r in rows)
        return (sum(r.base * r.tokens for r in rows) / weight, sum(r.tuned * r.tokens for r in rows) / weight)

    @property
    def eval_loss_drop(self) -> float | None:
        """How far the tuned model's held-out loss is below the base's, as a fraction of the base's."""
        losses = self.loss("held_out")
        return None if losses is None else (losses[0] - losses[1]) / losses[0]

    @property
    def forgetting(self) -> float | None:
        """The tuned model's general-text loss over the base's (1.15 = 15% higher)."""
        losses = self.loss("general")
        return None if losses is None else losses[1] / losses[0]

    def comparison(self) -> list[PairedDifference]:
        """Tuned minus base for each signal it has rows for, with the paired bootstrap interval over its rows."""
        rows = [
            ("held-out loss (nats/token)", self.held_out),
            ("expected-answer NLL (nats/token)", self.expected),
            ("general-text loss (nats/token)", self.general),
        ]
        found = [paired_bootstrap(n, [r.base for r in rs], [r.tuned for r in rs]) for n, rs in rows if rs]
        if self.lengths is not None and self.lengths.tuned:
            found.append(paired_bootstrap("answer tokens", self.lengths.base, self.lengths.tuned))
        return found

    def to_dict(self) -> schema.SignalsData:
        def rows(losses: list[RowLoss]) -> list[schema.RowLossData]:
            return [
                schema.RowLossData(label=r.label, tokens=r.tokens, base=r.base, tuned=r.tuned, rise=r.rise)
                for r in losses
            ]

        return schema.SignalsData(
            held_out=rows(self.held_out),
            expected=rows(self.expected),
            general=rows(self.general),
            held_out_source=self.held_out_source,
            unscored=self.unscored,
            lengths=None if self.lengths is None else self.lengths.to_dict(),
            eval_loss=self.loss("held_out"),
            eval_loss_drop=self.eval_loss_drop,
            general_loss=self.loss("general"),
            forgetting=self.forgetting,
            comparison=[d.to_dict() for d in self.comparison()],
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signals:
        def rows(key: str) -> list[RowLoss]:
            return [RowLoss(r["label"], int(r["tokens"]), float(r["base"]), float(r["tuned"])) for r in data[key]]

        lengths = data.get("lengths")
        return cls(
            held_out=rows("held_out"),
            expected=rows("expected"),
            general=rows("general"),
            lengths=None if lengths is None else Lengths(lengths["base"], lengths["tuned"], lengths["training"]),
            held_out_source=data.get("held_out_source", ""),
            unscored=data.get("unscored", ""),
        )
