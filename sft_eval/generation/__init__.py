"""Generation: a backend answers the evaluation questions for one model, base or tuned.

A backend is anything with `answer(questions, settings) -> list[Answer]` (one `Answer` per question, in order).
Two ship: `transformers` (this process, batched greedy `generate`) and `openai` (an OpenAI-compatible server).
`eval.backend` in a recipe names one; `register_backend(name, factory)` (or an entry point in the
`sft_eval.backends` group) adds another, and the recipe can name it at once:

    from sft_eval.generation import register_backend

    register_backend("echo", lambda target, settings: EchoBackend())

A factory gets the `Target` (which model, and how to load it in this process when that is wanted) and the
recipe's `[eval]` settings, and returns the backend for that model. Nothing here imports torch: the shipped
backends import their engines when they are built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sft_eval.backends import ENTRY_POINT_GROUP, backend_factory, backend_names, register_backend
from sft_eval.errors import SftEvalError
from sft_eval.records import Answer

__all__ = [
    "ENTRY_POINT_GROUP",
    "Answer",
    "Backend",
    "GenerationSettings",
    "LocalBackend",
    "ServedBackend",
    "Target",
    "backend_for",
    "backend_names",
    "check_backend",
    "register_backend",
]


@dataclass(frozen=True)
class GenerationSettings:
    """How every backend is asked: the recipe's `[eval]` generation settings, as plain data."""

    system_message: str | None = None
    max_new_tokens: int = 100
    enable_thinking: bool = False
    batch_size: int = 32  # prompts per batch in this process; requests in flight for a server

    @classmethod
    def from_eval(cls, settings: Any) -> GenerationSettings:
        return cls(
            system_message=settings.system_message or None,
            max_new_tokens=settings.max_new_tokens,
            enable_thinking=settings.enable_thinking,
            batch_size=settings.batch_size,
        )


@dataclass(frozen=True)
class Target:
    """The model a backend answers for: `which` is "base" or "tuned"; `load()` gives (model, tokenizer) in this
    process, loaded only when a backend asks (a served model never is)."""

    which: str
    load: Callable[[], tuple[Any, Any]]


class Backend(Protocol):
    def answer(self, questions: list[str], settings: GenerationSettings) -> list[Answer]: ...


def check_backend(name: str, where: str = "recipe") -> None:
    """Bad input: a recipe naming a backend nobody registered (`load_recipe` checks this too)."""
    if name not in backend_names():
        raise SftEvalError(f"{where}: `eval.backend` must be one of {', '.join(backend_names())}, not {name!r}")


def backend_for(target: Target, eval_settings: Any) -> Backend:
    """The recipe's backend (`eval_settings.backend`) for `target`."""
    check_backend(eval_settings.backend)
    return backend_factory(eval_settings.backend)(target, eval_settings)


class LocalBackend:
    """Batched greedy generation in this process (`sft_eval.generation.local.generate`)."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model, self.tokenizer = model, tokenizer

    def answer(self, questions: list[str], settings: GenerationSettings) -> list[Answer]:
        from sft_eval.generation.local import generate

        return generate(
            self.model,
            self.tokenizer,
            questions,
            system_message=settings.system_message,
            max_new_tokens=settings.max_new_tokens,
            enable_thinking=settings.enable_thinking,
            batch_size=settings.batch_size,
        )


class ServedBackend:
    """Chat completions from an OpenAI-compatible server, `batch_size` requests in flight, each transient failure
    (connection reset, timeout, 408/409/429, 5xx) retried up to `max_retries` times with the client's backoff."""

    def __init__(self, base_url: str, model: str | None, max_retries: int = 4, timeout: float = 60.0):
        self.base_url, self.model, self.max_retries, self.timeout = base_url, model, max_retries, timeout

    def answer(self, questions: list[str], settings: GenerationSettings) -> list[Answer]:
        from sft_eval.generation.served import generate_served

        return generate_served(
            self.base_url,
            self.model,
            questions,
            system_message=settings.system_message,
            max_new_tokens=settings.max_new_tokens,
            enable_thinking=settings.enable_thinking,
            concurrency=settings.batch_size,
            max_retries=self.max_retries,
            timeout=self.timeout,
        )


def local_backend(target: Target, eval_settings: Any) -> Backend:
    """`eval.backend = "transformers"`: generate in this process."""
    return LocalBackend(*target.load())


def openai_backend(target: Target, eval_settings: Any) -> Backend:
    """The server serves the tuned model; the base model too when `eval.base_model` names it, else the base is
    asked in this process."""
    if target.which == "base" and eval_settings.base_model is None:
        return local_backend(target, eval_settings)
    name = eval_settings.model if target.which == "tuned" else eval_settings.base_model
    return ServedBackend(
        str(eval_settings.base_url),
        name,
        max_retries=eval_settings.max_retries,
        timeout=eval_settings.request_timeout,
    )


def __getattr__(name: str) -> Any:
    """The engines' functions, as before the package split (`from sft_eval.generation import generate`)."""
    import importlib

    for module in ("sft_eval.generation.local", "sft_eval.generation.served"):
        engine = importlib.import_module(module)
        if hasattr(engine, name):
            return getattr(engine, name)
    raise AttributeError(f"module 'sft_eval.generation' has no attribute {name!r}")
