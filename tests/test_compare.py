"""Run against run: `sft-eval compare BASELINE.json NEW.json` and `--sft-baseline`.

The statistics are checked on plain outcomes (a regression, no change, an improvement, flips too few to be more
than noise, questions on one side only, pairing by id), the McNemar p-values against an independent computation
from the binomial distribution, Holm against its definition; bad reports are one line and exit 2. The README's
walkthrough runs as written: the default recipe as the accepted run and a change trained for 3 epochs instead of
20, compared both ways and through pytest.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from sft_eval.cache import source_digest
from sft_eval.compare import (
    COMPARE_FORMAT,
    Outcome,
    compare_outcomes,
    holm,
    mcnemar_exact,
    outcomes_from_evaluation,
    outcomes_from_report,
)
from sft_eval.comparison_text import describe, markdown, write_step_summary
from sft_eval.errors import SftEvalError
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import load_recipe
from sft_eval.report import read_report_json

README = Path(__file__).parent.parent / "README.md"
SECTION = "Compare with the last accepted run"


def outcomes(matched: list[bool]) -> list[Outcome]:
    """One outcome per question `q0`, `q1`, ...: answered in 5 tokens, stopped, clean, with `matched` as given."""
    return [
        Outcome(
            question=f"q{i}",
            id="",
            matched=m,
            stopped=True,
            leaked=False,
            empty=False,
            repetition=0.0,
            new_tokens=5,
        )
        for i, m in enumerate(matched)
    ]


def binomial_two_sided(k: int, n: int) -> float:
    """The exact McNemar p-value by hand: twice the smaller binomial tail at p = 1/2, capped at 1."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize(("lost", "gained"), [(0, 0), (1, 0), (5, 1), (12, 0), (22, 3), (7, 7), (0, 9)])
def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_pairs(lost, gained):
    assert mcnemar_exact(lost, gained) == pytest.approx(binomial_two_sided(lost, lost + gained), rel=1e-12)


def test_holm_adjusts_as_defined():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone: 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_a_candidate_that_lost_matches_is_a_regression_naming_the_flipped_questions():
    baseline = outcomes([True] * 20 + [False] * 10)
    candidate = outcomes([False] * 12 + [True] * 8 + [False] * 10)
    result = compare_outcomes(baseline, candidate)
    (regression,) = result.regressions
    assert regression.metric == "exact match" and regression.verdict == "regression"
    assert regression.pass_to_fail == [f"q{i}" for i in range(12)] and regression.fail_to_pass == []
    assert regression.difference == pytest.approx(-0.4) and regression.high < 0
    assert regression.p_value == pytest.approx(binomial_two_sided(0, 12))
    assert regression.p_holm == pytest.approx(min(1.0, 5 * regression.p_value))  # 5 metrics, the only small p
    text = "\n".join(describe(result))
    assert "REGRESSION  exact match: 0.667 -> 0.267" in text and "pass -> fail (12): 'q0'" in text
    assert text.endswith("regression: exact match")


def test_the_same_run_is_no_change_and_a_better_one_an_improvement_that_never_fails():
    accepted = outcomes([True] * 20 + [False] * 10)
    same = compare_outcomes(accepted, accepted)
    assert not same.regressions and not same.improvements
    assert all(m.verdict == "no change" and m.p_value == 1.0 for m in same.metrics)
    better = compare_outcomes(outcomes([False] * 12 + [True] * 8 + [False] * 10), accepted)
    assert not better.regressions and [m.metric for m in better.improvements] == ["exact match"]
    assert better.to_dict()["verdict"] == "no regression" and better.to_dict()["improvements"] == ["exact match"]


def test_a_few_flips_are_noise_not_a_regression():
    """Two questions of 30 flipped pass -> fail: McNemar p = 0.5, far from 0.05; listed, never failed."""
    baseline = outcomes([True] * 20 + [False] * 10)
    candidate = outcomes([False] * 2 + [True] * 18 + [False] * 10)
    result = compare_outcomes(baseline, candidate)
    assert not result.regressions
    match = next(m for m in result.metrics if m.metric == "exact match")
    assert match.pass_to_fail == ["q0", "q1"] and match.p_value == pytest.approx(0.5)
    assert match.verdict == "no change"


def test_runaway_answers_regress_the_stop_check_and_repetition():
    """The other checks regress too: answers that stop running into max_new_tokens, looping."""
    baseline = outcomes([True] * 30)
    candidate = [replace(o, stopped=False, repetition=0.8) for o in baseline[:15]] + baseline[15:]
    regressed = {m.metric for m in compare_outcomes(baseline, candidate).regressions}
    assert regressed == {"ends at end-of-turn", "repetition"}


def test_questions_are_paired_by_id_and_one_sided_ones_are_listed():
    baseline = [replace(o, id=f"id{i}") for i, o in enumerate(outcomes([True] * 5))]
    reworded = [replace(o, question=o.question + " (reworded)") for o in baseline[1:]]
    extra = replace(baseline[0], id="new", question="a new question")
    result = compare_outcomes(baseline, [*reworded, extra])
    assert result.paired_by == "id" and result.questions == 4
    assert result.only_in_baseline == ["q0"] and result.only_in_candidate == ["a new question"]
    assert "only in the baseline, not compared (1): 'q0'" in "\n".join(describe(result))
    by_text = compare_outcomes(outcomes([True] * 3), [replace(o, id="") for o in baseline])
    assert by_text.paired_by == "text" and by_text.questions == 3 and by_text.only_in_candidate == ["q3", "q4"]


def test_a_question_asked_twice_on_one_side_is_said_so_not_called_one_sided():
    """Issue 44: a question the candidate asks twice was listed "only in the candidate"; it is in both, and its
    extra answer is listed as such."""
    base = outcomes([True] * 3)
    result = compare_outcomes(base, [*base, base[1]])
    assert result.questions == 3 and result.only_in_candidate == [] and result.repeated["candidate"] == ["q1"]
    text = "\n".join(describe(result))
    assert "asked again in the candidate, the extra answer not compared (1): 'q1'" in text and "only in" not in text
    both = compare_outcomes([*base, base[1]], [*base, base[1]])
    assert both.questions == 4 and both.repeated == {"baseline": [], "candidate": []}, "asked twice on both: paired"


def test_no_question_in_common_is_one_line():
    with pytest.raises(SftEvalError, match="share no question"):
        compare_outcomes(outcomes([True]), [replace(o, question="other") for o in outcomes([True])])


def test_the_verdict_goes_to_the_github_step_summary(tmp_path):
    result = compare_outcomes(outcomes([True] * 12), outcomes([False] * 12))
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    assert write_step_summary(result, {"GITHUB_STEP_SUMMARY": str(summary)}.items()) == summary
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("earlier step\n") and "### sft-eval compare: regression in exact match" in text
    assert "| exact match | 1.000 | 0.000 |" in text and "`q0`" in text
    assert write_step_summary(result, {}.items()) is None
    assert markdown(compare_outcomes(outcomes([True]), outcomes([True]))).startswith("### sft-eval compare: no reg")


def with_chrf(values: list[float]) -> list[Outcome]:
    return [replace(o, chrf=v) for o, v in zip(outcomes([True] * len(values)), values, strict=True)]


def test_a_nan_score_is_never_a_number_in_a_statistic():
    """Issue 44, cause 2: chrF 100 -> 0 on 11 of 12 questions with one NaN on the candidate's side was read as an
    "improvement" (p=0). Now chrF is "not comparable", names the question, stays out of Holm, and the comparison
    fails as a regression would; the same file with 0.0 in place of the NaN is a regression (the nearby correct
    case)."""
    baseline = with_chrf([100.0] * 12)
    broken = compare_outcomes(baseline, with_chrf([0.0] * 11 + [math.nan]))
    (chrf,) = [m for m in broken.metrics if m.metric == "chrF"]
    assert chrf.verdict == "not comparable" and chrf.not_a_number == ["q11"], chrf
    assert broken.verdict == "not comparable" and not broken.improvements and not broken.regressions
    assert all(m.p_holm == 1.0 or m.metric == "chrF" for m in broken.metrics), "NaN kept out of Holm"
    text = "\n".join(describe(broken))
    assert "NOT COMPARABLE chrF: 1 of 12 question(s) have a score that is not a number" in text, text
    assert "improvement" not in text and text.endswith("not comparable (a score that is not a number): chrF"), text
    assert "| chrF | – | – | 1 score(s) not a number |" in markdown(broken)
    zero = compare_outcomes(baseline, with_chrf([0.0] * 12))
    assert [m.metric for m in zero.regressions] == ["chrF"] and zero.verdict == "regression"


def test_a_report_json_holding_nan_is_one_line_and_a_null_score_is_read(accepted_json, cli, tmp_path):
    """NaN is not JSON: sft-eval writes null where a score was not finite. A report holding a NaN literal was
    written or edited by something else: one line, exit 2, before any statistic."""
    report = json.loads(accepted_json.read_text(encoding="utf-8"))
    scored = next(card for card in report["cards"] if card["tuned"].get("chrf") is not None)
    scored["tuned"]["chrf"] = math.nan
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(report), encoding="utf-8")  # Python's json writes NaN
    cli.bad_input(cli.main("compare", str(accepted_json), str(nan)), "nan.json: holds NaN, which is not JSON")
    scored["tuned"]["chrf"] = None
    null = tmp_path / "null.json"
    null.write_text(json.dumps(report), encoding="utf-8")
    assert cli.main("compare", str(accepted_json), str(null)).returncode == 0


def test_the_step_summary_shows_a_question_with_backticks_and_markup_as_text(tmp_path):
    """Issue 44, cause 7: a backtick in a question closed its code span, so raw `<img>` and `<a href>` reached the
    job summary. Each quoted question is one code span fenced longer than any backtick run inside it."""
    hostile = ["x` <img src=https://e.invalid/p.png> `y", "``a``<a href='https://e.invalid'>b</a>", "plain"]
    base = [replace(o, question=q) for o, q in zip(outcomes([True] * 3), hostile, strict=True)]
    cand = [replace(o, matched=False) for o in base]
    text = markdown(compare_outcomes(base, cand, candidate_name="run `1`"))
    assert "``x` <img src=https://e.invalid/p.png> `y``" in text, text
    assert "``` ``a``<a href='https://e.invalid'>b</a> ```" in text, text
    assert "`plain`" in text and "`` run `1` ``" in text, text
    import markdown_it  # GitHub's Markdown is CommonMark: no tag outside a code element once rendered

    html = markdown_it.MarkdownIt("commonmark").render(text)
    outside = re.sub(r"<code>.*?</code>", "", html, flags=re.S)
    assert "<img" not in outside and "<a " not in outside, html


# -- the CLI on report JSONs ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def accepted_json(sft_pipeline, tmp_path_factory) -> Path:
    """The session's default run written as a report JSON (its answers from the session's evaluation)."""
    from sft_eval.report import write_report

    folder = tmp_path_factory.mktemp("accepted")
    write_report(sft_pipeline.report_context(), folder)
    return folder / "sft_report.json"


def test_a_report_compares_with_itself_as_no_regression_and_json_carries_the_format(accepted_json, cli, tmp_path):
    summary = tmp_path / "summary.md"
    result = cli.main(
        "compare", str(accepted_json), str(accepted_json), "--json", env={"GITHUB_STEP_SUMMARY": str(summary)}
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["format"] == COMPARE_FORMAT and data["verdict"] == "no regression" and data["regressions"] == []
    assert data["questions"] == 31 and {m["metric"] for m in data["metrics"]} >= {"exact match", "repetition"}
    assert "no regression" in summary.read_text(encoding="utf-8")


def test_a_live_evaluation_and_its_report_are_the_same_outcomes(accepted_json, sft_evaluation, sft_signals):
    live = outcomes_from_evaluation(sft_evaluation, signals=sft_signals)
    assert outcomes_from_report(read_report_json(accepted_json)) == live
    assert sum(o.expected_nll is not None for o in live) == 28 and sum(o.chrf is not None for o in live) == 28


def test_a_regression_between_reports_exits_1_naming_it(accepted_json, cli, tmp_path):
    """A candidate report whose tuned answers lost their matches (every answer to a checkable question replaced)."""
    report = json.loads(accepted_json.read_text(encoding="utf-8"))
    for card in report["cards"]:
        if card["tuned"]["matched"]:
            card["tuned"] = {**card["tuned"], "text": "no idea", "matched": False}
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(report), encoding="utf-8")
    result = cli.main("compare", str(accepted_json), str(worse))
    assert result.returncode == 1, result.stderr
    assert "REGRESSION  exact match" in result.stdout and "pass -> fail" in result.stdout
    assert result.stdout.strip().endswith("regression: exact match")


@pytest.mark.parametrize(
    ("edit", "args", "says"),
    [
        (lambda r: r.pop("format"), (), "no `format`"),
        (lambda r: r.update(format="sft-eval-report/99"), (), 'format "sft-eval-report/99"'),
        (lambda r: r["cards"][2]["tuned"].update(matched="yes"), (), "cards[2].tuned.matched"),
        (None, ("--alpha", "1.5"), "--alpha: expected a number between 0 and 1"),
    ],
    ids=["no-format", "unknown-format", "bad-card", "alpha"],
)
def test_a_bad_report_or_option_is_one_line(accepted_json, cli, tmp_path, edit, args, says):
    report = json.loads(accepted_json.read_text(encoding="utf-8"))
    if edit is not None:
        edit(report)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(report), encoding="utf-8")
    cli.bad_input(cli.main("compare", str(accepted_json), str(bad), *args), says)
    cli.bad_input(cli.main("compare", str(tmp_path / "missing.json"), str(bad)), "missing.json")


def test_a_bad_baseline_is_a_pytest_usage_error(tmp_path, cli):
    bad = tmp_path / "old.json"
    bad.write_text("{", encoding="utf-8")
    result = cli.pytest("--pyargs", "sft_eval.suites", "--sft-baseline", str(bad), "-k", "baseline")
    assert result.returncode == 4 and "--sft-baseline" in result.stderr and "old.json" in result.stderr, result.stderr


# -- README's walkthrough, as written ---------------------------------------------------------------------------
def readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {SECTION}\n")
    return text[start : text.index("\n## ", start + 1)]


def block(section: str, language: str) -> str:
    (found,) = [b.split("\n", 1)[1] for b in section.split("```")[1::2] if b.startswith(language + "\n")]
    return found


@pytest.mark.slow
def test_the_readmes_comparison_runs_as_written(sft_pipeline, tmp_path, cli):
    """The README's walkthrough in a folder beside a copy of `fixtures/`: the accepted run is the session's default
    (cached), the change trains its 3 epochs here (81 steps; no session fixture trains a worse run)."""
    section = readme_section()
    (tmp_path / "fixtures").symlink_to(README.parent / "fixtures", target_is_directory=True)
    (tmp_path / "my_change.toml").write_text(block(section, "toml"), encoding="utf-8")
    env = {"SFT_EVAL_CACHE": str(sft_pipeline.cache.root)}
    lines = [line for line in block(section, "bash").splitlines() if line.strip()]
    assert len(lines) == 5, lines
    for line in lines:
        program, *args = shlex.split(line, comments=True)
        expected = 1 if "# exit 1" in line else 0
        run = cli.run if program == "sft-eval" else cli.pytest
        result = run(*args, *(["-p", "no:randomly", "-v"] if program == "pytest" else []), cwd=tmp_path, env=env)
        assert result.returncode == expected, f"{line}\nexit {result.returncode}: {result.stdout[-3000:]}"
        if program == "pytest":
            assert "test_no_regression_against_the_baseline FAILED" in result.stdout, result.stdout[-3000:]
            assert "REGRESSION  exact match" in result.stdout and "pass -> fail" in result.stdout
        elif args[0] == "report" and expected == 1:  # the change's own thresholds, and the accepted run's answers
            assert "FAILED responses.match_rate" in result.stdout, result.stdout
            assert "REGRESSION against reports/accepted/sft_report.json: exact match" in result.stdout
            html = (tmp_path / "reports" / "change" / "sft_report.html").read_text(encoding="utf-8")
            assert '<section id="baseline">' in html and "regression in exact match" in html
        elif expected == 1:
            assert "REGRESSION  exact match" in result.stdout and "only in the baseline" in result.stdout
        elif args[0] == "compare":
            assert "no regression; improved: exact match" in result.stdout, result.stdout


@pytest.mark.slow
def test_a_better_baseline_model_is_a_regression_of_the_worse_change(sft_pipeline, tmp_path, cli):
    """`[model] baseline` in the README's change recipe, naming the accepted run's tuned model folder: `sft-eval
    report` generates that model's answers and exits 1 on the regression. The change run is the walkthrough's
    (cached by the test above in a full run; trained here alone: 81 steps)."""
    (tmp_path / "fixtures").symlink_to(README.parent / "fixtures", target_is_directory=True)
    accepted = sft_pipeline.tuned_model_dir
    text = block(readme_section(), "toml").replace("[model]\n", f'[model]\nbaseline = "{accepted}"\n')
    (tmp_path / "my_change.toml").write_text(text, encoding="utf-8")
    env = {"SFT_EVAL_CACHE": str(sft_pipeline.cache.root)}
    result = cli.main("report", "--recipe", "my_change.toml", "--out", "out", cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"REGRESSION against model.baseline ({accepted}): exact match" in result.stdout, result.stdout


def test_the_report_shows_the_baseline_section_only_when_given_one(accepted_json, sft_pipeline):
    from sft_eval.report import render_html

    assert '<section id="baseline">' not in accepted_json.with_suffix(".html").read_text(encoding="utf-8")
    same = sft_pipeline.report_context(baseline=(str(accepted_json), read_report_json(accepted_json)))
    html = render_html(same)
    assert same["against_baseline"]["regressions"] == [] and '<section id="baseline">' in html
    assert "no regression" in html and "31 questions paired by text" in html


def test_a_report_json_with_a_bad_baseline_section_is_one_line(accepted_json, cli, tmp_path):
    report = json.loads(accepted_json.read_text(encoding="utf-8"))
    for value, says in (
        ([], "against_baseline is [], not an object"),
        ({"baseline": "x"}, "against_baseline has no `format`"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**report, "against_baseline": value}), encoding="utf-8")
        cli.bad_input(cli.main("report", "--from-json", str(bad), "--out", str(tmp_path / "out")), says)


# -- [model] baseline: the accepted model's folder, its answers generated here -----------------------------------
def with_baseline(tiny_variant, folder: Path, sft_pipeline) -> Pipeline:
    recipe = load_recipe(tiny_variant({"[model]\n": f'[model]\nbaseline = "{folder}"\n'}))
    return Pipeline(recipe, cache=sft_pipeline.cache)


def test_a_baseline_model_that_is_the_tuned_model_is_no_change_and_its_answers_are_cached(tiny_variant, sft_pipeline):
    """A against A, through the model source: the baseline's answers are generated from its folder (here the tuned
    model's own, so every answer agrees), judged as the tuned model's are, and kept in the answer cache."""
    pipeline = with_baseline(tiny_variant, sft_pipeline.tuned_model_dir, sft_pipeline)
    comparison = pipeline.baseline_comparison()
    assert pipeline.evaluation.models == ["base", "tuned", "baseline"], "one evaluation, every model by name"
    assert pipeline.evaluation.answers("baseline") == pipeline.evaluation.tuned
    assert comparison.regressions == [] and comparison.improvements == [], describe(comparison)
    assert all(not m.pass_to_fail and not m.fail_to_pass for m in comparison.metrics), comparison
    again = with_baseline(tiny_variant, sft_pipeline.tuned_model_dir, sft_pipeline)
    again.baseline_comparison()
    assert again.answer_counts["baseline"]["generated"] == 0, again.answer_counts


def test_a_worse_baseline_model_is_an_improvement_shown_in_the_report(tiny_variant, sft_pipeline):
    """The base model as the accepted one: the tuned model improves exact match and stopping, never a regression;
    the report's "Against the baseline" section comes from the model source when no report JSON is given."""
    pipeline = with_baseline(tiny_variant, sft_pipeline.base_model_dir, sft_pipeline)
    context = pipeline.report_context()
    against = context["against_baseline"]
    assert against["regressions"] == [] and "exact match" in against["improvements"], against
    assert against["baseline"] == f"model.baseline ({sft_pipeline.base_model_dir})"
    assert context["models"] == ["base", "tuned", "baseline"]
    # the base's own weights as the baseline: its answers, asked through the baseline's source, are the base's
    assert all(card["others"]["baseline"] == card["base"] for card in context["cards"])
    assert context["summary"]["others"]["baseline"] == context["summary"]["base"]


def test_a_report_of_three_models_is_written_read_and_refused_when_a_card_lacks_one(
    tiny_variant, sft_pipeline, tmp_path
):
    """The three-model report's JSON reads back and its page has a column per model; a card without the third
    model's answer, or a `models` list that does not start with the base and the tuned model, is one line."""
    from sft_eval.report import render_html, write_report

    context = with_baseline(tiny_variant, sft_pipeline.base_model_dir, sft_pipeline).report_context()
    written = write_report(context, tmp_path / "out").with_suffix(".json")
    assert read_report_json(written)["models"] == ["base", "tuned", "baseline"]
    html = render_html(context)
    assert "<h2>Summary: base vs tuned vs baseline</h2>" in html and "<th>baseline</th>" in html
    assert '"others":["baseline"]' in html  # the cards' script draws the third side
    two = render_html(sft_pipeline.report_context())
    assert "<th>baseline</th>" not in two and '"others":[]' in two
    for edit, says in (
        (lambda r: r["cards"][2]["others"].pop("baseline"), "cards[2].others has no `baseline`"),
        (lambda r: r.update(models=["tuned", "base"]), 'models is ["tuned", "base"], not a list starting'),
        (lambda r: r["summary"].pop("others"), "summary.others has no `baseline`"),
    ):
        report = json.loads(written.read_text(encoding="utf-8"))
        edit(report)
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(report), encoding="utf-8")
        with pytest.raises(SftEvalError) as raised:
            read_report_json(bad)
        assert says in str(raised.value) and "\n" not in str(raised.value), str(raised.value)


def test_each_model_is_a_source_resolved_once_and_keyed_as_before(tiny_variant, sft_pipeline):
    """The models a recipe names are sources of three origins, resolved once per pipeline: the base, the run
    trained here, and folders trained elsewhere (the tuned model's and the baseline's, here both the tuned model's
    own folder). Loading and the answer cache's identity are derived from the source alone; the identities are the
    ones answers were cached under before sources existed, so a warm cache stays warm."""
    here = sft_pipeline.sources
    assert {name: s.origin for name, s in here.items()} == {"base": "base", "tuned": "trained-here"}
    base_key = sft_pipeline.artifacts.base_key
    assert here["base"].identity() == {"base": base_key}
    assert here["tuned"].identity() == {"tuned": sft_pipeline.tuned_model_dir.parent.name}
    folder = sft_pipeline.tuned_model_dir
    recipe = load_recipe(tiny_variant({"[model]\n": f'[model]\ntuned = "{folder}"\nbaseline = "{folder}"\n'}))
    elsewhere = Pipeline(recipe, cache=sft_pipeline.cache)
    sources = elsewhere.sources
    assert elsewhere.sources is sources, "resolved once"
    assert {name: s.origin for name, s in sources.items()} == {"base": "base", "tuned": "folder", "baseline": "folder"}
    assert (sources["tuned"].key, sources["baseline"].key) == ("model.tuned", "model.baseline")
    assert sources["tuned"].weights == sources["baseline"].weights == folder
    assert not sources["tuned"].is_adapter and not sources["baseline"].is_adapter
    digest = source_digest(str(folder))
    assert sources["tuned"].identity() == {"tuned": digest, "base": base_key}
    assert sources["baseline"].identity() == {"baseline": digest, "base": base_key}
    answering = elsewhere.answering
    assert answering.identity("tuned") != answering.identity("baseline"), "one cache entry per name"
    assert sources["tuned"].run is not None and sources["baseline"].run is not None


def test_a_baseline_that_is_no_fine_tune_of_the_base_is_one_line(tiny_variant, sft_pipeline, realworld_dir, cli):
    gpt2 = realworld_dir / "checkpoints" / "sshleifer-tiny-gpt2"
    recipe = tiny_variant({"[model]\n": f'[model]\nbaseline = "{gpt2}"\n'})
    result = cli.main("report", "--recipe", str(recipe), "--out", str(recipe.parent / "out"))
    cli.bad_input(result, "model.baseline:", "is not a fine-tune of model.base")
    missing = tiny_variant({"[model]\n": '[model]\nbaseline = "runs/none"\n'})
    with pytest.raises(SftEvalError, match="`model.baseline` must be a checkpoint or run folder"):
        load_recipe(missing)
