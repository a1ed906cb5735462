"""sft-eval: check a supervised fine-tuning run before and after it happens.

The lesson's helpers are here as library functions that return data (printing is the caller's choice).
They are imported on first use, so `sft-eval plan` and the recipe loader start without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.7.0"  # part of every cache key: bump when a cached artifact changes shape

_EXPORTS = {
    "Recipe": "sft_eval.recipe",
    "SftEvalCallback": "sft_eval.callback",
    "SftEvalError": "sft_eval.errors",
    "SftEvalRecorder": "sft_eval.training",
    "ask": "sft_eval.generation.local",
    "dataset_table": "sft_eval.data",
    "generate_response": "sft_eval.generation.local",
    "load_model_and_tokenizer": "sft_eval.models",
    "load_recipe": "sft_eval.recipe",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sft_eval' has no attribute {name!r}")
