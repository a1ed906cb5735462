"""Audit and report cost against model size, with a finished run as the tuned model (nothing trains).

Three runs "trained elsewhere", each a Trainer-style output folder (checkpoint-2 with its trainer_state.json and
tokenizer) beside its base checkpoint: the tiny model, a SmolLM2-135M-shaped stand-in and a 1.07B-parameter
Llama-shaped checkpoint (Llama-3.2-1B's layers, the tiny tokenizer's vocabulary), random weights, float32 on disk.
For each, in fresh processes: `sft-eval audit --recipe` and `sft-eval report --recipe` (one question, 8 new
tokens), wall time and peak RSS. Goal: the 1B audit within 1.5x the tiny audit's time and under 1 GiB peak RSS
(the audit reads JSON, template files and embedding rows; weights stay memory-mapped and unread).

    python benchmarks/model_size.py [--keep DIR]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sft_eval.cache import FixtureCache
from sft_eval.console import configure_libraries
from sft_eval.models import SMOLLM2_135M, save_random_checkpoint
from sft_eval.pipeline import Pipeline
from sft_eval.recipe import DEFAULT_RECIPE, FIXTURES_DIR, load_recipe

LLAMA_1B = {  # Llama-3.2-1B's decoder (16 layers, hidden 2048, MLP 8192); the vocabulary is the tokenizer's
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}
AUDIT_RATIO_GOAL, AUDIT_RSS_GOAL_MIB = 1.5, 1024
# Peak RSS is this process's own VmHWM: ru_maxrss would start from the RSS of the parent it was forked from.
PROBE = """
import json, re, sys
from pathlib import Path
from sft_eval.cli import main
code = main(sys.argv[1:])
peak_kib = int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
print("@@" + json.dumps({"exit": code, "peak_rss_mib": peak_kib / 1024}))
"""
RECIPE = """name = "{name}"
[model]
base = "{base}"
tuned = "{tuned}"
[data]
train = "{train}"
limit = 16
[sft]
per_device_train_batch_size = 8
num_train_epochs = 1
logging_steps = 1
[eval]
max_new_tokens = 8
questions = ["What is the capital of France?"]
"""
STATE = {
    "global_step": 2,
    "max_steps": 2,
    "num_train_epochs": 1,
    "train_batch_size": 8,
    "logging_steps": 1,
    "log_history": [{"step": 1, "loss": 2.5, "grad_norm": 1.0}, {"step": 2, "loss": 1.2, "grad_norm": 0.8}],
}


def finished_run(folder: Path, name: str, base: Path) -> Path:
    """`base` as a run trained elsewhere: runs/<name>/checkpoint-2 (hard links to its files) and a recipe."""
    checkpoint = folder / "runs" / name / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    for item in base.iterdir():
        os.link(item, checkpoint / item.name)
    (checkpoint / "trainer_state.json").write_text(json.dumps(STATE), encoding="utf-8")
    recipe = folder / f"{name}.toml"
    train = FIXTURES_DIR / "data" / "sft_train.jsonl"
    recipe.write_text(RECIPE.format(name=name, base=base, tuned=checkpoint.parent, train=train), encoding="utf-8")
    return recipe


def timed(args: list[str], cache: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args, "--sft-cache", str(cache)], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    lines = [line for line in done.stderr.splitlines() + done.stdout.splitlines() if line.startswith("@@")]
    if not lines:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return {"wall_s": wall, **json.loads(lines[-1][2:])}


def main() -> int:
    configure_libraries()
    keep = Path(sys.argv[sys.argv.index("--keep") + 1]) if "--keep" in sys.argv else None
    folder = keep or Path(tempfile.mkdtemp(prefix="sft-eval-model-size-"))
    cache = folder / "cache"
    tiny = Pipeline(load_recipe(DEFAULT_RECIPE), FixtureCache(cache))
    tokenizer = tiny.tokenizer
    bases = {}
    bases["tiny"] = folder / "models" / "tiny"
    if not bases["tiny"].is_dir():
        shutil.copytree(tiny.base_model_dir, bases["tiny"], ignore=shutil.ignore_patterns("MANIFEST.json"))
        tokenizer.save_pretrained(bases["tiny"])
    for name, shape in (("smollm2-135m", SMOLLM2_135M), ("llama-1b", LLAMA_1B)):
        bases[name] = folder / "models" / name
        if not bases[name].is_dir():
            save_random_checkpoint(bases[name], tokenizer, **{**shape, "vocab_size": len(tokenizer)})
    rows = []
    try:
        for name, base in bases.items():
            shutil.rmtree(folder / "runs" / name, ignore_errors=True)
            recipe = finished_run(folder, name, base)
            size = sum(f.stat().st_size for f in base.glob("*.safetensors")) / 2**30
            timed(["audit", "--recipe", str(recipe)], cache)  # warm: the page cache and the tokenizer's files
            audit = timed(["audit", "--recipe", str(recipe)], cache)
            report = timed(["report", "--recipe", str(recipe), "--out", str(folder / "reports" / name)], cache)
            rows.append((name, size, audit, report))
            print(
                f"{name:13} {size:5.2f} GiB on disk | audit {audit['wall_s']:6.2f} s {audit['peak_rss_mib']:6.0f} MiB "
                f"(exit {audit['exit']}) | report {report['wall_s']:6.2f} s {report['peak_rss_mib']:6.0f} MiB "
                f"(exit {report['exit']})",
                flush=True,
            )
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    ratio = rows[-1][2]["wall_s"] / rows[0][2]["wall_s"]
    rss = rows[-1][2]["peak_rss_mib"]
    print(
        f"1B audit / tiny audit: {ratio:.2f}x (goal {AUDIT_RATIO_GOAL}x); 1B audit peak {rss:.0f} MiB "
        f"(goal {AUDIT_RSS_GOAL_MIB} MiB)"
    )
    return 0 if ratio <= AUDIT_RATIO_GOAL and rss <= AUDIT_RSS_GOAL_MIB else 1


if __name__ == "__main__":
    raise SystemExit(main())
