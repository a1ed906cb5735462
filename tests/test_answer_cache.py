"""The answer cache: base and tuned answers kept on disk, keyed by everything that determines them.

A warm run generates nothing; a changed question regenerates that question only; a changed template, model,
generation setting or system message regenerates everything; nothing else does (the batch size is speed, not
content). An entry is written whole or not at all: a writer killed with SIGKILL half-way through leaves the old
answer (or none) readable, never a torn one. `--no-answer-cache` generates everything again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import uuid

import pytest

from sft_eval.cache import AnswerCache
from sft_eval.errors import SftEvalError
from sft_eval.generation import LocalBackend
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import FIXTURES_DIR, load_recipe
from sft_eval.records import Answer


@pytest.fixture
def generated(monkeypatch):
    """The questions the in-process engine was asked, per call (a spy on the real backend: it still generates)."""
    asked: list[list[str]] = []
    real = LocalBackend.answer

    def spy(self, questions, settings):
        asked.append(list(questions))
        return real(self, questions, settings)

    monkeypatch.setattr(LocalBackend, "answer", spy)
    return asked


@pytest.fixture
def questions() -> list[str]:
    """Three questions no other test asks (a fresh nonce), so the shared cache starts cold for them."""
    nonce = uuid.uuid4().hex[:8]
    return [f"What is the capital of France? ({nonce})", f"Calculate 1+1-1 ({nonce})", f"Say hi ({nonce})"]


@pytest.fixture
def pipeline_for(sft_pipeline, asking):
    """`pipeline_for(questions, **edits)`: the tiny recipe asking only `questions`, on the session's cache (its
    models are built)."""

    def build(questions: list[str], **edits: str) -> Pipeline:
        return Pipeline(load_recipe(asking(questions, edits)), sft_pipeline.cache, device="cpu")

    return build


def asked_questions(asked: list[list[str]]) -> list[str]:
    return [q for call in asked for q in call]


def test_a_warm_run_generates_nothing_and_a_changed_question_only_itself(pipeline_for, questions, generated):
    cold = pipeline_for(questions)
    first = cold.evaluation
    assert sorted(asked_questions(generated)) == sorted(questions * 2)  # base and tuned, each question once
    assert cold.answer_counts == {w: {"cached": 0, "generated": 3} for w in ("base", "tuned")}

    generated.clear()
    warm = pipeline_for(questions)
    assert warm.evaluation.to_dict() == first.to_dict()  # the same answers, token ids and scores
    assert generated == []
    assert "base: 3 from the answer cache, 0 generated" in warm.describe()["answers"]

    changed = [*questions[:2], questions[2] + " again"]
    again = pipeline_for(changed)
    again.evaluation  # noqa: B018
    assert asked_questions(generated) == [changed[2], changed[2]]  # base and tuned: the new question only


@pytest.mark.parametrize(
    ("edit", "misses"),
    [
        ({"max_new_tokens = 100": "max_new_tokens = 12"}, True),
        ({'system_message = ""': 'system_message = "Be brief."'}, True),
        ({"enable_thinking = false": "enable_thinking = true"}, True),
        ({'chat_template = "chatml"': 'chat_template = "CHATML_VARIANT"'}, True),
        ({"max_repetition = 0.3": "max_repetition = 0.25"}, False),  # a threshold does not change an answer
        ({"[eval]": "[eval]\nbatch_size = 2"}, False),  # speed, not content
    ],
    ids=["max-new-tokens", "system-message", "thinking", "template", "threshold", "batch-size"],
)
def test_what_changes_an_answer_misses_and_nothing_else_does(
    pipeline_for, questions, generated, edit, misses, tmp_path
):
    """The template case is ChatML writing a blank line after each role header: the same special tokens, so the
    same tiny base (another template's tokens would pretrain a base of their own), another prompt."""
    chatml = FIXTURES_DIR / "templates" / "chatml.jinja"
    variant = tmp_path / "chatml_variant.jinja"
    variant.write_text(
        chatml.read_text(encoding="utf-8").replace("'\\n' + message['content']", "'\\n\\n' + message['content']")
    )
    assert variant.read_text() != chatml.read_text(encoding="utf-8")
    edit = {old: new.replace("CHATML_VARIANT", str(variant)) for old, new in edit.items()}
    pipeline_for(questions).answers("base")
    generated.clear()
    edited = pipeline_for(questions, **edit)
    edited.answers("base")
    assert bool(generated) == misses, generated
    if misses:
        assert sorted(asked_questions(generated)) == sorted(questions)


def test_another_model_misses(sft_pipeline, pipeline_for, questions, generated, tmp_path):
    pipeline = pipeline_for(questions)
    pipeline.answers("tuned")
    generated.clear()
    assert pipeline.answering.identity("base") != pipeline.answering.identity("tuned")
    # the tuned checkpoint as a run trained elsewhere: another source, and after its weights change, another again
    tuned = tmp_path / "run"
    for item in sft_pipeline.tuned_model_dir.iterdir():
        (tuned / item.name).parent.mkdir(exist_ok=True)
        (tuned / item.name).write_bytes(item.read_bytes())
    as_tuned = {'chat_template = "chatml"': f'chat_template = "chatml"\ntuned = "{tuned}"'}
    pipeline_for(questions, **as_tuned).answers("tuned")
    assert sorted(asked_questions(generated)) == sorted(questions)
    generated.clear()
    pipeline_for(questions, **as_tuned).answers("tuned")
    assert generated == []
    os.utime(tuned / "model.safetensors", ns=(1, 1))  # another file than the one the answers came from
    pipeline_for(questions, **as_tuned).answers("tuned")
    assert sorted(asked_questions(generated)) == sorted(questions)


def test_a_served_run_that_fails_half_way_resumes(pipeline_for, questions, monkeypatch):
    """The served backend hands each answer to the cache's hook as it arrives: after a failure (a connection reset
    half-way), the rerun asks only what was not answered yet. The transport (`generate_served`) is replaced by a
    fake that fails on the second question; the backend, its hook, the keys and the storage are the real path."""
    import sft_eval.generation.served as served_module

    asked: list[list[str]] = []

    def flaky(base_url, model, batch, *, on_answer=None, **settings):
        asked.append(list(batch))
        answers = []
        for index, q in enumerate(batch):
            if flaky.fail and q == questions[1]:
                raise SftEvalError("eval.base_url: the connection was reset")
            answers.append(Answer(q, f"answer to {q}", f"answer to {q}", [], 3, "eos"))
            on_answer(index, answers[-1])
        return answers

    flaky.fail = True
    monkeypatch.setattr(served_module, "generate_served", flaky)
    served = {"[eval]": '[eval]\nbackend = "openai"\nbase_url = "http://127.0.0.1:9/v1"\nbatch_size = 1'}
    with pytest.raises(SftEvalError, match="connection was reset"):
        pipeline_for(questions, **served).answers("tuned")
    assert asked == [questions]
    flaky.fail = False
    asked.clear()
    resumed = pipeline_for(questions, **served)
    answers = resumed.answers("tuned")
    assert asked == [[questions[1], questions[2]]]  # the first answer came from the cache
    assert [a.text for a in answers] == [f"answer to {q}" for q in questions]
    assert resumed.answer_counts["tuned"] == {"cached": 1, "generated": 2}


def test_a_registered_backend_is_cached_and_resumed_and_one_without_identity_is_not(
    pipeline_for, questions, registered
):
    """The answer cache wraps any backend: a registered one that states its identity gets caching and resume
    (its `on_answer` hook), one that states none is asked every time."""
    from sft_eval.generation import register_backend

    asked: list[list[str]] = []

    class Toy:
        on_answer = None
        fail_on: str | None = None

        def __init__(self, stated: bool):
            self.stated = stated

        def identity(self):
            return {"backend": "toy", "version": 1} if self.stated else None

        def answer(self, batch, settings):
            asked.append(list(batch))
            out = []
            for index, q in enumerate(batch):
                if q == Toy.fail_on:
                    raise SftEvalError("toy: gave up")
                out.append(Answer(q, q.upper(), q.upper(), [], 2, "eos"))
                if self.on_answer is not None:
                    self.on_answer(index, out[-1])
            return out

    register_backend("toy-cached", lambda target, settings: Toy(True))
    register_backend("toy-uncached", lambda target, settings: Toy(False))
    cached = {"[eval]": '[eval]\nbackend = "toy-cached"'}
    Toy.fail_on = questions[2]
    with pytest.raises(SftEvalError, match="toy: gave up"):
        pipeline_for(questions, **cached).answers("tuned")
    Toy.fail_on, asked[:] = None, []
    again = pipeline_for(questions, **cached)
    assert [a.text for a in again.answers("tuned")] == [q.upper() for q in questions]
    assert asked == [[questions[2]]] and again.answer_counts["tuned"] == {"cached": 2, "generated": 1}
    asked.clear()
    pipeline_for(questions, **cached).answers("tuned")
    assert asked == []
    uncached = pipeline_for(questions, **{"[eval]": '[eval]\nbackend = "toy-uncached"'})
    uncached.answers("tuned")
    uncached.answers("tuned")
    assert asked == [questions, questions] and uncached.answering.identity("tuned") is None


def test_in_process_generation_is_one_call(pipeline_for, questions, generated):
    """The in-process engine gets every missing question at once, in its own batches (one progress bar)."""
    pipeline_for(questions, **{"[eval]": "[eval]\nbatch_size = 1"}).answers("base")
    assert generated == [questions]


def test_no_answer_cache_generates_everything(pipeline_for, questions, generated):
    pipeline_for(questions).answers("base")
    generated.clear()
    fresh = pipeline_for(questions)
    fresh.answer_cache = False
    fresh.answers("base")
    assert sorted(asked_questions(generated)) == sorted(questions)
    assert fresh.assessment.answer_provenance().startswith("answer cache off")


def test_the_flag_is_offered_by_the_cli_and_the_plugin(cli):
    assert "--no-answer-cache" in cli.run("report", "--help").stdout
    assert "--sft-no-answer-cache" in cli.pytest("--help").stdout


# A writer that stages half of the answer, says so, and waits to be killed.
KILLED_WRITER = """
import os, sys, time
from pathlib import Path
from sft_eval.cache import AnswerCache

real_fdopen = os.fdopen


class HalfWriter:
    def __init__(self, *args, **kwargs):
        self.file = real_fdopen(*args, **kwargs)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()

    def write(self, text):
        self.file.write(text[: len(text) // 2])
        self.file.flush()
        print("half written", flush=True)
        time.sleep(600)


os.fdopen = HalfWriter
AnswerCache(Path(sys.argv[1])).put("k" * 24, {"question": "q", "text": "NEW " * 1000})
"""


@pytest.mark.parametrize("earlier", [None, {"question": "q", "text": "old"}], ids=["new-entry", "overwrite"])
def test_a_writer_killed_mid_write_leaves_no_torn_answer(tmp_path, earlier):
    cache = AnswerCache(tmp_path)
    key = "k" * 24
    if earlier is not None:
        cache.put(key, earlier)
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "half written"
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == -signal.SIGKILL
    staged = [p for p in cache.path(key).parent.iterdir() if p.name.startswith(".")]
    assert staged and 0 < staged[0].stat().st_size < len(json.dumps({"question": "q", "text": "NEW " * 1000}))
    assert cache.get(key) == earlier  # the old answer whole, or none: never half of the new one
    cache.put(key, {"question": "q", "text": "again"})
    assert cache.get(key) == {"question": "q", "text": "again"}


def test_settings_the_key_ignores_are_named():
    from sft_eval.generation import GenerationSettings

    assert {f.name for f in dataclasses.fields(GenerationSettings)} == {
        "system_message",
        "max_new_tokens",
        "enable_thinking",
        "batch_size",  # the one left out of the key: how many prompts share a batch, not what is asked
    }
