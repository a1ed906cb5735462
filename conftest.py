"""Repository-level pytest configuration: the sft-eval plugin itself is loaded through its pytest11 entry point.

What lives here is for this repository's own tests: the real-world material shared beside the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REALWORLD = Path(os.environ.get("SFT_EVAL_REALWORLD", Path(__file__).parent.parent / "shared" / "realworld"))


@pytest.fixture(scope="session")
def realworld_dir() -> Path:
    """../shared/realworld (or $SFT_EVAL_REALWORLD); tests that need it skip where it is absent."""
    if not REALWORLD.is_dir():
        pytest.skip(f"real-world material not found at {REALWORLD} (set SFT_EVAL_REALWORLD)")
    return REALWORLD
