"""The audit's entry: what `sft-eval audit`, the suites and the report run, from plain inputs.

Three ways in, each a function of data (no pipeline): a recipe's own tokenizer, rows and base model
(`audit_recipe`); a template file audited with a tokenizer adapted to it (`audit_template_file`); a tokenizer
folder with its own template or another (`audit_tokenizer_folder`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sft_eval.audit import CheckId, Finding, guarded
from sft_eval.audit.adapter import check_adapter_base, check_trainable_tokens
from sft_eval.audit.checkpoint import audit_checkpoint, audit_tuned_checkpoint
from sft_eval.audit.checks import run_checks, tokenizer_for_template
from sft_eval.audit.labels import audit_labels
from sft_eval.audit.template import could_not_run, renders
from sft_eval.audit.tools import check_items_served
from sft_eval.chat import load_template
from sft_eval.data import Rows, ToolItem
from sft_eval.models import generation_eos_ids
from sft_eval.recipe import Recipe
from sft_eval.tokenizer import load_tokenizer


def audit_recipe(
    recipe: Recipe,
    tokenizer: PreTrainedTokenizerBase,
    rows: Rows,
    model_dir: str | Path,
    load_model: Callable[[], PreTrainedModel],
    *,
    tuned_dir: str | Path | None = None,
    tuned_is_adapter: bool = False,
    lora: Mapping[str, Any] | None = None,
    tool_items: Sequence[ToolItem] = (),
) -> list[Finding]:
    """The recipe's template, tokenizer and rows; its base checkpoint's files (`model_dir`: vocabulary, embedding
    rows, generation config, read without loading weights); and the labels its trainer builds, for which
    `load_model()` gives the base model (called only when the template renders). `tuned_dir`, a run trained
    elsewhere: its saved template, stop ids and generation defaults against what training used (an adapter
    folder's config and generation config are the base's). `lora`, a LoRA run's settings (the recipe's `[peft]`
    or the adapter's config): whether it trains the template tokens' untrained rows. `tool_items`, the recipe's
    `eval.tool_items`: each served the prompt training renders before its answer."""
    findings = run_checks(
        tokenizer,
        enable_thinking=recipe.eval.enable_thinking,
        generation_eos=generation_eos_ids(str(model_dir)),
        rows=rows,
        system_message=recipe.eval.system_message,
        assistant_only_loss=bool(recipe.sft.get("assistant_only_loss", False)),
    )
    findings += audit_checkpoint(tokenizer, model_dir)
    if lora is not None:
        findings += guarded(CheckId.PEFT_TRAINABLE_TOKENS, lambda: check_trainable_tokens(tokenizer, model_dir, lora))
    if tuned_dir is not None:
        findings += audit_tuned_checkpoint(tokenizer, tuned_dir, config_folder=model_dir if tuned_is_adapter else None)
        if tuned_is_adapter:
            findings += check_adapter_base(tuned_dir, model_dir, recipe.model.base)
    if renders(findings) and tool_items:
        thinking = recipe.eval.enable_thinking
        findings += guarded(
            CheckId.TEMPLATE_PREFIX_PRESERVING,
            lambda: check_items_served(tokenizer, tool_items, enable_thinking=thinking),
        )
    if renders(findings):
        findings += audit_labels(recipe, load_model(), tokenizer, rows)
    return could_not_run(findings)


def audit_template_file(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, template: str | Path) -> list[Finding]:
    """A template file alone, with `tokenizer` adapted to it (its special strings registered), so a template needs
    no tokenizer of its own; no model is involved, so no generation-config or checkpoint checks."""
    source = load_template(str(template), where="--template")
    adapted = tokenizer_for_template(tokenizer, source)
    return run_checks(adapted, enable_thinking=recipe.eval.enable_thinking)


def audit_tokenizer_folder(recipe: Recipe, folder: str | Path, template: str | Path | None = None) -> list[Finding]:
    """A tokenizer folder (offline) with its own chat template, or `template` instead; its generation_config's
    stop ids and its checkpoint files when they are there."""
    tokenizer = load_tokenizer(str(folder), key="--tokenizer")
    if template is not None:
        tokenizer.chat_template = load_template(str(template), where="--template")
    findings = run_checks(
        tokenizer, enable_thinking=recipe.eval.enable_thinking, generation_eos=generation_eos_ids(str(folder))
    )
    return could_not_run(findings + audit_checkpoint(tokenizer, folder))
