"""The registry of generation backends: names a recipe's `eval.backend` may take, and what builds each.

It sits below every stage so the recipe can be checked against it at load. The shipped backends are named by
import path (`module:function`) and imported only when a pipeline builds one; `register_backend` adds another
(a factory, or an import path), as does an entry point in the `sft_eval.backends` group. The interface a backend
implements is in `sft_eval.generation`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "sft_eval.backends"

_BACKENDS: dict[str, Callable[..., Any] | str] = {
    "transformers": "sft_eval.generation:local_backend",
    "openai": "sft_eval.generation:openai_backend",
}


def register_backend(name: str, factory: Callable[..., Any] | str) -> None:
    """Make `eval.backend = name` build its backend with `factory(target, eval_settings)` (`factory` may be an
    import path, `"package.module:function"`)."""
    _BACKENDS[name] = factory


def backend_names() -> list[str]:
    _discover()
    return list(_BACKENDS)  # shipped ones first, then in the order registered


@functools.cache
def _discover() -> None:
    """Installed packages' backends (entry points), read once per process: scanning every distribution's metadata
    is not free, and the recipe, the pipeline and each backend lookup ask for the names."""
    for point in entry_points(group=ENTRY_POINT_GROUP):
        _BACKENDS.setdefault(point.name, point.value)


def backend_factory(name: str) -> Callable[..., Any]:
    """The factory registered as `name` (which `backend_names()` lists)."""
    factory = _BACKENDS[name]
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
    return factory
