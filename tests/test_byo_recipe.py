"""Bring your own recipe, as a user would, with nothing downloaded: a checkpoint of the lesson model's shape
(SmolLM2-135M: Llama, hidden 576, 30 layers, random weights) with a tokenizer of its own, 100 rows, the
lesson's SFTConfig; run through the CLI and through the pytest plugin from another folder. Then real files
nobody here wrote (../shared/realworld): a real tiny GPT-2 checkpoint without a chat template, and SmolLM2's
real tokenizer.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from transformers import AutoConfig, GenerationConfig

from sft_eval.models import SMOLLM2_135M, save_random_checkpoint
from sft_eval.recipe import FIXTURES_DIR

pytestmark = pytest.mark.slow  # a 135M-parameter stand-in and a real GPT-2 checkpoint, a process per command

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "user-repo"
ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "bring-your-own.md"
LIBRARY = ROOT / "docs" / "library.md"
TRAIN_ROWS = FIXTURES_DIR / "data" / "sft_train.jsonl"
# The guide's command, as a user types it in their repository.
USER_COMMAND = "pytest test_my_sft.py --sft-recipe recipe.toml --sft-max-train-rows 8 --sft-max-eval-questions 2"
SEED_LESSON = FIXTURES_DIR / "recipes" / "seed_lesson.toml"


def lesson_recipe(base: str, train: str) -> str:
    """The lesson's own recipe with its model and dataset pointed at local copies, as its comment says to."""
    text = SEED_LESSON.read_text(encoding="utf-8")
    return text.replace('"HuggingFaceTB/SmolLM2-135M"', f'"{base}"').replace('"banghua/DL-SFT-Dataset"', f'"{train}"')


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """This module's own fixture cache: the 135M checkpoints it trains are removed when it is done."""
    folder = tmp_path_factory.mktemp("byo-cache")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    """Weights only (no tokenizer): SmolLM2-135M's architecture with random weights, 135 M parameters."""
    folder = tmp_path_factory.mktemp("smollm2-135m-weights")
    save_random_checkpoint(folder, None, **SMOLLM2_135M)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _checkpoint_with(stand_in: Path, folder: Path, tokenizer) -> Path:
    """The stand-in's weights (hard-linked, not copied) in `folder`, with `tokenizer` saved beside them and the
    config's eos/pad ids set to the tokenizer's, as in a real checkpoint (the stand-in has Llama's defaults)."""
    folder.mkdir(parents=True)
    os.link(stand_in / "model.safetensors", folder / "model.safetensors")
    config = AutoConfig.from_pretrained(stand_in)
    config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    config.save_pretrained(folder)
    GenerationConfig.from_model_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def doc_block(doc: Path, language: str, containing: str) -> str:
    """The code block in `language` of the document `doc` that contains `containing`."""
    blocks = re.findall(rf"```{language}\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if containing in b]
    assert len(found) == 1, f"{doc.name} has {len(found)} {language} blocks with {containing!r}"
    return found[0]


def doc_commands(doc: Path, section: str) -> list[str]:
    """The `sft-eval` and `pytest` lines of the bash blocks in a section of the document `doc`, comments
    included (the section ends at the next heading of its level or above; a `# comment` in a block is none)."""
    commands, level, fence = [], None, None
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:]
            continue
        heading = re.match(r"(#+) (.*)", line) if fence is None else None
        if heading and level is not None and len(heading.group(1)) <= level:
            break
        if heading and heading.group(2) == section:
            level = len(heading.group(1))
        elif level is not None and fence == "bash" and line.startswith(("sft-eval ", "pytest ")):
            commands.append(line)
    return commands


@pytest.fixture(scope="module")
def user_repo(tmp_path_factory, sft_pipeline) -> Path:
    """A user's repository: the guide's recipe and test file, a checkpoint folder made with the guide's
    stand-in snippet (SmolLM2-135M's shape, our own tokenizer), 100 training rows."""
    repo = tmp_path_factory.mktemp("user-repo")
    for item in EXAMPLE.iterdir():
        shutil.copy(item, repo / item.name)
    tokenizer = tmp_path_factory.mktemp("users-tokenizer")
    sft_pipeline.tokenizer.save_pretrained(tokenizer)
    snippet = doc_block(GUIDE, "python", "save_random_checkpoint").replace("path/to/your/tokenizer", str(tokenizer))
    with contextlib.chdir(repo):
        exec(compile(snippet, str(GUIDE), "exec"), {})
    (repo / "data").mkdir()
    rows = TRAIN_ROWS.read_text(encoding="utf-8").splitlines()[:100]
    (repo / "data" / "train.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return repo


def test_the_users_recipe_audits_without_errors(user_repo, cache, cli):
    result = cli.run("audit", "--recipe", "recipe.toml", "--sft-cache", str(cache), "--json", cwd=user_repo)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    findings = json.loads(result.stdout)["findings"]
    assert not [f for f in findings if f["severity"] == "error"], findings


def test_the_users_plan_is_the_lessons_13_steps(user_repo, cli):
    result = cli.run("plan", "--recipe", "recipe.toml", "--json", cwd=user_repo)
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout)
    seen = {k: plan[k] for k in ("effective_batch", "micro_batches_per_rank", "optimizer_steps")}
    assert seen == {"effective_batch": 8, "micro_batches_per_rank": 100, "optimizer_steps": 13}, plan
    assert plan["last_step_micro_batches"] == 4, plan


def test_a_one_step_smoke_train_of_the_users_recipe(user_repo, cache, cli):
    result = cli.run(
        "train", "--recipe", "recipe.toml", "--sft-cache", str(cache), "--max-train-rows", "8", "--json", cwd=user_repo
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    run = json.loads(result.stdout)
    assert (run["global_step"], run["train_rows"], run["problems"]) == (1, 8, []), run
    assert "too few to see whether the loss fell" in run["not_judged"], run


def test_the_plugin_runs_the_users_test_file_in_their_repository(user_repo, cache, cli):
    command = USER_COMMAND.split()[1:] + ["--sft-cache", str(cache), "--junitxml", "results.xml"]
    result = cli.pytest(*command, cwd=user_repo)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    suite = ET.parse(user_repo / "results.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "0", "0"), result.stdout[-2000:]
    assert "sft-eval report" in result.stdout and (user_repo / "reports" / "sft_report.html").is_file()


def test_the_users_test_file_fails_when_their_template_is_broken(user_repo, cache, cli):
    """The same user test, with the lesson's fallback template in the recipe: the audit test must fail."""
    broken = user_repo / "broken.toml"
    recipe = (user_repo / "recipe.toml").read_text(encoding="utf-8")
    broken.write_text(recipe.replace("[data]", 'chat_template = "lesson_fallback"\n\n[data]', 1), encoding="utf-8")
    result = cli.pytest(
        "test_my_sft.py", "--sft-recipe", "broken.toml", "-k", "audits", "--sft-cache", str(cache), cwd=user_repo
    )
    assert result.returncode == 1, result.stdout[-3000:]
    assert "1 failed" in result.stdout and "template.generation_prompt" in result.stdout, result.stdout[-3000:]


def test_the_guide_shows_the_example_as_it_is_tested():
    guide = GUIDE.read_text(encoding="utf-8")
    for name in ("recipe.toml", "test_my_sft.py"):
        assert (EXAMPLE / name).read_text(encoding="utf-8") in guide, f"{GUIDE.name}'s copy of {name} differs"
    assert USER_COMMAND in doc_commands(GUIDE, "Bring your own recipe"), "the guide does not show the command tested"


def _expected_exit(line: str) -> int:
    """What a README command line must exit with: 1 where its comment says `exit 1`, else 0."""
    return 1 if "# exit 1" in line else 0


@pytest.mark.parametrize("line", doc_commands(README, "Command line"), ids=lambda line: line.split("#")[0].strip())
def test_readme_command_line_examples_run_as_documented(line, sft_pipeline, cli):
    command = shlex.split(line, comments=True)
    result = cli.run(*command[1:], cwd=README.parent, env={"SFT_EVAL_CACHE": str(sft_pipeline.cache.root)})
    assert result.returncode == _expected_exit(line), f"{line}\nexit {result.returncode}: {result.stderr[-2000:]}"
    if "--json" in command:
        data = json.loads(result.stdout)
        if command[1] == "bench":  # the bench JSON contract: the tuned model's figures on top, the base's beside
            for key in ("loop_tokens_per_s", "batched_tokens_per_s", "speedup", "raw_floor_tokens_per_s"):
                assert data[key] > 0 and data["base"][key] > 0, key
            assert data["identical_outputs"] is True and data["base"]["identical_outputs"] is True


def test_the_guides_examples_run_in_the_users_repository(user_repo, cache, cli):
    lines = [line for line in doc_commands(GUIDE, "Bring your own recipe") if line != USER_COMMAND]
    assert len(lines) >= 4, lines
    for line in lines:
        command = shlex.split(line, comments=True)
        result = cli.run(*command[1:], cwd=user_repo, env={"SFT_EVAL_CACHE": str(cache)})
        assert result.returncode == _expected_exit(line), (
            f"{line}\nexit {result.returncode}: {result.stdout[-1500:]}{result.stderr[-1500:]}"
        )
        if command[1] == "report":  # a smoke run: the report is written and names the thresholds it fails
            assert "FAILED responses." in result.stdout and "report: " in result.stdout, result.stdout


def test_the_lesson_helpers_example_runs(sft_pipeline):
    snippet = doc_block(LIBRARY, "python", "load_model_and_tokenizer").replace(
        "path/to/checkpoint", str(sft_pipeline.tuned_model_dir)
    )
    printed = io.StringIO()
    with contextlib.chdir(README.parent), contextlib.redirect_stdout(printed):
        exec(compile(snippet, str(LIBRARY), "exec"), {})
    lines = printed.getvalue().splitlines()
    assert lines[0] and any(line.endswith(" eos") for line in lines[1:3]), lines
    assert "User Prompt" in printed.getvalue(), lines


def test_a_model_folder_without_a_tokenizer_is_one_line(tmp_path, stand_in, cli):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'name = "r"\n[model]\nbase = "{stand_in}"\n[data]\ntrain = "{TRAIN_ROWS}"\n[eval]\nquestions = ["Hi"]\n'
    )
    cli.bad_input(cli.main("audit", "--recipe", str(recipe), cwd=tmp_path), str(stand_in), "has no tokenizer")


def test_a_tokenizer_without_a_template_and_a_recipe_without_one_is_one_line(tmp_path, stand_in, sft_pipeline, cli):
    tokenizer = sft_pipeline.tokenizer.__class__.from_pretrained(str(sft_pipeline.tuned_model_dir))
    tokenizer.chat_template = None
    folder = _checkpoint_with(stand_in, tmp_path / "no-template", tokenizer)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'name = "r"\n[model]\nbase = "{folder}"\n[data]\ntrain = "{TRAIN_ROWS}"\n[eval]\nquestions = ["Hi"]\n'
    )
    cli.bad_input(
        cli.main("audit", "--recipe", str(recipe), cwd=tmp_path), "model.chat_template", "has no chat template"
    )


def test_a_malformed_dataset_line_is_one_line_with_its_number(tmp_path, cli):
    rows = TRAIN_ROWS.read_text(encoding="utf-8").splitlines()[:3]
    rows[2] = rows[2][:-5]  # the third line cut short
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('name = "r"\n[data]\ntrain = "train.jsonl"\n[eval]\nquestions = ["Hi"]\n')
    cli.bad_input(cli.main("plan", "--recipe", str(recipe), cwd=tmp_path), f"{tmp_path / 'train.jsonl'}:3")


def test_an_sft_field_trl_does_not_have_is_one_line_with_close_matches(tmp_path, cli):
    recipe = tmp_path / "recipe.toml"
    text = lesson_recipe("tiny", str(TRAIN_ROWS))
    recipe.write_text(text.replace("gradient_accumulation_steps", "grad_accumulation_steps"), encoding="utf-8")
    cli.bad_input(
        cli.main("train", "--recipe", str(recipe), cwd=tmp_path),
        "unknown key `sft.grad_accumulation_steps`",
        "did you mean sft.gradient_accumulation_steps",
    )


# -- real files nobody here wrote -------------------------------------------------------------------------------


@pytest.mark.realworld
def test_smollm2s_real_tokenizer_with_a_random_model_of_its_shape(realworld_dir, user_repo, stand_in, cache, cli):
    """SmolLM2's real tokenizer and template (pad = eos = <|im_end|>, right padding) on the stand-in weights:
    the audit reports what is true of it, the plan is the lesson's, one step trains."""
    tokenizer = realworld_dir / "tokenizers" / "SmolLM2-135M-Instruct"
    recipe = user_repo / "smollm2.toml"
    text = lesson_recipe(str(stand_in), "data/train.jsonl")
    recipe.write_text(text.replace("[data]", f'tokenizer = "{tokenizer}"\n\n[data]', 1), encoding="utf-8")
    audit = cli.run("audit", "--recipe", str(recipe), "--sft-cache", str(cache), "--json", cwd=user_repo)
    assert audit.returncode == 0, audit.stdout + audit.stderr[-2000:]
    findings = {(f["check"], f["severity"], f["message"].split(";")[0]) for f in json.loads(audit.stdout)["findings"]}
    assert ("tokenizer.pad", "info", "pad = eos ('<|im_end|>')") in findings, findings
    assert any(check == "tokenizer.pad" and "padding side is right" in m for check, _, m in findings), findings
    plan = json.loads(cli.run("plan", "--recipe", str(recipe), "--json", cwd=user_repo).stdout)
    assert (plan["optimizer_steps"], plan["effective_batch"]) == (13, 8), plan
    train = cli.run(
        "train", "--recipe", str(recipe), "--sft-cache", str(cache), "--max-train-rows", "8", "--json", cwd=user_repo
    )
    assert train.returncode == 0, train.stdout + train.stderr[-2000:]
    assert json.loads(train.stdout)["global_step"] == 1


GPT2_TEMPLATE = """{%- for message in messages -%}
{{ message['role'] }}:
{{ message['content'] }}{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}

{% endfor -%}
{%- if add_generation_prompt %}assistant:
{% endif -%}
"""
# What a 2-dimensional GPT-2 cannot do, whatever its recipe: learn, stop, or stay off loops.
GPT2_QUALITY_FAILURES = {
    "test_loss_and_grad_norm_are_finite_and_the_loss_fell",
    "test_tuned_model_stops_at_end_of_turn",
    "test_tuned_answers_do_not_loop",
    "test_tuned_answer_is_sane",
    "test_answer_length_like_training",  # it never learned to stop: its answers run to max_new_tokens
}


@pytest.fixture(scope="module")
def gpt2_recipe(realworld_dir, tmp_path_factory) -> Path:
    """sshleifer/tiny-gpt2 (a real checkpoint, no chat template), the template supplied by the recipe, trained
    on conversational prompt/completion rows saved with `datasets.save_to_disk`."""
    import datasets

    folder = tmp_path_factory.mktemp("gpt2-user")
    rows = []
    for line in TRAIN_ROWS.read_text(encoding="utf-8").splitlines()[:40]:
        messages = json.loads(line)["messages"]
        rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
    datasets.Dataset.from_list(rows).save_to_disk(str(folder / "rows"))
    (folder / "plain.jinja").write_text(GPT2_TEMPLATE, encoding="utf-8")
    recipe = folder / "recipe.toml"
    recipe.write_text(
        f'name = "gpt2"\n[model]\nbase = "{realworld_dir / "checkpoints" / "sshleifer-tiny-gpt2"}"\n'
        'chat_template = "plain.jinja"\n[data]\ntrain = "rows"\n'
        "[sft]\nlearning_rate = 1e-3\nnum_train_epochs = 1\nper_device_train_batch_size = 4\n"
        "gradient_accumulation_steps = 2\nlogging_steps = 1\n"
        '[eval]\nmax_new_tokens = 10\nquestions = ["Calculate 1+1-1", "What is the capital of France?"]\n'
    )
    return recipe


@pytest.mark.realworld
def test_every_suite_runs_on_a_real_gpt2_checkpoint(gpt2_recipe, cache, tmp_path, cli):
    """`pytest suites/ --recipe` on a checkpoint nobody here made: nothing errors; what fails is only what such a
    model cannot do; what cannot apply skips with its reason."""
    results = tmp_path / "results.xml"
    suites = Path(__file__).resolve().parent.parent / "suites"
    result = cli.pytest(
        str(suites),
        *["--sft-recipe", str(gpt2_recipe), "--sft-cache", str(cache), "--junitxml", str(results), "-q"],
        *["--sft-report-dir", str(tmp_path / "reports")],
        cwd=tmp_path,
    )
    outcomes: dict[str, set[str]] = {"failed": set(), "error": set(), "skipped": set(), "passed": set()}
    for case in ET.parse(results).getroot().iter("testcase"):
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        outcomes["failed" if kind == "failure" else kind].add(case.get("name").split("[")[0])
    crash = result.stdout[result.stdout.find("= ERRORS =") :][:4000]
    assert not outcomes["error"], f"suites crashed on a foreign recipe: {outcomes['error']}\n{crash}"
    assert outcomes["failed"] <= GPT2_QUALITY_FAILURES, f"unexpected failures: {outcomes['failed']}"
    assert "test_loss_and_grad_norm_are_finite_and_the_loss_fell" in outcomes["failed"], "a 2-dim GPT-2 learned?"
    for must_run in ("test_plan_matches_what_the_trainer_did", "test_accumulated_runs_equal_the_full_batch_run"):
        assert must_run in outcomes["passed"], f"{must_run} did not pass on the GPT-2 recipe"
    assert "test_tuned_answers_match_the_golden_outputs" in outcomes["skipped"]


@pytest.mark.realworld
def test_the_gpt2_recipe_without_a_template_is_one_line(gpt2_recipe, tmp_path, cli):
    recipe = tmp_path / "no-template.toml"
    text = gpt2_recipe.read_text(encoding="utf-8").replace('chat_template = "plain.jinja"\n', "")
    recipe.write_text(text.replace('train = "rows"', f'train = "{gpt2_recipe.parent / "rows"}"'), encoding="utf-8")
    cli.bad_input(cli.main("audit", "--recipe", str(recipe), cwd=tmp_path), "sshleifer-tiny-gpt2 has no chat template")


@pytest.mark.realworld
def test_bench_on_the_gpt2_recipe_batches_without_a_pad_token(gpt2_recipe, cache, cli):
    """GPT-2 has no pad token: the batched engine pads with its eos under the attention mask, and its greedy
    answers still equal the one-at-a-time loop's and the raw KV-cache loop's, token for token."""
    result = cli.run("bench", "--recipe", str(gpt2_recipe), "--sft-cache", str(cache), "--json", cwd=gpt2_recipe.parent)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    speed = json.loads(result.stdout)
    assert speed["identical_outputs"] and speed["base"]["identical_outputs"], speed
    assert speed["new_tokens"] > 0 and speed["prompts"] == 32, speed
