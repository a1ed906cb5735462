"""A comparison for a person: text lines for the terminal, GitHub-flavoured Markdown for `$GITHUB_STEP_SUMMARY`.

Renders what `compare.compare_outcomes` returns (plain data in, text out): the verdict, each metric with its effect,
interval, p-values, flips and what it could not have seen. Quoted questions are made safe for Markdown.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from sft_eval.compare import EXPECTED_NLL_MARGIN, Comparison, shown, worse_word
from sft_eval.errors import SftEvalError

SHOWN_FLIPS = 10  # questions the text lists per flip direction (the JSON lists them all)


def _listed(questions: list[str], limit: int = SHOWN_FLIPS) -> str:
    shown = ", ".join(repr(q[:60] + ("..." if len(q) > 60 else "")) for q in questions[:limit])
    return shown + (f" and {len(questions) - limit} more" if len(questions) > limit else "")


def describe(comparison: Comparison) -> list[str]:
    """The comparison as text lines: the verdict, then each metric with its effect, interval, p-values and flips."""
    c = comparison
    lines = [
        f"baseline {c.baseline}",
        f"candidate {c.candidate}",
        f"{c.questions} question(s) paired by {c.paired_by}; alpha {c.alpha} after Holm-Bonferroni over "
        f"{len(c.metrics)} metrics; gate: {c.gate}",
    ]
    for m in c.metrics:
        if m.not_a_number:
            lines.append(
                f"{m.verdict.upper()} {m.metric}: {len(m.not_a_number)} of {m.questions} question(s) have a score "
                f"that is not a number (NaN or infinite) on a side, so no statistic is computed: "
                f"{_listed(m.not_a_number)}"
            )
            continue
        lines.append(
            f"{m.verdict.upper() if m.verdict == 'regression' else m.verdict:11} {m.metric}: {m.baseline:.3f} -> "
            f"{m.candidate:.3f} ({m.difference:+.3f}, 95% interval {m.low:+.3f} to {m.high:+.3f}; {m.test} "
            f"p={m.p_value:.3g}, Holm p={m.p_holm:.3g}; {m.better} is better)"
        )
        if m.pass_to_fail:
            lines.append(f"            pass -> fail ({len(m.pass_to_fail)}): {_listed(m.pass_to_fail)}")
        if m.fail_to_pass:
            lines.append(f"            fail -> pass ({len(m.fail_to_pass)}): {_listed(m.fail_to_pass)}")
        if m.worse:
            lines.append(f"            worse by over {EXPECTED_NLL_MARGIN:g} ({len(m.worse)}): {_listed(m.worse)}")
        if m.margin is not None and m.drop_bound is not None and c.gate == "non-inferiority":
            within = "within" if m.drop_bound <= m.margin else "not within"
            bound = f"{_one_sided(c.alpha)} bound of the {worse_word(m.better)} {shown(m.metric, m.drop_bound)}"
            lines.append(f"            {bound}: {within} the margin {shown(m.metric, m.margin)}")
        lines.append(f"            {m.detectable}")
    tokens = c.new_tokens
    lines.append(f"new tokens per answer: {tokens['baseline']:.1f} -> {tokens['candidate']:.1f} (shown, not tested)")
    for side, missing in (("baseline", c.only_in_baseline), ("candidate", c.only_in_candidate)):
        if missing:
            lines.append(f"only in the {side}, not compared ({len(missing)}): {_listed(missing)}")
    for side, extra in c.repeated.items():
        if extra:
            lines.append(f"asked again in the {side}, the extra answer not compared ({len(extra)}): {_listed(extra)}")
    lines.append(_verdict_line(c))
    return lines


def _verdict_line(c: Comparison) -> str:
    """The last line: what failed, by kind, or what passed."""
    failed = [
        (kind, ", ".join(m.metric for m in metrics))
        for kind, metrics in (
            ("regression", c.regressions),
            ("not shown non-inferior", c.not_shown_within),
            ("not comparable (a score that is not a number)", c.not_comparable),
        )
        if metrics
    ]
    if failed:
        return "; ".join(f"{kind}: {names}" for kind, names in failed)
    improved = ", ".join(m.metric for m in c.improvements)
    return c.verdict + (f"; improved: {improved}" if improved else "")


def _one_sided(alpha: float) -> str:
    return f"one-sided {100 * (1 - alpha):g}%"


def code_span(text: str) -> str:
    """`text` as one inline code span of GitHub-flavoured Markdown, whatever it holds: fenced by one backtick more
    than its longest run of backticks (CommonMark), padded with a space where it starts or ends with one, on one
    line. Inside a code span nothing is markup: a question holding `<img>` or a link is shown, never rendered."""
    flat = " ".join(text.split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", flat)), default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def markdown(comparison: Comparison) -> str:
    """The verdict as GitHub-flavoured Markdown (for `$GITHUB_STEP_SUMMARY`)."""
    c = comparison
    head = f"regression in {', '.join(m.metric for m in c.regressions)}" if c.regressions else _verdict_line(c)
    rows = [
        f"| {m.metric} | – | – | {len(m.not_a_number)} score(s) not a number | – | – | – | {m.verdict} |"
        if m.not_a_number
        else f"| {m.metric} | {m.baseline:.3f} | {m.candidate:.3f} | {m.difference:+.3f} [{m.low:+.3f}, {m.high:+.3f}] "
        f"| {m.test} {m.p_value:.3g} | {m.p_holm:.3g} | {len(m.pass_to_fail)} / {len(m.fail_to_pass)} | {m.verdict} |"
        for m in c.metrics
    ]
    flips = [
        f"- **{m.metric}** pass -> fail: " + ", ".join(code_span(q[:80]) for q in m.pass_to_fail)
        for m in c.metrics
        if m.pass_to_fail
    ] + [
        f"- **{m.metric}** worse by over {EXPECTED_NLL_MARGIN:g}: " + ", ".join(code_span(q[:80]) for q in m.worse)
        for m in c.metrics
        if m.worse
    ]
    return "\n".join(
        [
            f"### sft-eval compare: {head}",
            "",
            f"{code_span(c.candidate)} against {code_span(c.baseline)}: {c.questions} questions paired by "
            f"{c.paired_by}, alpha {c.alpha} after Holm-Bonferroni; gate: {c.gate}.",
            "",
            "| metric | baseline | candidate | difference [95% interval] | p | Holm p | pass->fail / fail->pass "
            "| verdict |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            *flips,
            "",
            "What it could not have seen (80% power, before Holm):",
            "",
            *[f"- **{m.metric}**: {m.detectable}" for m in c.metrics if m.detectable],
            *(
                [f"- only in one side, not compared: {len(c.only_in_baseline) + len(c.only_in_candidate)} question(s)"]
                if c.only_in_baseline or c.only_in_candidate
                else []
            ),
            "",
        ]
    )


def write_step_summary(comparison: Comparison, environ: Iterable[tuple[str, str]] | None = None) -> Path | None:
    """Append the Markdown verdict to `$GITHUB_STEP_SUMMARY` where GitHub Actions sets it; the path, or None."""
    summary = dict(environ if environ is not None else os.environ.items()).get("GITHUB_STEP_SUMMARY")
    if not summary:
        return None
    path = Path(summary)
    try:
        with path.open("a", encoding="utf-8") as out:
            out.write(markdown(comparison) + "\n")
    except OSError as exc:
        raise SftEvalError(f"GITHUB_STEP_SUMMARY: cannot append to {path}: {exc.strerror or exc}") from None
    return path
