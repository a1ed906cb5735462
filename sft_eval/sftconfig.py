"""`trl.SFTConfig`'s fields, known without importing TRL.

A recipe's `[sft]` names are checked against SFTConfig's init fields, and `plan` fills in its defaults where a
recipe is silent. Importing TRL for them costs seconds (transformers' `training_args` imports torch), and bad
input must be answered before that. So the fields are read from the installed sources with `ast`: SFTConfig's
class body, then each base class in turn, found through the module's own imports, into transformers'
`TrainingArguments`, as `dataclasses` collects them (a base's fields first, a field redefined below keeps its
place and takes the new default). Only literal defaults are kept (`plan` imports TRL for any other it needs).
Sources that do not read so (a class not found, a base that is not a class in a file) fall back to importing TRL.
The result is kept as JSON in the sft-eval cache, one file per TRL and transformers version.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path
from typing import Any

# Where a base class named by a package's lazy `__init__` (`from transformers import TrainingArguments`) is defined.
DEFINED_IN = {("transformers", "TrainingArguments"): "transformers/training_args.py"}
JSON_DEFAULTS = (bool, int, float, str, type(None))


class Unreadable(Exception):
    """The sources do not say the fields plainly: import instead."""


def sft_config_schema() -> dict[str, Any]:
    """`{"versions", "fields", "defaults"}`: SFTConfig's init fields in order and their JSON defaults, from the
    cache, else read from the sources (no import), else from TRL imported; written to the cache atomically (an
    unwritable cache only means reading again)."""
    from sft_eval.cache import default_cache_dir, write_atomic

    versions = f"trl-{version('trl')}-transformers-{version('transformers')}"
    path = default_cache_dir() / "schemas" / f"sftconfig-{versions}.json"
    with contextlib.suppress(OSError, ValueError):
        schema = json.loads(path.read_text(encoding="utf-8"))
        kept = isinstance(schema, dict) and isinstance(schema.get("fields"), list)
        if kept and isinstance(schema.get("defaults"), dict):
            return schema
    try:
        fields, defaults = read_fields("trl", "trl/trainer/sft_config.py", "SFTConfig")
    except Unreadable:
        fields, defaults = imported_fields()
    schema = {"versions": versions, "fields": fields, "defaults": defaults}
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(schema, indent=1))
    return schema


def imported_fields() -> tuple[list[str], dict[str, Any]]:
    """SFTConfig's init fields and JSON defaults from TRL itself (seconds: it imports torch)."""
    from trl import SFTConfig

    fields = [f for f in dataclasses.fields(SFTConfig) if f.init]
    defaults = {
        f.name: f.default
        for f in fields
        if f.default is not dataclasses.MISSING and isinstance(f.default, JSON_DEFAULTS)
    }
    return [f.name for f in fields], defaults


def read_fields(package: str, relative: str, name: str) -> tuple[list[str], dict[str, Any]]:
    """The init fields (in dataclass order) and literal defaults of dataclass `name` in `package`'s file
    `relative`, with those of its bases, read with `ast`; `Unreadable` where the sources do not say them plainly."""
    path = installed_source(package, relative)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError) as exc:
        raise Unreadable(f"{path}: {exc}") from None
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name), None)
    if node is None or not _is_dataclass(node):
        raise Unreadable(f"{name} is not a dataclass defined in {path}")
    order: list[str] = []
    defaults: dict[str, Any] = {}
    for base in node.bases:
        base_package, base_file, base_name = _locate(base, tree, package, relative)
        if base_name == "object":
            continue
        names, values = read_fields(base_package, base_file, base_name)
        order += [n for n in names if n not in order]
        defaults.update(values)
    for statement in node.body:
        if not isinstance(statement, ast.AnnAssign) or not isinstance(statement.target, ast.Name):
            continue
        if "ClassVar" in ast.unparse(statement.annotation):
            continue
        field, init, default = statement.target.id, *_field_settings(statement.value)
        if not init:
            if field in order:
                order.remove(field)
            defaults.pop(field, None)
            continue
        if field not in order:
            order.append(field)
        defaults.pop(field, None)
        if default is not _NONE_GIVEN:
            defaults[field] = default
    return order, {k: v for k, v in defaults.items() if k in order}


_NONE_GIVEN = object()


def _field_settings(value: ast.expr | None) -> tuple[bool, Any]:
    """(init, the literal default or _NONE_GIVEN) of a field's right-hand side: `= literal` or `field(...)`."""
    if value is None:
        return True, _NONE_GIVEN
    if isinstance(value, ast.Call) and ast.unparse(value.func) in ("field", "dataclasses.field"):
        keywords = {k.arg: k.value for k in value.keywords}
        given = keywords.get("init")
        init = not (isinstance(given, ast.Constant) and given.value is False)
        return init, _literal(keywords["default"]) if "default" in keywords else _NONE_GIVEN
    return True, _literal(value)


def _literal(node: ast.expr) -> Any:
    try:
        value = ast.literal_eval(node)
    except ValueError:  # a name, an enum member, a call: not a JSON default
        return _NONE_GIVEN
    return value if isinstance(value, JSON_DEFAULTS) else _NONE_GIVEN


def _is_dataclass(node: ast.ClassDef) -> bool:
    return any(ast.unparse(d).split("(")[0] in ("dataclass", "dataclasses.dataclass") for d in node.decorator_list)


def _locate(base: ast.expr, tree: ast.Module, package: str, relative: str) -> tuple[str, str, str]:
    """(package, file, class name) of a base class named in the module `tree` (`package`'s file `relative`)."""
    if not isinstance(base, ast.Name):
        raise Unreadable(f"base {ast.unparse(base)} is not a plain name")
    name = base.id
    if name == "object":
        return package, relative, name
    if any(isinstance(n, ast.ClassDef) and n.name == name for n in tree.body):
        return package, relative, name
    for node in tree.body:
        if not isinstance(node, ast.ImportFrom) or all(a.name != name for a in node.names):
            continue
        if node.level:  # from .base_config import _BaseConfig
            folder = Path(relative).parent
            for _ in range(node.level - 1):
                folder = folder.parent
            module = folder.joinpath(*(node.module or "").split(".")) if node.module else folder
            return package, _module_file(package, module), name
        top = (node.module or "").split(".")[0]
        if (top, name) in DEFINED_IN:
            return top, DEFINED_IN[top, name], name
        return top, _module_file(top, Path(*(node.module or "").split("."))), name
    raise Unreadable(f"base class {name} of {relative} is not imported by name")


def _module_file(package: str, module: Path) -> str:
    for candidate in (module.with_suffix(".py"), module / "__init__.py"):
        with contextlib.suppress(Unreadable):
            installed_source(package, str(candidate))
            return str(candidate)
    raise Unreadable(f"no source for {module} in {package}")


def installed_source(package: str, relative: str) -> Path:
    """The installed file `relative` (a path inside site-packages) of distribution `package`, found from its
    metadata without importing it."""
    try:
        path = Path(str(distribution(package).locate_file(relative)))
    except PackageNotFoundError:
        raise Unreadable(f"{package} is not installed") from None
    if not path.is_file():
        raise Unreadable(f"{path} is not a file")
    return path
