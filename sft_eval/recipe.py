"""The recipe: one TOML file that says what to build, how to train it and what to check.

Loaded and validated once into a frozen `Recipe`; every later stage trusts it. Relative paths in a recipe
are relative to the recipe file's own folder, so a recipe means the same thing from any working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sft_eval import tables
from sft_eval.backends import check_backend
from sft_eval.errors import SftEvalError
from sft_eval.section_checks import check_bench, check_judge
from sft_eval.tables import check_types, read_table, reject_unknown
from sft_eval.trainer_keys import check_peft, check_sft_names, check_sft_values
from sft_eval.trainer_keys import lora_config_class as lora_config_class

# fixtures/ of the checkout, or sft_eval/fixtures inside an installed wheel (pyproject maps one to the other).
_PACKAGED_FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURES_DIR = _PACKAGED_FIXTURES if _PACKAGED_FIXTURES.is_dir() else _PACKAGED_FIXTURES.parent.parent / "fixtures"
DEFAULT_RECIPE = FIXTURES_DIR / "recipes" / "tiny.toml"


TINY = "tiny"  # model.base / model.tokenizer: the tiny model, built and pretrained here (nothing to find on disk)


def key(default: Any = dataclasses.MISSING, help: str = "") -> Any:  # noqa: A002 - argparse's word for it
    """A recipe key: its default and its one-line help, which docs/recipes.md's key table is generated from
    (`key_table`); a key without help fails a test."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ModelSection:
    base: str = key("tiny", '"tiny" (built here), a local checkpoint folder, or a hub id')
    tokenizer: str | None = key(None, "a tokenizer folder when the checkpoint has none; default: the checkpoint's own")
    chat_template: str | None = key(
        None,
        'a shipped template name ("chatml"), a .jinja file, or "tokenizer" (its own); default: "chatml" for the tiny '
        'model, "tokenizer" for any other',
    )
    tuned: str | None = key(
        None,
        "a run trained elsewhere: a Trainer/SFTTrainer output folder or one of its checkpoint-N folders, or a LoRA "
        "adapter; nothing trains, and its trainer_state.json is the training record",
    )
    merged: str | None = key(
        None,
        "a LoRA run's merged checkpoint, as served (merge_and_unload + save_pretrained), held against the adapter; "
        "default: the adapter is merged here",
    )
    baseline: str | None = key(
        None,
        "the last accepted model (a checkpoint, a run's output folder, or a LoRA adapter on model.base): its answers "
        "are generated here and the tuned model is held to them, question by question (as `sft-eval compare` does)",
    )

    @property
    def template(self) -> str:
        """`chat_template` with its default filled in."""
        if self.chat_template is not None:
            return self.chat_template
        return "chatml" if (self.tokenizer or self.base) == "tiny" else "tokenizer"


@dataclass(frozen=True)
class DataSection:
    train: str = key(
        help='JSONL of {"messages": [...]} or {"prompt", "completion"} rows, a save_to_disk folder, or a hub id'
    )
    limit: int | None = key(None, "train on the first N rows")
    eval: str | None = key(None, "held-out rows (a file or dataset in the training formats) for the held-out loss")
    eval_fraction: float | None = key(
        None, "or a seeded share of `train` (of its first `limit` rows), held out of training, for the held-out loss"
    )


# Bounds of a served run: a server that never replies is given up after at most
# request_timeout x (1 + max_retries) plus the client's backoff (under 8 s a retry), and no new question is sent.
GOLDEN_MODES = ("tolerance", "exact")  # sft_eval.golden.MODES: how a run is held to its golden outputs
MAX_RETRIES = 10
MAX_REQUEST_TIMEOUT_S = 3600.0


# What `sft-eval sweep` may rank checkpoints by (`eval.best_by`), and which way is better: the answers' summary
# metrics, the trainer's own eval_loss at the checkpoint's step, and the loss on the recipe's held-out rows.
BEST_BY_METRICS = {
    "match_rate": "higher",
    "eos_stop_rate": "higher",
    "leak_rate": "lower",
    "mean_repetition": "lower",
    "mean_chrf": "higher",
    "eval_loss": "lower",
    "held_out_loss": "lower",
    "judge_win_rate": "higher",  # the recipe's [judge]: the checkpoint's answers against the base's
}


@dataclass(frozen=True)
class EvalSection:
    system_message: str = key("", "a system message every question is asked with")
    max_new_tokens: int = key(100, "the most tokens a greedy answer may take")
    enable_thinking: bool = key(False, "passed to the chat template (Qwen3's thinking switch)")
    batch_size: int = key(32, "questions generated together in this process")
    questions: tuple[str, ...] = key((), "questions asked inline")
    questions_file: str | None = key(
        None, 'a JSONL file of {"question", "expected", "id", "category"} lines (all but question optional)'
    )
    limit: int | None = key(None, "ask the first N questions (inline ones first)")
    tool_items: str | None = key(
        None,
        "tool-calling items (.jsonl: `messages`, `tools`, and `expected_call` {name, arguments} or `expected` text): "
        "each asked as its conversation, the answer's call parsed with the template's response parser and scored",
    )
    backend: str = key(
        "transformers",
        '"transformers": generate in this process; "openai": an OpenAI-compatible server (vLLM, SGLang, TGI, '
        "`transformers serve`) at base_url answers for the tuned model (and the base, when base_model names it); "
        "any other: a backend registered with sft_eval.generation.register_backend or the sft_eval.backends entry "
        "points",
    )
    base_url: str | None = key(None, "the server's http(s) URL (openai backend)")
    model: str | None = key(None, "the tuned model's name on the server; default: the server's only model")
    base_model: str | None = key(None, "the base model's name on the server; default: base answers in this process")
    max_retries: int = key(4, "a served request's retries after a transient failure (reset, 429, 5xx), 0 to 10")
    request_timeout: float = key(60.0, "seconds a served request may take before it counts as failed, at most 3600")
    golden: str | None = key(None, "the golden outputs file, inside the recipe's folder; default: golden/<name>.json")
    golden_mode: str = key(
        "tolerance",
        '"tolerance": held to the golden reference within golden_tolerance, on any machine; "exact": bit for bit, '
        "against this environment's entry",
    )
    golden_tolerance: float | None = key(
        None, "nats per token the golden comparison allows; default: by the model's dtype (1e-3 float32, 0.1 bf16)"
    )
    best_by: tuple[str, ...] = key(
        ("match_rate", "eos_stop_rate", "eval_loss"),
        "a sweep's best checkpoint: the first metric decides, the next ones break ties, then the earlier step",
    )
    general_text: str | None = key(
        None, 'general text (.txt, a document per non-blank line, or .jsonl "text"): the forgetting ratio\'s rows'
    )


JUDGE_KINDS = ("", "chat", "reward")


@dataclass(frozen=True)
class JudgeSection:
    kind: str = key(
        "",
        "\"chat\": a chat model judges each tuned answer against the base's, asked in both orders with MT-Bench's "
        'pairwise prompt; "reward": a reward model scores each answer, the higher wins (docs/judge.md); "": no judge',
    )
    backend: str = key("openai", '"openai": the judge served at base_url; "transformers": the folder `model`, here')
    base_url: str | None = key(None, "the judge server's http(s) URL (openai backend)")
    model: str | None = key(
        None,
        "the chat judge's name on the server (default: its only model) or its folder; the reward judge's folder "
        "(a one-label sequence classifier; default: the tiny reward model trained here)",
    )
    prompt: str | None = key(
        None,
        "a .txt file replacing MT-Bench's prompt: the system message, a line `---`, then the user message with "
        "{question}, {answer_a} and {answer_b}",
    )
    calibration: str | None = key(
        None,
        'pairs with a known verdict (.jsonl: "question", "a", "b", "expected": "a", "b" or "tie"); default: the '
        "shipped calibration set",
    )
    max_new_tokens: int = key(512, "tokens the judge may write: a short explanation, then its verdict")
    max_retries: int = key(4, "a judge request's retries after a transient failure, 0 to 10")
    request_timeout: float = key(120.0, "seconds a judge request may take, at most 3600")
    tie_margin: float = key(
        0.5,
        "reward judge: a reward difference within it is a tie (rewards are log-odds: 0.5 is a 62% preference)",
    )


@dataclass(frozen=True)
class BenchSection:
    served: str | None = key(None, "`sft-eval bench`: time this OpenAI-compatible server (http(s) URL) instead")
    model: str | None = key(None, "the model's name on that server; default: its only model")
    concurrency: tuple[int, ...] = key((1, 4, 16, 64), "requests in flight, one level each")
    rate: tuple[float, ...] = key(
        (), "sweep Poisson request rates (requests/s, one level each) instead of concurrency; empty: concurrency"
    )
    max_in_flight: int = key(64, "a rate sweep's cap on requests in flight")
    seed: int = key(0, "seeds the Poisson arrival times and the synthetic prompt lengths")
    prompt_tokens: int = key(0, "synthetic prompts of this mean length in tokens, not the questions (0: the questions)")
    prompt_tokens_stdev: float = key(0.0, "the synthetic prompt lengths' standard deviation in tokens (normal)")
    requests: int = key(64, "requests per concurrency level")
    max_tokens: int = key(64, "output tokens per request")
    duration: float = key(120.0, "seconds per concurrency level at most")
    targets: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "help": "goodput's per-request latency targets in ms, as a table (`ttft = 500`, `tpot = 40`; also `itl`, "
            "`e2el`)"
        },
    )


@dataclass(frozen=True)
class Thresholds:
    min_loss_drop: float = key(0.5, "the loss drop, first to last logging window, as a fraction of the first")
    min_eos_stop_rate: float = key(0.95, "share of tuned answers that end at the end-of-turn token")
    min_match_rate: float = key(0.8, "share of tuned answers equal to their `expected` answer")
    max_repetition: float = key(0.3, "the worst tuned answer's repetition")
    max_base_eos_stop_rate: float = key(0.2, "share of base answers that end at the end-of-turn token")
    min_chrf: float = key(50.0, "mean chrF (0-100) of the tuned answers against their expected answers")
    min_tool_call_rate: float = key(
        0.8,
        "share of `eval.tool_items` expecting a call answered with a call a caller can execute: the expected tool, "
        "with arguments its parameters schema accepts",
    )
    min_tool_call_exact: float = key(
        0.8, "share of `eval.tool_items` expecting a call answered with exactly that call (0: not judged)"
    )
    min_eval_loss_drop: float = key(0.1, "the tuned model's held-out loss at least this fraction below the base's")
    max_forgetting: float = key(1.15, "general-text loss, tuned over base")
    max_expected_nll_rise: float = key(0.5, "nats/token an expected answer (and end of turn) may become less likely")
    max_length_ratio: float = key(3.0, "tuned answers' median length within this factor (either way) of training's")
    min_judge_win_rate: float = key(0.5, "the judge's win rate of the tuned answers over the base's (ties half)")
    max_judge_flip_rate: float = key(0.3, "share of pairs whose verdict changes when the answers swap places")
    min_judge_calibration: float = key(
        0.8, "the judge's accuracy on the calibration pairs: below it the judge is not trusted (its win rate unjudged)"
    )
    max_ttft_p99_ms: float = key(
        0.0, "`bench --served`: the 99th percentile time to first token at every level (0: not judged)"
    )
    max_tpot_p50_ms: float = key(
        0.0, "`bench --served`: the median time per output token at every level (0: not judged)"
    )
    min_goodput: float = key(
        0.0, "`bench --served`: requests/s meeting every `[bench] targets` at every level (0: not judged)"
    )
    gate: str = key(
        "difference",
        'run against run: "difference" (fail on a metric worse beyond noise) or "non-inferiority" (each metric in '
        "`max_regression` passes only when its drop is shown within the margin)",
    )
    max_regression: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "help": "the largest drop accepted per compared metric, in its units, as a table (`exact_match = 0.02`, "
            "`chrf = 2.0`): the non-inferiority gate's margins, and what the detectable effect is held to"
        },
    )


GATES = ("difference", "non-inferiority")
# The metrics `compare` tests, as `[thresholds.max_regression]` names them (`compare.metric_key`; a test holds the
# two lists equal).
COMPARED_METRICS = (
    "exact_match",
    "ends_at_end_of_turn",
    "no_leaked_tokens",
    "not_empty",
    "repetition",
    "chrf",
    "expected_answer_nll",
    "judge_win_rate",
)
FRACTION_THRESHOLDS = (
    "min_judge_win_rate",
    "max_judge_flip_rate",
    "min_judge_calibration",
    "min_loss_drop",
    "min_eos_stop_rate",
    "min_match_rate",
    "max_repetition",
    "max_base_eos_stop_rate",
    "min_eval_loss_drop",
)


@dataclass(frozen=True)
class Recipe:
    name: str = key(help="a plain name (no /): it names the golden file and the report")
    data: DataSection  # type: ignore[misc]  # `name` is required too: `key()` without a default is no default
    seed: int = key(0, "the seed of the tiny model, the tokenizer, training and the held-out split")
    model: ModelSection = field(default_factory=ModelSection)
    sft: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}),
        metadata={"help": "trl.SFTConfig's fields by name (checked against its fields)"},
    )
    peft: Mapping[str, Any] | None = key(
        None,
        "LoRA through PEFT: peft.LoraConfig's fields by name, given to SFTTrainer(peft_config=...); none: full "
        "fine-tuning",
    )
    eval: EvalSection = field(default_factory=EvalSection)
    thresholds: Thresholds = field(default_factory=Thresholds)
    judge: JudgeSection = field(default_factory=JudgeSection)
    bench: BenchSection = field(default_factory=BenchSection)
    path: Path | None = None  # the file it was loaded from; relative paths resolve against its folder

    def resolve(self, value: str) -> str:
        """A recipe path made absolute against the recipe's folder; non-paths (hub ids, names) unchanged."""
        if self.path is None or Path(value).is_absolute():
            return value
        candidate = (self.path.parent / value).resolve()
        return str(candidate) if candidate.exists() or _looks_like_path(value) else value

    def with_sft(self, **overrides: Any) -> Recipe:
        """The same recipe with these `[sft]` keys overridden (a variant run: other batch settings, a short run)."""
        return dataclasses.replace(self, sft=MappingProxyType({**self.sft, **overrides}))

    def fingerprint(self) -> dict[str, Any]:
        """The whole recipe as plain JSON data (the report shows it, and reads it back from its JSON unchanged)."""
        return json.loads(json.dumps(self._as_dict()))

    def _as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "model": dataclasses.asdict(self.model),
            "data": dataclasses.asdict(self.data),
            "sft": dict(self.sft),
            "peft": None if self.peft is None else dict(self.peft),
            "eval": dataclasses.asdict(self.eval),
            "thresholds": dataclasses.asdict(self.thresholds),
            "judge": dataclasses.asdict(self.judge),
            "bench": dataclasses.asdict(self.bench),
        }


def with_limits(recipe: Recipe, *, max_train_rows: int | None = None, max_eval_questions: int | None = None) -> Recipe:
    """The recipe cut down for a quick smoke run (`--max-train-rows`, `--max-eval-questions`): at most that many
    training rows and questions, whatever `data.limit` and `eval.limit` say; None leaves a limit as it is. A recipe
    judging a run trained elsewhere (`model.tuned`) keeps its rows: nothing trains, and its plan is held against
    the whole run's record."""
    if recipe.model.tuned is not None:
        max_train_rows = None

    def lower(limit: int | None, cap: int | None) -> int | None:
        return limit if cap is None else cap if limit is None else min(limit, cap)

    return dataclasses.replace(
        recipe,
        data=dataclasses.replace(recipe.data, limit=lower(recipe.data.limit, max_train_rows)),
        eval=dataclasses.replace(recipe.eval, limit=lower(recipe.eval.limit, max_eval_questions)),
    )


def _looks_like_path(value: str) -> bool:
    return value.startswith((".", "/", "~")) or value.endswith((".jsonl", ".json", ".jinja", ".toml"))


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file; any problem is one `SftEvalError` naming the file and key."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SftEvalError(f"{path}: recipe file not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        raw = tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise SftEvalError(f"{path}: not valid TOML: {exc}") from None
    return recipe_from_dict(raw, path.resolve())


def read_text(path: Path) -> str:
    """A user's text file as UTF-8; anything else is one `SftEvalError` naming the file and the byte's line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SftEvalError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x})") from None


def recipe_from_dict(raw: Mapping[str, Any], path: Path | None = None) -> Recipe:
    where = str(path) if path else "recipe"
    reject_unknown(raw, {"name", "seed", "sft", "peft", *SECTIONS}, where, "")
    if "data" not in raw:
        raise SftEvalError(f'{where}: missing section [data] (at least `train = "..."`)')
    sections = {name: read_table(cls, raw.get(name, {}), where, name) for name, cls in SECTIONS.items()}
    sft = raw.get("sft", {})
    if not isinstance(sft, dict):
        raise SftEvalError(f"{where}: [sft] must be a table of trl.SFTConfig fields")
    check_sft_names(sft, where)
    peft = raw.get("peft")
    if peft is not None:
        check_peft(peft, where)
    top = {k: raw[k] for k in ("name", "seed") if k in raw}
    check_types(Recipe, top, where, "")
    recipe = Recipe(
        name=top.get("name", path.stem if path else "recipe"),
        seed=top.get("seed", 0),
        sft=MappingProxyType(dict(sft)),
        peft=None if peft is None else MappingProxyType(dict(peft)),
        path=path,
        **sections,
    )
    _check_values(recipe, where)
    return recipe


def _check_values(recipe: Recipe, where: str) -> None:
    if not recipe.name or recipe.name in (".", "..") or any(c in recipe.name for c in "/\\\0"):
        raise SftEvalError(f"{where}: `name` must be a plain name (it names the golden file), not {recipe.name!r}")
    if recipe.eval.golden is not None and recipe.path is not None:
        folder = recipe.path.parent.resolve()
        golden = (folder / recipe.eval.golden).resolve()
        if golden.suffix != ".json" or not golden.is_relative_to(folder):
            raise SftEvalError(
                f"{where}: `eval.golden` must be a .json file inside the recipe's folder {folder}, "
                f"not {recipe.eval.golden!r}"
            )
    if recipe.eval.golden_mode not in GOLDEN_MODES:
        raise SftEvalError(
            f"{where}: `eval.golden_mode` must be one of {', '.join(map(repr, GOLDEN_MODES))}, not "
            f"{recipe.eval.golden_mode!r}"
        )
    tolerance = recipe.eval.golden_tolerance
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance > 0):
        raise SftEvalError(f"{where}: `eval.golden_tolerance` must be a number above 0 (nats), not {tolerance}")
    if recipe.model.tuned is not None and not Path(recipe.resolve(recipe.model.tuned)).expanduser().is_dir():
        raise SftEvalError(
            f"{where}: `model.tuned` must be a folder a trainer wrote (an output folder or checkpoint-N), and "
            f"{recipe.resolve(recipe.model.tuned)} is not one"
        )
    baseline = recipe.model.baseline
    if baseline is not None and not Path(recipe.resolve(baseline)).expanduser().is_dir():
        raise SftEvalError(
            f"{where}: `model.baseline` must be a checkpoint or run folder, and {recipe.resolve(baseline)} is not one"
        )
    if recipe.model.merged is not None:
        if recipe.peft is None and recipe.model.tuned is None:
            raise SftEvalError(
                f"{where}: `model.merged` is the merged checkpoint of a LoRA run: set [peft] (trained here) or "
                "`model.tuned` (an adapter trained elsewhere) too"
            )
        if not Path(recipe.resolve(recipe.model.merged)).expanduser().is_dir():
            raise SftEvalError(
                f"{where}: `model.merged` must be a checkpoint folder, and {recipe.resolve(recipe.model.merged)} is "
                "not one"
            )
    if recipe.data.eval_fraction is not None and not 0 < recipe.data.eval_fraction < 1:
        raise SftEvalError(
            f"{where}: `data.eval_fraction` must be above 0 and below 1 (the share of rows held out), not "
            f"{recipe.data.eval_fraction}"
        )
    if recipe.data.limit is not None and recipe.data.limit < 1:
        raise SftEvalError(f"{where}: `data.limit` must be at least 1, not {recipe.data.limit}")
    unknown = [m for m in recipe.eval.best_by if m not in BEST_BY_METRICS]
    if unknown or not recipe.eval.best_by or len(set(recipe.eval.best_by)) != len(recipe.eval.best_by):
        said = f"not {unknown[0]!r}" if unknown else f"not {list(recipe.eval.best_by)!r}"
        raise SftEvalError(
            f"{where}: `eval.best_by` must list distinct metrics of {', '.join(BEST_BY_METRICS)} (at least one), {said}"
        )
    if recipe.eval.limit is not None and recipe.eval.limit < 1:
        raise SftEvalError(f"{where}: `eval.limit` must be at least 1, not {recipe.eval.limit}")
    if recipe.eval.max_new_tokens < 1:
        raise SftEvalError(f"{where}: `eval.max_new_tokens` must be at least 1")
    if recipe.eval.batch_size < 1:
        raise SftEvalError(f"{where}: `eval.batch_size` must be at least 1")
    if not 0 <= recipe.eval.max_retries <= MAX_RETRIES:
        raise SftEvalError(
            f"{where}: `eval.max_retries` must be 0 to {MAX_RETRIES}, not {recipe.eval.max_retries} (each retry can "
            "wait eval.request_timeout)"
        )
    if not 0 < recipe.eval.request_timeout <= MAX_REQUEST_TIMEOUT_S:
        raise SftEvalError(
            f"{where}: `eval.request_timeout` must be above 0 and at most {MAX_REQUEST_TIMEOUT_S:.0f} seconds, not "
            f"{recipe.eval.request_timeout}"
        )
    check_backend(recipe.eval.backend, where)
    if recipe.eval.backend == "openai" and not (recipe.eval.base_url or "").startswith(("http://", "https://")):
        raise SftEvalError(
            f'{where}: `eval.backend = "openai"` needs `eval.base_url`, the server\'s http(s) URL '
            '(for example "http://127.0.0.1:8000/v1")'
        )
    for key in ("base_url", "model", "base_model"):
        if recipe.eval.backend == "transformers" and getattr(recipe.eval, key) is not None:
            raise SftEvalError(f'{where}: `eval.{key}` is for a served model; set `eval.backend = "openai"` too')
    if not recipe.eval.questions and not recipe.eval.questions_file:
        raise SftEvalError(f"{where}: [eval] needs `questions` or `questions_file`")
    if not 0 <= recipe.seed < 2**32:
        raise SftEvalError(f"{where}: `seed` must be between 0 and 2**32 - 1, not {recipe.seed}")
    if any(not q.strip() for q in recipe.eval.questions):
        raise SftEvalError(f"{where}: `eval.questions` has a blank question")
    check_sft_values(recipe.sft, where)
    for name in FRACTION_THRESHOLDS:
        value = getattr(recipe.thresholds, name)
        if not 0.0 <= value <= 1.0:
            raise SftEvalError(f"{where}: `thresholds.{name}` must be between 0 and 1, not {value}")
    for name, low in (("max_forgetting", 1.0), ("max_expected_nll_rise", 0.0), ("max_length_ratio", 1.0)):
        value = getattr(recipe.thresholds, name)
        if not low <= value < math.inf:
            raise SftEvalError(f"{where}: `thresholds.{name}` must be a finite number of at least {low:g}, not {value}")
    if recipe.thresholds.gate not in GATES:
        raise SftEvalError(
            f"{where}: `thresholds.gate` must be {' or '.join(map(repr, GATES))}, not {recipe.thresholds.gate!r}"
        )
    for metric, margin in recipe.thresholds.max_regression.items():
        if metric not in COMPARED_METRICS:
            close = difflib.get_close_matches(metric, COMPARED_METRICS, n=1)
            hint = (
                f"; did you mean {close[0]}?" if close else f"; the compared metrics are {', '.join(COMPARED_METRICS)}"
            )
            raise SftEvalError(f"{where}: unknown key `thresholds.max_regression.{metric}`{hint}")
        if not 0 <= margin < math.inf:
            raise SftEvalError(
                f"{where}: `thresholds.max_regression.{metric}` must be a finite number of at least 0, not {margin}"
            )
    if not 0.0 <= recipe.thresholds.min_chrf <= 100.0:
        raise SftEvalError(
            f"{where}: `thresholds.min_chrf` must be between 0 and 100 (chrF), not {recipe.thresholds.min_chrf}"
        )
    _check_eval_sources(recipe, where)
    check_judge(recipe.judge, where, JUDGE_KINDS, MAX_RETRIES, MAX_REQUEST_TIMEOUT_S)
    check_bench(recipe.bench, where)


def _check_eval_sources(recipe: Recipe, where: str) -> None:
    """The held-out rows and the general text: one source of held-out rows, files that exist, and no seeded split
    of a run trained elsewhere (its trainer drew its own)."""
    data = recipe.data
    if data.eval is not None and data.eval_fraction is not None:
        raise SftEvalError(f"{where}: set `data.eval` (a held-out file) or `data.eval_fraction` (a split), not both")
    if data.eval_fraction is not None and recipe.model.tuned is not None:
        raise SftEvalError(
            f"{where}: `data.eval_fraction` holds out rows that training here then does not see, and model.tuned "
            "was trained elsewhere on its own rows; name its held-out rows as `data.eval`"
        )
    for key, value, suffixes in (
        ("data.eval", data.eval, None),
        ("eval.general_text", recipe.eval.general_text, (".txt", ".jsonl")),
    ):
        if value is None:
            continue
        path = Path(recipe.resolve(value)).expanduser()
        if suffixes is not None and path.suffix not in suffixes:
            raise SftEvalError(f"{where}: `{key}` must be a .txt or .jsonl file, not {value!r}")
        if (suffixes is not None or _looks_like_path(value)) and not path.exists():
            raise SftEvalError(f"{where}: `{key}` names {path}, which does not exist")
        if suffixes is not None and not path.is_file():
            raise SftEvalError(f"{where}: `{key}` names {path}, which is a folder, not a .txt or .jsonl file")


SECTIONS = {
    "model": ModelSection,
    "data": DataSection,
    "eval": EvalSection,
    "thresholds": Thresholds,
    "judge": JudgeSection,
    "bench": BenchSection,
}


def key_table() -> str:
    """Every recipe key, its type, default and help, as the Markdown table docs/recipes.md holds (generated from
    the fields' metadata, so the docs cannot drift from the code)."""
    return tables.key_table(Recipe, SECTIONS)
