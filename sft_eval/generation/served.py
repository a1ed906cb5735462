"""The served backend: answers from an OpenAI-compatible server (vLLM, SGLang, TGI, `transformers serve`)."""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm

from sft_eval.chat import conversation
from sft_eval.console import interactive
from sft_eval.errors import SftEvalError
from sft_eval.records import Answer


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
