"""Repository-level pytest configuration: the sft-eval plugin itself is loaded through its pytest11 entry point.

What lives here is for this repository's own tests: the real-world material shared beside the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sft_eval.recipe import DEFAULT_RECIPE

REALWORLD = Path(os.environ.get("SFT_EVAL_REALWORLD", Path(__file__).parent.parent / "shared" / "realworld"))


@pytest.fixture(scope="session")
def realworld_dir() -> Path:
    """../shared/realworld (or $SFT_EVAL_REALWORLD); tests that need it skip where it is absent."""
    if not REALWORLD.is_dir():
        pytest.skip(f"real-world material not found at {REALWORLD} (set SFT_EVAL_REALWORLD)")
    return REALWORLD


@pytest.fixture
def tiny_variant(tmp_path: Path):
    """`tiny_variant({"old": "new", ...})`: the default recipe with those text edits, written to a temporary
    folder with its data paths made absolute (so it trains on the same rows as the default)."""

    def write(edits: dict[str, str], name: str = "variant.toml") -> Path:
        text = DEFAULT_RECIPE.read_text(encoding="utf-8")
        for relative in ("../data/sft_train.jsonl", "../data/eval_questions.jsonl"):
            text = text.replace(f'"{relative}"', f'"{(DEFAULT_RECIPE.parent / relative).resolve()}"')
        for old, new in edits.items():
            assert old in text, f"{old!r} is not in {DEFAULT_RECIPE}"
            text = text.replace(old, new, 1)
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
