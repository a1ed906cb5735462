"""sft-eval: check a supervised fine-tuning run before and after it happens.

The lesson's helpers are here as library functions that return data (printing is the caller's choice).
"""

from __future__ import annotations

__version__ = "0.1.0"

from sft_eval.data import dataset_table
from sft_eval.errors import SftEvalError
from sft_eval.generation import ask, generate_response
from sft_eval.models import load_model_and_tokenizer
from sft_eval.recipe import Recipe, load_recipe

__all__ = [
    "Recipe",
    "SftEvalError",
    "ask",
    "dataset_table",
    "generate_response",
    "load_model_and_tokenizer",
    "load_recipe",
]
