"""Time rendering the report from a cached run (issue: under 2 s): in-process from a fresh pipeline over a warm
fixture cache (load models, generate, audit, render), the render step alone, and `sft-eval report` as a command.

    python benchmarks/report_time.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

from sft_eval.cache import FixtureCache
from sft_eval.console import configure_libraries
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import DEFAULT_RECIPE, load_recipe
from sft_eval.report import write_report

BUDGET_S = 2.0


def main() -> int:
    configure_libraries()
    with tempfile.TemporaryDirectory() as out:
        write_report(Pipeline(load_recipe(DEFAULT_RECIPE), FixtureCache()).report_context(), out)  # warm the cache
        start = time.perf_counter()
        context = Pipeline(load_recipe(DEFAULT_RECIPE), FixtureCache()).report_context()
        middle = time.perf_counter()
        write_report(context, out)
        end = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sft_eval.cli", "report", "--out", out], capture_output=True, check=True)
        command = time.perf_counter() - end
    total, render = end - start, end - middle
    print(
        f"from cached run in-process {total:.2f} s (render {render * 1000:.0f} ms; budget {BUDGET_S:.0f} s); "
        f"`sft-eval report` command {command:.2f} s including imports"
    )
    return 0 if total <= BUDGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
