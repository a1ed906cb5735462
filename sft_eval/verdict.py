"""One verdict wherever thresholds are judged: the recipe's thresholds, the loss and plan checks and the audit's
errors, each a named `Check` that passed, failed or could not be judged, with the message a failure shows.

The suites assert on these checks (each test on its own), and `sft-eval report` judges all of them, shows them
in its Verdict section and exits 1 when one fails: the two cannot disagree, because there is one function.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from sft_eval import schema
from sft_eval.audit import Finding
from sft_eval.recipe import Thresholds
from sft_eval.records import TrainingRun, loss_problems, plan_problems, unjudged_loss
from sft_eval.sanity import Evaluation, Score
from sft_eval.scoring import Signals
from sft_eval.section_checks import bench_level_name
from sft_eval.toolcalls import ToolSummary


@dataclass(frozen=True)
class Check:
    name: str  # a stable id: "responses.match_rate", "training.loss", "audit.errors", ...
    passed: bool | None  # None: not judged here (no expected answers, too few losses logged)
    message: str  # what failed, or why it was not judged; "" when it passed

    def to_dict(self) -> schema.Check:
        return schema.Check(name=self.name, passed=self.passed, message=self.message)


def _listing(scores: list[Score], failing) -> str:
    rows = [s for s in scores if failing(s)]
    return "\n".join(f"  {s.question!r}: got {s.answer[:60]!r}, expected {s.expected!r}" for s in rows[:10])


def _judged(name: str, ok: bool, failure: str) -> Check:
    """A judged check: `failure` is its message when it failed, nothing when it passed."""
    return Check(name, ok, "" if ok else failure)


def _per_answer(name: str, failing: list[Score], head: str, item) -> Check:
    """A check every tuned answer must pass: `head` and up to five failing answers as `item` shows each."""
    return _judged(name, not failing, head + "; ".join(item(s) for s in failing[:5]))


def response_checks(thresholds: Thresholds, evaluation: Evaluation, eos_token: str) -> dict[str, Check]:
    """The answers against the thresholds: match rate, stop rate at the end-of-turn token (`eos_token`), the base
    not stopping like a chat model, no looping, no leaked markers, no empty answers."""
    tuned, base = evaluation.tuned_summary, evaluation.base_summary
    scores = evaluation.tuned_scores
    if tuned.match_rate is None:
        match = Check(
            "responses.match_rate",
            None,
            "the recipe's questions have no expected answers (add questions_file with `expected`)",
        )
    else:
        match = _judged(
            "responses.match_rate",
            tuned.match_rate >= thresholds.min_match_rate,
            f"tuned model matched {tuned.match_rate:.0%} of {tuned.checkable} checkable questions, the recipe asks "
            f"for {thresholds.min_match_rate:.0%}; misses:\n" + _listing(scores, lambda s: s.matched is False),
        )
    if tuned.mean_chrf is None:
        similarity = Check("responses.chrf", None, "the recipe's questions have no expected answers")
    else:
        low = sorted((s for s in scores if s.chrf is not None), key=lambda s: s.chrf or 0.0)[:10]
        similarity = _judged(
            "responses.chrf",
            tuned.mean_chrf >= thresholds.min_chrf,
            f"tuned answers' mean chrF against the expected answers is {tuned.mean_chrf:.1f}, the recipe asks for "
            f"{thresholds.min_chrf:g}; the lowest:\n"
            + "\n".join(
                f"  {s.question!r}: chrF {s.chrf:.1f}, got {s.answer[:60]!r}, expected {s.expected!r}" for s in low
            ),
        )
    looping = [s for s in scores if s.repetition > thresholds.max_repetition]
    empty = [s for s in scores if s.empty]
    checks = [
        match,
        similarity,
        _judged(
            "responses.eos_stop_rate",
            tuned.eos_stop_rate >= thresholds.min_eos_stop_rate,
            f"tuned model ended {tuned.eos_stop_rate:.0%} of answers with {eos_token!r}, the recipe asks for "
            f"{thresholds.min_eos_stop_rate:.0%}; answers that ran on:\n"
            + _listing(scores, lambda s: not s.stopped_at_eos),
        ),
        _judged(
            "responses.base_eos_stop_rate",
            base.eos_stop_rate <= thresholds.max_base_eos_stop_rate,
            f"base model ended {base.eos_stop_rate:.0%} of answers with {eos_token!r}; a base model should do so on "
            f"at most {thresholds.max_base_eos_stop_rate:.0%}: the before/after comparison means nothing",
        ),
        _per_answer(
            "responses.repetition",
            looping,
            f"{len(looping)} tuned answers repeat more than {thresholds.max_repetition:.0%}: ",
            lambda s: f"{s.question!r}: {s.repetition:.0%} in {s.answer[:60]!r}",
        ),
        _per_answer(
            "responses.leaks",
            [s for s in scores if s.leaks],
            "tuned answers leak template markers: ",
            lambda s: f"{s.question!r}: {s.leaks} in {s.answer[:60]!r}",
        ),
        _per_answer("responses.empty", empty, f"{len(empty)} tuned answers are empty: ", lambda s: repr(s.question)),
    ]
    return {c.name: c for c in checks}


def training_checks(thresholds: Thresholds, run: TrainingRun) -> dict[str, Check]:
    """The loss fell and stayed finite; the trainer did what the recipe planned."""
    reason = unjudged_loss(run)
    problems = [] if reason else loss_problems(run, thresholds.min_loss_drop)
    loss = Check("training.loss", None if reason else not problems, reason or "; ".join(problems))
    if not run.log_history and run.source:
        plan = Check("training.plan", None, run.source)
    else:
        mismatches = plan_problems(run)
        plan = _judged("training.plan", not mismatches, "; ".join(mismatches))
    return {c.name: c for c in (loss, plan)}


def signal_checks(thresholds: Thresholds, signals: Signals) -> dict[str, Check]:
    """The teacher-forced signals and the answers' length against the thresholds; a signal the recipe gives
    nothing to measure on is not judged, and says what would give it."""
    drop = signals.eval_loss_drop
    if signals.unscored:
        held = Check("signals.eval_loss", None, signals.unscored)
    elif drop is None:
        held = Check("signals.eval_loss", None, "no held-out rows: set `data.eval` or `data.eval_fraction`")
    else:
        base, tuned = signals.loss("held_out") or (math.nan, math.nan)  # scored: the drop is known
        held = _judged(
            "signals.eval_loss",
            drop >= thresholds.min_eval_loss_drop,
            f"held-out loss {base:.3f} (base) -> {tuned:.3f} (tuned) nats/token on {len(signals.held_out)} rows "
            f"({signals.held_out_source}): a {drop:.1%} drop, the recipe asks for {thresholds.min_eval_loss_drop:.0%}",
        )
    ratio = signals.forgetting
    if signals.unscored:
        forgetting = Check("signals.forgetting", None, signals.unscored)
    elif ratio is None:
        forgetting = Check("signals.forgetting", None, "no general text: set `eval.general_text`")
    else:
        base, tuned = signals.loss("general") or (math.nan, math.nan)  # scored: the ratio is known
        forgetting = _judged(
            "signals.forgetting",
            ratio <= thresholds.max_forgetting,
            f"general-text loss {base:.3f} (base) -> {tuned:.3f} (tuned) nats/token on {len(signals.general)} "
            f"documents: {ratio:.2f}x the base's, the recipe allows {thresholds.max_forgetting:g}x",
        )
    if not signals.expected:
        why = signals.unscored or "no question has an `expected` answer"
        expected = Check("signals.expected_likelihood", None, why)
    else:
        fell = [r for r in signals.expected if r.rise > thresholds.max_expected_nll_rise]
        expected = _judged(
            "signals.expected_likelihood",
            not fell,
            f"the expected answer became less likely under the tuned model on {len(fell)} of "
            f"{len(signals.expected)} questions (more than {thresholds.max_expected_nll_rise:g} nats/token): "
            + "; ".join(f"{r.label!r}: {r.base:.2f} -> {r.tuned:.2f}" for r in sorted(fell, key=lambda r: -r.rise)[:5]),
        )
    lengths = signals.lengths
    ratio = None if lengths is None else lengths.ratio
    if lengths is None or ratio is None:
        length = Check("signals.length", None, "no tuned answers or no training answers to compare lengths")
    else:
        limit = thresholds.max_length_ratio
        tuned, training = statistics.median(lengths.tuned), statistics.median(lengths.training)
        length = _judged(
            "signals.length",
            1 / limit <= ratio <= limit,
            f"tuned answers' median length {tuned:g} tokens is {ratio:.2f}x the training answers' {training:g} "
            f"(the recipe allows {1 / limit:.2f}x to {limit:g}x): the model learned to be "
            + ("terse" if ratio < 1 else "long-winded, or never to stop early"),
        )
    return {c.name: c for c in (held, forgetting, expected, length)}


def tool_checks(thresholds: Thresholds, tuned: ToolSummary, base: ToolSummary | None = None) -> dict[str, Check]:
    """The tuned model's calls on the recipe's tool items: a call a caller can execute (the expected tool, arguments
    its schema accepts) on at least `min_tool_call_rate` of the items expecting one, and exactly the expected call on
    `min_tool_call_exact` (0: not judged). The base's rates are quoted beside."""
    if not tuned.calls:
        why = "no tool item expects a call"
        return {name: Check(name, None, why) for name in ("tools.call", "tools.call_exact")}
    rates = (
        f"(a call at all: {tuned.has_call:.0%}, the expected tool: {tuned.name:.0%}, valid arguments: "
        f"{tuned.valid:.0%}, exact: {tuned.exact:.0%}"
        + (f"; the base's executable calls: {base.callable:.0%}" if base is not None else "")
        + ")"
    )
    exact = (
        Check("tools.call_exact", None, "min_tool_call_exact is 0: exact calls are not judged")
        if thresholds.min_tool_call_exact <= 0
        else _judged(
            "tools.call_exact",
            tuned.exact >= thresholds.min_tool_call_exact,
            f"the tuned model made exactly the expected call on {tuned.exact:.0%} of {tuned.calls} items, the "
            f"recipe asks for {thresholds.min_tool_call_exact:.0%} {rates}",
        )
    )
    return {
        "tools.call": _judged(
            "tools.call",
            tuned.callable >= thresholds.min_tool_call_rate,
            f"the tuned model made an executable call to the expected tool on {tuned.callable:.0%} of {tuned.calls} "
            f"items, the recipe asks for {thresholds.min_tool_call_rate:.0%} {rates}",
        ),
        "tools.call_exact": exact,
    }


def audit_check(findings: list[Finding]) -> Check:
    errors = [f for f in findings if f.severity == "error"]
    return _judged(
        "audit.errors",
        not errors,
        f"{len(errors)} audit error(s): " + "; ".join(f"{f.check}: {f.message}" for f in errors[:5]),
    )


def judge_checks(thresholds: Thresholds, judged: schema.JudgeData) -> dict[str, Check]:
    """The judge's three checks: `judge.trusted` (its calibration accuracy reaches `min_judge_calibration`),
    `judge.flip_rate` (its verdicts change with the order on at most `max_judge_flip_rate` of the pairs) and
    `judge.win_rate` (the tuned answers win at least `min_judge_win_rate`, ties half; not judged when the judge is
    not trusted: its verdicts are shown, not believed)."""
    calibration = judged["calibration"]
    kinds = ", ".join(f"{k} {v:.0%}" for k, v in calibration["by_kind"].items())
    trusted = _judged(
        "judge.trusted",
        judged["trusted"],
        f"the judge ({judged['judge']}) is right on {calibration['accuracy']:.0%} of {calibration['pairs']} "
        f"calibration pairs ({kinds}), the recipe asks for {thresholds.min_judge_calibration:.0%}: its verdicts "
        "are shown and not judged",
    )
    flips = judged["flip_rate"]
    flip = (
        Check(
            "judge.flip_rate",
            None,
            "a reward judge scores each answer alone: it has no order to flip with"
            if judged["kind"] == "reward"
            else "no pair has a verdict in both orders",
        )
        if flips is None
        else _judged(
            "judge.flip_rate",
            flips <= thresholds.max_judge_flip_rate,
            f"the judge's verdict changed with the order on {flips:.0%} of the pairs (first-position rate "
            f"{judged['first_position_rate'] or 0:.0%}), the recipe allows {thresholds.max_judge_flip_rate:.0%}",
        )
    )
    rate = judged["win_rate"]
    if not judged["trusted"]:
        win = Check("judge.win_rate", None, "not judged: the judge is not trusted (judge.trusted)")
    elif rate is None:
        win = Check("judge.win_rate", None, f"the judge gave no verdict on any of the {judged['pairs']} pairs")
    else:
        win = _judged(
            "judge.win_rate",
            rate >= thresholds.min_judge_win_rate,
            f"the judge prefers the tuned answer on {rate:.0%} of {judged['pairs']} pairs (ties half; 95% interval "
            f"{judged['low'] or 0:.0%} to {judged['high'] or 0:.0%}, {judged['missing']} without a verdict), the "
            f"recipe asks for {thresholds.min_judge_win_rate:.0%}",
        )
    return {c.name: c for c in (trusted, flip, win)}


def bench_checks(thresholds: Thresholds, served: dict[str, Any]) -> list[Check]:
    """`sft-eval bench --served`'s result against the recipe's thresholds, at every concurrency level: `bench.ttft`
    (TTFT p99 at most `max_ttft_p99_ms`), `bench.tpot` (TPOT p50 at most `max_tpot_p50_ms`), `bench.goodput` (at
    least `min_goodput` requests/s meeting `[bench] targets`), and `bench.failed` (no request failed). A threshold
    of 0 is not judged."""
    checks = []
    for level in served["results"]:
        at = f"at {bench_level_name(level)}"
        failed = level["failed"]
        said = "; ".join(level["errors"])
        checks.append(
            _judged("bench.failed", not failed, f"{failed} of {level['requests']} requests failed {at}: {said}")
        )
        for name, value, limit, unit in (
            ("bench.ttft", level["ttft_ms"]["p99"], thresholds.max_ttft_p99_ms, "TTFT p99"),
            ("bench.tpot", level["tpot_ms"]["p50"], thresholds.max_tpot_p50_ms, "TPOT p50"),
        ):
            if limit:
                held = value is not None and value <= limit
                shown = "none measured" if value is None else f"{value:.1f} ms"
                checks.append(_judged(name, held, f"{unit} {at}: {shown}, the recipe allows {limit:g} ms"))
        if thresholds.min_goodput:
            goodput = level["goodput_requests_per_s"]
            if goodput is None:
                checks.append(Check("bench.goodput", None, f"no `[bench] targets` to measure goodput against {at}"))
            else:
                held = goodput >= thresholds.min_goodput
                message = f"goodput {at}: {goodput:.2f} requests/s, the recipe asks for {thresholds.min_goodput:g}"
                checks.append(_judged("bench.goodput", held, message))
    return checks


def judge(
    thresholds: Thresholds,
    evaluation: Evaluation,
    run: TrainingRun,
    findings: list[Finding],
    eos_token: str,
    signals: Signals | None = None,
    tools: tuple[ToolSummary, ToolSummary] | None = None,
    judged: schema.JudgeData | None = None,
) -> list[Check]:
    """Every check the suites hold a run to, in one list (what `sft-eval report` shows and exits by). `tools`: the
    tuned and the base model's tool-call summaries, where the recipe has tool items; `judged`: the `[judge]`'s
    verdicts, where the recipe names one."""
    return [
        audit_check(findings),
        *training_checks(thresholds, run).values(),
        *response_checks(thresholds, evaluation, eos_token).values(),
        *(signal_checks(thresholds, signals).values() if signals is not None else ()),
        *(tool_checks(thresholds, *tools).values() if tools is not None else ()),
        *(judge_checks(thresholds, judged).values() if judged is not None else ()),
    ]


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.passed is False]
