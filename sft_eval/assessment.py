"""The recipe's models judged: the evaluation (every model's answers scored side by side), the teacher-forced
signals, the audit and the LoRA merge check, the golden outputs, the checks the suites assert, the comparison with
a baseline, and the report's context. Each is computed once, from the components a pipeline holds."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sft_eval import schema
from sft_eval.answers import Answers
from sft_eval.audit import Finding
from sft_eval.chat import conversation, render_prompt
from sft_eval.golden import TOP_K, GoldenVerdict, environment, golden_verdict
from sft_eval.inputs import Inputs
from sft_eval.recipe import Recipe
from sft_eval.records import TrainingRun
from sft_eval.sanity import Evaluation, evaluate_models
from sft_eval.schema import ReportData
from sft_eval.scoring import Signals
from sft_eval.signals import TeacherForced
from sft_eval.sources import ModelSource
from sft_eval.toolcalls import ToolSummary, report_data, summarize

if TYPE_CHECKING:
    from sft_eval.artifacts import Artifacts
    from sft_eval.compare import Comparison
    from sft_eval.verdict import Check

MERGE_PROMPTS = 32  # evaluation prompts the LoRA merge check compares logits on (all positions of each)


class Assessment:
    """What a reviewer reads of one recipe's models, each part computed once."""

    def __init__(
        self,
        recipe: Recipe,
        inputs: Inputs,
        artifacts: Artifacts,
        sources: dict[str, ModelSource],
        answers: Answers,
        teacher_forced: TeacherForced,
    ):
        self.recipe, self.inputs, self.artifacts, self.sources = recipe, inputs, artifacts, sources
        self.answers, self.teacher_forced = answers, teacher_forced
        self._evaluation: Evaluation | None = None

    @property
    def evaluated(self) -> bool:
        """Whether the models were evaluated (their answers and scores exist): what a report needs."""
        return self._evaluation is not None

    @property
    def evaluation(self) -> Evaluation:
        """Every source's answers to the recipe's questions (the base's, the tuned model's, the baseline's where the
        recipe names one), each model asked in turn and let go, scored side by side per question."""
        if self._evaluation is None:
            self._evaluation = evaluate_models(
                self.inputs.questions,
                {name: self.answers.answers(name) for name in self.sources},
                specials=[t for t in self.artifacts.tokenizer.all_special_tokens if t],
                enable_thinking=self.recipe.eval.enable_thinking,
            )
        return self._evaluation

    @functools.cached_property
    def training_run(self) -> TrainingRun:
        """What the trainer did: the run trained elsewhere from its own record, else the run trained here."""
        return self.sources["tuned"].training_run(self.recipe, len(self.inputs.rows))

    @functools.cached_property
    def signals(self) -> Signals:
        """The teacher-forced signals of the base and the tuned model, and the answers' lengths against the
        training answers' (`signals.TeacherForced.signals`)."""
        return self.teacher_forced.signals(self.evaluation)

    @functools.cached_property
    def findings(self) -> list[Finding]:
        """The audit of the recipe (template, tokenizer, checkpoint files, a LoRA run's trainable tokens, the
        trainer's labels), once; nothing is trained for it."""
        from sft_eval.audit.run import audit_recipe

        tuned = self.sources["tuned"]
        return audit_recipe(
            self.recipe,
            self.artifacts.tokenizer,
            self.inputs.rows,
            self.artifacts.base_model_dir,
            self.artifacts.load_base_model,
            tuned_dir=tuned.folder_given,
            tuned_is_adapter=tuned.is_adapter,
            lora=tuned.lora_settings,
            tool_items=self.inputs.tool_items,
        )

    @functools.cached_property
    def merge_findings(self) -> list[Finding]:
        """`peft.merge` for a LoRA run: the merged model (the recipe's `model.merged`, else the adapter merged here)
        against the adapter, on the first `MERGE_PROMPTS` evaluation prompts; nothing for full fine-tuning."""
        from sft_eval.adapters import merged_model
        from sft_eval.audit.adapter import check_merge

        tuned = self.sources["tuned"]
        if not tuned.is_adapter:
            return []
        recipe, tokenizer = self.recipe, self.artifacts.tokenizer
        named = Path(recipe.resolve(recipe.model.merged)) if recipe.model.merged else None
        device = str(self.artifacts.device)
        merged, source = merged_model(self.artifacts.base_model_dir, tuned.weights, device, named)
        system, thinking = recipe.eval.system_message or None, recipe.eval.enable_thinking
        prompts = [
            render_prompt(tokenizer, conversation(q.question, system), enable_thinking=thinking)
            for q in self.inputs.questions[:MERGE_PROMPTS]
        ]
        return check_merge(self.answers.hold("tuned"), merged, tokenizer, prompts, source)

    def audit(self, *, template: str | None = None, tokenizer_dir: str | None = None) -> list[Finding]:
        """The recipe's audit; or a template file audited with the recipe's tokenizer adapted to it; or a
        tokenizer folder, with its own template or `template`."""
        from sft_eval.audit.run import audit_template_file, audit_tokenizer_folder

        if tokenizer_dir:
            return audit_tokenizer_folder(self.recipe, tokenizer_dir, template)
        if template:
            return audit_template_file(self.recipe, self.artifacts.tokenizer, template)
        return self.findings

    def golden(self, *, mode: str | None = None, update: bool = False) -> GoldenVerdict:
        """The tuned model's answers held to the recipe's golden outputs (`golden.golden_verdict`)."""
        forced = self.teacher_forced
        return golden_verdict(
            self.recipe,
            self.evaluation.tuned,
            environment(str(self.artifacts.device)),
            self.artifacts.cache.root / "golden-local",
            top_k=lambda questions, ids: forced.answer_top_k("tuned", questions, ids, TOP_K),
            prompt_ids=forced.prompt_ids,
            token_text=lambda token: str(self.artifacts.tokenizer.convert_ids_to_tokens(token)),
            trained_here=self.sources["tuned"].trained_here,
            mode=mode,
            update=update,
        )

    @functools.cached_property
    def judgement(self) -> schema.JudgeData | None:
        """The recipe's `[judge]` on the tuned answers against the base's (`judgement.judge_run`), its replies in
        the answer cache; None without a judge."""
        if not self.recipe.judge.kind:
            return None
        from sft_eval.judgement import judge_run

        return judge_run(self.recipe, self.evaluation, self.answers.store, self.judge, self.judged_names())

    @functools.cached_property
    def judgement_baseline(self) -> schema.JudgeData | None:
        """The same judge on the tuned answers against `[model] baseline`'s; None without a judge or a baseline."""
        if not self.recipe.judge.kind or "baseline" not in self.evaluation.models:
            return None
        from sft_eval.judgement import judge_run

        names = self.judged_names()
        return judge_run(self.recipe, self.evaluation, self.answers.store, self.judge, names, other="baseline")

    @functools.cached_property
    def judge(self) -> Any:
        """The recipe's judge (`judgement.make_judge`), made once: a local judge's model is loaded once for the
        base's pairs and the baseline's."""
        from sft_eval.judgement import make_judge

        return make_judge(self.recipe.judge, self.recipe, str(self.artifacts.device), self.artifacts.cache)

    def judged_names(self) -> list[str]:
        """The judged models' names and `model_type`s (the base's and the tuned model's), for the judge's
        same-family warning."""
        names = [self.recipe.model.base, *([self.recipe.model.tuned] if self.recipe.model.tuned else [])]
        try:
            config = json.loads((Path(self.artifacts.base_model_dir) / "config.json").read_text(encoding="utf-8"))
            names.append(str(config.get("model_type", "")))
        except (OSError, ValueError, AttributeError):
            pass
        return names

    def tool_summary(self, which: str) -> ToolSummary:
        """The `which` model's tool-call rates."""
        return summarize([r.score for r in self.answers.tool_records(which)])

    def tool_report(self) -> schema.ToolReport | None:
        """The tool items asked of the base and the tuned model, for the report (`toolcalls.report_data`); None
        when the recipe has none."""
        if not self.inputs.tool_items:
            return None
        return report_data({which: self.answers.tool_records(which) for which in ("base", "tuned")})

    def checks(self) -> list[Check]:
        """This run judged against its recipe's thresholds, the loss and plan checks and the audit's errors: the
        checks the suites assert, from the one function they use (`verdict.judge`)."""
        from sft_eval.verdict import judge

        return judge(
            self.recipe.thresholds,
            self.evaluation,
            self.training_run,
            self.findings + self.merge_findings,
            self.artifacts.tokenizer.eos_token,
            self.signals,
            (self.tool_summary("tuned"), self.tool_summary("base")) if self.inputs.tool_items else None,
            self.judgement,
        )

    def baseline_comparison(self) -> Comparison | None:
        """The tuned model held to `[model] baseline`'s, question by question (`compare.compare_outcomes`): the
        baseline's answers generated here (and cached, by its weights), judged as the tuned model's are; None
        without a baseline."""
        from sft_eval.compare import compare_outcomes, outcomes_from_evaluation

        baseline = self.sources.get("baseline")
        if baseline is None:
            return None
        return compare_outcomes(
            outcomes_from_evaluation(self.evaluation, "baseline"),
            outcomes_from_evaluation(self.evaluation),
            baseline_name=f"model.baseline ({baseline.weights})",
            candidate_name="this run",
            gate=self.recipe.thresholds.gate,
            margins=self.recipe.thresholds.max_regression,
        )

    def against(self, baseline: tuple[str, ReportData] | None) -> schema.ComparisonData | None:
        """The "Against the baseline" section: `baseline` (a previous report's name and JSON), else `[model]
        baseline`'s comparison, else None."""
        from sft_eval.compare import compare_outcomes, outcomes_from_evaluation, outcomes_from_report

        if baseline is None:
            comparison = self.baseline_comparison()
            return None if comparison is None else comparison.to_dict()
        name, report = baseline
        return compare_outcomes(
            outcomes_from_report(report),
            outcomes_from_evaluation(self.evaluation, signals=self.signals),
            baseline_name=name,
            candidate_name="this run",
            gate=self.recipe.thresholds.gate,
            margins=self.recipe.thresholds.max_regression,
        ).to_dict()

    def report_context(
        self,
        outcomes: schema.Outcomes | None = None,
        speed: dict[str, float] | None = None,
        baseline: tuple[str, ReportData] | None = None,
    ) -> ReportData:
        """The report's data for this recipe: the stages' plain records, gathered here and handed over.
        `baseline`: (its name, a previous report's JSON, read and checked): the tuned model held against that
        report's, question by question (`compare`), for the report's "Against the baseline" section."""
        from sft_eval.data import dataset_table
        from sft_eval.report import build_context

        against = self.against(baseline)
        tools = self.tool_report()  # before the provenance, which counts its answers too
        return build_context(
            recipe=self.recipe,
            run=self.training_run,
            evaluation=self.evaluation,
            findings=self.findings + self.merge_findings,
            data_preview=[list(r) for r in dataset_table(self.inputs.rows, n=3).rows],
            provenance=self.describe(),
            outcomes=outcomes,
            speed=speed,
            checks=[c.to_dict() for c in self.checks()],
            against_baseline=against,
            signals=self.signals.to_dict(),
            tools=tools,
            judge=self.judgement,
            judge_baseline=self.judgement_baseline,
        )

    def answer_provenance(self) -> str:
        """How many answers came from the answer cache and how many were generated, per model."""
        if not self.answers.use_cache:
            return "answer cache off (--no-answer-cache): every answer generated"
        return "; ".join(
            f"{which}: {n['cached']} from the answer cache, {n['generated']} generated"
            for which, n in self.answers.counts.items()
        )

    def describe(self) -> dict[str, Any]:
        """Where things came from, for the report and `--json` output."""
        recipe = self.recipe
        return {
            "recipe": str(recipe.path) if recipe.path else recipe.name,
            "cache": str(self.artifacts.cache.root),
            "device": str(self.artifacts.device),
            "tuned_entry": str(self.sources["tuned"].entry),
            **({"answers": self.answer_provenance()} if self.answers.counts else {}),
        }
