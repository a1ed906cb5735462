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

Answers are cached by `CachedAnswers`, a wrapper around any backend (as lm-eval's `CachingLM` wraps any `LM`).
A backend says what determines its answers with `identity()` (a JSON-able dict; None or no method: its answers
are not cached), and may take an `on_answer(index, answer)` hook, which the wrapper sets to store each answer as
it arrives, so a run that fails half-way resumes with only the questions not yet answered:

    class EchoBackend:
        on_answer = None
        def identity(self): return {"backend": "echo", "version": 1}
        def answer(self, questions, settings): ...
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from sft_eval.backends import (
    ENTRY_POINT_GROUP,
    METHODS,
    backend_factory,
    backend_names,
    check_backend,
    interface_problem,
    register_backend,
)
from sft_eval.cache import AnswerCache, cache_key
from sft_eval.errors import SftEvalError
from sft_eval.records import Answer, Conversation, ToolAnswer, cached_answer, cached_tool_answer

__all__ = [
    "ENTRY_POINT_GROUP",
    "Answer",
    "Backend",
    "BackendBase",
    "CachedAnswers",
    "GenerationSettings",
    "LocalBackend",
    "ServedBackend",
    "ToolAnswer",
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
    """The model a backend answers for: `which` is "base", "tuned" or "baseline" (`[model] baseline`); `load()`
    gives (model, tokenizer) in this process, loaded only when a backend asks (a served model never is).
    `model_identity()` says what those weights, tokenizer, template and device are (computed only when asked: a
    served run's may not be here); `run` ties a served model's answers to the run folder the recipe names, when it
    names one."""

    which: str
    load: Callable[[], tuple[Any, Any]]
    model_identity: Callable[[], Mapping[str, Any]] | None = None
    run: Mapping[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """Everything the rest of sft-eval asks of a backend, declared once. A backend built from a registered factory
    that lacks `answer` is refused in one line; the others have defaults (`BackendBase`'s), so a backend with
    `answer` alone still works: its answers are not cached, it is not in process, it answers no tool items."""

    in_process: bool  # its model's weights are in this process: teacher-forced signals can score them
    on_answer: Callable[[int, Any], None] | None  # set by `CachedAnswers`: each answer stored as it arrives

    def identity(self) -> dict[str, Any] | None:
        """What determines its answers (JSON-able); None: its answers are not cached."""
        ...

    def answer(self, questions: list[str], settings: GenerationSettings) -> list[Answer]:
        """One answer per question, in order."""
        ...

    def answer_tools(self, items: Sequence[Conversation], settings: GenerationSettings) -> list[ToolAnswer]:
        """One answer per conversation (a tool item offered its tools, a judge's prompt), in order."""
        ...


MEMBERS = ("in_process", "on_answer", *METHODS)  # what `Backend` declares


class BackendBase:
    """The defaults of the `Backend` interface, for a backend to subclass: not in process, not cached, no tool
    items."""

    in_process = False
    on_answer: Callable[[int, Any], None] | None = None

    def identity(self) -> dict[str, Any] | None:
        return None

    def answer(self, questions: list[str], settings: GenerationSettings) -> list[Answer]:
        raise NotImplementedError

    def answer_tools(self, items: Sequence[Conversation], settings: GenerationSettings) -> list[ToolAnswer]:
        raise SftEvalError(
            f"eval.tool_items: the backend {type(self).__name__} answers questions but not tool items (it has no "
            "`answer_tools(items, settings)`)"
        )


class _Completed(BackendBase):
    """A backend that declares only part of the interface, with the defaults for the rest."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.in_process = bool(getattr(inner, "in_process", False))

    def identity(self) -> dict[str, Any] | None:
        return self.inner.identity() if hasattr(self.inner, "identity") else None

    def answer(self, questions: list[str], settings: GenerationSettings) -> list[Answer]:
        if hasattr(self.inner, "on_answer"):
            self.inner.on_answer = self.on_answer
        answers: list[Answer] = self.inner.answer(questions, settings)
        return answers

    def answer_tools(self, items: Sequence[Conversation], settings: GenerationSettings) -> list[ToolAnswer]:
        if hasattr(self.inner, "answer_tools"):
            answers: list[ToolAnswer] = self.inner.answer_tools(items, settings)
            return answers
        raise SftEvalError(
            f"eval.tool_items: the backend {type(self.inner).__name__} answers questions but not tool items (it has "
            "no `answer_tools(items, settings)`)"
        )


def complete(backend: Any, name: str) -> Backend:
    """`backend` (built by `eval.backend = name`'s factory) with the whole `Backend` interface: as it is when it
    has every member, else with the defaults for what it lacks; refused in one line when it cannot answer."""
    problem = interface_problem(backend)
    if problem:
        raise SftEvalError(f"eval.backend: the backend {name!r} built {type(backend).__name__}, and {problem}")
    if all(hasattr(backend, m) for m in MEMBERS):
        return cast(Backend, backend)  # every member there, checked above
    return _Completed(backend)


Cached = TypeVar("Cached", Answer, ToolAnswer)


class CachedAnswers:
    """Any backend's answers through the answer cache: each answer is stored under a key of the backend's
    `identity()`, the generation settings that change an answer and the question (or the tool item's conversation
    and tools), so a rerun asks the backend only for what is missing (and builds nothing when nothing is).
    `store=None`, or a backend with no identity: every question is asked. `counts` says how many came from the
    cache and how many were generated."""

    def __init__(self, backend: Backend, store: AnswerCache | None):
        self.backend = backend
        self.identity = backend.identity() if store is not None else None
        self.store = store if self.identity is not None else None
        self.counts = {"cached": 0, "generated": 0}

    def _keys(self, settings: GenerationSettings, asked: list[dict[str, Any]]) -> list[str]:
        if self.identity is None:
            return [""] * len(asked)  # not cached: nothing is looked up or stored
        shared = {k: v for k, v in dataclasses.asdict(settings).items() if k != "batch_size"}  # speed, not content
        return [cache_key("answer", {**self.identity, **shared, **a}) for a in asked]

    def answer(self, questions: list[str], settings: GenerationSettings) -> list[Answer]:
        keys = self._keys(settings, [{"question": q} for q in questions])
        # an entry for another question, with a field missing or of the wrong type, is asked again
        found = [
            cached_answer(self.store.get(key), q) if self.store else None
            for key, q in zip(keys, questions, strict=True)
        ]
        return self._fill(keys, found, lambda missing: self.backend.answer([questions[i] for i in missing], settings))

    def answer_tools(self, items: Sequence[Conversation], settings: GenerationSettings) -> list[ToolAnswer]:
        """Each conversation's answer, from the cache where it is (keyed by its messages and tools), else asked of
        the backend and stored."""
        keys = self._keys(settings, [{"tool_item": {"messages": i.messages, "tools": i.tools}} for i in items])
        store = self.store
        found = [
            cached_tool_answer(store.get(key), i.question) if store else None
            for key, i in zip(keys, items, strict=True)
        ]
        return self._fill(keys, found, lambda missing: self.backend.answer_tools([items[i] for i in missing], settings))

    def _fill(
        self, keys: list[str], found: list[Cached | None], ask: Callable[[list[int]], list[Cached]]
    ) -> list[Cached]:
        """`found` (None where the cache has nothing) completed by `ask(the missing indices)`, each new answer stored
        as it arrives (the backend's `on_answer` hook, from any thread): a run that stops half-way resumes."""
        missing = [i for i, answer in enumerate(found) if answer is None]
        self.counts = {"cached": len(found) - len(missing), "generated": len(missing)}
        if not missing:
            return found  # type: ignore[return-value]  # every one was found
        store, lock, stored = self.store, threading.Lock(), set()

        def keep(index: int, answer: Cached) -> None:
            with lock:
                if store is not None and 0 <= index < len(missing) and index not in stored:
                    store.put(keys[missing[index]], answer.to_dict())
                    stored.add(index)

        self.backend.on_answer = keep
        try:
            fresh = self._checked(ask(missing), len(missing))
        finally:
            self.backend.on_answer = None
        for index, answer in enumerate(fresh):
            keep(index, answer)
            found[missing[index]] = answer
        return found  # type: ignore[return-value]  # every one is filled

    @staticmethod
    def _checked(answers: list[Any], asked: int) -> list[Any]:
        if len(answers) != asked:
            raise SftEvalError(f"eval.backend: {asked} questions but {len(answers)} answers")
        return answers


def backend_for(target: Target, eval_settings: Any) -> Backend:
    """The recipe's backend (`eval_settings.backend`) for `target`, with the whole interface."""
    check_backend(eval_settings.backend)
    name = eval_settings.backend
    return complete(backend_factory(name)(target, eval_settings), name)


class LocalBackend(BackendBase):
    """Batched greedy generation in this process (`sft_eval.generation.local.generate`): with a model and
    tokenizer, or with a `target` whose model is loaded on the first question (and let go with the backend)."""

    in_process = True  # its model's weights are here: teacher-forced signals can score them

    def __init__(
        self, model: Any = None, tokenizer: Any = None, *, target: Target | None = None, section: str = "eval"
    ):
        self.model, self.tokenizer, self.target = model, tokenizer, target
        self.section = section  # the recipe section its errors name (`eval.max_new_tokens`, `judge.max_new_tokens`)

    def identity(self) -> dict[str, Any] | None:
        """The target's weights, tokenizer, template and device; None without a target (not cached)."""
        if self.target is None or self.target.model_identity is None:
            return None
        return {"backend": "transformers", **self.target.model_identity()}

    def _loaded(self) -> tuple[Any, Any]:
        if self.model is None and self.target is not None:
            self.model, self.tokenizer = self.target.load()
        return self.model, self.tokenizer

    def answer(self, questions: list[str], settings: GenerationSettings) -> list[Answer]:
        from sft_eval.generation.local import generate

        model, tokenizer = self._loaded()
        return generate(
            model,
            tokenizer,
            questions,
            system_message=settings.system_message,
            max_new_tokens=settings.max_new_tokens,
            enable_thinking=settings.enable_thinking,
            batch_size=settings.batch_size,
        )

    def answer_tools(self, items: Sequence[Conversation], settings: GenerationSettings) -> list[ToolAnswer]:
        """Each item's conversation and tools rendered with the template, answered greedily in batches; the raw
        text is parsed afterwards with the template's response parser (`toolcalls`)."""
        from sft_eval.generation.local import generate_prompts, tool_prompt

        model, tokenizer = self._loaded()
        prompts = [tool_prompt(tokenizer, item, enable_thinking=settings.enable_thinking) for item in items]
        answers = generate_prompts(
            model,
            tokenizer,
            prompts,
            [item.question for item in items],
            max_new_tokens=settings.max_new_tokens,
            batch_size=settings.batch_size,
            section=self.section,
        )
        return [ToolAnswer(answer) for answer in answers]


class ServedBackend(BackendBase):
    """Chat completions from an OpenAI-compatible server, `batch_size` requests in flight, each transient failure
    (connection reset, timeout, 408/409/429, 5xx) retried up to `max_retries` times with the client's backoff."""

    in_process = False  # the weights are the server's

    def __init__(
        self,
        base_url: str,
        model: str | None,
        max_retries: int = 4,
        timeout: float = 60.0,
        run: Mapping[str, Any] | None = None,
        section: str = "eval",
    ):
        self.base_url, self.model, self.max_retries, self.timeout = base_url, model, max_retries, timeout
        self.run = dict(run or {})
        self.section = section  # the recipe section its errors name (`eval.base_url`, `judge.base_url`)

    def identity(self) -> dict[str, Any]:
        """A server is known by its URL and the model's name there; the run folder the recipe names, when it
        names one, ties the answers to those weights too (a retrained run writes new files)."""
        return {"backend": "openai", "server": self.base_url, "model": self.model, **self.run}

    def _asked(self, settings: GenerationSettings) -> dict[str, Any]:
        return {
            "system_message": settings.system_message,
            "max_new_tokens": settings.max_new_tokens,
            "enable_thinking": settings.enable_thinking,
            "concurrency": settings.batch_size,
            "max_retries": self.max_retries,
            "timeout": self.timeout,
            "section": self.section,
        }

    def answer(self, questions: list[str], settings: GenerationSettings) -> list[Answer]:
        from sft_eval.generation.served import generate_served

        return generate_served(self.base_url, self.model, questions, on_answer=self.on_answer, **self._asked(settings))

    def answer_tools(self, items: Sequence[Conversation], settings: GenerationSettings) -> list[ToolAnswer]:
        """Each item's conversation sent with its `tools`; the server renders and parses the call itself and
        returns it as the message's `tool_calls`."""
        from sft_eval.generation.served import generate_served

        asked = {**self._asked(settings), "system_message": None}  # an item's conversation is sent as it is
        return generate_served(self.base_url, self.model, items, on_answer=self.on_answer, **asked)  # type: ignore[return-value]


def local_backend(target: Target, eval_settings: Any) -> Backend:
    """`eval.backend = "transformers"`: generate in this process (the model loaded on the first question)."""
    return LocalBackend(target=target)


def openai_backend(target: Target, eval_settings: Any) -> Backend:
    """The server serves the tuned model; the base model too when `eval.base_model` names it, else the base is
    asked in this process, as `model.baseline` always is."""
    if target.which == "baseline" or (target.which == "base" and eval_settings.base_model is None):
        return local_backend(target, eval_settings)  # a baseline's weights are a folder here, not a served model
    name = eval_settings.model if target.which == "tuned" else eval_settings.base_model
    return ServedBackend(
        str(eval_settings.base_url),
        name,
        max_retries=eval_settings.max_retries,
        timeout=eval_settings.request_timeout,
        run=target.run if target.which == "tuned" else None,
    )


def __getattr__(name: str) -> Any:
    """The engines' functions, as before the package split (`from sft_eval.generation import generate`)."""
    import importlib

    for module in ("sft_eval.generation.local", "sft_eval.generation.served"):
        engine = importlib.import_module(module)
        if hasattr(engine, name):
            return getattr(engine, name)
    raise AttributeError(f"module 'sft_eval.generation' has no attribute {name!r}")
