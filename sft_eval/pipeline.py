"""The face of one recipe's flow: build -> audit -> train -> generate -> score -> report, each stage once, from
the cache when it can.

A `Pipeline` holds the components that do the work and keeps the names the plugin's fixtures, the CLI and users'
tests use: `inputs` (rows, questions, tool items), `artifacts` (tokenizer, base, the run trained here, cache keys),
`sources` (each model the recipe names, and how it was made), `answering` (every model's answers through the
backend and the answer cache), `teacher_forced` (the signals, with a memo a sweep shares), `variants` (the suites'
short runs) and `assessment` (evaluation, audit, golden, checks, report context). No stage receives the pipeline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sft_eval import schema
from sft_eval.answers import Answers
from sft_eval.artifacts import Artifacts
from sft_eval.assessment import Assessment
from sft_eval.audit import Finding
from sft_eval.cache import FixtureCache
from sft_eval.data import Question, ToolItem
from sft_eval.generation import check_backend
from sft_eval.golden import GoldenVerdict
from sft_eval.inputs import Inputs
from sft_eval.models import resolve_device
from sft_eval.recipe import Recipe
from sft_eval.records import Answer, TrainingRun
from sft_eval.sanity import Evaluation
from sft_eval.schema import ReportData
from sft_eval.scoring import Signals
from sft_eval.signals import SignalMemo, TeacherForced
from sft_eval.sources import ModelSource, resolve_sources
from sft_eval.toolcalls import ToolRecord, ToolSummary
from sft_eval.variants import Variants

if TYPE_CHECKING:
    import contextlib

    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from sft_eval.compare import Comparison
    from sft_eval.verdict import Check


class Pipeline:
    def __init__(
        self,
        recipe: Recipe,
        cache: FixtureCache | None = None,
        device: str = "auto",
        *,
        answer_cache: bool = True,
        questions: list[Question] | None = None,
        rows: Dataset | None = None,
        inputs: Inputs | None = None,
        artifacts: Artifacts | None = None,
        memo: SignalMemo | None = None,
    ):
        """`questions` and `rows` (`data.train`'s, before any held-out split), when the caller has read and
        validated them already (`sft_eval.factory`); `inputs`, `artifacts` and `memo` shared with the pipeline of
        the same run (`with_tuned`)."""
        check_backend(recipe.eval.backend, str(recipe.path or recipe.name))
        self.recipe = recipe
        self.cache = cache or FixtureCache()
        self.device = resolve_device(device)
        self.answer_cache = answer_cache  # False: generate every answer again (`--no-answer-cache`)
        datasets = self.cache.root / "datasets"
        self.inputs = inputs or Inputs(recipe, datasets, questions=questions, rows=rows)
        self.artifacts = artifacts or Artifacts(recipe, self.cache, self.device, self.inputs)
        self.variants = Variants(recipe, self.artifacts)
        self._memo = memo or SignalMemo()  # what was scored teacher-forced, kept (and handed to a checkpoint)
        self._assessment: Assessment | None = None

    # -- the models the recipe names, their answers and their signals: resolved on first use ----------------
    @property
    def sources(self) -> dict[str, ModelSource]:
        """The models this recipe names, each resolved once (`sources.resolve_sources`)."""
        return self.assessment.sources

    @property
    def answering(self) -> Answers:
        return self.assessment.answers

    @property
    def teacher_forced(self) -> TeacherForced:
        return self.assessment.teacher_forced

    @property
    def assessment(self) -> Assessment:
        """The models resolved (which may build the base), with their answers, signals and judgement."""
        if self._assessment is None:
            sources = resolve_sources(self.recipe, self.artifacts)
            answers = Answers(self.recipe, self.inputs, self.artifacts, sources, use_cache=self.answer_cache)
            forced = TeacherForced(self.recipe, self.inputs, answers, self._memo)
            self._assessment = Assessment(self.recipe, self.inputs, self.artifacts, sources, answers, forced)
        return self._assessment

    def with_tuned(self, folder: str | Path) -> Pipeline:
        """This recipe with `model.tuned` = `folder` (one checkpoint of a run), sharing this pipeline's cache,
        device, inputs, tokenizer and base, and what it scored of the base: a sweep evaluates each checkpoint
        through one, then lets it go."""
        model = dataclasses.replace(self.recipe.model, tuned=str(folder), baseline=None)  # one checkpoint at a time
        return Pipeline(
            dataclasses.replace(self.recipe, model=model),
            self.cache,
            str(self.device),
            answer_cache=self.answer_cache,
            inputs=self.inputs,
            artifacts=self.artifacts,
            memo=self._memo.for_checkpoint(),  # the models are not resolved for it: a checkpoint resolves its own
        )

    # -- inputs ------------------------------------------------------------------------------------------
    @property
    def questions(self) -> list[Question]:
        return self.inputs.questions

    @property
    def tool_items(self) -> list[ToolItem]:
        return self.inputs.tool_items

    @property
    def loaded_rows(self) -> Dataset:
        return self.inputs.loaded_rows

    @property
    def rows(self) -> Dataset:
        """The rows the recipe trains on: `data.train`'s, less the `data.eval_fraction` share held out."""
        return self.inputs.rows

    @property
    def held_out_rows(self) -> Dataset | None:
        """The rows the held-out loss is measured on (`data.eval`, or `data.eval_fraction`'s share), or None."""
        return self.inputs.held_out_rows

    # -- build and train ---------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.artifacts.tokenizer

    @property
    def base_model_dir(self) -> Path:
        return self.artifacts.base_model_dir

    def load_base_model(self, *, dropout: bool = True) -> PreTrainedModel:
        return self.artifacts.load_base_model(dropout=dropout)

    @property
    def base_model(self) -> PreTrainedModel:
        return self.answering.hold("base")

    @property
    def tuned_model(self) -> PreTrainedModel:
        return self.answering.hold("tuned")

    @property
    def tuned_model_dir(self) -> Path:
        """The tuned checkpoint folder (model and tokenizer with its chat template): what a server serves; for a
        LoRA run, the adapter folder (applied to `base_model_dir`)."""
        return self.sources["tuned"].weights

    @property
    def tuned_is_adapter(self) -> bool:
        return self.sources["tuned"].is_adapter

    @property
    def training_run(self) -> TrainingRun:
        return self.assessment.training_run

    def cached(self, stage: str, inputs: Mapping[str, Any], build: Callable[[Path], None]) -> Path:
        return self.artifacts.cached(stage, inputs, build)

    def variant_recipe(self, **sft: Any) -> Recipe:
        return self.variants.recipe_for(**sft)

    def train_variant(
        self, rows: int, output_dir: str | Path, *, dropout: bool = False, **sft: Any
    ) -> tuple[TrainingRun, PreTrainedModel]:
        return self.variants.train(rows, output_dir, dropout=dropout, **sft)

    def variant_run(
        self,
        rows: int,
        *,
        stage: str = "short-run",
        key: Mapping[str, Any] | None = None,
        keep: Callable[[Path, PreTrainedModel], None] | None = None,
        patch: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
        **sft: Any,
    ) -> tuple[TrainingRun, Path]:
        return self.variants.run(rows, stage=stage, key=key, keep=keep, patch=patch, **sft)

    # -- answers and judgement ---------------------------------------------------------------------------
    def answers(self, which: str) -> list[Answer]:
        return self.answering.answers(which)

    @property
    def answer_counts(self) -> dict[str, dict[str, int]]:
        return self.answering.counts

    def tool_records(self, which: str) -> list[ToolRecord]:
        return self.answering.tool_records(which)

    def tool_summary(self, which: str) -> ToolSummary:
        return self.assessment.tool_summary(which)

    def tool_report(self) -> schema.ToolReport | None:
        return self.assessment.tool_report()

    @property
    def evaluated(self) -> bool:
        return self._assessment is not None and self._assessment.evaluated

    @property
    def evaluation(self) -> Evaluation:
        return self.assessment.evaluation

    @property
    def signals(self) -> Signals:
        return self.assessment.signals

    @property
    def findings(self) -> list[Finding]:
        return self.assessment.findings

    @property
    def merge_findings(self) -> list[Finding]:
        return self.assessment.merge_findings

    def audit(self, *, template: str | None = None, tokenizer_dir: str | None = None) -> list[Finding]:
        return self.assessment.audit(template=template, tokenizer_dir=tokenizer_dir)

    def golden(self, *, mode: str | None = None, update: bool = False) -> GoldenVerdict:
        return self.assessment.golden(mode=mode, update=update)

    def checks(self) -> list[Check]:
        return self.assessment.checks()

    def baseline_comparison(self) -> Comparison | None:
        return self.assessment.baseline_comparison()

    def report_context(
        self,
        outcomes: schema.Outcomes | None = None,
        speed: dict[str, float] | None = None,
        baseline: tuple[str, ReportData] | None = None,
    ) -> ReportData:
        return self.assessment.report_context(outcomes, speed, baseline)

    def describe(self) -> dict[str, Any]:
        return self.assessment.describe()
