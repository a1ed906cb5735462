"""Hostile inputs and faults, one case per class of the ways they used to go wrong: each is one line on stderr
naming the culprit and exit 2 (or, for a template the audit judges, a finding and exit 1 with the JSON), never
a traceback, never a hang (every subprocess runs under the hang guard), never a green run that judged nothing.

Every case is its own input, built here; the correct counterpart of each (the tiny recipe) is exercised by the
rest of the tests, which would fail if any of these checks fired on good input.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sft_eval.recipe import FIXTURES_DIR

TINY_DATA = FIXTURES_DIR / "data" / "sft_train.jsonl"
GOOD_ROW = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
ECHO = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
# Every template below keeps ChatML's special tokens, so the tiny base (keyed by its vocabulary) is pretrained
# once for the module: a syntax-error template without them cost 70 s of a base of its own.


def _row(*turns: tuple[str, str]) -> str:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in turns]})


@dataclass
class Case:
    """A recipe folder and one command on it: `R` is the recipe, `D` its folder."""

    command: tuple[str, ...]
    fragments: tuple[str, ...]  # what the one stderr line must say (the culprit)
    sft: str = "max_steps = 2"
    model: str = ""
    eval: str = 'questions = ["Hi"]'
    rows: str | bytes | None = None  # None: the tiny recipe's rows
    files: dict[str, str | bytes | None] = field(default_factory=dict)  # None: a folder
    recipe: bytes | None = None  # the whole recipe file instead
    env: dict[str, str] = field(default_factory=dict)

    def write(self, folder: Path) -> Path:
        if self.rows is not None:
            data = self.rows if isinstance(self.rows, bytes) else self.rows.encode()
            (folder / "rows.jsonl").write_bytes(data)
        for name, content in self.files.items():
            if content is None:
                (folder / name).mkdir()
            else:
                (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        train = "rows.jsonl" if self.rows is not None else str(TINY_DATA)
        model = f"[model]\n{self.model}\n" if self.model else ""
        text = f'name = "hostile"\n{model}[data]\ntrain = "{train}"\n[sft]\n{self.sft}\n[eval]\n{self.eval}\n'
        recipe = folder / "r.toml"
        recipe.write_bytes(self.recipe if self.recipe is not None else text.encode())
        return recipe


def _template(source: str | bytes) -> dict:
    return {"model": 'chat_template = "t.jinja"', "files": {"t.jinja": source}}


TRAIN, PLAN, AUDIT = ("train", "--recipe", "R"), ("plan", "--recipe", "R"), ("audit", "--recipe", "R")
REPORT = ("report", "--recipe", "R", "--out", "D/out")

BAD_INPUT = {
    # 1. hangs with no bound
    "hang: a template that renders 50 MB, at train time": Case(
        TRAIN, ("data.train row 1", "rendered", "characters"), **_template("{{ 'x' * 50000000 }}" + ECHO)
    ),
    "hang: a template that loops, at train time": Case(
        TRAIN, ("data.train row 1", "still rendering after 2 s"), **_template(LOOP + ECHO)
    ),
    "hang: max_new_tokens no context holds": Case(
        REPORT,
        ("eval.max_new_tokens = 100000000", "context of 512"),
        eval='questions = ["Hi"]\nmax_new_tokens = 100000000',
    ),
    "hang: a prompt longer than the context": Case(
        REPORT, ("question 1 renders to", "context of 512"), eval=f'questions = ["{"why " * 2000}"]'
    ),
    # 2. exit 0 having judged nothing
    "nothing judged: an empty questions file": Case(
        AUDIT, ("q.jsonl", "no evaluation questions"), eval='questions_file = "q.jsonl"', files={"q.jsonl": ""}
    ),
    "nothing judged: 0 epochs": Case(
        TRAIN, ("sft.num_train_epochs", "nothing would train"), sft="num_train_epochs = 0"
    ),
    "nothing judged: truncation leaves no trainable token": Case(
        TRAIN, ("none of the 421 rows", "sft.max_length = 1"), sft="max_steps = 3\nmax_length = 1"
    ),
    # 4. tracebacks instead of one line: [sft] values the trainer rejects
    "traceback: accumulation 0": Case(
        TRAIN, ("sft.gradient_accumulation_steps",), sft="gradient_accumulation_steps = 0"
    ),
    "traceback: batch 0": Case(TRAIN, ("sft.per_device_train_batch_size",), sft="per_device_train_batch_size = 0"),
    "traceback: negative learning rate": Case(TRAIN, ("sft.learning_rate", "above 0"), sft="learning_rate = -1"),
    "traceback: learning rate as text": Case(TRAIN, ("sft.learning_rate", "'fast'"), sft='learning_rate = "fast"'),
    "traceback: negative seed": Case(TRAIN, ("sft.seed",), sft="seed = -1"),
    # ... templates that fail at train time
    "traceback: a template that raises": Case(
        TRAIN, ("data.train row 1", "TemplateError", "nope"), **_template("{{ raise_exception('nope') }}")
    ),
    "traceback: a template syntax error": Case(
        TRAIN, ("data.train row 1", "TemplateSyntaxError", "template line 1"), **_template("{% for m in messages %}")
    ),
    # ... datasets
    "traceback: a dataset of 0 rows": Case(PLAN, ("rows.jsonl has no rows",), rows=""),
    "traceback: rows mixing formats": Case(
        PLAN,
        ("rows.jsonl:2", "prompt/completion row", "`messages`"),
        rows=json.dumps(GOOD_ROW) + "\n" + json.dumps({"prompt": "a", "completion": "b"}) + "\n",
    ),
    "traceback: a prompt list of non-messages": Case(
        PLAN, ("rows.jsonl:1", "`prompt` must be a list"), rows=json.dumps({"prompt": [1, 2], "completion": "b"}) + "\n"
    ),
    "traceback: deep nesting": Case(PLAN, ("rows.jsonl:1", "nested too deeply"), rows="[" * 100_000 + "]" * 100_000),
    "traceback: non-UTF-8 rows": Case(
        PLAN, ("rows.jsonl:2", "not UTF-8", "0xff"), rows=json.dumps(GOOD_ROW).encode() + b'\n{"a": "\xff"}\n'
    ),
    # ... non-UTF-8 files
    "traceback: a non-UTF-8 recipe": Case(PLAN, ("r.toml:2", "not UTF-8"), recipe=b'name = "x"\n# caf\xe9\n'),
    "traceback: a non-UTF-8 questions file": Case(
        AUDIT,
        ("q.jsonl:1", "not UTF-8"),
        eval='questions_file = "q.jsonl"',
        files={"q.jsonl": b'{"question": "\xff"}\n'},
    ),
    "traceback: a non-UTF-8 template": Case(AUDIT, ("t.jinja:1", "not UTF-8"), **_template(b"\xfe" + ECHO.encode())),
    # ... devices, caches, outputs, plan numbers
    "traceback: a device that is not here": Case(("train", "--recipe", "R", "--device", "cuda:7"), ("cuda:7",)),
    "traceback: a cache root that is a file": Case(("audit", "--recipe", "R", "--sft-cache", "D/r.toml"), ("r.toml",)),
    "traceback: --out is an existing file": Case(
        ("report", "--recipe", "R", "--out", "D/r.toml"), ("--out", "r.toml", "is a file")
    ),
    "traceback: plan --epochs nan": Case(("plan", "--rows", "10", "--epochs", "nan"), ("--epochs", "nan")),
    "traceback: plan --epochs inf": Case(("plan", "--rows", "10", "--epochs", "inf"), ("--epochs", "inf")),
    # 7. smaller ones
    "small: a name that climbs out of the folder": Case(
        PLAN,
        ("`name`", "../../x"),
        recipe=(f'name = "../../x"\n[data]\ntrain = "{TINY_DATA}"\n[eval]\nquestions = ["Hi"]\n'.encode()),
    ),
    "small: a questions file that is a folder": Case(
        AUDIT, ("eval.questions_file", "is a folder"), eval='questions_file = "q"', files={"q": None}
    ),
    "small: a blank inline question": Case(AUDIT, ("eval.questions", "blank"), eval='questions = ["Hi", "  "]'),
    "small: an unknown role": Case(
        PLAN, ("rows.jsonl:1", "unknown role 'human'", "use 'user'"), rows=_row(("human", "x"), ("assistant", "y"))
    ),
    "small: max_length -1": Case(PLAN, ("sft.max_length", "-1"), sft="max_length = -1"),
    "small: the recipe named as its own template": Case(
        AUDIT, ("model.chat_template", "r.toml", "no Jinja tag"), model='chat_template = "r.toml"'
    ),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """CI's fixture cache when it names one (the tiny tokenizer and base model are then built once for all
    tests), else one for this module."""
    return os.environ.get("SFT_EVAL_CACHE") or str(tmp_path_factory.mktemp("cache"))


def _run(cli, case: Case, folder: Path, cache: str, *, fresh: bool = True) -> subprocess.CompletedProcess:
    """The case's command in a process of its own (its render timeout 2 s), or with `fresh=False` in this one
    (`cli.main`: the same exit code and streams, without importing torch again; the timeout is then the default)."""
    recipe = case.write(folder)
    args = [
        a.replace("R", str(recipe)).replace("D", str(folder)) if a in ("R", "D/out", "D/r.toml") else a
        for a in case.command
    ]
    run = cli.run if fresh else cli.main
    return run(*args, cwd=folder, env={"SFT_EVAL_CACHE": cache, "SFT_EVAL_RENDER_TIMEOUT_S": "2", **case.env})


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_hostile_input_is_one_line_and_exit_2(name, tmp_path, cache, cli):
    """A template that loops in a fresh process (its render timeout, read at import, is 2 s there), the others in
    this one."""
    case = BAD_INPUT[name]
    cli.bad_input(_run(cli, case, tmp_path, cache, fresh="loops" in name), *case.fragments)


def _strict(text: str):
    def refuse(token: str):
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


RECURSES = "{% macro deeper(n) %}{{ deeper(n + 1) }}{% endmacro %}{{ deeper(0) }}"
# Raises only when rendered on another date: the nondeterminism check's second moment (issue 30: a check's own
# conversations are ones training or serving sends, so a raise on a system message alone is no longer one).
RAISES_ON_ANOTHER_DATE = (
    "{%- if strftime_now('%Y') == '2025' -%}{{ raise_exception('not in 2025') }}{%- endif -%}{{ bos_token }}" + ECHO
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, template, check, says",
    [
        ("a loop", LOOP + ECHO, "template.render", "still rendering after 2 s"),
        ("50 MB of output", "{{ 'x' * 50000000 }}" + ECHO, "template.render", "rendered 50,0"),
        ("a syntax error", ECHO.removesuffix("{% endfor %}"), "template.render", "TemplateSyntaxError"),
        ("raises on anything", "{{ raise_exception('never') }}" + ECHO, "template.render", "never"),
        ("infinite recursion", RECURSES + ECHO, "template.render", "Recursion"),
        ("an undefined variable", "{{ settings.style }}" + ECHO, "template.render", "settings"),
        ("raises only on another date", RAISES_ON_ANOTHER_DATE, "template.nondeterministic", "not in 2025"),
        ("stamps the date", "{{ strftime_now('%Y-%m-%d') }}" + ECHO, "template.nondeterministic", "2025-07-04"),
    ],
)
def test_a_misbehaving_template_is_an_audit_finding_with_the_json(name, template, check, says, tmp_path, cache, cli):
    """The audit judges a user's template: one that raises, runs away, recurses, reads what does not exist or
    stamps the date ends the audit with findings of the check that hit it (the JSON printed, exit 0 or 1), never a
    hang or a traceback; a syntax error is not called a refused system message."""
    case = Case(("audit", "--recipe", "R", "--json"), (), **_template(template))
    if "bos_token" in template:  # audited alone, with a tokenizer adapted to it (the tiny one has no BOS)
        case = Case(("audit", "--template", str(tmp_path / "t.jinja"), "--json"), (), files={"t.jinja": template})
    result = _run(cli, case, tmp_path, cache, fresh=name == "a loop")
    assert result.returncode in (0, 1), result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr
    findings = _strict(result.stdout)["findings"]
    assert any(f["check"] == check and says in f["message"] + f["evidence"] for f in findings), findings
    assert not any("refuses a system message" in f["message"] for f in findings), findings


@pytest.mark.slow
def test_the_echo_template_itself_audits_clean_of_render_errors(tmp_path, cache, cli):
    """The correct case for the three above: the same recipe with only the well-behaved part of the template."""
    case = Case(("audit", "--recipe", "R", "--json"), (), **_template(ECHO))
    result = _run(cli, case, tmp_path, cache)
    findings = _strict(result.stdout)["findings"]
    assert not [f for f in findings if f["check"] == "template.render"], findings


@pytest.mark.slow
def test_a_diverged_run_writes_strict_json_and_says_what_was_not_finite(tmp_path, cache, cli):
    """3. Invalid JSON: a learning rate of 1e4 makes the grad norms NaN. `train --json` and the report's JSON parse
    with a parser that refuses NaN (JSON.parse's rule), the non-finite numbers are null, and both say which steps
    were not finite: train fails (exit 1), the report lists them as training problems."""
    case = Case(
        ("train", "--recipe", "R", "--json"),
        (),
        sft="max_steps = 4\nlogging_steps = 1\nlearning_rate = 1e4",
        eval='questions = ["Hi"]\nmax_new_tokens = 8',
    )
    result = _run(cli, case, tmp_path, cache)
    assert result.returncode == 1, result.stderr[-2000:]
    assert any("grad norm nan" in p for p in _strict(result.stdout)["problems"]), result.stdout
    report = cli.run(
        "report", "--recipe", str(tmp_path / "r.toml"), "--out", str(tmp_path / "out"), "--sft-cache", cache
    )
    assert report.returncode == 1 and "FAILED training.loss" in report.stdout, report.stderr[-2000:]
    written = _strict((tmp_path / "out" / "sft_report.json").read_text(encoding="utf-8"))
    assert "training.loss" in [c["name"] for c in written["checks"] if c["passed"] is False], written["checks"]
    training = written["training"]
    assert any(step.get("grad_norm", 0) is None for step in training["steps"]), training["steps"]
    assert any("grad norm nan" in p for p in training["problems"]), training["problems"]


@pytest.mark.slow
def test_a_build_killed_with_sigkill_leaves_no_staging_folder_after_the_next_run(tmp_path, cache, cli):
    """5. Leftovers: `sft-eval train` killed with SIGKILL mid-build leaves its staging folder; the next run of
    the same recipe builds the entry and collects it."""
    seed = random.randrange(2**31)  # an entry no earlier run has built, even in a warm cache
    recipe = Case(TRAIN, (), sft=f"max_steps = 60\nlogging_steps = 20\nseed = {seed}").write(tmp_path)
    command = [sys.executable, "-m", "sft_eval.cli", "train", "--recipe", str(recipe), "--sft-cache", cache]
    staging = ".tuned-*.building-*"
    before = set(Path(cache).glob(staging))
    build = subprocess.Popen(command, env=cli.environ(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + cli.hang_guard_s
        while set(Path(cache).glob(staging)) == before and build.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert build.poll() is None, "the build ended before it could be killed"
        build.send_signal(signal.SIGKILL)
        build.wait(timeout=60)
    finally:
        build.kill()
    left = set(Path(cache).glob(staging)) - before
    assert left, "the killed build left nothing behind to collect"
    again = cli.run("train", "--recipe", str(recipe), "--sft-cache", cache)
    assert again.returncode in (0, 1), again.stderr[-2000:]
    assert not any(path.exists() for path in left), "a dead build's staging folder survived the next run"


def test_the_plugin_turns_a_bad_questions_file_into_one_usage_line(tmp_path, cli):
    """6. The plugin's usage errors: any test file, a recipe whose questions file is missing: one usage line at
    start-up (pytest's exit 4), no test run one by one into the same error."""
    recipe = Case(PLAN, (), eval='questions_file = "missing.jsonl"').write(tmp_path)
    (tmp_path / "test_x.py").write_text("def test_x(sft_recipe):\n    pass\n", encoding="utf-8")
    result = cli.pytest("test_x.py", "--sft-recipe", str(recipe), cwd=tmp_path)
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    assert "missing.jsonl does not exist" in result.stderr and "Traceback" not in result.stderr
    assert "test_x" not in result.stdout


def test_the_plugin_turns_a_report_folder_that_is_a_file_into_one_usage_line(tmp_path, cli):
    """6. A `--sft-report-dir` that is a file was an error after every test had run; now one usage line at start-up."""
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n", encoding="utf-8")
    (tmp_path / "taken").write_text("a file\n", encoding="utf-8")
    result = cli.pytest("test_x.py", "--sft-report-dir", "taken", cwd=tmp_path)
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    assert "--sft-report-dir: taken is a file" in result.stderr and "Traceback" not in result.stderr
    fine = cli.pytest("test_x.py", "--sft-report-dir", "new/reports", cwd=tmp_path)
    assert fine.returncode == 0, fine.stdout[-2000:] + fine.stderr[-2000:]
    assert not (tmp_path / "new").exists(), "start-up created the report folder though no test evaluated"


def test_rows_without_targets_counts_rows_truncation_or_the_loss_mask_left_empty():
    """2. What the "nothing trainable" check counts, on TRL-shaped prepared rows: position 0 is never a target."""
    from datasets import Dataset

    from sft_eval.training import rows_without_targets

    masked = Dataset.from_dict({"input_ids": [[5, 6, 7], [5, 6], [5]], "assistant_masks": [[0, 1, 1], [1, 0], [1]]})
    assert rows_without_targets(masked) == 2  # the second trains only position 0, the third has one token
    plain = Dataset.from_dict({"input_ids": [[5, 6], [5]]})
    assert rows_without_targets(plain) == 1
    assert rows_without_targets(Dataset.from_dict({"input_ids": [[5, 6, 7]]})) == 0
