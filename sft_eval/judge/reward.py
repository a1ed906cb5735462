"""A reward model as a pairwise judge: one scalar per conversation, and a pair's verdict the sign of the difference.

A reward model is an `AutoModelForSequenceClassification` with one label, trained (TRL's `RewardTrainer`) so that
the preferred answer of a pair scores higher: its rewards are Bradley-Terry log-odds, so a difference `d` says the
judge prefers the candidate with probability sigmoid(d). A pair within `margin` of each other is a tie (0.5: a
preference held at under 62% is none). It sees each answer alone, so it has no order to be biased by.

Each answer is rendered with the judge's own chat template (`render`): the question as a prompt, then the answer,
then the template's end of turn only where the answer ended its turn, so an answer that never stopped is shown as
never stopping. Training renders the preference pairs the same way (`tokenized_pairs`). The rewards are computed in
batches of similar length, and each is cached under the judge's identity and the rendered tokens, so a run that
stops half-way resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sft_eval.judge.chat import Pair, PairVerdict
from sft_eval.judge.stats import Verdict

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MARGIN = 0.5  # a reward difference within it is a tie: sigmoid(0.5) = 0.62
BATCH = 16


@dataclass(frozen=True)
class Answered:
    """One answer as the reward judge sees it: the conversation before it, the answer, whether it ended its turn."""

    prompt: tuple[tuple[str, str], ...]  # (role, content) of each message before the answer
    answer: str
    stops: bool = True

    @classmethod
    def of(cls, question: str, answer: str, stops: bool = True) -> Answered:
        return cls((("user", question),), answer, stops)


def render(tokenizer: PreTrainedTokenizerBase, scored: Answered, max_length: int | None = None) -> list[int]:
    """The token ids the judge scores: the template's full conversation where the answer ended its turn, else the
    prompt with its generation prompt and the answer as far as it went; at most `max_length` tokens (the first
    ones: an answer too long to see whole is judged on its start, as never having stopped)."""
    messages = [{"role": role, "content": content} for role, content in scored.prompt]
    if scored.stops:
        text = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": scored.answer}], tokenize=False
        )
    else:
        text = str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)) + scored.answer
    ids: list[int] = tokenizer(str(text), add_special_tokens=False)["input_ids"]
    return ids[:max_length] if max_length else ids


def tokenized_pairs(tokenizer: PreTrainedTokenizerBase, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Preference rows (`prompt` messages, `chosen`, `rejected`, `rejected_stops`) as `RewardTrainer` takes them
    already tokenized (`chosen_ids`, `rejected_ids`): rendered by `render`, exactly as the judge will score."""
    tokenized = []
    for row in rows:
        prompt = tuple((m["role"], m["content"]) for m in row["prompt"])
        tokenized.append(
            {
                "chosen_ids": render(tokenizer, Answered(prompt, row["chosen"], True)),
                "rejected_ids": render(tokenizer, Answered(prompt, row["rejected"], bool(row["rejected_stops"]))),
            }
        )
    return tokenized


def rewards(
    model: PreTrainedModel, pad_token_id: int, sequences: Sequence[list[int]], batch_size: int = BATCH
) -> list[float]:
    """One reward per token sequence: batched forward passes (sequences of similar length together, right-padded
    with `pad_token_id`, which the model reads its reward before), under inference mode."""
    import torch

    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    found = [0.0] * len(sequences)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(sequences[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
            mask[row, : len(sequences[i])] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
        for row, i in enumerate(chunk):
            found[i] = float(logits[row, 0])
    return found


def side(difference: float, margin: float) -> Verdict:
    """The candidate's verdict from its reward minus the other's."""
    return "tie" if abs(difference) <= margin else "win" if difference > 0 else "loss"


@dataclass
class RewardJudge:
    """A loaded reward model: `load()` gives (model, tokenizer) on first use; `identity` names it in cache keys."""

    load: Callable[[], tuple[Any, Any]]
    identity: dict[str, Any]
    kind = "reward"  # a class attribute, as `judgement.ChatJudge`'s
    margin: float = DEFAULT_MARGIN
    _loaded: tuple[Any, Any] | None = None

    @property
    def loaded(self) -> tuple[Any, Any]:
        if self._loaded is None:
            self._loaded = self.load()
        return self._loaded

    def score(self, answers: Sequence[Answered], store: Any = None) -> tuple[list[float], int]:
        """Each answer's reward (those in `store`, an `AnswerCache`, read from it): (rewards, how many were read)."""
        model, tokenizer = self.loaded
        limit = getattr(model.config, "max_position_embeddings", None)
        sequences = [render(tokenizer, a, limit) for a in answers]
        keys = [self._key(ids) for ids in sequences]
        found: list[float | None] = [None] * len(sequences)
        if store is not None:
            for i, key in enumerate(keys):
                kept = store.get(key)
                if kept is not None and isinstance(kept.get("reward"), float):
                    found[i] = kept["reward"]
        todo = [i for i, value in enumerate(found) if value is None]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else model.config.pad_token_id
        for i, value in zip(todo, rewards(model, int(pad), [sequences[i] for i in todo]), strict=True):
            found[i] = value
            if store is not None:
                store.put(keys[i], {"reward": value})
        return [float(v) for v in found if v is not None], len(sequences) - len(todo)

    def _key(self, ids: list[int]) -> str:
        text = json.dumps({"reward_judge": self.identity, "ids": ids}, sort_keys=True)
        return "reward-" + hashlib.sha256(text.encode()).hexdigest()[:32]

    def judge_pairs(
        self, pairs: Sequence[Pair], stops: Sequence[tuple[bool, bool]] | None = None, store: Any = None
    ) -> tuple[list[PairVerdict], dict[str, int]]:
        """Each pair's verdict: the candidate's reward against the other's, a tie within the margin. `stops[i]`:
        whether the candidate's and the other's answers ended their turn (all did, when None). The verdict is the
        same in both orders (`first` and `second`); the replies are the two rewards."""
        stops = stops or [(True, True)] * len(pairs)
        answers = []
        for pair, (candidate_stops, other_stops) in zip(pairs, stops, strict=True):
            answers += [Answered.of(pair.question, pair.candidate, candidate_stops)]
            answers += [Answered.of(pair.question, pair.other, other_stops)]
        scores, cached = self.score(answers, store)
        verdicts = []
        for k, pair in enumerate(pairs):
            candidate, other = scores[2 * k], scores[2 * k + 1]
            verdict = side(candidate - other, self.margin)
            replies = (f"reward {candidate:.3f}", f"reward {other:.3f}")
            verdicts.append(PairVerdict(pair, verdict, verdict, replies, (candidate, other)))
        return verdicts, {"cached": cached, "asked": len(answers) - cached}
