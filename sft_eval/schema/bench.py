"""`sft-eval bench --served`'s result (`served_bench.bench_served`), which `sft-eval report --bench FILE` shows: the
report's `served_bench` record."""

# no `from __future__ import annotations`: Required and NotRequired must be seen when each record is made

from typing import NotRequired

from typing_extensions import TypedDict  # pydantic reads TypedDicts from typing_extensions on Python 3.11


class Percentiles(TypedDict):
    """A latency's percentiles over the completed requests, in ms; null with none."""

    p50: float | None
    """The median."""
    p90: float | None
    """The 90th percentile."""
    p99: float | None
    """The 99th percentile."""


class ServedLevel(TypedDict):
    """One level of the sweep: a concurrency, or a Poisson request rate."""

    concurrency: int
    """Requests in flight (a rate level: the most in flight, `max_in_flight`)."""
    request_rate: NotRequired[float | None]
    """A rate level's Poisson arrival rate, requests/s; null for a concurrency level."""
    schedule_lag_ms: NotRequired[Percentiles]
    """A rate level: how late each request left against its scheduled arrival (the client falling behind, or every
    slot in flight taken)."""
    requests: int
    """Requests sent (warm-up requests not counted)."""
    completed: int
    """Requests that streamed to their last event."""
    failed: int
    """Requests that failed: an error status, a stall past the timeout, a dropped stream, an event not JSON."""
    errors: list[str]
    """The commonest reasons, `N x reason`."""
    duration_s: float
    """Seconds from the first request sent to the last one done."""
    stopped_by: str
    """`requests` (all were sent) or `duration` (the cap came first)."""
    ttft_ms: Percentiles
    """Time to the first streamed content."""
    tpot_ms: Percentiles
    """Time per output token after the first: (E2EL - TTFT) / (output tokens - 1)."""
    itl_ms: Percentiles
    """The gaps between streamed content chunks after the first (per chunk: chunks need not be tokens)."""
    e2el_ms: Percentiles
    """End to end."""
    output_tokens: int
    """Output tokens of the completed requests."""
    output_tokens_per_s: float | None
    """Output tokens per second over the level."""
    requests_per_s: float | None
    """Completed requests per second."""
    goodput_requests_per_s: float | None
    """Completed requests per second that met every latency target; null without targets."""
    tokens_counted_by: list[str]
    """How output tokens were counted: `usage` (the server's), `tokenizer`, or `chunks`."""


class PromptSource(TypedDict):
    """The prompts a served bench sent."""

    source: str
    """`questions` (the recipe's) or `synthetic`."""
    count: int
    """Distinct prompts (a level sends them in turn)."""
    mean_tokens: NotRequired[int]
    """Synthetic: the lengths' mean, drawn from a normal distribution."""
    stdev_tokens: NotRequired[float]
    """Synthetic: the lengths' standard deviation (0: every prompt `mean_tokens` long)."""
    seed: NotRequired[int]
    """Synthetic: the seed of the lengths and the words."""
    counted_by: NotRequired[str]
    """Synthetic: `tokenizer` (`--tokenizer`'s tokens) or `words` (none given)."""
    tokens: NotRequired[Percentiles]
    """Synthetic: the prompts' lengths as counted."""


class BenchCheck(TypedDict):
    """One threshold judged at one level (`verdict.bench_checks`): a report's `Check`, for the bench's JSON."""

    name: str
    """`bench.ttft`, `bench.tpot`, `bench.goodput` or `bench.failed`."""
    passed: bool | None
    """Whether it held; null when it could not be judged."""
    message: str
    """What failed, or why it was not judged; empty when it held."""


class ServedBenchData(TypedDict):
    """The served model timed at each concurrency (docs/served-bench.md)."""

    served: str
    """The server's URL."""
    model: str
    """The model asked there."""
    max_tokens: int
    """Output tokens asked per request."""
    targets_ms: dict[str, float]
    """Goodput's per-request latency targets (`ttft`, `tpot`, `itl`, `e2el`), in ms."""
    swept: NotRequired[str]
    """`concurrency` or `rate`."""
    seed: NotRequired[int]
    """The seed of the Poisson arrival times and the synthetic prompt lengths."""
    prompts: NotRequired[PromptSource]
    """What was sent: the recipe's questions, or synthetic prompts and their lengths."""
    client_ceiling_requests_per_s: float
    """Requests per second this client completes against a server that answers at once, on the machine it ran on."""
    results: list[ServedLevel]
    """One per concurrency level, in the order swept."""
    checks: NotRequired[list[BenchCheck]]
    """The recipe's thresholds judged at every level (`bench.ttft`, `bench.tpot`, `bench.goodput`, `bench.failed`)."""
