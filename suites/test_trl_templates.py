"""The real chat templates TRL ships (trl/chat_templates/*.jinja), audited with the embedded tokenizer.

None may crash the audit. Each error-level finding on them is expected and explained here; a template not
listed must have none. A TRL upgrade that adds or changes a template shows up as a failure to explain.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
import trl

from sft_eval.audit import unexplained_errors
from sft_eval.audit.checks import run_checks, tokenizer_for_template

TRL_TEMPLATES = sorted((Path(trl.__file__).parent / "chat_templates").glob("*.jinja"))

MULTIMODAL = "multimodal template: message content must be a list of typed parts, so a plain string renders nothing"
EXPLAINED = {
    "idefics3*": ({"template.render"}, MULTIMODAL),
    "smolvlm*": ({"template.render"}, MULTIMODAL),
    "llava_next*": ({"template.render"}, MULTIMODAL),
    "gptoss*": (
        {"template.generation_prompt"},
        "gpt-oss serves '<|start|>assistant' and the model writes its channel; training puts "
        "'<|channel|>final<|message|>' before the answer",
    ),
    # No error since issue 30, each for its reason: GLM-4.5 serves '<think></think>' and training writes
    # '<think></think>\n' (the served prompt is a prefix; the model writes the newline); Qwen3 drops the empty think
    # block from earlier turns only (a warning for a template audited alone, an error with multi-turn rows).
    "muse_glimmer*": (
        {"template.generation_prompt"},
        "Muse Glimmer serves '<|start|>assistant' and the model writes its recipient; training puts "
        "' to=user<|message|>' before the answer",
    ),
}


def expected_errors(name: str) -> tuple[set[str], str]:
    for pattern, (checks, reason) in EXPLAINED.items():
        if fnmatch.fnmatch(name, pattern):
            return checks, reason
    return set(), "no error expected"


@pytest.mark.parametrize("path", TRL_TEMPLATES, ids=[p.stem for p in TRL_TEMPLATES])
def test_trl_template_audit_matches_its_explanation(embedded_tokenizer, path):
    findings = run_checks(tokenizer_for_template(embedded_tokenizer, path.read_text(encoding="utf-8")))
    expected, reason = expected_errors(path.name)
    problem = unexplained_errors(findings, expected, reason, path.name)
    assert not problem, problem
