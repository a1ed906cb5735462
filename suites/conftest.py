"""Shared by the suites: the audit of the recipe, or of a shipped template, computed once per session."""

from __future__ import annotations

import functools
import json
import re
import shutil

import pytest

from sft_eval.cache import cache_key
from sft_eval.chat import shipped_templates
from sft_eval.data import load_questions
from sft_eval.errors import SftEvalError
from sft_eval.pipeline import audit_findings
from sft_eval.plugin import session_recipe
from sft_eval.training import TrainingRun, train_sft


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
        return audit_findings(sft_pipeline, template=str(shipped_templates()[name]))

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
    """`cached(stage, inputs, build)`: a folder built once by `build(folder)` and kept in the fixture cache,
    keyed by the inputs, the recipe's base model and the library versions (short runs are fixtures too)."""

    def get(stage: str, inputs: dict, build):
        _, base_key = sft_pipeline._base_entry
        _, tokenizer_key = sft_pipeline._tokenizer_entry
        key = cache_key(stage, {**inputs, "base": base_key, "tokenizer": tokenizer_key})
        return sft_pipeline.cache.get_or_build(stage, key, build)

    return get


@pytest.fixture(scope="session")
def short_run(sft_pipeline, cached):
    """A short SFT run of the recipe with other settings: (rows, sft overrides) -> TrainingRun, cached on disk."""

    @functools.cache
    def run(rows: int, **sft) -> TrainingRun:
        if rows > len(sft_pipeline.rows):
            pytest.skip(f"this check trains on {rows} rows and the recipe has {len(sft_pipeline.rows)}")
        settings = {**sft_pipeline.recipe.sft, "logging_steps": 1, "warmup_steps": 0, **sft}

        def build(folder):
            recipe = sft_pipeline.recipe.with_sft(**settings)
            result = train_sft(
                recipe,
                sft_pipeline.load_base_model(dropout=False),
                sft_pipeline.tokenizer,
                sft_pipeline.rows[:rows],
                str(folder / "trainer"),
            )
            shutil.rmtree(folder / "trainer", ignore_errors=True)
            (folder / "run.json").write_text(json.dumps(result.to_dict()), encoding="utf-8")

        folder = cached("short-run", {"rows": rows, "sft": settings, "dropout": False}, build)
        return TrainingRun.from_dict(json.loads((folder / "run.json").read_text(encoding="utf-8")))

    return run
