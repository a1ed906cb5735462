"""Real tokenizers with their own templates, and the chat templates llama.cpp tests against.

Material nobody on this project wrote (../shared/realworld, or $SFT_EVAL_REALWORLD); skipped where absent.
Each error-level finding is expected and explained; anything else must be clean.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sft_eval.audit import unexplained_errors
from sft_eval.audit.checks import run_checks, tokenizer_for_template
from sft_eval.models import generation_eos_ids
from sft_eval.tokenizer import load_tokenizer

pytestmark = pytest.mark.realworld
REALWORLD = Path(os.environ.get("SFT_EVAL_REALWORLD", Path(__file__).parent.parent.parent / "shared" / "realworld"))

REAL_TOKENIZERS = {
    "SmolLM2-135M-Instruct": (set(), "ChatML, eos <|im_end|> (pad = eos, but TRL's collator keeps its labels)"),
    "Qwen2.5-0.5B-Instruct": (set(), "ChatML with a default system prompt"),
    "Qwen3-0.6B": (
        set(),
        "Qwen3 drops the empty think block from earlier assistant turns only: audited alone (single-turn assumed) "
        "a warning; test_audit_matrix.py holds the error with multi-turn rows",
    ),
    "Mistral-7B-Instruct-v0.1": (
        {"template.double_bos"},
        "the template writes <s> and the Llama tokenizer adds another when a prompt is tokenized with defaults",
    ),
    "Phi-3-mini-4k-instruct": (
        {"template.stop_token"},
        "turns end with <|end|> but the tokenizer's eos is <|endoftext|>, and no generation_config ships here",
    ),
    "DialoGPT-small": (set(), "turns are separated by <|endoftext|>, which is also eos"),
}


@pytest.mark.parametrize("name", sorted(REAL_TOKENIZERS))
def test_real_tokenizer_with_its_own_template(name):
    if not REALWORLD.is_dir():
        pytest.skip(f"real-world material not found at {REALWORLD} (set SFT_EVAL_REALWORLD)")
    folder = REALWORLD / "tokenizers" / name
    findings = run_checks(load_tokenizer(folder), generation_eos=generation_eos_ids(str(folder)))
    expected, reason = REAL_TOKENIZERS[name]
    problem = unexplained_errors(findings, expected, reason, name)
    assert not problem, problem


LLAMA_CPP = sorted((REALWORLD / "llama.cpp-templates").glob("*.jinja")) if REALWORLD.is_dir() else []
QWEN_THINK = (
    "with thinking off it serves an empty think block that training puts before the last answer only: audited "
    "alone (single-turn assumed) a warning, an error with multi-turn rows"
)
THINK_NEVER_TRAINED = "with thinking off it serves an empty think block that training never puts before an answer"
LEFT_TO_THE_MODEL = (
    "the served prompt is a prefix of the training text and the model writes the rest of the think block itself"
)
SERVES_HEADER_ONLY = (
    "it serves the bare assistant header; training has more before the answer, which the model must write"
)
TOOLS_REQUIRED = "a tool-use variant: it renders only when `tools` (or `functions`) are passed"
STOPS_BEFORE_WHITESPACE = (
    "the served prompt stops before whitespace training writes ahead of the answer ('assistant:' vs 'assistant: ', "
    "'</think>' vs '</think>\\n'): right for BPE, and template.prefix finds the served tokens a prefix of the trained"
)
LLAMA_CPP_EXPECTED = {
    "Apriel-1.6-15b-Thinker-fixed": (
        {"template.prefix", "template.whitespace"},
        "its system prompt is indented in the template source; it serves 'Here are my reasoning steps:' after the "
        "assistant header, which training never shows",
    ),
    "Cohere2MoE": (
        {"template.generation_prompt", "template.prefix"},
        "it serves <|START_THINKING|> where training has <|START_TEXT|> before the answer",
    ),
    "CohereForAI-c4ai-command-r-plus-tool_use": ({"template.render"}, TOOLS_REQUIRED),
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use": (
        {"template.generation_prompt", "template.prefix"},
        "it serves an empty thinking block where training has <|START_RESPONSE|>",
    ),
    "GLM-4.6": (set(), f"it serves '<think></think>' and training has '<think></think>\\n': {LEFT_TO_THE_MODEL}"),
    "Kimi-K2-Thinking": (set(), f"it trains an empty '<think></think>' that it does not serve: {LEFT_TO_THE_MODEL}"),
    "Kimi-K3": ({"template.generation_prompt"}, "it serves an open think section that training closes empty"),
    "MiniMax-M3": ({"template.generation_prompt"}, "training has '</mm:think>' before the answer, serving does not"),
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use": ({"template.render"}, TOOLS_REQUIRED),
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use": ({"template.render"}, TOOLS_REQUIRED),
    "Qwen-QwQ-32B": ({"template.thinking"}, THINK_NEVER_TRAINED),
    "Qwen-Qwen3-0.6B": (set(), QWEN_THINK),
    "Qwen3.5-4B": (set(), QWEN_THINK),
    "Reka-Edge": (set(), STOPS_BEFORE_WHITESPACE),
    "StepFun3.5-Flash": (set(), f"it serves an open '<think>' that training closes empty: {LEFT_TO_THE_MODEL}"),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": ({"template.thinking"}, THINK_NEVER_TRAINED),
    "deepseek-ai-DeepSeek-V3.2": (
        {"template.generation_prompt", "template.thinking"},
        "it serves '<think></think>' where training has only '</think>' before the answer",
    ),
    "fireworks-ai-llama-3-firefunction-v2": ({"template.render"}, TOOLS_REQUIRED),
    "google-gemma-4-31B-it": (
        {"template.prefix"},
        "it serves an empty thought channel that training never puts before an answer",
    ),
    "google-gemma-4-31B-it-interleaved": (
        {"template.prefix"},
        "it serves an empty thought channel that training never puts before an answer",
    ),
    "llama-cpp-rwkv-world": (
        {"template.stop_token", "template.thinking"},
        "turns are separated by blank lines, no stop token; with thinking off it serves a think block never trained",
    ),
    "meetkai-functionary-medium-v3.2": ({"template.generation_prompt"}, "training has the recipient 'all\\n' too"),
    "mistralai-Mistral-Nemo-Instruct-2407": (
        {"template.render"},
        "it puts the system prompt only into a final user turn: a conversation ending with an "
        "answer is trained without it",
    ),
    "muse-glimmer": ({"template.generation_prompt"}, SERVES_HEADER_ONLY),
    "openai-gpt-oss-120b": ({"template.generation_prompt"}, SERVES_HEADER_ONLY),
    "openbmb-MiniCPM5-1B": ({"template.thinking"}, THINK_NEVER_TRAINED),
    "poolside-Laguna-XS-2.1": (set(), STOPS_BEFORE_WHITESPACE),
    "poolside-Laguna-XS.2": (set(), STOPS_BEFORE_WHITESPACE),
    "upstage-Solar-Open-100B": ({"template.generation_prompt"}, SERVES_HEADER_ONLY),
}


@pytest.mark.parametrize("path", LLAMA_CPP, ids=[p.stem for p in LLAMA_CPP])
def test_llama_cpp_template_audit_matches_its_explanation(embedded_tokenizer, path):
    findings = run_checks(tokenizer_for_template(embedded_tokenizer, path.read_text(encoding="utf-8")))
    expected, reason = LLAMA_CPP_EXPECTED.get(path.stem, (set(), "no error expected"))
    problem = unexplained_errors(findings, expected, reason, path.stem)
    assert not problem, problem
