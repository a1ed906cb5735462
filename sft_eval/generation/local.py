"""Generation: answers to the evaluation questions, in left-padded batches, each cut at its own stop token.

The lesson asks one question at a time with `model.generate`; this asks many at once. Greedy decoding with
left padding gives the same tokens as one at a time (the attention mask hides the pads and positions start
after them), so batching changes the speed, not the answers.
"""

from __future__ import annotations

import copy
import functools
import time
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sft_eval.chat import conversation, render, render_prompt
from sft_eval.console import interactive
from sft_eval.errors import SftEvalError
from sft_eval.records import Answer

if TYPE_CHECKING:
    from sft_eval.records import Conversation


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Tokens generation stops at: the tokenizer's eos and the model's generation_config eos ids."""
    configured = model.generation_config.eos_token_id
    configured = [configured] if isinstance(configured, int) else list(configured or [])
    return [t for t in dict.fromkeys([tokenizer.eos_token_id, *configured]) if t is not None]


def check_context(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    section: str = "eval",
) -> None:
    """Bad input, said before any generation: a budget of new tokens or a prompt the model's context cannot hold
    (a huge `eval.max_new_tokens` and a base model that never stops would otherwise run for hours)."""
    context = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(context, int) or context < 1:
        return  # no fixed context (some architectures): nothing to hold the budget against
    if max_new_tokens >= context:
        raise SftEvalError(
            f"{section}.max_new_tokens = {max_new_tokens} does not fit the model's context of {context} tokens "
            "(max_position_embeddings); set it below that"
        )
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    longest = max(range(len(prompts)), key=lengths.__getitem__, default=None)
    if longest is not None and lengths[longest] + max_new_tokens > context:
        raise SftEvalError(
            f"{section}: question {longest + 1} renders to {lengths[longest]} tokens, which with "
            f"{section}.max_new_tokens = {max_new_tokens} exceeds the model's context of {context} tokens; shorten it "
            "or lower max_new_tokens"
        )


@torch.inference_mode()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    *,
    system_message: str | None = None,
    max_new_tokens: int = 100,
    enable_thinking: bool = False,
    batch_size: int = 32,
    deadline: float | None = None,
) -> list[Answer]:
    """Greedy answers to `questions`, rendered with the tokenizer's chat template, in input order (with a
    `deadline`, those of the batches begun before it: see `generate_prompts`)."""
    prompts = [
        render_prompt(tokenizer, conversation(q, system_message), enable_thinking=enable_thinking) for q in questions
    ]
    return generate_prompts(
        model, tokenizer, prompts, questions, max_new_tokens=max_new_tokens, batch_size=batch_size, deadline=deadline
    )


def tool_prompt(tokenizer: PreTrainedTokenizerBase, item: Conversation, *, enable_thinking: bool = False) -> str:
    """The item's conversation and tools as the template serves them, with the generation prompt."""
    return render(
        tokenizer,
        copy.deepcopy(item.messages),
        add_generation_prompt=True,
        tools=copy.deepcopy(item.tools),
        enable_thinking=enable_thinking,
    )


def generate_prompts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    questions: list[str],
    *,
    max_new_tokens: int = 100,
    batch_size: int = 32,
    section: str = "eval",
    deadline: float | None = None,
) -> list[Answer]:
    """Greedy answers to prompts already rendered (a conversation, tools and all), each recorded under its
    question, in input order. With a `deadline` (`time.perf_counter()`), no batch after the first is begun once it
    has passed, and only the prompts answered are returned (still in input order)."""
    stops = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    check_context(model, tokenizer, prompts, max_new_tokens, section)
    # Similar lengths share a batch: less padding, same answers.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: dict[int, Answer] = {}
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="generating", unit="batch", disable=not interactive() or len(starts) < 2):
        if start and deadline is not None and time.perf_counter() > deadline:
            break  # the first batch is always asked: a budgeted evaluation says something
        chunk = order[start : start + batch_size]
        batch = left_padded([prompts[i] for i in chunk], tokenizer, pad_id, model.device)
        output = model.generate(  # type: ignore[operator]  # GenerationMixin.generate, not a submodule
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=pad_id,
        )
        new = output[:, batch["input_ids"].shape[1] :].tolist()
        for i, ids in zip(chunk, new, strict=True):
            answers[i] = _answer(questions[i], ids, stops, tokenizer)
    return [answers[i] for i in range(len(prompts)) if i in answers]


def left_padded(
    prompts: list[str], tokenizer: PreTrainedTokenizerBase, pad_id: int, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """`input_ids` and `attention_mask` of `prompts`, left-padded with `pad_id` (torch's `pad_sequence`), the
    tokenizer left untouched: any id will do for a tokenizer without a pad token, the attention mask hides pads."""
    rows = [torch.tensor(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    pad = functools.partial(torch.nn.utils.rnn.pad_sequence, batch_first=True, padding_side="left")
    return {
        "input_ids": pad(rows, padding_value=pad_id).to(device),
        "attention_mask": pad([torch.ones_like(r) for r in rows], padding_value=0).to(device),
    }


def _answer(question: str, ids: list[int], stops: list[int], tokenizer: PreTrainedTokenizerBase) -> Answer:
    """Cut a row of new tokens at its first stop token (what follows is padding)."""
    end = next((k for k, t in enumerate(ids) if t in stops), None)
    kept = ids if end is None else ids[: end + 1]
    return Answer(
        question=question,
        text=str(tokenizer.decode(kept, skip_special_tokens=True)).strip(),
        raw=str(tokenizer.decode(kept, skip_special_tokens=False)),
        token_ids=kept,
        new_tokens=len(kept),
        stop_reason="length" if end is None else "eos",
    )


def generate_response(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    user_message: str,
    system_message: str | None = None,
    max_new_tokens: int = 100,
) -> str:
    """The lesson's generate_responses: one question, one greedy answer's text."""
    return generate(model, tokenizer, [user_message], system_message=system_message, max_new_tokens=max_new_tokens)[
        0
    ].text


def ask(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    system_message: str | None = None,
    max_new_tokens: int = 100,
) -> list[Answer]:
    """The lesson's test_model_with_questions, returning the answers instead of printing them."""
    return generate(model, tokenizer, questions, system_message=system_message, max_new_tokens=max_new_tokens)
