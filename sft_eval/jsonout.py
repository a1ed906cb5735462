"""JSON that every parser reads: what sft-eval prints with `--json` and writes into its report.

Python's `json.dumps` writes `NaN` and `Infinity` for non-finite floats (a diverged run's loss), which is not
JSON: `JSON.parse` and strict parsers reject the whole document. Here they become `null`; the check that
judges them (the loss check names each non-finite step) says why.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every non-finite float, at any depth, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """`json.dumps` of `value` with non-finite floats as null, refusing anything else that is not JSON. The walk
    that replaces them runs only when there is one (a 10,000-question report is mostly strings)."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:  # "Out of range float values are not JSON compliant" (or another ValueError: said again)
        return json.dumps(finite(value), allow_nan=False, **kwargs)
