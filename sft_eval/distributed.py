"""The recipe's SFT in several processes: run under torchrun (gloo on CPU, NCCL on GPUs).

    torchrun --nproc_per_node 2 -m sft_eval.distributed --out DIR [--recipe R] [--rows N] [--set key=value ...]

Every rank trains the same variant run as `Pipeline.train_variant` (the recipe's `[sft]` overridden by `--set`,
a loss logged every step, no warmup) and writes its own record,
`DIR/rank-<r>.json` (a TrainingRun with that rank's SftEvalRecorder steps), so a check can hold the plan against
what each process really did. This is how a user who outgrows one process runs; sft-eval's math must hold here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path

import torch

from sft_eval.console import configure_libraries
from sft_eval.factory import open_pipeline, read_inputs
from sft_eval.options import add_options, positive_int


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sft_eval.distributed")
    parser.add_argument("--out", required=True, metavar="DIR")
    add_options(parser.add_argument, ("recipe", "sft-cache", "device"))
    parser.add_argument("--rows", type=positive_int, default=None, metavar="N", help="the first N training rows")
    parser.add_argument("--no-dropout", action="store_true", help="train with dropout off (exact comparisons)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an [sft] key (TOML)")
    args = parser.parse_args(argv)
    configure_libraries()
    device = args.device
    if device in ("auto", "cuda") and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"  # one GPU per rank, as torchrun numbers them
    pipeline = open_pipeline(read_inputs(args.recipe), cache_dir=args.sft_cache, device=device)
    overrides = {k: v for item in args.set for k, v in tomllib.loads(item).items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    rows = args.rows or len(pipeline.rows)
    run, _ = pipeline.train_variant(rows, out / f"trainer-{rank}", dropout=not args.no_dropout, **overrides)
    (out / f"rank-{rank}.json").write_text(json.dumps(run.to_dict(), indent=1), encoding="utf-8")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
    # The record is written and the group destroyed. Interpreter finalization can still abort a rank ("terminate
    # called without an active exception": c10d/gloo C++ threads and objects torn down after Python, pytorch#190489,
    # #179291; seen in about 1 of 3 CI runs), which torchrun reports as a failed run. Nothing is left to clean up.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
