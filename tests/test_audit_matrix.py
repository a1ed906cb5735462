"""Issue 30: no false alarms on the models people fine-tune. Real templates of ten families, crossed with the data
shapes a recipe has (single-turn, a system message, multi-turn; `enable_thinking` off and on where the template
has it), each audited with the family's published stop ids. Every error a cell expects carries its reason; a cell
that expects none must have none.

Real tokenizers come from ../shared/realworld/tokenizers; the families shipped there as tokenizer configs only
(Gemma, Gemma 3, SmolLM3, Phi-4-mini, gpt-oss) are audited with the embedded tokenizer adapted to their template.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sft_eval.audit import unexplained_errors
from sft_eval.audit.checks import run_checks, tokenizer_for_template
from sft_eval.tokenizer import load_tokenizer

pytestmark = pytest.mark.realworld

# generation_config.json eos_token_id of each released model (its model card's files); a random checkpoint with
# only the tokenizer's eos is not that model. Real tokenizers: ids; template configs: the tokens' strings.
STOP_IDS = {
    "SmolLM2-135M-Instruct": [2],  # <|im_end|>
    "Qwen2.5-0.5B-Instruct": [151645, 151643],  # <|im_end|>, <|endoftext|>
    "Qwen3-0.6B": [151645, 151643],
    "Phi-3-mini-4k-instruct": [32000, 32001, 32007],  # <|endoftext|>, <|assistant|>, <|end|>
    "Mistral-7B-Instruct-v0.1": [2],  # </s>
}
STOP_STRINGS = {
    "gemma-ortx": ["<eos>", "<end_of_turn>"],
    "gemma-3-4b-it-ortx": ["<eos>", "<end_of_turn>"],
    "smollm3-ortx": ["<|im_end|>"],
    "phi-4-mini-ortx": ["<|endoftext|>", "<|end|>"],
    "gpt-oss-ortx": ["<|return|>", "<|endoftext|>", "<|call|>"],
}

USER, ANSWER = {"role": "user", "content": "Name a primary colour."}, {"role": "assistant", "content": "Red."}
SHAPES = {
    "single-turn": [{"messages": [USER, ANSWER]}],
    "system": [{"messages": [{"role": "system", "content": "Answer in one word."}, USER, ANSWER]}],
    "multi-turn": [
        {"messages": [USER, ANSWER, {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "Blue."}]}
    ],
}

NONE = (set(), "served as trained")
NO_REASONING = (
    {"template.thinking"},
    "thinking on, rows without reasoning: every answer is trained after an empty think block, so the model learns "
    "to close the block it is served at once",
)
DROPS_HISTORY = (
    {"template.thinking"},
    "Qwen3 drops the think block from earlier turns: multi-turn rows train them on text never served",
)
DOUBLE_BOS = ({"template.double_bos"}, "the template writes <s> and the Llama tokenizer adds another by default")
NO_SYSTEM_ROLE = ({"template.render"}, "Gemma's template raises on a system message, and the rows send one")
GPT_OSS = (
    {"template.generation_prompt"},
    "gpt-oss serves '<|start|>assistant'; training puts '<|channel|>final<|message|>' before the answer",
)
# (family, shape, enable_thinking) -> (expected error ids, why); a cell not listed expects none.
EXPECTED = {
    ("Qwen3-0.6B", "single-turn", True): NO_REASONING,
    ("Qwen3-0.6B", "system", True): NO_REASONING,
    ("Qwen3-0.6B", "multi-turn", False): DROPS_HISTORY,
    ("Qwen3-0.6B", "multi-turn", True): ({"template.thinking"}, f"{NO_REASONING[1]}; {DROPS_HISTORY[1]}"),
    **{("Mistral-7B-Instruct-v0.1", shape, False): DOUBLE_BOS for shape in SHAPES},
    ("gemma-ortx", "system", False): NO_SYSTEM_ROLE,
    **{("gpt-oss-ortx", shape, thinking): GPT_OSS for shape in SHAPES for thinking in (False, True)},
}


def _template_of(folder: Path) -> str:
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if (folder / "chat_template.json").is_file():
        return json.loads((folder / "chat_template.json").read_text(encoding="utf-8"))["chat_template"]
    return json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))["chat_template"]


@pytest.fixture(scope="module")
def family_tokenizers(realworld_dir, sft_tokenizer):
    """Each family's tokenizer with its own template, and its published stop ids."""
    families = {}
    for name, stop_ids in STOP_IDS.items():
        families[name] = (load_tokenizer(realworld_dir / "tokenizers" / name), stop_ids)
    for name, strings in STOP_STRINGS.items():
        tokenizer = tokenizer_for_template(sft_tokenizer, _template_of(realworld_dir / "template-configs" / name))
        tokenizer.add_special_tokens({"additional_special_tokens": strings}, replace_extra_special_tokens=False)
        families[name] = (tokenizer, tokenizer.convert_tokens_to_ids(strings))
    return families


THINKING = {"Qwen3-0.6B", "smollm3-ortx", "gpt-oss-ortx"}  # templates with an enable_thinking switch
CELLS = [
    (family, shape, thinking)
    for family in [*STOP_IDS, *STOP_STRINGS]
    for shape in SHAPES
    for thinking in ((False, True) if family in THINKING else (False,))
]


@pytest.mark.parametrize(
    ("family", "shape", "thinking"), CELLS, ids=[f"{f}-{s}-{'think' if t else 'nothink'}" for f, s, t in CELLS]
)
def test_a_family_audits_with_exactly_the_errors_its_recipe_meets(family_tokenizers, family, shape, thinking):
    tokenizer, stop_ids = family_tokenizers[family]
    findings = run_checks(tokenizer, enable_thinking=thinking, generation_eos=stop_ids, rows=SHAPES[shape])
    expected, reason = EXPECTED.get((family, shape, thinking), NONE)
    problem = unexplained_errors(findings, expected, reason, f"{family} {shape} enable_thinking={thinking}")
    assert not problem, problem


def test_the_stop_ids_are_the_families_end_of_turn_tokens(family_tokenizers):
    """The published ids must name special (added) tokens of each tokenizer, or every cell would be lenient."""
    for family, (tokenizer, stop_ids) in family_tokenizers.items():
        names = tokenizer.convert_ids_to_tokens(stop_ids)
        added = {*tokenizer.get_added_vocab(), *tokenizer.all_special_tokens}
        assert all(name in added for name in names), f"{family}: {names} are not all special or added tokens"


@pytest.fixture(scope="module")
def qwen3_checkpoint(realworld_dir, tmp_path_factory) -> Path:
    """Qwen3-0.6B's real tokenizer and template over a random one-layer model of its vocabulary, with the model
    card's stop ids in generation_config.json: the lesson's own model family, small enough to audit in seconds."""
    from transformers import GenerationConfig

    from sft_eval.models import save_random_checkpoint

    tokenizer = load_tokenizer(realworld_dir / "tokenizers" / "Qwen3-0.6B")
    folder = tmp_path_factory.mktemp("qwen3-shaped")
    config = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    save_random_checkpoint(folder, tokenizer, vocab_size=len(tokenizer), **config)
    GenerationConfig(eos_token_id=STOP_IDS["Qwen3-0.6B"], pad_token_id=tokenizer.pad_token_id).save_pretrained(folder)
    return folder


QWEN3_RECIPE = """name = "qwen3"
[model]
base = "{base}"
chat_template = "tokenizer"
[data]
train = "{train}"
[sft]
max_steps = 1
[eval]
enable_thinking = {thinking}
questions = ["Name a primary colour."]
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "thinking", "expected"),
    [
        ("single-turn", "false", set()),
        ("multi-turn", "false", DROPS_HISTORY[0]),
        ("single-turn", "true", NO_REASONING[0]),
    ],
    ids=["single-turn-nothink-clean", "multi-turn-errs", "thinking-without-reasoning-errs"],
)
def test_the_qwen3_recipe_audits_as_its_rows_and_thinking_say(
    qwen3_checkpoint, tmp_path, cli, shape, thinking, expected
):
    """Issue 30's user: Qwen3's own template, single-turn rows, enable_thinking = false: `sft-eval audit` exits 0
    with no error (it used to say template.thinking). Multi-turn rows, or thinking on with rows that carry no
    reasoning, exit 1 with template.thinking alone (see NO_REASONING and DROPS_HISTORY for why)."""
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(row) for row in SHAPES[shape] * 8) + "\n", encoding="utf-8")
    recipe = tmp_path / "qwen3.toml"
    recipe.write_text(QWEN3_RECIPE.format(base=qwen3_checkpoint, train=train, thinking=thinking), encoding="utf-8")
    result = cli.run("audit", "--recipe", str(recipe), "--sft-cache", str(tmp_path / "cache"), "--json")
    assert result.returncode == (1 if expected else 0), result.stdout[-3000:] + result.stderr[-2000:]
    findings = json.loads(result.stdout)["findings"]
    assert {f["check"] for f in findings if f["severity"] == "error"} == expected, findings
