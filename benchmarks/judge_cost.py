"""What a judge costs: the reward judge's time per pair against a bare forward pass over the same sequences, and the
served chat judge's pairs per second at its concurrency.

1. Reward judge (`judge.reward.RewardJudge.judge_pairs`: rendering with the chat template, tokenizing, batching,
   the forward passes, the verdicts) against the bare forward passes alone (the same token ids, already rendered,
   in the same batches), on two models: the embedded tiny reward model (built into a fresh cache if it must be)
   and a SmolLM2-135M-shaped reward model with random weights. 64 pairs of a question, a short stopping answer
   and a 60-word answer that never stopped. Best of 5 each (3 for the larger model: about 12 s a pass here). Goal:
   the judge at most 1.3x the bare passes.
2. Served chat judge (`judge.chat.judge_pairs` through `ServedBackend`) against a loopback OpenAI-compatible server
   that answers each prompt after 50 ms: pairs per second (two prompts a pair) at the judge's concurrency, beside
   what the latency alone allows (concurrency / (2 x 50 ms)); then against the same server answering at once, the
   client's own ceiling on this machine.

    python benchmarks/judge_cost.py [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from sft_eval.cache import FixtureCache
from sft_eval.console import configure_libraries
from sft_eval.generation import GenerationSettings, ServedBackend
from sft_eval.judge.chat import Pair, judge_pairs
from sft_eval.judge.reward import BATCH, Answered, RewardJudge, render, rewards
from sft_eval.models import SMOLLM2_135M

PAIRS = [
    Pair(f"Question {i}: what is the capital of country number {i}?", f"City {i}", " ".join(["word"] * 60))
    for i in range(64)
]
STOPS = [(True, False)] * len(PAIRS)
LATENCY_S = 0.05


def best(run, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def reward_cost(model, tokenizer, name: str, repeats: int = 5) -> dict:
    judge = RewardJudge(lambda: (model, tokenizer), {"benchmark": name})
    sequences = []
    for pair, (a, b) in zip(PAIRS, STOPS, strict=True):
        sequences += [render(tokenizer, Answered.of(pair.question, pair.candidate, a))]
        sequences += [render(tokenizer, Answered.of(pair.question, pair.other, b))]
    pad = tokenizer.pad_token_id
    judge.judge_pairs(PAIRS, STOPS)  # warm: the first forward pass allocates
    judged = best(lambda: judge.judge_pairs(PAIRS, STOPS), repeats)
    bare = best(lambda: rewards(model, pad, sequences, BATCH), repeats)
    return {
        "model": name,
        "parameters": model.num_parameters(),
        "pairs": len(PAIRS),
        "judge_ms_per_pair": 1000 * judged / len(PAIRS),
        "bare_forward_ms_per_pair": 1000 * bare / len(PAIRS),
        "ratio": judged / bare,
    }


def served(latency_s: float) -> dict:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(latency_s)
            body = json.dumps(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "judge",
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": "[[A]]"}, "finish_reason": "stop"}
                    ],
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        request_queue_size = 256

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    backend = ServedBackend(f"http://127.0.0.1:{server.server_address[1]}/v1", "judge", max_retries=0, timeout=30)
    concurrency = GenerationSettings().batch_size
    try:
        judge_pairs(PAIRS[:4], backend)  # warm: the client's connection pool
        seconds = best(lambda: judge_pairs(PAIRS, backend), repeats=3)
    finally:
        server.shutdown()
    pairs_per_s = len(PAIRS) / seconds
    bound = concurrency / (2 * latency_s) if latency_s else None
    return {
        "latency_ms": 1000 * latency_s,
        "concurrency": concurrency,
        "pairs_per_s": pairs_per_s,
        "latency_bound_pairs_per_s": bound,
        "share_of_bound": pairs_per_s / bound if bound else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="a fixture cache holding (or to hold) the embedded reward model")
    args = parser.parse_args()
    configure_libraries()
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from sft_eval.reward_model import embedded_reward_model, load_reward_model

    with tempfile.TemporaryDirectory(prefix="sft-eval-judge-cost-") as work:
        cache = FixtureCache(args.cache or Path(work) / "cache")
        tiny, tokenizer = load_reward_model(embedded_reward_model(cache, torch.device("cpu")), "cpu")
        results = [reward_cost(tiny, tokenizer, "embedded tiny reward model")]
        torch.manual_seed(0)
        shape = {**SMOLLM2_135M, "vocab_size": len(tokenizer), "num_labels": 1, "pad_token_id": tokenizer.pad_token_id}
        large = LlamaForSequenceClassification(LlamaConfig(**shape)).eval()
        results.append(reward_cost(large, tokenizer, "SmolLM2-135M-shaped reward model (random weights)", repeats=3))
    for r in results:
        print(
            f"{r['model']} ({r['parameters'] / 1e6:.1f}M parameters), {r['pairs']} pairs: judge "
            f"{r['judge_ms_per_pair']:.2f} ms/pair, bare forward {r['bare_forward_ms_per_pair']:.2f} ms/pair, "
            f"ratio {r['ratio']:.2f}x (goal at most 1.3x)"
        )
    for latency in (LATENCY_S, 0.0):
        s = served(latency)
        bound = (
            f", {s['share_of_bound']:.0%} of the {s['latency_bound_pairs_per_s']:.0f} pairs/s the latency allows"
            if s["latency_bound_pairs_per_s"]
            else " (the client's ceiling: the server answers at once)"
        )
        print(
            f"served chat judge, server latency {s['latency_ms']:.0f} ms, concurrency {s['concurrency']}: "
            f"{s['pairs_per_s']:.1f} pairs/s{bound}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
