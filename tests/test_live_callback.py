"""`SftEvalCallback`: docs/live-eval.md's walkthrough run as written (a plain TRL script, a save every 100 steps,
TensorBoard), then held to what the issue asks: training unchanged by it (losses and every parameter identical to
the same script without it), the scalars in TensorBoard's event files, a record per save that `sft-eval sweep`
reads instead of evaluating, and the callback's evaluations equal to a sweep that evaluates every checkpoint
afresh (same answers, token for token; same best step).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from sft_eval.errors import SftEvalError
from sft_eval.live import LIVE_DIR, read_records
from sft_eval.recipe import FIXTURES_DIR, load_recipe

pytestmark = pytest.mark.slow  # the walkthrough trains the tiny run twice (with and without the callback), 540 steps

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "live-eval.md"
ADDED = 'trainer.add_callback(SftEvalCallback(trainer, recipe="eval.toml"))  # sft-eval'


def block(language: str) -> str:
    (found,) = re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)
    return found


def user_folder(root: Path, pipeline) -> Path:
    """A user's folder: the tiny base checkpoint with its template, the data the walkthrough names."""
    base = root / "models" / "my-base"
    shutil.copytree(pipeline.base_model_dir, base, ignore=shutil.ignore_patterns("MANIFEST.json"))
    pipeline.tokenizer.save_pretrained(base)
    (root / "data").mkdir()
    for name, as_name in (
        ("sft_train.jsonl", "train.jsonl"),
        ("sft_heldout.jsonl", "heldout.jsonl"),
        ("eval_questions.jsonl", "eval_questions.jsonl"),
        ("general_text.txt", "general_text.txt"),
    ):
        shutil.copy(FIXTURES_DIR / "data" / name, root / "data" / as_name)
    (root / "eval.toml").write_text(block("toml"), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def walked(tmp_path_factory, sft_pipeline, cli) -> dict:
    """The walkthrough's train.py as written, and the same script without the callback line (its own folder)."""
    script = block("python")
    assert ADDED in script
    runs = {}
    for name, text in (("with", script), ("without", script.replace(ADDED, ""))):
        folder = user_folder(tmp_path_factory.mktemp(f"live-{name}"), sft_pipeline)
        (folder / "train.py").write_text(text, encoding="utf-8")
        trained = cli.python("train.py", cwd=folder)
        assert trained.returncode == 0, trained.stderr[-3000:]
        runs[name] = folder
    return runs


def _state(run: Path) -> dict:
    return json.loads((run / "checkpoint-540" / "trainer_state.json").read_text(encoding="utf-8"))


def test_training_is_unchanged_by_the_callback(walked):
    """Every logged loss, gradient norm and learning rate, and every final parameter, bit for bit the same with the
    callback and without it; the callback's scalars are in the log beside them, one per save."""
    from safetensors.torch import load_file

    def logged(run: Path) -> list[tuple]:
        keys = ("loss", "grad_norm", "learning_rate")
        return [(e["step"], *[e.get(k) for k in keys]) for e in _state(run)["log_history"] if "loss" in e]

    with_run, without = walked["with"] / "runs" / "my-sft", walked["without"] / "runs" / "my-sft"
    assert logged(with_run) == logged(without) and len(logged(with_run)) == 54
    final = "checkpoint-540/model.safetensors"
    ours, theirs = load_file(with_run / final), load_file(without / final)
    assert ours.keys() == theirs.keys() and all(ours[k].equal(theirs[k]) for k in ours)
    scalars = [e for e in _state(with_run)["log_history"] if "sft_eval/match_rate" in e]
    assert [e["step"] for e in scalars] == [100, 200, 300, 400, 500]  # the 540th save logs after its state is written
    assert not any("sft_eval/match_rate" in e for e in _state(without)["log_history"])


def test_tensorboard_holds_the_scalars(walked):
    """Read back with TensorBoard's own event reader: a point per save for each metric (transformers' TensorBoard
    integration prefixes `train/`)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = {p.parent for p in (walked["with"] / "runs" / "my-sft" / "runs").rglob("events.out.tfevents.*")}
    reader = EventAccumulator(str(events))
    reader.Reload()
    tags = reader.Tags()["scalars"]
    for metric in ("match_rate", "eos_stop_rate", "held_out_loss", "forgetting", "expected_nll", "checks_failed"):
        points = reader.Scalars(f"train/sft_eval/{metric}")
        assert [p.step for p in points] == [100, 200, 300, 400, 500, 540], (metric, tags)
    records = read_records(walked["with"] / "runs" / "my-sft")
    assert [p.value for p in reader.Scalars("train/sft_eval/match_rate")] == pytest.approx(
        [r["metrics"]["match_rate"] for r in records]
    )


def test_the_sweep_reads_the_records_and_agrees_with_evaluating_afresh(walked, sft_pipeline, tmp_path):
    """`sft-eval sweep` on the run folder reads every checkpoint's record (none evaluated, said so); the same sweep
    with the records moved away evaluates every checkpoint itself and finds the same answers, token for token, the
    same figures and the same best checkpoint, which is the callback's `best.json`. A record made with another
    budget (other settings) is not read: that checkpoint is evaluated and the sweep says why."""
    from sft_eval.checkpoint_sweep import sweep_checkpoints
    from sft_eval.pipeline import Pipeline

    folder = walked["with"]
    run = folder / "runs" / "my-sft"
    recipe = load_recipe(folder / "eval.toml")
    model = dataclasses.replace(recipe.model, base=str(folder / "models" / "my-base"), tuned=str(run))
    recipe = dataclasses.replace(recipe, model=model).with_sft(assistant_only_loss=True, max_length=256)
    read = sweep_checkpoints(Pipeline(recipe, sft_pipeline.cache, "cpu"))
    assert all(r["answers_generated"] == 0 for r in read.rows if r["name"] != "final"), read.rows
    assert any("read from SftEvalCallback's records" in n for n in read.notes), read.notes
    assert [r["step"] for r in read.live] == [100, 200, 300, 400, 500, 540]
    records = {r["checkpoint"]: r for r in read_records(run)}

    shutil.move(run / LIVE_DIR, tmp_path / LIVE_DIR)
    try:
        pipeline = Pipeline(recipe, sft_pipeline.cache, "cpu", answer_cache=True)
        fresh = sweep_checkpoints(pipeline)
        for name, record in records.items():
            answers = pipeline.with_tuned(run / name).answering.answers("tuned")
            assert [a.to_dict() for a in answers] == record["answers"], name
    finally:
        shutil.move(tmp_path / LIVE_DIR, run / LIVE_DIR)
    assert fresh.best == read.best
    compared = ("match_rate", "eos_stop_rate", "mean_chrf", "held_out_loss", "forgetting")
    assert [{k: r[k] for k in compared} for r in fresh.rows] == [{k: r[k] for k in compared} for r in read.rows]
    best = json.loads((run / LIVE_DIR / "best.json").read_text(encoding="utf-8"))
    assert best["best_checkpoint"] == fresh.best or (fresh.best == "final" and best["best_step"] == 540)

    other = dataclasses.replace(recipe, eval=dataclasses.replace(recipe.eval, max_new_tokens=32))
    differs = sweep_checkpoints(Pipeline(other, sft_pipeline.cache, "cpu"))
    assert all(r["answers_generated"] > 0 for r in differs.rows if r["name"] != "final")
    assert any("record of that step was made with other" in n for n in differs.notes), differs.notes


def test_a_record_that_is_not_one_is_one_line(tmp_path):
    (tmp_path / LIVE_DIR).mkdir()
    bad = tmp_path / LIVE_DIR / "step-100.json"
    bad.write_text('{"format": "something else"}', encoding="utf-8")
    with pytest.raises(SftEvalError, match="step-100.json: not an sft-eval live record"):
        read_records(tmp_path)
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(SftEvalError, match="step-100.json: not an sft-eval live record"):
        read_records(tmp_path)
