"""Shared by the suites: the audit of the recipe, or of a shipped template, computed once per session."""

from __future__ import annotations

import dataclasses
import functools
from types import MappingProxyType

import pytest

from sft_eval.chat import shipped_templates
from sft_eval.pipeline import audit_findings
from sft_eval.training import TrainingRun, train_sft


@pytest.fixture(scope="session")
def audit_of(sft_pipeline):
    """`audit_of("recipe")`: the recipe's template, tokenizer and trainer labels; `audit_of("chatml")`: a template."""

    @functools.cache
    def audit(name: str):
        if name == "recipe":
            return sft_pipeline.findings
        return audit_findings(sft_pipeline, template=str(shipped_templates()[name]))

    return audit


@pytest.fixture(scope="session")
def short_run(sft_pipeline, tmp_path_factory):
    """A short SFT run of the recipe with other settings: (rows, sft overrides) -> TrainingRun, memoised."""
    runs: dict[tuple, TrainingRun] = {}

    def run(rows: int, **sft) -> TrainingRun:
        key = (rows, tuple(sorted(sft.items())))
        if key not in runs:
            settings = {**sft_pipeline.recipe.sft, "logging_steps": 1, "warmup_steps": 0, **sft}
            recipe = dataclasses.replace(sft_pipeline.recipe, sft=MappingProxyType(settings))
            out = tmp_path_factory.mktemp("short-run")
            runs[key] = train_sft(
                recipe, sft_pipeline.load_base_model(), sft_pipeline.tokenizer, sft_pipeline.rows[:rows], str(out)
            )
        return runs[key]

    return run
