"""Wall time and peak memory of `pytest suites/`, cold (empty fixture cache) and warm (cache filled).

    python benchmarks/suite_time.py [--json] [extra pytest args]

Each phase runs pytest in a fresh Python process and reads that process's peak resident memory, so the two
phases are measured the same way in one run. Budgets: cold <= 120 s, warm <= 30 s, peak < 3 GiB, on 2 CPU
cores. Exit 1 when a budget is exceeded. This is a benchmark, not a test: timing never gates CI. It prints the
machine it ran on (CPU model, cores, torch's kernel set): `ATEN_CPU_CAPABILITY=default python
benchmarks/suite_time.py` measures the suites as a CPU without AVX would run them.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGETS = {"cold": 120.0, "warm": 30.0}
PEAK_BUDGET_MIB = 3 * 1024

CHILD = """
import json, resource, sys
import pytest
code = pytest.main(sys.argv[1:])
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("@@" + json.dumps({"exit": int(code), "peak_rss_mib": peak_kib / 1024}))
"""


def run_phase(cache: str, report_dir: str, extra: list[str]) -> dict:
    args = [
        sys.executable,
        "-c",
        CHILD,
        "suites/",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--sft-cache={cache}",
        f"--sft-report-dir={report_dir}",
        *extra,
    ]
    start = time.perf_counter()
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    line = next((x for x in out.stdout.splitlines() if x.startswith("@@")), None)
    if line is None:
        sys.exit(f"pytest did not finish:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return {"wall_s": round(wall, 2), **json.loads(line[2:])}


def machine() -> dict:
    """What the figures were measured on."""
    import torch

    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), platform.processor()
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernels": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
    }


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []


def main() -> int:
    extra = [a for a in sys.argv[1:] if a != "--json"]
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as reports:
        results = {phase: run_phase(cache, reports, extra) for phase in ("cold", "warm")}
    over = [
        f"{phase} {r['wall_s']} s > {BUDGETS[phase]} s" for phase, r in results.items() if r["wall_s"] > BUDGETS[phase]
    ] + [
        f"{phase} peak {r['peak_rss_mib']:.0f} MiB"
        for phase, r in results.items()
        if r["peak_rss_mib"] > PEAK_BUDGET_MIB
    ]
    results["cold_to_warm_ratio"] = round(results["cold"]["wall_s"] / results["warm"]["wall_s"], 2)
    results["machine"] = machine()
    if "--json" in sys.argv:
        print(json.dumps(results))
    else:
        m = results["machine"]
        print(f"machine: {m['cpu']}, {m['cores']} cores, torch kernels {m['kernels']}")
        for phase in ("cold", "warm"):
            r = results[phase]
            print(
                f"{phase:5} {r['wall_s']:7.2f} s  (budget {BUDGETS[phase]:.0f} s)  peak {r['peak_rss_mib']:6.0f} MiB  "
                f"pytest exit {r['exit']}"
            )
        print(f"cold/warm {results['cold_to_warm_ratio']}x")
    for line in over:
        print(f"over budget: {line}", file=sys.stderr)
    return 1 if over or any(results[p]["exit"] for p in ("cold", "warm")) else 0


if __name__ == "__main__":
    raise SystemExit(main())
