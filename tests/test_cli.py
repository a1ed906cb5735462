"""The CLI's contract: exit 0 ok, 1 a check failed, 2 bad input with one line on stderr and no traceback."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from sft_eval.recipe import FIXTURES_DIR

GOOD_ROW = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
TINY_DATA = FIXTURES_DIR / "data" / "sft_train.jsonl"


def recipe_file(tmp_path, body: str) -> str:
    path = tmp_path / "recipe.toml"
    path.write_text(f'name = "user"\n{body}\n[eval]\nquestions = ["Hi"]\n', encoding="utf-8")
    return str(path)


def test_unknown_recipe_key_is_exit_2(tmp_path, cli):
    recipe = recipe_file(tmp_path, f'[data]\ntrain = "{TINY_DATA}"\nlimt = 3')
    cli.bad_input(cli.run("train", "--recipe", recipe), recipe, "unknown key `data.limt`", "data.limit")


def test_row_without_assistant_message_is_exit_2(tmp_path, cli):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps(GOOD_ROW) + "\n" + json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    recipe = recipe_file(tmp_path, '[data]\ntrain = "rows.jsonl"')
    cli.bad_input(
        cli.run("train", "--recipe", recipe, "--sft-cache", str(tmp_path / "cache")),
        f"{rows}:2",
        "no assistant message",
    )


def test_model_path_that_does_not_exist_is_exit_2(tmp_path, cli):
    recipe = recipe_file(tmp_path, f'[model]\nbase = "./no-such-model"\n[data]\ntrain = "{TINY_DATA}"')
    cli.bad_input(
        cli.run("train", "--recipe", recipe, "--sft-cache", str(tmp_path / "cache")),
        "model.base",
        "no-such-model",
        "does not exist",
    )


def test_seed_lesson_offline_names_the_missing_model_and_the_key(tmp_path, cli):
    result = cli.run(
        "train",
        "--recipe",
        str(FIXTURES_DIR / "recipes" / "seed_lesson.toml"),
        "--sft-cache",
        str(tmp_path),
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    cli.bad_input(result, "HuggingFaceTB/SmolLM2-135M", "set `model.base`", "local copy")


def test_usage_error_is_exit_2(cli):
    result = cli.run("train", "--no-such-flag")
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.usefixtures("sft_training_run")  # the session cache is built: the CLI reads it, trains nothing
def test_train_on_the_default_recipe_reports_the_cached_run_as_json(sft_pipeline, cli):
    result = cli.main("train", "--json", "--sft-cache", str(sft_pipeline.cache.root))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["global_step"] == sft_pipeline.training_run.global_step
    assert data["loss_drop"] >= data["min_loss_drop"]
    assert data["tuned_entry"] == sft_pipeline.describe()["tuned_entry"]


def test_device_cpu_is_used_and_named(sft_pipeline, cli):
    result = cli.main("train", "--json", "--device", "cpu", "--sft-cache", str(sft_pipeline.cache.root))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["device"] == "cpu"


def test_a_device_torch_does_not_know_is_exit_2(cli):
    cli.bad_input(cli.run("train", "--device", "tpu9"), "--device 'tpu9' cannot be used here")


def test_a_device_torch_does_not_know_is_a_pytest_usage_error(tmp_path, cli):
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    result = cli.pytest("test_x.py", "--sft-device", "tpu9", cwd=tmp_path)
    assert result.returncode == 4, result.stdout + result.stderr  # pytest's usage-error exit code
    assert "--sft-device 'tpu9' cannot be used here" in result.stderr and "Traceback" not in result.stderr


def test_train_exits_1_when_the_loss_threshold_is_missed(tmp_path, sft_pipeline, sft_training_run, cli):
    """Same cached run, a recipe asking for more than it achieved: the check fails, nothing retrains."""
    recipe = (FIXTURES_DIR / "recipes" / "tiny.toml").read_text(encoding="utf-8")
    strict = recipe.replace("min_loss_drop = 0.5", "min_loss_drop = 1.0").replace('"../', f'"{FIXTURES_DIR}/')
    path = tmp_path / "strict.toml"
    path.write_text(strict, encoding="utf-8")
    result = cli.main("train", "--recipe", str(path), "--sft-cache", str(sft_pipeline.cache.root))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "recipe asks at least 100%" in result.stdout


def test_audit_of_the_lessons_fallback_template_reports_generation_prompt(sft_pipeline, cli):
    template = FIXTURES_DIR / "templates" / "lesson_fallback.jinja"
    result = cli.main("audit", "--template", str(template), "--json", "--sft-cache", str(sft_pipeline.cache.root))
    assert result.returncode == 1, result.stderr
    checks = {(f["check"], f["severity"]) for f in json.loads(result.stdout)["findings"]}
    assert ("template.generation_prompt", "error") in checks


def test_audit_of_chatml_has_no_error(sft_pipeline, cli):
    template = FIXTURES_DIR / "templates" / "chatml.jinja"
    result = cli.main("audit", "--template", str(template), "--json", "--sft-cache", str(sft_pipeline.cache.root))
    assert result.returncode == 0, result.stderr
    assert [f for f in json.loads(result.stdout)["findings"] if f["severity"] == "error"] == []


def test_audit_of_a_template_file_that_does_not_exist_is_exit_2(sft_pipeline, cli):
    result = cli.main("audit", "--template", "no-such.jinja", "--sft-cache", str(sft_pipeline.cache.root))
    cli.bad_input(result, "--template", "no-such.jinja")


@pytest.mark.realworld
def test_a_real_tokenizer_that_does_not_load_is_one_line_and_exit_2(realworld_dir, cli):
    """A CLI contract, not a check of a recipe: it lives with the CLI's tests, not in the suites users run."""
    folder = realworld_dir / "tokenizers" / "TinyLlama-1.1B-Chat-v1.0"
    cli.bad_input(cli.run("audit", "--tokenizer", str(folder)), "TinyLlama-1.1B-Chat-v1.0", "cannot load a tokenizer")


def test_a_subprocess_past_the_hang_guard_is_reported_as_a_hang(tmp_path, cli):
    """Time limits in tests only stop hangs: one that trips says so, instead of failing as if a check had."""
    shutil.copy(Path(__file__).resolve().parent.parent / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_hang.py").write_text(
        "import subprocess, sys\n\ndef test_waits():\n"
        "    subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'], timeout=0.5)\n",
        encoding="utf-8",
    )
    result = cli.pytest("-q", "test_hang.py", cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "hung: " in result.stdout and "a hang guard, not a speed check" in result.stdout, result.stdout[-2000:]


def test_in_process_runs_show_what_a_process_of_its_own_shows(tmp_path, cli, monkeypatch):
    """`cli.main`, which most CLI tests use, against `cli.run` on the same bad input: the same exit code and the
    same one line. And a library's log handler made before the run (it holds the stderr it was made with) still
    writes where the test reads: a warning the command lets through is not hidden by running in process."""
    import logging

    from sft_eval import cli as cli_module

    recipe = recipe_file(tmp_path, f'[data]\ntrain = "{TINY_DATA}"\nlimt = 3')
    own, here = cli.run("plan", "--recipe", recipe), cli.main("plan", "--recipe", recipe)
    assert (here.returncode, here.stdout, here.stderr) == (own.returncode, own.stdout, own.stderr)
    logger = logging.getLogger("some_library")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)

    def chatty(args):
        logger.warning("a warning the command let through")
        raise RuntimeError("a crash")

    monkeypatch.setitem(cli_module.COMMANDS, "plan", chatty)
    try:
        broken = cli.main("plan", "--rows", "1")
    finally:
        logger.removeHandler(handler)
    assert broken.returncode == 1 and "a warning the command let through" in broken.stderr
    assert "Traceback" in broken.stderr and "RuntimeError: a crash" in broken.stderr
    with pytest.raises(AssertionError, match="exit 1"):
        cli.bad_input(broken)
