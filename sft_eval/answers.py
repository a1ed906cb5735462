"""Every model's answers, through the recipe's backend and the answer cache: the questions' and the tool items'.

`Answers` holds, per source, the backend the recipe names (built when asked, its model loaded on the first
question it must generate) and the models a suite asked to hold (`hold`), so that generating the base's and the
tuned model's answers, or a sweep's checkpoints', keeps one model in memory at a time unless one is held anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sft_eval.cache import AnswerCache, source_digest
from sft_eval.errors import SftEvalError
from sft_eval.generation import Backend, CachedAnswers, GenerationSettings, Target, backend_for
from sft_eval.inputs import Inputs
from sft_eval.recipe import Recipe
from sft_eval.records import Answer
from sft_eval.sources import ModelSource
from sft_eval.toolcalls import ToolRecord, parse_answer, response_parser, score_item, tool_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from sft_eval.artifacts import Artifacts


class Answers:
    """The answers of the `sources` a recipe names, each asked once per pipeline (the answer cache keeps them
    across runs). `use_cache=False`: every answer generated again and none stored (`--no-answer-cache`)."""

    def __init__(
        self,
        recipe: Recipe,
        inputs: Inputs,
        artifacts: Artifacts,
        sources: dict[str, ModelSource],
        *,
        use_cache: bool = True,
    ):
        self.recipe, self.inputs, self.artifacts, self.sources = recipe, inputs, artifacts, sources
        self.use_cache = use_cache
        self.counts: dict[str, dict[str, int]] = {}  # per model: answers read from the cache, generated
        self.held: dict[str, PreTrainedModel] = {}  # models a caller holds (a suite's fixture): not loaded again
        self._tool_records: dict[str, list[ToolRecord]] = {}

    @property
    def tokenizer(self) -> Any:
        """The recipe's tokenizer (the one every model here is prompted with)."""
        return self.artifacts.tokenizer

    @property
    def settings(self) -> GenerationSettings:
        return GenerationSettings.from_eval(self.recipe.eval)

    def hold(self, which: str) -> PreTrainedModel:
        """The `which` model, loaded once and kept: what a suite's `tuned_model` fixture holds."""
        if which not in self.held:
            self.held[which] = self.sources[which].load()
        return self.held[which]

    def model(self, which: str) -> PreTrainedModel:
        """The `which` model: the one held, else a fresh copy the caller lets go."""
        held = self.held.get(which)
        return held if held is not None else self.sources[which].load()

    def backend(self, which: str) -> Backend:
        """The recipe's backend for the `which` model; nothing is loaded until it is asked a question."""
        source = self.sources[which]
        target = Target(
            which,
            lambda: (self.model(which), self.artifacts.tokenizer),
            model_identity=lambda: self.model_identity(which),
            run={"run": source_digest(source.named)} if source.named else {},
        )
        return backend_for(target, self.recipe.eval)

    def model_identity(self, which: str) -> dict[str, Any]:
        """The `which` model as this process prompts it: its weights (the cache entry's key, or the folder's
        digest), the tokenizer and template, the device."""
        return {
            **self.sources[which].identity(),
            "tokenizer": self.artifacts.tokenizer_entry[1],
            "chat_template": self.artifacts.tokenizer.chat_template,
            "device": self.artifacts.device.type,
        }

    def identity(self, which: str) -> dict[str, Any] | None:
        """What determines the `which` model's answers besides the question and settings, as its backend says:
        None for a backend that says nothing (its answers are not cached)."""
        return self.backend(which).identity()

    def in_process(self, which: str) -> bool:
        """The `which` model's answers come from weights in this process (so teacher-forced signals can score)."""
        return self.backend(which).in_process

    @property
    def store(self) -> AnswerCache | None:
        """Where answers (and a judge's replies) are kept: the fixture cache's answers; None with the cache off."""
        return self.artifacts.cache.answers if self.use_cache else None

    def _cached(self, which: str) -> CachedAnswers:
        return CachedAnswers(self.backend(which), self.store)

    def answers(self, which: str) -> list[Answer]:
        """The `which` source's answers ("base", "tuned", "baseline") to the recipe's questions, each kept under a
        key of the backend's identity, the generation settings and the question, so a rerun generates only what
        changed, builds no model when nothing did, and resumes a run that failed half-way."""
        cached = self._cached(which)
        answers = cached.answer([q.question for q in self.inputs.questions], self.settings)
        self.counts[which] = cached.counts
        return answers

    def tool_records(self, which: str) -> list[ToolRecord]:
        """The `which` model's answers to the recipe's `eval.tool_items`, through its backend and the answer cache
        like every answer: each asked as its conversation with its tools; a call parsed by the server (served) or
        with the template's response parser (in process), then scored. Once per pipeline and model."""
        if which not in self._tool_records:
            self._tool_records[which] = self._ask_tool_items(which)
        return self._tool_records[which]

    def _ask_tool_items(self, which: str) -> list[ToolRecord]:
        items, tokenizer = self.inputs.tool_items, self.artifacts.tokenizer
        cached = self._cached(which)
        parser, why = response_parser(tokenizer)
        if parser is None and cached.backend.in_process and any(i.tools or i.expected_call for i in items):
            raise SftEvalError(f"eval.tool_items: {why}")
        replies = cached.answer_tools(items, self.settings)
        self.counts[f"{which} tool items"] = cached.counts
        thinking = self.recipe.eval.enable_thinking
        records = []
        for item, reply in zip(items, replies, strict=True):
            prompt = tool_prompt(tokenizer, item, enable_thinking=thinking)
            parsed = reply.message if reply.message is not None else parse_answer(parser, prompt, reply.answer)
            records.append(ToolRecord(item, prompt, reply.answer, parsed, score_item(item, parsed)))
        return records
