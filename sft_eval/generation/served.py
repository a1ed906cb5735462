"""The served backend: answers from an OpenAI-compatible server (vLLM, SGLang, TGI, `transformers serve`)."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from sft_eval.chat import conversation
from sft_eval.console import interactive
from sft_eval.errors import PartlyAnswered, SftEvalError
from sft_eval.records import Answer, ToolAnswer

if TYPE_CHECKING:
    from sft_eval.records import Conversation

FAILED_SHOWN = 5  # failed questions named in the error line


def generate_served(
    base_url: str,
    model: str | None,
    questions: Sequence[str | Conversation],
    *,
    system_message: str | None = None,
    max_new_tokens: int = 100,
    enable_thinking: bool = False,
    concurrency: int = 32,
    timeout: float = 60.0,
    max_retries: int = 4,
    on_answer: Callable[[int, Any], None] | None = None,
    section: str = "eval",
) -> list[Answer]:
    """Greedy answers from an OpenAI-compatible server's chat completions endpoint (vLLM, SGLang, TGI,
    `transformers serve`), `concurrency` requests in flight so the server can batch them, in input order.

    A transient failure (connection reset or refused, timeout, 408, 409, 429, 5xx) is retried up to `max_retries`
    times by the OpenAI client itself: exponential backoff from 0.5 s to 8 s with jitter, or the server's
    `Retry-After`. A question that still fails does not stop the others: all are asked, then one `PartlyAnswered`
    says how many failed, why, and which (the first few), and carries the answers that came. Each answer is also
    handed to `on_answer(index, answer)` as it arrives (the answer cache stores it there), so a rerun asks only the
    failed questions. Once a question cannot reach the server through all its
    retries, no further question is sent (a server that is down fails in one backoff, not one per question).

    The server renders the chat with its own template: when that is not the one the model was trained with,
    its answers differ from the in-process engine's, which is what the served-backend tests compare. Servers
    decode without special tokens and return no token ids, so `raw` is the served text and `token_ids` is empty;
    `new_tokens` is the server's completion token count.

    A tool item (`data.Conversation`) in place of a question is sent as its conversation with its `tools`; its result
    is a `ToolAnswer` holding the server's message, calls parsed by the server (vLLM, SGLang, TGI and `transformers
    serve` parse them with the model's own parser).
    """
    from concurrent.futures import ThreadPoolExecutor

    openai = _openai()
    client = openai.OpenAI(
        base_url=base_url,
        api_key=os.environ.get("OPENAI_API_KEY", "sft-eval"),
        timeout=timeout,
        max_retries=max_retries,
    )
    name = model or _only_served_model(client, base_url, section)
    unreachable = threading.Event()

    def one(indexed: tuple[int, str | Conversation]) -> Answer | ToolAnswer | str | None:
        """The answer, or why the question failed (after the client's retries), or None: not asked, the server
        could not be reached for an earlier question."""
        index, asked = indexed
        if unreachable.is_set():
            return None
        tools = {} if isinstance(asked, str) else {"tools": asked.tools} if asked.tools else {}
        try:
            reply = client.chat.completions.create(
                model=name,
                messages=conversation(asked, system_message) if isinstance(asked, str) else asked.messages,
                **tools,
                max_tokens=max_new_tokens,
                temperature=0.0,
                extra_body={"chat_template_kwargs": {"enable_thinking": enable_thinking}},
            )
        except openai.APIConnectionError as exc:
            unreachable.set()
            return f"{section}.base_url: cannot reach {base_url}: {exc.__cause__ or exc}"
        except openai.APIStatusError as exc:
            said = f"{section}.model: {base_url} answered {exc.status_code} for model {name!r}: {_server_message(exc)}"
            return said if _retried(exc.status_code) else f"{said} {NOT_RETRIED}"
        except Exception as exc:  # a 200 whose body the client cannot parse (HTML, not JSON): this question's failure
            said = f"{section}.base_url: {base_url} sent a reply that is not a chat completion: {_first_line(exc)}"
            return f"{said} {NOT_RETRIED}"
        answer = _answer(reply, asked if isinstance(asked, str) else asked.question, base_url, section)
        if isinstance(answer, str):
            return answer
        result = answer if isinstance(asked, str) else _tool_answer(reply, answer)
        if on_answer is not None:
            on_answer(index, result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(questions) or 1))) as pool:
        replies = pool.map(one, enumerate(questions))
        results = list(tqdm(replies, desc=f"asking {name}", total=len(questions), disable=not interactive()))
    failed = [(_shown(q), r) for q, r in zip(questions, results, strict=True) if isinstance(r, str)]
    if failed:
        answered: dict[int, object] = {i: r for i, r in enumerate(results) if isinstance(r, (Answer, ToolAnswer))}
        not_asked = sum(r is None for r in results)
        raise PartlyAnswered(_failures(failed, not_asked, len(questions), max_retries, section), answered)
    return results  # every result is an answer once none failed


def _answer(reply: Any, question: str, base_url: str, section: str) -> Answer | str:
    """The answer a chat completion holds, or why it holds none: an HTTP 200 can still carry HTML, no choices, or
    content that is not text, and that is this question's failure (the others' answers are kept)."""
    bad = f"{section}.base_url: {base_url} sent a reply that is not a chat completion"
    choices = getattr(reply, "choices", None)
    if not isinstance(choices, list) or not choices:
        return f"{bad}: no choices ({type(reply).__name__}) {NOT_RETRIED}"
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if content is not None and not isinstance(content, str):
        return f"{bad}: message content is {type(content).__name__}, not text {NOT_RETRIED}"
    usage = getattr(reply, "usage", None)
    tokens = getattr(usage, "completion_tokens", None)
    content = content or ""
    return Answer(
        question=question,
        text=content.strip(),
        raw=content,
        token_ids=[],
        new_tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else 0,
        stop_reason="length" if getattr(choices[0], "finish_reason", None) == "length" else "eos",
    )


def _shown(asked: str | Conversation) -> str:
    return asked if isinstance(asked, str) else asked.question


def _tool_answer(reply: Any, answer: Answer) -> ToolAnswer:
    """The server's assistant message: its text and the calls it parsed (`tool_calls`, OpenAI's shape: each
    `{"type": "function", "function": {"name", "arguments"}}`, the arguments a JSON string as sent)."""
    message = reply.choices[0].message
    calls = []
    for call in getattr(message, "tool_calls", None) or []:
        function = getattr(call, "function", None)
        calls.append(
            {
                "type": "function",
                "function": {"name": getattr(function, "name", None), "arguments": getattr(function, "arguments", "")},
            }
        )
    parsed: dict[str, Any] = {"role": "assistant", "content": answer.raw}
    if calls:
        parsed["tool_calls"] = calls
    return ToolAnswer(answer, parsed)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _failures(failed: list[tuple[str, str]], not_asked: int, asked: int, max_retries: int, section: str) -> str:
    """One line: how many questions failed, the commonest reason, the first few questions, and how many were not
    sent once the server could not be reached."""
    reasons = Counter(reason for _, reason in failed)
    reason, _ = reasons.most_common(1)[0]
    others = f" (and {len(reasons) - 1} other reason(s))" if len(reasons) > 1 else ""
    unsent = f"; {not_asked} not asked once it could not be reached" if not_asked else ""
    if len(failed) + not_asked == asked and len(reasons) == 1:
        return reason + unsent  # nothing answered, for one reason: the reason is the message
    shown = "; ".join(repr(q if len(q) <= 60 else q[:57] + "...") for q, _ in failed[:FAILED_SHOWN])
    more = f" and {len(failed) - FAILED_SHOWN} more" if len(failed) > FAILED_SHOWN else ""
    retried = [r for _, r in failed if not r.endswith(NOT_RETRIED)]
    how = (
        f"after {max_retries} retries each ({section}.max_retries)"
        if len(retried) == len(failed)
        else f"({len(retried)} after {max_retries} retries each, {section}.max_retries; the others not retried)"
        if retried
        else "(not retried: the server answered, with nothing to retry for)"
    )
    return f"{len(failed)} of {asked} questions failed {how}: {reason}{others}; failed: {shown}{more}{unsent}"


# The client retries what may pass on a second try (a connection error, 408, 409, 429, 5xx: openai's own rule);
# a reply it got and could not use, or a status that will not change, is not asked again.
NOT_RETRIED = "(not retried)"


def _retried(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def _openai() -> Any:
    try:
        import openai
    except ImportError:
        raise SftEvalError('eval.backend = "openai" needs the openai client: pip install "sft-eval[openai]"') from None
    return openai


def _only_served_model(client: Any, base_url: str, section: str, keys: tuple[str, str] | None = None) -> str:
    """The server's model when it serves exactly one (vLLM's usual case); otherwise ask for `<section>.model`.
    `keys`: what the error lines name for the URL and the model, where they are no recipe keys (a CLI's flags)."""
    url_key, model_key = keys or (f"{section}.base_url", f"{section}.model")
    openai = _openai()
    try:
        names = [m.id for m in client.models.list()]
    except openai.APIConnectionError as exc:
        raise SftEvalError(f"{url_key}: cannot reach {base_url}: {exc.__cause__ or exc}") from None
    except openai.APIStatusError as exc:
        raise SftEvalError(f"{url_key}: {base_url} answered {exc.status_code} listing its models") from None
    if len(names) != 1:
        listed = ", ".join(repr(n) for n in names) or "none"
        raise SftEvalError(f"{model_key}: {base_url} serves {listed}; set `{model_key}` to the model's name there")
    return names[0]


def _server_message(exc: Any) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    detail = body.get("detail") or body.get("message") or body.get("error") or exc.message
    return str(detail).splitlines()[0]
