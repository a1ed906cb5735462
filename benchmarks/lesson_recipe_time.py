"""Time the lesson's full recipe (fixtures/recipes/seed_lesson.toml) on a model of the lesson's shape:
SmolLM2-135M's architecture (random weights, 135 M parameters) with the embedded tokenizer, 100 of the shipped
rows, learning rate 8e-5, 1 epoch, batch 1 x accumulation 8 = 13 optimizer steps, no gradient checkpointing,
logging every 2 steps. This is what a user's CPU run of the lesson costs; it also times the one-step smoke run
(`--max-train-rows 8`) the tests make.

    python benchmarks/lesson_recipe_time.py
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path

from sft_eval.cache import FixtureCache
from sft_eval.console import configure_libraries
from sft_eval.models import SMOLLM2_135M, save_random_checkpoint
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import DEFAULT_RECIPE, FIXTURES_DIR, load_recipe, with_limits
from sft_eval.training import train_sft

SEED_LESSON = FIXTURES_DIR / "recipes" / "seed_lesson.toml"


def _train(pipeline: Pipeline, out: str) -> tuple[float, object]:
    model = pipeline.load_base_model()
    start = time.perf_counter()
    run, _ = train_sft(pipeline.recipe, model, pipeline.tokenizer, pipeline.rows, out)
    return time.perf_counter() - start, run


def main() -> int:
    configure_libraries()
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        tokenizer = Pipeline(load_recipe(DEFAULT_RECIPE)).tokenizer
        save_random_checkpoint(folder / "model", tokenizer, **SMOLLM2_135M)
        recipe_path = folder / "recipe.toml"
        lesson = SEED_LESSON.read_text(encoding="utf-8")  # the lesson's recipe, model and data pointed at local copies
        lesson = lesson.replace('"HuggingFaceTB/SmolLM2-135M"', '"model"')
        lesson = lesson.replace('"banghua/DL-SFT-Dataset"', f'"{FIXTURES_DIR / "data" / "sft_train.jsonl"}"')
        recipe_path.write_text(lesson, encoding="utf-8")
        recipe = load_recipe(recipe_path)
        cache = FixtureCache(folder / "cache")
        full = Pipeline(recipe, cache)
        smoke = Pipeline(with_limits(recipe, max_train_rows=8), cache)
        smoke_s, smoke_run = _train(smoke, str(folder / "smoke"))
        full_s, full_run = _train(full, str(folder / "full"))
        result = {
            "parameters": full.load_base_model().num_parameters(),
            "rows": len(full.rows),
            "optimizer_steps": full_run.global_step,
            "full_recipe_s": round(full_s, 1),
            "per_step_s": round(full_s / full_run.global_step, 2),
            "one_step_smoke_s": round(smoke_s, 1),
            "smoke_steps": smoke_run.global_step,
            "losses": full_run.losses(),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
