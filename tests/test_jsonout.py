"""What sft-eval prints with --json and writes into its report parses everywhere: no NaN or Infinity tokens."""

from __future__ import annotations

import json
import math

import pytest

from sft_eval.jsonout import dumps


def strict_loads(text: str):
    """A parser that, like JSON.parse, rejects NaN and Infinity."""
    return json.loads(text, parse_constant=lambda token: pytest.fail(f"non-JSON token {token} in {text}"))


def test_non_finite_numbers_become_null_at_any_depth():
    diverged = {"losses": [[10, 2.5], [20, math.nan]], "loss_drop": -math.inf, "steps": ({"grad_norm": math.inf},)}
    assert strict_loads(dumps(diverged)) == {
        "losses": [[10, 2.5], [20, None]],
        "loss_drop": None,
        "steps": [{"grad_norm": None}],
    }


def test_plain_json_does_not_change():
    plain = {"effective_batch": 8, "rate": 0.25, "ok": True, "name": "tiny", "none": None}
    assert dumps(plain) == json.dumps(plain)


def test_plain_json_dumps_would_have_written_nan():
    """The broken case: the standard library writes NaN, which a strict parser refuses."""
    with pytest.raises(pytest.fail.Exception):
        strict_loads(json.dumps({"loss": math.nan}))
