"""Teacher-forced signals of the base and the tuned model: the held-out loss, the expected answers' likelihood, the
general text's loss, and the answers' lengths against the training answers'; and the tuned model's top-k on
given answers (what the golden check compares).

The sequences are built once and each model's scores kept in a `SignalMemo`, which a sweep hands from one
checkpoint to the next: the base is scored once for a whole run.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol

from sft_eval.chat import check_rows_render, conversation, end_of_turn_ids, render_conversation, render_prompt
from sft_eval.data import assistant_texts, load_general_text
from sft_eval.inputs import Inputs
from sft_eval.recipe import Recipe
from sft_eval.sanity import Evaluation
from sft_eval.scoring import (
    IGNORE,
    Lengths,
    RowLoss,
    Scored,
    Signals,
    TopK,
    answer_sequence,
    mean_nll,
    score_sequences,
    score_top_k,
    text_sequences,
)

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


SIGNALS = ("held_out", "expected", "general")
Sequences = dict[str, tuple[list[Scored], list[str]]]  # per signal: its sequences, and a label per sequence


class Models(Protocol):
    """What teacher forcing asks of the models it scores: the tokenizer, each model, and whether its weights are in
    this process. A pipeline's `answers.Answers`; the trainer's model while it trains (`live.LiveEvaluation`)."""

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase: ...

    def model(self, which: str) -> PreTrainedModel: ...

    def in_process(self, which: str) -> bool: ...


@dataclasses.dataclass
class SignalMemo:
    """What was scored, kept: the sequences (built once, with the first model scored) and each model's per-token
    log-probabilities on them."""

    sequences: Sequences | None = None
    scores: dict[str, dict[str, list[list[float]]]] = dataclasses.field(default_factory=dict)

    def for_checkpoint(self) -> SignalMemo:
        """The memo a checkpoint of the same run starts from: the same sequences and the same base."""
        return SignalMemo(self.sequences, {k: v for k, v in self.scores.items() if k == "base"})


class TeacherForced:
    """The teacher-forced signals of one pipeline's models, each model loaded once (or the one held), scoring
    every sequence, and let go before the next."""

    def __init__(self, recipe: Recipe, inputs: Inputs, answers: Models, memo: SignalMemo | None = None):
        self.recipe, self.inputs, self.answers = recipe, inputs, answers
        self.memo = memo or SignalMemo()

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.answers.tokenizer

    def sequences(self, model: PreTrainedModel) -> Sequences:
        """The sequences each signal scores, with a label per row, built once: the held-out rows through the
        recipe's own trainer (`model` prepares them, as any model of the run would), the expected answers after
        the served prompt, the general text."""
        if self.memo.sequences is None:
            self.memo.sequences = self._build(model)
        return self.memo.sequences

    def _build(self, model: PreTrainedModel) -> Sequences:
        recipe, tokenizer = self.recipe, self.tokenizer
        built: Sequences = {name: ([], []) for name in SIGNALS}
        if self.inputs.held_out_rows is not None:
            built["held_out"] = held_out_sequences(recipe, model, tokenizer, self.inputs.held_out_rows)
        stops = end_of_turn_ids(tokenizer)
        system = recipe.eval.system_message or None
        expected = []
        for q in self.inputs.questions:
            if q.expected:
                messages = conversation(q.question, system)
                prompt = render_prompt(tokenizer, messages, enable_thinking=recipe.eval.enable_thinking)
                full = render_conversation(tokenizer, [*messages, {"role": "assistant", "content": q.expected}])
                expected.append((answer_sequence(tokenizer, prompt, full, q.expected, stops), q.question))
        built["expected"] = ([s for s, _ in expected], [q for _, q in expected])
        if recipe.eval.general_text:
            documents = load_general_text(recipe.resolve(recipe.eval.general_text))
            general = text_sequences(tokenizer, documents, int(recipe.sft.get("max_length") or 1024))
            built["general"] = (general, [f"document {i + 1}" for i in range(len(general))])
        return built

    def scored(self, which: str) -> tuple[Sequences, dict[str, list[list[float]]]]:
        """(the sequences, the `which` model's per-token log-probabilities on each signal's); kept in the memo."""
        if which not in self.memo.scores:
            model = self.answers.model(which)
            sequences = self.sequences(model)
            self.memo.scores[which] = {name: score_sequences(model, seqs) for name, (seqs, _) in sequences.items()}
            del model
        assert self.memo.sequences is not None  # built with the first model scored
        return self.memo.sequences, self.memo.scores[which]

    def rows(self) -> dict[str, list[RowLoss]]:
        """Each signal's rows, base and tuned (the base scored first, then the tuned model)."""
        sequences, base = self.scored("base")
        _, tuned = self.scored("tuned")
        return {
            name: [
                RowLoss(label, len(b), mean_nll(b), mean_nll(t))
                for label, b, t in zip(labels, base[name], tuned[name], strict=True)
                if b
            ]
            for name, (_, labels) in sequences.items()
        }

    def signals(self, evaluation: Evaluation) -> Signals:
        """The signals of the base and the tuned model with `evaluation`'s answer lengths. A model whose answers
        a server gives is not scored (its weights may be far larger than this machine holds); its answers' length
        is still judged. The held-out rows are tokenized and masked by the recipe's own SFTTrainer and collator,
        so the held-out loss scores exactly the tokens training trains."""
        served = [w for w in ("base", "tuned") if not self.answers.in_process(w)]
        unscored = (
            f"the {' and '.join(served)} model's answers come from eval.backend = {self.recipe.eval.backend!r}: "
            "teacher-forced signals need its weights in this process (the in-process backend)"
            if served
            else ""
        )
        rows = {name: [] for name in SIGNALS} if served else self.rows()
        training = [
            len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1  # and the end-of-turn token
            for row in self.inputs.rows
            for text in assistant_texts(row)
        ]
        lengths = Lengths(
            [s.new_tokens for s in evaluation.base_scores], [s.new_tokens for s in evaluation.tuned_scores], training
        )
        return Signals(
            held_out=rows["held_out"],
            expected=rows["expected"],
            general=rows["general"],
            lengths=lengths,
            held_out_source=self.inputs.held_out_source,
            unscored=unscored,
        )

    def prompt_ids(self, questions: list[str]) -> list[list[int]]:
        """Each question's served prompt as token ids, rendered as the in-process backend renders it."""
        tokenizer, settings = self.tokenizer, self.recipe.eval
        system = settings.system_message or None
        thinking = settings.enable_thinking
        prompts = [render_prompt(tokenizer, conversation(q, system), enable_thinking=thinking) for q in questions]
        return [list(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]] if prompts else []

    def answer_top_k(
        self, which: str, questions: list[str], answers: list[list[int]], k: int
    ) -> tuple[list[list[int]], list[TopK], str]:
        """The `which` model teacher-forced on each answer after its question's served prompt: (the prompts' token
        ids, each answer's `scoring.TopK`, the dtype the model ran in). One model loaded (or the one held)."""
        prompts = self.prompt_ids(questions)
        sequences = [Scored(p + list(a), [IGNORE] * len(p) + list(a)) for p, a in zip(prompts, answers, strict=True)]
        model = self.answers.model(which)
        scores = score_top_k(model, sequences, k)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        del model
        return prompts, scores, dtype


def held_out_sequences(
    recipe: Recipe, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: Dataset
) -> tuple[list[Scored], list[str]]:
    """The held-out rows as the recipe's trainer would train them, unpacked: tokenized, truncated and masked by its
    own SFTTrainer and data collator (assistant-only, completion-only or whole sequence, as its config says), each
    with its row's label ("row N" of the file). A row the trainer drops (nothing left to train) is not scored."""
    from sft_eval.audit.labels import trainer_batch

    check_rows_render(tokenizer, rows)
    batch = trainer_batch(recipe.with_sft(packing=False), model, tokenizer, rows, limit=None)
    scored = [Scored(ids, labels) for ids, labels in zip(batch.input_ids, batch.labels, strict=True)]
    return scored, [f"row {k + 1}" for k in batch.source]
