"""What bounding every chat-template render costs: `sft_eval.chat.render` (a timer signal around the render and a
size check after it) against a plain `tokenizer.apply_chat_template`, on the same conversations, in one run.

    python benchmarks/render_bound.py [N]

Prints both rates and their ratio. This is a benchmark, not a test: timing never gates CI.
"""

from __future__ import annotations

import sys
import time

from sft_eval.audit.checks import tokenizer_for_template
from sft_eval.audit.template import EXCHANGES, SYSTEM
from sft_eval.cache import FixtureCache
from sft_eval.chat import render, shipped_templates
from sft_eval.console import configure_libraries
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import DEFAULT_RECIPE, load_recipe


def main() -> int:
    configure_libraries()
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    base = Pipeline(load_recipe(DEFAULT_RECIPE), FixtureCache()).tokenizer
    conversation = [SYSTEM, *EXCHANGES]
    for name in ("chatml", "qwen3"):
        tokenizer = tokenizer_for_template(base, shipped_templates()[name].read_text(encoding="utf-8"))
        timings = {}
        for label, call in (
            ("plain", lambda t=tokenizer: t.apply_chat_template(conversation, tokenize=False)),
            ("bounded", lambda t=tokenizer: render(t, conversation)),
        ):
            call()  # compile once
            start = time.perf_counter()
            for _ in range(n):
                call()
            timings[label] = (time.perf_counter() - start) / n * 1e6
        print(
            f"{name}: plain {timings['plain']:.1f} us/render, bounded {timings['bounded']:.1f} us/render, "
            f"ratio {timings['bounded'] / timings['plain']:.3f} ({n} renders each)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
