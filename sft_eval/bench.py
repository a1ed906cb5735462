"""Generation speed: the lesson's one-at-a-time loop vs the batched engine vs a raw KV-cache loop.

Tokens per second count the new tokens each answer really has (cut at its stop token). The batched engine
must give the loop's greedy answers token for token; the raw loop is the floor generation can cost here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sft_eval.generation import generate, one_at_a_time, raw_greedy

BENCH_PROMPTS = 32


def bench_prompts(questions: list[str], n: int = BENCH_PROMPTS) -> list[str]:
    """`n` prompts from the recipe's questions (repeated in order when there are fewer)."""
    return [questions[i % len(questions)] for i in range(n)]


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
