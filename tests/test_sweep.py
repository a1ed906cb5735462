"""Which checkpoint to ship: `sft-eval sweep` and `--sft-sweep` on runs trained with plain TRL.

Two runs of the tiny base, trained here with `SFTTrainer` and held-out evaluation: one overfits (16 rows, 15
epochs at a constant 3e-3: eval_loss is lowest at the first evaluation and rises while the training loss falls),
one does not (256 rows, one epoch: eval_loss falls at every evaluation). The sweep names a best checkpoint that is
not the overfit run's last and raises `sweep.overfitting`; the steady run raises nothing; the overfit run with its
best checkpoint deleted, as `save_total_limit` does, raises `sweep.best_missing`. The findings no run here
provokes (the last checkpoint worse than the best on the questions, eval_loss and the task metric disagreeing) are
checked on plain data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sft_eval.audit import CheckId
from sft_eval.cache import FixtureCache
from sft_eval.checkpoint_sweep import sweep_checkpoints
from sft_eval.compare import Outcome
from sft_eval.errors import SftEvalError
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import FIXTURES_DIR, load_recipe
from sft_eval.sources import ModelSource
from sft_eval.sweep import CheckpointResult, TrainerRecord, sweep

ROWS = FIXTURES_DIR / "data" / "sft_train.jsonl"
QUESTIONS = FIXTURES_DIR / "data" / "eval_questions.jsonl"


def train_run(folder: Path, sft_pipeline, *, rows: int, epochs: float, eval_steps: int, save_steps: int) -> Path:
    """A user's run folder: the session's tiny base copied to `base/`, `run/` trained by plain TRL on the first
    `rows` training rows, evaluated on the last 64 (held out) every `eval_steps` and saved every `save_steps`,
    with `metric_for_best_model = "eval_loss"` (so the state records its best checkpoint); and a recipe naming
    both. Returns the recipe."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    base = folder / "base"
    shutil.copytree(sft_pipeline.base_model_dir, base, ignore=shutil.ignore_patterns("MANIFEST.json"))
    sft_pipeline.tokenizer.save_pretrained(base)
    lines = [json.loads(line) for line in ROWS.read_text(encoding="utf-8").splitlines()]
    config = SFTConfig(
        output_dir=str(folder / "run"),
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        num_train_epochs=epochs,
        per_device_train_batch_size=4,
        logging_steps=5,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_steps=save_steps,
        metric_for_best_model="eval_loss",
        assistant_only_loss=True,
        max_length=256,
        bf16=False,
        seed=0,
        report_to="none",
        disable_tqdm=True,
    )
    SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(base),
        args=config,
        train_dataset=Dataset.from_list(lines[:rows]),
        eval_dataset=Dataset.from_list(lines[-64:]),
        processing_class=AutoTokenizer.from_pretrained(base),
    ).train()
    recipe = folder / "recipe.toml"
    recipe.write_text(
        f'name = "{folder.name}"\n\n[model]\nbase = "base"\ntuned = "run"\n\n[data]\ntrain = "{ROWS}"\n\n'
        f'[eval]\nquestions_file = "{QUESTIONS}"\n',
        encoding="utf-8",
    )
    return recipe


@pytest.fixture(scope="module")
def overfit(tmp_path_factory, sft_pipeline) -> Path:
    """Trains (60 steps, ~7 s): no session fixture is a run with checkpoints and held-out evaluation."""
    return train_run(tmp_path_factory.mktemp("overfit"), sft_pipeline, rows=16, epochs=15, eval_steps=5, save_steps=10)


@pytest.fixture(scope="module")
def steady(tmp_path_factory, sft_pipeline) -> Path:
    """Trains (64 steps, ~8 s): the run that does not overfit, beside the one that does."""
    return train_run(tmp_path_factory.mktemp("steady"), sft_pipeline, rows=256, epochs=1, eval_steps=16, save_steps=16)


def run_sweep(recipe: Path, cache: FixtureCache):
    return sweep_checkpoints(Pipeline(load_recipe(recipe), cache, device="cpu"))


@pytest.mark.slow  # the runs trained above
def test_an_overfitting_run_names_an_earlier_best_and_the_finding(overfit, sft_pipeline):
    result = run_sweep(overfit, sft_pipeline.cache)
    names = [r["name"] for r in result.rows]
    assert names == [
        "checkpoint-10",
        "checkpoint-20",
        "checkpoint-30",
        "checkpoint-40",
        "checkpoint-50",
        "checkpoint-60",
    ]
    assert result.best != names[-1], result.rows
    (finding,) = [f for f in result.findings if f.check == CheckId.SWEEP_OVERFITTING]
    assert finding.severity == "error" and "eval_loss rose from" in finding.message
    low = min(result.record.eval_losses, key=lambda e: e[1])
    assert f"at step {low[0]} (its lowest)" in finding.message
    assert all(r["eval_loss"] is not None and r["train_loss"] is not None for r in result.rows)


@pytest.mark.slow  # the runs trained above
def test_a_steady_run_raises_no_finding_and_ships_its_last_checkpoint(steady, sft_pipeline):
    result = run_sweep(steady, sft_pipeline.cache)
    assert result.findings == [], [f.message for f in result.findings]
    assert result.best == "checkpoint-64" and result.notes == []
    losses = [r["eval_loss"] for r in result.rows]
    assert losses == sorted(losses, reverse=True)  # the point of this run: eval_loss falls at every evaluation


@pytest.mark.slow  # the runs trained above
def test_the_best_checkpoint_deleted_by_save_total_limit_is_a_finding(overfit, sft_pipeline, tmp_path):
    folder = tmp_path / "pruned"
    shutil.copytree(overfit.parent, folder, symlinks=True)
    state = json.loads((folder / "run" / "checkpoint-60" / "trainer_state.json").read_text(encoding="utf-8"))
    best = Path(state["best_model_checkpoint"]).name
    shutil.rmtree(folder / "run" / best)
    result = run_sweep(folder / "recipe.toml", sft_pipeline.cache)
    (finding,) = [f for f in result.findings if f.check == CheckId.SWEEP_BEST_MISSING]
    assert finding.severity == "error" and f"recorded {best} as its best checkpoint" in finding.message
    assert f"{result.best} is the best" in finding.message and result.best != best
    assert not [f for f in run_sweep(overfit, sft_pipeline.cache).findings if f.check == CheckId.SWEEP_BEST_MISSING]


@pytest.mark.slow  # the runs trained above
def test_answers_are_cached_per_checkpoint(overfit, sft_pipeline, tmp_path):
    """A warm sweep generates nothing; a checkpoint added later costs only itself."""
    folder = tmp_path / "growing"
    shutil.copytree(overfit.parent, folder, symlinks=True)
    cache = FixtureCache(tmp_path / "cache")
    late = folder / "run" / "checkpoint-60"
    late.rename(folder / "late")
    first = run_sweep(folder / "recipe.toml", cache)
    assert [r["answers_generated"] for r in first.rows] == [28] * 5  # the questions file's 28 questions
    (folder / "late").rename(late)
    again = run_sweep(folder / "recipe.toml", cache)
    assert [r["answers_generated"] for r in again.rows] == [0] * 5 + [28]


@pytest.mark.slow  # the runs trained above
def test_the_run_folders_own_final_save_is_a_row_at_its_states_step(overfit, sft_pipeline, tmp_path):
    """`trainer.save_model()` + `save_state()` into the run folder: a "final" row at the state's global step."""
    folder = tmp_path / "saved"
    shutil.copytree(overfit.parent, folder, symlinks=True)
    for item in (folder / "run" / "checkpoint-60").iterdir():
        shutil.copy(item, folder / "run" / item.name)
    result = run_sweep(folder / "recipe.toml", sft_pipeline.cache)
    assert [(r["name"], r["step"]) for r in result.rows[-2:]] == [("checkpoint-60", 60), ("final", 60)]


@pytest.mark.slow  # the runs trained above
def test_the_cli_writes_the_page_and_exits_by_the_findings(overfit, steady, sft_pipeline, cli, tmp_path):
    env = {"SFT_EVAL_CACHE": str(sft_pipeline.cache.root)}
    bad = cli.main("sweep", "--recipe", str(overfit), "--out", str(tmp_path / "overfit"), env=env)
    assert bad.returncode == 1, bad.stderr[-2000:]
    assert "error   sweep.overfitting" in bad.stdout and "best: checkpoint-" in bad.stdout
    data = json.loads((tmp_path / "overfit" / "sweep.json").read_text(encoding="utf-8"))
    assert data["format"] == "sft-eval-sweep/1" and data["best"] != "checkpoint-60"
    assert [f["check"] for f in data["findings"]] == ["sweep.overfitting"]
    html = (tmp_path / "overfit" / "sweep.html").read_text(encoding="utf-8")
    assert "sweep.overfitting" in html and 'aria-label="eval_loss (trainer) by optimizer step"' in html
    good = cli.main("sweep", "--recipe", str(steady), "--out", str(tmp_path / "steady"), "--json", env=env)
    assert good.returncode == 0, good.stderr[-2000:]
    assert json.loads(good.stdout)["best"] == "checkpoint-64"


@pytest.mark.slow  # the runs trained above
def test_the_pytest_route_fails_on_the_overfit_run_only(overfit, steady, sft_pipeline, cli, tmp_path):
    env = {"SFT_EVAL_CACHE": str(sft_pipeline.cache.root)}
    for recipe, code in ((overfit, 1), (steady, 0)):
        result = cli.pytest(
            "--pyargs", "sft_eval.suites", "-k", "checkpoints_hold_up", "--sft-recipe", str(recipe), "--sft-sweep",
            "--sft-report-dir", str(tmp_path / recipe.parent.name), cwd=tmp_path, env=env,
        )  # fmt: skip
        assert result.returncode == code, result.stdout[-3000:]
        assert (tmp_path / recipe.parent.name / "sweep.html").is_file()
    assert "sweep.overfitting" not in result.stdout


@pytest.mark.slow  # the runs trained above
def test_a_recipe_without_a_run_is_one_line(sft_pipeline, cli, tmp_path, overfit):
    """The CLI's exit 2 once (the default recipe trains here: no run to sweep); a lone checkpoint folder and a
    misspelt `eval.best_by` are the same one-line errors in process."""
    env = {"SFT_EVAL_CACHE": str(sft_pipeline.cache.root)}
    cli.bad_input(cli.main("sweep", "--out", str(tmp_path), env=env), "model.tuned: a sweep judges the checkpoints")
    lone = tmp_path / "lone"
    shutil.copytree(overfit.parent / "run" / "checkpoint-10", lone / "checkpoint-10")
    text = overfit.read_text(encoding="utf-8").replace('tuned = "run"', f'tuned = "{lone / "checkpoint-10"}"')
    (overfit.parent / "lone.toml").write_text(text, encoding="utf-8")
    with pytest.raises(SftEvalError, match="holds no checkpoint-N folder with weights"):
        run_sweep(overfit.parent / "lone.toml", sft_pipeline.cache)
    (overfit.parent / "typo.toml").write_text(text + 'best_by = ["match_rate", "eval_los"]\n', encoding="utf-8")
    with pytest.raises(SftEvalError, match="not 'eval_los'"):
        load_recipe(overfit.parent / "typo.toml")


def test_a_lora_adapter_dropped_into_a_full_run_is_one_line(sft_pipeline, tmp_path, overfit):
    """Issue 44: an adapter folder copied in as checkpoint-99 was swept as a checkpoint of the full run. Refused
    before anything loads, naming both kinds (the files need only be there)."""
    run = tmp_path / "run"
    shutil.copytree(overfit.parent / "run", run)
    (run / "checkpoint-99").mkdir()
    (run / "checkpoint-99" / "adapter_config.json").write_text('{"peft_type": "LORA"}', encoding="utf-8")
    (run / "checkpoint-99" / "adapter_model.safetensors").write_bytes(b"")
    text = overfit.read_text(encoding="utf-8").replace('tuned = "run"', f'tuned = "{run}"')
    (tmp_path / "mixed.toml").write_text(text, encoding="utf-8")
    with pytest.raises(
        SftEvalError, match=r"mixes full-weight checkpoints \(checkpoint-10.*and LoRA adapters \(checkpoint-99\)"
    ):
        run_sweep(tmp_path / "mixed.toml", sft_pipeline.cache)


# -- the findings no run above provokes, on plain data ---------------------------------------------------------
def outcomes(matched: int, total: int = 30) -> list[Outcome]:
    return [Outcome(f"q{i}", "", i < matched, True, False, False, 0.0, 5) for i in range(total)]


def result(name: str, step: int, matched: int) -> CheckpointResult:
    summary = {"match_rate": matched / 30, "eos_stop_rate": 1.0, "leak_rate": 0.0, "mean_repetition": 0.0}
    return CheckpointResult(name, f"/run/{name}", step, summary | {"answers": 30}, outcomes(matched))


def test_a_last_checkpoint_worse_beyond_noise_is_a_finding_and_a_small_dip_is_not():
    record = TrainerRecord(source="state")
    names = {"checkpoint-10", "checkpoint-20", "checkpoint-30"}
    dropped = sweep([result("checkpoint-10", 10, 5), result("checkpoint-20", 20, 24), result("checkpoint-30", 30, 8)],
                    record, run="/run", best_by=["match_rate"], on_disk=names)  # fmt: skip
    assert dropped.best == "checkpoint-20"
    (finding,) = dropped.findings
    assert finding.check == CheckId.SWEEP_LAST_WORSE and "ship checkpoint-20" in finding.message
    assert "exact match 0.800 -> 0.267" in finding.message and "'q10'" in finding.evidence
    dip = sweep([result("checkpoint-20", 20, 24), result("checkpoint-30", 30, 22)],
                record, run="/run", best_by=["match_rate"], on_disk=names)  # fmt: skip
    assert dip.best == "checkpoint-20" and dip.findings == []  # 2 flips of 30: noise
    assert "overfitting not judged" in dip.notes[0]


def test_eval_loss_and_the_task_metric_disagreeing_is_a_warning():
    record = TrainerRecord(source="state", eval_losses=[(10, 2.0), (20, 1.5), (30, 1.8)])
    checkpoints = [result("checkpoint-10", 10, 10), result("checkpoint-20", 20, 12), result("checkpoint-30", 30, 25)]
    names = {c.name for c in checkpoints}
    found = sweep(checkpoints, record, run="/run", best_by=["match_rate", "eval_loss"], on_disk=names)
    assert found.best == "checkpoint-30"
    (finding,) = [f for f in found.findings if f.check == CheckId.SWEEP_EVAL_LOSS_DISAGREES]
    assert finding.severity == "warning" and finding.message.startswith("checkpoint-20 has the lowest eval_loss")
    agree = sweep(checkpoints, TrainerRecord("state", eval_losses=[(10, 2.0), (20, 1.8), (30, 1.5)]), run="/run",
                  best_by=["match_rate", "eval_loss"], on_disk=names)  # fmt: skip
    assert not [f for f in agree.findings if f.check == CheckId.SWEEP_EVAL_LOSS_DISAGREES]


def test_ties_go_to_the_next_metric_then_the_earlier_step():
    record = TrainerRecord(source="state", eval_losses=[(10, 2.0), (20, 1.5), (30, 1.5)])
    checkpoints = [result("checkpoint-10", 10, 12), result("checkpoint-20", 20, 12), result("checkpoint-30", 30, 12)]
    names = {c.name for c in checkpoints}
    assert sweep(checkpoints, record, run="/r", best_by=["match_rate", "eval_loss"], on_disk=names).best == (
        "checkpoint-20"
    )
    assert sweep(checkpoints, record, run="/r", best_by=["match_rate"], on_disk=names).best == "checkpoint-10"


def test_best_by_names_known_metrics_once_each(tmp_path):
    base = 'name = "r"\n[data]\ntrain = "rows.jsonl"\n[eval]\nquestions = ["q"]\n'
    cases = (('["eval_los"]', "not 'eval_los'"), ("[]", "not []"), ('["match_rate", "match_rate"]', "'match_rate']"))
    for value, says in cases:
        (tmp_path / "r.toml").write_text(base + f"best_by = {value}\n", encoding="utf-8")
        with pytest.raises(SftEvalError, match=r"`eval.best_by` must list distinct metrics of match_rate") as raised:
            load_recipe(tmp_path / "r.toml")
        assert str(raised.value).endswith(says), raised.value
    (tmp_path / "r.toml").write_text(base + 'best_by = ["eval_loss", "match_rate"]\n', encoding="utf-8")
    assert load_recipe(tmp_path / "r.toml").eval.best_by == ("eval_loss", "match_rate")


# -- one model in memory at a time ----------------------------------------------------------------------------
def models_alive_at_each_load(pipeline: Pipeline, monkeypatch) -> list[int]:
    """How many models this pipeline loaded earlier are still alive each time it loads another."""
    import gc
    import weakref

    loaded: list[weakref.ref] = []
    alive: list[int] = []

    def tracked(load):
        def wrapper(*args, **kwargs):
            if args and getattr(args[0], "origin", None) == "base":
                return load(*args, **kwargs)  # a source's load of the base is `load_base_model`'s, tracked there
            gc.collect()
            alive.append(sum(ref() is not None for ref in loaded))
            model = load(*args, **kwargs)
            loaded.append(weakref.ref(model))
            return model

        return wrapper

    monkeypatch.setattr(pipeline.artifacts, "load_base_model", tracked(pipeline.artifacts.load_base_model))
    monkeypatch.setattr(ModelSource, "load", tracked(ModelSource.load))  # what every source but the base loads with
    return alive


def test_answers_are_generated_with_one_model_in_memory_at_a_time(sft_pipeline, monkeypatch):
    """Base then tuned answers (no answer cache): the base model is gone before the tuned one loads. The broken
    case holds the base as a suite fixture does (`sft_base_model`): then both are alive at once, and reused."""
    fresh = Pipeline(sft_pipeline.recipe, sft_pipeline.cache, device="cpu", answer_cache=False)
    alive = models_alive_at_each_load(fresh, monkeypatch)
    assert len(fresh.evaluation.records) == 31
    assert alive == [0, 0]  # two loads, nothing from the first alive at the second
    holding = Pipeline(sft_pipeline.recipe, sft_pipeline.cache, device="cpu", answer_cache=False)
    alive = models_alive_at_each_load(holding, monkeypatch)
    assert holding.base_model is not None and len(holding.evaluation.records) == 31
    assert alive == [0, 1]  # the held base is reused for its answers and still alive when the tuned one loads


@pytest.mark.slow  # the run trained above
def test_each_checkpoints_held_out_loss_tracks_the_trainers_own_eval_loss(overfit, sft_pipeline, tmp_path):
    """With the trainer's eval rows as `data.eval`, each checkpoint's held-out loss (scored here, on the labels the
    recipe's trainer builds) follows the eval_loss the trainer logged at that step, and `best_by = ["held_out_loss"]`
    names the checkpoint where it is lowest. The base is scored once for the whole sweep."""
    folder = tmp_path / "run"
    shutil.copytree(overfit.parent, folder)
    held_out = folder / "heldout.jsonl"
    held_out.write_text("".join(ROWS.read_text(encoding="utf-8").splitlines(True)[-64:]), encoding="utf-8")
    text = (folder / "recipe.toml").read_text(encoding="utf-8")
    text = text.replace("[data]\n", f'[data]\neval = "{held_out}"\n').replace(
        "[eval]\n", '[eval]\nbest_by = ["held_out_loss"]\n'
    )
    # the run's own masking and length, which the held-out loss follows (its trainer config is a pickle: not read)
    text += "\n[sft]\nassistant_only_loss = true\nmax_length = 256\n"
    (folder / "recipe.toml").write_text(text, encoding="utf-8")
    result = run_sweep(folder / "recipe.toml", sft_pipeline.cache)
    rows = [r for r in result.rows if r["eval_loss"] is not None]
    assert len(rows) == 6 and all(r["held_out_loss"] is not None for r in result.rows)
    for r in rows:  # the trainer averages batch means, this a token-weighted mean: close, not equal
        assert r["held_out_loss"] == pytest.approx(r["eval_loss"], rel=0.1), r
    lowest = min(result.rows, key=lambda r: r["held_out_loss"])
    assert result.best == lowest["name"] == min(rows, key=lambda r: r["eval_loss"])["name"]


@pytest.mark.slow  # the run trained above
def test_another_checkpoint_of_the_run_drifts_from_the_golden_of_one(overfit, sft_pipeline, tmp_path):
    """Golden outputs recorded for one checkpoint of the run, then the next checkpoint of the same run judged
    against them: drift. The tolerance is for the same weights on another machine, not for another model."""
    from sft_eval.models import checkpoint_folders

    first, second = checkpoint_folders(overfit.parent / "run")[:2]
    text = overfit.read_text(encoding="utf-8").replace('base = "base"', f'base = "{overfit.parent / "base"}"')

    def judged(checkpoint: Path) -> Pipeline:
        recipe = tmp_path / "recipe.toml"
        recipe.write_text(text.replace('tuned = "run"', f'tuned = "{checkpoint}"'), encoding="utf-8")
        return Pipeline(load_recipe(recipe), sft_pipeline.cache, device="cpu")

    assert judged(first).golden(update=True).status == "recorded"
    assert judged(first).golden().status == "match"
    verdict = judged(second).golden()
    assert verdict.status == "drift" and "the largest difference" in verdict.diff, verdict


@pytest.mark.slow  # the runs trained above
def test_a_judge_in_the_recipe_judges_every_checkpoint_against_the_base(overfit, sft_pipeline, tmp_path):
    """`[judge]` in a sweep's recipe: each checkpoint's answers are judged against the base's, a `judge_win_rate`
    column the page shows and `eval.best_by` may rank by; each figure is the one that checkpoint's own pipeline
    gives. The judge is a reward model with an untrained head, written here in a second: this checks the sweep's
    plumbing, not a judge's quality (tests/test_reward_judge.py does that)."""
    from transformers import AutoModelForSequenceClassification

    base, run = overfit.parent / "base", overfit.parent / "run"
    judge = tmp_path / "reward"
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1)
    model.config.pad_token_id = sft_pipeline.tokenizer.pad_token_id
    model.save_pretrained(judge)
    sft_pipeline.tokenizer.save_pretrained(judge)
    text = overfit.read_text(encoding="utf-8").replace('"base"', f'"{base}"').replace('"run"', f'"{run}"')
    recipe = tmp_path / "judged.toml"
    recipe.write_text(text + f'best_by = ["judge_win_rate"]\n\n[judge]\nkind = "reward"\nmodel = "{judge}"\n')
    result = run_sweep(recipe, sft_pipeline.cache)
    rates = [r["judge_win_rate"] for r in result.rows]
    assert all(rate is not None for rate in rates), result.rows
    assert result.best == min(result.rows, key=lambda r: (-r["judge_win_rate"], r["step"]))["name"]
    first = Pipeline(load_recipe(recipe), sft_pipeline.cache, device="cpu").with_tuned(Path(result.rows[0]["path"]))
    assert first.assessment.judgement["win_rate"] == rates[0]
