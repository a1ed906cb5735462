"""The recipe's `[judge]` and `[bench]` sections checked as a whole, after each key's type is: a judge the recipe can
reach, levels and bounds a served benchmark can run (`recipe.load_recipe` calls these)."""

from __future__ import annotations

import math
from typing import Any

from sft_eval.errors import SftEvalError

BENCH_TARGETS = ("ttft", "tpot", "itl", "e2el")  # the latencies goodput may hold to a target, in ms


def bench_level_name(level: Any) -> str:
    """A served bench level as a line names it: `concurrency 4`, or `2.5 requests/s` for a Poisson rate level."""
    rate = level.get("request_rate")
    return f"concurrency {level['concurrency']}" if rate is None else f"{rate:g} requests/s"


def check_judge(judge: Any, where: str, kinds: tuple[str, ...], max_retries: int, max_timeout_s: float) -> None:
    """A judge the recipe can reach: a kind that exists, a server URL or a folder, files that exist."""
    if judge.kind not in kinds:
        raise SftEvalError(
            f'{where}: `judge.kind` must be "chat" or "reward" (or left out: no judge), not {judge.kind!r}'
        )
    if not judge.kind:
        return
    if judge.kind == "reward":
        if judge.base_url is not None:
            raise SftEvalError(
                f"{where}: a reward judge runs here, from `judge.model` (a folder) or the embedded one: "
                "`judge.base_url` is for a chat judge"
            )
        if not (math.isfinite(judge.tie_margin) and judge.tie_margin >= 0):
            raise SftEvalError(f"{where}: `judge.tie_margin` must be a number of at least 0, not {judge.tie_margin}")
        return
    if judge.backend not in ("openai", "transformers"):
        raise SftEvalError(f'{where}: `judge.backend` must be "openai" or "transformers", not {judge.backend!r}')
    if judge.backend == "openai" and not (judge.base_url or "").startswith(("http://", "https://")):
        raise SftEvalError(f'{where}: `judge.backend = "openai"` needs `judge.base_url`, the judge server\'s URL')
    if judge.backend == "transformers" and not judge.model:
        raise SftEvalError(f'{where}: `judge.backend = "transformers"` needs `judge.model`, the judge\'s folder')
    if judge.max_new_tokens < 1:
        raise SftEvalError(f"{where}: `judge.max_new_tokens` must be at least 1, not {judge.max_new_tokens}")
    if not 0 <= judge.max_retries <= max_retries or not 0 < judge.request_timeout <= max_timeout_s:
        raise SftEvalError(
            f"{where}: `judge.max_retries` must be 0 to {max_retries} and `judge.request_timeout` above 0 and at "
            f"most {max_timeout_s:.0f}"
        )


def check_bench(bench: Any, where: str) -> None:
    """A server to time, levels and bounds that make sense, targets `bench --served` knows."""
    if bench.served is not None and not bench.served.startswith(("http://", "https://")):
        raise SftEvalError(f"{where}: `bench.served` must be the server's http(s) URL, not {bench.served!r}")
    if not bench.concurrency or min(bench.concurrency) < 1:
        raise SftEvalError(
            f"{where}: `bench.concurrency` must list levels of at least 1, not {list(bench.concurrency)}"
        )
    if bench.requests < 1 or bench.max_tokens < 1 or not bench.duration > 0:
        raise SftEvalError(f"{where}: `bench.requests`, `bench.max_tokens` and `bench.duration` must be above 0")
    if any(not (math.isfinite(r) and r > 0) for r in bench.rate) or bench.max_in_flight < 1:
        raise SftEvalError(
            f"{where}: `bench.rate` must list request rates above 0 (requests/s), not {list(bench.rate)}, and "
            f"`bench.max_in_flight` be at least 1"
        )
    if bench.prompt_tokens < 0 or not (math.isfinite(bench.prompt_tokens_stdev) and bench.prompt_tokens_stdev >= 0):
        raise SftEvalError(f"{where}: `bench.prompt_tokens` and `bench.prompt_tokens_stdev` must be 0 or more")
    if bench.prompt_tokens_stdev and not bench.prompt_tokens:
        raise SftEvalError(f"{where}: `bench.prompt_tokens_stdev` needs `bench.prompt_tokens` (the mean length)")
    for name, value in bench.targets.items():
        if name not in BENCH_TARGETS or not (isinstance(value, int | float) and value > 0):
            raise SftEvalError(
                f"{where}: `bench.targets.{name}` must be one of ttft, tpot, itl, e2el with a number of ms above 0"
            )
