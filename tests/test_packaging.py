"""The wheel is the product: installed from it, without this checkout, the plugin and the CLI find the tiny
recipe, its data, templates and golden outputs, and the report template."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sft_eval.chat import shipped_templates

pytestmark = pytest.mark.slow  # builds the wheel and installs it in a virtual environment of its own

REPO = Path(__file__).resolve().parent.parent
PROBE = """
from sft_eval.recipe import DEFAULT_RECIPE, FIXTURES_DIR, load_recipe
from sft_eval.data import load_questions, load_sft_rows
from sft_eval.chat import shipped_templates
from sft_eval.golden import golden_path
import sft_eval.plugin, sft_eval.report
recipe = load_recipe(DEFAULT_RECIPE)
print(FIXTURES_DIR)
print(len(load_sft_rows(recipe)), len(load_questions(recipe)), len(shipped_templates()), golden_path(recipe).is_file())
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, cli) -> tuple[Path, Path]:
    """(the wheel built from this checkout, the folder it is installed into with `pip --target`)."""
    folder = tmp_path_factory.mktemp("wheel")
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(folder / "dist"), str(REPO)],
        capture_output=True,
        text=True,
        timeout=cli.hang_guard_s,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (built,) = (folder / "dist").glob("sft_eval-*.whl")
    site = folder / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(built)],
        capture_output=True,
        text=True,
        timeout=cli.hang_guard_s,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    return built, site


def test_the_wheel_ships_fixtures_and_works_without_the_checkout(wheel, tmp_path, cli):
    built, site = wheel
    names = set(zipfile.ZipFile(built).namelist())
    for name in (
        "sft_eval/fixtures/recipes/tiny.toml",
        "sft_eval/fixtures/data/sft_train.jsonl",
        "sft_eval/fixtures/templates/chatml.jinja",
        "sft_eval/fixtures/recipes/golden/tiny.json",
        "sft_eval/report/templates/report.html.j2",
        "sft_eval/suites/conftest.py",
        "sft_eval/suites/test_training.py",
        "sft_eval/suites/bench/test_generation_speed.py",
    ):
        assert name in names, f"{built.name} lacks {name}"
    every_module = {
        f"sft_eval/{p.relative_to(REPO / 'sft_eval').as_posix()}" for p in (REPO / "sft_eval").rglob("*.py")
    }
    assert not every_module - names, f"{built.name} lacks {sorted(every_module - names)}"
    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the checkout
        env={**os.environ, "PYTHONPATH": str(site)},
        timeout=cli.hang_guard_s,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    fixtures, counts = probe.stdout.strip().splitlines()
    assert Path(fixtures) == site / "sft_eval" / "fixtures", f"fixtures came from {fixtures}, not the wheel"
    assert counts == f"421 31 {len(shipped_templates())} True", (counts, "rows, questions, templates, golden")


def test_the_suites_run_from_the_installed_package_in_any_folder(wheel, tmp_path, cli):
    """`pytest --pyargs sft_eval.suites` from a folder with no suites/ of its own collects the wheel's suites (not
    the benchmarks, which need `-m bench`) and runs them: the data suite here, which trains nothing."""
    site = wheel[1]
    env = {"PYTHONPATH": str(site), "SFT_EVAL_CACHE": str(tmp_path / "cache")}
    collected = cli.pytest(  # node ids relative to the install folder: a file from elsewhere would show as ../
        "--pyargs", "sft_eval.suites", "--collect-only", "-q", f"--rootdir={site}", cwd=tmp_path, env=env
    )
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    files = {line.split("::")[0] for line in collected.stdout.splitlines() if "::" in line}
    assert files and all(f.startswith("sft_eval/suites/") for f in files), sorted(files)[:5]
    assert any(f.endswith("test_training.py") for f in files) and not any("/bench/" in f for f in files), files
    ran = cli.pytest("--pyargs", "sft_eval.suites.test_data", "-q", cwd=tmp_path, env=env)
    assert ran.returncode == 0 and " passed" in ran.stdout, ran.stdout[-2000:] + ran.stderr[-2000:]
