"""The report's JSON (`sft_report.json`, `ReportData`) and the records it holds."""

# no `from __future__ import annotations`: Required and NotRequired must be seen when each record is made

from typing import Any, Literal, NotRequired, Required

from typing_extensions import TypedDict  # pydantic reads TypedDicts from typing_extensions on Python 3.11

from sft_eval.schema.bench import ServedBenchData
from sft_eval.schema.compare import ComparisonData
from sft_eval.schema.judge import JudgeData


class Side(TypedDict):
    """One model's answer to a card's question, with the badges a reviewer scans."""

    question: str
    """The question as asked."""
    text: str
    """The answer as shown: decoded without special tokens, the thinking block (if any) removed."""
    raw: str
    """The answer decoded with its special tokens, as the model wrote it."""
    token_ids: list[int]
    """The answer's token ids."""
    new_tokens: int
    """How many tokens the model generated."""
    stop_reason: str
    """`eos`: ended with a stop token; `length`: ran into `max_new_tokens`."""
    matched: bool | None
    """Whether the answer matches the expected one (normalised); null when the question has none."""
    repetition: float
    """The share of repeated word 4-grams, 0 to 1."""
    leaks: list[str]
    """Special tokens written into the shown answer (`<|im_start|>` and the like)."""
    chrf: float | None
    """chrF (0 to 100) against the expected answer; null without one."""


class ExpectedNll(TypedDict):
    """The expected answer's teacher-forced negative log-likelihood, nats per token, under each model."""

    base: float
    """Under the base model."""
    tuned: float
    """Under the tuned model."""


class Card(TypedDict):
    """One evaluation question, every model's answer side by side."""

    question: str
    """The question."""
    id: str
    """The question's id from the questions file; empty when it has none."""
    expected: str | None
    """The expected answer; null when the question has none (it is then not checkable)."""
    category: str
    """The question's category; empty when it has none."""
    cluster: NotRequired[str]
    """The question's `cluster` from the questions file (questions from one source), where it gives one: compare's
    clustered standard errors group by it, else by category."""
    base: Side
    """The base model's answer."""
    tuned: Side
    """The tuned model's answer."""
    diff: list[tuple[Literal["same", "del", "ins"], str]]
    """The word diff from the base answer to the tuned one: runs of (`same`, `del` or `ins`, the words)."""
    expected_nll: NotRequired[ExpectedNll]
    """The expected answer's NLL under both models; absent when it was not scored."""
    others: NotRequired[dict[str, Side]]
    """The answers of the models beyond the base and the tuned one (`models`), by name; absent when there are
    none."""


class Summary(TypedDict):
    """One model's answers summarised."""

    answers: int
    """How many answers."""
    checkable: int
    """How many of them have an expected answer."""
    match_rate: float | None
    """The share of checkable answers that match; null when none is checkable."""
    eos_stop_rate: float
    """The share of answers that ended with a stop token."""
    mean_new_tokens: float
    """The mean answer length in tokens."""
    mean_repetition: float
    """The mean repeated 4-gram share."""
    leak_rate: float
    """The share of answers that leak a special token."""
    mean_chrf: float | None
    """The mean chrF of the checkable answers; null when none is checkable."""


class Summaries(TypedDict):
    """Every model's summary."""

    base: Summary
    """The base model's."""
    tuned: Summary
    """The tuned model's."""
    others: NotRequired[dict[str, Summary]]
    """The summaries of the models beyond the base and the tuned one (`models`), by name; absent when there are
    none."""


class Difference(TypedDict):
    """Tuned minus base on one metric, with its paired bootstrap interval."""

    metric: str
    """The metric."""
    base: float
    """Its value for the base model."""
    tuned: float
    """Its value for the tuned model."""
    difference: float
    """Tuned minus base."""
    low: float
    """The interval's lower end (95% percentile bootstrap over questions, pairs kept together)."""
    high: float
    """The interval's upper end."""
    questions: int
    """How many paired questions."""
    p_value: float
    """The bootstrap's two-sided p-value of no difference."""
    beyond_noise: bool
    """Whether the interval excludes zero."""


class Category(TypedDict):
    """Both models' summaries over one question category (only when the questions carry more than one)."""

    category: str
    """The category; `(none)` for questions without one."""
    questions: int
    """How many questions it holds."""
    base: Summary
    """The base model over it."""
    tuned: Summary
    """The tuned model over it."""
    expected_nll: ExpectedNll | None
    """The mean expected-answer NLL over it; null when none was scored."""


class Finding(TypedDict):
    """One audit finding (`sft_eval.audit.Finding`)."""

    check: str
    """Its stable id, e.g. `template.prefix` (docs/audit.md)."""
    severity: Literal["error", "warning", "info"]
    """`error` fails the suites; `warning` and `info` are shown."""
    message: str
    """One line: what is wrong and what follows from it."""
    evidence: str
    """The offending text or tokens, the spot marked; empty when there is none."""


class Check(TypedDict):
    """One threshold check of the run (`verdict.judge`), the checks the suites assert."""

    name: str
    """The check, e.g. `eval.eos_stop_rate`."""
    passed: bool | None
    """Whether it held; null when it could not be judged (the message says why)."""
    message: str
    """What failed, or why it was not judged; empty when it held."""


class Failure(TypedDict):
    """A failed test of the pytest run the report came from."""

    nodeid: str
    """The test's node id."""
    when: str
    """The phase that failed: `setup`, `call` or `teardown`."""
    message: str
    """The failure's first line."""


class Skip(TypedDict):
    """A skipped test of the pytest run the report came from."""

    nodeid: str
    """The test's node id."""
    reason: str
    """Why it was skipped."""


class Outcomes(TypedDict):
    """The pytest run's outcomes, counted by the plugin."""

    passed: int
    """Tests passed."""
    failed: int
    """Tests failed (setup and teardown errors included)."""
    skipped: int
    """Tests skipped."""
    failures: list[Failure]
    """Each failure."""
    skips: list[Skip]
    """Each skip and its reason."""


class Training(TypedDict):
    """The training run: the trainer's own record (trained here or read from a finished run's folder)."""

    losses: list[tuple[int, float | None]]
    """(optimizer step, logged training loss); null for a loss that was not finite."""
    loss_drop: float | None
    """The share by which the last logged loss is below the first (0.5 = halved); null with fewer than two."""
    problems: list[str]
    """Non-finite losses or gradient norms, and a loss that fell short of `min_loss_drop`, one line each."""
    global_step: int
    """Optimizer steps taken."""
    train_rows: int
    """Training rows after preparation."""
    train_runtime_s: float | None
    """The trainer's runtime in seconds; null when not recorded."""
    adjustments: list[str]
    """What sft-eval changed in the trainer's settings, and why (a tokenizer's pad token, the device's dtype)."""
    plan: dict[str, Any]
    """The batch plan the settings imply (`plan.BatchPlan`): rows, batch, accumulation, world size, steps."""
    plan_mismatches: list[str]
    """Where the run differs from its plan (steps taken, sequences per step), one line each."""
    source: str
    """The finished run's folder when it was trained elsewhere; empty when trained here."""
    peft: dict[str, Any] | None
    """The LoRA settings (rank, alpha, modules, trainable parameters) of an adapter run; null otherwise."""
    steps: list[dict[str, Any]]
    """Per optimizer step and rank: micro-batches, sequences, label tokens and the losses as logged and
    recomputed (`training.SftEvalRecorder`)."""


class ToolScore(TypedDict):
    """One answer to a tool item scored (`toolcalls.ToolScore`)."""

    kind: Literal["call", "text"]
    """What the item expects: a tool call, or a text answer."""
    has_call: bool
    """The answer makes a call (a call the parser refused counts)."""
    name: bool
    """The first call names the expected tool."""
    valid: bool
    """Its arguments are a JSON object the tool's `parameters` schema accepts."""
    callable: bool
    """Right tool and valid arguments: a call a caller can execute."""
    precision: float
    """Of the argument fields given, the share with the expected value."""
    recall: float
    """Of the argument fields expected, the share given with that value."""
    exact: bool
    """One call, the expected name and exactly the expected arguments."""
    matched: bool
    """For an item expecting text: the answer matches it (normalised) and calls nothing."""
    error: str
    """Why the parser refused the answer, or why the arguments fail the schema; empty otherwise."""


class ToolSide(TypedDict):
    """One model's answer to a tool item, as written and as parsed."""

    raw: str
    """The answer decoded with its special tokens."""
    content: str
    """The answer's text, the calls parsed out of it."""
    calls: list[dict[str, Any]]
    """The calls parsed from it (`name`, `arguments`), in order."""
    new_tokens: int
    """How many tokens the model generated."""
    stop_reason: str
    """`eos` or `length`."""
    score: ToolScore
    """The answer scored."""


class ToolCard(TypedDict):
    """One tool item: the conversation asked, the tools offered, what it expects and every model's answer."""

    id: str
    """The item's id; empty when it has none."""
    category: str
    """Its category; empty when it has none."""
    messages: list[dict[str, Any]]
    """The conversation, as the item gives it (tool calls and results included)."""
    tools: list[str]
    """The names of the tools offered."""
    expected_call: dict[str, Any] | None
    """The call expected (`name`, `arguments`); null for an item expecting text."""
    expected: str | None
    """The text expected; null for an item expecting a call."""
    base: ToolSide
    """The base model's answer."""
    tuned: ToolSide
    """The tuned model's answer."""


class ToolSummary(TypedDict):
    """One model's answers to the tool items summarised (`toolcalls.ToolSummary`): rates over the items expecting a
    call and over those expecting text (0 when there are none)."""

    calls: int
    """Items expecting a call."""
    texts: int
    """Items expecting text."""
    has_call: float
    """The share of call items answered with a call."""
    name: float
    """The share naming the right tool."""
    valid: float
    """The share whose arguments the tool's schema accepts."""
    callable: float
    """The share with the right tool and valid arguments (the `tools.call` check)."""
    precision: float
    """Mean argument precision."""
    recall: float
    """Mean argument recall."""
    exact: float
    """The share of exact calls (the `tools.call_exact` check)."""
    text_matched: float
    """The share of text items answered as expected."""
    text_called: float
    """The share of text items answered with a call instead."""


class ToolReport(TypedDict):
    """The recipe's tool items (`eval.tool_items`) asked of both models."""

    summary: dict[str, ToolSummary]
    """Each model's rates, by name (`base`, `tuned`)."""
    comparison: list[Difference]
    """Tuned minus base per tool metric, with paired bootstrap intervals over the items."""
    cards: list[ToolCard]
    """One card per item."""


class RowLossData(TypedDict):
    """One scored row of a teacher-forced signal (`scoring.RowLoss`)."""

    label: str
    """The question, or `row N` of the held-out file, or `document N` of the general text."""
    tokens: int
    """The tokens it scores."""
    base: float
    """Mean token NLL under the base model, nats."""
    tuned: float
    """Mean token NLL under the tuned model, nats."""
    rise: float
    """Tuned minus base."""


class LengthsData(TypedDict):
    """Answer lengths in tokens (`scoring.Lengths`)."""

    base: list[int]
    """The base model's answers."""
    tuned: list[int]
    """The tuned model's answers."""
    training: list[int]
    """The training answers."""
    median_base: float | None
    """Their medians; null for an empty list."""
    median_tuned: float | None
    """The tuned answers' median."""
    median_training: float | None
    """The training answers' median."""
    ratio: float | None
    """The tuned median over the training median (each at least 1); null without both."""


class SignalsData(TypedDict):
    """The teacher-forced quality signals (`scoring.Signals`)."""

    held_out: list[RowLossData]
    """The held-out rows, as the recipe's trainer masks them."""
    expected: list[RowLossData]
    """The questions' expected answers after the served prompt."""
    general: list[RowLossData]
    """The general-text documents (forgetting)."""
    held_out_source: str
    """Where the held-out rows came from (`data.eval: FILE`, `data.eval_fraction: 0.1`); empty without any."""
    unscored: str
    """Why nothing was scored teacher-forced (a served model's weights are not here); empty when scored."""
    lengths: LengthsData | None
    """The answers' lengths; null when not measured."""
    eval_loss: tuple[float, float] | None
    """[base, tuned] token-weighted held-out loss; null without held-out rows."""
    eval_loss_drop: float | None
    """The tuned model's held-out loss below the base's, as a share of the base's."""
    general_loss: tuple[float, float] | None
    """[base, tuned] token-weighted loss on the general text; null without it."""
    forgetting: float | None
    """The tuned model's general-text loss over the base's."""
    comparison: list[Difference]
    """Tuned minus base per signal, with paired bootstrap intervals over the rows."""


class ThresholdsData(TypedDict, total=False):
    """The recipe's `[thresholds]` the run was judged by (`recipe.Thresholds`); the page reads `max_repetition`
    always, and the signals' thresholds with the signals."""

    min_loss_drop: float
    """`thresholds.min_loss_drop`."""
    min_eos_stop_rate: float
    """`thresholds.min_eos_stop_rate`."""
    min_match_rate: float
    """`thresholds.min_match_rate`."""
    max_repetition: Required[float]
    """`thresholds.max_repetition`."""
    max_base_eos_stop_rate: float
    """`thresholds.max_base_eos_stop_rate`."""
    min_chrf: float
    """`thresholds.min_chrf`."""
    min_tool_call_rate: float
    """`thresholds.min_tool_call_rate`."""
    min_tool_call_exact: float
    """`thresholds.min_tool_call_exact`."""
    min_eval_loss_drop: float
    """`thresholds.min_eval_loss_drop`."""
    max_forgetting: float
    """`thresholds.max_forgetting`."""
    max_expected_nll_rise: float
    """`thresholds.max_expected_nll_rise`."""
    max_length_ratio: float
    """`thresholds.max_length_ratio`."""
    min_judge_win_rate: float
    """`thresholds.min_judge_win_rate`."""
    max_judge_flip_rate: float
    """`thresholds.max_judge_flip_rate`."""
    min_judge_calibration: float
    """`thresholds.min_judge_calibration`."""
    max_ttft_p99_ms: float
    """`thresholds.max_ttft_p99_ms`."""
    max_tpot_p50_ms: float
    """`thresholds.max_tpot_p50_ms`."""
    min_goodput: float
    """`thresholds.min_goodput`."""
    gate: str
    """`thresholds.gate`."""
    max_regression: dict[str, float]
    """`thresholds.max_regression`, by metric."""


class ReportData(TypedDict):
    """A report: everything its page shows, and what `compare` and `[model] baseline` read."""

    format: Literal["sft-eval-report/1"]
    """This format's version, `sft-eval-report/1`."""
    title: str
    """The page's title, with the recipe's name."""
    models: NotRequired[list[str]]
    """The models evaluated, by name, in order: `base`, `tuned`, then any other the recipe names (`baseline`); a
    report written before this field compared `base` and `tuned` alone."""
    outcomes: Outcomes | None
    """The pytest run's outcomes when the report was written by a suite run; null from `sft-eval report`."""
    checks: list[Check]
    """The run judged against its thresholds: the checks the suites assert."""
    against_baseline: ComparisonData | None
    """The tuned model against a baseline: paired tests per metric, regressions, improvements, flips; null without
    a baseline."""
    signals: SignalsData | None
    """The teacher-forced quality signals: held-out, expected-answer and general losses, answer lengths and their
    comparison; null when not scored."""
    recipe: dict[str, Any]
    """The recipe's settings as run (`Recipe.fingerprint()`), by section."""
    recipe_path: str | None
    """The recipe file; null for a recipe built in code."""
    environment: dict[str, str]
    """Library versions, Python, the device and where each model and answer came from."""
    audit: list[Finding]
    """The audit's findings."""
    data_preview: list[list[str]]
    """The first training rows as the model sees them: (role, text) pairs per row."""
    training: Training
    """The training run."""
    summary: Summaries
    """Each model's answers summarised."""
    comparison: list[Difference]
    """Tuned minus base per metric, with paired bootstrap intervals."""
    categories: list[Category]
    """Per question category; empty when the questions carry fewer than two."""
    thresholds: ThresholdsData
    """The recipe's thresholds the run was judged by: numbers, the comparison's `gate` and its `max_regression`
    margins by metric."""
    cards: list[Card]
    """One card per question: both answers, their badges and the word diff."""
    speed: dict[str, float] | None
    """Generation speed measured with the report (tokens per second and the like); null when not measured."""
    judge: NotRequired[JudgeData | None]
    """The recipe's `[judge]` on the tuned answers against the base's (docs/judge.md); null or absent without one."""
    served_bench: NotRequired[ServedBenchData | None]
    """`sft-eval bench --served`'s result, shown by `sft-eval report --bench FILE` (docs/served-bench.md); absent
    without one."""
    judge_baseline: NotRequired[JudgeData | None]
    """The same judge on the tuned answers against `[model] baseline`'s; null or absent without a judge and a
    baseline model."""
    tools: NotRequired[ToolReport | None]
    """The tool items asked of both models (docs/tools.md); null when the recipe has none; absent from a report
    written before this field."""
