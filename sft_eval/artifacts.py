"""What a recipe builds before anything is asked: the tokenizer, the base model, the run trained here, and the
cache keys that name them.

The tokenizer and the base come from one of two strategies, chosen once from the recipe: the tiny ones
(`model.base = "tiny"`: a tokenizer trained and a base pretrained here, cached by what they are built from) or a
folder the recipe names (read where it is, keyed by its files' contents). Nothing else asks which it is.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sft_eval.cache import FixtureCache, cache_key, source_digest
from sft_eval.chat import check_rows_render, end_of_turn, load_template, shipped_templates, special_literals
from sft_eval.data import row_texts
from sft_eval.errors import SftEvalError
from sft_eval.inputs import Inputs
from sft_eval.recipe import FIXTURES_DIR, TINY, Recipe
from sft_eval.records import TrainingRun

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PRETRAIN_CORPUS = FIXTURES_DIR / "data" / "pretrain.txt"
TRAINING_RUN_FILE = "training_run.json"


@functools.cache
def corpus() -> list[str]:
    """The tiny base's pretraining text (`fixtures/data/pretrain.txt`), one document a line."""
    return [line for line in PRETRAIN_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


class _Tiny:
    """The tiny tokenizer and base: trained and pretrained here, cached under keys of what they are built from."""

    def __init__(self, artifacts: Artifacts):
        self.a = artifacts

    @functools.cached_property
    def template(self) -> str:
        """The recipe's chat template text, which the tiny tokenizer is trained with (read once)."""
        return load_template(self.a.recipe.resolve(self.a.recipe.model.template))

    @functools.cached_property
    def vocabulary_key(self) -> str:
        """What the tiny vocabulary is trained from (the corpus, the rows, the template's special tokens and its
        end-of-turn token), without the template's text: a template edit that keeps its special tokens reuses the
        base (the tuned model, keyed with the tokenizer and so the template, still trains again)."""
        specials = special_literals(self.template)
        recipe = self.a.recipe
        inputs = {
            "corpus": source_digest(str(PRETRAIN_CORPUS)),
            "train": source_digest(recipe.resolve(recipe.data.train)),
            "specials": specials,
            "eos": end_of_turn(specials),
        }
        return cache_key("vocabulary", inputs)

    @functools.cached_property
    def tokenizer_entry(self) -> tuple[Path | None, str]:
        from sft_eval.tokenizer import train_tokenizer

        template = self.template
        key = cache_key("tokenizer", {"template": template, "vocabulary": self.vocabulary_key})

        def build(folder: Path) -> None:
            texts = corpus() + [text for row in self.a.inputs.loaded_rows for text in row_texts(row)]
            specials = special_literals(template)
            train_tokenizer(texts, template, specials, eos_token=end_of_turn(specials)).save_pretrained(folder)

        return self.a.cache.get_or_build("tokenizer", key, build), key

    @functools.cached_property
    def base_key(self) -> str:
        recipe = self.a.recipe
        return cache_key(
            "base", {"vocabulary": self.a.vocabulary_key, "seed": recipe.seed, "device": self.a.device.type}
        )

    def base_model_dir(self) -> Path:
        from sft_eval.models import pretrain_base

        def build(folder: Path) -> None:
            model = pretrain_base(self.a.tokenizer, corpus(), seed=self.a.recipe.seed, device=self.a.device)
            model.save_pretrained(folder)

        return self.a.cache.get_or_build("base", self.base_key, build)


class _Named:
    """A tokenizer or base the recipe names (a folder or a hub id): read where it is, keyed by its contents."""

    def __init__(self, artifacts: Artifacts, source: str):
        self.a = artifacts
        self.path = artifacts.recipe.resolve(source)

    @functools.cached_property
    def tokenizer_entry(self) -> tuple[Path | None, str]:
        return None, cache_key("tokenizer", {"source": self.path, "digest": source_digest(self.path)})

    @property
    def vocabulary_key(self) -> str:
        return self.tokenizer_entry[1]  # a recipe's own tokenizer is its own vocabulary

    @functools.cached_property
    def base_key(self) -> str:
        return cache_key("base", {"source": self.path, "digest": source_digest(self.path)})

    def base_model_dir(self) -> Path:
        return Path(self.path)


class Artifacts:
    """The tokenizer, the base and the run trained here for one recipe, built (or read from the cache) on first
    use, each once."""

    def __init__(self, recipe: Recipe, cache: FixtureCache, device: torch.device, inputs: Inputs):
        self.recipe, self.cache, self.device, self.inputs = recipe, cache, device, inputs
        tokenizer = recipe.model.tokenizer or recipe.model.base
        self._tokenizer_from: _Tiny | _Named = _Tiny(self) if tokenizer == TINY else _Named(self, tokenizer)
        self._base_from = _Tiny(self) if recipe.model.base == TINY else _Named(self, recipe.model.base)

    @property
    def tokenizer_entry(self) -> tuple[Path | None, str]:
        """(cache folder or None, cache key) of the tokenizer; the tiny tokenizer is trained and cached, a recipe's
        own is read where it is (None). The key names it in any entry built from it."""
        return self._tokenizer_from.tokenizer_entry

    @property
    def vocabulary_key(self) -> str:
        """What the tokenizer's vocabulary is made from: the tiny base is pretrained once per vocabulary."""
        return self._tokenizer_from.vocabulary_key

    @functools.cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        from transformers import AutoTokenizer

        from sft_eval.tokenizer import load_tokenizer

        folder, _ = self.tokenizer_entry
        if folder is not None:
            return AutoTokenizer.from_pretrained(str(folder))
        model = self.recipe.model
        source = self.recipe.resolve(model.tokenizer or model.base)
        tokenizer = load_tokenizer(source, key="model.tokenizer" if model.tokenizer else "model.base")
        if model.template == "tokenizer" and not tokenizer.chat_template:
            said = "says" if model.chat_template else "leaves it to the tokenizer by default"
            raise SftEvalError(
                f"model.chat_template: the tokenizer at {source} has no chat template, and the recipe {said}; set "
                f"`model.chat_template` to a shipped template ({', '.join(shipped_templates())}) or a .jinja file"
            )
        spec = self.recipe.resolve(model.template)
        tokenizer.chat_template = load_template(spec, tokenizer_template=tokenizer.chat_template)
        return tokenizer

    @property
    def base_key(self) -> str:
        """The base model's cache key, known without building it: a recipe's checkpoint by its files' contents, the
        tiny one by its vocabulary, seed and device."""
        return self._base_from.base_key

    @functools.cached_property
    def base_model_dir(self) -> Path:
        """The base model's folder: the tiny model pretrained and cached, or the recipe's checkpoint as is."""
        return self._base_from.base_model_dir()

    def load_base_model(self, *, dropout: bool = True) -> PreTrainedModel:
        """A fresh copy of the base model (training changes the one it is given); `dropout=False` for runs that
        must be compared exactly: with dropout on, two runs that batch the same rows differently draw different
        masks."""
        from sft_eval.models import load_model

        model = load_model(self.base_model_dir, str(self.device), key="model.base")
        if not dropout:
            from trl.trainer.utils import disable_dropout_in_model  # trl loads on first use, as in training

            disable_dropout_in_model(model)  # TRL's: every nn.Dropout
            for module in model.modules():  # and the attention dropout rates attention layers keep as floats
                if isinstance(getattr(module, "attention_dropout", None), float):
                    setattr(module, "attention_dropout", 0.0)  # noqa: B010 - a float the layer keeps
        return model

    def cached(self, stage: str, inputs: Mapping[str, Any], build: Callable[[Path], None]) -> Path:
        """A folder built once by `build(folder)` and kept in the fixture cache, keyed by `inputs` with this
        recipe's base model, tokenizer and LoRA settings (and the library versions, as every entry is): a LoRA
        recipe's short runs and torchrun runs never share an entry with full fine-tuning's."""
        lora = {"peft": dict(self.recipe.peft)} if self.recipe.peft is not None else {}
        key = cache_key(stage, {**inputs, "base": self.base_key, "tokenizer": self.tokenizer_entry[1], **lora})
        return self.cache.get_or_build(stage, key, build)

    @functools.cached_property
    def tuned_entry(self) -> Path:
        """The cache folder of the recipe's own run (`model/` its weights or adapter with the tokenizer, and
        `training_run.json`), trained on first use."""
        from sft_eval.training import train_sft

        recipe = self.recipe
        _, tokenizer_key = self.tokenizer_entry
        # Contents, not spellings: the same data named by another path is the same entry, and editing a
        # threshold or a question never retrains.
        inputs = {
            "tokenizer": tokenizer_key,
            "base": self.base_key,
            "chat_template": self.tokenizer.chat_template,
            "train": source_digest(recipe.resolve(recipe.data.train)),
            "limit": recipe.data.limit,
            **({"eval_fraction": recipe.data.eval_fraction} if recipe.data.eval_fraction else {}),
            "sft": dict(recipe.sft),
            **({"peft": dict(recipe.peft)} if recipe.peft is not None else {}),
            "seed": recipe.seed,
            "device": self.device.type,  # trained on a GPU or on the CPU: different numerics, different weights
        }

        def build(folder: Path) -> None:
            rows = self.inputs.rows
            check_rows_render(self.tokenizer, rows)  # a template that fails on the rows, before a base is built
            run, model = train_sft(recipe, self.load_base_model(), self.tokenizer, rows, str(folder / "trainer"))
            if recipe.peft is None:  # a LoRA run saves its adapter alone; the base's config is untouched
                model.config.use_cache = True  # Trainer set it to TrainingArguments.use_cache (off); serving wants it
            model.save_pretrained(folder / "model")
            self.tokenizer.save_pretrained(folder / "model")
            write_training_run(folder, run, indent=1)

        return self.cache.get_or_build("tuned", cache_key("tuned", inputs), build)

    def tuned_run(self) -> TrainingRun:
        """What the trainer did in the run trained here (trained first if it must be)."""
        return read_training_run(self.tuned_entry)


def named_folders(recipe: Recipe) -> list[tuple[str, str, str]]:
    """(recipe key, source, kind) of the base and the tokenizer the recipe names on disk or the hub, which must be
    there before anything is built; the tiny ones are built here."""
    model = recipe.model
    named = (("model.base", model.base, "model"), ("model.tokenizer", model.tokenizer, "tokenizer"))
    return [(key, source, kind) for key, source, kind in named if source not in (None, TINY)]


def read_training_run(folder: Path) -> TrainingRun:
    return TrainingRun.from_dict(json.loads((folder / TRAINING_RUN_FILE).read_text(encoding="utf-8")))


def write_training_run(folder: Path, run: TrainingRun, indent: int | None = None) -> None:
    (folder / TRAINING_RUN_FILE).write_text(json.dumps(run.to_dict(), indent=indent), encoding="utf-8")
