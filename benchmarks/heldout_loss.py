"""Held-out loss against its floor: `scoring.score_sequences` over 1,000 rows vs a bare `model(**batch)` loop.

A SmolLM2-135M-shaped stand-in (random float32 weights, its 49,152-token vocabulary, the tiny tokenizer's ids),
1,000 chat rows (the shipped training rows, repeated with a row number so none is the same) tokenized and masked
by the recipe's own SFTTrainer (`signals.held_out_sequences`). The floor is a loop of `model(input_ids,
attention_mask)` under `torch.inference_mode()` over the very batches the scorer builds (longest first, right
padded, at most `batch_tokens_for(model)` padded tokens each: logits within 256 MiB), tensors built beforehand,
logits discarded. Goal: the scorer within 1.3x of the floor. Each is timed `--repeats` times, alternating, and the
best of each kept; the process's peak RSS (VmHWM) is printed with the model's size.

    python benchmarks/heldout_loss.py [--rows 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import torch

from sft_eval.cache import FixtureCache
from sft_eval.console import configure_libraries
from sft_eval.models import SMOLLM2_135M, load_model, save_random_checkpoint
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import DEFAULT_RECIPE, load_recipe
from sft_eval.scoring import IGNORE, batch_tokens_for, score_sequences
from sft_eval.signals import held_out_sequences

GOAL = 1.3


def floor_batches(sequences, budget: int) -> list[dict[str, torch.Tensor]]:
    """The scorer's batches, built the way it builds them: longest first, at most `budget` padded tokens."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].input_ids))
    batches, start = [], 0
    while start < len(order):
        longest = len(sequences[order[start]].input_ids)
        rows = order[start : start + max(1, budget // longest)]
        start += len(rows)
        ids = torch.zeros((len(rows), longest), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(rows):
            n = len(sequences[i].input_ids)
            ids[r, :n], mask[r, :n] = torch.tensor(sequences[i].input_ids), 1
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


def peak_rss_mib() -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    configure_libraries(quiet=True)
    recipe = load_recipe(DEFAULT_RECIPE)
    pipeline = Pipeline(recipe, FixtureCache(), "cpu")
    tokenizer = pipeline.tokenizer
    train = pipeline.rows.to_list()
    rows = [
        {"messages": [{**m, "content": f"{m['content']} ({k})" if m["role"] == "user" else m["content"]} for m in r]}
        for k in range(args.rows)
        for r in [train[k % len(train)]["messages"]]
    ]
    with tempfile.TemporaryDirectory() as folder:
        save_random_checkpoint(folder, tokenizer, **SMOLLM2_135M)
        model = load_model(folder, "cpu")
        from datasets import Dataset

        sequences, _ = held_out_sequences(recipe, model, tokenizer, Dataset.from_list(rows))
        batches = floor_batches(sequences, batch_tokens_for(model))
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        scored_tokens = sum(sum(t != IGNORE for t in s.labels[1:]) for s in sequences)
        score_sequences(model, sequences[:8])  # warm-up: the first forward pass pays for allocation
        floor, scorer = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            with torch.inference_mode():
                for batch in batches:
                    model(**batch)
            floor.append(time.perf_counter() - start)
            start = time.perf_counter()
            score_sequences(model, sequences)
            scorer.append(time.perf_counter() - start)
        parameters = sum(p.numel() for p in model.parameters())
    result = {
        "rows": len(sequences),
        "batches": len(batches),
        "tokens": tokens,
        "scored_tokens": scored_tokens,
        "parameters": parameters,
        "floor_s": min(floor),
        "scorer_s": min(scorer),
        "ratio": min(scorer) / min(floor),
        "goal": GOAL,
        "peak_rss_mib": peak_rss_mib(),
        "weights_mib": parameters * 4 / 2**20,
    }
    print(json.dumps(result, indent=1))
    print(
        f"held-out loss over {result['rows']} rows ({tokens:,} tokens, {len(batches)} batches): scorer "
        f"{result['scorer_s']:.2f} s, bare model(**batch) loop {result['floor_s']:.2f} s = {result['ratio']:.2f}x "
        f"(goal {GOAL}x); peak RSS {result['peak_rss_mib']:,.0f} MiB with {result['weights_mib']:,.0f} MiB of weights"
    )


if __name__ == "__main__":
    main()
