"""One registry type for what users add to sft-eval: generation backends, audit checks and report sections.

Like lm-eval's `Registry`, one rule for all three: a name is registered once. A clash (with a built-in name, an
installed package's entry point, or another registration) is a `ValueError` naming both owners, so two plugins
never silently replace one another or a shipped backend. An unknown name is one line with the known names and
the close matches. A registry with an entry-point group also reads installed packages' entry points, once, the
first time its names are needed.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any

from sft_eval.errors import SftEvalError

BUILT_IN = "sft-eval (built in)"


class NameTaken(SftEvalError, ValueError):
    """A name registered twice: a ValueError for the code that registers it, and one line with exit 2 where it
    surfaces in the CLI (two installed packages' entry points taking one name)."""


class Registry:
    """Names of one `kind` ("backend", "audit check", ...), each with a value and the owner that registered it.

    `builtin` are sft-eval's own entries; `reserved` names (mapped to why) cannot be registered but hold no value
    here (the built-in finding ids, the built-in report sections)."""

    def __init__(
        self,
        kind: str,
        *,
        builtin: Mapping[str, Any] | None = None,
        reserved: Mapping[str, str] | None = None,
        entry_point_group: str | None = None,
    ):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._reserved = dict(reserved or {})
        self._items: dict[str, tuple[Any, str]] = {name: (value, BUILT_IN) for name, value in (builtin or {}).items()}
        self._discovered = entry_point_group is None

    def register(self, name: str, value: Any, *, owner: str | None = None) -> None:
        """Add `name`; `owner` (default: the calling module) is named if anyone else later takes the name."""
        self._discover()
        self._add(name, value, owner or _caller())

    def _add(self, name: str, value: Any, owner: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a {self.kind} needs a name, not {name!r}")
        taken = self._reserved.get(name) or (self._items[name][1] if name in self._items else None)
        if taken is not None:
            raise NameTaken(f"{self.kind} {name!r} is taken by {taken}; {owner} cannot take it too: choose another")
        self._items[name] = (value, owner)

    def unregister(self, name: str) -> None:
        """Remove a registered (not a built-in) name."""
        if name in self._items and self._items[name][1] != BUILT_IN:
            del self._items[name]

    def _discover(self) -> None:
        """Installed packages' entries (the entry-point group), read once: scanning every distribution's metadata
        is not free."""
        if self._discovered:
            return
        self._discovered = True
        for point in entry_points(group=self.entry_point_group or ""):
            owner = f"the entry point {point.value}" + (f" of {point.dist.name}" if point.dist else "")
            self._add(point.name, point.value, owner)

    def names(self) -> list[str]:
        """Every name, built-in ones first, then in the order registered."""
        self._discover()
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __getitem__(self, name: str) -> Any:
        self._discover()
        return self._items[name][0]

    def owner(self, name: str) -> str:
        self._discover()
        return self._items[name][1]

    def registered(self) -> dict[str, Any]:
        """The names users registered (not the built-in ones), with their values."""
        self._discover()
        return {name: value for name, (value, owner) in self._items.items() if owner != BUILT_IN}

    def values(self) -> list[Any]:
        self._discover()
        return [value for value, _ in self._items.values()]

    def check(self, name: str, where: str, key: str) -> None:
        """Bad input when `name` (the value of `key` in `where`) is not registered: one line with the known names
        and, where one is close, what was probably meant."""
        if name in self:
            return
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SftEvalError(f"{where}: `{key}` must be one of {', '.join(self.names())}, not {name!r}{hint}")

    def copy(self) -> Registry:
        """An independent registry with the same entries (a test registers into it and throws it away)."""
        other = Registry(self.kind, reserved=self._reserved, entry_point_group=self.entry_point_group)
        other._items = dict(self._items)
        other._discovered = self._discovered
        return other


def _caller() -> str:
    """The module that called `register` through a module's own `register_*` function."""
    frame = sys._getframe(3)  # _caller <- Registry.register <- register_backend/check/section <- the caller
    return frame.f_globals.get("__name__", "an unknown module")
