"""The CPU kernel set sft-eval's own processes train under: ATen's AVX2 kernels on every x86-64 CPU that has AVX2.

Trained weights follow the kernel set ATen dispatches to, not the machine: the tiny recipe trained with ATen's
portable kernels and with AVX2 kernels on one machine gives two different models (every weight differs, by up
to 0.33; 12 of 31 greedy answers). Training in float64 does not help (still 0.32, from identical initial
weights): the differences grow through training. Forcing the kernel set does: on an AVX-512 machine with
`ATEN_CPU_CAPABILITY=avx2`, the tiny recipe's answers equalled, bit for bit, those recorded on an AVX2 machine
(docs/golden.md has the measurements). So sft-eval's conftests
and its CLI pin ATen to AVX2 where the CPU has it, and a recipe trained here is the same model on any such
machine, which lets its golden outputs be checked there instead of skipped.

ATen reads `ATEN_CPU_CAPABILITY` once, at its first dispatched operation (importing torch does not fix it), so
the pin is set before any tensor is computed, and its processes' children inherit it. A value the user set is
theirs and is kept. Only ATen's vectorised kernels are pinned: matrix products (MKL, oneDNN) keep their own
dispatch. The pytest plugin, which loads into every session of an environment, pins nothing by itself: a
project's conftest calls `pin_cpu_kernels()` to opt in.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import MutableMapping

VARIABLE = "ATEN_CPU_CAPABILITY"
PIN = "avx2"


def cpu_has_avx2() -> bool:
    """Whether this CPU has AVX2 and FMA (what ATen's AVX2 kernels need), read without importing torch: Linux's
    /proc/cpuinfo, macOS's sysctl; False anywhere it cannot tell."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
                flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
        except OSError:
            return False
        return "avx2" in flags and "fma" in flags
    if sys.platform == "darwin":
        try:
            found = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.leaf7_features", "machdep.cpu.features"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.upper()
        except (OSError, subprocess.SubprocessError):
            return False
        return "AVX2" in found.split() and "FMA" in found.split()
    return False


def pin_cpu_kernels(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Pin ATen to its AVX2 kernels for this process and its children, where the CPU has AVX2 and nobody chose a
    kernel set: the value set, or None when nothing was (set by the user, no AVX2, or too late: torch already
    dispatched an operation in this process, so the pin would reach the children only and is withdrawn)."""
    environ = os.environ if environ is None else environ
    if VARIABLE in environ or not cpu_has_avx2():
        return None
    environ[VARIABLE] = PIN
    torch = sys.modules.get("torch")
    if environ is os.environ and torch is not None and torch.backends.cpu.get_cpu_capability() != PIN.upper():
        del environ[VARIABLE]  # fixed already: this process and its children must agree on their kernels
        return None
    return PIN
