"""`SftEvalCallback`: docs/live-eval.md's walkthrough run as written (a plain TRL script, a save every 100 steps,
TensorBoard), then held to what the issue asks: training unchanged by it (losses and every parameter identical to
the same script without it), the scalars in TensorBoard's event files, a record per save that `sft-eval sweep`
reads instead of evaluating, and the callback's evaluations equal to a sweep that evaluates every checkpoint
afresh (same answers, token for token; same best step).
"""

from __future__ import annotations

import dataclasses
import json
import os
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
    from sft_eval.report import render_sweep_html

    assert "match rate, while training (SftEvalCallback)" in render_sweep_html(read.to_dict())  # the live curves
    assert "while training" not in render_sweep_html(fresh.to_dict())
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


TRACKED = """
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from sft_eval import SftEvalCallback

tokenizer = AutoTokenizer.from_pretrained("models/my-base")
model = AutoModelForCausalLM.from_pretrained("models/my-base")
rows = load_dataset("json", data_files="data/train.jsonl", split="train")
held_out = load_dataset("json", data_files="data/heldout.jsonl", split="train")
config = SFTConfig(
    output_dir="runs/tracked", max_steps=4, per_device_train_batch_size=8, learning_rate=3e-3, logging_steps=1,
    assistant_only_loss=True, max_length=256, save_strategy="no", eval_strategy="steps", eval_steps=2,
    report_to=["mlflow", "wandb"], run_name="tracked", bf16=False, seed=0,
)
trainer = SFTTrainer(model=model, args=config, train_dataset=rows, eval_dataset=held_out, processing_class=tokenizer)
trainer.add_callback(SftEvalCallback(trainer, recipe="eval.toml", every="eval", max_questions=4, max_new_tokens=8))
trainer.train()

import wandb

wandb.finish()
"""


def test_mlflow_and_wandb_hold_the_scalars_and_the_answers(tmp_path, sft_pipeline, cli, monkeypatch):
    """A 4-step run (it must train: the trackers record a run) evaluated after each of the trainer's own evaluations
    (`every="eval"`, at steps 2 and 4), logged to MLflow (a local
    SQLite store) and W&B (offline), read back from what each stored: MLflow through its tracking API (the metric
    history at steps 2 and 4, a table of the answers per evaluation), W&B from the run's own log file (each scalar
    at steps 2 and 4 with the answers table committed beside it, and the run's summary)."""
    folder = user_folder(tmp_path / "user", sft_pipeline)
    (folder / "train.py").write_text(TRACKED, encoding="utf-8")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "sft-eval", "WANDB_MODE": "offline"}
    env |= {"WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true", "WANDB_PROJECT": "sft-eval"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # cli.python passes this process's environment on
    trained = cli.python("train.py", cwd=folder)
    assert trained.returncode == 0, trained.stderr[-3000:]
    records = read_records(folder / "runs" / "tracked")
    assert [r["step"] for r in records] == [2, 4] and all(r["metrics"]["questions"] == 4 for r in records)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "sft-eval"]
    (run,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(run.info.run_id, "sft_eval/match_rate")
    assert [m.step for m in history] == [2, 4]
    assert [m.value for m in history] == pytest.approx([r["metrics"]["match_rate"] for r in records])
    assert {m.step for m in client.get_metric_history(run.info.run_id, "sft_eval/eos_stop_rate")} == {2, 4}
    tables = sorted(a.path for a in client.list_artifacts(run.info.run_id, "sft_eval"))
    assert tables == ["sft_eval/answers-step-2.json", "sft_eval/answers-step-4.json"]
    table = json.loads(Path(client.download_artifacts(run.info.run_id, tables[0], str(tmp_path))).read_text())
    assert table["columns"][:3] == ["step", "question", "answer"] and len(table["data"]) == 4

    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    history = [row for row in wandb_rows(log, "history") if "train/global_step" in row]
    scalars = {int(r["train/global_step"]): r for r in history if "train/sft_eval/match_rate" in r}
    assert sorted(scalars) == [2, 4]
    assert [scalars[s]["train/sft_eval/match_rate"] for s in (2, 4)] == pytest.approx(
        [r["metrics"]["match_rate"] for r in records]
    )
    assert all(scalars[s]["sft_eval/answers/_type"] == "table-file" for s in (2, 4))  # with its scalars
    assert all(scalars[s]["sft_eval/answers/nrows"] == 4 for s in (2, 4))
    summary: dict = {}
    for update in wandb_rows(log, "summary"):
        summary |= update
    assert summary["train/sft_eval/questions"] == 4


def wandb_rows(log: Path, kind: str) -> list[dict]:
    """A W&B run's `history` or `summary` records, from its transaction log (`run-ID.wandb`: wandb 0.31 offline
    writes no `wandb-summary.json`, and ships no Python reader of its log): LevelDB's log format (32 KiB blocks,
    7-byte record headers: CRC, length, type FULL/FIRST/MIDDLE/LAST) after W&B's 7-byte file header, each record a
    `wandb_internal_pb2.Record`."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = log.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, rows = 7, b"", []
    while pos + 7 <= len(data):
        space = 32768 - pos % 32768
        if space < 7:  # a block's tail too short for a header is padding
            pos += space
            continue
        _, length, part = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if part in (1, 2) else pending + chunk
        if part not in (1, 4):
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        if record.WhichOneof("record_type") == kind:
            items = record.history.item if kind == "history" else record.summary.update
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items})
    return rows


def test_the_budget_skips_what_it_cannot_afford_and_says_so(sft_pipeline):
    """A budget of 4 questions asked 2 at a time with no seconds to spare: the first batch is still asked (an
    evaluation always says something), the rest of the questions, the teacher-forced signals and the judge's turn
    are skipped and named, and the record has no key (a sweep never reads a partial evaluation). Without the
    seconds limit the same budget answers all 4 and has a key."""
    from sft_eval.live import Budget, LiveEvaluation

    recipe = sft_pipeline.recipe
    recipe = dataclasses.replace(recipe, eval=dataclasses.replace(recipe.eval, batch_size=2))
    model = sft_pipeline.tuned_model
    tokenizer = sft_pipeline.tokenizer
    keys = {"assistant_only_loss": True, "max_length": 256}

    def live(seconds: float | None) -> LiveEvaluation:
        evaluation = LiveEvaluation(
            recipe, tokenizer, budget=Budget(4, 16, seconds), trainer_keys=keys, device="cpu", cache=sft_pipeline.cache
        )
        evaluation.prepare(model)
        evaluation.begin(model)
        return evaluation

    starved = live(1e-9).evaluate(model, 10, "checkpoint-10", "weights")
    assert starved["metrics"]["questions"] == 2 and len(starved["answers"]) == 2
    said = "; ".join(starved["skipped"])
    assert "2 of 4 questions" in said and "teacher-forced" in said and starved["key"] is None
    assert f"{len(sft_pipeline.questions) - 4} questions beyond the budget's 4" in said
    whole = live(None).evaluate(model, 10, "checkpoint-10", "weights")
    assert whole["metrics"]["questions"] == 4 and whole["key"] and "held_out_loss" in whole["metrics"]
    by_question = {a["question"]: a for a in whole["answers"]}
    assert all(by_question[a["question"]] == a for a in starved["answers"])  # the shortest prompts' batch, the same


def test_the_base_is_evaluated_once_per_base_and_settings(sft_pipeline, tmp_path):
    """A run started again from the same base reads the base's answers and scores from the cache (nothing asked of
    the model); a base whose weights differ by one value, or other settings, is evaluated."""
    import torch

    from sft_eval.cache import FixtureCache
    from sft_eval.live import Budget, LiveEvaluation

    model = sft_pipeline.artifacts.load_base_model()
    cache = FixtureCache(tmp_path / "cache")
    keys = {"assistant_only_loss": True, "max_length": 256}
    asked: list[int] = []

    def begun(budget: Budget) -> LiveEvaluation:
        live = LiveEvaluation(
            sft_pipeline.recipe, sft_pipeline.tokenizer, budget=budget, trainer_keys=keys, device="cpu", cache=cache
        )
        answers = live.answers
        live.answers = lambda m, d: asked.append(1) or answers(m, d)  # type: ignore[method-assign]
        live.prepare(model)
        live.begin(model)
        return live

    first = begun(Budget(4, 8))
    again = begun(Budget(4, 8))
    assert len(asked) == 1 and again.base_answers == first.base_answers
    assert again.memo.scores["base"] == first.memo.scores["base"]
    begun(Budget(4, 9))
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    begun(Budget(4, 8))
    assert len(asked) == 3


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"every": "weekly"}, "every must be 'save', 'eval' or a number of steps"),
        ({"every": 0}, "every must be"),
        ({"max_questions": 0}, "max_questions must be a whole number of at least 1"),
        ({"max_seconds": -1}, "max_seconds must be above 0"),
        ({"recipe": "no-such.toml"}, "no-such.toml: recipe file not found"),
        ({}, "every='save' but the trainer's save_strategy is 'no', so it would never evaluate"),
        ({"every": "eval"}, "every='eval' but the trainer's eval_strategy is 'no'"),
    ],
)
def test_bad_callback_arguments_are_one_line(kwargs, says):
    """Each is one line before training starts; a trainer that saves and evaluates, with the defaults, is not."""
    from types import SimpleNamespace

    from sft_eval.callback import SftEvalCallback

    never = SimpleNamespace(args=SimpleNamespace(save_strategy="no", eval_strategy="no"))
    saves = SimpleNamespace(args=SimpleNamespace(save_strategy="steps", eval_strategy="no"))
    with pytest.raises(SftEvalError, match=re.escape(says)):
        SftEvalCallback(never if "never evaluate" in says or "eval_strategy" in says else saves, **kwargs)
    SftEvalCallback(saves)


TORCHRUN = """
import sys
from pathlib import Path

from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from sft_eval import SftEvalCallback

folder = Path(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(folder / "models" / "my-base")
model = AutoModelForCausalLM.from_pretrained(folder / "models" / "my-base")
rows = load_dataset("json", data_files=str(folder / "data" / "train.jsonl"), split="train")
config = SFTConfig(
    output_dir=str(folder / "runs" / "ddp"), max_steps=6, per_device_train_batch_size=4, learning_rate=3e-3,
    logging_steps=1, assistant_only_loss=True, max_length=256, save_steps=3, report_to=[], bf16=False, seed=0,
    use_cpu=True, ddp_backend="gloo",
)
trainer = SFTTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer)
recipe = str(folder / "eval.toml")
trainer.add_callback(SftEvalCallback(trainer, recipe=recipe, max_questions=8, max_new_tokens=16, barrier_timeout_s=300))
trainer.train()
"""


@pytest.mark.distributed
def test_under_torchrun_rank_0_evaluates_and_the_answers_are_one_processs(tmp_path, sft_pipeline):
    """Two processes (torchrun, gloo) on an empty fixture cache, a save every 3 steps: the run ends (no rank waits
    forever: the others wait for rank 0 at a barrier with a timeout), rank 0 alone writes a record per save, and
    its answers are, token for token, those one process gives the saved checkpoint. It must train: a run under
    torchrun is what is tested."""
    from sft_eval.cache import FixtureCache
    from sft_eval.distributed import launch
    from sft_eval.live import Budget, LiveEvaluation
    from sft_eval.models import load_model

    folder = user_folder(tmp_path / "user", sft_pipeline)
    (folder / "train_ddp.py").write_text(TORCHRUN, encoding="utf-8")
    empty = tmp_path / "empty-cache"
    env = {**os.environ, "SFT_EVAL_CACHE": str(empty), "OMP_NUM_THREADS": "1"}
    result = launch([str(folder / "train_ddp.py"), str(folder)], nproc=2, guard_s=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    run = folder / "runs" / "ddp"
    records = read_records(run)
    assert [r["step"] for r in records] == [3, 6] and all(r["metrics"]["questions"] == 8 for r in records)
    assert len(list((run / LIVE_DIR).glob("step-*.json"))) == 2

    recipe = load_recipe(folder / "eval.toml")
    tokenizer = sft_pipeline.tokenizer
    keys = {"assistant_only_loss": True, "max_length": 256}
    one = LiveEvaluation(
        recipe, tokenizer, budget=Budget(8, 16), trainer_keys=keys, device="cpu", cache=FixtureCache(empty)
    )
    base = load_model(folder / "models" / "my-base", "cpu")
    one.prepare(base)
    one.begin(base)
    for record in records:
        model = load_model(run / f"checkpoint-{record['step']}", "cpu")
        alone = one.evaluate(model, record["step"], record["checkpoint"], None)
        assert alone["answers"] == record["answers"], record["step"]


LORA = """
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from sft_eval import SftEvalCallback

tokenizer = AutoTokenizer.from_pretrained("models/my-base")
model = AutoModelForCausalLM.from_pretrained("models/my-base")
rows = load_dataset("json", data_files="data/train.jsonl", split="train")
config = SFTConfig(
    output_dir="runs/lora", max_steps=20, save_steps=10, per_device_train_batch_size=8, learning_rate=1e-2,
    assistant_only_loss=True, max_length=256, report_to=[], bf16=False, seed=0,
)
lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
trainer = SFTTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer, peft_config=lora)
trainer.add_callback(SftEvalCallback(trainer, recipe="eval.toml", max_questions=None, max_new_tokens=16))
trainer.train()
"""


def test_a_lora_run_is_evaluated_as_the_sweep_evaluates_its_adapters(tmp_path, sft_pipeline, cli):
    """LoRA (PEFT's model in memory, its adapter saved at each checkpoint): the sweep reads both checkpoints'
    records, and with the records moved away evaluates each adapter on the base itself and finds the same answers,
    token for token, and the same figures. It must train: the adapters are what is evaluated."""
    from sft_eval.checkpoint_sweep import sweep_checkpoints
    from sft_eval.pipeline import Pipeline

    folder = user_folder(tmp_path / "user", sft_pipeline)
    eval_toml = (folder / "eval.toml").read_text(encoding="utf-8").replace("max_new_tokens = 64", "max_new_tokens = 16")
    (folder / "eval.toml").write_text(eval_toml, encoding="utf-8")
    (folder / "train.py").write_text(LORA, encoding="utf-8")
    trained = cli.python("train.py", cwd=folder)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = folder / "runs" / "lora"
    assert (run / "checkpoint-10" / "adapter_model.safetensors").is_file()
    recipe = load_recipe(folder / "eval.toml")
    model = dataclasses.replace(recipe.model, base=str(folder / "models" / "my-base"), tuned=str(run))
    recipe = dataclasses.replace(recipe, model=model).with_sft(assistant_only_loss=True, max_length=256)
    read = sweep_checkpoints(Pipeline(recipe, sft_pipeline.cache, "cpu"))
    assert [r["answers_generated"] for r in read.rows] == [0, 0], read.notes
    records = {r["checkpoint"]: r for r in read_records(run)}
    assert sorted(records) == ["checkpoint-10", "checkpoint-20"]
    shutil.move(run / LIVE_DIR, tmp_path / LIVE_DIR)
    pipeline = Pipeline(recipe, sft_pipeline.cache, "cpu")
    fresh = sweep_checkpoints(pipeline)
    assert all(r["answers_generated"] > 0 for r in fresh.rows)
    for name, record in records.items():
        answers = pipeline.with_tuned(run / name).answering.answers("tuned")
        assert [a.to_dict() for a in answers] == record["answers"], name
    compared = ("match_rate", "eos_stop_rate", "mean_chrf", "held_out_loss", "forgetting")
    assert [{k: r[k] for k in compared} for r in fresh.rows] == [{k: r[k] for k in compared} for r in read.rows]
