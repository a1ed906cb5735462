"""Golden outputs: a recipe's tuned greedy answers, stored, so any drift (a changed template, a retrained model,
a library upgrade that changes tokenization or numerics) fails with a readable report of what changed.

A golden file holds two things.

- **A reference**, recorded once: per question, the served prompt's token ids, the greedy answer's token ids, the
  teacher-forced log-probability of each answer token, and the top-k (k = 5) tokens and log-probabilities at each
  answer position. By default a run is compared with it *within a tolerance*, on any machine: the teacher-forced
  log-probabilities of the golden answer under today's model agree within the tolerance, and the greedy answers
  are identical or, at the first position where they part, each side's token is in the other's top-k and the two
  are a near tie (their log-probabilities differ by at most the tolerance). Nothing past the first divergence is
  compared (vLLM's `check_logprobs_close`). The tolerance covers inference drift between machines (the kernel set,
  a GPU): measured, and stated in `TOLERANCE`.
- **Exact entries**, one per environment that recorded them (device, architecture, kernel set, torch and
  transformers versions), like transformers' `Expectations`, for those who want bits (`[eval] golden_mode =
  "exact"` or `--sft-golden exact`): a run is compared exactly with its own environment's entry; in an environment
  with no entry the check says so in one line and keeps a *local baseline* in the fixture cache instead of failing.

A recipe's golden file is `<recipe folder>/golden/<recipe name>.json`, or `[eval] golden` (a path inside the
recipe's folder); `pytest suites/ --sft-update-golden` writes the reference and this environment's exact entry,
keeping other environments' entries.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from sft_eval.cache import cpu_kernels, write_atomic
from sft_eval.errors import SftEvalError
from sft_eval.recipe import DEFAULT_RECIPE, GOLDEN_MODES, Recipe

FORMAT = 3
TOP_K = 5
# The tolerance of the default comparison, in nats per token, by the dtype the model runs in. Measured on the tiny
# model, the same weights under two kernel sets: float32 at most 1.2e-6 apart, bf16 0.022 (and 0.040 from float32);
# a model trained under the other kernel set 4.06 (docs/golden.md).
TOLERANCE = {"float32": 1e-3, "float64": 1e-3, "bfloat16": 0.1, "float16": 0.1}
MODES = GOLDEN_MODES
ENVIRONMENT_KEYS = ("device", "machine", "kernels", "torch", "transformers")
# What makes a model trained here another model: the device and the kernel set it trained under (training amplifies
# any rounding difference between them until the weights are unrelated). Library versions do not: a model trained
# under the same numerics after an upgrade is held to the reference, and an upgrade that changes its answers is
# exactly the drift a regression suite is for.
NUMERICS_KEYS = ("device", "machine", "kernels")


def golden_path(recipe: Recipe) -> Path | None:
    """Where the recipe's golden outputs live: `[eval] golden`, or `<recipe folder>/golden/<name>.json`."""
    if recipe.path is None:
        return None
    if recipe.eval.golden:
        return Path(recipe.resolve(recipe.eval.golden))
    return recipe.path.parent / "golden" / f"{recipe.name}.json"


def environment(device: str = "cpu") -> dict[str, str]:
    """What decides the numerics of a training run and its greedy answers, beyond the recipe: the device type,
    the machine architecture, the kernel set (`torch.backends.cpu.get_cpu_capability()` on a CPU, the GPU's name
    on CUDA) and the torch and transformers versions."""
    import torch

    kind = torch.device(device).type
    cpu = cpu_kernels()
    kernels = torch.cuda.get_device_name(torch.device(device)) if kind == "cuda" else cpu["kernels"]
    return {
        "device": kind,
        "machine": cpu["machine"],
        "kernels": kernels,
        "torch": version("torch"),
        "transformers": version("transformers"),
    }


def describe_environment(env: dict[str, str]) -> str:
    return (
        f"{env['device']}/{env['machine']}/{env['kernels']} (torch {env['torch']}, transformers {env['transformers']})"
    )


def golden_record(answers: list[Any]) -> dict[str, Any]:
    """What is pinned: each answer's question, its greedy text and its token ids."""
    return {"answers": [{"question": a.question, "text": a.text, "token_ids": a.token_ids} for a in answers]}


def _lines(record: dict[str, Any]) -> list[str]:
    return [f"{a['question']!r} -> {a['text']!r} {a['token_ids']}" for a in record["answers"]]


def golden_drift(expected: dict[str, Any], actual: dict[str, Any]) -> str:
    """A unified diff of golden vs current answers (text and token ids); empty when they agree."""
    diff = difflib.unified_diff(_lines(expected), _lines(actual), "golden", "now", lineterm="", n=0)
    return "\n".join(diff)


def changed_answers(expected: dict[str, Any], actual: dict[str, Any]) -> int:
    """How many answers differ (by question, text or token ids), counting missing and extra ones."""
    old, new = _lines(expected), _lines(actual)
    same = sum(a == b for a, b in zip(old, new, strict=False))
    return max(len(old), len(new)) - same


def _read(path: Path) -> dict[str, Any]:
    """A golden file as {"reference": ... or None, "entries": [...]}; a file of the first format (answers only, no
    environment) is one entry whose environment is unknown and matches none; the second format has no reference."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SftEvalError(f"{path}: not a readable golden file: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("entries"), list):
        entries = data["entries"]
    elif isinstance(data, dict) and isinstance(data.get("answers"), list):
        entries = [{"environment": {}, "answers": data["answers"]}]
    else:
        raise SftEvalError(f"{path}: not a golden file (expected an object with `entries`)")
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and isinstance(entry.get("answers"), list)):
            raise SftEvalError(f"{path}: entry {i} has no `answers` list")
        entry.setdefault("environment", {})
    reference = data.get("reference")
    if reference is not None:
        _check_reference(path, reference)
    return {"reference": reference, "entries": entries}


REFERENCE_FIELDS = ("prompt_ids", "token_ids", "logprobs", "top_ids", "top_logprobs")


def _check_reference(path: Path, reference: Any) -> None:
    """The reference's shape, so a hand-edited or truncated file is one line naming the question, not a crash."""
    if not (isinstance(reference, dict) and isinstance(reference.get("answers"), list)):
        raise SftEvalError(f"{path}: `reference` has no `answers` list")
    for i, answer in enumerate(reference["answers"]):
        where = f"{path}: reference answer {i + 1}"
        if not isinstance(answer, dict) or not isinstance(answer.get("question"), str):
            raise SftEvalError(f"{where} has no `question`")
        missing = [f for f in REFERENCE_FIELDS if not isinstance(answer.get(f), list)]
        if missing:
            raise SftEvalError(f"{where} ({answer['question']!r}) has no `{missing[0]}` list")
        n = len(answer["token_ids"])
        if not all(len(answer[f]) == n for f in ("logprobs", "top_ids", "top_logprobs")):
            raise SftEvalError(
                f"{where} ({answer['question']!r}): `logprobs`, `top_ids` and `top_logprobs` need one "
                f"item per answer token ({n})"
            )


def read_golden(path: Path) -> list[dict[str, Any]]:
    """The exact entries of a golden file (each: `environment` and `answers`)."""
    return _read(path)["entries"]


def read_reference(path: Path | None) -> dict[str, Any] | None:
    """The reference of a golden file (`dtype`, `k`, `environment` and per question `answers`); None when there is
    no file or it has none (a file of an earlier format)."""
    if path is None or not path.is_file():
        return None
    return _read(path)["reference"]


def reference_record(
    answers: list[Any], prompt_ids: list[list[int]], scores: list[Any], dtype: str, env: dict[str, str]
) -> dict[str, Any]:
    """The reference of `answers` (each with its served prompt's token ids and its `scoring.TopK` under the model
    that gave it): what the default comparison holds a later run to, on any machine."""

    def rounded(values: list[Any]) -> list[Any]:  # 1e-7 nats is far below any tolerance, and keeps the file short
        return [rounded(v) if isinstance(v, list) else round(v, 7) for v in values]

    return {
        "environment": env,
        "dtype": dtype,
        "k": max((len(t) for s in scores for t in s.top_ids), default=TOP_K),
        "answers": [
            {
                "question": a.question,
                "text": a.text,
                "prompt_ids": list(p),
                "token_ids": list(a.token_ids),
                "logprobs": rounded(s.logprobs),
                "top_ids": s.top_ids,
                "top_logprobs": rounded(s.top_logprobs),
            }
            for a, p, s in zip(answers, prompt_ids, scores, strict=True)
        ],
    }


def write_golden(
    path: Path, record: dict[str, Any], env: dict[str, str], reference: dict[str, Any] | None = None
) -> None:
    """Write `record` as the exact entry of `env` in the golden file at `path`, keeping the other environments'
    entries (an entry of the first format, whose environment is unknown, can never be compared again and is
    dropped), and `reference` as its reference (None: keep the one the file has)."""
    current = _read(path) if path.is_file() else {"reference": None, "entries": []}
    entries = [
        e for e in current["entries"] if e["environment"] != env and set(ENVIRONMENT_KEYS) <= set(e["environment"])
    ]
    entries.append({"environment": env, "answers": record["answers"]})
    entries.sort(key=lambda e: [str(e["environment"].get(k, "")) for k in ENVIRONMENT_KEYS])
    reference = reference if reference is not None else current["reference"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_dumps({"format": FORMAT, "reference": reference, "entries": entries}), encoding="utf-8")


def _dumps(data: dict[str, Any]) -> str:
    """Indented JSON, except that each reference answer is one line: thousands of numbers stay a readable file."""
    answers = (data["reference"] or {}).get("answers", [])
    marker = "@@reference answers@@"
    shell = {**data, "reference": {**data["reference"], "answers": marker}} if data["reference"] else data
    text = json.dumps(shell, indent=1, ensure_ascii=False, allow_nan=False)
    lines = ",\n".join("   " + json.dumps(a, ensure_ascii=False, allow_nan=False) for a in answers)
    return text.replace(json.dumps(marker), "[\n" + lines + "\n  ]") + "\n"


def _closeness(candidate: dict[str, str], env: dict[str, str]) -> tuple[int, ...]:
    return tuple(int(candidate.get(k) == env[k]) for k in ENVIRONMENT_KEYS)


@dataclass(frozen=True)
class GoldenVerdict:
    """The outcome of comparing a run's answers with the golden outputs of its recipe.

    `status`: "match"; "drift" (a failure: `diff` says what changed); "recorded" (the run wrote this
    environment's entry); "baseline" (no entry for this environment: a local baseline was recorded, nothing
    judged); "none" (no golden outputs at all). `message` is one line for a person.
    """

    status: str
    message: str
    diff: str = ""


def check_golden(
    path: Path | None, record: dict[str, Any], env: dict[str, str], baseline_dir: Path, *, update: bool = False
) -> GoldenVerdict:
    """Compare `record` with the entry of `env` in the golden file at `path`, or with this machine's local
    baseline (kept under `baseline_dir`) when the file has no entry for `env`."""
    where = describe_environment(env)
    if path is None:
        return GoldenVerdict("none", "the recipe has no file, so no golden outputs")
    if update:
        write_golden(path, record, env)
        return GoldenVerdict("recorded", f"wrote the golden outputs of {where} to {path}")
    entries = read_golden(path) if path.is_file() else []
    exact = next((e for e in entries if e["environment"] == env), None)
    if exact is not None:
        rewrite = " (rewrite with --sft-update-golden if intended)"
        return _held_to({"answers": exact["answers"]}, record, f"the golden outputs of {where} in {path}", rewrite)
    baseline = baseline_dir / f"{hashlib.sha256(json.dumps([str(path), env]).encode()).hexdigest()[:24]}.json"
    if baseline.is_file():
        kept = json.loads(baseline.read_text(encoding="utf-8"))
        against = f"this machine's local baseline ({where}, {baseline})"
        return _held_to(kept, record, against, f"; {path} has no entry for it")
    try:
        baseline.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(baseline, json.dumps(record, ensure_ascii=False))  # concurrent workers each write a whole one
        kept = "recorded a local baseline for the next run on this machine"
    except OSError as exc:  # a read-only cache still answers, it just cannot remember
        kept = f"could not record a local baseline ({exc.strerror or exc})"
    nearest = max(entries, key=lambda e: _closeness(e["environment"], env), default=None)
    nearest_note = (
        f"; the nearest entry ({describe_partial(nearest['environment'])}) differs in "
        f"{changed_answers({'answers': nearest['answers']}, record)} of {len(record['answers'])} answers"
        if nearest is not None
        else ""
    )
    return GoldenVerdict(
        "baseline",
        f"no golden outputs for {where} in {path}{nearest_note}; {kept} (add this environment's entry with "
        "--sft-update-golden)",
    )


def _held_to(expected: dict[str, Any], record: dict[str, Any], against: str, on_drift: str) -> GoldenVerdict:
    """`record` compared exactly with `expected` (a golden entry or a local baseline), described as `against`;
    `on_drift` ends the message of a drift."""
    drift = golden_drift(expected, record)
    if not drift:
        return GoldenVerdict("match", f"{len(record['answers'])} answers equal {against}")
    count = f"{changed_answers(expected, record)} of {len(record['answers'])}"
    return GoldenVerdict("drift", f"{count} tuned answers drifted from {against}{on_drift}", drift)


def same_numerics(recorded: dict[str, str], env: dict[str, str]) -> bool:
    """Whether a model trained under `env` trains as one trained under `recorded` did: same device, architecture
    and kernel set (`NUMERICS_KEYS`), whatever the library versions."""
    return all(k in recorded for k in NUMERICS_KEYS) and all(recorded[k] == env.get(k) for k in NUMERICS_KEYS)


def environment_changes(recorded: dict[str, str], env: dict[str, str], keys: tuple[str, ...] = ENVIRONMENT_KEYS) -> str:
    """What differs, of `keys`, between the recording environment and this one (`transformers 5.24.0 -> 5.25.0`),
    or ""."""
    return ", ".join(f"{k} {recorded.get(k, '?')} -> {env[k]}" for k in keys if k in env and recorded.get(k) != env[k])


def describe_partial(env: dict[str, str]) -> str:
    if not all(k in env for k in ENVIRONMENT_KEYS):
        return "unknown environment"
    return describe_environment(env)


def tolerance_for(*dtypes: str) -> float:
    """The default tolerance for models run in these dtypes: the loosest of theirs (bf16 against a float32
    reference is judged as bf16)."""
    return max(TOLERANCE.get(d, TOLERANCE["bfloat16"]) for d in dtypes)


def within_tolerance(
    reference: dict[str, Any],
    answers: list[Any],
    prompt_ids: list[list[int]],
    scores: list[Any],
    tolerance: float,
    token_text: Any = None,
    env: dict[str, str] | None = None,
    rerecord: str = "--sft-update-golden",
) -> GoldenVerdict:
    """`answers` (today's greedy answers; `prompt_ids`, their served prompts' token ids) held to `reference` within
    `tolerance` nats. `scores` are today's model's `scoring.TopK` of each *reference* answer after today's prompt,
    in the reference's order. `token_text(id)` shows a token (default: its id). A drift names what differs between
    the reference's environment and `env` (this one), and `rerecord`, the command that records the reference
    again."""
    show = token_text or str
    now = {a.question: (a, p) for a, p in zip(answers, prompt_ids, strict=True)}
    problems: list[str] = []
    largest, ties = 0.0, 0
    for ref, score in zip(reference["answers"], scores, strict=True):
        question = ref["question"]
        if question not in now:
            problems.append(f"{question!r}: not asked now")
            continue
        answer, prompt = now.pop(question)
        problem, drift, tie = _one_answer(ref, answer, prompt, score, tolerance, show)
        largest, ties = max(largest, drift), ties + tie
        if problem:
            problems.append(f"{question!r}: {problem}")
    problems += [f"{q!r}: has no golden answer (record it with --sft-update-golden)" for q in now]
    compared = len(reference["answers"]) + len(now)
    recorded = describe_partial(reference.get("environment", {}))
    where = f"the golden reference ({reference.get('dtype', '?')}, recorded on {recorded})"
    measured = f"largest teacher-forced difference {largest:.2g} nats, {ties} near ties"
    if not problems:
        return GoldenVerdict(
            "match", f"{len(answers)} answers agree with {where} within {tolerance:g} nats ({measured})"
        )
    changes = environment_changes(reference.get("environment", {}), env or {})
    around = f"; since it was recorded: {changes}" if changes else "; in the environment it was recorded in, unchanged"
    return GoldenVerdict(
        "drift",
        f"{len(problems)} of {compared} tuned answers drifted from {where} beyond {tolerance:g} "
        f"nats ({measured}{around}; if intended, record it again: {rerecord})",
        "\n".join(problems),
    )


def _one_answer(
    ref: dict[str, Any], answer: Any, prompt: list[int], score: Any, tolerance: float, show: Any
) -> tuple[str, float, int]:
    """One question: (what drifted, or "" when nothing did; the largest teacher-forced difference; 1 for a near
    tie at the first divergence, else 0)."""
    if list(prompt) != ref["prompt_ids"]:
        at = _first_difference(ref["prompt_ids"], list(prompt))
        return f"the served prompt's tokens changed at position {at} (the template or tokenizer changed)", 0.0, 0
    gold = ref["token_ids"]
    diffs = [abs(a - b) for a, b in zip(ref["logprobs"], score.logprobs, strict=True)]
    largest = max(diffs, default=0.0)
    problems = []
    if largest > tolerance:
        t = next(i for i, d in enumerate(diffs) if d > tolerance)
        problems.append(
            f"at answer position {t} the golden token {show(gold[t])} has logprob {score.logprobs[t]:.6f} now, "
            f"{ref['logprobs'][t]:.6f} in the golden ({diffs[t]:.2g} nats apart; the largest difference {largest:.2g})"
        )
    greedy, tie = _greedy_divergence(ref, list(answer.token_ids), score, tolerance, show)
    problems += [greedy] if greedy else []
    return "; ".join(problems), largest, tie


def _greedy_divergence(ref: dict[str, Any], ids: list[int], score: Any, tolerance: float, show: Any) -> tuple[str, int]:
    """Where today's greedy answer parts from the golden one: ("", 0) when it does not, ("", 1) at a near tie (each
    side's token in the other's top-k, within `tolerance` on both sides), else what parted and 0."""
    gold = ref["token_ids"]
    t = _first_difference(gold, ids)
    if t is None:
        return "", 0
    if t == min(len(ids), len(gold)):
        return f"the answers agree for {t} tokens, then one ends ({len(gold)} golden, {len(ids)} now)", 0
    g, c = gold[t], ids[t]
    golden_side = dict(zip(ref["top_ids"][t], ref["top_logprobs"][t], strict=True))
    now_side = dict(zip(score.top_ids[t], score.top_logprobs[t], strict=True))
    tie = all(token in side for token in (g, c) for side in (golden_side, now_side))
    gaps = (golden_side[g] - golden_side[c], now_side[c] - now_side[g]) if tie else (math.inf, math.inf)
    if tie and max(gaps) <= tolerance:
        return "", 1
    return (
        f"first divergence at answer position {t}: golden {show(g)} (logprob {_lp(golden_side, g)} golden, "
        f"{_lp(now_side, g)} now), now {show(c)} (logprob {_lp(golden_side, c)} golden, {_lp(now_side, c)} now)",
        0,
    )


def _lp(side: dict[int, float], token: int) -> str:
    return f"{side[token]:.6f}" if token in side else "not in the top-k"


def _first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two token lists differ (the shorter one's length when it is a prefix of the
    longer); None when they are equal."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


TopKOf = Callable[[list[str], list[list[int]]], tuple[list[list[int]], list[Any], str]]


def golden_verdict(
    recipe: Recipe,
    tuned: list[Any],
    env: dict[str, str],
    local: Path,
    *,
    top_k: TopKOf,
    prompt_ids: Callable[[list[str]], list[list[int]]],
    token_text: Callable[[int], str],
    trained_here: bool,
    mode: str | None = None,
    update: bool = False,
) -> GoldenVerdict:
    """The policy: the tuned model's answers (`tuned`) held to the recipe's golden outputs, within a tolerance of
    the reference (the default `mode`, any machine) or exactly against this environment's entry (`local`: the
    cache's folder of local baselines); `update` writes the reference and this environment's entry instead.
    `top_k(questions, answer ids)` scores given answers under the tuned model (prompts, `TopK`s, dtype);
    `trained_here`: the tuned model was trained in this environment from the recipe (another environment's
    training numerics make another model, which no tolerance covers)."""
    mode = mode or recipe.eval.golden_mode
    path = golden_path(recipe)
    record = golden_record(tuned)
    if path is None or (mode == "exact" and not update):
        return check_golden(path, record, env, local)
    if update:
        prompts, scores, dtype = top_k([a.question for a in tuned], [a.token_ids for a in tuned])
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
    if trained_here and not same_numerics(trained, env):
        exact = check_golden(path, record, env, local)
        numerics = environment_changes(trained, env, NUMERICS_KEYS)
        return dataclasses.replace(
            exact,
            message=f"the tuned model was trained here on {describe_environment(env)}, the golden reference's "
            f"on {describe_partial(trained)}: other training numerics ({numerics}), so another model, which no "
            f"tolerance covers; {exact.message}",
        )
    golden = reference["answers"]
    _, scores, dtype = top_k([g["question"] for g in golden], [g["token_ids"] for g in golden])
    tolerance = recipe.eval.golden_tolerance or tolerance_for(dtype, reference.get("dtype", dtype))
    now = prompt_ids([a.question for a in tuned])
    default = recipe.path is None or recipe.path.resolve() == DEFAULT_RECIPE.resolve()
    named = "" if default else f" --sft-recipe {recipe.path}"
    rerecord = f"`pytest --pyargs sft_eval.suites{named} -k golden --sft-update-golden`"
    return within_tolerance(
        reference, tuned, now, scores, tolerance, lambda t: f"{token_text(t)!r} ({t})", env=env, rerecord=rerecord
    )
