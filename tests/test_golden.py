"""Golden outputs hold per environment: exact in the one that recorded them, a local baseline in one that did not,
drift shown as old vs new, and the file always inside the recipe's folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sft_eval.errors import SftEvalError
from sft_eval.golden import (
    ENVIRONMENT_KEYS,
    check_golden,
    environment,
    golden_drift,
    golden_path,
    golden_record,
    read_golden,
    write_golden,
)
from sft_eval.recipe import DEFAULT_RECIPE, FIXTURES_DIR, load_recipe
from sft_eval.records import Answer

SUITES = Path(__file__).resolve().parent.parent / "suites"
AVX2 = {"device": "cpu", "machine": "x86_64", "kernels": "AVX2", "torch": "2.13.0", "transformers": "5.0.0"}
NEON = {**AVX2, "machine": "arm64", "kernels": "DEFAULT"}


def record(*texts: str) -> dict:
    answers = [Answer(f"q{i}", t, t, [i, 7], 2, "eos") for i, t in enumerate(texts)]
    return golden_record(answers)


def test_no_drift_no_diff():
    assert golden_drift(record("Paris", "Rome"), record("Paris", "Rome")) == ""


def test_a_changed_answer_shows_old_and_new():
    drift = golden_drift(record("Paris", "Rome"), record("Paris", "Roma"))
    assert "-'q1' -> 'Rome'" in drift and "+'q1' -> 'Roma'" in drift and "Paris" not in drift


def test_changed_token_ids_with_the_same_text_are_drift():
    old, new = record("Paris"), record("Paris")
    new["answers"][0]["token_ids"] = [0, 8]
    assert golden_drift(old, new)


def test_the_environment_names_device_kernels_and_versions():
    env = environment("cpu")
    assert tuple(env) == ENVIRONMENT_KEYS and env["device"] == "cpu" and env["kernels"], env


def test_its_own_environments_entry_is_compared_exactly(tmp_path):
    path = tmp_path / "golden" / "r.json"
    write_golden(path, record("Paris", "Rome"), AVX2)
    assert check_golden(path, record("Paris", "Rome"), AVX2, tmp_path / "local").status == "match"
    verdict = check_golden(path, record("Paris", "Roma"), AVX2, tmp_path / "local")
    assert verdict.status == "drift" and "1 of 2" in verdict.message and "+'q1' -> 'Roma'" in verdict.diff


def test_another_environment_records_a_local_baseline_and_is_held_to_it_next_time(tmp_path):
    path = tmp_path / "golden" / "r.json"
    write_golden(path, record("Paris", "Rome"), AVX2)
    first = check_golden(path, record("Paris", "Roma"), NEON, tmp_path / "local")
    assert first.status == "baseline", first
    assert "no golden outputs for cpu/arm64/DEFAULT" in first.message and "differs in 1 of 2" in first.message
    assert check_golden(path, record("Paris", "Roma"), NEON, tmp_path / "local").status == "match"
    again = check_golden(path, record("Paris", "Rome"), NEON, tmp_path / "local")
    assert again.status == "drift" and "local baseline" in again.message, again
    assert read_golden(path)[0]["environment"] == AVX2 and len(read_golden(path)) == 1, "the file was not touched"


def test_update_writes_this_environments_entry_and_keeps_the_others(tmp_path):
    path = tmp_path / "golden" / "r.json"
    write_golden(path, record("Paris"), AVX2)
    assert check_golden(path, record("Oslo"), NEON, tmp_path / "local", update=True).status == "recorded"
    write_golden(path, record("Rome"), AVX2)
    entries = {e["environment"]["machine"]: e["answers"][0]["text"] for e in read_golden(path)}
    assert entries == {"arm64": "Oslo", "x86_64": "Rome"}


def test_a_golden_file_of_the_first_format_matches_no_environment(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(record("Paris")), encoding="utf-8")
    assert check_golden(path, record("Paris"), AVX2, tmp_path / "local").status == "baseline"


def test_an_unreadable_golden_file_is_one_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(SftEvalError, match="bad.json: not a readable golden file"):
        check_golden(path, record("Paris"), AVX2, tmp_path / "local")


def test_the_shipped_recipe_keeps_its_golden_file_beside_it_with_entries_for_two_cpu_kinds():
    path = golden_path(load_recipe(DEFAULT_RECIPE))
    assert path == FIXTURES_DIR / "recipes" / "golden" / "tiny.json" and path.is_file()
    kinds = {(e["environment"]["machine"], e["environment"]["kernels"]) for e in read_golden(path)}
    assert {("x86_64", "AVX2"), ("x86_64", "DEFAULT")} <= kinds, kinds


def test_the_golden_file_is_the_recipes_key_or_beside_it(tmp_path):
    text = 'name = "mine"\n[data]\ntrain = "rows.jsonl"\n[eval]\nquestions = ["Hi"]\n'
    (tmp_path / "a.toml").write_text(text, encoding="utf-8")
    assert golden_path(load_recipe(tmp_path / "a.toml")) == tmp_path / "golden" / "mine.json"
    (tmp_path / "b.toml").write_text(text + 'golden = "checks/answers.json"\n', encoding="utf-8")
    assert golden_path(load_recipe(tmp_path / "b.toml")) == tmp_path / "checks" / "answers.json"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ('name = "../../escape"\n', "`name` must be a plain name"),
        ('name = "x"\n[eval]\ngolden = "../outside.json"\n', "`eval.golden` must be a .json file inside"),
    ],
    ids=["name-with-a-path", "golden-outside-the-folder"],
)
def test_a_golden_file_outside_the_recipes_folder_is_refused(tmp_path, edit, message):
    text = edit + ('[eval]\nquestions = ["Hi"]\n' if "[eval]" not in edit else 'questions = ["Hi"]\n')
    (tmp_path / "r.toml").write_text(text + '[data]\ntrain = "rows.jsonl"\n', encoding="utf-8")
    with pytest.raises(SftEvalError, match=message):
        load_recipe(tmp_path / "r.toml")


def test_the_check_fails_on_a_real_drift_in_the_recording_environment(sft_pipeline, sft_evaluation, tmp_path):
    """Recorded from the tuned model here, then held against other real answers in the same environment: the
    base model's (a model that is not the one recorded), and the tuned model asked with a system message."""
    env = environment(str(sft_pipeline.device))
    questions = [q.question for q in sft_evaluation.questions]
    path = tmp_path / "golden" / "tiny.json"
    write_golden(path, golden_record(sft_evaluation.tuned), env)
    same = check_golden(path, golden_record(sft_evaluation.tuned), env, tmp_path / "local")
    assert same.status == "match", same
    other_model = check_golden(path, golden_record(sft_evaluation.base), env, tmp_path / "local")
    assert other_model.status == "drift" and f"{len(questions)} of {len(questions)}" in other_model.message


@pytest.mark.slow
def test_a_users_recipe_records_its_golden_file_inside_its_folder(tiny_variant, sft_pipeline, tmp_path, cli):
    """`pytest suites/test_golden.py --sft-recipe proj/recipe.toml --sft-update-golden` writes proj/golden/ and
    nothing else outside proj/; the next run holds the answers to it, and a changed generation setting fails it."""
    project = tmp_path / "proj"
    project.mkdir()
    recipe = tiny_variant({'name = "tiny"': 'name = "mine"'}).rename(project / "recipe.toml")
    shipped = {p: p.stat().st_mtime_ns for p in (FIXTURES_DIR / "recipes").rglob("*")}
    before = {p for p in tmp_path.rglob("*")}

    def run(*extra: str) -> subprocess.CompletedProcess:
        return cli.pytest(
            str(SUITES / "test_golden.py"),
            "-q",
            f"--sft-recipe={recipe}",
            f"--sft-cache={sft_pipeline.cache.root}",
            *extra,
            cwd=project,
        )

    recorded = run("--sft-update-golden")
    assert recorded.returncode == 0, recorded.stdout[-3000:]
    written = {p for p in tmp_path.rglob("*")} - before
    assert project / "golden" / "mine.json" in written
    assert all(p.is_relative_to(project) for p in written), sorted(map(str, written))
    assert {p: p.stat().st_mtime_ns for p in (FIXTURES_DIR / "recipes").rglob("*")} == shipped
    assert run().returncode == 0
    # A changed generation setting: every answer of two or more tokens is cut, on any machine.
    recipe.write_text(recipe.read_text(encoding="utf-8").replace("max_new_tokens = 100", "max_new_tokens = 1"))
    drifted = run()
    assert drifted.returncode == 1 and "drifted from the golden outputs" in drifted.stdout, drifted.stdout[-3000:]


SWITCH_PROBE = """
import json
from sft_eval.cache import cache_key
from sft_eval.golden import environment, golden_path, read_golden
from sft_eval.recipe import DEFAULT_RECIPE, load_recipe
env = environment("cpu")
entries = read_golden(golden_path(load_recipe(DEFAULT_RECIPE)))
kind = lambda e: [e.get(k) for k in ("device", "machine", "kernels")]
entry = any(kind(e["environment"]) == kind(env) for e in entries)
print(json.dumps({"env": env, "key": cache_key("tuned", {}), "entry": entry}))
"""


def test_a_forced_kernel_set_is_another_environment_with_cache_entries_of_its_own(cli):
    """`ATEN_CPU_CAPABILITY=default` makes this machine compute as a CPU without AVX would: the environment says
    so, the fixture cache keys differ (no weights trained under one kernel set are served to the other), and the
    shipped golden file has an entry for that kind of CPU (its versions may differ from this environment's)."""
    if environment("cpu")["machine"] not in ("x86_64", "amd64"):
        pytest.skip("the shipped golden entries are for x86-64 kernel sets")

    def probe(**env: str) -> dict:
        result = subprocess.run(
            [sys.executable, "-c", SWITCH_PROBE],
            capture_output=True,
            text=True,
            env=cli.environ(**env),
            timeout=cli.hang_guard_s,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    native, portable = probe(), probe(ATEN_CPU_CAPABILITY="default")
    assert portable["env"]["kernels"] == "DEFAULT" and native["env"]["kernels"] != "DEFAULT", (native, portable)
    assert portable["key"] != native["key"]
    assert portable["entry"], "the shipped golden file has no entry for ATen's portable kernels"
