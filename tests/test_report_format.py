"""The report's JSON is the format `sft_eval.report.format` states: the types hold what `build_context` writes, field
by field, closed and strict (pydantic reads them), and docs/report-format.md's tables are generated from them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from sft_eval.pipeline import Pipeline
from sft_eval.recipe import DEFAULT_RECIPE, load_recipe
from sft_eval.report import format as report_format
from sft_eval.report import read_report_json

DOCS = Path(__file__).resolve().parent.parent / "docs" / "report-format.md"


@pytest.fixture(scope="module")
def adapter():
    from pydantic import TypeAdapter

    return TypeAdapter(report_format.ReportData)


@pytest.fixture(scope="module")
def written(sft_pipeline, tmp_path_factory):
    """The tiny run's report JSON as `write_report` writes it, with every optional part filled: pytest outcomes
    with a failure and a skip, speed, and a baseline (the run's own report, so `against_baseline` is there)."""
    from sft_eval.report import write_report

    plain = tmp_path_factory.mktemp("plain")
    write_report(sft_pipeline.report_context(), plain)
    outcomes = {
        "passed": 3,
        "failed": 1,
        "skipped": 1,
        "failures": [{"nodeid": "suites/test_x.py::test_y", "when": "call", "message": "AssertionError: loss rose"}],
        "skips": [{"nodeid": "suites/test_x.py::test_z", "reason": "needs a GPU"}],
    }
    baseline = (str(plain / "sft_report.json"), read_report_json(plain / "sft_report.json"))
    full = tmp_path_factory.mktemp("full")
    write_report(sft_pipeline.report_context(outcomes, speed={"batched engine": 2450.0}, baseline=baseline), full)
    # a third model: `[model] baseline` naming a folder (the base's own weights), its answers beside the others
    recipe = load_recipe(tiny_variant_text(f'[model]\nbaseline = "{sft_pipeline.base_model_dir}"\n', plain))
    three = tmp_path_factory.mktemp("three")
    write_report(Pipeline(recipe, cache=sft_pipeline.cache).report_context(), three)
    return {
        name: (folder / "sft_report.json").read_text()
        for name, folder in (("plain", plain), ("full", full), ("three", three))
    }


def tiny_variant_text(model: str, folder: Path) -> Path:
    """The default recipe with `model` as its [model] header, written to `folder` with its data paths absolute."""
    text = DEFAULT_RECIPE.read_text(encoding="utf-8").replace("[model]\n", model, 1)
    text = text.replace('"../data/', f'"{(DEFAULT_RECIPE.parent.parent / "data").resolve()}/')
    path = folder / "three.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("which", ["plain", "full", "three"])
def test_the_types_hold_what_the_report_writes(adapter, written, which):
    """Every field `build_context` writes is declared, of the declared type, and every declared field is written:
    a field added to the report and not to the format (or the other way) fails here."""
    report = adapter.validate_json(written[which])
    assert report["format"] == report_format.REPORT_FORMAT
    assert any("expected_nll" in card for card in report["cards"])  # on the questions with an expected answer
    assert report["categories"], "the tiny questions carry categories: the category rows are held too"
    if which == "full":
        assert report["outcomes"]["skips"] and report["speed"] and report["against_baseline"] is not None
    if which == "three":
        assert report["models"] == ["base", "tuned", "baseline"] and report["summary"]["others"]["baseline"]
        assert all(set(card["others"]) == {"baseline"} for card in report["cards"])


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda r: r["cards"][0]["tuned"].update(score=1.0), "cards.0.tuned.score"),  # a field the format lacks
        (lambda r: r["training"].pop("steps"), "training.steps"),  # a declared field not written
        (lambda r: r["summary"]["tuned"].update(answers="28"), "summary.tuned.answers"),  # "28" for 28
        (lambda r: r["audit"].append({"check": "x", "severity": "fatal", "message": "", "evidence": ""}), "severity"),
        (lambda r: r.update(format="sft-eval-report/2"), "format"),
    ],
    ids=["undeclared-field", "missing-field", "string-for-integer", "unknown-severity", "other-version"],
)
def test_a_report_that_differs_from_the_types_is_refused_naming_the_field(adapter, written, change, where):
    from pydantic import ValidationError

    report = json.loads(written["plain"])
    changed = copy.deepcopy(report)
    change(changed)
    with pytest.raises(ValidationError) as caught:
        adapter.validate_json(json.dumps(changed))
    assert where in str(caught.value)


def test_the_docs_tables_are_generated_from_the_types():
    """docs/report-format.md between its markers is `field_table()`: a field added, renamed or redescribed in
    format.py and not regenerated fails here (regenerate: paste `field_table()` between the markers)."""
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("<!-- report fields: generated by sft_eval.report.format.field_table() -->\n")
    block = text[start : text.index("<!-- end of report fields -->")].split("\n", 1)[1]
    assert block == report_format.field_table()
    assert "| `stop_reason` | string |" in block and "### Card" in block


def test_a_report_field_without_a_docstring_fails_the_table(monkeypatch):
    from typing_extensions import TypedDict

    class Undocumented(TypedDict):
        """A record with one field left undocumented."""

        documented: int
        """Has its docstring."""
        undocumented: int

    Undocumented.__pydantic_config__ = {"use_attribute_docstrings": True}
    monkeypatch.setattr(report_format, "ReportData", Undocumented)
    with pytest.raises(ValueError, match=r"report field `ReportData.undocumented` has no docstring"):
        report_format.field_table()


def test_the_thresholds_record_names_every_recipe_threshold():
    """`ThresholdsData` is what `build_context` writes from `recipe.Thresholds` (every field, by `asdict`): a
    threshold added to the recipe and not to the format fails here (and `conform` would refuse the report)."""
    import dataclasses

    from sft_eval.recipe import Thresholds
    from sft_eval.schema import ThresholdsData

    assert set(ThresholdsData.__annotations__) == {f.name for f in dataclasses.fields(Thresholds)}
    assert ThresholdsData.__required_keys__ == {"max_repetition"}, "what the page reads of every report"


def test_a_report_is_read_against_the_types_all_the_way_down(written):
    """`read_report_json` walks the types (`validate.conform`), not hand-written checks: a wrong value anywhere is
    one line naming its path, and the reports the run wrote conform."""
    from sft_eval.errors import SftEvalError
    from sft_eval.report.format import ReportData, conform

    for text in written.values():
        conform(json.loads(text), ReportData, "sft_report.json")
    report = json.loads(written["full"])
    for change, says in (
        (lambda r: r["against_baseline"]["metrics"][0].update(kind="ordinal"), "against_baseline.metrics[0].kind is"),
        (lambda r: r["signals"]["lengths"].update(ratio="2"), 'signals.lengths.ratio is "2", not a number or null'),
        (lambda r: r["training"]["steps"].insert(0, 3), "training.steps[0] is 3, not an object"),
        (lambda r: r["cards"][4]["tuned"].update(score=1.0), "cards[4].tuned holds `score`, which the format"),
        (lambda r: r["outcomes"]["failures"][0].pop("when"), "outcomes.failures[0] has no `when`"),
    ):
        changed = copy.deepcopy(report)
        change(changed)
        with pytest.raises(SftEvalError) as raised:
            conform(changed, ReportData, "sft_report.json")
        assert str(raised.value).startswith("sft_report.json: ") and says in str(raised.value), str(raised.value)
