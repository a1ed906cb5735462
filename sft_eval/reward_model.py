"""The embedded reward judge: a tiny reward model trained here with TRL's `RewardTrainer`, cached like every fixture.

It starts from the tiny recipe's tuned model (a reward model starts from an SFT model, as InstructGPT's and TRL's
do), with a one-label score head, and learns the shipped preference pairs (`fixtures/data/reward_train.jsonl`,
made from the tiny recipe's training chats by `generate_reward.py`): the right short answer that ends its turn over
a wrong fact, a loop, an answer that never stops, and a leaked template marker. The calibration questions are held
out of those pairs; its accuracy on them is what vouches for it (`judgement.judge_run`).

`RewardConfig` defaults to bf16 and gradient checkpointing; on the CPU both are turned off, as `trainer_config`
does for `SFTConfig`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sft_eval.cache import FixtureCache, source_digest
from sft_eval.console import interactive
from sft_eval.errors import SftEvalError
from sft_eval.recipe import FIXTURES_DIR, load_recipe

if TYPE_CHECKING:
    import torch

REWARD_PAIRS = FIXTURES_DIR / "data" / "reward_train.jsonl"
TINY_RECIPE = FIXTURES_DIR / "recipes" / "tiny.toml"
# The reward model's training: every pair ten times, 16 pairs a step, twice TRL's default learning rate (a tiny model
# learns the facts' pairings slowly: at 2 epochs and 1e-4 it was right on 12 of the 18 calibration facts).
SETTINGS: dict[str, Any] = {"num_train_epochs": 10, "per_device_train_batch_size": 16, "learning_rate": 2e-4, "seed": 0}


def read_pairs(path: Path = REWARD_PAIRS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_reward_model(
    model_dir: Path, tokenizer: Any, rows: list[dict[str, Any]], output_dir: Path, device: torch.device
) -> tuple[Any, list[dict[str, Any]]]:
    """A one-label sequence classifier from the causal LM at `model_dir`, trained on `rows` by `RewardTrainer`:
    (the model, the trainer's log)."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, PrinterCallback
    from trl import RewardConfig, RewardTrainer

    from sft_eval.judge.reward import tokenized_pairs

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    on_cpu = device.type == "cpu"
    config = RewardConfig(
        output_dir=str(output_dir),
        save_strategy="no",
        report_to=[],
        logging_steps=10,
        use_cpu=on_cpu,
        bf16=False if on_cpu else None,  # RewardConfig defaults to bf16 mixed precision
        gradient_checkpointing=False,  # and to gradient checkpointing: a tiny model needs no memory saved
        disable_tqdm=not interactive(),
        data_seed=SETTINGS["seed"],
        **SETTINGS,
    )
    dataset = Dataset.from_list(tokenized_pairs(tokenizer, rows))
    trainer = RewardTrainer(model=model.to(device), args=config, train_dataset=dataset, processing_class=tokenizer)
    if config.disable_tqdm:
        trainer.remove_callback(PrinterCallback)
    trainer.train()
    trained: Any = trainer.model
    return trained.eval(), list(trainer.state.log_history)


def load_reward_model(folder: Path, device: str) -> tuple[Any, Any]:
    """A reward model folder (a one-label sequence classifier and its tokenizer, with a chat template), on `device`,
    in eval mode; anything else is one line naming `judge.model`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from sft_eval.hub import require_local_or_reachable
    from sft_eval.models import resolve_device

    require_local_or_reachable(str(folder), key="judge.model", kind="model")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(folder))
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # transformers raises many types here; all mean "not a loadable reward model"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SftEvalError(f"judge.model: cannot load a reward model from {folder}: {reason}") from None
    if model.config.num_labels != 1:
        raise SftEvalError(
            f"judge.model: {folder} has {model.config.num_labels} labels; a reward model has one (a scalar per answer)"
        )
    if not tokenizer.chat_template:
        raise SftEvalError(f"judge.model: {folder}'s tokenizer has no chat template to render the answers with")
    if tokenizer.pad_token_id is None and model.config.pad_token_id is None:
        raise SftEvalError(f"judge.model: {folder} has no pad token (its config's pad_token_id is where it reads)")
    return model.to(resolve_device(device)).eval(), tokenizer


def embedded_reward_model(cache: FixtureCache, device: torch.device) -> Path:
    """The embedded reward model's folder (the model, its tokenizer, `reward_training.json`), trained on first use
    from the tiny recipe's tuned model, which is built first if it must be."""
    from sft_eval.artifacts import Artifacts
    from sft_eval.inputs import Inputs

    recipe = load_recipe(TINY_RECIPE)
    artifacts = Artifacts(recipe, cache, device, Inputs(recipe, cache.root / "datasets"))
    tuned = artifacts.tuned_entry / "model"

    def build(folder: Path) -> None:
        tokenizer = artifacts.tokenizer
        model, log = train_reward_model(tuned, tokenizer, read_pairs(), folder / "trainer", device)
        shutil.rmtree(folder / "trainer", ignore_errors=True)
        model.save_pretrained(folder / "model")
        tokenizer.save_pretrained(folder / "model")
        (folder / "reward_training.json").write_text(json.dumps({"settings": SETTINGS, "log_history": log}, indent=1))

    inputs = {"tuned": artifacts.tuned_entry.name, "pairs": source_digest(str(REWARD_PAIRS)), "settings": SETTINGS}
    return artifacts.cached("reward-model", inputs, build) / "model"
