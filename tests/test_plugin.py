"""The plugin lives in other people's pytest sessions (entry point `pytest11`): it claims no generic option or
fixture name, writes nothing where its fixtures were not used, and turns a bad option into one usage line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sft_eval.options import OPTIONS, PLUGIN, PLUGIN_PREFIX

# A typical ML repository's own conftest: its `--device` option and its `tokenizer` and `recipe` fixtures.
FOREIGN_CONFTEST = """
import pytest

def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="this project's own device option")
    parser.addoption("--recipe", default="mine", help="this project's own recipe option")

@pytest.fixture
def tokenizer(request):
    return f"my-tokenizer-on-{request.config.getoption('--device')}"

@pytest.fixture
def recipe(request):
    return request.config.getoption("--recipe")
"""
FOREIGN_TEST = """
def test_my_own_fixtures(tokenizer, recipe):
    assert tokenizer == "my-tokenizer-on-cuda:3"
    assert recipe == "theirs"
"""


def test_a_project_with_its_own_device_option_and_tokenizer_fixture_keeps_them(tmp_path, cli):
    (tmp_path / "conftest.py").write_text(FOREIGN_CONFTEST, encoding="utf-8")
    (tmp_path / "test_theirs.py").write_text(FOREIGN_TEST, encoding="utf-8")
    result = cli.pytest("-q", "--device", "cuda:3", "--recipe", "theirs", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
    assert not (tmp_path / "reports").exists(), "a session that used no sft-eval fixture wrote a report"


def test_every_plugin_option_is_namespaced():
    flags = [OPTIONS[name].flag(PLUGIN_PREFIX) for name in PLUGIN]
    assert all(flag.startswith("--sft-") for flag in flags), flags


def test_the_plugins_options_are_listed_in_pytest_help(tmp_path, cli):
    result = cli.pytest("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in PLUGIN:
        assert OPTIONS[name].flag(PLUGIN_PREFIX) in result.stdout, f"{name} missing from pytest --help"


def test_a_missing_recipe_is_one_usage_line_at_start_up_for_any_test_file(tmp_path, cli):
    (tmp_path / "test_x.py").write_text("def test_x(sft_recipe):\n    pass\n", encoding="utf-8")
    result = cli.pytest("test_x.py", "--sft-recipe", "missing.toml", cwd=tmp_path)
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]  # pytest's usage-error code
    assert "missing.toml: recipe file not found" in result.stderr and "Traceback" not in result.stderr
    assert "test_x" not in result.stdout, "tests ran (and errored one by one) instead of one usage error"


WORKER_THREADS = """
import os, pathlib, torch

def test_threads():
    name = os.environ.get("PYTEST_XDIST_WORKER", "serial")
    pathlib.Path(f"threads-{name}.txt").write_text(f"{torch.get_num_threads()} {os.environ.get('OMP_NUM_THREADS')}")
"""


def threads_seen(folder: Path) -> list[str]:
    seen = [p.read_text() for p in sorted(folder.glob("threads-*.txt"))]
    for p in folder.glob("threads-*.txt"):
        p.unlink()
    return seen


@pytest.mark.slow
def test_each_xdist_worker_takes_its_share_of_the_cores_unless_the_user_set_it(tmp_path, cli):
    """Two torch processes at torch's default thread count on two cores ran a tiny training step 9.5x slower each:
    a worker gets cores // workers threads (at least one), and passes it to what it starts; a count the user set
    in OMP_NUM_THREADS is theirs (the worker sees what a serial session sees), and a serial session is left
    alone."""
    (tmp_path / "test_threads.py").write_text(WORKER_THREADS, encoding="utf-8")
    unset = {"OMP_NUM_THREADS": None, "MKL_NUM_THREADS": None}  # this session may run in a worker that set them

    def seen(*args: str, **env: str) -> list[str]:
        result = cli.pytest("-q", *args, "test_threads.py", cwd=tmp_path, env={**unset, **env})
        assert result.returncode == 0, result.stdout[-2000:]
        return threads_seen(tmp_path)

    share = max(1, len(os.sched_getaffinity(0)) // 2)
    assert seen("-n", "2") == [f"{share} {share}"]
    serial = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        **{"capture_output": True, "text": True, "env": cli.environ(**unset), "check": True},
    ).stdout.strip()
    assert seen() == [f"{serial} None"]
    told = seen(OMP_NUM_THREADS="3")
    assert told[0].endswith(" 3") and seen("-n", "2", OMP_NUM_THREADS="3") == told
