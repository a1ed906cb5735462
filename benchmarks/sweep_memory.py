"""Memory and cost of judging several models: `sft-eval report` and `sft-eval sweep` on 1.07B-parameter checkpoints.

A random Llama-3.2-1B-shaped base (the tiny tokenizer's vocabulary, float32 on disk) and a run trained
"elsewhere" whose checkpoints are other random draws of the same shape (each its own weights, so none shares
answers). In fresh processes, with one question and 8 new tokens: `report` on the run (base + tuned answered),
`sweep` on a run of 1 checkpoint and on a run of 5, and the 5-checkpoint sweep again, warm. For each, wall time and
peak RSS (the process's VmHWM) against one model's weights on disk.

Goal: peak RSS at most 1.3x one model's weights for the report and the 5-checkpoint sweep (one model in memory at a
time), a sweep of N checkpoints about N times one checkpoint's evaluation, and a warm rerun that generates nothing.

    python benchmarks/sweep_memory.py [--keep DIR] [--report-only]

`--report-only` measures the report alone (what an sft-eval without `sweep` can run: the before figure).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from model_size import LLAMA_1B, RECIPE, STATE, timed

from sft_eval.cache import FixtureCache
from sft_eval.console import configure_libraries
from sft_eval.models import save_random_checkpoint
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import DEFAULT_RECIPE, FIXTURES_DIR, load_recipe

RSS_GOAL = 1.3  # peak RSS over one model's weights


def run_folder(folder: Path, name: str, base: Path, checkpoints: list[Path]) -> Path:
    """runs/<name>/checkpoint-<k> (hard links to each checkpoint's files, a trainer state of k steps) and a recipe."""
    run = folder / "runs" / name
    shutil.rmtree(run, ignore_errors=True)
    for step, source in enumerate(checkpoints, start=1):
        target = run / f"checkpoint-{step}"
        target.mkdir(parents=True)
        for item in source.iterdir():
            os.link(item, target / item.name)
        state = {**STATE, "global_step": step, "max_steps": len(checkpoints)}
        (target / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")
    recipe = folder / f"{name}.toml"
    train = FIXTURES_DIR / "data" / "sft_train.jsonl"
    recipe.write_text(RECIPE.format(name=name, base=base, tuned=run, train=train), encoding="utf-8")
    return recipe


def main() -> int:
    configure_libraries()
    keep = Path(sys.argv[sys.argv.index("--keep") + 1]) if "--keep" in sys.argv else None
    report_only = "--report-only" in sys.argv
    folder = keep or Path(tempfile.mkdtemp(prefix="sft-eval-sweep-memory-"))
    tokenizer = Pipeline(load_recipe(DEFAULT_RECIPE), FixtureCache(folder / "tiny-cache")).tokenizer
    shape = {**LLAMA_1B, "vocab_size": len(tokenizer)}
    models = [folder / "models" / f"draw-{seed}" for seed in range(2 if report_only else 6)]
    for seed, path in enumerate(models):
        if not path.is_dir():
            save_random_checkpoint(path, tokenizer, seed=seed, **shape)
    base, draws = models[0], models[1:]
    weights_mib = sum(f.stat().st_size for f in base.glob("*.safetensors")) / 2**20
    results = {}
    try:
        one = run_folder(folder, "one", base, draws[:1])
        if not report_only:
            five = run_folder(folder, "five", base, draws)
        out = folder / "reports"
        results["report"] = timed(["report", "--recipe", str(one), "--out", str(out / "report")], folder / "c-report")
        if not report_only:
            for name, recipe, to, cache in (
                ("sweep of 1", one, "one", "c-one"),
                ("sweep of 5", five, "five", "c-five"),
                ("sweep of 5, warm", five, "5w", "c-five"),
            ):
                results[name] = timed(["sweep", "--recipe", str(recipe), "--out", str(out / to)], folder / cache)
            warm = json.loads((out / "5w" / "sweep.json").read_text(encoding="utf-8"))
            generated = sum(row["answers_generated"] for row in warm["checkpoints"])
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"one model's weights: {weights_mib:.0f} MiB (float32, {shape['num_hidden_layers']} layers)")
    for name, r in results.items():
        ratio = r["peak_rss_mib"] / weights_mib
        rss = r["peak_rss_mib"]
        print(f"{name:17} {r['wall_s']:7.1f} s  peak RSS {rss:7.0f} MiB = {ratio:.2f}x  (exit {r['exit']})")
    if report_only:
        return 0
    per_extra = (results["sweep of 5"]["wall_s"] - results["sweep of 1"]["wall_s"]) / 4
    print(f"sweep: each checkpoint past the first {per_extra:.1f} s; warm rerun generated {generated} answer(s)")
    worst = max(results["report"]["peak_rss_mib"], results["sweep of 5"]["peak_rss_mib"]) / weights_mib
    return 0 if worst <= RSS_GOAL and generated == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
