"""The flow as the imports say it: stages in order, no circle, a report that cannot train or generate.

Every `import` and `from ... import` in sft_eval (function-level ones too) is read with `ast`. Each module has a
place in the flow (`LAYERS`); a module may import its own layer or earlier ones, never a later one. A new module
must be given a place here, which is the point: where it sits is a decision, not an accident.

    python tests/test_architecture.py    # print the module map: each module, its layer and what it imports
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sft_eval"

# The flow, earliest first: recipe -> build -> audit -> train -> generate -> score -> report, with what every
# stage may use below it and the orchestrators (which call stages, and are called by nothing) on top.
LAYERS: dict[str, tuple[str, ...]] = {
    "foundation": (
        "sft_eval",
        "errors",
        "registry",
        "validate",
        "console",
        "jsonout",
        "hub",
        "cache",
        "kernels",
        "backends",
        "sftconfig",
        "tables",
        "section_checks",
        "trainer_keys",
        "recipe",
        "options",
        "schema.bench",
        "schema.compare",
        "schema.judge",
        "schema.report",
        "schema",
    ),
    "inputs": ("chat", "conversations", "questions", "data", "plan", "trainer_config", "records", "tokenizer"),
    "build": ("models", "adapters"),
    "audit": (
        "audit",
        "audit.rendering",
        "audit.thinking",
        "audit.template",
        "audit.tools",
        "audit.tokenizer",
        "audit.checks",
        "audit.checkpoint",
        "audit.adapter",
        "audit.labels",
        "audit.run",
    ),
    "train": ("training",),
    "generate": ("generation", "generation.local", "generation.served"),
    "score": (
        "sanity",
        "scoring",
        "golden",
        "verdict",
        "toolcalls",
        "judge",
        "judge.stats",
        "judge.chat",
        "judge.reward",
        "judge.records",
    ),
    "compare": ("power", "compare", "comparison_text", "sweep"),
    "report": ("report", "report.format", "report.reader"),
    # one recipe's parts, each with one job: the pipeline is their face
    "assemble": (
        "inputs",
        "artifacts",
        "sources",
        "variants",
        "answers",
        "signals",
        "reward_model",
        "judgement",
        "assessment",
        "live",
    ),
    "orchestrate": (
        "pipeline",
        "checkpoint_sweep",
        "factory",
        "bench",
        "served_bench",
        "served_command",
        "callback",
        "cli",
        "plugin",
        "distributed",
    ),
}
RANK = {
    (name if name == "sft_eval" else f"sft_eval.{name}"): rank
    for rank, names in enumerate(LAYERS.values())
    for name in names
}
TRAINS_OR_GENERATES = {
    "sft_eval.training",
    "sft_eval.generation",
    "sft_eval.models",
    "sft_eval.pipeline",
    "sft_eval.artifacts",
    "sft_eval.answers",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The sft_eval modules `path` imports anywhere in it (a `from pkg import name` of a submodule counts)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "sft_eval"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sft_eval":
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for nxt in graph[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every module that can reach itself, with one path back to it."""
    found = []
    for start in sorted(graph):
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    found.append([*path, start])
                    stack = []
                    break
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return found


def backward_arrows(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{a} ({list(LAYERS)[RANK[a]]}) imports {b} ({list(LAYERS)[RANK[b]]})"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        if RANK[b] > RANK[a]
    ]


def test_every_module_has_a_place_in_the_flow():
    unplaced = sorted(set(import_graph()) - set(RANK))
    assert not unplaced, f"give these modules a layer in LAYERS: {unplaced}"


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_no_stage_imports_a_later_one():
    assert backward_arrows(import_graph()) == []


def test_the_report_imports_nothing_that_trains_or_generates():
    assert closure(import_graph(), "sft_eval.report") & TRAINS_OR_GENERATES == set()


ENTRY_POINTS = ("sft_eval.cli", "sft_eval.plugin", "sft_eval.distributed")


def pipeline_builders(source: str) -> set[str]:
    """What a module calls to get a pipeline: `Pipeline(...)` itself, or the factory's `open_pipeline(...)`."""
    calls = {
        node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
    }
    return calls & {"Pipeline", "open_pipeline"}


def test_the_cli_the_plugin_and_torchrun_build_their_pipeline_through_one_factory():
    """One way to a pipeline (`sft_eval.factory.open_pipeline`): the same limits and the same validation before
    torch is imported, whichever way a user comes in."""
    for module in ENTRY_POINTS:
        path = PACKAGE / f"{module.removeprefix('sft_eval.')}.py"
        assert pipeline_builders(path.read_text(encoding="utf-8")) == {"open_pipeline"}, module
    assert pipeline_builders("p = Pipeline(recipe, cache)") == {"Pipeline"}, "the check can fail"


def test_the_checks_above_can_fail():
    """The same functions on a graph with the bends this design removed: a circle (data <-> sanity), a stage
    reaching forward (audit.labels -> training) and a report that imports the pipeline."""
    bent = {name: set(targets) for name, targets in import_graph().items()}
    bent["sft_eval.data"].add("sft_eval.sanity")
    bent["sft_eval.audit.labels"].add("sft_eval.training")
    bent["sft_eval.report"].add("sft_eval.pipeline")
    assert any(c[0] == "sft_eval.data" for c in cycles(bent))
    arrows = backward_arrows(bent)
    assert "sft_eval.audit.labels (audit) imports sft_eval.training (train)" in arrows
    assert "sft_eval.data (inputs) imports sft_eval.sanity (score)" in arrows
    assert "sft_eval.pipeline" in closure(bent, "sft_eval.report")


if __name__ == "__main__":
    graph = import_graph()
    for layer, names in LAYERS.items():
        print(f"{layer}:")
        for name in names:
            full = name if name == "sft_eval" else f"sft_eval.{name}"
            uses = sorted(m.removeprefix("sft_eval.") for m in graph.get(full, ()))
            print(f"  {full.removeprefix('sft_eval.') or 'sft_eval'}: {', '.join(uses) or '-'}")


def test_the_orchestrator_knows_no_backend():
    """Caching wraps any backend (`generation.CachedAnswers`): the pipeline names no backend and imports no
    backend class, so a registered backend is cached and resumed like a shipped one."""
    source = (PACKAGE / "pipeline.py").read_text(encoding="utf-8")
    named = [name for name in ("ServedBackend", "LocalBackend", '"openai"', '"transformers"') if name in source]
    assert named == [], f"pipeline.py names {named}"


def test_every_module_is_named_in_the_layout_doc():
    """docs/layout.md names each module of sft_eval (in backticks), so a module added is a line a newcomer reads."""
    text = (PACKAGE.parent / "docs" / "layout.md").read_text(encoding="utf-8")
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts == ("__init__",):
            continue
        name = parts[-2] if parts[-1] == "__init__" else parts[-1]
        if f"`{name}`" not in text and f"`{name}/`" not in text:
            missing.append(str(path.relative_to(PACKAGE.parent)))
    assert missing == [], f"docs/layout.md does not name {missing}"


# -- one job a module -------------------------------------------------------------------------------------------
MAX_MODULE_LINES, MAX_CLASS_LINES, MAX_FACE_LINES = 600, 300, 250
MADE_HERE = {"sft_eval.sources", "sft_eval.artifacts"}  # the only modules that know how a model was made


def oversized(source: str, name: str) -> list[str]:
    """The module (over `MAX_MODULE_LINES`) and classes (over `MAX_CLASS_LINES`; the `Pipeline` face over
    `MAX_FACE_LINES`) of `source` that are too long."""
    found = []
    lines = source.count("\n") + (not source.endswith("\n"))
    if lines > MAX_MODULE_LINES:
        found.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            limit = MAX_FACE_LINES if node.name == "Pipeline" else MAX_CLASS_LINES
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append(f"{name}.{node.name}: {length} lines (at most {limit})")
    return found


def test_no_module_over_600_lines_no_class_over_300_and_a_thin_pipeline_face():
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    found = [f for name, path in sorted(modules.items()) for f in oversized(path.read_text(encoding="utf-8"), name)]
    assert found == []
    assert oversized("x = 1\n" * 601, "m") == ["m: 601 lines (at most 600)"], "the check can fail"
    face = "class Pipeline:\n" + "    x = 1\n" * 250
    assert oversized(face, "m") == ["m.Pipeline: 251 lines (at most 250)"]


def made_how(source: str) -> list[str]:
    """Branches on how a model was made: a comparison with `origin`, `TINY` or `finished_run`, a `.run is (not)
    None` test, and any `__dict__` access (hand-kept caches)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                named = side.attr if isinstance(side, ast.Attribute) else side.id if isinstance(side, ast.Name) else ""
                if named in ("origin", "TINY", "finished_run"):
                    found.append(f"line {node.lineno}: compares {named}")
                if named == "run" and any(isinstance(c, ast.Constant) and c.value is None for c in node.comparators):
                    found.append(f"line {node.lineno}: .run is None")
        if isinstance(node, ast.Attribute) and node.attr == "__dict__":
            found.append(f"line {node.lineno}: __dict__")
    return found


def test_how_a_model_was_made_is_known_only_to_sources_and_artifacts():
    """No `origin`, `finished_run` or `TINY` comparison, no `.run is None` outside `sources` and `artifacts`, and
    no `self.__dict__` anywhere: a cache is a named object, a kind of model is a class."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        hits = made_how(path.read_text(encoding="utf-8"))
        if name in MADE_HERE:
            hits = [h for h in hits if "__dict__" in h]
        if hits:
            found[name] = hits
    assert found == {}
    bent = 'if source.origin == "base": pass\nif model.base != TINY: pass\nif s.run is None: x = self.__dict__'
    assert made_how(bent) == [
        "line 1: compares origin",
        "line 2: compares TINY",
        "line 3: .run is None",
        "line 3: __dict__",
    ], "the check can fail"


def private_reaches(source: str) -> list[str]:
    """Private names of sft_eval a test reaches: `from sft_eval... import _x`, `module._x`, a monkeypatch of
    `"_x"` on an sft_eval module."""
    tree = ast.parse(source)
    modules = {
        alias.asname or alias.name.split(".")[-1]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
        if (getattr(node, "module", None) or alias.name).split(".")[0] == "sft_eval"
    } | {"sft_eval"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sft_eval":
            found += [f"line {node.lineno}: {a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("setattr") and len(node.args) >= 2:
            target, attribute = node.args[0], node.args[1]
            if (
                isinstance(attribute, ast.Constant)
                and str(attribute.value).startswith("_")
                and ast.unparse(target).split(".")[0] in modules
            ):
                found.append(f"line {node.lineno}: {ast.unparse(target)}.{attribute.value}")
    return found


def test_the_tests_reach_no_private_names_of_the_package():
    """What the tests use is what users may use: a private name a test needs is made public instead."""
    root = PACKAGE.parent
    files = [*root.glob("tests/**/*.py"), *root.glob("suites/**/*.py"), root / "conftest.py"]
    found = {str(p.relative_to(root)): hits for p in sorted(files) if (hits := private_reaches(p.read_text()))}
    assert found == {}
    bent = "from sft_eval.data import _x\nimport sft_eval.data\nsft_eval.data._y\nm.setattr(sft_eval.data, '_z', 1)"
    assert private_reaches(bent) == ["line 1: _x", "line 3: sft_eval.data._y", "line 4: sft_eval.data._z"]
