"""The pairwise judge: its statistics recomputed independently (scipy, statsmodels, a bootstrap written here), and
the chat-judge protocol against a real HTTP server on loopback with a scripted behaviour: a judge that always picks
the first answer, one that prefers the longer answer, a fair one, one that gives no verdict, one that fails."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from sft_eval.cache import AnswerCache
from sft_eval.errors import SftEvalError
from sft_eval.generation import ServedBackend
from sft_eval.judge.chat import MT_BENCH_USER, Pair, judge_pairs, read_verdict
from sft_eval.judge.stats import cohens_kappa, length_controlled, order_effects, win_rate
from sft_eval.recipe import DEFAULT_RECIPE


# -- statistics ----------------------------------------------------------------------------------------------------
def test_the_win_rate_counts_ties_half_and_its_sign_test_is_scipys():
    verdicts = ["win"] * 14 + ["tie"] * 4 + ["loss"] * 6 + [None] * 2
    found = win_rate(verdicts)
    assert (found.wins, found.ties, found.losses, found.missing) == (14, 4, 6, 2)
    assert found.rate == pytest.approx((14 + 2) / 24)
    assert found.p_value == pytest.approx(scipy_stats.binomtest(14, 20, 0.5).pvalue)
    rng = np.random.default_rng(0)  # the percentile bootstrap, written again
    scores = np.array([1.0] * 14 + [0.5] * 4 + [0.0] * 6)
    means = scores[rng.integers(0, 24, size=(2000, 24))].mean(axis=1)
    assert (found.low, found.high) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert win_rate(["win"] * 20).beyond_noise and not win_rate(["win", "loss"] * 10).beyond_noise


def test_an_always_first_judge_flips_every_pair_and_a_fair_one_none():
    first_always = order_effects(["win"] * 10, ["loss"] * 10)  # shown first it wins, shown second it loses
    assert (first_always.flip_rate, first_always.first_position_rate) == (1.0, 1.0)
    fair = order_effects(["win"] * 6 + ["loss"] * 4, ["win"] * 6 + ["loss"] * 4)
    assert fair.flip_rate == 0.0 and fair.first_position_rate == 0.5


def test_the_length_controlled_win_rate_is_a_logistic_fit_read_at_zero_difference():
    """A judge that prefers the longer answer (its verdict drawn with P(win) = sigmoid(2.5 tanh(d / sd)): no
    preference at equal length) and a candidate longer in 80% of 400 pairs: the raw win rate is far above one
    half, the length-controlled one near it; the intercept is statsmodels' GLM's (unpenalised: the penalty is on
    the slope alone; without it the fit is the GLM's)."""
    import statsmodels.api as sm

    rng = np.random.default_rng(1)
    differences = np.where(rng.random(400) < 0.8, 1, -1) * rng.integers(5, 60, 400)
    x = np.tanh(differences / differences.std())
    verdicts = ["win" if u < 1 / (1 + np.exp(-2.5 * xi)) else "loss" for u, xi in zip(rng.random(400), x, strict=True)]
    verdicts[:20] = ["tie"] * 20
    raw = win_rate(verdicts).rate
    controlled = length_controlled(verdicts, differences)
    y = np.array([{"win": 1.0, "tie": 0.5, "loss": 0.0}[v] for v in verdicts])
    glm = sm.GLM(y, sm.add_constant(x), family=sm.families.Binomial()).fit()
    unpenalised = length_controlled(verdicts, differences, l2=1e-9).rate
    assert unpenalised == pytest.approx(1 / (1 + math.exp(-glm.params[0])), abs=1e-4)
    assert raw > 0.7 and abs(controlled.rate - 0.5) < 0.07 and raw - controlled.rate > 0.15, (raw, controlled)
    fair = ["win" if i % 2 else "loss" for i in range(400)]  # no length effect: the controlled rate is the raw one
    assert length_controlled(fair, differences).rate == pytest.approx(win_rate(fair).rate, abs=0.05)


def test_length_control_is_not_identifiable_when_the_differences_do_not_straddle_zero():
    """The tiny base never stops, so every base answer is longer: the length and the model cannot be told apart."""
    found = length_controlled(["win", "loss", "win"], [-40, -12, -3])
    assert found.rate is None and "not identifiable" in found.why and "shorter" in found.why
    assert length_controlled(["win", "win"], [0, 0]).rate == 1.0  # no differences at all: nothing to control


def test_cohens_kappa_is_statsmodels():
    from statsmodels.stats.inter_rater import cohens_kappa as reference

    judge = ["win", "win", "tie", "loss", "loss", "win", "tie", "loss", "win", "loss"]
    truth = ["win", "tie", "tie", "loss", "win", "win", "tie", "loss", "loss", "loss"]
    table = np.array(
        [
            [sum(j == a and t == b for j, t in zip(judge, truth, strict=True)) for b in ("win", "tie", "loss")]
            for a in ("win", "tie", "loss")
        ]
    )
    assert cohens_kappa(judge, truth) == pytest.approx(reference(table).kappa)
    assert cohens_kappa(truth, truth) == 1.0


def test_the_verdict_is_the_last_marker_and_none_without_one():
    assert read_verdict("A is wrong. [[B]]") == "B"
    assert read_verdict("Not [[A]]: on reflection [[C]]") == "C"
    assert read_verdict("Assistant A is better.") is None and read_verdict("[[D]]") is None


# -- a scripted judge server on loopback ----------------------------------------------------------------------------
FACTS = {"What is the capital of France?": "Paris", "What is 2 + 2?": "4", "Which planet is largest?": "Jupiter"}


def _answers(text: str) -> tuple[str, str, str]:
    question = text.split("[User Question]\n", 1)[1].split("\n\n[The Start", 1)[0]
    a = re.search(r"\[The Start of Assistant A's Answer\]\n(.*)\n\[The End of Assistant A's Answer\]", text, re.S)
    b = re.search(r"\[The Start of Assistant B's Answer\]\n(.*)\n\[The End of Assistant B's Answer\]", text, re.S)
    return question, a.group(1), b.group(1)


def _loops(text: str) -> bool:
    words = text.lower().split()
    return any(words.count(w) >= 4 for w in set(words))


def oracle(truths: dict[str, str], question: str, a: str, b: str) -> str:
    """A fair judge that knows the answers: the answer holding the right fact wins, else the one that does not
    loop; an answer that only pads the other (holds it whole) ties with it."""
    truth = truths.get(question)
    right = [truth is not None and truth.lower() in x.lower() for x in (a, b)]
    if right[0] != right[1]:
        return "The right fact decides. " + ("[[A]]" if right[0] else "[[B]]")
    loops = [_loops(a), _loops(b)]
    if loops[0] != loops[1]:
        return "One answer loops. " + ("[[B]]" if loops[0] else "[[A]]")
    return "Neither is better. [[C]]"


def scripted(behaviour: str, question: str, a: str, b: str, truths: dict[str, str] | None = None) -> str:
    if behaviour == "oracle":
        return oracle(truths or {}, question, a, b)
    if behaviour == "first":
        return "Assistant A answers first. [[A]]"
    if behaviour == "longer":
        return "[[A]]" if len(a) > len(b) else "[[B]]" if len(b) > len(a) else "[[C]]"
    if behaviour == "mute":
        return "Both answers are fine."
    fact = FACTS[question]
    right = [fact in a, fact in b]
    return "[[C]]" if right[0] == right[1] else "The right fact decides. [[A]]" if right[0] else "[[B]]"


@pytest.fixture
def judge_server() -> Iterator[dict]:
    """A real OpenAI-compatible chat-completions server on a loopback port; `state["behaviour"]` picks the judge,
    `state["fail_after"]` makes it answer 500 after that many requests, `state["requests"]` counts them."""
    state = {"behaviour": "fair", "requests": 0, "fail_after": None, "stall_after": None, "truths": {}}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(200, {"object": "list", "data": [{"id": "judge", "object": "model"}]})

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"] += 1
            if state["fail_after"] is not None and state["requests"] > state["fail_after"]:
                self._send(500, {"error": {"message": "judge overloaded"}})
                return
            if state["stall_after"] is not None and state["requests"] > state["stall_after"]:
                time.sleep(STALL_S)  # past the client's timeout: a server that took the request and went quiet
                return
            reply = scripted(state["behaviour"], *_answers(request["messages"][-1]["content"]), state["truths"])
            self._send(
                200,
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "judge",
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
                },
            )

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # the judge sends its prompts concurrently

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()


PAIRS = [
    Pair("What is the capital of France?", "The capital of France is Paris.", "It is Lyon."),
    Pair("What is 2 + 2?", "4", "2 + 2 is 5, as everyone knows."),
    Pair("Which planet is largest?", "Jupiter.", "The largest planet is Saturn, by far."),
]


STALL_S = 3.0


def _judge(state: dict, store=None, pairs=PAIRS, timeout: float = 10):
    return judge_pairs(pairs, ServedBackend(state["url"], "judge", max_retries=0, timeout=timeout), store)


def test_a_fair_judge_agrees_in_both_orders_and_picks_the_right_fact(judge_server):
    verdicts, counts = _judge(judge_server)
    assert [v.verdict for v in verdicts] == ["win", "win", "win"] and counts == {"cached": 0, "generated": 6}
    assert order_effects([v.first for v in verdicts], [v.second for v in verdicts]).flip_rate == 0.0
    assert "[The Start of Assistant A's Answer]" in MT_BENCH_USER


def test_an_always_first_judge_is_all_flips_and_ties(judge_server):
    judge_server["behaviour"] = "first"
    verdicts, _ = _judge(judge_server)
    effects = order_effects([v.first for v in verdicts], [v.second for v in verdicts])
    assert effects.flip_rate == 1.0 and effects.first_position_rate == 1.0
    assert [v.verdict for v in verdicts] == ["tie"] * 3 and all(v.flipped for v in verdicts)


def test_a_judge_preferring_length_prefers_the_longer_answer_in_both_orders(judge_server):
    judge_server["behaviour"] = "longer"
    verdicts, _ = _judge(judge_server)
    assert [v.verdict for v in verdicts] == ["win", "loss", "loss"]  # the longer answer each time, right or wrong
    longer = [len(p.candidate) - len(p.other) for p in PAIRS]
    assert [v.verdict == "win" for v in verdicts] == [d > 0 for d in longer]


def test_a_reply_without_a_verdict_is_counted_never_guessed(judge_server):
    judge_server["behaviour"] = "mute"
    verdicts, _ = _judge(judge_server)
    assert [v.verdict for v in verdicts] == [None] * 3 and win_rate([v.verdict for v in verdicts]).missing == 3


def test_verdicts_are_cached_and_a_judge_that_fails_half_way_resumes(judge_server, tmp_path):
    """Two prompts answered, then the server fails: one line, the two replies kept; the rerun against a healthy
    server asks only the four not answered, and a third run asks nothing."""
    store = AnswerCache(tmp_path / "answers")
    judge_server["fail_after"] = 2
    with pytest.raises(SftEvalError) as failed:
        _judge(judge_server, store)
    assert "\n" not in str(failed.value) and "judge overloaded" in str(failed.value), str(failed.value)
    judge_server.update(fail_after=None, requests=0)
    verdicts, counts = _judge(judge_server, store)
    assert counts == {"cached": 2, "generated": 4} and judge_server["requests"] == 4
    assert [v.verdict for v in verdicts] == ["win", "win", "win"]
    _, counts = _judge(judge_server, store)
    assert counts == {"cached": 6, "generated": 0} and judge_server["requests"] == 4


def test_a_judge_that_stalls_is_one_line_after_its_timeout_and_keeps_what_it_answered(judge_server, tmp_path):
    """Two prompts answered, then the server takes each request and says nothing: each waits out the client's
    timeout (1 s here), then one line; the two replies are kept and the rerun asks only the other four."""
    store = AnswerCache(tmp_path / "answers")
    judge_server["stall_after"] = 2
    with pytest.raises(SftEvalError) as stalled:
        _judge(judge_server, store, timeout=1.0)
    assert "\n" not in str(stalled.value) and "4 of 6" in str(stalled.value), str(stalled.value)
    judge_server.update(stall_after=None, requests=0)
    verdicts, counts = _judge(judge_server, store)
    assert counts == {"cached": 2, "generated": 4} and [v.verdict for v in verdicts] == ["win"] * 3


# -- [judge] in a recipe: the session's tiny run judged, nothing trained -----------------------------------------------
def _judged_pipeline(sft_pipeline, tiny_variant, url: str, extra: str = ""):
    from sft_eval.pipeline import Pipeline
    from sft_eval.recipe import load_recipe

    recipe = tiny_variant({"[eval]": f'[judge]\nkind = "chat"\nbase_url = "{url}"\nmax_retries = 0\n{extra}\n[eval]'})
    return Pipeline(load_recipe(recipe), sft_pipeline.cache, device="cpu")


def _truths(sft_pipeline) -> dict[str, str]:
    from sft_eval.judgement import CALIBRATION, read_calibration

    truths = {q.question: q.expected for q in sft_pipeline.questions if q.expected}
    for row in read_calibration(CALIBRATION):
        if row.kind == "fact":
            truths[row.pair.question] = row.pair.candidate if row.expected == "win" else row.pair.other
    return truths


def test_a_fair_judge_is_trusted_and_prefers_the_tuned_answers(sft_pipeline, tiny_variant, judge_server):
    """The oracle judge on the session's tiny run: right on every calibration pair, no flips, the tuned answers
    preferred beyond noise; the tiny base never stops, so every base answer is longer and the length-controlled
    win rate is not identifiable. The report's JSON holds it (the types read it back) and its page shows it."""
    from sft_eval.report import render_html
    from sft_eval.report.format import ReportData, conform

    judge_server.update(behaviour="oracle", truths=_truths(sft_pipeline))
    pipeline = _judged_pipeline(sft_pipeline, tiny_variant, judge_server["url"])
    judged = pipeline.assessment.judgement
    assert judged["trusted"] and judged["calibration"]["accuracy"] == 1.0 and judged["flip_rate"] == 0.0
    assert judged["win_rate"] > 0.5 and judged["low"] > 0.5, judged["win_rate"]
    assert judged["length_controlled_win_rate"] is None and "shorter" in judged["length_note"]
    checks = {c.name: c for c in pipeline.checks()}
    assert [checks[n].passed for n in ("judge.trusted", "judge.flip_rate", "judge.win_rate")] == [True] * 3
    context = pipeline.report_context()
    conform(json.loads(json.dumps(context)), ReportData, "sft_report.json")
    from pydantic import TypeAdapter

    TypeAdapter(ReportData).validate_json(json.dumps(context))  # the same types, read by pydantic: closed, strict
    assert '<section id="judge">' in render_html(context) and context["judge"]["cached"] == 0
    again = _judged_pipeline(sft_pipeline, tiny_variant, judge_server["url"])
    requests = judge_server["requests"]
    assert again.assessment.judgement["cached"] == 2 * (31 + 30) and judge_server["requests"] == requests


def test_an_always_first_judge_is_not_trusted_and_its_win_rate_not_judged(sft_pipeline, tiny_variant, judge_server):
    judge_server["behaviour"] = "first"
    pipeline = _judged_pipeline(sft_pipeline, tiny_variant, judge_server["url"])
    checks = {c.name: c for c in pipeline.checks()}
    assert checks["judge.trusted"].passed is False and "calibration pairs" in checks["judge.trusted"].message
    assert checks["judge.flip_rate"].passed is False and "100%" in checks["judge.flip_rate"].message
    assert checks["judge.win_rate"].passed is None and "not trusted" in checks["judge.win_rate"].message
    judged = pipeline.assessment.judgement
    assert judged["calibration"]["by_kind"] == {"fact": 0.0, "loop": 0.0, "padded": 1.0}  # all ties: right on padding


def test_a_judge_that_prefers_length_fails_its_calibration(sft_pipeline, tiny_variant, judge_server):
    """Preferring the longer answer picks the loop and the padding: not trusted, though it never flips."""
    judge_server["behaviour"] = "longer"
    judged = _judged_pipeline(sft_pipeline, tiny_variant, judge_server["url"]).assessment.judgement
    assert not judged["trusted"] and judged["flip_rate"] == 0.0
    assert judged["calibration"]["by_kind"]["loop"] == 0.0 and judged["calibration"]["by_kind"]["padded"] == 0.0


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ('[judge]\nkind = "critic"\n', '`judge.kind` must be "chat" or "reward"'),
        ('[judge]\nkind = "reward"\nbase_url = "http://x/v1"\n', "`judge.base_url` is for a chat judge"),
        ('[judge]\nkind = "reward"\ntie_margin = -1.0\n', "`judge.tie_margin` must be a number of at least 0"),
        ('[judge]\nkind = "chat"\n', '`judge.backend = "openai"` needs `judge.base_url`'),
        ('[judge]\nkind = "chat"\nbackend = "transformers"\n', "needs `judge.model`"),
        ('[judge]\nkind = "chat"\nbase_url = "http://x/v1"\nmax_retries = 99\n', "judge.max_retries"),
    ],
)
def test_a_bad_judge_section_is_one_line(section, says, tiny_variant, cli):
    recipe = tiny_variant({"[eval]": section + "[eval]"})
    cli.bad_input(cli.run("plan", "--recipe", str(recipe)), str(recipe), says)


def test_the_judge_walkthrough_runs_as_written(sft_pipeline, tiny_variant, judge_server, cli, tmp_path):
    """docs/judge.md's walkthrough: its `[judge]` block added to the tiny recipe (the scripted judge's URL in place of
    the one written), then its command: exit 0 with a fair judge, the report's Judge section written; exit 1 with
    a judge that always picks the first answer (not trusted)."""
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "judge.md").read_text(encoding="utf-8")
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    command = shlex.split(text.split("```bash\n", 1)[1].split("```", 1)[0].strip())
    assert "http://127.0.0.1:8000/v1" in block and command[:2] == ["sft-eval", "report"]
    block = block.replace("http://127.0.0.1:8000/v1", judge_server["url"])
    recipe = tiny_variant({"[eval]": block + "\n[eval]"}, name="judged.toml")
    args = [a.replace("judged.toml", str(recipe)).replace("reports/judged", str(tmp_path / "out")) for a in command[2:]]
    judge_server.update(behaviour="oracle", truths=_truths(sft_pipeline))
    env = {"SFT_EVAL_CACHE": str(sft_pipeline.cache.root)}
    result = cli.main("report", *args, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert '<section id="judge">' in (tmp_path / "out" / "sft_report.html").read_text(encoding="utf-8")
    judge_server["behaviour"] = "first"
    recipe.write_text(recipe.read_text().replace('kind = "chat"', 'kind = "chat"\nmodel = "judge"'))  # a new identity
    result = cli.main("report", *args, env=env)
    assert result.returncode == 1 and "judge.trusted" in result.stdout, result.stdout[-2000:]


def test_a_local_judge_is_loaded_here_and_a_reply_without_a_verdict_is_counted(
    sft_pipeline, tiny_variant, cli, tmp_path
):
    """`backend = "transformers"`: the judge is a chat model folder, loaded in this process (here the tiny tuned
    model, with a short prompt of the recipe's own: it writes no verdict marker, so every pair is counted without a
    verdict and the judge is not trusted). MT-Bench's prompt does not fit its 512-token context: one line naming
    the judge's budget."""
    from sft_eval.pipeline import Pipeline
    from sft_eval.recipe import load_recipe

    prompt = tmp_path / "short_judge_prompt.txt"
    prompt.write_text("Judge.\n---\n{question}\nA: {answer_a}\nB: {answer_b}\n", encoding="utf-8")
    folder = sft_pipeline.tuned_model_dir
    section = f'[judge]\nkind = "chat"\nbackend = "transformers"\nmodel = "{folder}"\nmax_new_tokens = 8\n'
    recipe = tiny_variant({"[eval]": section + f'prompt = "{prompt}"\n[eval]'})
    judged = Pipeline(load_recipe(recipe), sft_pipeline.cache, device="cpu").assessment.judgement
    assert judged["missing"] == judged["pairs"] == 31 and judged["win_rate"] is None and not judged["trusted"]
    assert judged["verdicts"][0]["replies"][0], "the judge wrote something, without a verdict marker"
    mt_bench = tiny_variant({"[eval]": section + "[eval]"}, name="mt_bench.toml")
    env = {"SFT_EVAL_CACHE": str(sft_pipeline.cache.root)}
    result = cli.main("report", "--recipe", str(mt_bench), "--out", str(mt_bench.parent / "out"), env=env)
    cli.bad_input(result, "judge: question", "judge.max_new_tokens = 8 exceeds the model's context of 512 tokens")


# -- judge win rates between runs, the same-family warning, the card's verdict ----------------------------------------
def test_compare_holds_judge_win_rates_paired_and_refuses_different_judges(
    sft_pipeline, tiny_variant, judge_server, cli, tmp_path
):
    """Two reports judged by the same (oracle) judge: the same run is no change in `judge win rate`; a run whose
    tuned answers all lost is a regression, by the paired bootstrap over the questions (ties half), recomputed
    here; the same report judged by another judge is refused in one line, exit 2."""
    from sft_eval.compare import compare_outcomes, outcomes_from_report
    from sft_eval.report import read_report_json, write_report

    judge_server.update(behaviour="oracle", truths=_truths(sft_pipeline))
    context = _judged_pipeline(sft_pipeline, tiny_variant, judge_server["url"]).report_context()
    write_report(context, tmp_path / "accepted")
    accepted = tmp_path / "accepted" / "sft_report.json"
    data = json.loads(accepted.read_text(encoding="utf-8"))
    for verdict in data["judge"]["verdicts"]:
        verdict["verdict"] = "loss"
    lost = tmp_path / "lost.json"
    lost.write_text(json.dumps(data), encoding="utf-8")
    same = cli.main("compare", str(accepted), str(accepted), "--json")
    assert same.returncode == 0, same.stderr
    metric = next(m for m in json.loads(same.stdout)["metrics"] if m["metric"] == "judge win rate")
    assert metric["verdict"] == "no change" and metric["difference"] == 0.0
    worse = cli.main("compare", str(accepted), str(lost), "--json")
    metric = next(m for m in json.loads(worse.stdout)["metrics"] if m["metric"] == "judge win rate")
    assert worse.returncode == 1 and metric["verdict"] == "regression", worse.stdout[-2000:]
    scores = {"win": 1.0, "tie": 0.5, "loss": 0.0}
    before = [scores[v["verdict"]] for v in context["judge"]["verdicts"]]
    assert metric["baseline"] == pytest.approx(float(np.mean(before))) and metric["candidate"] == 0.0
    comparison = compare_outcomes(outcomes_from_report(read_report_json(accepted)), outcomes_from_report(data))
    assert [m.metric for m in comparison.regressions].count("judge win rate") == 1
    data["judge"]["judge"] = "another judge at http://elsewhere/v1"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data), encoding="utf-8")
    cli.bad_input(cli.main("compare", str(accepted), str(other)), "not comparable", "another judge")


def test_a_chat_judge_of_the_judged_models_family_is_a_warning(tmp_path):
    """A local judge folder whose config says `llama` judging the tiny Llama models warns; a served judge named
    `Qwen/Qwen2.5-7B-Instruct` judging a Qwen3 fine-tune warns; another family, or a reward judge, does not."""
    from sft_eval.judgement import family, same_family
    from sft_eval.recipe import JudgeSection, load_recipe

    recipe = load_recipe(DEFAULT_RECIPE)
    folder = tmp_path / "judge"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}), encoding="utf-8")
    local = JudgeSection(kind="chat", backend="transformers", model=str(folder))
    assert "family (llama)" in same_family(local, recipe, ["tiny", "llama"])
    assert same_family(local, recipe, ["Qwen3-0.6B-Base", "qwen3"]) == ""
    served = JudgeSection(kind="chat", base_url="http://127.0.0.1:1/v1", model="Qwen/Qwen2.5-7B-Instruct")
    assert "family (qwen)" in same_family(served, recipe, ["Qwen/Qwen3-0.6B-Base", "qwen3"])
    assert same_family(JudgeSection(kind="reward"), recipe, ["llama"]) == ""
    assert [family(n) for n in ("Qwen3-0.6B", "qwen3", "/models/SmolLM2-135M/", "")] == ["qwen", "qwen", "smollm", ""]


def test_each_answer_card_carries_the_judges_verdict(sft_pipeline, tiny_variant, judge_server):
    """The card payload gives each card the judge's verdict and both orders' replies; the page's script draws it."""
    from sft_eval.report import card_payload

    judge_server.update(behaviour="oracle", truths=_truths(sft_pipeline))
    context = _judged_pipeline(sft_pipeline, tiny_variant, judge_server["url"]).report_context()
    cards = card_payload(context)["cards"]
    verdicts = context["judge"]["verdicts"]
    assert [c["j"]["v"] for c in cards] == [v["verdict"] for v in verdicts]
    assert all(len(c["j"]["r"]) == 2 for c in cards) and "[[" in cards[0]["j"]["r"][0]
    script = Path(__file__).resolve().parent.parent / "sft_eval" / "report" / "templates" / "cards.js"
    assert "judge: tuned " in script.read_text(encoding="utf-8")
    del context["judge"]
    assert "j" not in card_payload(context)["cards"][0]


def test_with_a_baseline_model_the_tuned_answers_are_judged_against_it_too(sft_pipeline, tiny_variant, judge_server):
    """`[model] baseline` with a `[judge]`: the same judge holds the tuned answers against the baseline's as well.
    The baseline here is the tuned model itself: every answer is the same, so the oracle judge ties every pair
    (win rate exactly one half), while against the base nothing changes; the report shows both."""
    from sft_eval.pipeline import Pipeline
    from sft_eval.recipe import load_recipe
    from sft_eval.report import render_html

    judge_server.update(behaviour="oracle", truths=_truths(sft_pipeline))
    edits = {
        "[eval]": f'[judge]\nkind = "chat"\nbase_url = "{judge_server["url"]}"\nmax_retries = 0\n\n[eval]',
        'chat_template = "chatml"': f'chat_template = "chatml"\nbaseline = "{sft_pipeline.tuned_model_dir}"',
    }
    pipeline = Pipeline(load_recipe(tiny_variant(edits)), sft_pipeline.cache, device="cpu")
    against = pipeline.assessment.judgement_baseline
    assert against["against"] == "baseline" and against["ties"] == against["pairs"] == 31
    assert against["win_rate"] == 0.5 and against["calibration"]["accuracy"] == 1.0
    assert pipeline.assessment.judgement["against"] == "base" and pipeline.assessment.judgement["low"] > 0.5
    context = pipeline.report_context()
    assert context["judge_baseline"] == against
    assert "Against <code>[model] baseline</code>, the same judge" in render_html(context)
