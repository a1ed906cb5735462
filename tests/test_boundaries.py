"""Issue 31: every file and reply from outside is validated where it enters. Each broken class of the hostile sweep
is built here and answered with one line naming the file and field (exit 2 from the CLI), a finding, or a
regenerated cache entry; never a traceback, a hang, or a green run that checked nothing. Each has its correct
counterpart beside it, which must stay quiet.

Run folders are random one-layer checkpoints of the embedded tokenizer (nothing trains here); the adapter is a
real PEFT adapter saved by `PeftModel.save_pretrained`; the served cases run against a real loopback HTTP server.
"""

from __future__ import annotations

import collections
import json
import math
import shutil
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sft_eval.errors import PartlyAnswered, SftEvalError
from sft_eval.models import checkpoint_folders, finished_run, same_weights, save_random_checkpoint, tensor_shapes
from sft_eval.recipe import FIXTURES_DIR, load_recipe
from sft_eval.records import Answer, cached_answer
from sft_eval.report import loss_curve_svg
from sft_eval.training import read_steps, read_trainer_state

TINY_DATA = FIXTURES_DIR / "data" / "sft_train.jsonl"
SHAPE = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
GOOD_STATE = {
    "log_history": [{"step": 1, "loss": 2.0, "grad_norm": 1.5}, {"step": 2, "loss": 1.0, "train_runtime": 3.2}],
    "global_step": 2,
    "max_steps": 2,
}


@pytest.fixture(scope="module")
def pair(tmp_path_factory, sft_tokenizer) -> Path:
    """A base checkpoint and a run folder (checkpoint-2 with its trainer_state.json) of the same shape."""
    root = tmp_path_factory.mktemp("pair")
    shape = {**SHAPE, "vocab_size": len(sft_tokenizer)}
    save_random_checkpoint(root / "base", sft_tokenizer, seed=0, **shape)
    save_random_checkpoint(root / "run" / "checkpoint-2", sft_tokenizer, seed=1, **shape)
    (root / "run" / "checkpoint-2" / "trainer_state.json").write_text(json.dumps(GOOD_STATE), encoding="utf-8")
    return root


def run_copy(pair: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(pair / "run", folder)
    return folder


def recipe(pair: Path, tmp_path: Path, tuned: Path | str, extra: str = "", base: Path | None = None) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(
        f'name = "b"\n[model]\nbase = "{base or pair / "base"}"\ntuned = "{tuned}"\n[data]\ntrain = "{TINY_DATA}"\n'
        f'[eval]\nquestions = ["Hi"]\nmax_new_tokens = 4\n{extra}',
        encoding="utf-8",
    )
    return path


def state_file(tmp_path: Path, state: object) -> Path:
    path = tmp_path / "trainer_state.json"
    path.write_text(json.dumps(state), encoding="utf-8")
    return path


# -- trainer_state.json: values, not only shape ----------------------------------------------------------------
BAD_STATES = {
    "loss-a-string": (
        {**GOOD_STATE, "log_history": [{"step": 1, "loss": "abc"}]},
        'log_history[0].loss is "abc", not a number',
    ),
    "entry-without-step": ({**GOOD_STATE, "log_history": [{"loss": 1.0}]}, "log_history[0] has no `step`"),
    "runtime-a-string": (
        {**GOOD_STATE, "log_history": [{"step": 2, "train_runtime": "fast"}]},
        'log_history[0].train_runtime is "fast", not a number',
    ),
    "negative-step": ({**GOOD_STATE, "log_history": [{"step": -3}]}, "log_history[0].step is -3, below 0"),
    # issue 44, cause 6: steps 9 to 200,008 in a record of 8 steps were read as "the record of 8 step(s)"
    "steps-beyond-global-step": (
        {**GOOD_STATE, "log_history": [{"step": s, "loss": 1.0} for s in (1, 2, 9, 200_008)]},
        "log_history[2] is at step 9, after the record's global_step 2 (2 entries beyond it)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_STATES))
def test_a_trainer_state_value_of_the_wrong_type_is_one_line_naming_the_entry(case, tmp_path):
    state, says = BAD_STATES[case]
    with pytest.raises(SftEvalError, match="trainer_state.json: ") as error:
        read_trainer_state(state_file(tmp_path, state))
    assert says in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_a_good_trainer_state_and_a_nan_loss_pass(tmp_path):
    """A diverged run's NaN loss is a number (judged later as not finite), not bad input."""
    read_trainer_state(state_file(tmp_path, GOOD_STATE))
    nan = tmp_path / "nan" / "trainer_state.json"
    nan.parent.mkdir()
    nan.write_text('{"log_history": [{"step": 1, "loss": NaN}], "global_step": 1, "max_steps": 1}', encoding="utf-8")
    assert math.isnan(read_trainer_state(nan)["log_history"][0]["loss"])


def test_the_cli_answers_a_bad_trainer_state_with_one_line(pair, tmp_path, cli):
    folder = run_copy(pair, tmp_path)
    state_file(folder / "checkpoint-2", BAD_STATES["loss-a-string"][0])
    result = cli.main("train", "--recipe", str(recipe(pair, tmp_path, folder)), "--sft-cache", str(tmp_path / "c"))
    cli.bad_input(result, "model.tuned", "trainer_state.json: log_history[0].loss is", "not a number")


def test_the_cli_reads_the_good_run_folder(pair, tmp_path, cli):
    result = cli.main("train", "--recipe", str(recipe(pair, tmp_path, pair / "run")), "--sft-cache", str(tmp_path))
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "read the record of 2 step(s)" in result.stdout, result.stdout


# -- the recorder's steps file -----------------------------------------------------------------------------------
GOOD_STEP = {
    "step": 1,
    "world_size": 1,
    "micro_batches": 8,
    "sequences": 8,
    "step_label_tokens": 40,
    "token_weighted_loss": 2.0,
}
BAD_STEPS = {
    "no-steps": ({"format": "sft-eval-steps/1", "world_size": 1}, "has no `steps`"),
    "world-size-a-word": (
        {"format": "sft-eval-steps/1", "world_size": "two", "steps": [GOOD_STEP]},
        'world_size is "two", not an integer',
    ),
    "steps-not-objects": ({"format": "sft-eval-steps/1", "steps": [1, 2]}, "steps[0] is 1, not an object"),
    "step-missing-a-field": (
        {"format": "sft-eval-steps/1", "steps": [{"step": 1}]},
        "steps[0] has no `world_size`",
    ),
}


@pytest.mark.parametrize("case", list(BAD_STEPS))
def test_a_broken_recorder_file_is_one_line_naming_the_field(case, tmp_path):
    data, says = BAD_STEPS[case]
    (tmp_path / "sft-eval-steps-rank0.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(SftEvalError, match="sft-eval-steps-rank0.json: ") as error:
        read_steps([tmp_path])
    assert says in str(error.value), str(error.value)


def test_a_good_recorder_file_is_read(tmp_path):
    data = {"format": "sft-eval-steps/1", "world_size": 2, "steps": [GOOD_STEP]}
    (tmp_path / "sft-eval-steps-rank0.json").write_text(json.dumps(data), encoding="utf-8")
    assert read_steps([tmp_path]) == ([GOOD_STEP], 2)


# -- run folders that are not what they seem ---------------------------------------------------------------------
def test_checkpoint_names_are_ascii_steps(tmp_path):
    """`checkpoint-²` passes str.isdigit and breaks int(): it is no checkpoint; nor are -abc and --1; 00010 is 10."""
    for name in ("checkpoint-²", "checkpoint-abc", "checkpoint--1", "checkpoint-9", "checkpoint-00010"):
        (tmp_path / name).mkdir()
    assert [p.name for p in checkpoint_folders(tmp_path)] == ["checkpoint-9", "checkpoint-00010"]


def test_weights_and_record_of_different_checkpoints_are_refused(pair, tmp_path):
    """The latest checkpoint kept its trainer_state.json but lost its weights: judging checkpoint-2's weights
    against checkpoint-3's record is refused, naming both; naming checkpoint-2 itself is accepted."""
    folder = run_copy(pair, tmp_path)
    (folder / "checkpoint-3").mkdir()
    state_file(folder / "checkpoint-3", {**GOOD_STATE, "global_step": 3, "max_steps": 3})
    with pytest.raises(SftEvalError, match="checkpoint-3's but its weights are checkpoint-2's"):
        finished_run(folder)
    found = finished_run(folder / "checkpoint-2")
    assert found.weights == folder / "checkpoint-2" and found.state == folder / "checkpoint-2" / "trainer_state.json"
    for name in ("config.json", "model.safetensors"):  # trainer.save_model(): the final weights at the top
        shutil.copy(folder / "checkpoint-2" / name, folder / name)
    assert finished_run(folder).weights == folder, "final weights with the last checkpoint's record are one model"


def test_a_run_folders_own_record_is_not_an_earlier_checkpoints(pair, tmp_path, cli):
    """Issue 44, cause 5: the usual layout after save_state() with the last weights deleted: the folder keeps its
    step-3 trainer_state.json and checkpoint-2's weights were judged against it, exit 0. Now one line naming both;
    the folder with its own final weights beside its own record (the nearby correct case) is still read."""
    folder = run_copy(pair, tmp_path)
    state_file(folder, {**GOOD_STATE, "global_step": 3, "max_steps": 3})
    with pytest.raises(SftEvalError, match="checkpoint-2's \\(step 2\\) but the record .* is of step 3"):
        finished_run(folder)
    result = cli.main("train", "--recipe", str(recipe(pair, tmp_path, folder)), "--sft-cache", str(tmp_path / "c"))
    cli.bad_input(result, "model.tuned: the weights are", "is of step 3")
    for name in ("config.json", "model.safetensors"):  # trainer.save_model(): the final weights beside the record
        shutil.copy(folder / "checkpoint-2" / name, folder / name)
    assert finished_run(folder).weights == folder


def test_the_base_models_own_folder_as_the_tuned_model_is_refused(pair, tmp_path, cli):
    assert same_weights(pair / "base", pair / "base")
    assert not same_weights(pair / "run" / "checkpoint-2", pair / "base")
    copy = tmp_path / "copy-of-base"
    shutil.copytree(pair / "base", copy)
    assert same_weights(copy, pair / "base"), "a copy of the base holds the same weights"
    result = cli.main("train", "--recipe", str(recipe(pair, tmp_path, pair / "base")), "--sft-cache", str(tmp_path))
    cli.bad_input(result, "model.tuned", "holds model.base's own weights", "nothing was fine-tuned")


# -- safetensors headers and adapters ----------------------------------------------------------------------------
def test_a_truncated_safetensors_file_is_one_line_naming_it(pair, tmp_path):
    folder = tmp_path / "cut"
    shutil.copytree(pair / "run" / "checkpoint-2", folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(SftEvalError, match=r"model\.safetensors: not a readable safetensors file") as error:
        tensor_shapes(folder)
    assert "\n" not in str(error.value)
    assert tensor_shapes(pair / "run" / "checkpoint-2"), "the whole file reads"


@pytest.fixture(scope="module")
def adapter(pair, tmp_path_factory) -> Path:
    """A real LoRA adapter on the base: PEFT's get_peft_model on q_proj and v_proj, saved as PEFT saves it."""
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(pair / "base")
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = tmp_path_factory.mktemp("adapter")
    peft.get_peft_model(model, config).save_pretrained(folder)
    return folder


def test_an_adapter_config_that_does_not_cover_its_weights_is_refused(pair, adapter, tmp_path, cli):
    narrowed = tmp_path / "narrowed"
    shutil.copytree(adapter, narrowed)
    config = json.loads((narrowed / "adapter_config.json").read_text(encoding="utf-8"))
    (narrowed / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["q_proj"]}))
    result = cli.main("audit", "--recipe", str(recipe(pair, tmp_path, narrowed)), "--sft-cache", str(tmp_path))
    cli.bad_input(result, "model.tuned", "target_modules ['q_proj'] do not cover 1 module(s)", "v_proj")


@pytest.mark.slow
def test_a_truncated_adapter_or_base_is_one_line_and_the_whole_one_is_read(pair, adapter, tmp_path, cli):
    from sft_eval.adapters import adapter_mismatch

    assert adapter_mismatch(adapter, pair / "base", str(pair / "base")) is None, "the real adapter fits its base"
    cut = tmp_path / "cut"
    shutil.copytree(adapter, cut)
    weights = cut / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    result = cli.main("audit", "--recipe", str(recipe(pair, tmp_path, cut)), "--sft-cache", str(tmp_path))
    cli.bad_input(result, "adapter_model.safetensors: not a readable safetensors file")
    base = tmp_path / "cut-base"
    shutil.copytree(pair / "base", base)
    (base / "model.safetensors").write_bytes((base / "model.safetensors").read_bytes()[:100])
    result = cli.main(
        "audit", "--recipe", str(recipe(pair, tmp_path, adapter, base=base)), "--sft-cache", str(tmp_path)
    )
    cli.bad_input(result, "cut-base/model.safetensors: not a readable safetensors file")


# -- answer-cache entries ----------------------------------------------------------------------------------------
WHOLE = Answer("Hi", "Hello", "Hello<|im_end|>", [5, 6], 2, "eos").to_dict()


@pytest.mark.parametrize(
    "entry",
    [{k: v for k, v in WHOLE.items() if k != "raw"}, {**WHOLE, "text": None}, {**WHOLE, "token_ids": ["a"]}, [1], None],
    ids=["field-missing", "text-null", "token-ids-not-ints", "not-an-object", "absent"],
)
def test_a_cache_entry_that_is_not_a_whole_answer_is_generated_again(entry):
    assert cached_answer(entry, "Hi") is None


def test_a_whole_cache_entry_is_used_and_one_for_another_question_is_not():
    assert cached_answer(WHOLE, "Hi") == Answer.from_dict(WHOLE)
    assert cached_answer(WHOLE, "Hello?") is None


def test_the_pipeline_regenerates_a_broken_cache_entry(sft_pipeline, asking):
    """Through the pipeline: the stored answer is replaced by one with `text: null`; the rerun generates it again
    instead of failing on it."""
    from sft_eval.pipeline import Pipeline

    question = f"What is the capital of France? ({uuid.uuid4().hex[:8]})"
    path = asking([question])
    answers = Pipeline(load_recipe(path), sft_pipeline.cache, device="cpu").answers("base")
    entries = [p for p in sft_pipeline.cache.answers.folder.rglob("*.json") if question in p.read_text()]
    assert len(entries) == 1, entries
    entries[0].write_text(json.dumps({**json.loads(entries[0].read_text()), "text": None}), encoding="utf-8")
    again = Pipeline(load_recipe(path), sft_pipeline.cache, device="cpu")
    assert again.answers("base") == answers
    assert again.answer_counts["base"] == {"cached": 0, "generated": 1}


# -- a served model's replies ------------------------------------------------------------------------------------
class OddServer:
    """A chat-completions server on a loopback port that answers `replies[question]` (status, content type, body)
    and, for a question in `silent`, never replies."""

    def __init__(self) -> None:
        self.replies: dict[str, tuple[int, str, bytes]] = {}
        self.silent: set[str] = set()
        self.release = threading.Event()
        self.asked: collections.Counter[str] = collections.Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = body["messages"][-1]["content"]
                server.asked[question] += 1
                if question in server.silent:
                    server.release.wait(30)  # holds the request until the test ends (bounded)
                    return
                status, kind, data = server.replies.get(question, (200, "application/json", _completion(question)))
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


def _completion(question: str, content: object = None, choices: list | None = None) -> bytes:
    message = {"role": "assistant", "content": f"answer to {question}" if content is None else content}
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}] if choices is None else choices,
            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
        }
    ).encode()


@pytest.fixture
def odd_server() -> Iterator[OddServer]:
    odd = OddServer()
    thread = threading.Thread(target=odd.httpd.serve_forever, daemon=True)
    thread.start()
    yield odd
    odd.release.set()
    odd.httpd.shutdown()
    odd.httpd.server_close()


MALFORMED = {
    "not-json": (200, "application/json", b"{not json"),
    "html": (200, "text/html", b"<html><body>502 Bad Gateway</body></html>"),
    "no-choices": (200, "application/json", _completion("q", choices=[])),
    "content-a-list": (200, "application/json", _completion("q", content=[{"type": "text", "text": "hi"}])),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_reply_fails_its_question_and_keeps_the_others(case, odd_server):
    pytest.importorskip("openai")
    from sft_eval.generation.served import generate_served

    odd_server.replies = {"bad": MALFORMED[case]}
    with pytest.raises(
        PartlyAnswered, match=r"1 of 3 questions failed \(not retried: .*not a chat completion"
    ) as error:
        generate_served(odd_server.url, "m", ["one", "bad", "three"], concurrency=3, max_retries=3, timeout=10)
    assert {i: a.text for i, a in error.value.answered.items()} == {0: "answer to one", 2: "answer to three"}
    assert odd_server.asked["bad"] == 1, "a reply that is no chat completion is said not retried, and was not"


def test_a_server_that_never_replies_is_given_up_within_the_configured_bound(odd_server):
    """No reply at all: the request times out after `timeout` (retried `max_retries` times), then the server counts
    as unreachable and nothing more is sent; with the defaults that bound is minutes, not the old 50."""
    pytest.importorskip("openai")
    from sft_eval.generation.served import generate_served

    odd_server.silent = {"stall"}
    with pytest.raises(PartlyAnswered, match="eval.base_url: cannot reach"):
        generate_served(odd_server.url, "m", ["stall"], concurrency=1, max_retries=1, timeout=0.5)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("max_retries = 1000", "`eval.max_retries` must be 0 to 10, not 1000"),
        ("request_timeout = 0", "`eval.request_timeout` must be above 0"),
        ("request_timeout = 86400", "at most 3600 seconds"),
    ],
    ids=["retries-past-the-ceiling", "timeout-zero", "timeout-a-day"],
)
def test_served_bounds_are_checked_at_load(line, says, tiny_variant):
    with pytest.raises(SftEvalError, match=says.replace("(", r"\(")):
        load_recipe(tiny_variant({"[eval]": f"[eval]\n{line}"}))


# -- report --from-json and the loss curve -----------------------------------------------------------------------
def test_a_malformed_card_in_report_json_is_one_line(tmp_path, cli, sft_pipeline):
    context = json.loads(json.dumps(sft_pipeline.report_context(), default=str))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(context), encoding="utf-8")
    assert cli.main("report", "--from-json", str(good), "--out", str(tmp_path / "ok")).returncode == 0
    del context["cards"][0]["base"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(context), encoding="utf-8")
    cli.bad_input(cli.main("report", "--from-json", str(bad), "--out", str(tmp_path / "out")), "cards[0] has no `base`")


def test_a_report_of_a_run_whose_loss_went_nan_renders_again_from_its_own_json(tmp_path, cli, sft_pipeline):
    """Issue 44, cause 1: the writer puts null where a loss or grad norm was not finite (JSON has no NaN); the
    reader and the template take what the writer wrote, and the table says "not finite" (it was a traceback at the
    `'%.4f' % loss` of the logged-losses table)."""
    from sft_eval.report import write_report

    context = sft_pipeline.report_context()
    training = context["training"]
    diverged = {
        **context,
        "training": {
            **training,
            "losses": [(step, math.nan if i == 1 else loss) for i, (step, loss) in enumerate(training["losses"])],
            "steps": [
                {**s, "loss": math.inf, "grad_norm": math.nan} if i == 0 else s for i, s in enumerate(training["steps"])
            ],
            "train_runtime_s": None,
        },
    }
    written = write_report(diverged, tmp_path / "live").parent / "sft_report.json"
    assert json.loads(written.read_text(encoding="utf-8"))["training"]["losses"][1][1] is None, "the writer's null"
    result = cli.main("report", "--from-json", str(written), "--out", str(tmp_path / "again"))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    html = (tmp_path / "again" / "sft_report.html").read_text(encoding="utf-8")
    assert html.count(">not finite</td>") == 3, "one logged loss, one step's loss and its grad norm"


def test_non_finite_losses_are_gaps_listed_under_the_curve():
    svg = loss_curve_svg([(1, 3.0), (2, float("nan")), (3, 2.0), (4, 1.5), (5, None), (6, 1.0)])
    assert "nan" not in svg.lower().replace("not finite", ""), svg
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 2, "runs (1), (3, 4), (6): a line and two dots"
    assert "not finite at step(s) 2, 5" in svg
    assert "not finite" not in loss_curve_svg([(1, 3.0), (2, 2.0)])


# -- the pytest plugin at session end ----------------------------------------------------------------------------
def test_a_bad_record_met_at_session_end_is_a_summary_line_not_a_hook_traceback(pair, tmp_path, cli):
    folder = run_copy(pair, tmp_path)
    (folder / "checkpoint-2" / "trainer_state.json").write_text("", encoding="utf-8")
    path = recipe(pair, tmp_path, folder)
    (tmp_path / "test_x.py").write_text(
        "def test_answers(sft_evaluation):\n    assert sft_evaluation.records\n\n"
        "def test_record(sft_training_run):\n    pass\n",
        encoding="utf-8",
    )
    result = cli.pytest("test_x.py", "--sft-recipe", str(path), "--sft-cache", str(tmp_path / "c"), cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "INTERNALERROR" not in result.stdout and "Traceback" not in result.stdout, result.stdout[-3000:]
    assert "report not written: model.tuned:" in result.stdout and "not valid JSON" in result.stdout
    assert "1 passed, 1 error" in result.stdout, result.stdout[-2000:]


def test_an_adapter_of_a_hub_model_applied_to_an_unnamed_local_base_is_said(tmp_path):
    """Issue 44: an adapter recorded for a hub model was applied to a local base of the same shapes without a word.
    Now an info finding (`peft.base`); quiet for a local snapshot of that hub model, and for a locally recorded base."""
    from sft_eval.audit.adapter import check_adapter_base

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {"peft_type": "LORA", "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M"}
    (adapter / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    local = tmp_path / "my-base"
    (finding,) = check_adapter_base(adapter, local, str(local))
    assert finding.check == "peft.base" and finding.severity == "info", finding
    assert "'HuggingFaceTB/SmolLM2-135M'" in finding.message and str(local) in finding.message
    snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M" / "snapshots" / "abc"
    assert check_adapter_base(adapter, snapshot, str(snapshot)) == []
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(local)}))
    assert check_adapter_base(adapter, local, str(local)) == []
