"""How fast `sft-eval` answers bad input on a fresh machine, against `sft-eval --help` (which imports nothing heavy).

Each of tests/test_bad_input_before_torch.py's bad inputs is given to `sft-eval audit --recipe` (and `plan`, for the
inputs it reads) in a fresh process, REPEAT times, each on an empty cache (no SFTConfig field list kept from an
earlier run: it is read from TRL's sources). Prints the median wall time of each, its ratio to `--help`, the exit
code and whether torch was imported (`-X importtime` lists every module a process imports).

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
from test_bad_input_before_torch import BAD_INPUTS, PLAN_INPUTS, write_bad_input  # noqa: E402

REPEAT = 5


def measure(*args: str, folder: Path) -> tuple[float, int, bool]:
    """(median seconds, exit code, torch imported) of `sft-eval ARGS`, each run on a cache of its own."""
    runs, code, torch = [], 0, False
    for i in range(REPEAT):
        env = {**os.environ, "SFT_EVAL_CACHE": str(folder / f"cache-{time.monotonic_ns()}-{i}")}
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "sft_eval.cli", *args], capture_output=True, text=True, env=env
        )
        runs.append(time.perf_counter() - start)
        code = result.returncode
        torch = torch or any(line.rstrip().endswith("| torch") for line in result.stderr.splitlines())
    return statistics.median(runs), code, torch


def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        help_s, _, _ = measure("--help", folder=folder)
        print(f"{'command':10} {'input':20} {'median s':>9} {'x --help':>9} {'exit':>5} {'torch':>6}")
        print(f"{'--help':10} {'':20} {help_s:9.2f} {1.0:9.1f} {0:5d} {'no':>6}")
        for name in BAD_INPUTS:
            for command in ("audit", *(["plan"] if name in PLAN_INPUTS else [])):
                took, code, torch = measure(command, "--recipe", str(write_bad_input(folder, name)), folder=folder)
                imported = "yes" if torch else "no"
                print(f"{command:10} {name:20} {took:9.2f} {took / help_s:9.1f} {code:5d} {imported:>6}")


if __name__ == "__main__":
    main()
