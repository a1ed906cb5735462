"""Issue 49: what a comparison could not have seen, each figure checked independently.

The minimum detectable effect and the planning answer are computed exactly (sft_eval.power); here they are checked
by simulation: paired outcomes with the stated drop injected are caught about 80% of the time by the exact McNemar
test as scipy computes it, half that drop mostly not. Newcombe's interval is checked for coverage, the clustered
standard error against the spread of simulated means, and both gates on one underpowered comparison. Nothing here
trains; the CLI tests read the session's report.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
from scipy import stats

from sft_eval import power
from sft_eval.compare import BINARY, CONTINUOUS, Outcome, compare_outcomes, metric_key
from sft_eval.comparison_text import describe, markdown
from sft_eval.errors import SftEvalError
from sft_eval.recipe import COMPARED_METRICS, load_recipe

SIMULATIONS = 4000  # the rate's standard error at 0.8 is 0.0063: "about 80%" is within 0.03 (4.7 SE)
ALPHA = 0.05


@functools.cache
def mcnemar_p(lost: int, flips: int) -> float:
    """scipy's exact two-sided binomial test of the pass -> fail count, as compare computes it."""
    return float(stats.binomtest(lost, flips, 0.5).pvalue) if flips else 1.0


def caught(questions: int, drop: float, discordance: float, seed: int = 0) -> float:
    """The share of simulated paired runs with a true `drop` whose McNemar test rejects in the drop's direction."""
    rng = np.random.default_rng(seed)
    psi = max(discordance, drop)
    kinds = rng.choice(3, size=(SIMULATIONS, questions), p=[(psi + drop) / 2, (psi - drop) / 2, 1 - psi])
    lost, gained = (kinds == 0).sum(axis=1), (kinds == 1).sum(axis=1)
    return float(np.mean([lo > ga and mcnemar_p(lo, lo + ga) <= ALPHA for lo, ga in zip(lost, gained, strict=True)]))


def test_the_rejection_cutoff_is_where_scipys_p_value_falls_below_alpha():
    for alpha in (0.01, 0.05, 0.1):
        cutoffs = power.mcnemar_cutoff(np.arange(61), alpha)
        for flips, cutoff in enumerate(cutoffs):
            rejected = [k for k in range(flips + 1) if 2 * k > flips and mcnemar_p(k, flips) <= alpha]
            assert cutoff == (min(rejected) if rejected else flips + 1), (alpha, flips)


@pytest.mark.parametrize(("questions", "discordance"), [(31, 0.2), (100, 0.3), (200, 0.1)])
def test_a_drop_of_the_detectable_size_is_caught_four_times_in_five_and_half_of_it_mostly_not(questions, discordance):
    mde = power.binary_mde(questions, discordance, ALPHA)
    assert mde is not None and 0 < mde < 1
    assert abs(caught(questions, mde, discordance) - 0.8) <= 0.03, "the stated drop is caught about 80% of the time"
    assert caught(questions, mde / 2, discordance, seed=1) < 0.45, "half of it is mostly missed"


def test_runs_that_never_disagree_do_not_read_as_detecting_any_drop():
    """Zero discordant pairs: the floor (a drop needs at least its own share of flips) keeps the MDE finite and
    large on few questions, and the simulation at that floor agrees."""
    mde = power.binary_mde(31, 0.0, ALPHA)
    assert mde is not None and mde > 0.2, mde
    assert abs(caught(31, mde, 0.0) - 0.8) <= 0.03


def test_below_six_questions_no_drop_is_detectable():
    """Every question flipping one way gives p = 2 / 2^N: above 0.05 up to N = 5, so the exact test cannot reject."""
    assert power.binary_mde(5, 0.5, ALPHA) is None
    assert power.binary_mde(6, 0.5, ALPHA) is not None


def test_the_planning_answer_is_checked_by_simulation():
    needed = power.binary_questions_needed(0.1, 0.2, ALPHA)
    assert needed is not None
    assert caught(needed, 0.1, 0.2) >= 0.77, "at the planned size the drop is caught about 80% of the time or more"
    assert caught(needed // 2, 0.1, 0.2, seed=2) < 0.6, "at half the size it is not"


def test_a_continuous_metrics_detectable_effect_holds_by_simulation():
    rng = np.random.default_rng(3)
    n, sd = 40, 2.0
    mde = power.continuous_mde(sd / math.sqrt(n), ALPHA)
    hits = 0
    for _ in range(SIMULATIONS):
        differences = rng.normal(mde, sd, n)
        hits += stats.ttest_1samp(differences, 0).pvalue <= ALPHA and differences.mean() > 0
    assert abs(hits / SIMULATIONS - 0.8) <= 0.03
    assert power.continuous_questions_needed(mde, sd, ALPHA) == pytest.approx(n, abs=1)


@pytest.mark.parametrize(("n", "p", "discordance"), [(16, 0.9, 0.1), (31, 0.7, 0.3), (100, 0.5, 0.2)])
def test_newcombes_one_sided_bound_covers_the_true_drop(n, p, discordance):
    """The one-sided 95% bound on the drop is above the true drop at least about 95% of the time (the method is
    near nominal; a bootstrap on few flips is not)."""
    rng = np.random.default_rng(4)
    drop = 0.05
    probabilities = [p - (discordance + drop) / 2, (discordance + drop) / 2, (discordance - drop) / 2]
    probabilities.append(1 - sum(probabilities))
    covered = 0
    for counts in rng.multinomial(n, probabilities, size=2000):
        low, _ = power.newcombe_paired(*map(int, counts), z=stats.norm.ppf(0.95))
        covered += -low >= drop
    assert covered / 2000 >= 0.93, covered / 2000


def test_newcombes_interval_keeps_its_width_when_no_question_flips():
    low, high = power.newcombe_paired(16, 0, 0, 0, z=stats.norm.ppf(0.95))
    assert low < -0.1 and high > 0, "16 of 16 on both sides does not show a 0.02 margin"
    low, _ = power.newcombe_paired(2000, 0, 0, 0, z=stats.norm.ppf(0.95))
    assert -0.02 < low < 0, "2,000 of 2,000 does"


def test_clustered_errors_follow_the_spread_of_means_that_share_sources():
    """20 sources of 10 questions each, a shared effect per source: the plain SE understates the mean's spread,
    CR1 does not (within 15%, averaged over simulations)."""
    rng = np.random.default_rng(5)
    clusters = [f"s{g}" for g in range(20) for _ in range(10)]
    means, plain, robust = [], [], []
    for _ in range(1000):
        differences = np.repeat(rng.normal(0, 1, 20), 10) + rng.normal(0, 0.5, 200)
        spread = power.spread(differences, 0.0, clusters)
        means.append(differences.mean())
        plain.append(spread.standard_error)
        robust.append(spread.clustered)
    truth = float(np.std(means))
    assert abs(np.mean(robust) / truth - 1) < 0.15, (np.mean(robust), truth)
    assert np.mean(plain) < 0.5 * truth, "the plain SE is far too small when questions share sources"


def test_too_few_clusters_are_said_and_not_clustered():
    few = power.spread([0.1, 0.2, 0.0, 0.3], 0.0, ["a", "a", "b", "b"])
    assert few.clustered is None and few.note.startswith("too few clusters to cluster: 2")
    none = power.spread([0.1, 0.2], 0.0, ["", ""])
    assert none.clustered is None and none.note.startswith("not clustered")


# -- the comparison -------------------------------------------------------------------------------------------
def outcomes(matched: list[bool], clusters: list[str] | None = None) -> list[Outcome]:
    return [
        Outcome(f"q{i}", "", m, True, False, False, 0.0, 5, cluster=(clusters or [""] * len(matched))[i])
        for i, m in enumerate(matched)
    ]


def test_one_underpowered_comparison_passes_the_difference_gate_and_fails_the_non_inferiority_gate():
    """16 questions, nothing flips, a margin of 0.02: the difference gate finds no regression (and says the margin
    is below what 16 questions detect); the non-inferiority gate cannot show the drop within 0.02."""
    same = outcomes([True] * 12 + [False] * 4)
    difference = compare_outcomes(same, same, margins={"exact_match": 0.02})
    (match,) = [m for m in difference.metrics if m.metric == "exact match"]
    assert difference.passed and difference.verdict == "no regression"
    assert match.underpowered and match.min_detectable_effect > 0.3 and not match.undetectable
    assert "with 16 questions a drop of" in match.detectable and "takes about" in match.detectable
    bounded = compare_outcomes(same, same, margins={"exact_match": 0.02}, gate="non-inferiority")
    (match,) = [m for m in bounded.metrics if m.metric == "exact match"]
    assert not bounded.passed and bounded.verdict == "not shown non-inferior" and match.drop_bound > 0.02
    text = "\n".join(describe(bounded))
    assert "not within the margin 2.0 points" in text and text.endswith("not shown non-inferior: exact match"), text
    big = outcomes([True] * 1500 + [False] * 500)
    assert compare_outcomes(big, big, margins={"exact_match": 0.02}, gate="non-inferiority").passed


def test_the_sentence_reaches_the_json_and_the_step_summary():
    base = outcomes([True] * 31)
    result = compare_outcomes(base, base)
    data = result.to_dict()
    (match,) = [m for m in data["metrics"] if m["metric"] == "exact match"]
    assert match["min_detectable_effect"] is not None and match["undetectable"] is False and not match["underpowered"]
    assert "with 31 questions a drop of 24 points would be missed one time in five" in match["detectable"]
    assert "with 31 questions a drop of 24 points would be missed one time in five" in markdown(result)
    tiny = compare_outcomes(outcomes([True] * 5), outcomes([True] * 5))
    (match,) = [m for m in tiny.to_dict()["metrics"] if m["metric"] == "exact match"]
    assert match["min_detectable_effect"] is None and match["undetectable"] is True
    assert "no drop of exact match is detectable at alpha 0.05" in match["detectable"]


def test_clusters_widen_the_detectable_effect_and_say_so():
    clusters = [f"c{i // 4}" for i in range(40)]
    matched = [i % 4 != 0 for i in range(40)]
    lost = [m and i // 4 % 2 == 0 for i, m in enumerate(matched)]  # whole sources lose their matches together
    candidate = [m and not lo for m, lo in zip(matched, lost, strict=True)]
    plain = compare_outcomes(outcomes(matched), outcomes(candidate))
    grouped = compare_outcomes(outcomes(matched, clusters), outcomes(candidate, clusters))
    (a,) = [m for m in plain.metrics if m.metric == "exact match"]
    (b,) = [m for m in grouped.metrics if m.metric == "exact match"]
    assert b.min_detectable_effect > a.min_detectable_effect
    assert "clustered by 10 clusters: CR1" in b.detectable and "not clustered" in a.clustering


def test_recipe_margins_name_the_compared_metrics():
    assert set(COMPARED_METRICS) == {metric_key(name) for name, *_ in [*BINARY, *CONTINUOUS]}
    with pytest.raises(SftEvalError, match="unknown metric 'exact'"):
        compare_outcomes(outcomes([True]), outcomes([True]), margins={"exact": 0.1})


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ('gate = "equivalence"', "`thresholds.gate` must be 'difference' or 'non-inferiority'"),
        ("max_regression = { exact_mach = 0.02 }", "did you mean exact_match"),
        ("max_regression = { chrf = -1.0 }", "`thresholds.max_regression.chrf` must be a finite number"),
        ('max_regression = { chrf = "2" }', "`thresholds.max_regression` must be a table of numbers"),
    ],
    ids=["unknown-gate", "misspelt-metric", "negative", "a-string"],
)
def test_a_bad_gate_or_margin_is_one_line(lines, says, tiny_variant):
    with pytest.raises(SftEvalError) as raised:
        load_recipe(tiny_variant({"[thresholds]": f"[thresholds]\n{lines}"}))
    assert says in str(raised.value) and "\n" not in str(raised.value), str(raised.value)


def test_a_recipes_gate_and_margins_load(tiny_variant):
    edits = {"[thresholds]": '[thresholds]\ngate = "non-inferiority"\nmax_regression = { exact_match = 0.05 }'}
    thresholds = load_recipe(tiny_variant(edits)).thresholds
    assert thresholds.gate == "non-inferiority" and thresholds.max_regression == {"exact_match": 0.05}


# -- the CLI --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def accepted(sft_pipeline, tmp_path_factory):
    """The session's default run written as a report JSON."""
    from sft_eval.report import write_report

    return write_report(sft_pipeline.report_context(), tmp_path_factory.mktemp("accepted")).parent / "sft_report.json"


def test_compare_on_the_tiny_recipes_report_says_what_it_could_not_see(accepted, tmp_path, cli):
    summary = tmp_path / "summary.md"
    text = cli.main("compare", str(accepted), str(accepted), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert text.returncode == 0, text.stderr
    assert "with 31 questions a drop of" in text.stdout and "would be missed one time in five" in text.stdout
    assert "would be missed one time in five" in summary.read_text(encoding="utf-8")
    gated = cli.main(
        "compare", str(accepted), str(accepted), "--gate", "non-inferiority", "--margin", "exact_match=0.02", "--json"
    )
    assert gated.returncode == 1, gated.stderr
    data = json.loads(gated.stdout)
    assert data["verdict"] == "not shown non-inferior" and data["not_shown_non_inferior"] == ["exact match"]
    cli.bad_input(cli.main("compare", str(accepted), str(accepted), "--margin", "exact_match"), "--margin")


@pytest.mark.parametrize(
    ("margin", "says"),
    [("exact_match=-1", "must be a finite number of at least 0, not -1.0"), ("chrf=nan", "not nan")],
    ids=["negative", "nan"],
)
def test_a_bad_margin_on_the_command_line_is_one_line(accepted, cli, margin, says):
    cli.bad_input(cli.main("compare", str(accepted), str(accepted), "--margin", margin), says)


def test_a_report_whose_recorded_gate_is_not_sft_evals_is_one_line(accepted, cli, tmp_path):
    """A gate sft-eval does not know is one line, and `--gate` overrides what the report recorded; margins that
    are not an object are not the format, refused where the report is read."""
    report = json.loads(accepted.read_text(encoding="utf-8"))
    report["thresholds"]["gate"] = "superiority"
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(report), encoding="utf-8")
    cli.bad_input(cli.main("compare", str(accepted), str(odd)), "odd.json: thresholds.gate is 'superiority'")
    assert cli.main("compare", str(accepted), str(odd), "--gate", "difference").returncode == 0, "overridden"
    report["thresholds"]["max_regression"] = "exact_match=0.02"
    odd.write_text(json.dumps(report), encoding="utf-8")
    said = 'odd.json: thresholds.max_regression is "exact_match=0.02", not an object'
    cli.bad_input(cli.main("compare", str(accepted), str(odd), "--gate", "difference"), said)


def test_the_planning_command_answers_before_any_question_is_written(cli):
    needed = cli.main("power", "--accuracy", "0.7", "--drop", "0.1", "--disagreement", "0.2", "--json")
    assert needed.returncode == 0, needed.stderr
    assert json.loads(needed.stdout)["questions"] == power.binary_questions_needed(0.1, 0.2, ALPHA)
    small = cli.main("power", "--accuracy", "0.7", "--questions", "5")
    assert small.returncode == 0 and "no drop is detectable" in small.stdout, small.stdout


def test_the_planning_commands_in_the_docs_run_as_written(cli):
    """docs/compare.md's "Planning" block, line by line; its comment's figure is what the command prints."""
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "compare.md").read_text(encoding="utf-8")
    block = text.split("## Planning: how many questions", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("sft-eval ")]
    assert len(lines) == 2, lines
    for line in lines:
        command, _, comment = line.partition("#")
        result = cli.main(*shlex.split(command)[1:])
        assert result.returncode == 0, result.stderr
        if "about" in comment:
            assert f"about {comment.split('about')[1].split()[0]} paired questions" in result.stdout, result.stdout
