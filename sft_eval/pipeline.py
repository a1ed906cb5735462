"""The orchestrator for one recipe: build -> audit -> train -> generate -> score -> report, each stage once, from
the cache when it can.

A `Pipeline` only caches and orchestrates: it reads the recipe's inputs, keys and fills the fixture cache, and
hands each stage plain data (a tokenizer, rows, a model folder, answers); no stage receives the pipeline. The
pytest plugin's fixtures and every CLI subcommand go through one, so a suite, the shell and the report always see
the same tokenizer, the same models and the same answers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from sft_eval.adapters import adapter_mismatch, load_adapted_model, merged_model, read_adapter_config
from sft_eval.audit import Finding
from sft_eval.audit.adapter import check_merge
from sft_eval.audit.run import audit_recipe, audit_template_file, audit_tokenizer_folder
from sft_eval.cache import FixtureCache, cache_key, source_digest
from sft_eval.chat import (
    check_rows_render,
    conversation,
    end_of_turn,
    end_of_turn_ids,
    load_template,
    render_conversation,
    render_prompt,
    shipped_templates,
    special_literals,
)
from sft_eval.data import (
    Question,
    ToolItem,
    assistant_texts,
    load_general_text,
    load_questions,
    load_sft_rows,
    load_tool_items,
    row_texts,
    split_held_out,
)
from sft_eval.errors import SftEvalError
from sft_eval.generation import CachedAnswers, GenerationSettings, Target, backend_for, check_backend
from sft_eval.generation.local import generate_prompts
from sft_eval.golden import (
    NUMERICS_KEYS,
    TOP_K,
    GoldenVerdict,
    check_golden,
    describe_environment,
    describe_partial,
    environment,
    environment_changes,
    golden_path,
    golden_record,
    read_reference,
    reference_record,
    same_numerics,
    tolerance_for,
    within_tolerance,
    write_golden,
)
from sft_eval.models import (
    CHECKPOINT_NAME,
    FinishedRun,
    architecture_mismatch,
    checkpoint_folders,
    finished_run,
    has_adapter,
    has_weights,
    load_model,
    pretrain_base,
    resolve_device,
    same_weights,
)
from sft_eval.recipe import DEFAULT_RECIPE, FIXTURES_DIR, TINY, Recipe
from sft_eval.records import Answer, TrainingRun
from sft_eval.report.format import ReportData
from sft_eval.sanity import Evaluation, evaluate_models
from sft_eval.scoring import (
    IGNORE,
    Lengths,
    RowLoss,
    Scored,
    Signals,
    answer_sequence,
    mean_nll,
    score_sequences,
    score_top_k,
    text_sequences,
)
from sft_eval.tokenizer import load_tokenizer, train_tokenizer
from sft_eval.toolcalls import (
    ToolRecord,
    ToolSummary,
    report_data,
    response_parser,
    score_answers,
    summarize,
    tool_prompt,
)
from sft_eval.training import read_finished_run, read_trainer_state, train_sft

PRETRAIN_CORPUS = FIXTURES_DIR / "data" / "pretrain.txt"
TRAINING_RUN_FILE = "training_run.json"
MERGE_PROMPTS = 32  # evaluation prompts the LoRA merge check compares logits on (all positions of each)


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """One model a pipeline loads and asks, resolved once from the recipe (`Pipeline.sources`): its `name` ("base",
    "tuned", "baseline"), the recipe `key` its errors name, and where its weights come from (`origin`):

    - "base": `model.base`, the tiny model built here or the recipe's checkpoint;
    - "trained-here": the recipe's own run, trained (and cached) on first use;
    - "folder": a checkpoint, run folder or LoRA adapter trained elsewhere, `named` by the recipe and found in it
      (`run`: its weights and the trainer's record).

    Loading, the answer cache's identity and the training record are derived from it in one place each
    (`Pipeline.weights`, `Pipeline.load`, `Pipeline.identity`); nothing downstream asks how a model was made."""

    name: str
    key: str
    origin: str
    named: str | None = None
    run: FinishedRun | None = None


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
    ):
        """`questions` and `rows` (`data.train`'s, before any held-out split), when the caller has read and
        validated them already (`sft_eval.factory`)."""
        self.recipe = recipe
        if questions is not None:
            self.questions = questions
        if rows is not None:
            self.loaded_rows = rows
        self.cache = cache or FixtureCache()
        self.device = resolve_device(device)
        self.answer_cache = answer_cache  # False: generate every answer again (`--no-answer-cache`)
        self.answer_counts: dict[str, dict[str, int]] = {}  # per model: answers read from the cache, generated
        check_backend(recipe.eval.backend, str(recipe.path or recipe.name))

    # -- build ------------------------------------------------------------------------------------------
    @functools.cached_property
    def loaded_rows(self) -> Dataset:
        """`data.train`'s rows (an Arrow `Dataset`, memory-mapped under the cache's `datasets/`), read and validated
        once per pipeline; `data.eval_fraction`'s rows still among them."""
        return load_sft_rows(self.recipe, cache_dir=self.cache.root / "datasets")

    @functools.cached_property
    def _split(self) -> tuple[Dataset, Dataset | None]:
        fraction = self.recipe.data.eval_fraction
        if fraction is not None:
            return split_held_out(self.loaded_rows, fraction, self.recipe.seed)
        if self.recipe.data.eval is not None:
            return self.loaded_rows, load_sft_rows(self.recipe, cache_dir=self.cache.root / "datasets", key="data.eval")
        return self.loaded_rows, None

    @property
    def rows(self) -> Dataset:
        """The rows the recipe trains on: `data.train`'s, less the `data.eval_fraction` share held out."""
        return self._split[0]

    @property
    def held_out_rows(self) -> Dataset | None:
        """The rows the held-out loss is measured on (`data.eval`, or `data.eval_fraction`'s share), or None."""
        return self._split[1]

    @functools.cached_property
    def tokenizer_entry(self) -> tuple[Path | None, str]:
        """(cache folder or None, cache key) of the tokenizer; the tiny tokenizer is trained and cached, a recipe's
        own is read where it is (None). The key names it in any entry built from it."""
        source = self.recipe.model.tokenizer or self.recipe.model.base
        if source != TINY:
            path = self.recipe.resolve(source)
            return None, cache_key("tokenizer", {"source": path, "digest": source_digest(path)})
        template = self._tiny_template
        key = cache_key("tokenizer", {"template": template, "vocabulary": self.vocabulary_key})

        def build(folder: Path) -> None:
            texts = _corpus() + [text for row in self.loaded_rows for text in row_texts(row)]
            specials = special_literals(template)
            train_tokenizer(texts, template, specials, eos_token=end_of_turn(specials)).save_pretrained(folder)

        return self.cache.get_or_build("tokenizer", key, build), key

    @functools.cached_property
    def _tiny_template(self) -> str:
        """The recipe's chat template text, which the tiny tokenizer is trained with (read once)."""
        return load_template(self.recipe.resolve(self.recipe.model.template))

    @functools.cached_property
    def vocabulary_key(self) -> str:
        """What the tiny tokenizer's vocabulary is trained from (the corpus, the rows, the template's special
        tokens and its end-of-turn token), without the template's text: the tiny base is pretrained once per
        vocabulary, so a template edit that keeps its special tokens reuses it (the tuned model, keyed with the
        tokenizer and so the template, still trains again). A recipe's own tokenizer is its own vocabulary: its
        entry's key."""
        if (self.recipe.model.tokenizer or self.recipe.model.base) != TINY:
            return self.tokenizer_entry[1]
        specials = special_literals(self._tiny_template)
        inputs = {
            "corpus": source_digest(str(PRETRAIN_CORPUS)),
            "train": source_digest(self.recipe.resolve(self.recipe.data.train)),
            "specials": specials,
            "eos": end_of_turn(specials),
        }
        return cache_key("vocabulary", inputs)

    @functools.cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        folder, _ = self.tokenizer_entry
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
    def base_key(self) -> str:
        """The base model's cache key, known without building it: a recipe's checkpoint by its files' contents, the
        tiny one by its vocabulary, seed and device."""
        if self.recipe.model.base != TINY:
            path = self.recipe.resolve(self.recipe.model.base)
            return cache_key("base", {"source": path, "digest": source_digest(path)})
        return cache_key(
            "base", {"vocabulary": self.vocabulary_key, "seed": self.recipe.seed, "device": self.device.type}
        )

    @functools.cached_property
    def base_model_dir(self) -> Path:
        """The base model's folder: the tiny model pretrained and cached, or the recipe's checkpoint as is."""
        if self.recipe.model.base != TINY:
            return Path(self.recipe.resolve(self.recipe.model.base))

        def build(folder: Path) -> None:
            pretrain_base(self.tokenizer, _corpus(), seed=self.recipe.seed, device=self.device).save_pretrained(folder)

        return self.cache.get_or_build("base", self.base_key, build)

    def load_base_model(self, *, dropout: bool = True) -> PreTrainedModel:
        """A fresh copy of the base model (training changes the one it is given); `dropout=False` for runs that
        must be compared exactly: with dropout on, two runs that batch the same rows differently draw different
        masks."""
        model = load_model(self.base_model_dir, str(self.device), key="model.base")
        if not dropout:
            from trl.trainer.utils import disable_dropout_in_model  # trl loads on first use, as in training

            disable_dropout_in_model(model)  # TRL's: every nn.Dropout
            for module in model.modules():  # and the attention dropout rates attention layers keep as floats
                if isinstance(getattr(module, "attention_dropout", None), float):
                    module.attention_dropout = 0.0
        return model

    def cached(self, stage: str, inputs: Mapping[str, Any], build: Callable[[Path], None]) -> Path:
        """A folder built once by `build(folder)` and kept in the fixture cache, keyed by `inputs` with this
        recipe's base model, tokenizer and LoRA settings (and the library versions, as every entry is): a LoRA
        recipe's short runs and torchrun runs never share an entry with full fine-tuning's."""
        lora = {"peft": dict(self.recipe.peft)} if self.recipe.peft is not None else {}
        key = cache_key(stage, {**inputs, "base": self.base_key, "tokenizer": self.tokenizer_entry[1], **lora})
        return self.cache.get_or_build(stage, key, build)

    def variant_recipe(self, **sft: Any) -> Recipe:
        """The recipe as a short variant run trains it: a loss logged every step, no warmup, `sft` on top."""
        return self.recipe.with_sft(**{"logging_steps": 1, "warmup_steps": 0, **sft})

    def train_variant(
        self, rows: int, output_dir: str | Path, *, dropout: bool = False, **sft: Any
    ) -> tuple[TrainingRun, PreTrainedModel]:
        """Train the base model (dropout off unless asked) on the recipe's first `rows` rows with
        `variant_recipe(**sft)`, uncached: (what the trainer did, the trained model)."""
        if rows > len(self.rows):
            raise SftEvalError(f"a variant run needs {rows} training rows and the recipe has {len(self.rows)}")
        model = self.load_base_model(dropout=dropout)
        return train_sft(
            self.variant_recipe(**sft), model, self.tokenizer, self.rows.select(range(rows)), str(output_dir)
        )

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
        """`train_variant`, cached on disk: (the run's record, its cache folder). `keep(folder, model)` saves more
        of the trained model (parameters, say); `patch()` is a context the training runs in (a deliberately
        broken trainer), named in `key` with anything else the run depends on."""
        settings = dict(self.variant_recipe(**sft).sft)

        def build(folder: Path) -> None:
            with patch() if patch else contextlib.nullcontext():
                run, model = self.train_variant(rows, folder / "trainer", **sft)
            shutil.rmtree(folder / "trainer", ignore_errors=True)
            (folder / TRAINING_RUN_FILE).write_text(json.dumps(run.to_dict()), encoding="utf-8")
            if keep is not None:
                keep(folder, model)

        folder = self.cached(stage, {"rows": rows, "sft": settings, "dropout": False, **(key or {})}, build)
        return TrainingRun.from_dict(json.loads((folder / TRAINING_RUN_FILE).read_text(encoding="utf-8"))), folder

    @functools.cached_property
    def base_model(self) -> PreTrainedModel:
        return self.load_base_model()

    # -- train ------------------------------------------------------------------------------------------
    @functools.cached_property
    def _tuned_entry(self) -> Path:
        _, tokenizer_key = self.tokenizer_entry
        # Contents, not spellings: the same data named by another path is the same entry, and editing a
        # threshold or a question never retrains.
        inputs = {
            "tokenizer": tokenizer_key,
            "base": self.base_key,
            "chat_template": self.tokenizer.chat_template,
            "train": source_digest(self.recipe.resolve(self.recipe.data.train)),
            "limit": self.recipe.data.limit,
            **({"eval_fraction": self.recipe.data.eval_fraction} if self.recipe.data.eval_fraction else {}),
            "sft": dict(self.recipe.sft),
            **({"peft": dict(self.recipe.peft)} if self.recipe.peft is not None else {}),
            "seed": self.recipe.seed,
            "device": self.device.type,  # trained on a GPU or on the CPU: different numerics, different weights
        }

        def build(folder: Path) -> None:
            check_rows_render(self.tokenizer, self.rows)  # a template that fails on the rows, before a base is built
            base = self.load_base_model()
            run, model = train_sft(self.recipe, base, self.tokenizer, self.rows, str(folder / "trainer"))
            if self.recipe.peft is None:  # a LoRA run saves its adapter alone; the base's config is untouched
                model.config.use_cache = True  # Trainer set it to TrainingArguments.use_cache (off); serving wants it
            model.save_pretrained(folder / "model")
            self.tokenizer.save_pretrained(folder / "model")
            (folder / TRAINING_RUN_FILE).write_text(json.dumps(run.to_dict(), indent=1), encoding="utf-8")

        return self.cache.get_or_build("tuned", cache_key("tuned", inputs), build)

    @functools.cached_property
    def sources(self) -> dict[str, ModelSource]:
        """The models this recipe names, each resolved once: the base, the tuned model (trained here, or the folder
        `model.tuned` names) and `model.baseline`'s, where it names one. A folder that is no fine-tune of (or
        adapter for) model.base, or is the base's own weights, is one line naming its key."""
        model = self.recipe.model
        sources = {"base": ModelSource("base", "model.base", "base")}
        if model.tuned is None:
            # trained here: a load error names the base the recipe gave, as the run starts from it
            sources["tuned"] = ModelSource("tuned", "model.base", "trained-here")
        else:
            named = self.recipe.resolve(model.tuned)
            sources["tuned"] = ModelSource("tuned", "model.tuned", "folder", named, self._finished_tuned(named))
        if model.baseline is not None:
            named = self.recipe.resolve(model.baseline)
            found = finished_run(named, key="model.baseline")
            self._check_fits_base(found, "model.baseline")
            sources["baseline"] = ModelSource("baseline", "model.baseline", "folder", named, found)
        return sources

    def _finished_tuned(self, named: str) -> FinishedRun:
        """The run trained elsewhere that `model.tuned` names: its weights and record, checked against the base."""
        found = finished_run(named)
        if not found.adapter and same_weights(found.weights, self.base_model_dir):
            raise SftEvalError(
                f"model.tuned: {found.weights} holds model.base's own weights ({self.base_model_dir}): nothing was "
                "fine-tuned there; name the run's output folder or one of its checkpoint-N folders"
            )
        self._check_fits_base(found, "model.tuned")
        if self.recipe.model.merged is not None and not found.adapter:
            raise SftEvalError(
                f"model.merged: the tuned model {found.weights} holds full weights, not a LoRA adapter: there is no "
                "merge to check; remove model.merged, or name the adapter folder as model.tuned"
            )
        return found

    @property
    def finished_run(self) -> FinishedRun | None:
        """The run trained elsewhere that `[model] tuned` names (its weights and record), or None: trained here."""
        return self.sources["tuned"].run

    def _check_fits_base(self, found: FinishedRun, key: str) -> None:
        """Bad input: a folder `key` names that is not a fine-tune of model.base (another architecture or shape), or
        an adapter for another base."""
        if found.adapter:
            mismatch = adapter_mismatch(found.weights, self.base_model_dir, self.recipe.model.base)
        else:
            mismatch = architecture_mismatch(found.weights, self.base_model_dir)
        if mismatch:
            kind = "an adapter for" if found.adapter else "a fine-tune of"
            raise SftEvalError(f"{key}: {found.weights} is not {kind} model.base: {mismatch}")

    @property
    def baseline_run(self) -> FinishedRun | None:
        """The last accepted model `[model] baseline` names (a checkpoint, a run folder, an adapter on the base),
        checked to be a fine-tune of (or an adapter for) model.base; None without one."""
        source = self.sources.get("baseline")
        return None if source is None else source.run

    def baseline_comparison(self) -> Any:
        """The tuned model held to `[model] baseline`'s, question by question (`compare.compare_outcomes`): the
        baseline's answers generated here (and cached, by its weights), judged as the tuned model's are; None
        without a baseline."""
        from sft_eval.compare import compare_outcomes, outcomes_from_evaluation

        if self.baseline_run is None:
            return None
        return compare_outcomes(
            outcomes_from_evaluation(self.evaluation, "baseline"),
            outcomes_from_evaluation(self.evaluation),
            baseline_name=f"model.baseline ({self.baseline_run.weights})",
            candidate_name="this run",
            gate=self.recipe.thresholds.gate,
            margins=self.recipe.thresholds.max_regression,
        )

    def with_tuned(self, folder: str | Path) -> Pipeline:
        """This recipe with `model.tuned` = `folder` (one checkpoint of a run), sharing this pipeline's cache,
        device, questions and rows: a sweep evaluates each checkpoint through one, then lets it go."""
        model = dataclasses.replace(self.recipe.model, tuned=str(folder), baseline=None)  # one checkpoint at a time
        checkpoint = Pipeline(
            dataclasses.replace(self.recipe, model=model),
            self.cache,
            str(self.device),
            answer_cache=self.answer_cache,
            questions=self.questions,
            rows=self.__dict__.get("loaded_rows"),  # read once here if read at all; a sweep's evaluation needs none
        )
        # the same base and the same sequences: what this pipeline scored of them is not scored again
        if "signal_inputs" in self.__dict__:
            checkpoint.__dict__["signal_inputs"] = self.__dict__["signal_inputs"]
        base = self.__dict__.get("signal_score_cache", {}).get("base")
        if base is not None:
            checkpoint.__dict__["signal_score_cache"] = {"base": base}
        return checkpoint

    @functools.cached_property
    def training_run(self) -> TrainingRun:
        """What the trainer did: the run trained elsewhere from its own record, else the run trained here."""
        found = self.sources["tuned"].run
        if found is not None:
            return read_finished_run(found, self.recipe, len(self.rows), base_dir=self.base_model_dir)
        data = json.loads((self._tuned_entry / TRAINING_RUN_FILE).read_text(encoding="utf-8"))
        return TrainingRun.from_dict(data)

    def weights(self, source: ModelSource) -> tuple[Path, bool]:
        """(the folder `source`'s weights are in, whether it is a PEFT adapter applied to `base_model_dir`); the
        base is built, or the tuned model trained, here if it must be."""
        if source.origin == "base":
            return self.base_model_dir, False
        if source.origin == "trained-here":
            return self._tuned_entry / "model", self.is_adapter(source)  # a LoRA run saves its adapter alone
        assert source.run is not None, source
        return source.run.weights, self.is_adapter(source)

    def is_adapter(self, source: ModelSource) -> bool:
        """`source` is a PEFT adapter on the base (a LoRA recipe trained here, or an adapter folder), known without
        building or training anything."""
        if source.origin == "trained-here":
            return self.recipe.peft is not None
        return source.run is not None and source.run.adapter

    def load(self, source: ModelSource) -> PreTrainedModel:
        """A fresh copy of `source`'s model on this pipeline's device: full weights, or an adapter on the base."""
        if source.origin == "base":
            return self.load_base_model()
        folder, adapter = self.weights(source)
        if adapter:
            return load_adapted_model(self.base_model_dir, folder, str(self.device), key=source.key)
        return load_model(folder, str(self.device), key=source.key)

    def identity(self, source: ModelSource) -> dict[str, Any]:
        """`source`'s weights as the answer cache keys them, known without loading them: the base's and the run
        trained here's cache keys, a folder's digest (under its name, with the base it applies to)."""
        if source.origin == "base":
            return {"base": self.base_key}
        if source.origin == "trained-here":
            return {"tuned": self._tuned_entry.name}
        assert source.run is not None, source
        return {source.name: source_digest(str(source.run.weights)), "base": self.base_key}

    @property
    def tuned_model_dir(self) -> Path:
        """The tuned checkpoint folder (model and tokenizer with its chat template): what a server serves; for a
        LoRA run, the adapter folder (applied to `base_model_dir`)."""
        return self.weights(self.sources["tuned"])[0]

    @property
    def tuned_is_adapter(self) -> bool:
        """The tuned model is a PEFT adapter on the base: a LoRA recipe trained here, or an adapter folder."""
        return self.is_adapter(self.sources["tuned"])

    @property
    def lora_settings(self) -> dict[str, Any] | None:
        """What the LoRA run trains (target modules, modules_to_save, trainable tokens): the adapter folder's own
        config for a run trained elsewhere, else the recipe's `[peft]`; None for full fine-tuning."""
        found = self.sources["tuned"].run
        if found is not None:
            return read_adapter_config(found.weights) if found.adapter else None
        return None if self.recipe.peft is None else dict(self.recipe.peft)

    @functools.cached_property
    def tuned_model(self) -> PreTrainedModel:
        return self.load(self.sources["tuned"])

    # -- generate and score -----------------------------------------------------------------------------
    @functools.cached_property
    def questions(self) -> list[Question]:
        return load_questions(self.recipe)

    def answers(self, which: str) -> list[Answer]:
        """The `which` source's answers ("base", "tuned", "baseline") to the recipe's questions, from the recipe's
        backend through the answer cache (`generation.CachedAnswers`): each answer is kept under a key of the
        backend's identity, the generation settings and the question, so a rerun generates only what changed,
        builds no model when nothing did, and resumes a run that failed half-way (a server that went away)."""
        cached = CachedAnswers(self._backend(which), self.cache.answers if self.answer_cache else None)
        answers = cached.answer([q.question for q in self.questions], GenerationSettings.from_eval(self.recipe.eval))
        self.answer_counts[which] = cached.counts
        return answers

    def _backend(self, which: str) -> Any:
        """The recipe's backend for the `which` model; nothing is loaded until it is asked a question."""
        source = self.sources[which]
        target = Target(
            which,
            lambda: (self._model_for_answers(which), self.tokenizer),
            model_identity=lambda: self._model_identity(which),
            run={"run": source_digest(source.named)} if source.named else {},
        )
        return backend_for(target, self.recipe.eval)

    def _model_for_answers(self, which: str) -> PreTrainedModel:
        """The model whose answers are missing: the one this pipeline holds already (a suite's fixture asked for
        it), else one loaded for these answers alone and let go with the backend, so that generating the base's
        and the tuned model's answers (or a sweep's checkpoints') holds one model in memory at a time."""
        held = self.__dict__.get({"tuned": "tuned_model", "base": "base_model"}.get(which, ""))
        return held if held is not None else self.load(self.sources[which])

    def answer_identity(self, which: str) -> dict[str, Any] | None:
        """What determines the `which` model's answers besides the question and settings, as its backend says
        (`identity()`): None for a backend that says nothing (its answers are not cached)."""
        identity = getattr(self._backend(which), "identity", None)
        return identity() if callable(identity) else None

    def _model_identity(self, which: str) -> dict[str, Any]:
        """The `which` model as this process prompts it: its weights (the cache entry's key, or the folder's
        digest), the tokenizer and template, the device."""
        return {
            **self.identity(self.sources[which]),
            "tokenizer": self.tokenizer_entry[1],
            "chat_template": self.tokenizer.chat_template,
            "device": self.device.type,
        }

    @functools.cached_property
    def tool_items(self) -> list[ToolItem]:
        return load_tool_items(self.recipe)

    def tool_records(self, which: str) -> list[ToolRecord]:
        """The `which` model's answers to the recipe's `eval.tool_items`, each asked as its conversation with its
        tools, the call parsed with the template's response parser and scored. Generated in this process (the
        transformers backend) once per pipeline and model, not in the answer cache: tool items are few."""
        asked = self.__dict__.setdefault("tool_record_cache", {})
        if which not in asked:
            asked[which] = self._ask_tool_items(which)
        return asked[which]

    def _ask_tool_items(self, which: str) -> list[ToolRecord]:
        parser, why = response_parser(self.tokenizer)
        if parser is None and any(item.tools or item.expected_call for item in self.tool_items):
            raise SftEvalError(f"eval.tool_items: {why}")
        thinking = self.recipe.eval.enable_thinking
        prompts = [tool_prompt(self.tokenizer, item, enable_thinking=thinking) for item in self.tool_items]
        answers = generate_prompts(
            self._model_for_answers(which),
            self.tokenizer,
            prompts,
            [item.question for item in self.tool_items],
            max_new_tokens=self.recipe.eval.max_new_tokens,
            batch_size=self.recipe.eval.batch_size,
        )
        return score_answers(parser, self.tool_items, prompts, answers)

    def tool_summary(self, which: str) -> ToolSummary:
        """The `which` model's tool-call rates."""
        return summarize([r.score for r in self.tool_records(which)])

    @property
    def evaluated(self) -> bool:
        """Whether this pipeline has evaluated its models (its answers and scores exist): what a report needs."""
        return "evaluation" in self.__dict__

    @functools.cached_property
    def evaluation(self) -> Evaluation:
        """Every source's answers to the recipe's questions (the base's, the tuned model's, the baseline's where the
        recipe names one), each model asked in turn and let go, scored side by side per question."""
        return evaluate_models(
            self.questions,
            {name: self.answers(name) for name in self.sources},
            specials=[t for t in self.tokenizer.all_special_tokens if t],
            enable_thinking=self.recipe.eval.enable_thinking,
        )

    def _signal_inputs(self, model: PreTrainedModel) -> dict[str, tuple[list[Scored], list[str]]]:
        """The sequences each teacher-forced signal scores, with a label per row, built once per pipeline (and
        handed to a sweep's checkpoints): the held-out rows through the recipe's own trainer (`model` prepares
        them, as any model of the run would), the expected answers after the served prompt, the general text."""
        if "signal_inputs" in self.__dict__:
            return self.__dict__["signal_inputs"]
        recipe, tokenizer = self.recipe, self.tokenizer
        inputs: dict[str, tuple[list[Scored], list[str]]] = {
            "held_out": ([], []),
            "expected": ([], []),
            "general": ([], []),
        }
        if self.held_out_rows is not None:
            inputs["held_out"] = held_out_sequences(recipe, model, tokenizer, self.held_out_rows)
        stops = end_of_turn_ids(tokenizer)
        system = recipe.eval.system_message or None
        expected = []
        for q in self.questions:
            if q.expected:
                messages = conversation(q.question, system)
                prompt = render_prompt(tokenizer, messages, enable_thinking=recipe.eval.enable_thinking)
                full = render_conversation(tokenizer, [*messages, {"role": "assistant", "content": q.expected}])
                expected.append((answer_sequence(tokenizer, prompt, full, q.expected, stops), q.question))
        inputs["expected"] = ([s for s, _ in expected], [q for _, q in expected])
        if recipe.eval.general_text:
            documents = load_general_text(recipe.resolve(recipe.eval.general_text))
            general = text_sequences(tokenizer, documents, int(recipe.sft.get("max_length") or 1024))
            inputs["general"] = (general, [f"document {i + 1}" for i in range(len(general))])
        self.__dict__["signal_inputs"] = inputs
        return inputs

    def signal_scores(self, which: str) -> dict[str, list[list[float]]]:
        """The `"base"` or `"tuned"` model's per-token log-probabilities on each signal's sequences: the model
        loaded (or the one held), every sequence scored, the model let go. Kept per pipeline; a sweep's
        checkpoints share the base's."""
        scores = self.__dict__.setdefault("signal_score_cache", {})
        if which not in scores:
            model = self._model_for_answers(which)
            inputs = self._signal_inputs(model)
            scores[which] = {name: score_sequences(model, seqs) for name, (seqs, _) in inputs.items()}
            del model
        return scores[which]

    def teacher_forced(self) -> dict[str, list[RowLoss]]:
        """Each teacher-forced signal's rows, base and tuned (the base scored first, then the tuned model)."""
        base, tuned = self.signal_scores("base"), self.signal_scores("tuned")
        return {
            name: [
                RowLoss(label, len(b), mean_nll(b), mean_nll(t))
                for label, b, t in zip(labels, base[name], tuned[name], strict=True)
                if b
            ]
            for name, (_, labels) in self.__dict__["signal_inputs"].items()
        }

    @functools.cached_property
    def signals(self) -> Signals:
        """The teacher-forced signals (held-out loss, the expected answers' likelihood, general-text loss) of the
        base and the tuned model, and the answers' lengths against the training answers'. Each model is loaded
        once, scores every sequence, and is let go before the next (one model in memory at a time); nothing is
        generated. The held-out rows are tokenized and masked by the recipe's own SFTTrainer and collator, so the
        held-out loss scores exactly the tokens training trains."""
        recipe, tokenizer = self.recipe, self.tokenizer
        # teacher-forced scoring loads the weights here: not for a model a server answers for (it may be far
        # larger than this machine holds); its answers' length is still judged
        served = [w for w in ("base", "tuned") if not getattr(self._backend(w), "in_process", False)]
        unscored = (
            f"the {' and '.join(served)} model's answers come from eval.backend = {recipe.eval.backend!r}: "
            "teacher-forced signals need its weights in this process (the in-process backend)"
            if served
            else ""
        )
        rows = {"held_out": [], "expected": [], "general": []} if served else self.teacher_forced()
        evaluation = self.evaluation
        training = [
            len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1  # and the end-of-turn token
            for row in self.rows
            for text in assistant_texts(row)
        ]
        lengths = Lengths(
            [s.new_tokens for s in evaluation.base_scores], [s.new_tokens for s in evaluation.tuned_scores], training
        )
        source = (
            f"data.eval: {recipe.data.eval}"
            if recipe.data.eval
            else f"data.eval_fraction: {recipe.data.eval_fraction}"
            if recipe.data.eval_fraction
            else ""
        )
        return Signals(
            held_out=rows["held_out"],
            expected=rows["expected"],
            general=rows["general"],
            lengths=lengths,
            held_out_source=source,
            unscored=unscored,
        )

    def prompt_ids(self, questions: list[str]) -> list[list[int]]:
        """Each question's served prompt as token ids, rendered as the in-process backend renders it."""
        system = self.recipe.eval.system_message or None
        thinking = self.recipe.eval.enable_thinking
        prompts = [render_prompt(self.tokenizer, conversation(q, system), enable_thinking=thinking) for q in questions]
        return [list(ids) for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]] if prompts else []

    def answer_top_k(
        self, which: str, questions: list[str], answers: list[list[int]], k: int = TOP_K
    ) -> tuple[list[list[int]], list[Any], str]:
        """The `which` model teacher-forced on each answer after its question's served prompt: (the prompts' token
        ids, each answer's `scoring.TopK`, the dtype the model ran in). One model loaded (or the one held)."""
        prompts = self.prompt_ids(questions)
        sequences = [Scored(p + list(a), [IGNORE] * len(p) + list(a)) for p, a in zip(prompts, answers, strict=True)]
        model = self._model_for_answers(which)
        scores = score_top_k(model, sequences, k)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        del model
        return prompts, scores, dtype

    def golden(self, *, mode: str | None = None, update: bool = False) -> GoldenVerdict:
        """The tuned model's answers held to the recipe's golden outputs (`sft_eval.golden`): within a tolerance of
        the reference (the default `mode`, any machine) or exactly against this environment's entry; `update`
        writes the reference and this environment's entry instead."""
        mode = mode or self.recipe.eval.golden_mode
        path, env = golden_path(self.recipe), environment(str(self.device))
        tuned = self.evaluation.tuned
        record, local = golden_record(tuned), self.cache.root / "golden-local"
        if path is None or (mode == "exact" and not update):
            return check_golden(path, record, env, local)
        if update:
            asked = [a.question for a in tuned]
            prompts, scores, dtype = self.answer_top_k("tuned", asked, [a.token_ids for a in tuned])
            write_golden(path, record, env, reference_record(tuned, prompts, scores, dtype, env))
            where = describe_environment(env)
            return GoldenVerdict("recorded", f"wrote the golden reference and the exact entry of {where} to {path}")
        reference = read_reference(path)
        if reference is None:  # no file yet, or one of the second format: its exact entries are all it has
            exact = check_golden(path, record, env, local)
            if not path.is_file():
                return exact
            return dataclasses.replace(exact, message=f"{path} has no reference, only exact entries: {exact.message}")
        trained = reference.get("environment") or {}
        if self.recipe.model.tuned is None and not same_numerics(trained, env):  # trained here: another model
            exact = check_golden(path, record, env, local)
            numerics = environment_changes(trained, env, NUMERICS_KEYS)
            return dataclasses.replace(
                exact,
                message=f"the tuned model was trained here on {describe_environment(env)}, the golden reference's "
                f"on {describe_partial(trained)}: other training numerics ({numerics}), so another model, which no "
                f"tolerance covers; {exact.message}",
            )
        golden = reference["answers"]
        _, scores, dtype = self.answer_top_k("tuned", [g["question"] for g in golden], [g["token_ids"] for g in golden])
        tolerance = self.recipe.eval.golden_tolerance or tolerance_for(dtype, reference.get("dtype", dtype))
        now = self.prompt_ids([a.question for a in tuned])
        shown = self.tokenizer.convert_ids_to_tokens
        default = self.recipe.path is None or self.recipe.path.resolve() == DEFAULT_RECIPE.resolve()
        recipe = "" if default else f" --sft-recipe {self.recipe.path}"
        rerecord = f"`pytest --pyargs sft_eval.suites{recipe} -k golden --sft-update-golden`"
        return within_tolerance(
            reference, tuned, now, scores, tolerance, lambda t: f"{shown(t)!r} ({t})", env=env, rerecord=rerecord
        )

    @functools.cached_property
    def findings(self) -> list[Finding]:
        """The audit of the recipe (template, tokenizer, checkpoint files, a LoRA run's trainable tokens, the
        trainer's labels), once; nothing is trained for it."""
        found = self.sources["tuned"].run
        tuned = found.weights if found is not None else None
        return audit_recipe(
            self.recipe,
            self.tokenizer,
            self.rows,
            self.base_model_dir,
            self.load_base_model,
            tuned_dir=tuned,
            tuned_is_adapter=self.tuned_is_adapter,
            lora=self.lora_settings,
            tool_items=self.tool_items,
        )

    @functools.cached_property
    def merge_findings(self) -> list[Finding]:
        """`peft.merge` for a LoRA run: the merged model (the recipe's `model.merged`, else the adapter merged here)
        against the adapter, on the first `MERGE_PROMPTS` evaluation prompts; nothing for full fine-tuning."""
        if not self.tuned_is_adapter:
            return []
        named = Path(self.recipe.resolve(self.recipe.model.merged)) if self.recipe.model.merged else None
        merged, source = merged_model(self.base_model_dir, self.tuned_model_dir, str(self.device), named)
        prompts = [
            render_prompt(
                self.tokenizer,
                conversation(q.question, self.recipe.eval.system_message or None),
                enable_thinking=self.recipe.eval.enable_thinking,
            )
            for q in self.questions[:MERGE_PROMPTS]
        ]
        return check_merge(self.tuned_model, merged, self.tokenizer, prompts, source)

    def audit(self, *, template: str | None = None, tokenizer_dir: str | None = None) -> list[Finding]:
        """The recipe's audit; or a template file audited with the recipe's tokenizer adapted to it; or a
        tokenizer folder, with its own template or `template`."""
        if tokenizer_dir:
            return audit_tokenizer_folder(self.recipe, tokenizer_dir, template)
        if template:
            return audit_template_file(self.recipe, self.tokenizer, template)
        return self.findings

    def report_context(
        self,
        outcomes: dict[str, Any] | None = None,
        speed: dict[str, float] | None = None,
        baseline: tuple[str, ReportData] | None = None,
    ) -> ReportData:
        """The report's data for this recipe: the stages' plain records, gathered here and handed over.
        `baseline`: (its name, a previous report's JSON, read and checked): the tuned model held against that
        report's, question by question (`compare`), for the report's "Against the baseline" section."""
        from sft_eval.compare import compare_outcomes, outcomes_from_evaluation, outcomes_from_report
        from sft_eval.data import dataset_table
        from sft_eval.report import build_context

        against = None
        if baseline is None and self.recipe.model.baseline is not None:
            against = self.baseline_comparison().to_dict()
        if baseline is not None:
            name, report = baseline
            against = compare_outcomes(
                outcomes_from_report(report),
                outcomes_from_evaluation(self.evaluation, signals=self.signals),
                baseline_name=name,
                candidate_name="this run",
                gate=self.recipe.thresholds.gate,
                margins=self.recipe.thresholds.max_regression,
            ).to_dict()

        return build_context(
            recipe=self.recipe,
            run=self.training_run,
            evaluation=self.evaluation,
            findings=self.findings + self.merge_findings,
            data_preview=[list(r) for r in dataset_table(self.rows, n=3).rows],
            provenance=self.describe(),
            outcomes=outcomes,
            speed=speed,
            checks=[c.to_dict() for c in self.checks()],
            against_baseline=against,
            signals=self.signals.to_dict(),
            tools=self.tool_report(),
        )

    def tool_report(self) -> dict[str, Any] | None:
        """The tool items asked of the base and the tuned model, for the report (`toolcalls.report_data`); None
        when the recipe has none."""
        if not self.tool_items:
            return None
        return report_data({which: self.tool_records(which) for which in ("base", "tuned")})

    def checks(self) -> list[Any]:
        """This run judged against its recipe's thresholds, the loss and plan checks and the audit's errors: the
        checks the suites assert, from the one function they use (`verdict.judge`)."""
        from sft_eval.verdict import judge

        return judge(
            self.recipe.thresholds,
            self.evaluation,
            self.training_run,
            self.findings + self.merge_findings,
            self.tokenizer.eos_token,
            self.signals,
            (self.tool_summary("tuned"), self.tool_summary("base")) if self.tool_items else None,
        )

    def answer_provenance(self) -> str:
        """How many answers came from the answer cache and how many were generated, per model."""
        if not self.answer_cache:
            return "answer cache off (--no-answer-cache): every answer generated"
        return "; ".join(
            f"{which}: {n['cached']} from the answer cache, {n['generated']} generated"
            for which, n in self.answer_counts.items()
        )

    def describe(self) -> dict[str, Any]:
        """Where things came from, for the report and `--json` output."""
        return {
            "recipe": str(self.recipe.path) if self.recipe.path else self.recipe.name,
            "cache": str(self.cache.root),
            "device": str(self.device),
            "tuned_entry": str(self.tuned_model_dir if self.finished_run is not None else self._tuned_entry),
            **({"answers": self.answer_provenance()} if self.answer_counts else {}),
        }


def held_out_sequences(
    recipe: Recipe, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: Dataset
) -> tuple[list[Scored], list[str]]:
    """The held-out rows as the recipe's trainer would train them, unpacked: tokenized, truncated and masked by its
    own SFTTrainer and data collator (assistant-only, completion-only or whole sequence, as its config says), each
    with its row's label ("row N" of the file). A row the trainer drops (nothing left to train) is not scored."""
    from sft_eval.audit.labels import trainer_batch

    check_rows_render(tokenizer, rows)
    batch = trainer_batch(recipe.with_sft(packing=False), model, tokenizer, rows, limit=None)
    scored = [Scored(ids, labels) for ids, labels in zip(batch.input_ids, batch.labels, strict=True)]
    return scored, [f"row {k + 1}" for k in batch.source]


@functools.cache
def _corpus() -> list[str]:
    return [line for line in PRETRAIN_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def sweep_checkpoints(pipeline: Pipeline) -> Any:
    """Every checkpoint of the run `model.tuned` names (each `checkpoint-N` with weights or an adapter, and the
    run folder's own final save), evaluated on the recipe's questions (and, where the recipe gives them, its
    held-out rows and general text, against the base scored once) one model at a time (each answer cached by
    the checkpoint's files, so a checkpoint added later costs only itself), then judged by `sweep.sweep` with the
    trainer's record: a `sweep.Sweep`."""
    from sft_eval.compare import outcomes_from_evaluation
    from sft_eval.sweep import CheckpointResult, sweep

    recipe = pipeline.recipe
    if recipe.model.tuned is None:
        raise SftEvalError(
            "model.tuned: a sweep judges the checkpoints of a run trained elsewhere; set `model.tuned` to the run's "
            "output folder (the one holding checkpoint-N folders)"
        )
    run = Path(recipe.resolve(recipe.model.tuned)).expanduser()
    checkpoints = [p for p in checkpoint_folders(run) if has_weights(p) or has_adapter(p)]
    if not checkpoints:
        raise SftEvalError(
            f"model.tuned: {run} holds no checkpoint-N folder with weights or an adapter: a sweep judges a run's "
            "checkpoints; name the run's output folder (save_steps or save_strategy makes the trainer keep them)"
        )
    adapters = [p.name for p in checkpoints if has_adapter(p) and not has_weights(p)]
    if adapters and len(adapters) < len(checkpoints):
        full = [p.name for p in checkpoints if p.name not in adapters]
        raise SftEvalError(
            f"model.tuned: {run} mixes full-weight checkpoints ({', '.join(full)}) and LoRA adapters "
            f"({', '.join(adapters)}): the checkpoints of one run are all one or the other; move the folders of "
            "the other run out"
        )
    found = finished_run(run)
    record = trainer_record(found.state)
    targets = [(p, p.name, int(CHECKPOINT_NAME.fullmatch(p.name).group(1))) for p in checkpoints]
    if has_weights(run) or has_adapter(run):  # trainer.save_model's final save, at the run's last step
        own = found.state == run / "trainer_state.json"  # trainer.save_state's, read into `record` above
        targets.append((run, "final", record.global_step if own else targets[-1][2]))
    teacher_forced = pipeline.held_out_rows is not None or bool(recipe.eval.general_text)
    if teacher_forced:
        pipeline.signal_scores("base")  # once: every checkpoint is held against the same base
    results = []
    for folder, name, step in targets:
        checkpoint = pipeline.with_tuned(folder)
        evaluation = checkpoint.evaluation
        signals = Signals(**checkpoint.teacher_forced()) if teacher_forced else Signals()
        held_out = signals.loss("held_out")
        results.append(
            CheckpointResult(
                name=name,
                path=str(folder),
                step=step,
                summary=evaluation.tuned_summary.to_dict(),
                outcomes=outcomes_from_evaluation(evaluation, signals=signals if signals.expected else None),
                answers_generated=checkpoint.answer_counts.get("tuned", {}).get("generated", 0),
                held_out_loss=None if held_out is None else held_out[1],
                forgetting=signals.forgetting,
            )
        )
        del checkpoint  # and with it the checkpoint's model: one in memory at a time
    return sweep(
        results,
        record,
        run=str(run),
        best_by=list(recipe.eval.best_by),
        on_disk={p.name for p in checkpoint_folders(run)},
    )


def trainer_record(state_path: Path | None) -> Any:
    """The trainer's losses, eval losses and best checkpoint from its `trainer_state.json` (checked), as the sweep's
    `TrainerRecord`."""
    from sft_eval import validate
    from sft_eval.sweep import TrainerRecord

    if state_path is None:
        return TrainerRecord(source=None)
    state = read_trainer_state(state_path)
    where = f"model.tuned: {state_path}:"
    best = state.get("best_model_checkpoint")
    if best is not None:
        validate.text(best, f"{where} best_model_checkpoint")
    metric = state.get("best_metric")
    if metric is not None:
        validate.number(metric, f"{where} best_metric")
    log = state["log_history"]
    return TrainerRecord(
        source=str(state_path),
        losses=[(e["step"], float(e["loss"])) for e in log if "loss" in e],
        eval_losses=[(e["step"], float(e["eval_loss"])) for e in log if "eval_loss" in e],
        best_model_checkpoint=best,
        best_metric=None if metric is None else float(metric),
        global_step=int(state["global_step"]),
    )
