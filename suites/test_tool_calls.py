"""Did SFT teach the model to call tools? The recipe's `eval.tool_items`, asked as conversations with their tools.

Each answer's call is parsed with the template's own response parser (transformers' `parse_response`) and scored
field by field; the tuned model must call the expected tool with arguments its schema accepts on
`min_tool_call_rate` of the items, and exactly the expected call on `min_tool_call_exact`. Skipped for a recipe
without tool items.
"""

from __future__ import annotations

import pytest

from sft_eval.verdict import tool_checks


@pytest.fixture(scope="session")
def tool_summaries(sft_pipeline):
    if not sft_pipeline.tool_items:
        pytest.skip("the recipe has no eval.tool_items")
    return sft_pipeline.tool_summary("tuned"), sft_pipeline.tool_summary("base")


@pytest.mark.parametrize("check", ["tools.call", "tools.call_exact"])
def test_tuned_model_makes_the_expected_calls(tool_summaries, sft_recipe, check):
    """`tools.call`: the expected tool with arguments its schema accepts; `tools.call_exact`: exactly the call."""
    verdict = tool_checks(sft_recipe.thresholds, *tool_summaries)[check]
    if verdict.passed is None:
        pytest.skip(verdict.message)
    assert verdict.passed, verdict.message


def test_tuned_model_calls_no_tool_where_a_text_is_expected(tool_summaries):
    tuned, _ = tool_summaries
    if not tuned.texts:
        pytest.skip("no tool item expects a text")
    assert tuned.text_called == 0, f"the tuned model called a tool on {tuned.text_called:.0%} of the text items"
