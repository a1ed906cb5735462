"""What `SftEvalCallback` costs a training run: the same run with and without it, its share of the training time and
the peak memory of each (a process of its own per run, one at a time: `ru_maxrss`).

Two runs, as issue 47 states them:
- the tiny recipe's (docs/live-eval.md's walkthrough: 540 steps, a save and an evaluation every 100);
- a SmolLM2-135M-shaped model with random weights (the tiny tokenizer's vocabulary), batch 8, 100 steps, evaluated
  every 50 with the default budget (32 questions x 64 new tokens; the tiny recipe's 31 questions, its held-out
  rows and general text), no checkpoint saved (so saving is not in either time).

The base is evaluated once before the first step and cached under its parameters: the first run with the callback
(cold: the base evaluated) and a second (warm: the base read from the cache, as when a run is started again from
the same base) are both measured.

    python benchmarks/callback_overhead.py [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = {
    "tiny": {"max_steps": 540, "save_steps": 100, "every": "save", "batch": 16},
    "135m": {"max_steps": 100, "save_steps": None, "every": 50, "batch": 8},
}


def child(kind: str, with_callback: bool, folder: Path) -> dict:
    """One run in this process: its training time, the callback's evaluations' time, the peak resident memory."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    from sft_eval import SftEvalCallback
    from sft_eval.models import SMOLLM2_135M

    tokenizer = AutoTokenizer.from_pretrained(folder / "base")
    if kind == "tiny":
        model = AutoModelForCausalLM.from_pretrained(folder / "base")
    else:
        shape = {**SMOLLM2_135M, "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
        import torch

        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**shape))
    spec = RUNS[kind]
    rows = load_dataset("json", data_files=str(folder / "data" / "train.jsonl"), split="train")
    config = SFTConfig(
        output_dir=str(folder / f"run-{kind}-{int(with_callback)}"),
        max_steps=spec["max_steps"],
        per_device_train_batch_size=spec["batch"],
        learning_rate=3e-3 if kind == "tiny" else 1e-4,
        logging_steps=10,
        lr_scheduler_type="cosine",
        assistant_only_loss=True,
        max_length=256,
        save_strategy="steps" if spec["save_steps"] else "no",
        save_steps=spec["save_steps"] or 500,
        report_to=[],
        bf16=False,
        seed=0,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer)
    callback = None
    if with_callback:
        callback = SftEvalCallback(trainer, recipe=folder / "eval.toml", every=spec["every"], cache=folder / "cache")
        trainer.add_callback(callback)
    start = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - start
    evaluations = [r["seconds"] for r in callback.records] if callback else []
    return {
        "run": kind,
        "callback": with_callback,
        "train_runtime_s": float(result.metrics["train_runtime"]),
        "wall_s": wall,
        "evaluations": len(evaluations),
        "evaluation_s": sum(evaluations),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def folder_for(cache: str | None) -> Path:
    """A user's folder: the tiny base and tokenizer (built into the cache if they must be), the data, a recipe."""
    from sft_eval.cache import FixtureCache
    from sft_eval.pipeline import Pipeline
    from sft_eval.recipe import DEFAULT_RECIPE, FIXTURES_DIR, load_recipe

    pipeline = Pipeline(load_recipe(DEFAULT_RECIPE), FixtureCache(Path(cache)) if cache else None, "cpu")
    folder = Path(tempfile.mkdtemp(prefix="callback-overhead-"))
    shutil.copytree(pipeline.base_model_dir, folder / "base", ignore=shutil.ignore_patterns("MANIFEST.json"))
    pipeline.tokenizer.save_pretrained(folder / "base")
    (folder / "data").mkdir()
    for name, as_name in (
        ("sft_train.jsonl", "train.jsonl"),
        ("sft_heldout.jsonl", "heldout.jsonl"),
        ("eval_questions.jsonl", "eval_questions.jsonl"),
        ("general_text.txt", "general_text.txt"),
    ):
        shutil.copy(FIXTURES_DIR / "data" / name, folder / "data" / as_name)
    questions = json.dumps(list(load_recipe(DEFAULT_RECIPE).eval.questions))
    (folder / "eval.toml").write_text(
        f'[data]\ntrain = "data/train.jsonl"\neval = "data/heldout.jsonl"\n\n[eval]\nquestions = {questions}\n'
        'questions_file = "data/eval_questions.jsonl"\ngeneral_text = "data/general_text.txt"\nmax_new_tokens = 64\n',
        encoding="utf-8",
    )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="the fixture cache (default: SFT_EVAL_CACHE or ~/.cache/sft-eval)")
    parser.add_argument("--child", nargs=3, metavar=("RUN", "CALLBACK", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--runs", default="tiny,135m", help="which runs (tiny, 135m)")
    args = parser.parse_args()
    if args.child:
        kind, flag, folder = args.child
        print(json.dumps(child(kind, flag == "1", Path(folder))))
        return
    folder = folder_for(args.cache)
    results = []
    for kind in args.runs.split(","):
        for flag in ("0", "1", "1"):  # one process at a time: two torch jobs on two cores would time each other
            done = subprocess.run(
                [sys.executable, __file__, "--child", kind, flag, str(folder)],
                capture_output=True,
                text=True,
                check=True,
            )
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    for kind in args.runs.split(","):
        without, cold, warm = (r for r in results if r["run"] == kind)
        for label, with_ in (("cold", cold), ("warm", warm)):
            share = (with_["wall_s"] - without["wall_s"]) / without["wall_s"]  # train(), the base's evaluation in
            print(
                f"{kind} ({with_['parameters'] / 1e6:.1f} M parameters), base {label}: trainer.train() "
                f"{without['wall_s']:.1f} s without, {with_['wall_s']:.1f} s with ({with_['evaluations']} "
                f"evaluations in the run, {with_['evaluation_s']:.1f} s): overhead {share:+.1%}; peak memory "
                f"{without['peak_rss_mb']:.0f} MB without, {with_['peak_rss_mb']:.0f} MB with "
                f"({with_['peak_rss_mb'] / without['peak_rss_mb']:.3f}x)"
            )
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
