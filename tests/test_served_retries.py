"""The served backend under a flaky server: a real HTTP server on a loopback port, speaking the chat completions
API, that resets connections and answers 429/5xx on a script before it answers. The real OpenAI client retries
transient failures with backoff up to `eval.max_retries`; a question that still fails is named, the others are
kept (and cached by the pipeline), and a rerun asks only the failed ones."""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sft_eval.errors import PartlyAnswered, SftEvalError
from sft_eval.generation.served import generate_served
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import load_recipe

pytest.importorskip("openai")

ALWAYS = ["500"] * 100  # a question the server never answers


class FlakyServer:
    """`script[question]`: what the server does on each attempt before it answers (an HTTP status, or "reset" to
    drop the connection with a TCP RST); `attempts` counts the requests per question."""

    def __init__(self) -> None:
        self.script: dict[str, list[str]] = {}
        self.attempts: Counter[str] = Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = body["messages"][-1]["content"]
                with server.lock:
                    server.attempts[question] += 1
                    attempt = server.attempts[question]
                script = server.script.get(question, [])
                if attempt <= len(script):
                    if script[attempt - 1] == "reset":
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        self.connection.close()
                        self.close_connection = True
                        return
                    self._send(int(script[attempt - 1]), {"error": {"message": "busy, try again"}})
                    return
                reply = {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": f"answer to {question}"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                }
                self._send(200, reply)

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("retry-after-ms", "5")  # honoured by the client: keeps the test fast
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


@pytest.fixture
def server() -> Iterator[FlakyServer]:
    flaky = FlakyServer()
    thread = threading.Thread(target=flaky.httpd.serve_forever, daemon=True)
    thread.start()
    yield flaky
    flaky.httpd.shutdown()
    flaky.httpd.server_close()


def ask(server: FlakyServer, questions: list[str], **kwargs):
    return generate_served(server.url, "m", questions, concurrency=4, **kwargs)


def test_transient_failures_are_retried_until_answered(server):
    """A reset connection, 429, 500, 502 and 503 are each retried; every question is answered, in order."""
    questions = ["reset", "429", "500 then 503", "502 twice", "fine"]
    server.script = {"reset": ["reset"], "429": ["429"], "500 then 503": ["500", "503"], "502 twice": ["502", "502"]}
    answers = ask(server, questions, max_retries=2)
    assert [a.text for a in answers] == [f"answer to {q}" for q in questions]
    assert server.attempts == Counter({"reset": 2, "429": 2, "500 then 503": 3, "502 twice": 3, "fine": 1})


def test_the_retry_limit_holds_and_the_failed_question_is_named(server):
    """A question failing past `max_retries` is asked exactly 1 + max_retries times and named; the questions the
    server did answer come back with the error, by position, for the caller to keep."""
    questions = ["first", "never answered", "third"]
    server.script = {"never answered": ALWAYS}
    with pytest.raises(PartlyAnswered) as error:
        ask(server, questions, max_retries=2)
    message = str(error.value)
    assert message.startswith("1 of 3 questions failed after 2 retries each (eval.max_retries): eval.model: ")
    assert "answered 500" in message and "busy, try again" in message and "failed: 'never answered'" in message
    assert server.attempts["never answered"] == 3
    assert {i: a.text for i, a in error.value.answered.items()} == {0: "answer to first", 2: "answer to third"}


def test_no_retries_means_one_attempt(server):
    server.script = {"q": ["503"]}
    with pytest.raises(SftEvalError, match="answered 503"):
        ask(server, ["q"], max_retries=0)
    assert server.attempts["q"] == 1


def test_many_failed_questions_are_counted_not_all_listed(server):
    questions = [f"q{i}" for i in range(8)] + ["ok"]
    server.script = {q: ALWAYS for q in questions[:8]}
    with pytest.raises(
        PartlyAnswered, match=r"^8 of 9 questions failed .*failed: 'q0'; 'q1'; 'q2'; 'q3'; 'q4' and 3 more$"
    ):
        ask(server, questions, max_retries=0)


def test_a_negative_retry_limit_is_refused_at_load(tmp_path, tiny_variant):
    recipe = tiny_variant({"[eval]": "[eval]\nmax_retries = -1"})
    with pytest.raises(SftEvalError, match="`eval.max_retries` must be 0 to 10, not -1"):
        load_recipe(recipe)


def test_the_pipeline_keeps_what_was_answered_and_a_rerun_asks_only_the_rest(server, sft_pipeline, asking):
    """Through the pipeline and its answer cache: one question fails past its retries; the other answers are
    stored though they shared its batch, and the rerun (server healthy again) asks the failed question only."""
    nonce = uuid.uuid4().hex[:8]
    questions = [f"{name} ({nonce})" for name in ("one", "two", "three")]
    served = f'[eval]\nbackend = "openai"\nbase_url = "{server.url}"\nmodel = "m"\nmax_retries = 1\nbatch_size = 8'
    recipe = asking(questions, {"[eval]": served})
    server.script = {questions[1]: ALWAYS}
    with pytest.raises(PartlyAnswered, match=rf"1 of 3 questions failed .*failed: '{re.escape(questions[1])}'$"):
        Pipeline(load_recipe(recipe), sft_pipeline.cache, device="cpu").answers("tuned")
    server.script = {}
    server.attempts.clear()
    rerun = Pipeline(load_recipe(recipe), sft_pipeline.cache, device="cpu")
    answers = rerun.answers("tuned")
    assert [a.text for a in answers] == [f"answer to {q}" for q in questions]
    assert server.attempts == Counter({questions[1]: 1}) and rerun.answer_counts["tuned"] == {
        "cached": 2,
        "generated": 1,
    }


def test_a_server_that_cannot_be_reached_is_not_asked_every_question(server):
    """Every connection reset: once a question has failed through its retries, no new question is sent, so a
    server that is down costs one backoff, not one per question; the line says how many were not asked."""
    questions = [f"q{i}" for i in range(40)]
    server.script = {q: ["reset"] * 10 for q in questions}
    with pytest.raises(PartlyAnswered, match=r"^eval\.base_url: cannot reach .*; \d+ not asked once it could not be"):
        ask(server, questions, max_retries=1)
    sent = sum(server.attempts.values())
    assert sent <= 2 * 8, f"{sent} requests for 40 questions: the rest should not have been sent"  # 4 in flight
