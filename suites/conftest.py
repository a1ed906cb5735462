"""Shared by the suites: the audit of the recipe, or of a shipped template, computed once per session."""

from __future__ import annotations

import functools
import re

import pytest

from sft_eval.chat import shipped_templates
from sft_eval.data import load_questions
from sft_eval.errors import SftEvalError
from sft_eval.plugin import session_recipe
from sft_eval.records import TrainingRun


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`question_index` runs a test once per question of `--recipe`, with the question in its id:
    `test_tuned_answer_is_sane[q05-what-is-the-capital-of-france]`."""
    if "question_index" not in metafunc.fixturenames:
        return
    try:
        questions = load_questions(session_recipe(metafunc.config))
    except SftEvalError as exc:
        raise pytest.UsageError(str(exc)) from None
    ids = [f"q{i:02d}-{_slug(q.question)}" for i, q in enumerate(questions)]
    metafunc.parametrize("question_index", range(len(questions)), ids=ids)


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-") or "blank"


@pytest.fixture(scope="session")
def audit_of(sft_pipeline):
    """`audit_of("recipe")`: the recipe's template, tokenizer and trainer labels; `audit_of("chatml")`: a template."""

    @functools.cache
    def audit(name: str):
        if name == "recipe":
            return sft_pipeline.findings
        _require_embedded(sft_pipeline)
        return sft_pipeline.audit(template=str(shipped_templates()[name]))

    return audit


@pytest.fixture(scope="session")
def embedded_tokenizer(sft_pipeline):
    """The embedded tiny tokenizer, for the audits whose expectations are calibrated on it (shipped and TRL
    templates); under another recipe those tests skip, saying so."""
    _require_embedded(sft_pipeline)
    return sft_pipeline.tokenizer


def _require_embedded(pipeline) -> None:
    if (pipeline.recipe.model.tokenizer or pipeline.recipe.model.base) != "tiny":
        pytest.skip(
            "the expected findings of shipped and TRL templates are calibrated on the embedded tokenizer, and this "
            "recipe brings its own; run without --recipe to audit them (the recipe's template is audited as `recipe`)"
        )


@pytest.fixture(scope="session")
def cached(sft_pipeline):
    """`cached(stage, inputs, build)`: a folder built once by `build(folder)` and kept in the fixture cache (the
    pipeline's own cache, keyed with the recipe's base model and tokenizer): short runs are fixtures too."""
    return sft_pipeline.cached


@pytest.fixture(scope="session")
def short_run(sft_pipeline):
    """A short SFT run of the recipe with other settings: (rows, sft overrides) -> TrainingRun, cached on disk."""

    @functools.cache
    def run(rows: int, **sft) -> TrainingRun:
        if rows > len(sft_pipeline.rows):
            pytest.skip(f"this check trains on {rows} rows and the recipe has {len(sft_pipeline.rows)}")
        return sft_pipeline.variant_run(rows, **sft)[0]

    return run
