"""The flow for one recipe: build -> train -> generate -> score, each stage once, from the cache when it can.

The pytest plugin's fixtures and every CLI subcommand go through a `Pipeline`, so a suite, the shell and the
report always see the same tokenizer, the same models and the same answers.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from sft_eval.audit import Finding
from sft_eval.audit.checkpoint import audit_checkpoint
from sft_eval.audit.checks import run_checks, tokenizer_for_template
from sft_eval.audit.labels import audit_labels
from sft_eval.audit.template import renders
from sft_eval.cache import FixtureCache, cache_key, source_digest
from sft_eval.chat import end_of_turn, load_template, shipped_templates, special_literals
from sft_eval.data import Question, load_questions, load_sft_rows
from sft_eval.errors import SftEvalError
from sft_eval.generation import Answer, generate, generate_served
from sft_eval.models import disable_dropout, generation_eos_ids, load_model, pretrain_base, resolve_device
from sft_eval.recipe import FIXTURES_DIR, Recipe
from sft_eval.sanity import PairedDifference, Score, Summary, compare, score, summarise
from sft_eval.tokenizer import load_tokenizer, train_tokenizer
from sft_eval.training import TrainingRun, train_sft

TINY = "tiny"
PRETRAIN_CORPUS = FIXTURES_DIR / "data" / "pretrain.txt"
TRAINING_RUN_FILE = "training_run.json"


@dataclass(frozen=True)
class Evaluation:
    """Base and tuned answers to the recipe's questions, with their scores."""

    questions: list[Question]
    base: list[Answer]
    tuned: list[Answer]
    base_scores: list[Score]
    tuned_scores: list[Score]

    @property
    def base_summary(self) -> Summary:
        return summarise(self.base_scores)

    @property
    def tuned_summary(self) -> Summary:
        return summarise(self.tuned_scores)

    def comparison(self) -> list[PairedDifference]:
        """Tuned minus base per metric, with a paired bootstrap interval over the questions."""
        return compare(self.base_scores, self.tuned_scores)


class Pipeline:
    def __init__(self, recipe: Recipe, cache: FixtureCache | None = None, device: str = "auto"):
        self.recipe = recipe
        self.cache = cache or FixtureCache()
        self.device = resolve_device(device)
        self.speed: dict[str, float] = {}  # tokens/s by method, filled when generation benchmarks run
        torch.manual_seed(recipe.seed)

    # -- build ------------------------------------------------------------------------------------------
    @functools.cached_property
    def rows(self) -> list[dict[str, Any]]:
        """The recipe's training rows, read and validated once per pipeline."""
        return load_sft_rows(self.recipe)

    @functools.cached_property
    def _tokenizer_entry(self) -> tuple[Path | None, str]:
        """(cache folder or None, key) of the tokenizer; the tiny tokenizer is trained and cached."""
        source = self.recipe.model.tokenizer or self.recipe.model.base
        if source != TINY:
            path = self.recipe.resolve(source)
            return None, cache_key("tokenizer", {"source": path, "digest": source_digest(path)})
        template = load_template(self.recipe.resolve(self.recipe.model.template))
        inputs = {
            "template": template,
            "corpus": source_digest(str(PRETRAIN_CORPUS)),
            "train": source_digest(self.recipe.resolve(self.recipe.data.train)),
        }
        key = cache_key("tokenizer", inputs)

        def build(folder: Path) -> None:
            texts = _corpus() + [m["content"] for row in self.rows for m in row.get("messages", [])]
            specials = special_literals(template)
            train_tokenizer(texts, template, specials, eos_token=end_of_turn(specials)).save_pretrained(folder)

        return self.cache.get_or_build("tokenizer", key, build), key

    @functools.cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        folder, _ = self._tokenizer_entry
        if folder is not None:
            return AutoTokenizer.from_pretrained(str(folder))
        source = self.recipe.resolve(self.recipe.model.tokenizer or self.recipe.model.base)
        tokenizer = load_tokenizer(source, key="model.tokenizer" if self.recipe.model.tokenizer else "model.base")
        spec = self.recipe.model.template
        if spec == "tokenizer" and not tokenizer.chat_template:
            said = "says" if self.recipe.model.chat_template else "leaves it to the tokenizer by default"
            raise SftEvalError(
                f"model.chat_template: the tokenizer at {source} has no chat template, and the recipe {said}; set "
                f"`model.chat_template` to a shipped template ({', '.join(shipped_templates())}) or a .jinja file"
            )
        tokenizer.chat_template = load_template(self.recipe.resolve(spec), tokenizer_template=tokenizer.chat_template)
        return tokenizer

    @functools.cached_property
    def _base_entry(self) -> tuple[Path, str]:
        """(folder, key) of the base model: the tiny one is pretrained and cached, any other is loaded as is."""
        if self.recipe.model.base != TINY:
            path = self.recipe.resolve(self.recipe.model.base)
            return Path(path), cache_key("base", {"source": path, "digest": source_digest(path)})
        _, tokenizer_key = self._tokenizer_entry
        key = cache_key("base", {"tokenizer": tokenizer_key, "seed": self.recipe.seed, "device": self.device.type})

        def build(folder: Path) -> None:
            pretrain_base(self.tokenizer, _corpus(), seed=self.recipe.seed, device=self.device).save_pretrained(folder)

        return self.cache.get_or_build("base", key, build), key

    @property
    def base_model_dir(self) -> Path:
        """The base model's folder: the cached tiny model, or the recipe's checkpoint."""
        return self._base_entry[0]

    def load_base_model(self, *, dropout: bool = True) -> PreTrainedModel:
        """A fresh copy of the base model (training changes the one it is given); `dropout=False` for runs that
        must be compared exactly (see `disable_dropout`)."""
        folder, _ = self._base_entry
        model = load_model(folder, str(self.device), key="model.base")
        return model if dropout else disable_dropout(model)

    @functools.cached_property
    def base_model(self) -> PreTrainedModel:
        return self.load_base_model()

    # -- train ------------------------------------------------------------------------------------------
    @functools.cached_property
    def _tuned_entry(self) -> Path:
        _, tokenizer_key = self._tokenizer_entry
        _, base_key = self._base_entry
        # Contents, not spellings: the same data named by another path is the same entry, and editing a
        # threshold or a question never retrains.
        inputs = {
            "tokenizer": tokenizer_key,
            "base": base_key,
            "chat_template": self.tokenizer.chat_template,
            "train": source_digest(self.recipe.resolve(self.recipe.data.train)),
            "limit": self.recipe.data.limit,
            "sft": dict(self.recipe.sft),
            "seed": self.recipe.seed,
            "device": self.device.type,  # trained on a GPU or on the CPU: different numerics, different weights
        }

        def build(folder: Path) -> None:
            model = self.load_base_model()
            run = train_sft(self.recipe, model, self.tokenizer, self.rows, str(folder / "trainer"))
            model.save_pretrained(folder / "model")
            self.tokenizer.save_pretrained(folder / "model")
            (folder / TRAINING_RUN_FILE).write_text(json.dumps(run.to_dict(), indent=1), encoding="utf-8")

        return self.cache.get_or_build("tuned", cache_key("tuned", inputs), build)

    @functools.cached_property
    def training_run(self) -> TrainingRun:
        data = json.loads((self._tuned_entry / TRAINING_RUN_FILE).read_text(encoding="utf-8"))
        return TrainingRun.from_dict(data)

    @property
    def tuned_model_dir(self) -> Path:
        """The tuned checkpoint folder (model and tokenizer with its chat template): what a server serves."""
        return self._tuned_entry / "model"

    @functools.cached_property
    def tuned_model(self) -> PreTrainedModel:
        return load_model(self.tuned_model_dir, str(self.device), key="model.base")

    # -- generate and score -----------------------------------------------------------------------------
    @functools.cached_property
    def questions(self) -> list[Question]:
        return load_questions(self.recipe)

    def answers(self, which: str) -> list[Answer]:
        """The `"base"` or `"tuned"` model's answers from the recipe's backend: this process, or the server
        when `eval.backend = "openai"` serves that model."""
        settings = self.recipe.eval
        questions = [q.question for q in self.questions]
        common: dict[str, Any] = {
            "system_message": settings.system_message or None,
            "max_new_tokens": settings.max_new_tokens,
            "enable_thinking": settings.enable_thinking,
        }
        served = settings.backend == "openai" and (which == "tuned" or settings.base_model is not None)
        if served:
            name = settings.model if which == "tuned" else settings.base_model
            url = str(settings.base_url)  # the recipe guarantees one with the openai backend
            return generate_served(url, name, questions, concurrency=settings.batch_size, **common)
        model = self.tuned_model if which == "tuned" else self.base_model
        return generate(model, self.tokenizer, questions, batch_size=settings.batch_size, **common)

    def _score(self, question: Question, answer: Answer) -> Score:
        specials = [t for t in self.tokenizer.all_special_tokens if t]
        return score(question, answer, specials, enable_thinking=self.recipe.eval.enable_thinking)

    @functools.cached_property
    def evaluation(self) -> Evaluation:
        base, tuned = self.answers("base"), self.answers("tuned")
        return Evaluation(
            questions=self.questions,
            base=base,
            tuned=tuned,
            base_scores=[self._score(q, a) for q, a in zip(self.questions, base, strict=True)],
            tuned_scores=[self._score(q, a) for q, a in zip(self.questions, tuned, strict=True)],
        )

    @functools.cached_property
    def findings(self) -> list[Finding]:
        """The audit of the recipe (template, tokenizer, the trainer's labels), once per pipeline."""
        return audit_findings(self)

    def describe(self) -> dict[str, Any]:
        """Where things came from, for the report and `--json` output."""
        return {
            "recipe": str(self.recipe.path) if self.recipe.path else self.recipe.name,
            "cache": str(self.cache.root),
            "device": str(self.device),
            "tuned_entry": str(self._tuned_entry),
        }


def audit_findings(
    pipeline: Pipeline, *, template: str | None = None, tokenizer_dir: str | None = None
) -> list[Finding]:
    """The audit of a recipe: its own tokenizer, template and rows, and the labels its trainer builds from them;
    or a template file / tokenizer folder instead (template and tokenizer checks only).

    A template file is audited with the recipe's tokenizer adapted to it (its special strings registered), so
    a template needs no tokenizer of its own; a tokenizer folder is audited with its own template.
    """
    recipe = pipeline.recipe
    if tokenizer_dir:
        tokenizer = load_tokenizer(tokenizer_dir, key="--tokenizer")
        generation_eos = generation_eos_ids(tokenizer_dir)
        rows = None
    else:
        tokenizer, rows = pipeline.tokenizer, pipeline.rows
        generation_eos = generation_eos_ids(str(pipeline.base_model_dir))
    if template:
        source = load_template(template, where="--template")
        tokenizer = (
            tokenizer_for_template(tokenizer, source) if not tokenizer_dir else _with_chat_template(tokenizer, source)
        )
        rows = None  # a tokenizer folder keeps its generation_config's stop ids; the recipe's model is not involved
        generation_eos = generation_eos if tokenizer_dir else None
    findings = run_checks(
        tokenizer, enable_thinking=recipe.eval.enable_thinking, generation_eos=generation_eos, rows=rows
    )
    if tokenizer_dir or not template:  # a template audited alone has a tokenizer adapted to it, not a model's
        findings += audit_checkpoint(tokenizer, tokenizer_dir or pipeline.base_model_dir)
    if rows is not None and renders(findings):
        findings += audit_labels(recipe, pipeline.load_base_model(), tokenizer, rows)
    return findings


def _with_chat_template(tokenizer: PreTrainedTokenizerBase, template: str) -> PreTrainedTokenizerBase:
    tokenizer.chat_template = template
    return tokenizer


@functools.cache
def _corpus() -> list[str]:
    return [line for line in PRETRAIN_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
