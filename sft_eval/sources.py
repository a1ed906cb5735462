"""The models a recipe names, one class per way a model is made: the base (`BaseModel`), the recipe's own run
(`TrainedHere`) and a folder trained elsewhere (`TrainedElsewhere`: a checkpoint, a run folder or a LoRA adapter).

Each knows its weights, whether they are an adapter on the base, how to load them, what the answer cache keys
them by, its trainer's record and its LoRA settings. This is the only module that knows how a model was made;
everything above asks a source.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sft_eval.artifacts import Artifacts
from sft_eval.cache import source_digest
from sft_eval.errors import SftEvalError
from sft_eval.models import FinishedRun, architecture_mismatch, finished_run, same_weights
from sft_eval.recipe import Recipe
from sft_eval.records import TrainingRun

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """One model a pipeline loads and asks: its `name` ("base", "tuned", "baseline"), the recipe `key` its errors
    name, and the `artifacts` it is built on (the base every adapter applies to)."""

    name: str
    key: str
    artifacts: Artifacts = dataclasses.field(repr=False, compare=False)
    origin = "?"  # what `describe` says: "base", "trained-here", "folder"

    @property
    def named(self) -> str | None:
        """The folder the recipe names for it (resolved), or None: nothing named."""
        return None

    @property
    def run(self) -> FinishedRun | None:
        """The run folder's parts (weights, trainer record) for a model trained elsewhere; None otherwise."""
        return None

    @property
    def weights(self) -> Path:
        """The folder its weights are in (the base built, or the run trained, here if it must be)."""
        raise NotImplementedError

    @property
    def is_adapter(self) -> bool:
        """A PEFT adapter on the base, known without building or training anything."""
        return False

    def load(self) -> PreTrainedModel:
        """A fresh copy of the model on the pipeline's device: full weights, or an adapter on the base."""
        from sft_eval.adapters import load_adapted_model
        from sft_eval.models import load_model

        device = str(self.artifacts.device)
        if self.is_adapter:
            model: PreTrainedModel = load_adapted_model(
                self.artifacts.base_model_dir, self.weights, device, key=self.key
            )
            return model
        model = load_model(self.weights, device, key=self.key)
        return model

    def identity(self) -> dict[str, Any]:
        """Its weights as the answer cache keys them, known without loading them."""
        raise NotImplementedError

    def training_run(self, recipe: Recipe, train_rows: int) -> TrainingRun:
        """What the trainer did to make it."""
        raise SftEvalError(f"{self.key}: the {self.name} model was not fine-tuned; it has no training run")

    @property
    def lora_settings(self) -> dict[str, Any] | None:
        """What its LoRA run trains (target modules, modules_to_save, trainable tokens); None: full weights."""
        return None

    @property
    def trained_here(self) -> bool:
        """Trained in this environment from the recipe (so its numerics are this machine's)."""
        return False

    @property
    def folder_given(self) -> Path | None:
        """The weights folder a user handed over (audited as such: checkpoint files, a saved template); None for a
        model built or trained here."""
        return None

    @property
    def entry(self) -> Path:
        """Where it lives, as provenance names it."""
        return self.weights


@dataclasses.dataclass(frozen=True)
class BaseModel(ModelSource):
    """`model.base`: the tiny model built here or the recipe's checkpoint."""

    origin = "base"

    @property
    def weights(self) -> Path:
        return self.artifacts.base_model_dir

    def load(self) -> PreTrainedModel:
        return self.artifacts.load_base_model()

    def identity(self) -> dict[str, Any]:
        return {"base": self.artifacts.base_key}


@dataclasses.dataclass(frozen=True)
class TrainedHere(ModelSource):
    """The recipe's own run, trained (and cached) on first use; a LoRA recipe's saves its adapter alone."""

    origin = "trained-here"

    @property
    def weights(self) -> Path:
        return self.artifacts.tuned_entry / "model"

    @property
    def is_adapter(self) -> bool:
        return self.artifacts.recipe.peft is not None

    def identity(self) -> dict[str, Any]:
        return {"tuned": self.artifacts.tuned_entry.name}

    def training_run(self, recipe: Recipe, train_rows: int) -> TrainingRun:
        return self.artifacts.tuned_run()

    @property
    def lora_settings(self) -> dict[str, Any] | None:
        peft = self.artifacts.recipe.peft
        return None if peft is None else dict(peft)

    @property
    def trained_here(self) -> bool:
        return True

    @property
    def entry(self) -> Path:
        return self.artifacts.tuned_entry


@dataclasses.dataclass(frozen=True)
class TrainedElsewhere(ModelSource):
    """A checkpoint, run folder or LoRA adapter the recipe names (`found`: its weights and the trainer's record),
    checked on resolution to be a fine-tune of (or an adapter for) model.base."""

    path: str = ""
    found: FinishedRun | None = None
    origin = "folder"

    @property
    def named(self) -> str | None:
        return self.path

    @property
    def run(self) -> FinishedRun | None:
        return self.found

    @property
    def _found(self) -> FinishedRun:
        assert self.found is not None, self
        return self.found

    @property
    def weights(self) -> Path:
        return self._found.weights

    @property
    def is_adapter(self) -> bool:
        return self._found.adapter

    def identity(self) -> dict[str, Any]:
        return {self.name: source_digest(str(self._found.weights)), "base": self.artifacts.base_key}

    def training_run(self, recipe: Recipe, train_rows: int) -> TrainingRun:
        from sft_eval.training import read_finished_run

        return read_finished_run(self._found, recipe, train_rows, base_dir=self.artifacts.base_model_dir)

    @property
    def lora_settings(self) -> dict[str, Any] | None:
        from sft_eval.adapters import read_adapter_config

        return read_adapter_config(self._found.weights) if self._found.adapter else None

    @property
    def folder_given(self) -> Path | None:
        return self._found.weights


def resolve_sources(recipe: Recipe, artifacts: Artifacts) -> dict[str, ModelSource]:
    """The models `recipe` names, each resolved once: the base, the tuned model (trained here, or the folder
    `model.tuned` names) and `model.baseline`'s, where it names one. A folder that is no fine-tune of (or adapter
    for) model.base, or is the base's own weights, is one line naming its key."""
    model = recipe.model
    sources: dict[str, ModelSource] = {"base": BaseModel("base", "model.base", artifacts)}
    if model.tuned is None:
        # trained here: a load error names the base the recipe gave, as the run starts from it
        sources["tuned"] = TrainedHere("tuned", "model.base", artifacts)
    else:
        named = recipe.resolve(model.tuned)
        sources["tuned"] = TrainedElsewhere("tuned", "model.tuned", artifacts, named, _tuned_folder(named, artifacts))
    if model.baseline is not None:
        named = recipe.resolve(model.baseline)
        found = finished_run(named, key="model.baseline")
        _check_fits_base(found, "model.baseline", artifacts)
        sources["baseline"] = TrainedElsewhere("baseline", "model.baseline", artifacts, named, found)
    return sources


def _tuned_folder(named: str, artifacts: Artifacts) -> FinishedRun:
    """The run trained elsewhere that `model.tuned` names: its weights and record, checked against the base."""
    found = finished_run(named)
    base = artifacts.base_model_dir
    if not found.adapter and same_weights(found.weights, base):
        raise SftEvalError(
            f"model.tuned: {found.weights} holds model.base's own weights ({base}): nothing was fine-tuned there; "
            "name the run's output folder or one of its checkpoint-N folders"
        )
    _check_fits_base(found, "model.tuned", artifacts)
    if artifacts.recipe.model.merged is not None and not found.adapter:
        raise SftEvalError(
            f"model.merged: the tuned model {found.weights} holds full weights, not a LoRA adapter: there is no "
            "merge to check; remove model.merged, or name the adapter folder as model.tuned"
        )
    return found


def _check_fits_base(found: FinishedRun, key: str, artifacts: Artifacts) -> None:
    """Bad input: a folder `key` names that is not a fine-tune of model.base (another architecture or shape), or
    an adapter for another base."""
    from sft_eval.adapters import adapter_mismatch

    base = artifacts.base_model_dir
    if found.adapter:
        mismatch = adapter_mismatch(found.weights, base, artifacts.recipe.model.base)
    else:
        mismatch = architecture_mismatch(found.weights, base)
    if mismatch:
        kind = "an adapter for" if found.adapter else "a fine-tune of"
        raise SftEvalError(f"{key}: {found.weights} is not {kind} model.base: {mismatch}")
