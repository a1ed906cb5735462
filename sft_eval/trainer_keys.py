"""The recipe's `[sft]` and `[peft]` tables checked against the fields of TRL's `SFTConfig` (read from its sources,
`sftconfig`) and PEFT's `LoraConfig`: an unknown key named with its close matches, a value that cannot work (a
batch of 0, fields PEFT owns) named by key."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from sft_eval.errors import SftEvalError
from sft_eval.sftconfig import sft_config_schema
from sft_eval.tables import reject_unknown


def check_sft_names(sft: Mapping[str, Any], where: str) -> None:
    reject_unknown(sft, set(sft_config_schema()["fields"]), where, "sft.")
    if "output_dir" in sft:
        raise SftEvalError(f"{where}: `sft.output_dir` is chosen by sft-eval (the fixture cache); remove it")


# peft.LoraConfig fields a recipe does not set: PEFT fills them in when it saves or loads an adapter.
_PEFT_OWNED = ("peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision", "inference_mode")


def lora_config_class() -> Any:
    """`peft.LoraConfig`; without peft installed, one line naming the extra that installs it."""
    try:
        from peft import LoraConfig
    except ImportError:
        raise SftEvalError(
            "[peft] (LoRA) needs the peft package, which is not installed: pip install 'sft-eval[peft]'"
        ) from None
    return LoraConfig


def check_peft(peft: Any, where: str) -> None:
    """`[peft]` names peft.LoraConfig fields (close matches for a typo), for a causal LM, and builds a config."""
    if not isinstance(peft, dict):
        raise SftEvalError(f"{where}: [peft] must be a table of peft.LoraConfig fields")
    try:
        lora = lora_config_class()
    except SftEvalError as exc:
        raise SftEvalError(f"{where}: {exc}") from None
    known = {f.name for f in dataclasses.fields(lora) if f.init} - set(_PEFT_OWNED)
    reject_unknown(peft, known, where, "peft.")
    if peft.get("task_type", "CAUSAL_LM") != "CAUSAL_LM":
        raise SftEvalError(f'{where}: `peft.task_type` must be "CAUSAL_LM" (a chat model), not {peft["task_type"]!r}')
    rank = peft.get("r", 8)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise SftEvalError(f"{where}: `peft.r` must be a whole number of at least 1, not {rank!r}")
    try:
        lora(**{"task_type": "CAUSAL_LM", **peft})
    except (ValueError, TypeError) as exc:
        raise SftEvalError(f"{where}: [peft] is not a valid peft.LoraConfig: {str(exc).splitlines()[0]}") from None


# [sft] values SFTConfig accepts but the trainer rejects later, deep inside a run (a ZeroDivisionError, an empty
# dataloader, a silently untrained model): checked at load, each as one line naming the key.
_SFT_AT_LEAST_ONE = ("per_device_train_batch_size", "gradient_accumulation_steps", "max_length")


def check_sft_values(sft: Mapping[str, Any], where: str) -> None:
    def number(key: str) -> float | None:
        value = sft.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SftEvalError(f"{where}: `sft.{key}` must be a number, not {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise SftEvalError(f"{where}: `sft.{key}` must be finite, not {value}")
        return float(value)

    for key in _SFT_AT_LEAST_ONE:
        value = number(key)
        if value is not None and (value < 1 or value != int(value)):
            raise SftEvalError(f"{where}: `sft.{key}` must be a whole number of at least 1, not {sft[key]!r}")
    if (every := number("logging_steps")) is not None and every <= 0:  # below 1: a ratio of the run's steps
        raise SftEvalError(f"{where}: `sft.logging_steps` must be above 0, not {sft['logging_steps']!r}")
    if (rate := number("learning_rate")) is not None and rate <= 0:
        raise SftEvalError(f"{where}: `sft.learning_rate` must be above 0, not {sft['learning_rate']!r}")
    if (seed := number("seed")) is not None and not 0 <= seed < 2**32:
        raise SftEvalError(f"{where}: `sft.seed` must be between 0 and 2**32 - 1, not {sft['seed']!r}")
    max_steps, epochs = number("max_steps"), number("num_train_epochs")
    if max_steps is not None and (max_steps == 0 or max_steps < -1):
        raise SftEvalError(
            f"{where}: `sft.max_steps` must be at least 1 (-1: num_train_epochs decides), not {max_steps:g}"
        )
    if (max_steps is None or max_steps < 0) and epochs is not None and epochs <= 0:
        raise SftEvalError(
            f"{where}: `sft.num_train_epochs` must be above 0 (it is {epochs:g}, and max_steps does not "
            "override it): nothing would train"
        )
