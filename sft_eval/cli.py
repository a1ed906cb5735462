"""`sft-eval` on the command line: the same stages as the pytest suites, from a shell.

Exit codes: 0 everything held, 1 a check failed, 2 bad input (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from sft_eval import __version__
from sft_eval.errors import SftEvalError
from sft_eval.jsonout import dumps
from sft_eval.kernels import pin_cpu_kernels
from sft_eval.options import EVALUATE, RUN, add_options, positive_float, positive_int, probability
from sft_eval.recipe import GATES
from sft_eval.served_command import add_served_options, bench_served_command

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is exit 2 with one line (argparse's own code is also 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"sft-eval: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sft-eval",
        description="Check a supervised fine-tuning run before and after it happens.",
        epilog="exit codes: 0 every check held, 1 a check failed, 2 bad input (one line on stderr, no traceback)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_recipe(name: str, help_text: str, options: tuple[str, ...] = EVALUATE) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_options(command.add_argument, options)
        command.add_argument("--json", action="store_true", help="print one JSON object on stdout (default: text)")
        return command

    audit = with_recipe("audit", "check the chat template, tokenizer pad/eos settings and data before training", RUN)
    audit.add_argument("--template", metavar="FILE", help="audit this .jinja template instead of the recipe's")
    audit.add_argument("--tokenizer", metavar="DIR", help="audit this tokenizer folder (offline) instead")
    plan = sub.add_parser(
        "plan",
        help="batch plan arithmetic",
        description="effective batch, micro-batches and optimizer steps: from --recipe (its rows and [sft]), "
        "or from the numbers given; a number given overrides the recipe's",
    )
    plan.add_argument("--recipe", metavar="PATH", help="take rows and batch settings from this recipe")
    add_options(plan.add_argument, ["max-train-rows"])
    plan.add_argument("--rows", type=positive_int, metavar="N", help="training rows after preparation")
    plan.add_argument(
        "--per-device-batch",
        type=positive_int,
        metavar="B",
        help="per_device_train_batch_size: sequences per process per micro-batch (default: the recipe's)",
    )
    plan.add_argument(
        "--grad-accum",
        type=positive_int,
        metavar="G",
        help="gradient_accumulation_steps: micro-batches per optimizer step (default: the recipe's)",
    )
    plan.add_argument("--world-size", type=positive_int, default=1, metavar="W", help="processes (default: 1)")
    span = plan.add_mutually_exclusive_group()
    span.add_argument("--epochs", type=positive_float, metavar="E", help="epochs (default: 1, or the recipe's)")
    span.add_argument(
        "--max-steps",
        type=positive_int,
        default=None,
        metavar="S",
        help="optimizer steps, overrides epochs (default: none)",
    )
    plan.add_argument("--drop-last", action="store_true", help="the dataloader drops an incomplete last batch")
    plan.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    with_recipe("train", "build the fixtures and run the recipe's SFT (cached); print what training logged", RUN)
    bench = with_recipe(
        "bench",
        "generation speed: the lesson's loop vs the batched engine vs a raw KV-cache loop; with --served, the model "
        "as a server serves it (TTFT, TPOT, ITL, E2EL and goodput per concurrency)",
    )
    add_served_options(bench)
    report = with_recipe("report", "render the before/after HTML report from the cached run")
    report.add_argument("--out", metavar="DIR", default="reports", help="output folder (default: reports/)")
    report.add_argument(
        "--baseline",
        metavar="FILE",
        help="the accepted run's sft_report.json: the report's \"Against the baseline\" section, and exit 1 on a "
        "regression beyond noise (default: none)",
    )
    report.add_argument(
        "--bench",
        metavar="FILE",
        help='a `sft-eval bench --served --json` file: the report\'s "As served" section (default: none)',
    )
    report.add_argument(
        "--from-json",
        metavar="FILE",
        help="render the HTML again from a report's sft_report.json, with no model, cache or recipe (default: off)",
    )
    sweep = with_recipe(
        "sweep",
        "every checkpoint of the run model.tuned names on the recipe's questions: the best one, overfitting, and the "
        "last against the best; writes sweep.html and sweep.json",
    )
    sweep.add_argument("--out", metavar="DIR", default="reports", help="output folder (default: reports/)")
    compare = sub.add_parser(
        "compare",
        help="is NEW better or worse than BASELINE: two reports' JSON, paired per question",
        description="the tuned model of NEW (an sft_report.json) against BASELINE's, paired per question: flips of "
        "every binary check, exact McNemar and the paired bootstrap, Holm-Bonferroni across metrics; exit 1 on a "
        "regression (a metric worse beyond noise), 0 otherwise; the verdict is also appended to "
        "$GITHUB_STEP_SUMMARY where that is set",
    )
    compare.add_argument("baseline", metavar="BASELINE", help="the accepted run's sft_report.json")
    compare.add_argument("candidate", metavar="NEW", help="the new run's sft_report.json")
    compare.add_argument(
        "--alpha",
        type=probability,
        default=0.05,
        metavar="A",
        help="significance level after Holm-Bonferroni (default: 0.05)",
    )
    compare.add_argument(
        "--gate",
        choices=GATES,
        default=None,
        help="difference: fail on a metric worse beyond noise; non-inferiority: each metric with a margin passes "
        "only when its drop is shown within it (default: NEW's [thresholds] gate, else difference)",
    )
    compare.add_argument(
        "--margin",
        action="append",
        default=[],
        metavar="METRIC=DROP",
        help="the largest drop accepted for a metric, in its units (exact_match=0.02, chrf=2); repeatable; given, "
        "it replaces NEW's [thresholds.max_regression] (default: those)",
    )
    compare.add_argument("--json", action="store_true", help="print one JSON object on stdout (default: text)")
    power = sub.add_parser(
        "power",
        help="how many paired questions detect a drop, or what drop N questions detect (before you write them)",
        description="the exact McNemar test's power, computed exactly: the questions needed to detect a drop of "
        "DROP in a pass rate at 80%% power, or with --questions the smallest drop N questions detect; the runs' "
        "disagreement (the share of questions they answer differently) defaults to that of two independent runs at "
        "this accuracy, 2 p (1 - p)",
    )
    power.add_argument("--accuracy", type=probability, required=True, metavar="P", help="the pass rate, 0 to 1")
    aim = power.add_mutually_exclusive_group(required=True)
    aim.add_argument("--drop", type=probability, metavar="D", help="the drop in the pass rate to detect (0.03)")
    aim.add_argument("--questions", type=positive_int, metavar="N", help="the paired questions you have")
    power.add_argument(
        "--disagreement",
        type=probability,
        default=None,
        metavar="R",
        help="share of questions the two runs answer differently (default: 2 P (1 - P), independent runs)",
    )
    power.add_argument("--alpha", type=probability, default=0.05, metavar="A", help="significance (default: 0.05)")
    power.add_argument("--json", action="store_true", help="print one JSON object on stdout (default: text)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pin_cpu_kernels()  # before torch computes anything: trained here, the same model on any x86-64 CPU with AVX2
    try:
        return COMMANDS[args.command](args)
    except SftEvalError as exc:
        print(f"sft-eval: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _inputs(args: argparse.Namespace) -> Any:
    """The recipe and its questions, read and validated with the command's limits (`factory.read_inputs`)."""
    from sft_eval.factory import read_inputs

    return read_inputs(
        args.recipe, max_train_rows=args.max_train_rows, max_eval_questions=getattr(args, "max_eval_questions", None)
    )


def _pipeline(args: argparse.Namespace, inputs: Any = None) -> Any:
    """The recipe's pipeline, through the one factory: recipe, questions and (where the command reads them) the
    training rows validated before torch is imported. An audit of another template or tokenizer reads no rows.
    `inputs`: the recipe already read by `_inputs`, not read again."""
    from sft_eval.factory import open_pipeline

    inputs = inputs or _inputs(args)
    return open_pipeline(
        inputs,
        cache_dir=args.sft_cache,
        device=args.device,
        answer_cache=not getattr(args, "no_answer_cache", False),
        read_rows=not (getattr(args, "template", None) or getattr(args, "tokenizer", None)),
    )


def _audit(args: argparse.Namespace) -> int:
    from sft_eval.audit import has_errors

    findings = _pipeline(args).audit(template=args.template, tokenizer_dir=args.tokenizer)
    if args.json:
        print(dumps({"findings": [f.to_dict() for f in findings]}))
    else:
        for f in findings:
            print(f"{f.severity:7} {f.check}: {f.message}")
            if f.evidence:
                print(f"        {f.evidence}")
        errors = sum(f.severity == "error" for f in findings)
        print(f"{len(findings)} finding(s), {errors} error(s)")
    return EXIT_FAILED if has_errors(findings) else EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    from sft_eval.plan import plan_batches

    if args.recipe:
        plan = _recipe_plan(args)
    else:
        missing = [flag for flag in ("rows", "per_device_batch", "grad_accum") if getattr(args, flag) is None]
        if missing:
            flags = ", ".join("--" + flag.replace("_", "-") for flag in missing)
            raise SftEvalError(f"plan needs --recipe, or {flags}")
        plan = plan_batches(
            args.rows,
            args.per_device_batch,
            args.grad_accum,
            args.world_size,
            epochs=None if args.max_steps is not None else (args.epochs or 1.0),
            max_steps=args.max_steps,
            drop_last=args.drop_last,
        )
    if args.json:
        print(dumps(plan.to_dict()))
    else:
        print(
            f"effective batch {plan.effective_batch} = {plan.per_device_batch} per device x {plan.world_size} "
            f"process(es) x {plan.grad_accum} accumulation"
        )
        print(
            f"{plan.micro_batches_per_rank} micro-batches per rank per epoch -> {plan.steps_per_epoch} optimizer "
            f"steps per epoch, {plan.optimizer_steps} in all"
        )
        if plan.last_step_micro_batches != plan.grad_accum:
            print(
                f"an epoch's last step accumulates {plan.last_step_micro_batches} micro-batch(es), not "
                f"{plan.grad_accum}: it sees {plan.last_step_micro_batches * plan.per_device_batch * plan.world_size} "
                "sequences at most"
            )
    return EXIT_OK


def _recipe_plan(args: argparse.Namespace) -> Any:
    """The recipe's plan: its rows (after limits) and its SFTConfig, each overridden by a number given. The recipe
    is read first: a bad one is answered before `datasets` is imported."""
    from sft_eval.recipe import load_recipe, with_limits

    recipe = with_limits(load_recipe(args.recipe), max_train_rows=args.max_train_rows)
    from sft_eval.console import configure_libraries
    from sft_eval.data import training_rows
    from sft_eval.trainer_config import recipe_plan

    configure_libraries()
    overrides = {
        "per_device_train_batch_size": args.per_device_batch,
        "gradient_accumulation_steps": args.grad_accum,
        "num_train_epochs": args.epochs,
        "max_steps": args.max_steps,
        "dataloader_drop_last": args.drop_last or None,
    }
    recipe = recipe.with_sft(**{k: v for k, v in overrides.items() if v is not None})
    return recipe_plan(recipe, args.rows or len(training_rows(recipe)), args.world_size)


def _train(args: argparse.Namespace) -> int:
    from sft_eval.records import loss_drop, loss_problems, plan_problems, unjudged_loss

    pipeline = _pipeline(args)
    run = pipeline.training_run
    drop, threshold = loss_drop(run), pipeline.recipe.thresholds.min_loss_drop
    problems, not_judged = loss_problems(run, threshold), unjudged_loss(run)
    if run.log_history:  # the steps the recipe plans against the ones the trainer planned and ran
        problems += plan_problems(run)
    result = {
        "global_step": run.global_step,
        "train_rows": run.train_rows,
        "losses": run.losses(),
        "loss_drop": drop,
        "min_loss_drop": threshold,
        "problems": problems,
        "not_judged": not_judged,
        "train_runtime_s": run.train_runtime_s,
        "adjustments": run.adjustments,
        **pipeline.describe(),
    }
    if args.json:
        print(dumps(result))
    else:
        if run.source:  # a run trained elsewhere: nothing trained, its record read
            print(f"nothing trained: read the record of {run.global_step} step(s) from {run.source}")
        else:
            print(f"trained {run.global_step} step(s) on {run.train_rows} rows; cached at {result['tuned_entry']}")
        if drop is not None:
            first, last = run.losses()[0][1], run.losses()[-1][1]
            print(f"loss {first:.3f} -> {last:.3f} ({drop:.0%} drop, recipe asks at least {threshold:.0%})")
        if not_judged:
            print(f"loss not judged: {not_judged}")
        for note in run.adjustments:
            print(f"note: {note}")
        for problem in problems:
            print(f"problem: {problem}")
    return EXIT_FAILED if problems else EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    from sft_eval.bench import bench_prompts, measure_speed

    inputs = _inputs(args)
    if args.served or inputs.recipe.bench.served:
        return bench_served_command(args, inputs)
    pipeline = _pipeline(args, inputs)
    prompts = bench_prompts([q.question for q in pipeline.questions])
    budget = pipeline.recipe.eval.max_new_tokens
    tuned = measure_speed(pipeline.tuned_model, pipeline.tokenizer, prompts, max_new_tokens=budget)
    base = measure_speed(pipeline.base_model, pipeline.tokenizer, prompts, max_new_tokens=budget)
    if args.json:  # the tuned model's figures at the top level (the contract), the base model's beside them
        print(dumps({**tuned.to_dict(), "model": "tuned", "base": base.to_dict()}))
    else:
        for name, result in (("tuned", tuned), ("base", base)):
            print(f"{name}: {result.prompts} prompts, {result.new_tokens} new tokens (greedy)")
            print(f"  one at a time  {result.loop_tokens_per_s:9.0f} tokens/s")
            print(f"  batched        {result.batched_tokens_per_s:9.0f} tokens/s  ({result.speedup:.1f}x the loop)")
            print(
                f"  raw KV floor   {result.raw_floor_tokens_per_s:9.0f} tokens/s  "
                f"(engine at {result.engine_to_floor:.0%} of it)"
            )
            print(f"  identical greedy answers: {result.identical_outputs}")
    return EXIT_OK if tuned.identical_outputs and base.identical_outputs else EXIT_FAILED


def _report(args: argparse.Namespace) -> int:
    from sft_eval.cache import writable_folder
    from sft_eval.report import render_json, write_report

    writable_folder(args.out, key="--out")
    if args.from_json:
        path = render_json(args.from_json, args.out).resolve()
        print(dumps({"report": str(path)}) if args.json else f"report: {path}")
        return EXIT_OK
    baseline = None
    if args.baseline:  # read and checked before any model loads: a bad one is one line
        from sft_eval.report import read_report_json

        baseline = (args.baseline, read_report_json(args.baseline))
    served = None
    if args.bench:  # likewise
        from sft_eval.report.reader import read_bench_json

        served = read_bench_json(args.bench)
    context = _pipeline(args).report_context(baseline=baseline)
    if served is not None:
        context["served_bench"] = served
    path = write_report(context, args.out).resolve()
    failing = [c for c in context["checks"] if c["passed"] is False]
    against = context["against_baseline"] or {}
    regressions = against.get("regressions", []) + against.get("not_shown_non_inferior", [])
    unknown = against.get("not_comparable", [])
    if args.json:
        failed = {"failed": [c["name"] for c in failing], "regressions": regressions, "not_comparable": unknown}
        print(dumps({"report": str(path), **failed}))
    else:
        for check in failing:
            print(f"FAILED {check['name']}: {check['message'].splitlines()[0]}")
        if regressions:
            print(f"REGRESSION against {against['baseline']}: {', '.join(regressions)}")
        if unknown:
            print(f"NOT COMPARABLE against {against['baseline']}: {', '.join(unknown)} (a score that is not a number)")
        print(f"report: {path}")
    return EXIT_FAILED if failing or regressions or unknown else EXIT_OK


def _sweep(args: argparse.Namespace) -> int:
    from sft_eval.audit import has_errors
    from sft_eval.cache import writable_folder
    from sft_eval.checkpoint_sweep import sweep_checkpoints
    from sft_eval.report import write_sweep

    writable_folder(args.out, key="--out")
    result = sweep_checkpoints(_pipeline(args))
    data = result.to_dict()
    path = write_sweep(data, args.out).resolve()
    if args.json:
        print(dumps({**data, "page": str(path)}))
    else:
        columns = ("match_rate", "eos_stop_rate", "leak_rate", "mean_repetition", "eval_loss", "train_loss")
        print(f"run {result.run}")
        print(f"{'checkpoint':<18}{'step':>7}  " + "  ".join(f"{c:>15}" for c in columns))
        for row in result.rows:
            values = "  ".join(f"{row[c]:>15.3f}" if row[c] is not None else f"{'':>15}" for c in columns)
            print(f"{row['name'] + (' *' if row['name'] == result.best else ''):<18}{row['step']:>7}  {values}")
        print(f"best: {result.best} (by {', '.join(result.best_by)})")
        for f in result.findings:
            print(f"{f.severity:7} {f.check}: {f.message}")
            if f.evidence:
                print(f"        {f.evidence}")
        for note in result.notes:
            print(f"note: {note}")
        print(f"sweep: {path}")
    return EXIT_FAILED if has_errors(result.findings) else EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from sft_eval.compare import compare_outcomes, outcomes_from_report
    from sft_eval.comparison_text import describe, write_step_summary
    from sft_eval.judge.records import same_judge
    from sft_eval.report import read_report_json

    baseline, candidate = read_report_json(args.baseline), read_report_json(args.candidate)
    same_judge(baseline, candidate, (args.baseline, args.candidate))
    recorded = candidate.get("thresholds") or {}  # what NEW was judged by, unless the command line says otherwise
    gate = args.gate or recorded.get("gate") or "difference"
    margins = dict({} if args.margin else recorded.get("max_regression") or {})  # an object: the reader checked
    if gate not in GATES:
        raise SftEvalError(
            f"{args.candidate}: thresholds.gate is {gate!r}, not a gate sft-eval knows ({', '.join(GATES)}); pass "
            "--gate"
        )
    for item in args.margin:
        metric, _, value = item.partition("=")
        try:
            margins[metric.strip()] = float(value)
        except ValueError:
            raise SftEvalError(f"--margin: expected METRIC=DROP (exact_match=0.02), not {item!r}") from None
    comparison = compare_outcomes(
        outcomes_from_report(baseline),
        outcomes_from_report(candidate),
        baseline_name=args.baseline,
        candidate_name=args.candidate,
        alpha=args.alpha,
        gate=gate,
        margins=margins,
    )
    write_step_summary(comparison)
    print(dumps(comparison.to_dict()) if args.json else "\n".join(describe(comparison)))
    return EXIT_OK if comparison.passed else EXIT_FAILED


def _power(args: argparse.Namespace) -> int:
    from sft_eval.compare import shown
    from sft_eval.power import POWER, binary_mde, binary_questions_needed

    disagreement = args.disagreement if args.disagreement is not None else 2 * args.accuracy * (1 - args.accuracy)
    plan = {"accuracy": args.accuracy, "disagreement": disagreement, "alpha": args.alpha, "power": POWER}
    if args.questions is not None:
        mde = binary_mde(args.questions, disagreement, args.alpha)
        result = {**plan, "questions": args.questions, "min_detectable_effect": mde, "undetectable": mde is None}
        said = (
            f"with {args.questions} paired questions no drop is detectable at alpha {args.alpha:g}"
            if mde is None
            else f"with {args.questions} paired questions a drop of {shown('exact match', mde)} would be missed one "
            "time in five; smaller drops more often"
        )
    else:
        needed = binary_questions_needed(args.drop, disagreement, args.alpha)
        result = {**plan, "drop": args.drop, "questions": needed}
        said = (
            f"a drop of {shown('exact match', args.drop)} needs about {needed} paired questions to be caught four "
            "times in five"
            if needed is not None
            else f"a drop of {shown('exact match', args.drop)} is not detectable with up to 100,000 questions"
        )
    print(
        dumps(result)
        if args.json
        else f"{said} (accuracy {args.accuracy:g}, runs disagreeing on "
        f"{disagreement:.3g} of the questions, alpha {args.alpha:g}, exact McNemar test)"
    )
    return EXIT_OK


COMMANDS = {
    "audit": _audit,
    "plan": _plan,
    "train": _train,
    "bench": _bench,
    "report": _report,
    "sweep": _sweep,
    "compare": _compare,
    "power": _power,
}


if __name__ == "__main__":
    raise SystemExit(main())
