"""The recipe's SFT in several processes: run under torchrun (gloo on CPU, NCCL on GPUs).

    torchrun --nproc_per_node 2 -m sft_eval.distributed --out DIR [--recipe R] [--rows N] [--set key=value ...]

Every rank trains the same variant run as `Pipeline.train_variant` (the recipe's `[sft]` overridden by `--set`,
a loss logged every step, no warmup) and writes its own record,
`DIR/rank-<r>.json` (a TrainingRun with that rank's SftEvalRecorder steps), so a check can hold the plan against
what each process really did. This is how a user who outgrows one process runs; sft-eval's math must hold here.

The ranks build no fixture. Building one takes its cache entry's lock, and building the tiny base trains it, which
inside a process group joins the group's collectives: one rank would hold the lock while it waits in a collective
for a rank that waits for the lock. So the tokenizer and the base are built first, in one process (`sft-eval train`,
or the suite's session pipeline), and a rank that does not find them says so in one line.

`launch` starts such a run from Python with a hang guard: a run still going after the guard is stopped, and the
error holds every rank's Python stack (faulthandler), so a hang is a failure with its evidence, not a silent wait.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from sft_eval.cache import NotBuilt
from sft_eval.errors import SftEvalError
from sft_eval.options import add_options, positive_int

if TYPE_CHECKING:
    import psutil

GRACE_S = 30  # after the guard: how long the ranks get to print their stacks and torchrun to report them


class Hung(Exception):
    """A torchrun run still going after its guard; the message holds every rank's Python stack."""


def launch(
    arguments: list[str],
    *,
    nproc: int,
    guard_s: float,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`torchrun --nproc_per_node NPROC ARGUMENTS` (a `-m module ...` or a script and its arguments) on a free
    loopback port, in a process group of its own; its result once it exits. Still running after `guard_s`: torchrun
    and every rank are paused, then each rank in turn is sent SIGABRT, which faulthandler (PYTHONFAULTHANDLER)
    turns into every thread's Python stack on the rank's stderr; the group is killed, and `Hung` carries the
    stacks."""
    import psutil

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        *arguments,
    ]
    environment = {**(env if env is not None else os.environ), "PYTHONFAULTHANDLER": "1"}
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        start_new_session=True,  # torchrun and its ranks: one group, killed together
    )
    try:
        stdout, stderr = process.communicate(timeout=guard_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGSTOP)  # torchrun paused: it must not tear the ranks down mid-dump
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:  # it ended between the guard and the pause: whatever it left is killed below
            children = []
        ranks = sorted(((_rank_of(p), p) for p in children), key=lambda pair: pair[0])
        for _, rank in ranks:  # all paused first: none reacts to another's end (a lock freed, a peer gone)
            with contextlib.suppress(psutil.NoSuchProcess):
                rank.send_signal(signal.SIGSTOP)
        for _, rank in ranks:  # then one at a time, so that their stacks do not interleave on the shared stderr
            with contextlib.suppress(psutil.NoSuchProcess):
                rank.send_signal(signal.SIGABRT)  # pending until it runs again, then delivered where it stood
                rank.send_signal(signal.SIGCONT)
                _until_dead(rank)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        names = [f"rank {number} (pid {rank.pid})" for number, rank in ranks]
        raise Hung(
            f"hung: torchrun ({nproc} processes) had not exited after {guard_s:.0f} s (a hang guard, not a speed "
            f"check); each rank's Python stack when it was stopped:\n{rank_stacks(stderr, names)}"
        ) from None
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def rank_stacks(stderr: str, names: list[str]) -> str:
    """The faulthandler dumps in `stderr`, each from its "Fatal Python error" line to the list of extension modules
    after its stacks, headed by the `names` of the processes in the order they dumped; the end of `stderr` where
    none dumped."""
    dumps = re.findall(r"^Fatal Python error.*?(?=^Extension modules|^Fatal Python error|\Z)", stderr, re.M | re.S)
    if not dumps:
        return "(no rank printed a stack)\n" + "\n".join(stderr.splitlines()[-60:])
    named = [*names, *["another process"] * len(dumps)]
    return "\n\n".join(f"--- {name} ---\n{dump.strip()}" for name, dump in zip(named, dumps, strict=False))


def _until_dead(process: psutil.Process) -> None:
    """Wait (up to GRACE_S) until `process` has exited: gone, or a zombie its paused parent has not reaped."""
    import psutil

    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)


def _rank_of(process: psutil.Process) -> int:
    """A torchrun child's RANK (from its environment; -1 where it cannot be read: gone, or not ours to read)."""
    import psutil

    try:
        return int(process.environ().get("RANK", -1))
    except (psutil.Error, ValueError):
        return -1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sft_eval.distributed")
    parser.add_argument("--out", required=True, metavar="DIR")
    add_options(parser.add_argument, ("recipe", "sft-cache", "device"))
    parser.add_argument("--rows", type=positive_int, default=None, metavar="N", help="the first N training rows")
    parser.add_argument("--no-dropout", action="store_true", help="train with dropout off (exact comparisons)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an [sft] key (TOML)")
    args = parser.parse_args(argv)

    import torch

    from sft_eval.console import configure_libraries
    from sft_eval.factory import open_pipeline, read_inputs

    configure_libraries()
    device = args.device
    if device in ("auto", "cuda") and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"  # one GPU per rank, as torchrun numbers them
    try:
        pipeline = open_pipeline(read_inputs(args.recipe), cache_dir=args.sft_cache, device=device, builds=False)
        try:  # found, not built, before the trainer starts a process group
            _ = pipeline.tokenizer, pipeline.base_model_dir
        except NotBuilt as exc:
            first = f"sft-eval train --recipe {args.recipe} --device {pipeline.device.type}"
            first += f" --sft-cache {args.sft_cache}" if args.sft_cache else ""
            raise SftEvalError(
                f"{exc}: the ranks never build a fixture (a build inside a process group can deadlock on its "
                f"lock); build it first, in one process: `{first}`"
            ) from None
        overrides = {k: v for item in args.set for k, v in tomllib.loads(item).items()}
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rank = int(os.environ.get("RANK", "0"))
        rows = args.rows or len(pipeline.rows)
        run, _ = pipeline.train_variant(rows, out / f"trainer-{rank}", dropout=not args.no_dropout, **overrides)
    except SftEvalError as exc:
        print(f"sft_eval.distributed: {exc}", file=sys.stderr)
        _exit(2)
    (out / f"rank-{rank}.json").write_text(json.dumps(run.to_dict(), indent=1), encoding="utf-8")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _exit(code: int) -> None:
    """End this rank now. Interpreter finalization can still abort a rank after its work is done ("terminate called
    without an active exception": c10d/gloo C++ threads and objects torn down after Python, pytorch#190489,
    #179291; seen in about 1 of 3 CI runs), which torchrun reports as a failed run; nothing is left to clean up."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
    _exit(0)
