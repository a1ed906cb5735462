"""How fast `sft-eval` answers bad input, against `sft-eval --help` (which imports nothing heavy).

Each of tests/test_bad_input_before_torch.py's five bad inputs is given to `sft-eval audit --recipe` in a fresh
process, REPEAT times, on a cache that already holds SFTConfig's field names (as after a user's first command).
Prints the median wall time of each and its ratio to `--help`.

    python benchmarks/bad_input.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_bad_input_before_torch import BAD_INPUTS, write_bad_input  # noqa: E402

REPEAT = 5


def seconds(*args: str, env: dict[str, str]) -> float:
    runs = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sft_eval.cli", *args], capture_output=True, env=env, check=False)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "SFT_EVAL_CACHE": str(Path(folder) / "cache")}
        warm = write_bad_input(Path(folder), "sft-typo")
        subprocess.run([sys.executable, "-m", "sft_eval.cli", "plan", "--recipe", str(warm)], env=env, check=False)
        help_s = seconds("--help", env=env)
        print(f"{'input':16} {'median s':>9} {'x --help':>9}")
        print(f"{'--help':16} {help_s:9.2f} {1.0:9.1f}")
        for name in BAD_INPUTS:
            took = seconds("audit", "--recipe", str(write_bad_input(Path(folder), name)), env=env)
            print(f"{name:16} {took:9.2f} {took / help_s:9.1f}")


if __name__ == "__main__":
    main()
