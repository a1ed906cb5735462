"""What a recipe gives to evaluate with: its training rows, the held-out split, the questions and the tool items,
each read and validated once (and shared by a sweep's checkpoints, whose recipes differ only in `model.tuned`)."""

from __future__ import annotations

import functools
from pathlib import Path

from datasets import Dataset

from sft_eval.data import Question, ToolItem, load_questions, load_sft_rows, load_tool_items, split_held_out
from sft_eval.recipe import Recipe


class Inputs:
    """The recipe's data, read on first use: `questions` and `rows` (`data.train`'s, before any held-out split)
    when the caller has read and validated them already (`sft_eval.factory`)."""

    def __init__(
        self,
        recipe: Recipe,
        datasets_dir: Path,
        *,
        questions: list[Question] | None = None,
        rows: Dataset | None = None,
    ):
        self.recipe = recipe
        self.datasets_dir = datasets_dir  # where `datasets` keeps the rows' Arrow files (the cache's `datasets/`)
        self._questions = questions
        self._rows = rows

    @property
    def loaded_rows(self) -> Dataset:
        """`data.train`'s rows (an Arrow `Dataset`, memory-mapped under `datasets_dir`), read and validated once;
        `data.eval_fraction`'s rows still among them."""
        if self._rows is None:
            self._rows = load_sft_rows(self.recipe, cache_dir=self.datasets_dir)
        return self._rows

    @functools.cached_property
    def split(self) -> tuple[Dataset, Dataset | None]:
        """(the rows trained on, the held-out rows or None)."""
        fraction = self.recipe.data.eval_fraction
        if fraction is not None:
            return split_held_out(self.loaded_rows, fraction, self.recipe.seed)
        if self.recipe.data.eval is not None:
            return self.loaded_rows, load_sft_rows(self.recipe, cache_dir=self.datasets_dir, key="data.eval")
        return self.loaded_rows, None

    @property
    def rows(self) -> Dataset:
        """The rows the recipe trains on: `data.train`'s, less the `data.eval_fraction` share held out."""
        return self.split[0]

    @property
    def held_out_rows(self) -> Dataset | None:
        """The rows the held-out loss is measured on (`data.eval`, or `data.eval_fraction`'s share), or None."""
        return self.split[1]

    @property
    def held_out_source(self) -> str:
        """Where the held-out rows come from, as the report says it; empty without any."""
        data = self.recipe.data
        if data.eval:
            return f"data.eval: {data.eval}"
        return f"data.eval_fraction: {data.eval_fraction}" if data.eval_fraction else ""

    @property
    def questions(self) -> list[Question]:
        if self._questions is None:
            self._questions = load_questions(self.recipe)
        return self._questions

    @functools.cached_property
    def tool_items(self) -> list[ToolItem]:
        return load_tool_items(self.recipe)
