"""Generation speed with pytest-benchmark (marker `bench`, deselected by default: `pytest suites/bench -m bench`).

The lesson's one-at-a-time loop, the batched engine and a raw KV-cache loop, on the same 32 prompts from the
recipe's questions; tokens per second go to `extra_info`, so `--benchmark-autosave` and
`--benchmark-compare-fail=mean:10%` track them across commits.
"""

from __future__ import annotations

import pytest

from sft_eval.bench import bench_prompts, one_at_a_time, raw_greedy
from sft_eval.generation.local import generate

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def prompts(sft_evaluation):
    return bench_prompts([q.question for q in sft_evaluation.questions])


def _tokens(answers) -> int:
    return sum(a.new_tokens for a in answers)


def test_one_at_a_time_loop(benchmark, sft_tuned_model, sft_tokenizer, prompts, sft_recipe, sft_record_speed):
    answers = benchmark.pedantic(
        one_at_a_time,
        args=(sft_tuned_model, sft_tokenizer, prompts),
        kwargs={"max_new_tokens": sft_recipe.eval.max_new_tokens},
        rounds=3,
        warmup_rounds=1,
    )
    benchmark.extra_info["tokens_per_s"] = _tokens(answers) / benchmark.stats.stats.min
    sft_record_speed("one at a time", benchmark.extra_info["tokens_per_s"])  # the report's speed panel


def test_batched_engine(benchmark, sft_tuned_model, sft_tokenizer, prompts, sft_recipe, sft_record_speed):
    answers = benchmark.pedantic(
        generate,
        args=(sft_tuned_model, sft_tokenizer, prompts),
        kwargs={"max_new_tokens": sft_recipe.eval.max_new_tokens, "batch_size": len(prompts)},
        rounds=5,
        warmup_rounds=1,
    )
    benchmark.extra_info["tokens_per_s"] = _tokens(answers) / benchmark.stats.stats.min
    sft_record_speed("batched engine", benchmark.extra_info["tokens_per_s"])
    loop = one_at_a_time(sft_tuned_model, sft_tokenizer, prompts, max_new_tokens=sft_recipe.eval.max_new_tokens)
    assert [a.token_ids for a in answers] == [a.token_ids for a in loop], "batched answers differ from the loop's"


def test_raw_kv_cache_floor(benchmark, sft_tuned_model, sft_tokenizer, prompts, sft_recipe, sft_record_speed):
    rows = benchmark.pedantic(
        raw_greedy,
        args=(sft_tuned_model, sft_tokenizer, prompts),
        kwargs={"max_new_tokens": sft_recipe.eval.max_new_tokens},
        rounds=5,
        warmup_rounds=1,
    )
    benchmark.extra_info["tokens_per_s"] = sum(len(r) for r in rows) / benchmark.stats.stats.min
    sft_record_speed("raw KV-cache floor", benchmark.extra_info["tokens_per_s"])
