"""The wheel is the product: installed from it, without this checkout, the plugin and the CLI find the tiny
recipe, its data, templates and golden outputs, and the report template."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

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


def test_the_wheel_ships_fixtures_and_works_without_the_checkout(tmp_path, cli):
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(tmp_path / "dist"), str(REPO)],
        capture_output=True,
        text=True,
        timeout=cli.hang_guard_s,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("sft_eval-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "sft_eval/fixtures/recipes/tiny.toml",
        "sft_eval/fixtures/data/sft_train.jsonl",
        "sft_eval/fixtures/templates/chatml.jinja",
        "sft_eval/fixtures/recipes/golden/tiny.json",
        "sft_eval/report/templates/report.html.j2",
    ):
        assert name in names, f"{wheel.name} lacks {name}"
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=cli.hang_guard_s,
    )
    assert install.returncode == 0, install.stderr[-2000:]
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
    assert counts == "421 31 6 True", counts
