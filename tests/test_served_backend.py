"""The served backend against a real OpenAI-compatible server: `transformers serve`, started here on a loopback
port, serving the tuned tiny model's folder. Its greedy answers must be the in-process engine's."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sft_eval.chat import load_template
from sft_eval.errors import SftEvalError
from sft_eval.generation.served import generate_served
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import FIXTURES_DIR, Recipe, load_recipe
from sft_eval.records import Answer
from sft_eval.sources import ModelSource
from sft_eval.toolcalls import response_parser

pytestmark = pytest.mark.served
STARTUP_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """`start_server(model_or_None)` -> base URL of a `transformers serve` process (pinned to `model` when
    given), stopped when the module's tests are done."""
    pytest.importorskip("fastapi", reason='`transformers serve` needs pip install "transformers[serving]"')
    processes: list[subprocess.Popen] = []

    def start(model: str | None) -> str:
        port = _free_port()
        log = tmp_path_factory.mktemp("serve") / "serve.log"
        command = [sys.executable, "-m", "transformers.cli.transformers", "serve", *([model] if model else [])]
        command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
        process = subprocess.Popen(
            command,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"transformers serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2):
                    return url
            except OSError:
                time.sleep(0.3)
        pytest.fail(f"transformers serve did not answer within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def pinned_url(start_server, sft_pipeline) -> str:
    """A server that serves the tuned folder and nothing else (as vLLM serves its one model)."""
    return start_server(str(sft_pipeline.tuned_model_dir))


@pytest.fixture(scope="module")
def open_url(start_server) -> str:
    """A server that loads whichever local folder a request names."""
    return start_server(None)


def _served(recipe: Recipe, url: str, model: str | None = None, **eval_changes) -> Recipe:
    settings = dataclasses.replace(recipe.eval, backend="openai", base_url=url, model=model, **eval_changes)
    return dataclasses.replace(recipe, eval=settings)


def _seen(answers: list[Answer]) -> list[tuple[str, str, int]]:
    return [(a.text, a.stop_reason, a.new_tokens) for a in answers]


def test_served_greedy_answers_equal_the_in_process_engine(pinned_url, sft_pipeline, sft_evaluation, sft_recipe):
    served = generate_served(
        pinned_url,
        None,  # the server's only model
        [q.question for q in sft_evaluation.questions],
        system_message=sft_recipe.eval.system_message or None,
        max_new_tokens=sft_recipe.eval.max_new_tokens,
    )
    different = [
        f"{a.question!r}: served {s!r}, in-process {e!r}"
        for a, s, e in zip(served, _seen(served), _seen(sft_evaluation.tuned), strict=True)
        if s != e
    ]
    assert not different, f"{len(different)} of {len(served)} served answers differ:\n" + "\n".join(different[:10])


def test_a_length_cut_answer_is_reported_as_length_by_the_server(
    pinned_url, sft_evaluation, sft_tuned_model, sft_tokenizer
):
    """The stop reason travels: cut at 1 token, an answer that needs more ends with `length`, as in-process."""
    question = next(a.question for a in sft_evaluation.tuned if a.new_tokens > 1)
    (served,) = generate_served(pinned_url, None, [question], max_new_tokens=1)
    assert (served.stop_reason, served.new_tokens) == ("length", 1), f"served {served}"


def test_the_pipeline_takes_tuned_answers_from_the_server_and_base_answers_in_process(
    pinned_url, sft_pipeline, sft_evaluation, sft_recipe, monkeypatch
):
    pipeline = Pipeline(
        _served(sft_recipe, pinned_url), sft_pipeline.cache, str(sft_pipeline.device), answer_cache=False
    )
    # the tuned model must not be loaded here (the base is, through its own source's `load_base_model`)
    monkeypatch.setattr(ModelSource, "load", lambda self: pytest.fail(f"loaded the {self.name} model in-process"))
    served = pipeline.evaluation
    assert _seen(served.tuned) == _seen(sft_evaluation.tuned), "served tuned answers differ from the in-process ones"
    assert _seen(served.base) == _seen(sft_evaluation.base), "base answers (in-process) changed with the backend"
    assert pipeline.answering.held == {}, "the served pipeline holds a model"


def test_tool_items_are_answered_by_the_server_and_cached(start_server, sft_pipeline, tmp_path):
    """With `backend = "openai"`, tool items go to the server like every question: sent with their `tools`, the
    server parses the call (`transformers serve` with the response template the in-process parser uses) and the
    scores equal the in-process ones, item by item. Cached: a rerun with the server gone sends nothing."""
    tools = Pipeline(load_recipe(FIXTURES_DIR / "recipes" / "tiny_tools.toml"), sft_pipeline.cache, device="cpu")
    local = tools.tool_records("tuned")
    folder = tmp_path / "served"
    shutil.copytree(tools.tuned_model_dir, folder)
    parser, _ = response_parser(tools.tokenizer)
    served_tokenizer = copy.deepcopy(tools.tokenizer)
    served_tokenizer.response_template = parser.response_template  # what the server parses calls with
    served_tokenizer.save_pretrained(folder)
    url = start_server(str(folder))
    cache = sft_pipeline.cache  # the answers are keyed by the server's URL (a fresh port): none cached yet
    recipe = _served(tools.recipe, url)
    pipeline = Pipeline(recipe, cache, device="cpu")
    served = pipeline.tool_records("tuned")
    assert pipeline.answer_counts["tuned tool items"] == {"cached": 0, "generated": len(local)}
    assert all(r.answer.token_ids == [] for r in served), "answers from the server (which sends no token ids)"
    different = [r.item.id for r, here in zip(served, local, strict=True) if r.score != here.score]
    assert different == [], f"{len(different)} of {len(local)} served tool scores differ from in-process"
    assert sum(r.score.callable for r in served) > 0, "the server parsed calls"
    server = [p for p in psutil.Process().children() if str(folder) in " ".join(p.cmdline())]
    assert len(server) == 1
    server[0].terminate()
    server[0].wait(30)  # gone: anything asked of it now fails
    again = Pipeline(recipe, cache, device="cpu")
    assert [r.score for r in again.tool_records("tuned")] == [r.score for r in served]
    assert again.answer_counts["tuned tool items"] == {"cached": len(local), "generated": 0}


def test_a_server_whose_template_differs_from_training_gives_other_answers(
    open_url, sft_pipeline, sft_evaluation, sft_recipe, tmp_path
):
    """The failure the backend exists to catch: the served folder renders prompts with another template than
    training did (here the lesson's fallback template), so the same weights answer differently."""
    mangled = tmp_path / "served-with-other-template"
    shutil.copytree(sft_pipeline.tuned_model_dir, mangled)
    (mangled / "chat_template.jinja").write_text(load_template("lesson_fallback"), encoding="utf-8")
    tuned = str(sft_pipeline.tuned_model_dir)
    pipeline = Pipeline(_served(sft_recipe, open_url, tuned, base_model=str(mangled)), sft_pipeline.cache)
    served = pipeline.evaluation
    assert _seen(served.tuned) == _seen(sft_evaluation.tuned), "the correctly served folder should match in-process"
    same = sum(b == t for b, t in zip(_seen(served.base), _seen(sft_evaluation.tuned), strict=True))
    assert same < len(sft_evaluation.tuned) / 2, (
        f"{same} of {len(sft_evaluation.tuned)} answers are unchanged under another template; expected most to change"
    )
    assert served.base_summary.match_rate < served.tuned_summary.match_rate


def test_asking_a_pinned_server_for_another_model_is_one_line(pinned_url, tmp_path):
    with pytest.raises(SftEvalError, match=r"^eval\.model: .* answered 400 for model 'not-served'") as caught:
        generate_served(pinned_url, "not-served", ["What is the capital of France?"])
    assert "\n" not in str(caught.value)


def test_an_unreachable_server_is_one_line() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    with pytest.raises(SftEvalError, match=r"^eval\.base_url: cannot reach http://127\.0\.0\.1:\d+/v1") as caught:
        generate_served(url, "tiny", ["What is the capital of France?"])
    assert "\n" not in str(caught.value)


def test_the_served_folder_holds_what_a_server_needs(sft_pipeline) -> None:
    folder: Path = sft_pipeline.tuned_model_dir
    for name in ("config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"):
        assert (folder / name).is_file(), f"{folder} lacks {name}: a server could not load it as trained"


def test_sft_eval_report_with_an_unreachable_server_is_exit_2(sft_pipeline, tiny_variant, tmp_path, cli) -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    recipe = tiny_variant({"[eval]\n": f'[eval]\nbackend = "openai"\nbase_url = "{url}"\n'})
    result = cli.run(
        "report", "--recipe", str(recipe), "--sft-cache", str(sft_pipeline.cache.root), "--out", str(tmp_path / "out")
    )
    cli.bad_input(result)
    assert result.stderr.startswith(f"sft-eval: error: eval.base_url: cannot reach {url}"), result.stderr


def test_a_chat_judge_served_by_transformers_serve_is_asked_every_pair_in_both_orders(
    pinned_url, sft_pipeline, tiny_variant, tmp_path
):
    """The judge's plumbing against a real server: the tiny tuned model served as the judge, with a short prompt of
    the recipe's own (MT-Bench's does not fit its 512-token context). Every pair goes to the server in both orders,
    its replies come back and are kept; the tiny model writes no verdict marker, so every pair is counted without a
    verdict (never guessed), the judge is not trusted, and a second run asks the server nothing."""
    prompt = tmp_path / "short_judge_prompt.txt"
    prompt.write_text("Judge.\n---\n{question}\nA: {answer_a}\nB: {answer_b}\n", encoding="utf-8")
    section = f'[judge]\nkind = "chat"\nbase_url = "{pinned_url}"\nmax_new_tokens = 8\nprompt = "{prompt}"\n'
    recipe = load_recipe(tiny_variant({"[eval]": section + "[eval]"}))
    judged = Pipeline(recipe, sft_pipeline.cache, device="cpu").assessment.judgement
    pairs = judged["pairs"] + judged["calibration"]["pairs"]
    assert judged["cached"] == 0 and judged["missing"] == judged["pairs"] and not judged["trusted"]
    assert all(len(v["replies"]) == 2 for v in judged["verdicts"]) and judged["verdicts"][0]["replies"][0]
    again = Pipeline(recipe, sft_pipeline.cache, device="cpu").assessment.judgement
    assert again["cached"] == 2 * pairs and again["verdicts"] == judged["verdicts"]


def test_bench_served_sweeps_a_real_transformers_serve(pinned_url, sft_pipeline):
    """`sft-eval bench --served` against the real server: every figure of every level measured, the tokens counted
    from the server's own usage, and the report's "As served" section drawn from it (its types checked)."""
    from sft_eval.report import render_html
    from sft_eval.report.format import ReportData, conform
    from sft_eval.served_bench import bench_served

    questions = [q.question for q in sft_pipeline.questions]
    served = bench_served(pinned_url, None, questions, concurrency=[1, 4], requests=8, max_tokens=16, warmup=1)
    for level in served["results"]:
        assert level["completed"] == 8 and level["failed"] == 0, level["errors"]
        for name in ("ttft_ms", "e2el_ms"):
            assert 0 < level[name]["p50"] <= level[name]["p99"], (name, level[name])
        assert level["tokens_counted_by"] == ["usage"] and level["output_tokens_per_s"] > 0
    assert served["client_ceiling_requests_per_s"] > 0
    context = {**sft_pipeline.report_context(), "served_bench": served}
    conform(json.loads(json.dumps(context)), ReportData, "sft_report.json")  # as written: tuples are lists
    assert '<section id="served">' in render_html(context)
