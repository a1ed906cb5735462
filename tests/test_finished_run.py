"""A run trained elsewhere, judged without retraining: docs/finished-runs.md, as written.

In an empty folder, the guide's `train.py` (plain TRL: `SFTTrainer` + `SftEvalRecorder`, checkpoints saved the
way `Trainer` saves them) fine-tunes a base checkpoint made of the tiny model; then the guide's recipe names the
output folder and its commands run in that folder on a fresh fixture cache. Everything passes, nothing is built
or trained (the cache holds no model), and the report shows the run's own trainer_state.json. Then each broken
case (a checkpoint without its template, a generation config without the end-of-turn id, `use_cache: false`,
sampling defaults, a trainer state whose steps are not the plan) fails its check, and each bad folder is one line.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from sft_eval.audit import CheckId
from sft_eval.audit.checkpoint import audit_tuned_checkpoint
from sft_eval.cache import FixtureCache
from sft_eval.models import finished_run
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import FIXTURES_DIR, load_recipe
from sft_eval.records import normalisation_problems, plan_problems
from sft_eval.training import STEPS_FILE, SftEvalRecorder, read_finished_run

pytestmark = pytest.mark.slow  # the guide's train.py trains 540 steps in a folder of its own

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "finished-runs.md"
README = GUIDE.parent.parent / "README.md"


def section_block(language: str) -> str:
    """The one `language` code block of the guide (docs/finished-runs.md)."""
    (block,) = re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)
    return block


@pytest.fixture(scope="module")
def user(tmp_path_factory, sft_pipeline, cli) -> Path:
    """The user's folder after their GPU job: a base checkpoint, their data, the guide's train.py run to the end."""
    folder = tmp_path_factory.mktemp("trained-elsewhere")
    base = folder / "models" / "my-base"
    shutil.copytree(sft_pipeline.base_model_dir, base, ignore=shutil.ignore_patterns("MANIFEST.json"))
    sft_pipeline.tokenizer.save_pretrained(base)  # the tokenizer with the chat template training renders with
    (folder / "data").mkdir()
    for name in ("sft_train.jsonl", "eval_questions.jsonl"):
        shutil.copy(FIXTURES_DIR / "data" / name, folder / "data" / name.replace("sft_", ""))
    (folder / "train.py").write_text(section_block("python"), encoding="utf-8")
    (folder / "recipe.toml").write_text(section_block("toml"), encoding="utf-8")
    trained = cli.python("train.py", cwd=folder)
    assert trained.returncode == 0, trained.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def commands(user, tmp_path_factory, cli) -> dict:
    """The guide's commands, run in the user's folder on a fresh cache: {line: completed process}, and the cache."""
    cache = tmp_path_factory.mktemp("fresh-cache")
    results = {}
    for line in section_block("bash").strip().splitlines():
        program, *args = shlex.split(line)
        run, extra = (cli.run, []) if program == "sft-eval" else (cli.pytest, ["-rs"])  # -rs: the skip reasons
        results[line] = run(*args, *extra, "--sft-cache", str(cache), cwd=user)
    return {"results": results, "cache": cache}


def test_the_job_saved_checkpoints_the_way_trainer_does(user):
    run = user / "runs" / "my-sft"
    checkpoints = sorted(p.name for p in run.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-200", "checkpoint-400", "checkpoint-540"], checkpoints
    for name in ("trainer_state.json", "training_args.bin", "model.safetensors", "chat_template.jinja"):
        assert (run / "checkpoint-540" / name).is_file(), name
    assert (run / "sft-eval-steps-rank0.json").is_file()


@pytest.mark.parametrize("index", range(4), ids=["audit", "train", "report", "suites"])
def test_the_guides_commands_pass_on_the_finished_run(commands, index):
    line, result = list(commands["results"].items())[index]
    assert result.returncode == 0, f"{line}\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"


def test_nothing_was_built_or_trained(commands):
    """The fresh cache holds no tokenizer, base, tuned or short-run entry: every model came from the folders
    (golden-local, the golden suite's baseline of this machine's answers, is all it keeps)."""
    entries = sorted(p.name for p in commands["cache"].iterdir())
    models = ("tokenizer-", "base-", "tuned-", "short-run-", "ga-run-", "torchrun-")
    assert entries and not [name for name in entries if name.startswith(models)], entries


def test_the_report_shows_the_runs_own_record(user, commands):
    state = json.loads((user / "runs" / "my-sft" / "checkpoint-540" / "trainer_state.json").read_text())
    report = json.loads((user / "reports" / "my-sft" / "sft_report.json").read_text(encoding="utf-8"))
    training = report["training"]
    assert training["source"] == str(user / "runs" / "my-sft" / "checkpoint-540" / "trainer_state.json")
    assert training["global_step"] == state["global_step"] == 540
    logged = [(e["step"], e["loss"]) for e in state["log_history"] if "loss" in e]
    assert [tuple(x) for x in training["losses"]] == logged
    assert training["plan_mismatches"] == [] and len(training["steps"]) == 540


def test_the_suites_skip_only_the_checks_that_train_runs_of_their_own(commands):
    line = next(k for k in commands["results"] if k.startswith("pytest"))
    skips = [s for s in commands["results"][line].stdout.splitlines() if s.startswith("SKIPPED")]
    trains = [s for s in skips if "nothing trains here" in s]
    assert trains and any("test_grad_accumulation" in s for s in trains), skips
    assert not any("test_checkpoint" in s or "test_responses" in s for s in skips), skips


def readme_sweep_lines() -> list[str]:
    """README's "Choose a checkpoint" commands, as written."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Choose a checkpoint\n") :]
    section = section[: section.index("\n## ", 1)]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line for line in block.splitlines() if line.strip()]


def test_the_readmes_checkpoint_sweep_runs_on_the_finished_run(user, commands, cli):
    """README's sweep walkthrough in the user's folder, after the guide's commands (the answers of the last
    checkpoint are in their cache already): every checkpoint judged, the page written, the test passing."""
    cache = commands["cache"]
    lines = readme_sweep_lines()
    assert [shlex.split(line, comments=True)[0] for line in lines] == ["sft-eval", "pytest"], lines
    sweep = cli.run(*shlex.split(lines[0], comments=True)[1:], "--sft-cache", str(cache), cwd=user)
    assert sweep.returncode == 0, f"{sweep.stdout[-3000:]}{sweep.stderr[-2000:]}"
    data = json.loads((user / "reports" / "sweep" / "sweep.json").read_text(encoding="utf-8"))
    assert [r["name"] for r in data["checkpoints"]] == ["checkpoint-200", "checkpoint-400", "checkpoint-540"]
    assert data["best"] in {r["name"] for r in data["checkpoints"]} and data["findings"] == []
    assert "overfitting not judged" in data["notes"][0]  # the guide's job evaluates no held-out rows
    assert data["checkpoints"][-1]["answers_generated"] == 0  # the guide's commands asked checkpoint-540 already
    suite = cli.pytest(*shlex.split(lines[1], comments=True)[1:], "-p", "no:randomly", "--sft-cache", str(cache),
                       "--sft-report-dir", str(user / "reports" / "sweep-test"), cwd=user)  # fmt: skip
    assert suite.returncode == 0 and "1 passed" in suite.stdout, suite.stdout[-3000:]


def recipe_for(user: Path, tmp_path: Path, tuned: Path) -> Path:
    """The user's recipe, written elsewhere with absolute paths, its `tuned` pointed at `tuned`."""
    text = (user / "recipe.toml").read_text(encoding="utf-8")
    text = text.replace('"models/my-base"', f'"{user / "models" / "my-base"}"').replace('"data/', f'"{user / "data"}/')
    path = tmp_path / "recipe.toml"
    path.write_text(text.replace('tuned = "runs/my-sft"', f'tuned = "{tuned}"'), encoding="utf-8")
    return path


# -- broken cases: each contract check and the plan check fire on a broken copy, and stay quiet on the original --
def broken_copy(user: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / "broken"
    shutil.copytree(user / "runs" / "my-sft" / "checkpoint-540", folder)
    edit(folder)
    return folder


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data), encoding="utf-8")


def no_template(folder: Path) -> None:
    (folder / "chat_template.jinja").unlink()
    edit_json(folder / "tokenizer_config.json", chat_template=None)


BROKEN = {
    CheckId.CHECKPOINT_TEMPLATE: no_template,
    CheckId.CHECKPOINT_EOS: lambda f: (
        edit_json(f / "generation_config.json", eos_token_id=0),
        edit_json(f / "tokenizer_config.json", eos_token="<|endoftext|>"),
    ),
    CheckId.CHECKPOINT_USE_CACHE: lambda f: edit_json(f / "config.json", use_cache=False),
    CheckId.CHECKPOINT_SAMPLING: lambda f: edit_json(f / "generation_config.json", do_sample=True, temperature=0.7),
}


@pytest.mark.parametrize("check", list(BROKEN), ids=[str(c) for c in BROKEN])
def test_each_contract_check_fires_on_its_broken_checkpoint_only(user, tmp_path, sft_pipeline, check):
    tokenizer = sft_pipeline.tokenizer
    quiet = audit_tuned_checkpoint(tokenizer, user / "runs" / "my-sft" / "checkpoint-540")
    assert not [f for f in quiet if f.severity != "info"], quiet
    fired = audit_tuned_checkpoint(tokenizer, broken_copy(user, tmp_path, BROKEN[check]))
    assert [f.check for f in fired if f.severity != "info"] == [check], fired


def test_the_suite_fails_on_a_broken_checkpoint_naming_each_id(user, tmp_path, cli):
    def break_all(folder: Path) -> None:
        for edit in BROKEN.values():
            edit(folder)

    broken = broken_copy(user, tmp_path, break_all)
    recipe = recipe_for(user, tmp_path, broken)
    suite = ["--pyargs", "sft_eval.suites.test_checkpoint", "--sft-recipe", str(recipe), "-q"]
    result = cli.pytest(*suite, "--sft-cache", str(tmp_path / "cache"), cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-3000:]
    for check in BROKEN:
        assert f"test_tuned_checkpoint_keeps_its_contract[{check}] - " in result.stdout, (check, result.stdout[-3000:])


def test_a_trainer_state_whose_steps_are_not_the_plan_is_caught(user, tmp_path):
    recipe = load_recipe(user / "recipe.toml")
    good = read_finished_run(finished_run(user / "runs" / "my-sft"), recipe, 421)
    assert plan_problems(good) == [] and normalisation_problems(good.steps) == []

    def fewer_steps(folder: Path) -> None:  # a record of its own: no log entry beyond its global_step (issue 44)
        state = folder / "trainer_state.json"
        log = [e for e in json.loads(state.read_text(encoding="utf-8"))["log_history"] if e["step"] <= 270]
        edit_json(state, max_steps=270, global_step=270, train_batch_size=32, log_history=log)
        (folder / "sft-eval-steps-rank0.json").unlink(missing_ok=True)

    bad = read_finished_run(finished_run(broken_copy(user, tmp_path, fewer_steps)), recipe, 421)
    problems = plan_problems(bad)
    assert any("planned 270 optimizer steps" in p and "is 540" in p for p in problems), problems
    assert any("32 sequences per device" in p for p in problems), problems


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (lambda f: (f / "notes.txt").write_text("x"), ["is neither a checkpoint"]),
        (lambda f: (f / "adapter_config.json").write_text("{}"), ["PEFT adapter", "no adapter_model.safetensors"]),
        (lambda f: ((f / "config.json").write_text("{}"), (f / "pytorch_model.bin").write_bytes(b"")), ["pickled"]),
    ],
    ids=["not-a-checkpoint", "adapter-without-weights", "pickled-weights"],
)
def test_a_tuned_folder_that_is_no_full_checkpoint_is_one_line(tmp_path, user, cli, make, fragments):
    folder = tmp_path / "run"
    folder.mkdir()
    make(folder)
    recipe = recipe_for(user, tmp_path, folder)
    cli.bad_input(
        cli.main("audit", "--recipe", str(recipe), "--sft-cache", str(tmp_path / "c")), "model.tuned", *fragments
    )


def test_a_trainer_state_that_does_not_parse_is_one_line(tmp_path, user, cli):
    folder = broken_copy(user, tmp_path, lambda f: (f / "trainer_state.json").write_text('{"global_step": 5,\n'))
    recipe = recipe_for(user, tmp_path, folder)
    result = cli.main("train", "--recipe", str(recipe), "--sft-cache", str(tmp_path / "c"))
    cli.bad_input(result, "model.tuned", "trainer_state.json:2", "not valid JSON")


def test_weights_of_another_architecture_are_one_line(tmp_path, user, cli):
    folder = broken_copy(user, tmp_path, lambda f: edit_json(f / "config.json", hidden_size=576, num_hidden_layers=30))
    recipe = recipe_for(user, tmp_path, folder)
    result = cli.main("audit", "--recipe", str(recipe), "--sft-cache", str(tmp_path / "c"))
    cli.bad_input(result, "model.tuned", "hidden_size 576 (base 128)", "did not start from model.base")


def test_a_smoke_row_limit_leaves_the_finished_runs_plan_whole(user, cli, tmp_path):
    """`--max-train-rows` cuts what would train; nothing trains here, so the record is held against all rows."""
    result = cli.main(
        "train", "--recipe", "recipe.toml", "--max-train-rows", "8", "--json", "--sft-cache", str(tmp_path), cwd=user
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    run = json.loads(result.stdout)
    assert (run["global_step"], run["train_rows"], run["problems"]) == (540, 421, []), run


def test_a_resumed_job_keeps_the_recorders_earlier_steps(tmp_path):
    """`trainer.train(resume_from_checkpoint=...)` starts a new process at step N: the record keeps steps 1..N
    from the file and drops what a crashed run recorded after its checkpoint."""
    earlier = SftEvalRecorder()
    earlier.steps = [{"step": s, "loss": float(s)} for s in range(1, 6)]
    earlier.write(tmp_path, 0, 1)
    resumed = SftEvalRecorder()
    args = SimpleNamespace(output_dir=str(tmp_path), process_index=0)
    resumed.on_train_begin(args, SimpleNamespace(global_step=3), None)
    assert [s["step"] for s in resumed.steps] == [1, 2, 3]
    fresh = SftEvalRecorder()
    fresh.on_train_begin(args, SimpleNamespace(global_step=0), None)
    assert fresh.steps == [] and (tmp_path / STEPS_FILE.format(rank=0)).is_file()


def test_a_served_tuned_model_with_its_folder_for_the_record_trains_nothing(user, tmp_path):
    """`eval.backend = "openai"` answers from a server; the folder still gives the record, and nothing trains."""
    recipe_path = recipe_for(user, tmp_path, user / "runs" / "my-sft")
    text = recipe_path.read_text(encoding="utf-8").replace(
        "[eval]\n", '[eval]\nbackend = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
    )
    recipe_path.write_text(text, encoding="utf-8")
    pipeline = Pipeline(load_recipe(recipe_path), FixtureCache(tmp_path / "cache"), "cpu")
    assert pipeline.training_run.global_step == 540 and pipeline.training_run.source.endswith("trainer_state.json")
    assert pipeline.tuned_model_dir == user / "runs" / "my-sft" / "checkpoint-540"
    assert not [p for p in (tmp_path / "cache").glob("*") if p.name.startswith(("tuned-", "base-", "tokenizer-"))]
