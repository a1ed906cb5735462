"""Golden outputs: a recipe's tuned greedy answers, stored, so any drift (a library upgrade that changes
tokenization, templating or numerics) fails with a readable old-vs-new diff.

A recipe's golden file is `<recipe folder>/../golden/<recipe name>.json` (the shipped tiny recipe's is
fixtures/golden/tiny.json); `pytest suites/ --update-golden` rewrites it.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from sft_eval.recipe import Recipe


def golden_path(recipe: Recipe) -> Path | None:
    if recipe.path is None:
        return None
    return recipe.path.parent.parent / "golden" / f"{recipe.name}.json"


def golden_record(questions: list[str], answers: list[Any]) -> dict[str, Any]:
    """What is pinned: each question's greedy answer text and its token ids."""
    return {
        "answers": [
            {"question": q, "text": a.text, "token_ids": a.token_ids} for q, a in zip(questions, answers, strict=True)
        ]
    }


def _lines(record: dict[str, Any]) -> list[str]:
    return [f"{a['question']!r} -> {a['text']!r} {a['token_ids']}" for a in record["answers"]]


def golden_drift(expected: dict[str, Any], actual: dict[str, Any]) -> str:
    """A unified diff of golden vs current answers (text and token ids); empty when they agree."""
    diff = difflib.unified_diff(_lines(expected), _lines(actual), "golden", "now", lineterm="", n=0)
    return "\n".join(diff)


def write_golden(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
