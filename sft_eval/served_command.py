"""`sft-eval bench --served URL`: its options and the command, the flags over the recipe's `[bench]`, the result
judged by the recipe's thresholds (`verdict.bench_checks`). The timing itself is `served_bench`'s."""

from __future__ import annotations

import argparse
import math
from typing import Any

from sft_eval.errors import SftEvalError
from sft_eval.jsonout import dumps
from sft_eval.options import positive_float, positive_int
from sft_eval.section_checks import bench_level_name

EXIT_OK, EXIT_FAILED = 0, 1


def add_served_options(bench: argparse.ArgumentParser) -> None:
    add = bench.add_argument
    add("--served", metavar="URL", help="an OpenAI-compatible server's base URL (http://host:port/v1)")
    add("--model", help="--served: the model's name there (default: the server's only model)")
    add(
        "--concurrency",
        metavar="C,C,...",
        help="--served: requests in flight, one level each (default: [bench] concurrency, 1,4,16,64)",
    )
    add(
        "--rate",
        metavar="R,R,...",
        help="--served: sweep Poisson request rates instead (requests/s, one level each; default: [bench] rate)",
    )
    add("--max-in-flight", type=positive_int, metavar="N", help="--served --rate: requests in flight at most (64)")
    add("--seed", type=int, metavar="N", help="--served: seeds the arrival times and synthetic lengths ([bench], 0)")
    add(
        "--prompt-tokens",
        type=positive_int,
        metavar="N",
        help="--served: synthetic prompts of this mean length in tokens instead of the recipe's questions",
    )
    add(
        "--prompt-tokens-stdev",
        type=float,
        metavar="SD",
        help="--served --prompt-tokens: the lengths' standard deviation, normal (default: [bench], 0)",
    )
    add("--requests", type=positive_int, metavar="N", help="--served: per level ([bench], 64)")
    add("--max-tokens", type=positive_int, metavar="N", help="--served: per request ([bench], 64)")
    add("--duration", type=positive_float, metavar="S", help="--served: cap per level, seconds ([bench], 120)")
    add("--timeout", type=positive_float, default=60.0, metavar="S", help="--served: a stalled request's limit (60)")
    add(
        "--target",
        action="append",
        default=[],
        metavar="METRIC:MS",
        help="--served: a latency target for goodput (ttft, tpot, itl or e2el, in ms), repeatable: ttft:500",
    )
    add(
        "--tokenizer",
        metavar="DIR",
        help="--served: count output tokens (where the server reports no usage) and synthetic prompt lengths with "
        "this local tokenizer",
    )


def _numbers(text: str, flag: str, kind: type, example: str) -> list[Any]:
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise SftEvalError(f"{flag}: expected numbers above 0 separated by commas ({example}), not {text}")
    return values


def bench_served_command(args: argparse.Namespace, inputs: Any) -> int:
    """`bench --served URL` (or the recipe's `[bench] served`): the recipe's questions (or synthetic prompts)
    streamed to the server at each concurrency or request rate, judged by the recipe's thresholds."""
    from sft_eval.served_bench import TARGET_METRICS, WARMUP, bench_served, parse_targets, synthetic_prompts
    from sft_eval.verdict import bench_checks

    recipe = inputs.recipe
    bench = recipe.bench
    url = args.served or bench.served
    if not url.startswith(("http://", "https://")):
        raise SftEvalError(f"--served: expected the server's http(s) URL (http://127.0.0.1:8000/v1), not {url}")
    if args.concurrency is not None and args.rate is not None:
        raise SftEvalError("--concurrency and --rate: give one (a rate sweep's cap in flight is --max-in-flight)")
    levels = list(bench.concurrency)
    if args.concurrency is not None:
        levels = _numbers(args.concurrency, "--concurrency", int, "1,4,16")
    rates = [] if args.concurrency is not None else list(bench.rate)
    if args.rate is not None:
        rates = _numbers(args.rate, "--rate", float, "2,8,32")
    targets = {**bench.targets, **parse_targets(args.target)}
    count = None
    if args.tokenizer:
        from sft_eval.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer, key="--tokenizer")
        count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    requests = args.requests or bench.requests
    seed = bench.seed if args.seed is None else args.seed
    mean = args.prompt_tokens or bench.prompt_tokens
    stdev = bench.prompt_tokens_stdev if args.prompt_tokens_stdev is None else args.prompt_tokens_stdev
    if stdev and not mean:
        raise SftEvalError("--prompt-tokens-stdev: needs --prompt-tokens (the mean length)")
    source = None
    prompts = [q.question for q in inputs.questions]
    if mean:  # one prompt per request sent, warm-up requests included
        prompts, lengths = synthetic_prompts(WARMUP + requests, mean, stdev, seed, count)
        source = synthetic_source(mean, stdev, seed, lengths, "tokenizer" if count else "words")
    result = bench_served(
        url,
        args.model or bench.model,
        prompts,
        concurrency=levels,
        rates=rates,
        max_in_flight=args.max_in_flight or bench.max_in_flight,
        seed=seed,
        requests=requests,
        max_tokens=args.max_tokens or bench.max_tokens,
        duration_s=args.duration or bench.duration,
        timeout=args.timeout,
        targets=targets,
        count_tokens=count,
        prompt_source=source,
    )
    checks = bench_checks(recipe.thresholds, result)
    result["checks"] = [c.to_dict() for c in checks]
    if args.json:
        print(dumps(result))
    else:
        ceiling = result["client_ceiling_requests_per_s"]
        print(f"{result['model']} at {result['served']} (client ceiling here: {ceiling:.0f} requests/s)")
        if source:
            p = source["tokens"]
            print(f"  synthetic prompts ({source['counted_by']}): p50 {p['p50']:.0f}, p99 {p['p99']:.0f}, seed {seed}")
        for r in result["results"]:
            shown = " ".join(
                f"{name} p50/p99 {_ms(r[name + '_ms']['p50'])}/{_ms(r[name + '_ms']['p99'])}" for name in TARGET_METRICS
            )
            goodput = "" if r["goodput_requests_per_s"] is None else f", goodput {r['goodput_requests_per_s']:.1f}/s"
            lag = "" if "schedule_lag_ms" not in r else f", sent late p99 {_ms(r['schedule_lag_ms']['p99'])} ms"
            print(
                f"  {bench_level_name(r):>16}: {r['completed']}/{r['requests']} completed, "
                f"{r['requests_per_s'] or 0:.1f} requests/s, {r['output_tokens_per_s'] or 0:.0f} tokens/s"
                f"{goodput}{lag}; {shown} ms"
            )
        for check in checks:
            if check.passed is False:
                print(f"FAILED {check.name}: {check.message}")
    return EXIT_FAILED if any(c.passed is False for c in checks) else EXIT_OK


def synthetic_source(mean: int, stdev: float, seed: int, lengths: list[int], counted_by: str) -> dict[str, Any]:
    """What the result's `prompts` records of synthetic prompts: the settings and the lengths as counted."""
    from sft_eval.served_bench import percentiles

    return {
        "source": "synthetic",
        "count": len(lengths),
        "mean_tokens": mean,
        "stdev_tokens": stdev,
        "seed": seed,
        "counted_by": counted_by,
        "tokens": percentiles(lengths),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
