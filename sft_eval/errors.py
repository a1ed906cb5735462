"""The one exception type users see: a bad recipe, file or folder, said in one line."""

from __future__ import annotations


class SftEvalError(Exception):
    """Bad input: what is wrong, where (file, key, line) and what to do. The CLI turns it into exit 2."""


class PartlyAnswered(SftEvalError):
    """A backend that answered some questions and not others: `answered` maps a question's position in the list
    it was asked to its `Answer`. The answer cache keeps answers through the backend's `on_answer` hook as they
    arrive; this says, in one line, what failed."""

    def __init__(self, message: str, answered: dict[int, object]):
        super().__init__(message)
        self.answered = answered
