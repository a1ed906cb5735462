"""The report's JSON format, as types: `sft_eval.schema`, named here too (where it was first published), so
`from sft_eval.report.format import ReportData` keeps working; and the Markdown table docs/report-format.md holds,
generated from those types (`field_table`). The types live below the stages, in `schema`, so that each stage's
record can be type-checked against the format it is written in."""

from typing import Any

from sft_eval.schema import *  # noqa: F403 - the format's records, as before
from sft_eval.schema import RECORDS as RECORDS
from sft_eval.schema import REPORT_FORMAT as REPORT_FORMAT
from sft_eval.schema import ReportData as ReportData
from sft_eval.validate import conform as conform


def field_table() -> str:
    """Every record of the report's JSON, each field's type and what it holds, as the Markdown docs/report-format.md
    holds: read from the types above and their docstrings with pydantic (the `test` extra)."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(ReportData).json_schema()
    definitions = {"ReportData": schema, **schema.get("$defs", {})}
    order = ["ReportData"]
    for name in order:  # each record once, in the order the report first holds it
        for prop in definitions[name].get("properties", {}).values():
            order += [ref for ref in _refs(prop) if ref not in order]
    blocks = []
    for name in order:
        record = definitions[name]
        if "description" not in record:
            raise ValueError(f"report record `{name}` has no docstring")
        rows = [f"### {name}", "", record["description"], "", "| field | type | what it holds |", "|---|---|---|"]
        for field, prop in record["properties"].items():
            if "description" not in prop:
                raise ValueError(f"report field `{name}.{field}` has no docstring")
            optional = "" if field in record.get("required", []) else " (optional)"
            rows.append(f"| `{field}` | {_spelled(prop)}{optional} | {_cell(prop['description'])} |")
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks) + "\n"


def _cell(text: str) -> str:
    """`text` as one Markdown table cell: one line, its pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _spelled(prop: dict[str, Any]) -> str:
    """A JSON-schema property's type in words, a named record as a link to its table."""
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in prop:
        return " or ".join(_spelled(p) for p in prop["anyOf"])
    if "const" in prop:
        return f"`{prop['const']}`"
    if "enum" in prop:
        return " or ".join(f"`{v}`" for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        items = prop.get("prefixItems") or prop.get("items")
        if isinstance(items, list):
            return "[" + ", ".join(_spelled(p) for p in items) + "]"
        return f"list of {_spelled(items)}" if items else "list"
    if kind == "object":
        values = prop.get("additionalProperties")
        return f"object of {_spelled(values)}" if isinstance(values, dict) else "object"
    return kind


def _refs(prop: dict[str, Any]) -> list[str]:
    """The named records a property holds: directly, in a list, in a union or as an object's values."""
    if "$ref" in prop:
        return [prop["$ref"].rsplit("/", 1)[1]]
    found: list[str] = []
    for key in ("anyOf", "prefixItems"):
        for p in prop.get(key, []):
            found += _refs(p)
    for key in ("items", "additionalProperties"):
        if isinstance(prop.get(key), dict):
            found += _refs(prop[key])
    return found
