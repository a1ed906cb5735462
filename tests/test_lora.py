"""LoRA through PEFT: `[peft]` in a recipe, an adapter folder as the tuned model, and the two silent LoRA failures.

The checks are proven on real runs: a base whose end-of-turn row was never trained (zeroed, as Llama-3 base ships
its chat tokens' rows) trained with LoRA that leaves the row frozen is caught by the audit before training, and its
tuned answers are shown never to stop; the same run with the row trained is quiet and stops. A merged checkpoint
written by a hand-rolled merge that keeps only the LoRA deltas (the trained embedding lost) is caught by the merge
check; PEFT's own merge is quiet. Then docs/lora.md's sections run as written.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from sft_eval.adapters import adapter_mismatch
from sft_eval.audit import CheckId
from sft_eval.audit.adapter import check_trainable_tokens
from sft_eval.cache import FixtureCache
from sft_eval.errors import SftEvalError
from sft_eval.models import SMOLLM2_135M, save_random_checkpoint
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import FIXTURES_DIR, load_recipe

pytestmark = pytest.mark.slow  # LoRA runs of their own (540 steps for the shipped recipe and the guide's script)

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "lora.md"
LORA_RECIPE = FIXTURES_DIR / "recipes" / "tiny_lora.toml"
END_OF_TURN = "<|im_end|>"


def section_block(title: str, language: str, index: int = 0) -> str:
    """The `index`th `language` code block of the guide's (docs/lora.md) section `title` (any heading level)."""
    text = GUIDE.read_text(encoding="utf-8")
    start = re.search(rf"(?:^|\n)#+ {re.escape(title)}\n", text).end()
    end = re.search(r"\n#{2,} ", text[start:])  # the next heading (a code block's `# comment` is not one)
    body = text[start : start + end.start()] if end else text[start:]
    return re.findall(rf"```{language}\n(.*?)```", body, flags=re.S)[index]


def with_zeroed_rows(source: Path, folder: Path, tokenizer, tokens: list[str]) -> Path:
    """A copy of the checkpoint `source` whose embedding rows of `tokens` are zero (never trained), with the
    tokenizer saved beside it."""
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("MANIFEST.json"))
    weights = load_file(folder / "model.safetensors")
    ids = tokenizer.convert_tokens_to_ids(tokens)
    for name in weights:
        if name.endswith(("embed_tokens.weight", "lm_head.weight")):
            weights[name][ids] = 0.0
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def zeroed_base(tmp_path_factory, sft_pipeline) -> Path:
    """The tiny base with its end-of-turn row zeroed (tied: the input and output row at once)."""
    return with_zeroed_rows(
        sft_pipeline.base_model_dir, tmp_path_factory.mktemp("zeroed") / "base", sft_pipeline.tokenizer, [END_OF_TURN]
    )


@pytest.fixture(scope="module")
def untied_base(tmp_path_factory, sft_pipeline) -> Path:
    """A random untied checkpoint of the tiny shape, its end-of-turn rows zeroed in the embedding and the head."""
    tokenizer = sft_pipeline.tokenizer
    random = save_random_checkpoint(
        tmp_path_factory.mktemp("untied-random") / "model",
        tokenizer,
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        tie_word_embeddings=False,
    )
    return with_zeroed_rows(random, tmp_path_factory.mktemp("untied") / "base", tokenizer, [END_OF_TURN])


# -- peft.trainable_tokens, judged from the settings and the base's rows ----------------------------------------
TIED_CASES = [
    ({"target_modules": "all-linear"}, ["input", "output"]),
    ({"target_modules": "all-linear", "modules_to_save": ["embed_tokens"]}, ["output"]),  # the head stays frozen
    ({"target_modules": "all-linear", "trainable_token_indices": "EOT"}, ["output"]),
    ({"target_modules": "all-linear", "modules_to_save": ["embed_tokens"], "ensure_weight_tying": True}, []),
    ({"target_modules": "all-linear", "modules_to_save": ["lm_head", "embed_tokens"]}, []),
]


@pytest.mark.parametrize(("lora", "frozen"), TIED_CASES, ids=[str(i) for i in range(len(TIED_CASES))])
def test_trainable_tokens_on_a_tied_base(zeroed_base, sft_pipeline, lora, frozen):
    eot = sft_pipeline.tokenizer.convert_tokens_to_ids(END_OF_TURN)
    lora = {k: [eot] if v == "EOT" else v for k, v in lora.items()}
    found = check_trainable_tokens(sft_pipeline.tokenizer, zeroed_base, lora)
    if not frozen:
        assert found == []
        return
    (finding,) = found
    assert finding.check == CheckId.PEFT_TRAINABLE_TOKENS and finding.severity == "error"
    for role in ("input", "output"):
        assert (f"{role} row norm" in finding.message) == (role in frozen), finding.message
    assert "ensure_weight_tying = true" in finding.message


def test_trainable_tokens_on_an_untied_base(untied_base, sft_pipeline):
    tokenizer = sft_pipeline.tokenizer
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    only_input = check_trainable_tokens(tokenizer, untied_base, {"trainable_token_indices": [eot]})
    assert len(only_input) == 1 and "output row" in only_input[0].message and "input row" not in only_input[0].message
    assert '["embed_tokens", "lm_head"]' in only_input[0].message
    assert check_trainable_tokens(tokenizer, untied_base, {"modules_to_save": ["embed_tokens", "lm_head"]}) == []


def test_trainable_tokens_quiet_where_the_rows_are_trained(sft_pipeline):
    # the tiny base's ChatML rows are random, not zero: LoRA can learn to write them (the tiny LoRA recipe stops)
    assert check_trainable_tokens(sft_pipeline.tokenizer, sft_pipeline.base_model_dir, {}) == []


# -- the check is right: the frozen end-of-turn row never stops, the trained one does --------------------------
def lora_recipe(folder: Path, base: Path, peft: str, name: str, epochs: int = 20) -> Path:
    text = LORA_RECIPE.read_text(encoding="utf-8")
    text = text.replace('"../data/', f'"{(LORA_RECIPE.parent.parent / "data").resolve()}/')
    text = text.replace('base = "tiny"', f'base = "{base}"')
    text = text.replace("ensure_weight_tying = true", peft)
    text = text.replace('name = "tiny_lora"', f'name = "{name}"')
    text = text.replace("num_train_epochs = 20", f"num_train_epochs = {epochs}")
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


FROZEN_EPOCHS = 5  # 135 steps: the tied run learns to stop (all answers), the frozen one never does


@pytest.mark.parametrize(
    ("peft", "caught", "stops"),
    [
        ("ensure_weight_tying = false", True, False),
        ("ensure_weight_tying = true", False, True),
    ],
    ids=["head-frozen", "head-tied"],
)
def test_a_frozen_end_of_turn_row_never_stops(tmp_path, zeroed_base, peft, caught, stops):
    recipe = load_recipe(lora_recipe(tmp_path, zeroed_base, peft, "zeroed", epochs=FROZEN_EPOCHS))
    pipeline = Pipeline(recipe, FixtureCache(tmp_path / "cache"), device="cpu")
    found = [f for f in pipeline.findings if f.check == CheckId.PEFT_TRAINABLE_TOKENS]
    assert bool(found) == caught, found
    summary = pipeline.evaluation.tuned_summary
    if stops:
        assert summary.eos_stop_rate >= 0.9, summary
    else:
        assert summary.eos_stop_rate <= 0.1, summary  # the loss fell, and the model never writes <|im_end|>
    assert pipeline.training_run.peft["r"] == 16 and "embed_tokens" in pipeline.training_run.peft["modules_to_save"]


# -- peft.merge -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lora_pipeline(sft_pipeline) -> Pipeline:
    """The tiny LoRA recipe, trained here (cached beside the default's fixtures)."""
    return Pipeline(load_recipe(LORA_RECIPE), sft_pipeline.cache, device="cpu")


def hand_merged(pipeline: Pipeline, folder: Path) -> Path:
    """A merged checkpoint as a hand-rolled script writes it: W += (alpha / r) B @ A for every LoRA pair, the
    rest of the base as it was; the trained embedding (`modules_to_save`) is not carried over."""
    adapter = load_file(pipeline.tuned_model_dir / "adapter_model.safetensors")
    config = json.loads((pipeline.tuned_model_dir / "adapter_config.json").read_text(encoding="utf-8"))
    scale = config["lora_alpha"] / config["r"]
    shutil.copytree(pipeline.base_model_dir, folder, ignore=shutil.ignore_patterns("MANIFEST.json"))
    weights = load_file(folder / "model.safetensors")
    for name, a in adapter.items():
        if name.endswith(".lora_A.weight"):
            target = name.removeprefix("base_model.model.").removesuffix(".lora_A.weight") + ".weight"
            b = adapter[name.replace("lora_A", "lora_B")]
            weights[target] = weights[target] + scale * (b @ a)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_merge_check_quiet_on_peft_merge(lora_pipeline):
    assert lora_pipeline.merge_findings == []


def recipe_copy(folder: Path, edits: dict[str, str]) -> Path:
    """The tiny LoRA recipe with text edits, written to `folder` with its data paths made absolute."""
    text = LORA_RECIPE.read_text(encoding="utf-8")
    text = text.replace('"../data/', f'"{(LORA_RECIPE.parent.parent / "data").resolve()}/')
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    path = folder / "tiny_lora.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_merge_check_catches_a_merge_that_lost_rows(lora_pipeline, tmp_path):
    merged = hand_merged(lora_pipeline, tmp_path / "merged")
    edited = recipe_copy(tmp_path, {'chat_template = "chatml"': f'chat_template = "chatml"\nmerged = "{merged}"'})
    pipeline = Pipeline(load_recipe(edited), lora_pipeline.cache, device="cpu")
    (finding,) = pipeline.merge_findings
    assert finding.check == CheckId.PEFT_MERGE and finding.severity == "error"
    assert str(merged) in finding.message and "greedy next token differs" in finding.message


def test_a_merge_that_lost_rows_drifts_from_the_adapters_golden(lora_pipeline, tmp_path):
    """Golden outputs recorded from the LoRA adapter (judged as a run trained elsewhere), then the hand-rolled merge
    that dropped the trained embedding rows judged against them: drift, on any machine."""
    merged = hand_merged(lora_pipeline, tmp_path / "merged")
    data = FIXTURES_DIR / "data"

    def judged(tuned: Path) -> Pipeline:
        recipe = tmp_path / "proj" / "recipe.toml"
        recipe.parent.mkdir(exist_ok=True)
        recipe.write_text(
            f'name = "lora"\n[model]\nbase = "{lora_pipeline.base_model_dir}"\n'
            f'tokenizer = "{lora_pipeline.tuned_model_dir}"\ntuned = "{tuned}"\n[data]\n'
            f'train = "{data / "sft_train.jsonl"}"\n[eval]\nquestions_file = "{data / "eval_questions.jsonl"}"\n',
            encoding="utf-8",
        )
        return Pipeline(load_recipe(recipe), lora_pipeline.cache, device="cpu")

    assert judged(lora_pipeline.tuned_model_dir).golden(update=True).status == "recorded"
    verdict = judged(merged).golden()
    assert verdict.status == "drift" and "the largest difference" in verdict.diff, verdict


# -- an adapter that does not fit model.base, or cannot be read safely: one line, exit 2 ----------------------
@pytest.fixture(scope="module")
def adapter_dir(lora_pipeline) -> Path:
    return lora_pipeline.tuned_model_dir


def broken_adapter(adapter_dir: Path, folder: Path, edit) -> Path:
    copy = folder / "adapter"
    shutil.copytree(adapter_dir, copy)
    edit(copy)
    return copy


def edit_config(**changes):
    def edit(folder: Path) -> None:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
        (folder / "adapter_config.json").write_text(json.dumps({**config, **changes}), encoding="utf-8")

    return edit


def pickled_only(folder: Path) -> None:
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")


def other_shape(folder: Path) -> None:
    weights = load_file(folder / "adapter_model.safetensors")
    name = next(n for n in weights if n.endswith("q_proj.lora_A.weight"))
    weights[name] = weights[name][:, :64].contiguous()
    save_file(weights, folder / "adapter_model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (pickled_only, ["adapter_model.bin", "never unpickles"]),
        (other_shape, ["not an adapter for model.base", "q_proj.lora_A.weight", "[16, 64]"]),
        (edit_config(peft_type="IA3"), ["peft_type 'IA3'", "LoRA adapters only"]),
        (lambda f: (f / "adapter_config.json").write_text("{", encoding="utf-8"), ["adapter_config.json:1"]),
    ],
    ids=["pickled", "shapes", "not-lora", "not-json"],
)
def test_a_bad_adapter_is_one_line(adapter_dir, tmp_path, cli, edit, fragments):
    adapter = broken_adapter(adapter_dir, tmp_path, edit)
    recipe = recipe_copy(tmp_path, {'chat_template = "chatml"': f'chat_template = "chatml"\ntuned = "{adapter}"'})
    cli.bad_input(cli.main("report", "--recipe", str(recipe), "--out", str(tmp_path / "out")), *fragments)


def test_a_merged_checkpoint_without_an_adapter_is_one_line(sft_pipeline, tmp_path, cli):
    full = sft_pipeline.tuned_model_dir  # the default recipe's fully fine-tuned checkpoint
    recipe = recipe_copy(
        tmp_path, {'chat_template = "chatml"': f'chat_template = "chatml"\ntuned = "{full}"\nmerged = "{full}"'}
    )
    cli.bad_input(cli.main("audit", "--recipe", str(recipe)), "model.merged", "not a LoRA adapter")


def test_an_adapter_recorded_for_another_hub_model_is_refused(adapter_dir, tmp_path):
    adapter = broken_adapter(adapter_dir, tmp_path, edit_config(base_model_name_or_path="Qwen/Qwen3-0.6B-Base"))
    reason = adapter_mismatch(adapter, adapter_dir, "HuggingFaceTB/SmolLM2-135M")
    assert reason and "'Qwen/Qwen3-0.6B-Base'" in reason and "'HuggingFaceTB/SmolLM2-135M'" in reason
    assert adapter_mismatch(adapter_dir, adapter_dir.parent.parent, "HuggingFaceTB/SmolLM2-135M") is None


def test_an_adapter_on_a_base_of_another_shape_is_refused(adapter_dir, lora_pipeline, tmp_path):
    other = save_random_checkpoint(
        tmp_path / "other", lora_pipeline.tokenizer, **{**SMOLLM2_135M, "num_hidden_layers": 2}
    )
    assert adapter_mismatch(adapter_dir, lora_pipeline.base_model_dir, "tiny") is None
    reason = adapter_mismatch(adapter_dir, other, str(other))
    assert reason and "model.base's" in reason and "[49152, 576]" in reason, reason  # a tensor, both shapes


@pytest.mark.parametrize(
    "lora",
    [
        {"target_modules": ["embed_tokens", "q_proj"], "save_embedding_layers": True},  # the embedding saved too
        {"target_modules": ["q_proj"], "use_dora": True},  # DoRA's magnitude vectors
    ],
    ids=["embedding-lora", "dora"],
)
def test_adapters_peft_writes_fit_their_base(sft_pipeline, tmp_path, lora):
    from peft import LoraConfig, get_peft_model

    from sft_eval.models import load_model

    tokenizer = sft_pipeline.tokenizer
    shape = {"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    base = save_random_checkpoint(tmp_path / "base", tokenizer, num_attention_heads=4, **shape)
    save_embedding_layers = lora.pop("save_embedding_layers", "auto")
    model = get_peft_model(load_model(base, "cpu"), LoraConfig(r=4, task_type="CAUSAL_LM", **lora))
    model.save_pretrained(tmp_path / "adapter", save_embedding_layers=save_embedding_layers)
    assert adapter_mismatch(tmp_path / "adapter", base, str(base)) is None
    other = save_random_checkpoint(tmp_path / "other", tokenizer, num_attention_heads=4, **{**shape, "hidden_size": 32})
    assert "model.base's" in adapter_mismatch(tmp_path / "adapter", other, str(other))


def test_lora_runs_never_share_a_cache_entry_with_full_fine_tuning(sft_pipeline, lora_pipeline):
    """The suites' own cached runs (short runs, torchrun) are keyed with the LoRA settings: found when the LoRA
    suites and then the default ones ran on one cache, and the default torchrun check got the LoRA ranks' record."""
    built = []
    for pipeline in (sft_pipeline, lora_pipeline):
        built.append(
            pipeline.artifacts.cached("keying-probe", {"rows": 1}, lambda folder: (folder / "x").write_text("x"))
        )
    assert built[0] != built[1]


def test_peft_leaves_the_recipe_as_it_was(sft_pipeline):
    """PEFT extends the lists of the config it is given (modules_to_save gains `model.embed_tokens` on a tied model);
    the recipe's own `[peft]`, which keys the cache, must not change with it."""
    from peft import get_peft_model

    from sft_eval.trainer_config import lora_config

    recipe = load_recipe(LORA_RECIPE)
    config = lora_config(recipe)
    get_peft_model(sft_pipeline.load_base_model(), config)
    assert "model.embed_tokens" in config.modules_to_save  # what PEFT did to its config
    assert list(recipe.peft["modules_to_save"]) == ["embed_tokens"]  # and not to the recipe's


def test_peft_keys_are_checked_at_load(tmp_path, cli):
    typo = recipe_copy(tmp_path, {"lora_alpha = 32": "lora_alph = 32"})
    cli.bad_input(cli.main("plan", "--recipe", str(typo)), "unknown key `peft.lora_alph`", "peft.lora_alpha")
    rank = recipe_copy(tmp_path, {"r = 16": "r = 0"})
    cli.bad_input(cli.main("plan", "--recipe", str(rank)), "`peft.r` must be a whole number of at least 1")
    task = recipe_copy(tmp_path, {"r = 16": 'r = 16\ntask_type = "SEQ_CLS"'})
    cli.bad_input(cli.main("plan", "--recipe", str(task)), '`peft.task_type` must be "CAUSAL_LM"')
    merged = recipe_copy(tmp_path, {'chat_template = "chatml"': 'chat_template = "chatml"\nmerged = "nowhere"'})
    cli.bad_input(cli.main("plan", "--recipe", str(merged)), "`model.merged` must be a checkpoint folder")


def test_peft_missing_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` fails as it does where it is not installed
    with pytest.raises(SftEvalError) as raised:
        load_recipe(LORA_RECIPE)
    message = str(raised.value)
    assert str(LORA_RECIPE) in message and "[peft]" in message and "pip install 'sft-eval[peft]'" in message
    assert "\n" not in message


# -- docs/lora.md's LoRA recipe and "An adapter trained elsewhere", as written --------------------------------------
def test_the_guides_lora_commands_run(lora_pipeline, tmp_path, cli):
    """The guide's LoRA block: the suites and the report on the shipped LoRA recipe (its adapter cached by the
    fixture above); the report's training section says LoRA."""
    lines = [line for line in section_block("LoRA (PEFT)", "bash").splitlines() if line.strip()]
    env = {"SFT_EVAL_CACHE": str(lora_pipeline.cache.root)}
    repo = LORA_RECIPE.parent.parent.parent
    for line in lines:
        args = shlex.split(line.replace("reports/lora", str(tmp_path / "lora")))
        if args[0] == "pytest":
            result = cli.pytest(
                *args[1:], "-q", "-p", "no:randomly", "--sft-report-dir", str(tmp_path), cwd=repo, env=env
            )
        else:
            result = cli.run(*args[1:], cwd=repo, env=env)
        assert result.returncode == 0, f"{line}: {result.stdout[-3000:]} {result.stderr[-3000:]}"
    report = json.loads((tmp_path / "lora" / "sft_report.json").read_text(encoding="utf-8"))
    lora = report["training"]["peft"]
    assert (lora["method"], lora["r"], lora["lora_alpha"]) == ("LoRA", 16, 32)
    assert 0 < lora["trainable_parameters"] < lora["parameters"]
    html = (tmp_path / "lora" / "sft_report.html").read_text(encoding="utf-8")
    assert "<h3>LoRA</h3>" in html and "q_proj" in html


@pytest.fixture(scope="module")
def lora_user(tmp_path_factory, sft_pipeline, cli) -> Path:
    """The user's folder after their LoRA job: a base checkpoint, their data, the guide's train_lora.py run."""
    folder = tmp_path_factory.mktemp("lora-elsewhere")
    base = folder / "models" / "my-base"
    shutil.copytree(sft_pipeline.base_model_dir, base, ignore=shutil.ignore_patterns("MANIFEST.json"))
    sft_pipeline.tokenizer.save_pretrained(base)
    (folder / "data").mkdir()
    for name in ("sft_train.jsonl", "eval_questions.jsonl"):
        shutil.copy(FIXTURES_DIR / "data" / name, folder / "data" / name.replace("sft_", ""))
    (folder / "train_lora.py").write_text(section_block("An adapter trained elsewhere", "python"), encoding="utf-8")
    (folder / "recipe.toml").write_text(section_block("An adapter trained elsewhere", "toml"), encoding="utf-8")
    trained = cli.python("train_lora.py", cwd=folder)
    assert trained.returncode == 0, trained.stderr[-3000:]
    return folder


def test_the_guides_adapter_trained_elsewhere(lora_user, tmp_path, cli):
    run = lora_user / "runs" / "my-lora"
    last = run / "checkpoint-540"
    assert {"adapter_config.json", "adapter_model.safetensors", "trainer_state.json", "chat_template.jinja"} <= {
        p.name for p in last.iterdir()
    }
    assert not (last / "model.safetensors").exists()  # an adapter, not full weights
    cache = tmp_path / "cache"
    env = {"SFT_EVAL_CACHE": str(cache)}
    for line in [line for line in section_block("An adapter trained elsewhere", "bash").splitlines() if line]:
        args = shlex.split(line)
        if args[0] == "pytest":
            result = cli.pytest(*args[1:], "-v", cwd=lora_user, env=env)
            passed = re.findall(r"test_adapter\.py::(\w+) PASSED", result.stdout)
            assert sorted(passed) == [
                "test_lora_trains_the_template_tokens_the_base_never_trained",
                "test_merged_model_is_the_adapter_that_was_evaluated",
            ], result.stdout[-3000:]
        else:
            result = cli.run(*args[1:], cwd=lora_user, env=env)
        assert result.returncode == 0, f"{line}: {result.stdout[-3000:]} {result.stderr[-3000:]}"
    built = sorted(p.name.split("-")[0] for p in cache.iterdir() if p.is_dir()) if cache.is_dir() else []
    assert not {"tokenizer", "base", "tuned", "short"} & set(built), built  # nothing was built or trained
    report = json.loads((lora_user / "reports" / "my-lora" / "sft_report.json").read_text(encoding="utf-8"))
    assert report["training"]["source"].endswith("checkpoint-540/trainer_state.json")
    assert report["training"]["peft"]["r"] == 16 and report["training"]["global_step"] == 540
    assert not [f for f in report["audit"] if f["check"].startswith("peft.")]
