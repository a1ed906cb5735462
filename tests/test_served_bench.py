"""`sft-eval bench --served`: the streaming client's timings against a server written here with known, injected
latencies (first content after X ms, then one chunk every Y ms), and its behaviour against servers that stall, drop
the stream half-way, send an event that is not JSON, or answer 500: counted and said, never a hang or a traceback,
the completed requests kept."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sft_eval.served_bench import Endpoint, bench_served, parse_targets, percentiles, run_level

FIRST_MS, GAP_MS, CHUNKS = 50.0, 20.0, 10


@pytest.fixture
def stream_server() -> Iterator[dict]:
    """A streaming chat-completions server on a loopback port: the first content chunk `first_ms` after the request,
    then one every `gap_ms`, `chunks` in all, then the finish event, usage and [DONE]. `behaviour` per request:
    "ok", "stall" (a first chunk, then silence), "drop" (half the chunks, then the connection closes), "garbage"
    (an event that is not JSON), "error" (500); `every` applies it to every n-th request only."""
    state = {"behaviour": "ok", "every": 1, "requests": 0, "first_ms": FIRST_MS, "gap_ms": GAP_MS, "chunks": CHUNKS}
    state.update(arrivals=[], prompts=[])  # each request's accept time and its prompt, in arrival order
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):
            pass

        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": "served", "object": "model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def event(self, data: dict) -> None:
            payload = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "served", **data}
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            self.wfile.flush()

        def do_POST(self):
            start = self.server.accepted.pop(self.client_address)  # the connection's accept: the schedule starts there
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                state["requests"] += 1
                state["arrivals"].append(start)
                state["prompts"].append(body["messages"][-1]["content"])
                special = state["requests"] % state["every"] == 0
            behaviour = state["behaviour"] if special else "ok"
            if behaviour == "error":
                body = json.dumps({"error": {"message": "overloaded"}}).encode()
                self.send_response(500)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            role = {"role": "assistant", "content": ""}
            self.event({"choices": [{"index": 0, "delta": role, "finish_reason": None}]})
            if behaviour == "garbage":
                self.wfile.write(b"data: {this is not json\n\n")
                return
            for k in range(state["chunks"]):
                due = start + (state["first_ms"] + k * state["gap_ms"]) / 1000
                time.sleep(max(0.0, due - time.perf_counter()))  # on the schedule, not after the last write
                self.event({"choices": [{"index": 0, "delta": {"content": f"w{k} "}, "finish_reason": None}]})
                if behaviour == "stall":
                    time.sleep(3.0)
                    return
                if behaviour == "drop" and k == state["chunks"] // 2:
                    return  # the connection closes with no finish event
            self.event({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
            usage = {"prompt_tokens": 3, "completion_tokens": state["chunks"], "total_tokens": 3 + state["chunks"]}
            self.event({"choices": [], "usage": usage})
            self.wfile.write(b"data: [DONE]\n\n")

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

        accepted: dict = {}

        def process_request(self, request, client_address):
            self.accepted[client_address] = time.perf_counter()  # before the handler's thread reads the headers
            super().process_request(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


def _level(state: dict, concurrency: int, requests: int, timeout: float = 10.0, **kw):
    return run_level(
        Endpoint(state["url"], timeout),
        "served",
        ["hello"],
        concurrency=concurrency,
        requests=requests,
        max_tokens=CHUNKS,
        duration_s=kw.pop("duration_s", 30.0),
        warmup=kw.pop("warmup", 1),
        targets=kw.pop("targets", {}),
        **kw,
    )


@pytest.mark.parametrize(("concurrency", "requests"), [(1, 12), (16, 48)])
def test_the_injected_latencies_are_what_is_measured(stream_server, concurrency, requests):
    """TTFT, ITL and TPOT at p50 near what the server injects (50 ms, then 20 ms a chunk), at concurrency 1 and 16.
    Within 15% here, so a loaded CI machine does not fail it; the `bench`-marked test below holds them to 5% on a
    quiet one. A client that timed the whole response as TTFT, or counted the first gap in ITL, misses by 3x."""
    level = _level(stream_server, concurrency, requests)
    _near(level, requests, 0.15)


@pytest.mark.bench
@pytest.mark.parametrize(("concurrency", "requests"), [(1, 24), (16, 96)])
def test_the_injected_latencies_within_5_percent(stream_server, concurrency, requests):
    """The issue's accuracy target, on a quiet machine: `pytest -m bench tests/test_served_bench.py`."""
    level = _level(stream_server, concurrency, requests)
    print(f"concurrency {concurrency}: ttft {level['ttft_ms']}, itl {level['itl_ms']}, tpot {level['tpot_ms']}")
    _near(level, requests, 0.05)


def _near(level: dict, requests: int, rel: float) -> None:
    assert level["completed"] == requests and level["failed"] == 0, level["errors"]
    assert level["ttft_ms"]["p50"] == pytest.approx(FIRST_MS, rel=rel), level["ttft_ms"]
    assert level["itl_ms"]["p50"] == pytest.approx(GAP_MS, rel=rel), level["itl_ms"]
    assert level["tpot_ms"]["p50"] == pytest.approx(GAP_MS, rel=rel), level["tpot_ms"]
    e2el = FIRST_MS + (CHUNKS - 1) * GAP_MS
    assert level["e2el_ms"]["p50"] == pytest.approx(e2el, rel=rel), level["e2el_ms"]
    assert level["tokens_counted_by"] == ["usage"] and level["output_tokens"] == CHUNKS * requests
    assert level["requests_per_s"] == pytest.approx(level["completed"] / level["duration_s"])


def test_goodput_counts_the_requests_that_meet_every_target(stream_server):
    met = _level(stream_server, 4, 8, targets=parse_targets(["ttft:500", "tpot:100"]))
    missed = _level(stream_server, 4, 8, targets=parse_targets(["ttft:10"]))  # 50 ms never meets 10 ms
    assert met["goodput_requests_per_s"] == pytest.approx(met["requests_per_s"])
    assert missed["goodput_requests_per_s"] == 0.0


@pytest.mark.parametrize(
    ("behaviour", "says"),
    [
        ("stall", "Timeout"),
        ("drop", "the stream ended before its last event"),
        ("garbage", ""),
        ("error", "HTTP 500"),
    ],
)
def test_a_failing_request_is_counted_and_said_and_the_others_kept(stream_server, behaviour, says):
    """Every second request misbehaves: it is counted as failed with its reason, the rest complete, and the level
    ends by itself (a stall waits out the 1 s timeout, never longer)."""
    stream_server.update(behaviour=behaviour, every=2)
    start = time.perf_counter()
    level = _level(stream_server, 2, 8, timeout=1.0, warmup=0)
    assert time.perf_counter() - start < 20
    assert level["requests"] == 8 and level["failed"] == 4 and level["completed"] == 4, level
    assert len(level["errors"]) == 1 and level["errors"][0].startswith("4 x ") and says in level["errors"][0]


def test_the_duration_cap_stops_a_level_by_itself(stream_server):
    level = _level(stream_server, 1, 1000, duration_s=0.5, warmup=0)
    assert level["stopped_by"] == "duration" and 1 <= level["requests"] < 10


def test_percentiles_are_numpys_and_none_without_values():
    import numpy as np

    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {f"p{p}": float(np.percentile(values, p)) for p in (50, 90, 99)}
    assert percentiles([]) == {"p50": None, "p90": None, "p99": None}


def test_the_cli_prints_the_contract_and_the_client_ceiling(stream_server, cli):
    """`sft-eval bench --served URL --json`: one object, a result per concurrency with every figure, the client's
    ceiling at the top level; a server failing half its requests exits 1 and says why."""
    args = ["bench", "--served", stream_server["url"], "--concurrency", "1,4", "--requests", "8", "--json"]
    result = cli.main(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert [r["concurrency"] for r in data["results"]] == [1, 4] and data["client_ceiling_requests_per_s"] > 0
    for r in data["results"]:
        assert {"requests", "output_tokens_per_s", "requests_per_s"} <= set(r)
        for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"):
            assert set(r[name]) == {"p50", "p90", "p99"} and r[name]["p50"] > 0
    stream_server.update(behaviour="error", every=2)
    failing = cli.main("bench", "--served", stream_server["url"], "--concurrency", "2", "--requests", "4")
    assert failing.returncode == 1 and "FAILED bench.failed: 2 of 4" in failing.stdout, failing.stdout
    assert "2 x HTTP 500" in failing.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--served", "localhost:8000"], "--served: expected the server's http(s) URL"),
        (["--served", "http://127.0.0.1:9/v1", "--concurrency", "1,x"], "--concurrency"),
        (["--served", "http://127.0.0.1:9/v1", "--target", "speed:1"], "--target"),
        (["--served", "http://127.0.0.1:9/v1", "--concurrency", "1"], "--served: cannot reach"),
    ],
)
def test_bad_input_is_one_line(args, says, cli):
    cli.bad_input(cli.main("bench", *args), says)


def test_bench_served_refuses_no_prompts(stream_server):
    from sft_eval.errors import SftEvalError

    with pytest.raises(SftEvalError, match="no prompts"):
        bench_served(stream_server["url"], None, [])


def test_the_served_walkthrough_runs_as_written(stream_server, cli):
    """docs/served-bench.md's command, with the test server's URL in place of the one written: exit 0, the JSON
    holds a result per concurrency and goodput under its target."""
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "served-bench.md").read_text(encoding="utf-8")
    command = shlex.split(text.split("```bash\n", 1)[1].split("```", 1)[0].strip())
    assert command[:3] == ["sft-eval", "bench", "--served"] and command[3] == "http://127.0.0.1:8000/v1"
    result = cli.main(*[stream_server["url"] if a == command[3] else a for a in command[1:]])
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert [r["concurrency"] for r in data["results"]] == [1, 4, 16]
    assert all(r["goodput_requests_per_s"] == pytest.approx(r["requests_per_s"]) for r in data["results"])


def test_bench_in_a_recipe_is_judged_by_its_thresholds(stream_server, tiny_variant, cli):
    """`[bench]` names the server, levels and goodput targets; `[thresholds]` judges the result: within them exit 0,
    a TTFT p99 over its limit or too little goodput exit 1 naming the check, the checks in the JSON."""
    url = stream_server["url"]
    bench = f'[bench]\nserved = "{url}"\nconcurrency = [2]\nrequests = 6\ntargets = {{ ttft = 500, tpot = 100 }}\n\n'

    def run(limits: str):
        recipe = tiny_variant({"[eval]": f"{bench}[eval]", "[thresholds]": f"[thresholds]\n{limits}"})
        return cli.main("bench", "--recipe", str(recipe), "--json")

    passed = run("max_ttft_p99_ms = 500.0\nmax_tpot_p50_ms = 100.0\nmin_goodput = 0.5\n")
    assert passed.returncode == 0, passed.stdout[-2000:] + passed.stderr[-2000:]
    checks = {c["name"]: c["passed"] for c in json.loads(passed.stdout)["checks"]}
    assert checks == {"bench.failed": True, "bench.ttft": True, "bench.tpot": True, "bench.goodput": True}
    slow = run("max_ttft_p99_ms = 10.0\n")
    assert slow.returncode == 1 and "bench.ttft" in slow.stdout
    starved = run("min_goodput = 10000.0\n")
    assert starved.returncode == 1 and "bench.goodput" in starved.stdout


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ('[bench]\nserved = "localhost:8000"\n', "`bench.served` must be the server's http(s) URL"),
        ("[bench]\nconcurrency = [0]\n", "`bench.concurrency`"),
        ("[bench]\ntargets = { speed = 1 }\n", "`bench.targets.speed`"),
        ("[bench]\nrate = [-1]\n", "`bench.rate`"),
        ("[bench]\nprompt_tokens_stdev = 4.0\n", "`bench.prompt_tokens_stdev` needs `bench.prompt_tokens`"),
    ],
)
def test_a_bad_bench_section_is_one_line(section, says, tiny_variant, cli):
    recipe = tiny_variant({"[eval]": section + "\n[eval]"})
    cli.bad_input(cli.run("plan", "--recipe", str(recipe)), str(recipe), says)


def test_the_report_shows_a_bench_file_as_a_section_with_its_curve(stream_server, sft_pipeline, cli, tmp_path):
    """`sft-eval report --bench FILE`: the bench's JSON in the report's JSON (read back through its types) and an
    "As served" section with a row per concurrency and latency drawn against throughput; a file that is no bench
    JSON is one line before any model loads."""
    from sft_eval.report import read_report_json

    result = cli.main("bench", "--served", stream_server["url"], "--concurrency", "1,4", "--requests", "8", "--json")
    bench = tmp_path / "bench.json"
    bench.write_text(result.stdout, encoding="utf-8")
    env = {"SFT_EVAL_CACHE": str(sft_pipeline.cache.root)}
    out = tmp_path / "report"
    report = cli.main("report", "--bench", str(bench), "--out", str(out), env=env)
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]
    written = read_report_json(out / "sft_report.json")
    assert [r["concurrency"] for r in written["served_bench"]["results"]] == [1, 4]
    page = (out / "sft_report.html").read_text(encoding="utf-8")
    section = page.split('<section id="served">', 1)[1].split("</section>", 1)[0]
    assert section.count("<tr>") == 3 and "output tokens/s" in section and "<svg" in section
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**json.loads(result.stdout), "results": [{"concurrency": "four"}]}))
    cli.bad_input(cli.main("report", "--bench", str(broken), "--out", str(out), env=env), "broken.json", "results[0]")


# -- a Poisson request rate and synthetic prompt lengths, each with a seed -------------------------------------------
def _poisson_like(offsets: list[float], rate: float) -> bool:
    """Gaps that are exponential of mean 1/rate: the mean within 5% and a Kolmogorov-Smirnov test not rejecting."""
    import numpy as np
    from scipy import stats

    gaps = np.diff(offsets)
    fits = stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > 0.01
    return offsets[0] == 0.0 and abs(gaps.mean() * rate - 1) < 0.05 and fits


def test_poisson_arrivals_are_exponential_gaps_drawn_from_the_seed():
    """The schedule is the seed's: the same seed gives the same times, another seed others, and the gaps are
    exponential with mean 1/rate. Broken schedules fail the same test: gaps of mean `rate` instead of 1/rate (a
    swapped `expovariate` argument), and evenly spaced arrivals (no burstiness at all)."""
    import random

    from sft_eval.served_bench import poisson_offsets

    offsets = poisson_offsets(8.0, 5000, seed=1)
    assert offsets == poisson_offsets(8.0, 5000, seed=1) and offsets != poisson_offsets(8.0, 5000, seed=2)
    assert len(offsets) == 5000 and _poisson_like(offsets, 8.0)
    rng = random.Random(1)
    swapped = [0.0]
    for _ in range(4999):
        swapped.append(swapped[-1] + rng.expovariate(1 / 8.0))
    assert not _poisson_like(swapped, 8.0)
    assert not _poisson_like([k / 8.0 for k in range(5000)], 8.0)


def test_a_rate_level_sends_each_request_at_its_scheduled_time(stream_server):
    """A Poisson level at 20 requests/s: the server sees the requests arrive on the seed's schedule (each within
    15 ms of its time, relative to the first), not one after another; the latencies are still the injected ones.
    A closed loop at concurrency 1 against the same server arrives every ~230 ms instead and misses the schedule."""
    from sft_eval.served_bench import poisson_offsets

    level = _level(stream_server, 16, 30, rate=20.0, seed=3, warmup=0)
    assert level["request_rate"] == 20.0 and level["completed"] == 30 and level["concurrency"] == 16
    assert level["ttft_ms"]["p50"] == pytest.approx(FIRST_MS, rel=0.15)
    assert level["schedule_lag_ms"]["p50"] < 15.0
    schedule = poisson_offsets(20.0, 30, seed=3)

    def off_schedule(arrivals: list[float]) -> float:
        return max(abs((a - arrivals[0]) - s) for a, s in zip(arrivals, schedule, strict=True))

    assert off_schedule(stream_server["arrivals"]) < 0.015
    stream_server["arrivals"].clear()
    closed = _level(stream_server, 1, 30, warmup=0)
    assert closed["request_rate"] is None and "schedule_lag_ms" not in closed
    assert off_schedule(stream_server["arrivals"]) > 0.5


def test_a_client_that_falls_behind_its_schedule_says_how_late(stream_server):
    """At most 1 in flight against 230 ms requests, 20 requests/s cannot be sent on time: the lag says so
    (hundreds of ms at p99); the cap is what held them, not the server."""
    level = _level(stream_server, 1, 10, rate=20.0, seed=3, warmup=0)
    assert level["completed"] == 10 and level["schedule_lag_ms"]["p99"] > 500


def test_synthetic_prompts_follow_their_length_distribution_and_seed(sft_tokenizer):
    """Lengths drawn from a normal distribution of the given mean and standard deviation with the seed, each prompt
    cut to its length as the tokenizer counts it (within a token, nearly always exactly); the same seed gives the
    same prompts. Cut by words instead, the same prompts are too long for the tokenizer: counting matters."""
    import statistics

    from sft_eval.served_bench import synthetic_prompts

    count = lambda text: len(sft_tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    prompts, lengths = synthetic_prompts(300, 40, 10.0, seed=5, count_tokens=count)
    assert (prompts, lengths) == synthetic_prompts(300, 40, 10.0, seed=5, count_tokens=count)
    assert prompts != synthetic_prompts(300, 40, 10.0, seed=6, count_tokens=count)[0]
    assert lengths == [count(p) for p in prompts]
    assert statistics.mean(lengths) == pytest.approx(40, abs=2)
    assert statistics.stdev(lengths) == pytest.approx(10, rel=0.15)
    fixed, fixed_lengths = synthetic_prompts(20, 32, 0.0, seed=5, count_tokens=count)
    assert all(31 <= n <= 32 for n in fixed_lengths) and fixed_lengths.count(32) >= 18, fixed_lengths
    by_words, _ = synthetic_prompts(20, 32, 0.0, seed=5)
    assert all(len(p.split()) == 32 for p in by_words)
    assert max(count(p) for p in by_words) > 32  # a word list is not a token count


def test_the_cli_sweeps_a_rate_with_synthetic_prompts(stream_server, cli, sft_pipeline, tmp_path):
    """`--rate 10,20 --prompt-tokens 24 --prompt-tokens-stdev 6 --seed 3`: a level per rate, the schedule's lag,
    the prompts the server received being the synthetic ones (their lengths recorded), and the report's section
    naming the rates; a second run with the same seed sends the same prompts."""
    url = stream_server["url"]
    args = ["bench", "--served", url, "--rate", "10,20", "--requests", "8", "--prompt-tokens", "24"]
    args += ["--prompt-tokens-stdev", "6", "--seed", "3", "--json"]
    result = cli.main(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    assert data["swept"] == "rate" and data["seed"] == 3
    assert [r["request_rate"] for r in data["results"]] == [10.0, 20.0]
    assert all(r["completed"] == 8 and r["schedule_lag_ms"]["p50"] is not None for r in data["results"])
    prompts = data["prompts"]
    assert prompts["source"] == "synthetic" and prompts["counted_by"] == "words" and prompts["count"] == 10
    sent = list(stream_server["prompts"])
    lengths = sorted(len(p.split()) for p in sent[:10])
    assert lengths[0] < 24 < lengths[-1] and prompts["tokens"]["p50"] == pytest.approx(24, abs=6)
    stream_server["prompts"].clear()
    assert cli.main(*args).returncode == 0 and sorted(stream_server["prompts"]) == sorted(sent)
    bench = tmp_path / "bench.json"
    bench.write_text(result.stdout, encoding="utf-8")
    out = tmp_path / "report"
    env = {"SFT_EVAL_CACHE": str(sft_pipeline.cache.root)}
    assert cli.main("report", "--bench", str(bench), "--out", str(out), env=env).returncode == 0
    section = (out / "sft_report.html").read_text(encoding="utf-8").split('<section id="served">', 1)[1]
    assert "requests/s sent (Poisson)" in section and "seed 3" in section and "synthetic" in section


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--rate", "0"], "--rate: expected numbers above 0"),
        (["--rate", "2", "--concurrency", "4"], "--concurrency and --rate: give one"),
        (["--prompt-tokens-stdev", "3"], "--prompt-tokens-stdev: needs --prompt-tokens"),
    ],
)
def test_bad_rate_or_prompt_options_are_one_line(args, says, cli):
    cli.bad_input(cli.main("bench", "--served", "http://127.0.0.1:9/v1", *args), says)
