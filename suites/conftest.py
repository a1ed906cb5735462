"""Shared by the suites: the audit of the recipe, or of a shipped template, computed once per session."""

from __future__ import annotations

import functools
import re

import pytest

from sft_eval.chat import shipped_templates
from sft_eval.kernels import pin_cpu_kernels
from sft_eval.plugin import session_inputs
from sft_eval.records import TrainingRun

# Before any tensor is computed: the fixtures trained here are the same model on any x86-64 CPU with AVX2
# (sft_eval.kernels), so their golden outputs are checked there, not skipped.
pin_cpu_kernels()

MARKERS = {
    "bench": "generation speed benchmarks (pytest-benchmark); selected with -m bench",
    "distributed": "runs training in two processes with torchrun (gloo)",
    "realworld": "uses the real tokenizers and templates in ../shared/realworld (skipped where absent)",
}


def pytest_configure(config: pytest.Config) -> None:
    """The suites' markers, registered where the suites run (a user's project need not know them)."""
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Benchmarks run only when asked for (`-m bench`), also from the installed package, whose session has no
    pyproject of ours to say `-m 'not bench'`."""
    if config.option.markexpr:
        return
    benches = [item for item in items if item.get_closest_marker("bench")]
    if benches:
        config.hook.pytest_deselected(items=benches)
        items[:] = [item for item in items if not item.get_closest_marker("bench")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`question_index` runs a test once per question of `--recipe`, with the question in its id:
    `test_tuned_answer_is_sane[q05-what-is-the-capital-of-france]`."""
    if "question_index" not in metafunc.fixturenames:
        return
    questions = session_inputs(metafunc.config).questions  # read once, with the pipeline's (a usage error if bad)
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
def trains_here(sft_pipeline) -> None:
    """Checks that train runs of their own (the batch-plan grid, accumulation, two processes) need the recipe to
    train here; a recipe judging a run trained elsewhere (`[model] tuned`) trains nothing, so they skip."""
    if sft_pipeline.recipe.model.tuned is not None:
        pytest.skip(
            f"the recipe judges a run trained elsewhere ({sft_pipeline.recipe.model.tuned}): nothing trains here; "
            "its own record is checked instead (test_training.py)"
        )


@pytest.fixture(scope="session")
def cached(sft_pipeline, trains_here):
    """`cached(stage, inputs, build)`: a folder built once by `build(folder)` and kept in the fixture cache (the
    pipeline's own cache, keyed with the recipe's base model and tokenizer): short runs are fixtures too."""
    return sft_pipeline.cached


@pytest.fixture(scope="session")
def short_run(sft_pipeline, trains_here):
    """A short SFT run of the recipe with other settings: (rows, sft overrides) -> TrainingRun, cached on disk."""

    @functools.cache
    def run(rows: int, **sft) -> TrainingRun:
        if rows > len(sft_pipeline.rows):
            pytest.skip(f"this check trains on {rows} rows and the recipe has {len(sft_pipeline.rows)}")
        return sft_pipeline.variant_run(rows, **sft)[0]

    return run
