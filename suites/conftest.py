"""Shared by the suites: the audit of the recipe, or of a shipped template, computed once per session."""

from __future__ import annotations

import functools

import pytest

from sft_eval.chat import shipped_templates
from sft_eval.pipeline import audit_findings


@pytest.fixture(scope="session")
def audit_of(sft_pipeline):
    """`audit_of("recipe")`: the recipe's template, tokenizer and trainer labels; `audit_of("chatml")`: a template."""

    @functools.cache
    def audit(name: str):
        if name == "recipe":
            return sft_pipeline.findings
        return audit_findings(sft_pipeline, template=str(shipped_templates()[name]))

    return audit
