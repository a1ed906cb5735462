"""Time `sft-eval audit` on the default recipe, warm (fixture cache filled): the whole command in a fresh
process, and the audit itself in-process. Budget: under 5 s warm.

    python benchmarks/audit_time.py [--recipe R]
"""

from __future__ import annotations

import subprocess
import sys
import time

from sft_eval.cache import FixtureCache
from sft_eval.console import configure_libraries
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import DEFAULT_RECIPE, load_recipe

BUDGET_S = 5.0  # most of the command's time is importing torch, transformers and trl


def main() -> int:
    configure_libraries()
    recipe_path = sys.argv[sys.argv.index("--recipe") + 1] if "--recipe" in sys.argv else str(DEFAULT_RECIPE)
    pipeline = Pipeline(load_recipe(recipe_path), FixtureCache())
    pipeline.findings  # noqa: B018 - fill the cache: warm is what is measured
    start = time.perf_counter()
    findings = Pipeline(load_recipe(recipe_path), FixtureCache()).findings
    in_process = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sft_eval.cli", "audit", "--recipe", recipe_path], capture_output=True)
    command = time.perf_counter() - start
    print(
        f"audit in-process {in_process:.2f} s, `sft-eval audit` command {command:.2f} s "
        f"(budget {BUDGET_S:.0f} s); {len(findings)} finding(s)"
    )
    return 0 if command <= BUDGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
