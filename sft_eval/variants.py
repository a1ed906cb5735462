"""The suites' short runs: the recipe trained again on its first rows with a few `[sft]` settings changed (a
batch, a learning rate, a deliberately broken trainer), from the same base and tokenizer, cached on disk."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sft_eval.artifacts import Artifacts, read_training_run, write_training_run
from sft_eval.errors import SftEvalError
from sft_eval.recipe import Recipe
from sft_eval.records import TrainingRun

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class Variants:
    """Short runs of one recipe over its `artifacts` (base, tokenizer, rows)."""

    def __init__(self, recipe: Recipe, artifacts: Artifacts):
        self.recipe, self.artifacts = recipe, artifacts

    def recipe_for(self, **sft: Any) -> Recipe:
        """The recipe as a short variant run trains it: a loss logged every step, no warmup, `sft` on top."""
        return self.recipe.with_sft(**{"logging_steps": 1, "warmup_steps": 0, **sft})

    def train(
        self, rows: int, output_dir: str | Path, *, dropout: bool = False, **sft: Any
    ) -> tuple[TrainingRun, PreTrainedModel]:
        """Train the base model (dropout off unless asked) on the recipe's first `rows` rows with
        `recipe_for(**sft)`, uncached: (what the trainer did, the trained model)."""
        from sft_eval.training import train_sft

        trained_on = self.artifacts.inputs.rows
        if rows > len(trained_on):
            raise SftEvalError(f"a variant run needs {rows} training rows and the recipe has {len(trained_on)}")
        model = self.artifacts.load_base_model(dropout=dropout)
        tokenizer = self.artifacts.tokenizer
        return train_sft(self.recipe_for(**sft), model, tokenizer, trained_on.select(range(rows)), str(output_dir))

    def run(
        self,
        rows: int,
        *,
        stage: str = "short-run",
        key: Mapping[str, Any] | None = None,
        keep: Callable[[Path, PreTrainedModel], None] | None = None,
        patch: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
        **sft: Any,
    ) -> tuple[TrainingRun, Path]:
        """`train`, cached on disk: (the run's record, its cache folder). `keep(folder, model)` saves more of the
        trained model (parameters, say); `patch()` is a context the training runs in (a deliberately broken
        trainer), named in `key` with anything else the run depends on."""
        settings = dict(self.recipe_for(**sft).sft)

        def build(folder: Path) -> None:
            with patch() if patch else contextlib.nullcontext():
                run, model = self.train(rows, folder / "trainer", **sft)
            shutil.rmtree(folder / "trainer", ignore_errors=True)
            write_training_run(folder, run)
            if keep is not None:
                keep(folder, model)

        inputs = {"rows": rows, "sft": settings, "dropout": False, **(key or {})}
        folder = self.artifacts.cached(stage, inputs, build)
        return read_training_run(folder), folder
