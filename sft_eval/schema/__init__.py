"""The JSON sft-eval writes, as types, stated once: the report (`sft_report.json`, `ReportData`, in `report`) and
the records it holds, the comparison (`sft-eval-compare/1`, in `compare`), the judge's verdicts (in `judge`). Each
field says what it holds in the docstring under it.

`format` is `REPORT_FORMAT`. Adding a field keeps the version; a field that changes meaning or goes away bumps it,
and readers refuse any other version (or none) in one line. What reads a report checks it against these types
(`validate.conform`); each stage's `to_dict()` is declared to return its record here, so the type checker holds
the stages to the format; `tests/test_report_format.py` holds them against what `build_context` writes, and
docs/report-format.md's table is generated from them (`report.format.field_table`). The recipe's fingerprint and
the batch plan are objects here, described where they are made.
"""

from typing import Literal

from typing_extensions import TypedDict, is_typeddict

from sft_eval.schema import bench, compare, judge, report
from sft_eval.schema.bench import *  # noqa: F403
from sft_eval.schema.compare import *  # noqa: F403
from sft_eval.schema.judge import *  # noqa: F403
from sft_eval.schema.report import *  # noqa: F403

REPORT_FORMAT: Literal["sft-eval-report/1"] = "sft-eval-report/1"
COMPARE_FORMAT: Literal["sft-eval-compare/1"] = "sft-eval-compare/1"

# For pydantic (the tests read the format with it; so can a user): every record is closed (a field not declared
# here is an error), strict (no "3" for 3), and documented by the docstrings under its fields. A plain dict, so
# sft-eval itself needs no pydantic.
_PYDANTIC_CONFIG = {"extra": "forbid", "strict": True, "use_attribute_docstrings": True}
# every record of the three modules, found rather than listed, so a record added is configured too
RECORDS = tuple(
    v
    for module in (bench, compare, judge, report)
    for v in vars(module).values()
    if isinstance(v, type) and is_typeddict(v) and v is not TypedDict and v.__module__ == module.__name__
)
for _record in RECORDS:
    _record.__pydantic_config__ = _PYDANTIC_CONFIG  # type: ignore[attr-defined]
__all__ = ["COMPARE_FORMAT", "RECORDS", "REPORT_FORMAT", *(record.__name__ for record in RECORDS)]
