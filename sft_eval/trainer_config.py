"""The recipe's `[sft]` as a `trl.SFTConfig`: what a run will be configured with, known before any training.

The audit (which builds the trainer's labels), `sft-eval plan` and training all read the config from here, so
none of them reaches into a later stage for it. sft-eval only fixes what it must own (the output folder, the
seed, no checkpoints, no external loggers) and, on the CPU, turns off bf16 mixed precision unless the recipe asks
for it (TRL defaults it on); every such choice is returned as an adjustment, said in the run's record.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from sft_eval.console import interactive
from sft_eval.errors import SftEvalError
from sft_eval.plan import BatchPlan, plan_from_config
from sft_eval.recipe import Recipe
from sft_eval.sftconfig import sft_config_schema
from sft_eval.trainer_keys import lora_config_class

# Settings every run's record keeps, with whatever else `[sft]` set.
ALWAYS_RECORDED = (
    "seed",
    "bf16",
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "logging_steps",
    "dataloader_drop_last",
)


def recipe_config(recipe: Recipe) -> dict[str, Any]:
    """The recipe's own SFTConfig as a dict (TRL's defaults where `[sft]` is silent), built without training."""
    with tempfile.TemporaryDirectory() as out:
        config, _ = sft_config(recipe, out)
    return config.to_dict()


def recorded_settings(config: Mapping[str, Any], recipe: Recipe) -> dict[str, Any]:
    """What a run's record keeps of its SFTConfig (as a dict): the recipe's own keys and `ALWAYS_RECORDED`."""
    return {k: v for k, v in config.items() if k in recipe.sft or k in ALWAYS_RECORDED}


# The SFTConfig fields a batch plan reads (see plan.plan_from_config); sft-eval's own settings (sft_config) change
# none of them, and neither does SFTConfig's __post_init__.
PLAN_FIELDS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "dataloader_drop_last",
)


def recipe_plan(recipe: Recipe, rows: int, world_size: int = 1) -> BatchPlan:
    """The plan of the recipe's own SFTConfig (TRL's defaults where `[sft]` is silent), before any training: the
    recipe's values over SFTConfig's defaults as `sft_config_schema` keeps them, so a plan imports no TRL (a test
    holds it equal to the plan of the SFTConfig built for training)."""
    defaults = sft_config_schema()["defaults"]
    if any(k not in recipe.sft and k not in defaults for k in PLAN_FIELDS):  # a default that is no JSON value
        return plan_from_config(recipe_config(recipe), rows, world_size)
    return plan_from_config({k: recipe.sft.get(k, defaults[k]) for k in PLAN_FIELDS}, rows, world_size)


def lora_config(recipe: Recipe) -> Any:
    """The recipe's `[peft]` as a `peft.LoraConfig` for a causal LM (what `SFTTrainer(peft_config=...)` gets), or
    None for full fine-tuning."""
    if recipe.peft is None:
        return None
    # a copy: PEFT extends the lists it is given (modules_to_save gains the tied module's full name), and the
    # recipe's own lists key the cache
    return lora_config_class()(**copy.deepcopy({"task_type": "CAUSAL_LM", **recipe.peft}))


def sft_config(recipe: Recipe, output_dir: str, *, on_cpu: bool | None = None) -> tuple[Any, list[str]]:
    """The recipe's `[sft]` as a `trl.SFTConfig`, plus the settings sft-eval chose and why. `on_cpu`: train on the
    CPU (the model is there: `--device cpu`) or not; None: on the CPU when no GPU is available."""
    from trl import SFTConfig

    values = dict(recipe.sft)
    adjustments = []
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if on_cpu is None:
        import torch

        on_cpu = not torch.cuda.is_available()
    if on_cpu:
        values["use_cpu"] = True
        if "bf16" not in values:
            values["bf16"] = False
            adjustments.append("on the CPU: bf16 mixed precision off (TRL's default is on; set sft.bf16 to choose)")
        if distributed:
            values.setdefault("ddp_backend", "gloo")  # torchrun on CPU: NCCL needs GPUs
    if distributed:
        values.setdefault("ddp_find_unused_parameters", False)  # a decoder uses every parameter
    if "activation_checkpointing" in {f.name for f in dataclasses.fields(SFTConfig)}:
        # transformers 5 renamed gradient_checkpointing, and TRL still defaults the old name (to True), so every
        # SFTConfig warns unless the new name is set: the recipe's value (or TRL's default) is given by its new name
        old = values.pop("gradient_checkpointing", True)
        values.setdefault("activation_checkpointing", old)
    values.setdefault("seed", recipe.seed)
    values.setdefault("data_seed", recipe.seed)
    values.setdefault("disable_tqdm", not interactive())
    try:
        config = SFTConfig(output_dir=output_dir, save_strategy="no", report_to=[], **values)
    except (ValueError, TypeError) as exc:
        where = recipe.path or "recipe"
        raise SftEvalError(f"{where}: [sft] is not a valid trl.SFTConfig: {str(exc).splitlines()[0]}") from None
    return config, adjustments
