"""The chat template contract: what training renders is what serving renders, and the model can stop.

Parametrized over the recipe's own tokenizer and template (`recipe`) and every template shipped in
fixtures/templates (audited with the embedded tokenizer adapted to each). A finding a template is known to
have is asserted as expected, with the reason, never skipped.
"""

from __future__ import annotations

import pytest

from sft_eval.chat import shipped_templates

TEMPLATES = ["recipe", *shipped_templates()]
EXPECTED = {
    ("lesson_fallback", "template.generation_prompt"): (
        "the lesson's fallback template ignores add_generation_prompt: the served prompt has no 'Assistant:' "
        "header, so the model continues the user's turn"
    ),
}


def assert_check(audit_of, name: str, check: str) -> None:
    found = [f for f in audit_of(name) if f.check == check and f.severity == "error"]
    if (name, check) in EXPECTED:
        assert found, f"{name}: expected {check} ({EXPECTED[name, check]}), the audit found nothing"
        return
    assert not found, f"{name}: {check}: {found[0].message}\n  evidence: {found[0].evidence}"


@pytest.mark.parametrize("template", TEMPLATES)
def test_renders_every_role_multi_turn(audit_of, template):
    assert_check(audit_of, template, "template.render")


@pytest.mark.parametrize("template", TEMPLATES)
def test_no_whitespace_leaks_from_template_source(audit_of, template):
    assert_check(audit_of, template, "template.whitespace")


@pytest.mark.parametrize("template", TEMPLATES)
def test_generation_prompt_opens_the_assistant_turn(audit_of, template):
    assert_check(audit_of, template, "template.generation_prompt")


@pytest.mark.parametrize("template", TEMPLATES)
def test_generation_prompt_is_prefix(audit_of, template):
    assert_check(audit_of, template, "template.prefix")


@pytest.mark.parametrize("template", TEMPLATES)
def test_single_bos(audit_of, template):
    assert_check(audit_of, template, "template.double_bos")


@pytest.mark.parametrize("template", TEMPLATES)
def test_assistant_turn_ends_with_a_stop_token(audit_of, template):
    assert_check(audit_of, template, "template.stop_token")


@pytest.mark.parametrize("template", TEMPLATES)
def test_think_block_served_as_trained(audit_of, template):
    assert_check(audit_of, template, "template.thinking")


@pytest.mark.parametrize("template", TEMPLATES)
def test_no_special_token_strings_in_content(audit_of, template):
    assert_check(audit_of, template, "template.special_in_content")


@pytest.mark.parametrize("template", TEMPLATES)
def test_padding_keeps_end_of_turn_labels(audit_of, template):
    assert_check(audit_of, template, "tokenizer.pad")


@pytest.mark.parametrize("template", TEMPLATES)
def test_renders_the_same_text_every_time_and_every_day(audit_of, template):
    """Warnings too: a template that stamps the date makes training and serving differ from one day to the next."""
    found = [f for f in audit_of(template) if f.check == "template.nondeterministic"]
    assert not found, f"{template}: {found[0].message}\n  evidence: {found[0].evidence}"


@pytest.mark.parametrize("template", TEMPLATES)
def test_earlier_turns_render_the_same_as_the_conversation_goes_on(audit_of, template):
    """template.prefix_preserving: an error only where the recipe's rows are multi-turn (the shipped templates are
    audited alone, where it is a warning the report shows)."""
    assert_check(audit_of, template, "template.prefix_preserving")
