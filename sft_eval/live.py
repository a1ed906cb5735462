"""The recipe's evaluation of a model in memory while it trains (`SftEvalCallback`'s), computed as `sft-eval sweep`
computes a saved checkpoint's, and the per-step record both read.

`LiveEvaluation` holds what does not change during a run: the recipe's questions (under the budget), the generation
settings, the teacher-forced sequences (built once, by the recipe's trainer keys and the trainer's own), the base's
answers and scores (the trainer's model before its first step), and the judge. `evaluate(model, step)` asks the
model the questions in the sweep's batches (so a checkpoint's answers are the sweep's, token for token), scores them
against the base's, teacher-forces the signals, asks the judge and judges the answer checks, as far as the budget
allows: whatever it skips is said, never guessed.

The record (`<output_dir>/sft-eval-live/step-N.json`) holds each evaluation: the sweep's per-checkpoint result,
the tuned answers, the scalars logged and the checks. Its `key` is the digest of what determines the result: the
questions, the generation settings, the signals' data, the judge, and for a saved step the checkpoint's weight
files (their content). `sft-eval sweep` reads a checkpoint's record instead of evaluating it when the key it
computes for that checkpoint is the record's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sft_eval import validate
from sft_eval.cache import FixtureCache, source_digest, write_atomic
from sft_eval.errors import SftEvalError
from sft_eval.generation import GenerationSettings
from sft_eval.inputs import Inputs
from sft_eval.recipe import Recipe
from sft_eval.records import Answer
from sft_eval.sanity import Evaluation, evaluate_models
from sft_eval.scoring import Signals
from sft_eval.signals import SignalMemo, TeacherForced
from sft_eval.sweep import CheckpointResult, checkpoint_result

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LIVE_DIR = "sft-eval-live"
LIVE_FORMAT = "sft-eval-live/1"
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "adapter_model.bin")
# The trainer keys that decide how a held-out row is tokenized and masked: the trainer's own values are used.
DATA_KEYS = ("max_length", "assistant_only_loss", "completion_only_loss", "dataset_text_field", "truncation_mode")


@dataclasses.dataclass(frozen=True)
class Budget:
    """What one evaluation may cost: questions asked, new tokens per answer, seconds (None: no limit). The seconds
    are checked between generation batches and between stages; what is left when they run out is skipped, said."""

    questions: int | None = 32
    new_tokens: int | None = 64
    seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("questions", "new_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise SftEvalError(f"SftEvalCallback: max_{name} must be a whole number of at least 1, not {value!r}")
        if self.seconds is not None and not (isinstance(self.seconds, int | float) and self.seconds > 0):
            raise SftEvalError(f"SftEvalCallback: max_seconds must be above 0, not {self.seconds!r}")


class _InMemory:
    """The models teacher forcing scores (`signals.Models`): the trainer's, as they are in memory."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, models: dict[str, PreTrainedModel]):
        self.tokenizer, self.models = tokenizer, models

    def model(self, which: str) -> PreTrainedModel:
        return self.models[which]

    def in_process(self, which: str) -> bool:
        return True


def parameters_digest(model: PreTrainedModel) -> str:
    """The content of a model's parameters and buffers (names, dtypes, shapes, bytes) as a digest."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        data = tensor.detach().contiguous().cpu()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def budgeted(recipe: Recipe, budget: Budget) -> Recipe:
    """The recipe as the budget lets it ask: `eval.max_new_tokens` at most the budget's."""
    tokens = recipe.eval.max_new_tokens
    if budget.new_tokens is not None:
        tokens = min(tokens, budget.new_tokens)
    return dataclasses.replace(recipe, eval=dataclasses.replace(recipe.eval, max_new_tokens=tokens))


def weights_digest(folder: Path) -> str | None:
    """The content digest of a checkpoint's weight files (safetensors, or a PyTorch .bin of a full model or an
    adapter); None when it holds none."""
    files = sorted({p for pattern in WEIGHT_FILES for p in folder.glob(pattern) if p.is_file()})
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def held_out_settings(recipe: Recipe) -> dict[str, Any]:
    """The trainer settings that decide which tokens of a held-out row are scored (`DATA_KEYS`), as the recipe's
    trainer resolves them; empty without held-out rows."""
    from sft_eval.trainer_config import sft_config

    if not (recipe.data.eval or recipe.data.eval_fraction):
        return {}
    config, _ = sft_config(recipe, "sft-eval-unused", on_cpu=True)
    return {k: getattr(config, k, None) for k in DATA_KEYS}


def evaluation_key(
    recipe: Recipe, questions: list[str], settings: GenerationSettings, weights: str | None, held_out: dict[str, Any]
) -> str:
    """What decides an evaluation's result, as a digest: the questions asked, how (batching included: it decides
    the answers to the token), the held-out rows and which of their tokens are scored (`held_out_settings`), the
    general text, the judge and the weights (not the thresholds: the result does not depend on them)."""
    data = recipe.data
    payload = {
        "held_out_settings": held_out,
        "questions": questions,
        "settings": dataclasses.asdict(settings),
        "held_out": source_digest(recipe.resolve(data.eval)) if data.eval else None,
        "eval_fraction": data.eval_fraction,
        "general_text": source_digest(recipe.resolve(recipe.eval.general_text)) if recipe.eval.general_text else None,
        "judge": dataclasses.asdict(recipe.judge),
        "weights": weights,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


class LiveEvaluation:
    """One run's evaluations of its model in memory (see the module's docstring)."""

    def __init__(
        self,
        recipe: Recipe,
        tokenizer: PreTrainedTokenizerBase,
        *,
        budget: Budget,
        trainer_keys: dict[str, Any],
        device: str,
        cache: FixtureCache | None = None,
    ):
        self.budget = budget
        keys = {k: v for k, v in trainer_keys.items() if k in DATA_KEYS and v is not None}
        self.recipe = budgeted(recipe.with_sft(**keys, packing=False, gradient_checkpointing=False), budget)
        self.tokenizer, self.device = tokenizer, device
        self.cache = cache or FixtureCache()
        self.inputs = Inputs(self.recipe, self.cache.root / "datasets")
        questions = self.inputs.questions
        self.questions = questions[: budget.questions] if budget.questions else questions
        self.skipped_questions = len(questions) - len(self.questions)
        self.settings = GenerationSettings.from_eval(self.recipe.eval)
        self.memo = SignalMemo()
        self.base_answers: list[Answer] | None = None
        self._judge: Any = None
        # which held-out tokens are scored, as the trainer has them (no SFTConfig is made while it trains: making
        # one resets accelerate's shared state under the running trainer)
        wanted = self.recipe.data.eval or self.recipe.data.eval_fraction
        self._held_out = {k: trainer_keys.get(k) for k in DATA_KEYS} if wanted else {}

    @property
    def teacher_forced_wanted(self) -> bool:
        return self.inputs.held_out_rows is not None or bool(self.recipe.eval.general_text)

    def prepare(self, model: PreTrainedModel) -> None:
        """The teacher-forced sequences, built once by the recipe's trainer (on every process of a distributed run:
        the dataset preparation waits for the main process)."""
        if self.teacher_forced_wanted:
            self._forced({"base": model}).sequences(model)

    def _forced(self, models: dict[str, PreTrainedModel]) -> TeacherForced:
        return TeacherForced(self.recipe, self.inputs, _InMemory(self.tokenizer, models), self.memo)

    def key(self, weights: str | None) -> str:
        return evaluation_key(self.recipe, [q.question for q in self.questions], self.settings, weights, self._held_out)

    def answers(self, model: PreTrainedModel, deadline: float | None) -> list[Answer]:
        """Greedy answers through `generation.local.generate`, the function the sweep's backend calls, with the same
        settings (so the same batches, and a checkpoint's answers are the sweep's token for token), stopping between
        batches once `deadline` has passed: the questions answered, in the recipe's order."""
        from sft_eval.generation.local import generate

        settings = self.settings
        return generate(
            model,
            self.tokenizer,
            [q.question for q in self.questions],
            system_message=settings.system_message,
            max_new_tokens=settings.max_new_tokens,
            enable_thinking=settings.enable_thinking,
            batch_size=settings.batch_size,
            deadline=deadline,
        )

    def begin(self, model: PreTrainedModel) -> None:
        """The base: the trainer's model before its first step, its answers and teacher-forced scores kept, and
        cached under its parameters' content with the questions, settings and signals' data (a run started again
        from the same base, another learning rate say, reads them instead of evaluating the base again)."""
        from sft_eval.cache import cache_key

        key = cache_key("live-base", {"parameters": parameters_digest(model), "evaluation": self.key(None)})
        stored = self.cache.answers.get(key)
        if stored is not None and self._restore(stored):
            return
        self.base_answers = self.answers(model, None)
        if self.teacher_forced_wanted:
            self._forced({"base": model}).scored("base")
        scores = self.memo.scores.get("base", {})
        self.cache.answers.put(key, {"answers": [a.to_dict() for a in self.base_answers], "scores": scores})

    def _restore(self, stored: dict[str, Any]) -> bool:
        """The base's answers and scores from the cache; False (evaluated again) for an entry that is not whole."""
        from sft_eval.records import cached_answer

        questions = [q.question for q in self.questions]
        answers = [cached_answer(a, q) for a, q in zip(stored.get("answers") or [], questions, strict=False)]
        scores = stored.get("scores")
        if len(answers) != len(questions) or None in answers or not isinstance(scores, dict):
            return False
        if self.teacher_forced_wanted and set(scores) != set(self.memo.sequences or {}):
            return False
        self.base_answers = answers  # type: ignore[assignment]  # none is None
        if self.teacher_forced_wanted:
            self.memo.scores["base"] = scores
        return True

    def evaluate(self, model: PreTrainedModel, step: int, checkpoint: str | None, weights: str | None) -> dict:
        """One evaluation of `model` at `step` (a record: see `write_record`), within the budget."""
        assert self.base_answers is not None, "begin() evaluates the base first"
        started = time.perf_counter()
        deadline = None if self.budget.seconds is None else started + self.budget.seconds
        skipped: list[str] = []
        if self.skipped_questions:
            skipped.append(f"{self.skipped_questions} questions beyond the budget's {self.budget.questions}")
        answers = self.answers(model, deadline)
        asked = self.questions
        cut = len(answers) < len(asked)  # anything the seconds cut short: the record is then never a sweep's
        if cut:
            skipped.append(f"{len(asked) - len(answers)} of {len(asked)} questions (the budget's seconds ran out)")
        by_question = {a.question: a for a in answers}
        answered = [q for q in asked if q.question in by_question]
        base = {a.question: a for a in self.base_answers}
        evaluation = evaluate_models(
            answered,
            {"base": [base[q.question] for q in answered], "tuned": [by_question[q.question] for q in answered]},
            specials=[t for t in self.tokenizer.all_special_tokens if t],
            enable_thinking=self.recipe.eval.enable_thinking,
        )
        signals = Signals([], [], [])
        if self.teacher_forced_wanted:
            if deadline is not None and time.perf_counter() > deadline:
                skipped.append("the teacher-forced signals (held-out loss, forgetting, expected answers)")
                cut = True
            else:
                self.memo = self.memo.for_checkpoint()  # the base's scores kept, the last step's dropped
                signals = self._forced({"tuned": model}).signals(evaluation)
        judged = None
        if self.recipe.judge.kind:
            if deadline is not None and time.perf_counter() > deadline:
                skipped.append("the judge")
                cut = True
            else:
                judged = self._judged(evaluation)
        result = checkpoint_result(
            checkpoint or f"step-{step}",
            "",
            step,
            evaluation,
            signals,
            judged["win_rate"] if judged else None,
            generated=len(answers),
        )
        checks = self._checks(evaluation, signals, judged)
        return {
            "format": LIVE_FORMAT,
            "step": step,
            "checkpoint": checkpoint,
            "key": self.key(weights) if weights and not cut else None,
            "device": self.device,
            "seconds": time.perf_counter() - started,
            "skipped": skipped,
            "result": result_to_dict(result),
            "answers": [a.to_dict() for a in answers],
            "checks": checks,
            "metrics": metrics(result, signals, checks, len(answers)),
        }

    def _judged(self, evaluation: Evaluation) -> Any:
        from sft_eval.judgement import judge_run, make_judge

        if self._judge is None:
            self._judge = make_judge(self.recipe.judge, self.recipe, self.device, self.cache)
        return judge_run(self.recipe, evaluation, self.cache.answers, self._judge)

    def _checks(self, evaluation: Evaluation, signals: Signals, judged: Any) -> list[dict[str, Any]]:
        """The answer checks, the signal checks where signals were scored, the judge's where it judged: what an
        evaluation mid-run can hold to the recipe's thresholds (the training checks wait for the run's end)."""
        from sft_eval.verdict import judge_checks, response_checks, signal_checks

        thresholds = self.recipe.thresholds
        checks = [*response_checks(thresholds, evaluation, self.tokenizer.eos_token or "").values()]
        if signals.held_out or signals.general or signals.expected:
            checks += signal_checks(thresholds, signals).values()
        if judged is not None:
            checks += judge_checks(thresholds, judged).values()
        return [dict(c.to_dict()) for c in checks]


def metrics(result: CheckpointResult, signals: Signals, checks: list[dict[str, Any]], asked: int) -> dict[str, float]:
    """The scalars a tracker plots, each `sft_eval/<metric>` when logged: what was measured, nothing invented."""
    summary = result.summary
    found: dict[str, float | None] = {
        "match_rate": summary["match_rate"],
        "eos_stop_rate": summary["eos_stop_rate"],
        "mean_chrf": summary["mean_chrf"],
        "mean_repetition": summary["mean_repetition"],
        "leak_rate": summary["leak_rate"],
        "mean_new_tokens": summary["mean_new_tokens"],
        "held_out_loss": result.held_out_loss,
        "forgetting": result.forgetting,
        "judge_win_rate": result.judge_win_rate,
        "questions": float(asked),
        "checks_failed": float(sum(c["passed"] is False for c in checks)),
    }
    expected = [r.tuned for r in signals.expected]
    if expected:
        found["expected_nll"] = sum(expected) / len(expected)
    return {k: float(v) for k, v in found.items() if v is not None}


def result_to_dict(result: CheckpointResult) -> dict[str, Any]:
    return {**dataclasses.asdict(result), "outcomes": [dataclasses.asdict(o) for o in result.outcomes]}


def result_from_dict(data: dict[str, Any], where: str) -> CheckpointResult:
    """A record's result, its fields checked (one `SftEvalError` naming `where` otherwise)."""
    from sft_eval.compare import Outcome

    try:
        outcomes = [Outcome(**o) for o in validate.a_list(data["outcomes"], f"{where}.outcomes")]
        fields = {f.name for f in dataclasses.fields(CheckpointResult)}
        return CheckpointResult(**{**{k: v for k, v in data.items() if k in fields}, "outcomes": outcomes})
    except (KeyError, TypeError) as exc:
        raise SftEvalError(f"{where}: not an sft-eval live record ({exc})") from None


def record_path(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / LIVE_DIR / f"step-{step}.json"


def write_live(output_dir: str | Path, name: str, data: dict[str, Any]) -> Path:
    """`<output_dir>/sft-eval-live/NAME` as JSON, written whole (`write_atomic`)."""
    path = Path(output_dir) / LIVE_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, json.dumps(data, indent=1))


def write_record(output_dir: str | Path, record: dict[str, Any]) -> Path:
    return write_live(output_dir, record_path(output_dir, record["step"]).name, record)


def read_records(run: Path) -> list[dict[str, Any]]:
    """The run folder's live records, by step; a file that is not one is one `SftEvalError` naming it."""
    records = []
    for path in sorted((run / LIVE_DIR).glob("step-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SftEvalError(f"{path}: not an sft-eval live record ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != LIVE_FORMAT:
            raise SftEvalError(f"{path}: not an sft-eval live record (format is not {LIVE_FORMAT!r})")
        validate.integer(data.get("step"), f"{path}: step", minimum=0)
        if not isinstance(data.get("metrics"), dict) or not isinstance(data.get("result"), dict):
            raise SftEvalError(f"{path}: not an sft-eval live record (no metrics or result)")
        data["path"] = str(path)
        records.append(data)
    return sorted(records, key=lambda r: r["step"])
