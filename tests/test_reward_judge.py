"""The reward-model judge: the embedded tiny reward model trained here with TRL's `RewardTrainer`, its calibration,
its verdicts on the session's tiny run, a learned-nothing run, a reward model that was never trained (not trusted),
and a folder that is no reward model (one line).

The embedded reward model is trained once per cache (about two to three minutes on two CPU cores); every test here
shares it through the session fixture, and the runs it judges are the session's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sft_eval.cache import AnswerCache
from sft_eval.judge.chat import Pair
from sft_eval.judge.reward import Answered, RewardJudge, render, side
from sft_eval.judge.stats import win_rate
from sft_eval.judgement import CALIBRATION, judge_run, read_calibration
from sft_eval.recipe import JudgeSection


@pytest.fixture(scope="session")
def reward_folder(sft_pipeline) -> Path:
    """The embedded reward model (trained on first use, into the session's cache)."""
    import torch

    from sft_eval.reward_model import embedded_reward_model

    return embedded_reward_model(sft_pipeline.cache, torch.device("cpu"))


@pytest.fixture(scope="session")
def reward_judge(reward_folder) -> RewardJudge:
    from sft_eval.reward_model import load_reward_model

    return RewardJudge(lambda: load_reward_model(reward_folder, "cpu"), {"reward_judge": str(reward_folder)})


def _recipe(sft_pipeline, **judge):
    import dataclasses

    return dataclasses.replace(sft_pipeline.recipe, judge=JudgeSection(kind="reward", **judge))


# -- rendering and the verdict rule -----------------------------------------------------------------------------------
def test_an_answer_that_stopped_ends_its_turn_and_one_that_did_not_does_not(sft_pipeline):
    """The judge must see a missing stop: the template's end of turn is rendered only where the answer stopped."""
    tokenizer = sft_pipeline.tokenizer
    eos = tokenizer.eos_token_id
    stopped = render(tokenizer, Answered.of("What is the capital of France?", "Paris", True))
    running = render(tokenizer, Answered.of("What is the capital of France?", "Paris", False))
    assert eos in stopped and eos not in running[-3:]
    assert running == stopped[: len(running)], "the same prompt and answer, only the end differs"
    assert len(render(tokenizer, Answered.of("q", "word " * 400, False), max_length=64)) == 64


def test_a_reward_difference_within_the_margin_is_a_tie():
    assert [side(d, 1.0) for d in (2.0, 1.0, 0.3, -0.99, -1.5)] == ["win", "tie", "tie", "tie", "loss"]
    assert side(0.01, 0.0) == "win" and side(0.0, 0.0) == "tie"


# -- the embedded reward model --------------------------------------------------------------------------------------
@pytest.mark.slow  # the embedded reward model: trained once per cache, about 4 minutes here
def test_the_embedded_reward_model_is_right_on_the_calibration_facts(reward_judge, reward_folder):
    """Done-means: at least 0.8 on the right-fact vs wrong-fact calibration pairs, whose questions it never saw
    (held out of its training pairs and of the tiny recipe's training chats). Its accuracy on each kind is printed
    for the record; a loop is always told from a stop."""
    calibration = read_calibration(CALIBRATION)
    record = json.loads((reward_folder.parent / "reward_training.json").read_text(encoding="utf-8"))
    assert record["log_history"][-1]["epoch"] == record["settings"]["num_train_epochs"], "the trainer's own record"
    verdicts, _ = reward_judge.judge_pairs([c.pair for c in calibration], [c.stops for c in calibration])
    by_kind: dict[str, list[bool]] = {}
    for verdict, c in zip(verdicts, calibration, strict=True):
        by_kind.setdefault(c.kind, []).append(verdict.verdict == c.expected)
        assert verdict.first == verdict.second and verdict.rewards is not None, "no order to flip with"
    accuracy = {kind: sum(right) / len(right) for kind, right in by_kind.items()}
    print("embedded reward model, calibration accuracy by kind:", accuracy)
    assert accuracy["fact"] >= 0.8 and accuracy["loop"] == 1.0, accuracy


def test_the_calibration_questions_are_held_out_of_the_reward_models_training():
    from sft_eval.reward_model import read_pairs

    trained = {row["prompt"][-1]["content"] for row in read_pairs()}
    chats = Path(CALIBRATION).with_name("sft_train.jsonl").read_text(encoding="utf-8").splitlines()
    sft = {json.loads(line)["messages"][-2]["content"] for line in chats}
    asked = {c.pair.question for c in read_calibration(CALIBRATION)}
    assert not asked & trained and not asked & sft


@pytest.mark.slow  # the embedded reward model: trained once per cache, about 4 minutes here
def test_the_tuned_model_is_judged_better_than_the_base_beyond_noise(sft_pipeline, reward_judge, tmp_path):
    """Done-means: the shipped tuned model's answers win beyond noise against the base's (the interval above one
    half); the report's record holds the verdicts, no flip rate (a reward judge has no order), and the rewards per
    card; a second run reads every reward from the cache."""
    store = AnswerCache(tmp_path)
    recipe = _recipe(sft_pipeline)
    evaluation = sft_pipeline.assessment.evaluation
    judged = judge_run(recipe, evaluation, store, reward_judge)
    assert judged["kind"] == "reward" and judged["flip_rate"] is None and judged["first_position_rate"] is None
    assert judged["low"] > 0.5, (judged["win_rate"], judged["low"], judged["high"])
    assert all(v["rewards"] is not None and v["first"] == v["second"] for v in judged["verdicts"])
    recomputed = win_rate([v["verdict"] for v in judged["verdicts"]])
    assert (recomputed.rate, recomputed.low) == (judged["win_rate"], judged["low"])
    again = judge_run(recipe, evaluation, store, reward_judge)
    assert again["cached"] == 2 * (len(evaluation.records) + judged["calibration"]["pairs"])
    assert again["verdicts"] == judged["verdicts"]


@pytest.mark.slow  # the embedded reward model: trained once per cache, about 4 minutes here
def test_a_run_that_learned_nothing_is_not_judged_better(sft_pipeline, reward_judge, tmp_path):
    """Done-means: one step at lr 1e-7 (the base in all but its last bits) is not better than the base beyond
    noise. Trains that one step (seconds): no session fixture is a run that learned nothing."""
    from sft_eval.generation.local import ask

    _, model = sft_pipeline.train_variant(16, tmp_path / "trainer", max_steps=1, learning_rate=1e-7)
    questions = [q.question for q in sft_pipeline.questions]
    limit = sft_pipeline.recipe.eval.max_new_tokens
    nothing = ask(model.eval(), sft_pipeline.tokenizer, questions, max_new_tokens=limit)
    base = [r.base for r in sft_pipeline.assessment.evaluation.records]
    pairs = [Pair(q, a.text, b.text) for q, a, b in zip(questions, nothing, base, strict=True)]
    stops = [(a.stop_reason == "eos", b.stop_reason == "eos") for a, b in zip(nothing, base, strict=True)]
    verdicts, _ = reward_judge.judge_pairs(pairs, stops)
    found = win_rate([v.verdict for v in verdicts])
    assert not found.low > 0.5, (found.rate, found.low, found.high)


def test_a_reward_model_never_trained_is_not_trusted(sft_pipeline, tmp_path):
    """The deliberately broken judge: the tiny tuned model with a fresh, untrained score head. Its calibration
    accuracy is under `min_judge_calibration`, so `judge.trusted` fails and its win rate is not judged."""
    from transformers import AutoModelForSequenceClassification

    from sft_eval.verdict import judge_checks

    untrained = AutoModelForSequenceClassification.from_pretrained(str(sft_pipeline.tuned_model_dir), num_labels=1)
    untrained.config.pad_token_id = sft_pipeline.tokenizer.pad_token_id
    judge = RewardJudge(lambda: (untrained.eval(), sft_pipeline.tokenizer), {"untrained": 1})
    recipe = _recipe(sft_pipeline)
    judged = judge_run(recipe, sft_pipeline.assessment.evaluation, None, judge)
    checks = judge_checks(recipe.thresholds, judged)
    assert not judged["trusted"] and checks["judge.trusted"].passed is False
    assert checks["judge.win_rate"].passed is None and checks["judge.flip_rate"].passed is None
    assert "no order to flip" in checks["judge.flip_rate"].message


def test_a_folder_that_is_no_reward_model_is_one_line(sft_pipeline, tiny_variant, cli):
    """A causal LM folder as `judge.model`: transformers would give it a two-label head; one line says it has two
    labels. A folder that does not exist: one line naming `judge.model`."""
    folder = sft_pipeline.tuned_model_dir
    env = {"SFT_EVAL_CACHE": str(sft_pipeline.cache.root)}
    for model, says in ((folder, "labels; a reward model has one"), (folder.parent / "absent", "judge.model")):
        recipe = tiny_variant({"[eval]": f'[judge]\nkind = "reward"\nmodel = "{model}"\n[eval]'})
        result = cli.main("report", "--recipe", str(recipe), "--out", str(recipe.parent / "out"), env=env)
        cli.bad_input(result, "judge.model", says)


@pytest.mark.parametrize(
    ("script", "output"),
    [("generate_judge.py", "judge_calibration.jsonl"), ("generate_reward.py", "reward_train.jsonl")],
)
def test_the_shipped_pairs_are_what_their_generator_writes(script, output):
    """The committed calibration and preference pairs are their seeded generator's output, line for line."""
    import importlib.util

    folder = Path(CALIBRATION).parent
    spec = importlib.util.spec_from_file_location(script[:-3], folder / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in module.pairs())
    assert written == (folder / output).read_text(encoding="utf-8")
