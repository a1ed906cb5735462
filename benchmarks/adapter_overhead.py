"""What an unmerged LoRA adapter costs at generation, in process: the same weights served as base + adapter (PEFT's
`PeftModel`, each LoRA layer computing its low-rank update on every token) against the adapter merged into the
base (`merge_and_unload`), greedy generation at batch sizes 1, 4 and 16, 32 new tokens each (the end of turn
suppressed so every row generates all 32).

Two models: the tiny LoRA recipe's adapter on the tiny base (built into the cache if it must be), and a
SmolLM2-135M-shaped base with random weights and a rank-16 adapter on every linear layer, its B matrices random
(a fresh adapter's are zero, and PEFT would still run them). Best of 3 each; one torch job at a time.

    python benchmarks/adapter_overhead.py [--cache DIR]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

PROMPTS = [f"Question {i}: what is the capital of country number {i}?" for i in range(16)]
NEW_TOKENS = 32
BATCHES = (1, 4, 16)


def best_time(model, tokenizer, batch: int, repeats: int = 3) -> float:
    tokenizer.padding_side = "left"
    encoded = tokenizer(PROMPTS[:batch], return_tensors="pt", padding=True)
    times = []
    for _ in range(repeats + 1):  # the first run warms the allocator, not counted
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                **encoded,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        times.append(time.perf_counter() - start)
    return min(times[1:])


def compare(name: str, unmerged, tokenizer) -> list[dict]:
    merged = copy.deepcopy(unmerged).merge_and_unload().eval()
    rows = []
    for batch in BATCHES:
        adapter, plain = best_time(unmerged, tokenizer, batch), best_time(merged, tokenizer, batch)
        rows.append(
            {
                "model": name,
                "batch": batch,
                "unmerged_tokens_per_s": batch * NEW_TOKENS / adapter,
                "merged_tokens_per_s": batch * NEW_TOKENS / plain,
                "ratio": adapter / plain,
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="the fixture cache (default: $SFT_EVAL_CACHE, else ~/.cache/sft-eval)")
    args = parser.parse_args()
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from sft_eval.console import configure_libraries
    from sft_eval.factory import open_pipeline, read_inputs
    from sft_eval.models import SMOLLM2_135M
    from sft_eval.recipe import FIXTURES_DIR

    configure_libraries(quiet=True)
    torch.manual_seed(0)
    recipe = read_inputs(FIXTURES_DIR / "recipes" / "tiny_lora.toml")
    pipeline = open_pipeline(recipe, cache_dir=args.cache, device="cpu")
    tokenizer = pipeline.tokenizer
    base = AutoModelForCausalLM.from_pretrained(str(pipeline.base_model_dir)).eval()
    tiny = PeftModel.from_pretrained(base, str(pipeline.tuned_model_dir)).eval()
    rows = compare("tiny LoRA recipe (r=16, all linear layers)", tiny, tokenizer)
    shape = {**SMOLLM2_135M, "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    large = LlamaForCausalLM(LlamaConfig(**shape)).eval()
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
    adapted = get_peft_model(large, config).eval()
    rows += compare("SmolLM2-135M shape, random weights (r=16, all linear layers)", adapted, tokenizer)
    for r in rows:
        print(
            f"{r['model']}, batch {r['batch']}: unmerged {r['unmerged_tokens_per_s']:.0f} tokens/s, merged "
            f"{r['merged_tokens_per_s']:.0f} tokens/s, unmerged takes {r['ratio']:.2f}x the time"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
