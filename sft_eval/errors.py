"""The one exception type users see: a bad recipe, file or folder, said in one line."""

from __future__ import annotations


class SftEvalError(Exception):
    """Bad input: what is wrong, where (file, key, line) and what to do. The CLI turns it into exit 2."""
