"""The before/after report: one self-contained HTML file (and the same data as JSON) a reviewer can audit.

`build_context` turns the stages' plain records (recipe, training record, evaluation, findings, speed) into
JSON-able data; `write_report` renders it with the package's Jinja2 templates, autoescaped, so a question or
answer containing markup shows as text, and writes the JSON beside it; `render_json` renders the HTML again
from that JSON alone. This package imports nothing that trains or generates: it cannot start a run.

A report section of one's own is a `Section` (an id, a title and a Jinja template over the report's data)
added with `register_section`; it is rendered after the built-in sections, from the same data.
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import hashlib
import json
import math
import platform
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal, cast

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from sft_eval import schema
from sft_eval.audit import Finding
from sft_eval.cache import library_versions, writable_folder, write_atomic
from sft_eval.jsonout import dumps
from sft_eval.recipe import Recipe
from sft_eval.records import Answer, TrainingRun, loss_drop, loss_problems, plan_problems
from sft_eval.registry import Registry
from sft_eval.report.reader import check_report as check_report  # the reader's, named here as before
from sft_eval.report.reader import read_report_json as read_report_json
from sft_eval.sanity import Evaluation, by_category, summarise
from sft_eval.schema import REPORT_FORMAT, ReportData

HTML_NAME = "sft_report.html"
JSON_NAME = "sft_report.json"


@dataclasses.dataclass(frozen=True)
class Section:
    """A report section: `template` is Jinja source rendered with the report's data (autoescaped), shown under
    `title` in `<section id="{id}">` after the built-in sections."""

    id: str
    title: str
    template: str


# The built-in sections' ids (report.html.j2's `<section id>`s) are reserved: a section of one's own taking one
# would put two elements of that id on the page.
BUILT_IN_SECTIONS = (
    "verdict",
    "baseline",
    "summary",
    "categories",
    "signals",
    "judge",
    "served",
    "tools",
    "audit",
    "training",
    "answers",
    "speed",
    "data",
    "recipe",
)
SECTIONS = Registry("report section", reserved=dict.fromkeys(BUILT_IN_SECTIONS, "a built-in report section"))


def register_section(section: Section) -> None:
    """Add a section every report renders from now on. An id taken (a built-in section's, another
    registration's) is a ValueError naming both owners."""
    SECTIONS.register(section.id, section)


def build_context(
    *,
    recipe: Recipe,
    run: TrainingRun,
    evaluation: Evaluation,
    findings: list[Finding],
    data_preview: list[list[str]] | None = None,
    provenance: dict[str, Any] | None = None,
    outcomes: schema.Outcomes | None = None,
    speed: dict[str, float] | None = None,
    checks: list[schema.Check] | None = None,
    against_baseline: schema.ComparisonData | None = None,
    signals: schema.SignalsData | None = None,
    tools: schema.ToolReport | None = None,
    judge: schema.JudgeData | None = None,
    judge_baseline: schema.JudgeData | None = None,
) -> ReportData:
    """Everything the report shows, as JSON-able data (its format: `schema.ReportData`), from the stages'
    records. `checks`: the run judged against its thresholds (`verdict.judge`), what the Verdict shows outside a
    pytest run. `against_baseline`: the tuned model against a previous report's (`compare.Comparison.to_dict()`),
    for its own section. `signals`: the teacher-forced signals and answer lengths (`scoring.Signals.to_dict()`), for
    the Quality signals section. `tools`: the tool items asked of both models (`toolcalls.report_data`), for the
    Tool calls section."""
    likelihood = {r["label"]: r for r in signals["expected"]} if signals else {}
    others = [name for name in evaluation.models if name not in ("base", "tuned")]  # a baseline model, say
    summary = schema.Summaries(base=evaluation.base_summary.to_dict(), tuned=evaluation.tuned_summary.to_dict())
    if others:
        summary["others"] = {name: evaluation.summary(name).to_dict() for name in others}
    losses: list[tuple[int, float | None]] = list(run.losses())
    return ReportData(
        format=REPORT_FORMAT,
        title=f"sft-eval report: {recipe.name}",
        models=evaluation.models,
        outcomes=outcomes,
        checks=checks or [],
        against_baseline=against_baseline,
        signals=signals,
        recipe=recipe.fingerprint(),
        recipe_path=str(recipe.path) if recipe.path else None,
        environment={
            **library_versions(),
            "jinja2": version("jinja2"),
            "python": platform.python_version(),
            **(provenance or {}),
        },
        audit=[f.to_dict() for f in findings],
        data_preview=data_preview or [],
        training=schema.Training(
            losses=losses,
            loss_drop=loss_drop(run),
            # non-finite losses and grad norms (null in this JSON, which never writes NaN) and a loss that fell short
            problems=loss_problems(run, recipe.thresholds.min_loss_drop),
            global_step=run.global_step,
            train_rows=run.train_rows,
            train_runtime_s=run.train_runtime_s,
            adjustments=run.adjustments,
            plan=run.plan().to_dict(),
            plan_mismatches=plan_problems(run),
            source=run.source,
            peft=run.peft,
            steps=run.steps,
        ),
        summary=summary,
        comparison=[d.to_dict() for d in evaluation.comparison()],
        categories=category_rows(evaluation, likelihood),
        # every `[thresholds]` key (tests/test_report_format.py holds ThresholdsData to `recipe.Thresholds`)
        thresholds=cast(schema.ThresholdsData, dataclasses.asdict(recipe.thresholds)),
        cards=[_card(r, likelihood, others) for r in evaluation.records],
        speed=dict(speed) if speed else None,
        tools=tools,
        judge=judge,
        judge_baseline=judge_baseline,
    )


def _card(record: Any, likelihood: dict[str, schema.RowLossData], others: list[str]) -> schema.Card:
    """One question's card: every model's answer, the badges and the word diff from the base's to the tuned."""
    question = record.question
    card = schema.Card(
        question=question.question,
        id=question.id,
        expected=question.expected,
        category=question.category,
        base=_side(record.base, record.base_score),
        tuned=_side(record.tuned, record.tuned_score),
        diff=word_diff(record.base.text, record.tuned.text),
    )
    if question.cluster:
        card["cluster"] = question.cluster
    if question.question in likelihood:
        row = likelihood[question.question]
        card["expected_nll"] = schema.ExpectedNll(base=row["base"], tuned=row["tuned"])
    if others:
        card["others"] = {name: _side(record.answer(name), record.score(name)) for name in others}
    return card


def category_rows(evaluation: Evaluation, likelihood: dict[str, schema.RowLossData]) -> list[schema.Category]:
    """Every metric per question category (when the questions carry more than one): the summaries of both models
    and the mean expected-answer NLL, so a regression hidden in one category shows."""
    groups = by_category(evaluation.records)
    if len(groups) < 2:
        return []
    rows = []
    for category, records in groups.items():
        nll = [likelihood[r.question.question] for r in records if r.question.question in likelihood]
        mean = schema.ExpectedNll(
            base=sum(n["base"] for n in nll) / len(nll) if nll else 0.0,
            tuned=sum(n["tuned"] for n in nll) / len(nll) if nll else 0.0,
        )
        rows.append(
            schema.Category(
                category=category or "(none)",
                questions=len(records),
                base=summarise([r.base_score for r in records]).to_dict(),
                tuned=summarise([r.tuned_score for r in records]).to_dict(),
                expected_nll=mean if nll else None,
            )
        )
    return rows


def _side(answer: Answer, score: Any) -> schema.Side:
    """One side of a question card: the answer and the badges a reviewer scans."""
    return schema.Side(
        question=answer.question,
        text=answer.text,
        raw=answer.raw,
        token_ids=list(answer.token_ids),
        new_tokens=answer.new_tokens,
        stop_reason=answer.stop_reason,
        matched=score.matched,
        repetition=score.repetition,
        leaks=score.leaks,
        chrf=score.chrf,
    )


DiffOp = Literal["same", "del", "ins"]


def word_diff(before: str, after: str) -> list[tuple[DiffOp, str]]:
    """(op, words) runs from `before` to `after`: op is "same", "del" or "ins" (difflib on words)."""
    a, b = before.split(), after.split()
    runs: list[tuple[DiffOp, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            runs.append(("same", " ".join(a[i1:i2])))
            continue
        if i2 > i1:
            runs.append(("del", " ".join(a[i1:i2])))
        if j2 > j1:
            runs.append(("ins", " ".join(b[j1:j2])))
    return runs


def served_curve_svg(served: schema.ServedBenchData | None) -> str:
    """The served model's latency against its throughput, one point per concurrency level (E2EL p50 in ms over
    output tokens per second), drawn like the loss curve; empty with fewer than two levels measured."""
    if not served:
        return ""
    points = sorted(
        (r["output_tokens_per_s"], r["e2el_ms"]["p50"])
        for r in served["results"]
        if r["output_tokens_per_s"] is not None and r["e2el_ms"]["p50"] is not None
    )
    return loss_curve_svg(points, label="E2EL p50 (ms)", x_label="output tokens/s")


def loss_curve_svg(
    losses: Sequence[Sequence[Any]],
    width: int = 560,
    height: int = 220,
    label: str = "training loss",
    y_max: float | None = None,
    x_label: str = "optimizer step",
) -> str:
    """An inline SVG of (step, loss) with labelled axes, empty when there is nothing to draw. A loss that is not
    finite (NaN or infinite in a run, null in the report's JSON) is a gap in the line, and its steps are listed
    under the axis: never a `nan` coordinate."""
    points = [(float(s), v) for s, v in losses]
    finite = [(s, float(v)) for s, v in points if v is not None and math.isfinite(v)]
    if len(finite) < 2:
        return ""
    left, right, top, bottom = 48, 12, 12, 36
    steps = [s for s, _ in points]
    top_value = max(max(v for _, v in finite) * 1.05, 1e-12)
    x0, x1, y0, y1 = min(steps), max(steps), 0.0, max(top_value, y_max or 0.0)

    def x(s: float) -> float:
        return left + (s - x0) / ((x1 - x0) or 1) * (width - left - right)

    def y(v: float) -> float:
        return top + (1 - (v - y0) / ((y1 - y0) or 1)) * (height - top - bottom)

    runs: list[list[tuple[float, float]]] = [[]]
    for s, v in points:
        if v is None or not math.isfinite(v):
            runs.append([])
        else:
            runs[-1].append((s, float(v)))
    lines = "".join(
        '<polyline fill="none" stroke="#2563eb" stroke-width="2" points="'
        + " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in run)
        + '"/>'
        if len(run) > 1
        else f'<circle cx="{x(run[0][0]):.1f}" cy="{y(run[0][1]):.1f}" r="2" fill="#2563eb"/>'
        for run in runs
        if run
    )
    gaps = [int(s) for s, v in points if v is None or not math.isfinite(v)]
    gap_note = (
        f'<text x="{width - right}" y="{height - 20}" text-anchor="end" class="gaps">not finite at step(s) '
        f"{', '.join(map(str, gaps[:10]))}{' ...' if len(gaps) > 10 else ''}</text>"
        if gaps
        else ""
    )
    ticks = "".join(
        f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>'
        f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
        for v in (y1 * f for f in (0.0, 0.5, 1.0))
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{label} by {x_label}">{ticks}{lines}{gap_note}'
        f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">{x_label} '
        f"({int(x0)}&#8211;{int(x1)})</text>"
        f'<text x="12" y="{(top + height - bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(top + height - bottom) / 2})">{label}</text></svg>'
    )


CARD_FILTERS = ("failed", "changed", "leaked")  # besides "all"; each card's flags, see `card_payload`
# A Python `str.split()` separator, so the browser splits an answer into the words `word_diff` counted.
PY_WHITESPACE = r"[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"


def card_payload(context: ReportData) -> dict[str, Any]:
    """The answer cards as the report page renders them on demand: compact JSON (short keys; the word diff as
    (op, word count) runs over the answers' own words) with the filters' flags computed here, once.

    `failed`: the tuned answer fails a per-answer check (no match where checkable, no end-of-turn stop, repetition
    over the threshold, a leaked special token). `changed`: one of those outcomes differs between base and tuned.
    `leaked`: either answer leaks a special token."""
    max_repetition = context["thresholds"]["max_repetition"]

    def side(answer: schema.Side) -> dict[str, Any]:
        shown = {
            "t": answer["text"],
            "eos": answer["stop_reason"] == "eos",
            "n": answer["new_tokens"],
            "m": answer["matched"],
            "r": answer["repetition"],
            "l": answer["leaks"],
        }
        return shown | ({"raw": answer["raw"]} if answer["leaks"] else {})

    def outcomes(answer: schema.Side) -> tuple[bool, ...]:
        return (
            answer["matched"] is False,
            answer["stop_reason"] != "eos",
            answer["repetition"] > max_repetition,
            bool(answer["leaks"]),
        )

    judge = context.get("judge")
    # the judge's verdict per card (its verdicts are in the cards' order), with its replies or rewards
    verdicts = [
        {"v": v["verdict"], "f": v["first"], "s": v["second"], "r": [reply[:300] for reply in v["replies"]]}
        for v in (judge["verdicts"] if judge else [])
    ]
    cards = []
    for index, card in enumerate(context["cards"]):
        base, tuned = outcomes(card["base"]), outcomes(card["tuned"])
        cards.append(
            {
                "q": card["question"],
                "e": card["expected"],
                "base": side(card["base"]),
                "tuned": side(card["tuned"]),
                "d": [[op[0], len(words.split())] for op, words in card["diff"]],
                "failed": any(tuned),
                "changed": base != tuned,
                "leaked": bool(card["base"]["leaks"] or card["tuned"]["leaks"]),
                **({"o": {name: side(a) for name, a in card["others"].items()}} if card.get("others") else {}),
                **({"j": verdicts[index]} if index < len(verdicts) else {}),
            }
        )
    others = context.get("models", ["base", "tuned"])[2:]
    return {"cards": cards, "others": others, "max_repetition": max_repetition, "whitespace": PY_WHITESPACE}


def script_json(data: Any) -> Markup:
    """JSON safe inside `<script type="application/json">`: no `<`, `>` or `&` survives as itself, so an answer
    holding `</script>` cannot end the element; `JSON.parse` reads the escapes back."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


_ENV = Environment(
    loader=PackageLoader("sft_eval.report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _number(value: Any, spec: str) -> str:
    """`value` in the `spec` format ('%.4f'); a number the run did not keep finite (NaN or infinite in a live
    report, null in the report's JSON, which never writes NaN) as "not finite", as the loss curve draws it."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "not finite"
    return spec % value


_ENV.filters["number"] = _number


_CARD_SCRIPT = (Path(__file__).parent / "templates" / "cards.js").read_text(encoding="utf-8")
# The page's Content-Security-Policy runs this one script (by its hash) and fetches nothing: no other script, even
# one a future escaping bug let through, runs; no request leaves the file.
_CARD_SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_CARD_SCRIPT.encode()).digest()).decode()


def render_html(context: ReportData) -> str:
    """The report's HTML for `context` (what `build_context` returns, or the report's JSON read back). The answer
    cards travel as JSON in the page and are drawn a page at a time by its script (filters, search, pages), so a
    report of 10,000 questions stays one small file that opens at once."""
    payload = card_payload(context)
    sections = [
        {"id": s.id, "title": s.title, "html": Markup(_ENV.from_string(s.template).render(**context))}
        for s in SECTIONS.values()
    ]
    return _ENV.get_template("report.html.j2").render(
        **context,
        extra_sections=sections,
        loss_svg=Markup(loss_curve_svg(context["training"]["losses"])),  # numbers we drew, no input
        served_svg=Markup(served_curve_svg(context.get("served_bench"))),
        card_json=script_json(payload),
        card_script=Markup(_CARD_SCRIPT),  # our own file, shipped with the package
        script_hash=_CARD_SCRIPT_HASH,
        filter_counts={name: sum(card[name] for card in payload["cards"]) for name in CARD_FILTERS},
    )


def write_report(context: ReportData, out_dir: str | Path) -> Path:
    """Render `context` to `out_dir/sft_report.html` and `.json`, each written whole or not at all."""
    out = writable_folder(out_dir, key="report folder")
    html = render_html(context)
    # no indent: json's C encoder (0.4 s, not 1.2 s, for 10,000 cards)
    write_atomic(out / JSON_NAME, dumps(context, default=str))
    return write_atomic(out / HTML_NAME, html)


SWEEP_HTML, SWEEP_JSON = "sweep.html", "sweep.json"
# The sweep page's curves: (what is drawn, its label); checkpoint metrics come from the rows, the losses from the
# trainer's record.
_SWEEP_CURVES = (  # (key, label, the axis' top at least: 1 for a rate)
    ("match_rate", "match rate", 1.0),
    ("eos_stop_rate", "stops at end-of-turn", 1.0),
    ("mean_repetition", "repetition", 1.0),
    ("held_out_loss", "held-out loss (data.eval)", None),
    ("losses", "training loss (trainer)", None),
    ("eval_losses", "eval_loss (trainer)", None),
)


def render_sweep_html(data: dict[str, Any]) -> str:
    """The sweep's page from its plain data (`sweep.Sweep.to_dict()`): the verdict and findings, a row per
    checkpoint with the best one marked, each metric and the trainer's losses against the step. Where
    `SftEvalCallback` evaluated the run while it trained (`live`), the metrics are drawn from its evaluations, one
    point per evaluated step (saved or not)."""
    charts = []
    live = data.get("live") or []
    for key, label, y_max in _SWEEP_CURVES:
        if key in ("losses", "eval_losses"):
            points = data["trainer"][key]
        elif live:
            points = [(r["step"], r[key]) for r in live if r.get(key) is not None]
            label = f"{label}, while training (SftEvalCallback)"
        else:
            points = [(r["step"], r[key]) for r in data["checkpoints"] if r.get(key) is not None]
        svg = loss_curve_svg(points, label=label, y_max=y_max)
        if svg:
            charts.append(Markup(svg))  # numbers we drew, no input
    return _ENV.get_template("sweep.html.j2").render(**data, charts=charts)


def write_sweep(data: dict[str, Any], out_dir: str | Path) -> Path:
    """`out_dir/sweep.html` and `sweep.json` from the sweep's plain data, each written whole or not at all."""
    out = writable_folder(out_dir, key="--out")
    html = render_sweep_html(data)
    write_atomic(out / SWEEP_JSON, dumps(data, default=str))
    return write_atomic(out / SWEEP_HTML, html)


def render_json(path: str | Path, out_dir: str | Path) -> Path:
    """Render the HTML report again from a report's JSON (`sft_report.json`): no model, no cache, no recipe."""
    context = read_report_json(path)
    out = writable_folder(out_dir, key="--out")
    return write_atomic(out / HTML_NAME, render_html(context))
