"""One way to a pipeline, for the CLI, the pytest plugin and the torchrun entry alike.

`read_inputs` reads the recipe with its limits and validates its questions; `open_pipeline` reads the training
rows where the caller wants them validated up front, and only then imports torch, transformers and TRL (seconds)
to build the `Pipeline` on what was read. So every entry point applies the same limits and answers bad input
the same way, in one line, before the heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sft_eval.recipe import Recipe, load_recipe, with_limits

if TYPE_CHECKING:
    from sft_eval.pipeline import Pipeline


@dataclass(frozen=True)
class Inputs:
    """The recipe as the run will use it (limits applied) and its validated questions."""

    recipe: Recipe
    questions: list[Any]  # sft_eval.data.Question
    tool_items: list[Any]  # sft_eval.data.ToolItem: `eval.tool_items`, validated with the questions


def read_inputs(
    recipe: str | Path, *, max_train_rows: int | None = None, max_eval_questions: int | None = None
) -> Inputs:
    """The recipe file read and validated, cut down by the limits, and its questions (and tool items) read and
    validated. The recipe first: a bad one is answered before `sft_eval.data` imports `datasets` (half a second)."""
    limited = with_limits(load_recipe(recipe), max_train_rows=max_train_rows, max_eval_questions=max_eval_questions)
    from sft_eval.data import load_questions, load_tool_items

    return Inputs(limited, load_questions(limited), load_tool_items(limited))


def open_pipeline(
    inputs: Inputs,
    *,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    answer_cache: bool = True,
    read_rows: bool = False,
    quiet: bool = False,
    builds: bool = True,
) -> Pipeline:
    """The `Pipeline` for `inputs`. `read_rows`: read and validate the training rows first, before torch is
    imported (the CLI's commands that use them); otherwise they are read when a stage first needs them.
    `builds=False`: a fixture missing from the cache is `cache.NotBuilt`, never built (torchrun's ranks)."""
    from sft_eval.artifacts import named_folders
    from sft_eval.cache import FixtureCache
    from sft_eval.data import load_sft_rows
    from sft_eval.hub import require_local_or_reachable

    cache = FixtureCache(cache_dir, builds=builds)
    for key, source, kind in named_folders(inputs.recipe):  # a checkpoint or tokenizer folder (or hub id)
        require_local_or_reachable(inputs.recipe.resolve(source), key=key, kind=kind)
    rows = load_sft_rows(inputs.recipe, cache_dir=cache.root / "datasets") if read_rows else None

    from sft_eval.console import configure_libraries
    from sft_eval.pipeline import Pipeline

    configure_libraries(quiet=quiet)
    return Pipeline(inputs.recipe, cache, device, answer_cache=answer_cache, questions=inputs.questions, rows=rows)
