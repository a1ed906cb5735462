"""The model as it is served: streaming requests to an OpenAI-compatible server, timed per request, swept over
concurrency, as vLLM's serving benchmark and GuideLLM define the figures.

Per request: TTFT (time to the first streamed content), ITL (the gaps between streamed content chunks after the
first: a byte-level tokenizer streams chunks that are not tokens, so ITL is per chunk), TPOT ((E2EL - TTFT) over
the output tokens after the first) and E2EL (end to end). Output tokens are the server's `usage` where it reports
it (`stream_options.include_usage`), else a tokenizer's count of the text, else the chunks: the result says which.
Each concurrency level sends warm-up requests first (not counted), then `requests` requests with that many in
flight, stopping by itself at the request count or the duration cap, whichever comes first; a request that fails
(an error status, a stall past the timeout, a stream dropped before its last event, an event that is not JSON) is
counted and said, and the completed ones are kept. Goodput is the completed requests per second that met every
latency target given.

The client's own ceiling (requests per second it drives against a server that answers at once, on this machine)
is measured against a loopback server of its own and printed beside every result, so a figure is never the
client's limit mistaken for the server's.

The requests are sent with the standard library's `http.client` and the events read as they arrive, not through
the served backend's `openai` client: on two cores, against a server in another process injecting a 50 ms TTFT,
that client measured 52.4 ms at concurrency 1 and 55.2 ms at 16 (its own work per request and per chunk, under
one interpreter lock), this one 52.6 and 51.6 ms. The served backend's client still lists the server's models.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sft_eval.errors import SftEvalError
from sft_eval.recipe import BenchSection
from sft_eval.section_checks import BENCH_TARGETS

DEFAULT_CONCURRENCY = BenchSection().concurrency  # the recipe's default, 1, 4, 16, 64
PERCENTILES = (50, 90, 99)
TARGET_METRICS = BENCH_TARGETS  # `--target ttft:500` and the like, in milliseconds
ERRORS_SHOWN = 3
WARMUP = 2  # requests before each level, not counted
MAX_IN_FLIGHT = BenchSection().max_in_flight  # a rate sweep's cap on requests in flight


@dataclass(frozen=True)
class Timed:
    """One streamed request: its timings in ms (None where it failed before that point), its output tokens and
    how they were counted, or why it failed."""

    ttft_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    e2el_ms: float | None = None
    output_tokens: int = 0
    counted_by: str = ""  # "usage", "tokenizer" or "chunks"
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def tpot_ms(self) -> float | None:
        if self.ttft_ms is None or self.e2el_ms is None or self.output_tokens < 2:
            return None
        return (self.e2el_ms - self.ttft_ms) / (self.output_tokens - 1)

    def meets(self, targets: dict[str, float]) -> bool:
        """Every target met: TTFT, TPOT and E2EL at most their target; ITL's target holds for every gap."""
        values = {"ttft": self.ttft_ms, "tpot": self.tpot_ms, "e2el": self.e2el_ms}
        for name, limit in targets.items():
            if name == "itl":
                if any(gap > limit for gap in self.itl_ms):
                    return False
            elif values[name] is None or values[name] > limit:  # type: ignore[operator]
                return False
        return self.ok


def stream_one(
    connect: Callable[[], Any],
    path: str,
    headers: dict[str, str],
    model: str,
    prompt: str,
    max_tokens: int,
    count_tokens: Callable[[str], int] | None = None,
) -> Timed:
    """One chat completion, streamed and timed from the moment it is sent. `connect()` gives a fresh
    `http.client` connection (with its timeout: a server silent for longer fails the request)."""
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    first = last = None
    gaps: list[float] = []
    text: list[str] = []
    usage = None
    finished = False
    connection = connect()
    start = time.perf_counter()
    try:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        if response.status != 200:
            said = response.read(2000).decode("utf-8", "replace").strip().splitlines()
            return Timed(error=f"HTTP {response.status}: {(said or [response.reason])[0][:200]}")
        for line in response:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            now = time.perf_counter()
            event = json.loads(data)
            if event.get("usage"):
                usage = event["usage"].get("completion_tokens")
            for choice in event.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    if first is None:
                        first = now
                    else:
                        gaps.append(1000 * (now - last))  # type: ignore[operator]
                    last = now
                    text.append(content)
                finished = finished or choice.get("finish_reason") is not None
    except Exception as exc:  # a stall past the timeout, a reset connection, an event that is not JSON
        return Timed(error=_reason(exc))
    finally:
        connection.close()
    end = time.perf_counter()
    if not finished:
        return Timed(error="the stream ended before its last event (no finish_reason)")
    if first is None:
        return Timed(error="the stream held no content")
    written = "".join(text)
    if isinstance(usage, int) and not isinstance(usage, bool) and usage > 0:
        tokens, counted_by = usage, "usage"
    elif count_tokens is not None:
        tokens, counted_by = count_tokens(written), "tokenizer"
    else:
        tokens, counted_by = len(text), "chunks"
    return Timed(1000 * (first - start), gaps, 1000 * (end - start), tokens, counted_by)


@dataclass(frozen=True)
class Endpoint:
    """Where the chat completions are: a connection factory, the path and the headers."""

    url: str
    timeout: float

    def connect(self) -> Any:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return kind(parts.hostname or "127.0.0.1", parts.port, timeout=self.timeout)

    @property
    def path(self) -> str:
        from urllib.parse import urlsplit

        return urlsplit(self.url).path.rstrip("/") + "/chat/completions"

    @property
    def headers(self) -> dict[str, str]:
        key = os.environ.get("OPENAI_API_KEY", "sft-eval")
        return {"Content-Type": "application/json", "Authorization": f"Bearer {key}", "Accept": "text/event-stream"}


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    said = (str(exc).strip().splitlines() or [name])[0][:200]
    return f"HTTP {status}: {said}" if status else f"{name}: {said}"


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p90 and p99 (numpy's linear interpolation, as vLLM's benchmark reports them); None with no values."""
    import numpy as np

    if not values:
        return {f"p{p}": None for p in PERCENTILES}
    found = np.percentile(np.asarray(values, dtype=float), PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, found, strict=True)}


def run_level(
    endpoint: Endpoint,
    model: str,
    prompts: Sequence[str],
    *,
    concurrency: int,
    requests: int,
    max_tokens: int,
    duration_s: float,
    warmup: int,
    targets: dict[str, float],
    count_tokens: Callable[[str], int] | None = None,
    rate: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """One level: `warmup` requests (not counted), then up to `requests`, none sent after `duration_s`. Without a
    `rate`, `concurrency` requests stay in flight (closed loop); with one, the requests are sent at Poisson arrival
    times of that many per second (exponential gaps drawn with `seed`, the first at 0, as vLLM's `--request-rate`
    sends them), whether or not earlier ones are done, at most `concurrency` in flight: how late each was sent
    against its schedule is `schedule_lag_ms`."""

    def ask(index: int) -> Timed:
        prompt = prompts[index % len(prompts)]
        return stream_one(endpoint.connect, endpoint.path, endpoint.headers, model, prompt, max_tokens, count_tokens)

    lags: list[float] = []
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(ask, range(warmup)))
        start = time.perf_counter()
        deadline = start + duration_s
        if rate is None:
            timed = _closed_loop(ask, pool, warmup, concurrency, requests, deadline)
        else:
            timed, lags = _open_loop(ask, pool, warmup, poisson_offsets(rate, requests, seed), start, deadline)
        wall = time.perf_counter() - start
    completed = [t for t in timed if t.ok]
    errors: dict[str, int] = {}
    for t in timed:
        if not t.ok:
            errors[t.error] = errors.get(t.error, 0) + 1
    tokens = sum(t.output_tokens for t in completed)
    level = {
        "concurrency": concurrency,
        "request_rate": rate,
        "requests": len(timed),
        "completed": len(completed),
        "failed": len(timed) - len(completed),
        "errors": [f"{n} x {e}" for e, n in sorted(errors.items(), key=lambda x: -x[1])[:ERRORS_SHOWN]],
        "duration_s": wall,
        "stopped_by": "duration" if len(timed) < requests else "requests",
        "ttft_ms": percentiles([t.ttft_ms for t in completed if t.ttft_ms is not None]),
        "tpot_ms": percentiles([v for t in completed if (v := t.tpot_ms) is not None]),
        "itl_ms": percentiles([gap for t in completed for gap in t.itl_ms]),
        "e2el_ms": percentiles([t.e2el_ms for t in completed if t.e2el_ms is not None]),
        "output_tokens": tokens,
        "output_tokens_per_s": tokens / wall if wall > 0 else None,
        "requests_per_s": len(completed) / wall if wall > 0 else None,
        "goodput_requests_per_s": (sum(t.meets(targets) for t in completed) / wall if targets and wall > 0 else None),
        "tokens_counted_by": sorted({t.counted_by for t in completed}),
    }
    if rate is not None:
        level["schedule_lag_ms"] = percentiles(lags)
    return level


def _closed_loop(
    ask: Callable[[int], Timed], pool: ThreadPoolExecutor, first: int, concurrency: int, requests: int, deadline: float
) -> list[Timed]:
    """`concurrency` workers, each sending its next request when its last one is done."""
    lock = threading.Lock()
    sent = [0]

    def worker(_: int) -> list[Timed]:
        done = []
        while time.perf_counter() < deadline:
            with lock:
                if sent[0] >= requests:
                    break
                index = sent[0]
                sent[0] += 1
            done.append(ask(first + index))
        return done

    return [t for batch in pool.map(worker, range(concurrency)) for t in batch]


def _open_loop(
    ask: Callable[[int], Timed],
    pool: ThreadPoolExecutor,
    first: int,
    offsets: Sequence[float],
    start: float,
    deadline: float,
) -> tuple[list[Timed], list[float]]:
    """Each request sent at `start + offset` (none due after `deadline`); its lag is how late it left, the
    dispatcher's sleep and the wait for a free slot together."""

    def sent_at(index: int, due: float) -> tuple[Timed, float]:
        lag = 1000 * (time.perf_counter() - due)
        return ask(index), lag

    futures = []
    for index, offset in enumerate(offsets):
        due = start + offset
        if due >= deadline:
            break
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        futures.append(pool.submit(sent_at, first + index, due))
    results = [f.result() for f in futures]
    return [t for t, _ in results], [lag for _, lag in results]


def poisson_offsets(rate: float, count: int, seed: int) -> list[float]:
    """`count` send times in seconds from the start of a Poisson process of `rate` per second: the first at 0, then
    exponential gaps of mean 1/rate, drawn from `random.Random(seed)` (the same on every machine and Python)."""
    if not (math.isfinite(rate) and rate > 0):
        raise SftEvalError(f"bench: a request rate must be a number of requests per second above 0, not {rate!r}")
    rng = random.Random(seed)
    return list(itertools.accumulate((rng.expovariate(rate) for _ in range(count - 1)), initial=0.0))[:count]


# Common English words, the synthetic prompts' vocabulary: every tokenizer has them, each at least one token.
_COMMON_WORDS = """
the of and to in is was for on that with as by at from it an be this which or are have not had but one they
were all their there been has when who will more no if out so said what up its about into than them can only
other new some could time these two may then do first any my now such like our over man me even most made
after also did many before must through back years where much your way well down should because each just
those people how too little state good very make world still own see men work long get here between both
life being under never day same another know while last might us great old year off come since against go
came right used take three
"""
WORDS = tuple(_COMMON_WORDS.split())


def synthetic_prompts(
    count: int, mean: int, stdev: float, seed: int, count_tokens: Callable[[str], int] | None = None
) -> tuple[list[str], list[int]]:
    """`count` prompts whose lengths are drawn from a normal distribution (`mean`, `stdev` tokens, rounded, kept
    within 1 and mean + 3 stdev; exactly `mean` with stdev 0), from `random.Random(seed)`, each a run of common
    words cut to its length as `count_tokens` counts it (words without one). Returns the prompts and their lengths
    as counted: where no cut between words hits the length, a part of the next word does, else it falls short."""
    if mean < 1 or not (math.isfinite(stdev) and stdev >= 0):
        raise SftEvalError(
            f"bench: synthetic prompts need a mean of at least 1 token and a stdev of 0 or more, not {mean} and {stdev}"
        )
    rng = random.Random(seed)
    counter = count_tokens or (lambda text: len(text.split()))
    prompts, lengths = [], []
    for _ in range(count):
        target = mean if not stdev else min(max(1, round(rng.gauss(mean, stdev))), round(mean + 3 * stdev))
        words = [rng.choice(WORDS) for _ in range(target)]
        while counter(" ".join(words)) < target:  # a word is at least one token: rarely, more words are needed
            words += [rng.choice(WORDS) for _ in range(target)]
        low, high = 1, len(words)  # the longest run of words within the target
        while low < high:
            middle = (low + high + 1) // 2
            if counter(" ".join(words[:middle])) <= target:
                low = middle
            else:
                high = middle - 1
        text = " ".join(words[:low])
        if low < len(words):  # short of the target inside a word of several tokens: a part of the next word
            for end in range(1, len(words[low])):
                longer = f"{text} {words[low][:end]}"
                if (tokens := counter(longer)) > target:
                    break
                if tokens == target:
                    text = longer
                    break
        prompts.append(text)
        lengths.append(counter(text))
    return prompts, lengths


def parse_targets(items: Sequence[str]) -> dict[str, float]:
    """`["ttft:500", "tpot:40"]` as {"ttft": 500.0, "tpot": 40.0} (milliseconds), as vLLM's `--goodput` takes them."""
    targets: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition(":")
        try:
            limit = float(value)
        except ValueError:
            limit = math.nan
        if name not in TARGET_METRICS or not (math.isfinite(limit) and limit > 0):
            raise SftEvalError(
                f"--target: expected METRIC:MS with METRIC one of {', '.join(TARGET_METRICS)} and MS above 0 "
                f"(ttft:500), not {item!r}"
            )
        targets[name] = limit
    return targets


def served_model(url: str, model: str | None, timeout: float) -> str:
    """The model to ask: `model`, else the server's only one, as the served backend's client lists them (one line
    when it has none or several)."""
    if model:
        return model
    from sft_eval.generation.served import _only_served_model, _openai

    client = _openai().OpenAI(base_url=url, api_key=os.environ.get("OPENAI_API_KEY", "sft-eval"), timeout=timeout)
    return _only_served_model(client, url, "bench", keys=("--served", "--model"))


# -- the client's own ceiling ---------------------------------------------------------------------------------------
class _Instant(BaseHTTPRequestHandler):
    """A chat-completions stream sent at once: a role chunk, `CHUNKS` content chunks, a finish chunk, usage, [DONE]."""

    CHUNKS = 8
    protocol_version = "HTTP/1.0"  # the response ends when the connection closes

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": "ceiling", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        events = [{"role": "assistant", "content": ""}] + [{"content": "word "}] * self.CHUNKS
        for delta in events:
            self._event({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
        self._event({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": self.CHUNKS, "total_tokens": 9}})
        self.wfile.write(b"data: [DONE]\n\n")

    def _event(self, data: dict[str, Any]) -> None:
        payload = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "ceiling", **data}
        self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


def client_ceiling(concurrency: int, requests: int = 200, duration_s: float = 10.0) -> float:
    """Requests per second this client completes against a loopback server that answers at once."""
    server = _Server(("127.0.0.1", 0), _Instant)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        level = run_level(
            Endpoint(url, 30.0),
            "ceiling",
            ["ceiling"],
            concurrency=concurrency,
            requests=requests,
            max_tokens=_Instant.CHUNKS,
            duration_s=duration_s,
            warmup=min(concurrency, 8),
            targets={},
        )
    finally:
        server.shutdown()
        server.server_close()
    return float(level["requests_per_s"] or 0.0)


def bench_served(
    url: str,
    model: str | None,
    prompts: Sequence[str],
    *,
    concurrency: Sequence[int] = DEFAULT_CONCURRENCY,
    requests: int = 64,
    max_tokens: int = 64,
    duration_s: float = 120.0,
    timeout: float = 60.0,
    warmup: int = WARMUP,
    targets: dict[str, float] | None = None,
    count_tokens: Callable[[str], int] | None = None,
    rates: Sequence[float] = (),
    max_in_flight: int = MAX_IN_FLIGHT,
    seed: int = 0,
    prompt_source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The sweep: one result per concurrency level, or with `rates`, one per Poisson request rate (at most
    `max_in_flight` in flight, the schedule drawn with `seed`, the same at every rate); and the client's ceiling at
    the highest number in flight. `prompt_source` (`synthetic_prompts`' settings and lengths) is recorded as the
    result's `prompts`; without it the prompts are the recipe's questions."""
    if not prompts:
        raise SftEvalError("bench: no prompts to send")
    name = served_model(url, model, timeout)
    settings = dict(
        requests=requests,
        max_tokens=max_tokens,
        duration_s=duration_s,
        warmup=warmup,
        targets=dict(targets or {}),
        count_tokens=count_tokens,
    )
    endpoint = Endpoint(url, timeout)
    if rates:
        levels = [
            run_level(endpoint, name, prompts, concurrency=max_in_flight, rate=r, seed=seed, **settings)  # type: ignore[arg-type]
            for r in rates
        ]
    else:
        levels = [run_level(endpoint, name, prompts, concurrency=c, **settings) for c in concurrency]  # type: ignore[arg-type]
    return {
        "served": url,
        "model": name,
        "max_tokens": max_tokens,
        "targets_ms": dict(targets or {}),
        "swept": "rate" if rates else "concurrency",
        "seed": seed,
        "prompts": prompt_source or {"source": "questions", "count": len(prompts)},
        "client_ceiling_requests_per_s": client_ceiling(max_in_flight if rates else max(concurrency)),
        "results": levels,
    }
