"""Generation: answers to the evaluation questions, in left-padded batches, each cut at its own stop token.

The lesson asks one question at a time with `model.generate`; this asks many at once. Greedy decoding with
left padding gives the same tokens as one at a time (the attention mask hides the pads and positions start
after them), so batching changes the speed, not the answers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sft_eval.chat import conversation, render_prompt
from sft_eval.console import interactive
from sft_eval.errors import SftEvalError


@dataclass(frozen=True)
class Answer:
    question: str
    text: str  # decoded without special tokens, stripped: what a user reads
    raw: str  # decoded with special tokens: where template markers leak
    token_ids: list[int]  # new tokens, up to and including the stop token
    new_tokens: int
    stop_reason: str  # "eos": ended with a stop token; "length": ran into max_new_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Tokens generation stops at: the tokenizer's eos and the model's generation_config eos ids."""
    configured = model.generation_config.eos_token_id
    configured = [configured] if isinstance(configured, int) else list(configured or [])
    return [t for t in dict.fromkeys([tokenizer.eos_token_id, *configured]) if t is not None]


def check_context(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_new_tokens: int
) -> None:
    """Bad input, said before any generation: a budget of new tokens or a prompt the model's context cannot hold
    (a huge `eval.max_new_tokens` and a base model that never stops would otherwise run for hours)."""
    context = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(context, int) or context < 1:
        return  # no fixed context (some architectures): nothing to hold the budget against
    if max_new_tokens >= context:
        raise SftEvalError(
            f"eval.max_new_tokens = {max_new_tokens} does not fit the model's context of {context} tokens "
            "(max_position_embeddings); set it below that"
        )
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    longest = max(range(len(prompts)), key=lengths.__getitem__, default=None)
    if longest is not None and lengths[longest] + max_new_tokens > context:
        raise SftEvalError(
            f"eval: question {longest + 1} renders to {lengths[longest]} tokens, which with eval.max_new_tokens = "
            f"{max_new_tokens} exceeds the model's context of {context} tokens; shorten it or lower max_new_tokens"
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
) -> list[Answer]:
    """Greedy answers to `questions`, rendered with the tokenizer's chat template, in input order."""
    stops = stop_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    prompts = [
        render_prompt(tokenizer, conversation(q, system_message), enable_thinking=enable_thinking) for q in questions
    ]
    check_context(model, tokenizer, prompts, max_new_tokens)
    # Similar lengths share a batch: less padding, same answers.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: dict[int, Answer] = {}
    starts = range(0, len(order), batch_size)
    with _left_padding(tokenizer, pad_id):
        for start in tqdm(starts, desc="generating", unit="batch", disable=not interactive() or len(starts) < 2):
            chunk = order[start : start + batch_size]
            batch = tokenizer(
                [prompts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(model.device)
            output = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=pad_id,
            )
            new = output[:, batch["input_ids"].shape[1] :].tolist()
            for i, ids in zip(chunk, new, strict=True):
                answers[i] = _answer(questions[i], ids, stops, tokenizer)
    return [answers[i] for i in range(len(questions))]


@contextlib.contextmanager
def _left_padding(tokenizer: PreTrainedTokenizerBase, pad_id: int) -> Iterator[None]:
    """Left padding for a batch; a tokenizer without a pad token pads with `pad_id` (the attention mask hides
    pads, so any id will do). The tokenizer is left as it was."""
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if pad is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
    try:
        yield
    finally:
        tokenizer.padding_side = side
        if pad is None:
            tokenizer.pad_token = None


def _answer(question: str, ids: list[int], stops: list[int], tokenizer: PreTrainedTokenizerBase) -> Answer:
    """Cut a row of new tokens at its first stop token (what follows is padding)."""
    end = next((k for k, t in enumerate(ids) if t in stops), None)
    kept = ids if end is None else ids[: end + 1]
    return Answer(
        question=question,
        text=tokenizer.decode(kept, skip_special_tokens=True).strip(),
        raw=tokenizer.decode(kept, skip_special_tokens=False),
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


def one_at_a_time(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: list[str], *, max_new_tokens: int = 100
) -> list[Answer]:
    """The lesson's loop: one `model.generate` call per question (the speed baseline)."""
    return [generate(model, tokenizer, [q], max_new_tokens=max_new_tokens, batch_size=1)[0] for q in questions]


@torch.inference_mode()
def raw_greedy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, questions: list[str], *, max_new_tokens: int = 100
) -> list[list[int]]:
    """Greedy decoding written with plain torch and the model's KV cache, one left-padded batch: the floor of
    what generation can cost, with none of `generate`'s machinery. Returns each row's new token ids."""
    stops = torch.tensor(stop_token_ids(model, tokenizer), device=model.device)
    prompts = [render_prompt(tokenizer, conversation(q)) for q in questions]
    with _left_padding(tokenizer, int(stops[0])):
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    mask = batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    output = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions, use_cache=True)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=model.device)
    rows: list[list[int]] = [[] for _ in prompts]
    for _ in range(max_new_tokens):
        token = output.logits[:, -1].argmax(-1)
        for i in (~finished).nonzero().flatten().tolist():
            rows[i].append(int(token[i]))
        finished |= torch.isin(token, stops)
        if bool(finished.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        positions = positions[:, -1:] + 1
        output = model(
            input_ids=token[:, None], attention_mask=mask, position_ids=positions, cache=output.cache, use_cache=True
        )
    return rows


def generate_served(
    base_url: str,
    model: str | None,
    questions: list[str],
    *,
    system_message: str | None = None,
    max_new_tokens: int = 100,
    enable_thinking: bool = False,
    concurrency: int = 32,
    timeout: float = 600.0,
) -> list[Answer]:
    """Greedy answers from an OpenAI-compatible server's chat completions endpoint (vLLM, SGLang, TGI,
    `transformers serve`), `concurrency` requests in flight so the server can batch them, in input order.

    The server renders the chat with its own template: when that is not the one the model was trained with,
    its answers differ from the in-process engine's, which is what the served-backend tests compare. Servers
    decode without special tokens and return no token ids, so `raw` is the served text and `token_ids` is empty;
    `new_tokens` is the server's completion token count.
    """
    from concurrent.futures import ThreadPoolExecutor

    openai = _openai()
    client = openai.OpenAI(
        base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY", "sft-eval"), timeout=timeout, max_retries=1
    )
    name = model or _only_served_model(client, base_url)

    def one(question: str) -> Answer:
        try:
            reply = client.chat.completions.create(
                model=name,
                messages=conversation(question, system_message),
                max_tokens=max_new_tokens,
                temperature=0.0,
                extra_body={"chat_template_kwargs": {"enable_thinking": enable_thinking}},
            )
        except openai.APIConnectionError as exc:
            raise SftEvalError(f"eval.base_url: cannot reach {base_url}: {exc.__cause__ or exc}") from None
        except openai.APIStatusError as exc:
            raise SftEvalError(
                f"eval.model: {base_url} answered {exc.status_code} for model {name!r}: {_server_message(exc)}"
            ) from None
        choice = reply.choices[0]
        content = choice.message.content or ""
        return Answer(
            question=question,
            text=content.strip(),
            raw=content,
            token_ids=[],
            new_tokens=reply.usage.completion_tokens if reply.usage else 0,
            stop_reason="length" if choice.finish_reason == "length" else "eos",
        )

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(questions) or 1))) as pool:
        answers = pool.map(one, questions)
        return list(tqdm(answers, desc=f"asking {name}", total=len(questions), disable=not interactive()))


def _openai() -> Any:
    try:
        import openai
    except ImportError:
        raise SftEvalError('eval.backend = "openai" needs the openai client: pip install "sft-eval[openai]"') from None
    return openai


def _only_served_model(client: Any, base_url: str) -> str:
    """The server's model when it serves exactly one (vLLM's usual case); otherwise ask for `eval.model`."""
    openai = _openai()
    try:
        names = [m.id for m in client.models.list()]
    except openai.APIConnectionError as exc:
        raise SftEvalError(f"eval.base_url: cannot reach {base_url}: {exc.__cause__ or exc}") from None
    except openai.APIStatusError as exc:
        raise SftEvalError(f"eval.base_url: {base_url} answered {exc.status_code} listing its models") from None
    if len(names) != 1:
        listed = ", ".join(repr(n) for n in names) or "none"
        raise SftEvalError(f"eval.model: {base_url} serves {listed}; set `eval.model` to the tuned model's name")
    return names[0]


def _server_message(exc: Any) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    detail = body.get("detail") or body.get("message") or body.get("error") or exc.message
    return str(detail).splitlines()[0]
