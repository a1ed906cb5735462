"""The registry of generation backends: names a recipe's `eval.backend` may take, and what builds each.

It sits below every stage so the recipe can be checked against it at load. The shipped backends are named by
import path (`module:function`) and imported only when a pipeline builds one; `register_backend` adds another
(a factory, or an import path), as does an entry point in the `sft_eval.backends` group. The interface a backend
implements is in `sft_eval.generation`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from sft_eval.registry import Registry

ENTRY_POINT_GROUP = "sft_eval.backends"

BACKENDS = Registry(
    "backend",
    builtin={"transformers": "sft_eval.generation:local_backend", "openai": "sft_eval.generation:openai_backend"},
    entry_point_group=ENTRY_POINT_GROUP,
)


METHODS = ("identity", "answer", "answer_tools")  # the methods of `generation.Backend`


def interface_problem(backend: Any) -> str:
    """What `backend` (an instance or a class) lacks of the `Backend` interface, or declares wrongly; empty when
    it can be used (only `answer` is required)."""
    if not callable(getattr(backend, "answer", None)):
        return "it has no `answer(questions, settings)` method"
    wrong = [m for m in METHODS if hasattr(backend, m) and not callable(getattr(backend, m))]
    if wrong:
        return f"its {', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not a method"
    if hasattr(backend, "in_process") and not isinstance(backend.in_process, (bool, property)):
        return f"its in_process is {type(backend.in_process).__name__}, not a bool"
    return ""


def register_backend(name: str, factory: Callable[..., Any] | str) -> None:
    """Make `eval.backend = name` build its backend with `factory(target, eval_settings)` (`factory` may be an
    import path, `"package.module:function"`, or the backend class itself). A name already taken (a shipped
    backend's, an installed package's, another registration's) is a ValueError naming both owners; a class that is
    no backend (no `answer`, or a member that is not what `generation.Backend` declares) is a ValueError naming
    what is wrong. A function's backend is checked when it is built."""
    if isinstance(factory, type):
        problem = interface_problem(factory)
        if problem:
            raise ValueError(f"backend {name!r}: {factory.__name__} is not a backend: {problem}")
    BACKENDS.register(name, factory)


def backend_names() -> list[str]:
    return BACKENDS.names()  # shipped ones first, then in the order registered


def check_backend(name: str, where: str = "recipe") -> None:
    """Bad input: a recipe naming a backend nobody registered (one line, with the close match)."""
    BACKENDS.check(name, where, "eval.backend")


def backend_factory(name: str) -> Callable[..., Any]:
    """The factory registered as `name` (which `backend_names()` lists)."""
    factory: Callable[..., Any] | str = BACKENDS[name]
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        imported: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
        return imported
    return factory
