"""Generation speed: the lesson's one-at-a-time loop vs the batched engine vs a raw KV-cache loop.

Tokens per second count the new tokens each answer really has (cut at its stop token). The batched engine
must give the loop's greedy answers token for token; the raw loop is the floor generation can cost here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sft_eval.chat import conversation, render_prompt
from sft_eval.generation.local import generate, left_padded, stop_token_ids
from sft_eval.records import Answer

BENCH_PROMPTS = 32


def bench_prompts(questions: list[str], n: int = BENCH_PROMPTS) -> list[str]:
    """`n` prompts from the recipe's questions (repeated in order when there are fewer)."""
    return [questions[i % len(questions)] for i in range(n)]


def one_at_a_time(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: list[str], *, max_new_tokens: int = 100
) -> list[Answer]:
    """The lesson's loop: one `model.generate` call per question (the speed baseline)."""
    return [generate(model, tokenizer, [q], max_new_tokens=max_new_tokens, batch_size=1)[0] for q in questions]


@torch.inference_mode()
def raw_greedy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: list[str], *, max_new_tokens: int = 100
) -> list[list[int]]:
    """Greedy decoding written with plain torch and the model's KV cache, one left-padded batch: the floor of
    what generation can cost, with none of `generate`'s machinery. Returns each row's new token ids."""
    stops = torch.tensor(stop_token_ids(model, tokenizer), device=model.device)
    prompts = [render_prompt(tokenizer, conversation(q)) for q in questions]
    batch = left_padded(prompts, tokenizer, int(stops[0]), model.device)
    mask = batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    output = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions, use_cache=True)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=model.device)
    rows: list[list[int]] = [[] for _ in prompts]
    for _ in range(max_new_tokens):
        token = output.logits[:, -1].argmax(-1)
        for i in (~finished).nonzero().flatten().tolist():
            rows[i].append(int(token[i]))
        finished |= torch.isin(token, stops)
        if bool(finished.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        positions = positions[:, -1:] + 1
        output = model(
            input_ids=token[:, None], attention_mask=mask, position_ids=positions, cache=output.cache, use_cache=True
        )
    return rows


@dataclass(frozen=True)
class SpeedResult:
    prompts: int
    new_tokens: int
    loop_s: float
    batched_s: float
    raw_floor_s: float
    loop_tokens_per_s: float
    batched_tokens_per_s: float
    raw_floor_tokens_per_s: float
    speedup: float  # batched over loop tokens/s
    engine_to_floor: float  # batched tokens/s as a share of the raw floor's
    identical_outputs: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _timed(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def measure_speed(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    max_new_tokens: int = 100,
    repeats: int = 3,
) -> SpeedResult:
    """Best of `repeats` wall times for each way, on the same prompts, in one process."""
    generate(model, tokenizer, prompts[:2], max_new_tokens=4)  # warm-up: first-call costs are not generation
    loop_s, loop = _timed(lambda: one_at_a_time(model, tokenizer, prompts, max_new_tokens=max_new_tokens), repeats)
    batched_s, batched = _timed(
        lambda: generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=len(prompts)), repeats
    )
    raw_s, raw = _timed(lambda: raw_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens), repeats)
    tokens = sum(a.new_tokens for a in loop)
    identical = [a.token_ids for a in loop] == [a.token_ids for a in batched] == raw
    return SpeedResult(
        prompts=len(prompts),
        new_tokens=tokens,
        loop_s=loop_s,
        batched_s=batched_s,
        raw_floor_s=raw_s,
        loop_tokens_per_s=tokens / loop_s,
        batched_tokens_per_s=tokens / batched_s,
        raw_floor_tokens_per_s=tokens / raw_s,
        speedup=loop_s / batched_s,
        engine_to_floor=raw_s / batched_s,
        identical_outputs=identical,
    )
