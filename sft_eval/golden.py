"""Golden outputs: a recipe's tuned greedy answers, stored, so any drift (a changed template, a retrained model,
a library upgrade that changes tokenization or numerics) fails with a readable old-vs-new diff.

Trained weights depend on the machine that trained them: the CPU's kernel set (AVX-512, AVX2, ARM, ATen's
portable default) or the GPU changes float results, and a few greedy answers with them. So a golden file holds
one entry per environment that recorded it (device, architecture, kernel set, torch and transformers versions),
like transformers' `Expectations`, and a run compares exactly against the entry of its own environment. In an
environment with no entry the check says so in one line and keeps a *local baseline* in the fixture cache
instead of failing: the next run on that machine is compared against it exactly.

A recipe's golden file is `<recipe folder>/golden/<recipe name>.json`, or `[eval] golden` (a path inside the
recipe's folder); `pytest suites/ --sft-update-golden` writes this environment's entry and keeps the others.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from sft_eval.cache import cpu_kernels, write_atomic
from sft_eval.errors import SftEvalError
from sft_eval.recipe import Recipe

FORMAT = 2
ENVIRONMENT_KEYS = ("device", "machine", "kernels", "torch", "transformers")


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


def read_golden(path: Path) -> list[dict[str, Any]]:
    """The entries of a golden file (each: `environment` and `answers`); a file of the first format (answers
    only, no environment) is one entry whose environment is unknown and matches none."""
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
    return entries


def write_golden(path: Path, record: dict[str, Any], env: dict[str, str]) -> None:
    """Write `record` as the entry of `env` in the golden file at `path`, keeping the other environments' entries
    (an entry of the first format, whose environment is unknown, can never be compared again and is dropped)."""
    entries = read_golden(path) if path.is_file() else []
    entries = [e for e in entries if e["environment"] != env and set(ENVIRONMENT_KEYS) <= set(e["environment"])]
    entries.append({"environment": env, "answers": record["answers"]})
    entries.sort(key=lambda e: [str(e["environment"].get(k, "")) for k in ENVIRONMENT_KEYS])
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": FORMAT, "entries": entries}, indent=1, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


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
        f"; the nearest entry ({_describe_partial(nearest['environment'])}) differs in "
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


def _describe_partial(env: dict[str, str]) -> str:
    if not all(k in env for k in ENVIRONMENT_KEYS):
        return "unknown environment"
    return describe_environment(env)
