"""The answer cache: `sft-eval report` cold (every answer generated) against warm (every answer from the cache).

A SmolLM2-135M-shaped stand-in (random weights, the tiny tokenizer's vocabulary) as a run trained elsewhere, 20
questions, 64 new tokens (random weights never stop, so every answer runs the whole budget), in fresh processes on
one fresh cache: the first report generates the base's and the tuned model's 20 answers; the second reads them.
Then one question changed: the third report generates that question's two answers only.

    python benchmarks/answer_cache.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_size import finished_run, timed  # noqa: E402  (the same stand-in and probe as the size benchmark)

from sft_eval.cache import FixtureCache  # noqa: E402
from sft_eval.console import configure_libraries  # noqa: E402
from sft_eval.models import SMOLLM2_135M, save_random_checkpoint  # noqa: E402
from sft_eval.pipeline import Pipeline  # noqa: E402
from sft_eval.recipe import DEFAULT_RECIPE, load_recipe  # noqa: E402

QUESTIONS = [f"Question {i}: what is {i} plus {i}?" for i in range(20)]


def main() -> int:
    configure_libraries()
    with tempfile.TemporaryDirectory(prefix="sft-eval-answer-cache-") as work:
        folder = Path(work)
        cache = folder / "cache"
        tokenizer = Pipeline(load_recipe(DEFAULT_RECIPE), FixtureCache(cache)).tokenizer
        base = save_random_checkpoint(
            folder / "models" / "smollm2-135m", tokenizer, **{**SMOLLM2_135M, "vocab_size": len(tokenizer)}
        )
        recipe = finished_run(folder, "smollm2-135m", base)

        def ask(questions: list[str]) -> None:
            text = recipe.read_text(encoding="utf-8").replace("max_new_tokens = 8", "max_new_tokens = 64")
            text = text.split("questions = ")[0] + f"questions = {json.dumps(questions)}\n"
            recipe.write_text(text, encoding="utf-8")

        report = ["report", "--recipe", str(recipe), "--out", str(folder / "report")]
        ask(QUESTIONS)
        timed(["audit", "--recipe", str(recipe)], cache)  # the page cache and the tokenizer, for both runs alike
        cold = timed(report, cache)
        warm = timed(report, cache)
        ask([*QUESTIONS[:-1], "A question never asked before?"])
        one = timed(report, cache)
        answers = json.loads((folder / "report" / "sft_report.json").read_text(encoding="utf-8"))["environment"]
    for name, run in (("cold", cold), ("warm", warm), ("one question changed", one)):
        print(f"{name:21} {run['wall_s']:6.2f} s  peak {run['peak_rss_mib']:6.0f} MiB  (exit {run['exit']})")
    print(f"warm / cold: {warm['wall_s'] / cold['wall_s']:.2f}x; the last report: {answers.get('answers')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
