"""sft-eval's processes train under ATen's AVX2 kernels on any x86-64 CPU that has them (sft_eval.kernels): set
before torch computes anything, never over a user's own choice, withdrawn when it comes too late."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sft_eval import kernels
from sft_eval.kernels import VARIABLE, cpu_has_avx2, pin_cpu_kernels

PROBE = """
import json, os, sys
import torch
if sys.argv[1] == "late":  # fixed at a kernel set other than AVX2 (as an AVX-512 CPU's native one would be)
    os.environ["ATEN_CPU_CAPABILITY"] = "default"
    torch.ones(4) * 2  # an operation dispatched: ATen's kernel set is fixed from here on
    del os.environ["ATEN_CPU_CAPABILITY"]
from sft_eval.kernels import pin_cpu_kernels
pinned = pin_cpu_kernels()
print(json.dumps({"pinned": pinned, "env": os.environ.get("ATEN_CPU_CAPABILITY"),
                  "kernels": torch.backends.cpu.get_cpu_capability()}))
"""


def probe(cli, when: str, **env: str | None) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, when],
        capture_output=True,
        text=True,
        env=cli.environ(**{VARIABLE: None, **env}),
        timeout=cli.hang_guard_s,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


needs_avx2 = pytest.mark.skipif(not cpu_has_avx2(), reason="pins only on an x86-64 CPU with AVX2 and FMA")


@needs_avx2
def test_a_fresh_process_is_pinned_to_avx2_before_torch_computes(cli):
    assert probe(cli, "early") == {"pinned": "avx2", "env": "avx2", "kernels": "AVX2"}


@needs_avx2
def test_a_kernel_set_the_user_chose_is_kept(cli):
    assert probe(cli, "early", **{VARIABLE: "default"}) == {"pinned": None, "env": "default", "kernels": "DEFAULT"}


@needs_avx2
def test_a_pin_that_comes_too_late_is_withdrawn_so_children_agree_with_the_process(cli):
    """torch already dispatched an operation under its native kernels: the pin would reach only the children, whose
    trained weights and cache keys would then differ from this process's."""
    late = probe(cli, "late")
    assert late == {"pinned": None, "env": None, "kernels": "DEFAULT"}


def test_no_pin_without_avx2(monkeypatch):
    monkeypatch.setattr(kernels.platform, "machine", lambda: "aarch64")
    environ: dict[str, str] = {}
    assert pin_cpu_kernels(environ) is None and environ == {}


@needs_avx2
def test_this_test_session_trains_under_the_pin():
    """The repository's conftest pinned it (or the user chose a kernel set, which is kept)."""
    import os

    import torch

    assert VARIABLE in os.environ
    assert torch.backends.cpu.get_cpu_capability() == os.environ[VARIABLE].upper()
