"""Real sizes, in one run, on synthetic data made here (nothing downloaded):

1. Training rows: reading + validating a `messages` JSONL of 10^5 and 10^6 rows with `load_sft_rows` against
   `datasets.load_dataset("json")` on the same file, each in a fresh process with a fresh Arrow cache (wall time
   and peak RSS); at 10^5 also the old row-by-row path (a Python dict per row, validated one by one).
2. `sft-eval plan --recipe` on the 10^6-row file, against `load_dataset` on it.
3. Questions: for 100, 1,000 and 10,000 questions, the paired bootstrap (`sanity.compare`), rendering the report
   (and its size per 1,000 questions), `pytest suites/ --collect-only` with a recipe asking them, and opening the
   10,000-question report in headless Chromium (Debian's, via Playwright) until its first page of cards is drawn.
4. The answer cache: `benchmarks/answer_cache.py` (cold vs warm `sft-eval report`), run as it is.

    python benchmarks/scale.py                 # everything (about 10 minutes on 2 cores)
    python benchmarks/scale.py --rows 100000   # smaller: only 10^5 rows
    python benchmarks/scale.py --no-answer-cache --no-browser
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "the", "model", "answers", "every", "question", "in", "one", "short", "sentence",
    "and", "then", "stops", "at", "the", "end", "of", "its", "turn",
]  # fmt: skip


def write_rows(path: Path, rows: int) -> None:
    """`rows` conversations of system, user and assistant turns, about 430 bytes each (like the issue's file)."""
    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as out:
        for i in range(rows):
            user = f"Question {i}: " + " ".join(rng.choices(WORDS, k=18))
            answer = " ".join(rng.choices(WORDS, k=30)) + "."
            row = {
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": answer},
                ]
            }
            out.write(json.dumps(row) + "\n")


def in_child(code: str, **env: str) -> str:
    """The stdout of `code` run in a fresh Python process."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1", **env},
    )
    if done.returncode:
        raise SystemExit(f"failed:\n{code}\n{done.stderr[-3000:]}")
    return done.stdout


def measured(setup: str, code: str, **env: str) -> dict:
    """Run `setup` (imports, not measured) then `code` in a fresh process: the seconds `code` took, the process's
    peak RSS (its own getrusage, imports included), its anonymous and file-backed RSS at the end (a memory-mapped
    Arrow file read through counts as file-backed: the kernel drops those pages under pressure), and `result`."""
    probe = (
        "import time, resource, json\n"
        + setup
        + "\nstart = time.perf_counter()\n"
        + code
        + "\nseconds = time.perf_counter() - start\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status') if ':' in line)\n"
        "print('@@' + json.dumps({'s': seconds, 'mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
        "'anon': int(status['RssAnon'].split()[0]) / 1024, 'file': int(status['RssFile'].split()[0]) / 1024, "
        "'out': str(result)}))"
    )
    line = [x for x in in_child(probe, **env).splitlines() if x.startswith("@@")][-1]
    return json.loads(line[2:])


LOAD_DATASET = (
    "dataset = datasets.load_dataset('json', data_files={path!r}, split='train', cache_dir={cache!r})\n"
    "result = len(dataset)"
)
RECIPE = (
    "recipe = recipe_from_dict({{'name': 's', 'data': {{'train': {path!r}}}, 'eval': {{'questions': ['q']}}}}, None)"  # noqa: E501
)
LOAD_SFT_ROWS = "dataset = load_sft_rows(recipe, cache_dir={cache!r})\nresult = len(dataset)"
ROW_BY_ROW = (
    "numbered = list(read_jsonl(Path({path!r})))\n"
    "result = len(validated_rows([r for _, r in numbered], [str(n) for n, _ in numbered]))"
)
# what each child imports before the clock starts: the libraries, not the measurement
IMPORTS = "import datasets, pyarrow\ndatasets.disable_progress_bars()\n"
OUR_IMPORTS = (
    IMPORTS
    + "from pathlib import Path\nfrom sft_eval.data import read_jsonl, validated_rows, load_sft_rows\n"
    + "from sft_eval.recipe import recipe_from_dict\n"
)


def rows_section(folder: Path, sizes: list[int], table: list[str]) -> None:
    table += [
        "",
        "| rows | file | `load_dataset` | `load_sft_rows` | ratio | peak RSS (load_dataset / load_sft_rows) |",
    ]
    table += ["|---|---|---|---|---|---|"]
    for rows in sizes:
        path = folder / f"rows-{rows}.jsonl"
        if not path.is_file():
            write_rows(path, rows)
        size = path.stat().st_size / 2**20
        base = measured(IMPORTS, LOAD_DATASET.format(path=str(path), cache=str(folder / f"hf-{rows}")))
        # the recipe is loaded before the clock starts (loading it finds the installed backends: imports, not rows)
        setup = OUR_IMPORTS + RECIPE.format(path=str(path))
        ours = measured(setup, LOAD_SFT_ROWS.format(cache=str(folder / f"ours-{rows}")))
        assert base["out"] == ours["out"] == str(rows), (base, ours)
        table.append(
            f"| {rows:,} | {size:.0f} MB | {base['s']:.1f} s | {ours['s']:.1f} s | {ours['s'] / base['s']:.2f}x | "
            f"{base['mib']:.0f} / {ours['mib']:.0f} MiB | {ours['anon']:.0f} / {ours['file']:.0f} MiB |"
        )
        print(table[-1], flush=True)
        if rows <= 100_000:
            old = measured(OUR_IMPORTS, ROW_BY_ROW.format(path=str(path)))
            table.append(
                f"| {rows:,}, row by row (the line scan, now only the fallback) | | | {old['s']:.1f} s | "
                f"{old['s'] / base['s']:.2f}x | {old['mib']:.0f} MiB | {old['anon']:.0f} / {old['file']:.0f} MiB |"
            )
            print(table[-1], flush=True)


def plan_section(folder: Path, rows: int, table: list[str]) -> None:
    path = folder / f"rows-{rows}.jsonl"
    if not path.is_file():
        write_rows(path, rows)
    recipe = folder / "plan.toml"
    recipe.write_text(f'name = "scale"\n[data]\ntrain = "{path}"\n[eval]\nquestions = ["q"]\n', encoding="utf-8")
    base = measured(IMPORTS, LOAD_DATASET.format(path=str(path), cache=str(folder / f"hf-plan-{rows}")))
    one = folder / "one-row.jsonl"
    write_rows(one, 1)
    (folder / "plan-one.toml").write_text(recipe.read_text(encoding="utf-8").replace(str(path), str(one)))
    cache = str(folder / "plan-cache")  # one sft-eval cache for the three commands, as a user's

    def plan(toml: Path) -> dict:
        done = measured(
            "",  # the whole command, its imports included, as a user waits for it
            "import contextlib, io\nfrom sft_eval.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
            f"    result = main(['plan', '--recipe', {str(toml)!r}, '--json'])",
            SFT_EVAL_CACHE=cache,
        )
        assert done["out"] == "0", done
        return done

    first = plan(folder / "plan-one.toml")  # the first command on a cache: TRL imported for SFTConfig's fields
    fixed = plan(folder / "plan-one.toml")  # then read from the cache's schemas/
    many = plan(recipe)
    table += [
        "",
        "| `sft-eval plan --recipe` (the whole command) | wall | peak RSS | `load_dataset` on the file | ratio |",
        "|---|---|---|---|---|",
        f"| {rows:,} rows | {many['s']:.1f} s | {many['mib']:.0f} MiB | {base['s']:.1f} s ({base['mib']:.0f} MiB) | "
        f"{many['s'] / base['s']:.2f}x |",
        f"| 1 row | {fixed['s']:.1f} s | {fixed['mib']:.0f} MiB | | |",
        f"| 1 row, the first command on a cache (imports TRL for SFTConfig's fields) | {first['s']:.1f} s | "
        f"{first['mib']:.0f} MiB | | |",
    ]
    print("\n".join(table[-3:]), flush=True)


def synthetic_evaluation(n: int):
    """`n` questions with base and tuned answers of about 60 words, scored by the real scorer."""
    from sft_eval.data import Question
    from sft_eval.records import Answer
    from sft_eval.sanity import evaluate

    rng = random.Random(n)
    questions, base, tuned = [], [], []
    for i in range(n):
        question = Question(f"Question {i}: what is {i} plus {i}?", str(2 * i) if i % 2 else None)
        before = " ".join(rng.choices(WORDS, k=60))
        after = f"{2 * i}. " + " ".join(rng.choices(WORDS, k=20))
        leak = "<|im_start|>user" if i % 50 == 0 else ""
        questions.append(question)
        base.append(Answer(question.question, before, before, [], 100, "length"))
        tuned.append(Answer(question.question, after, after + leak, [], 24, "eos"))
    return evaluate(questions, base, tuned, specials=["<|im_start|>", "<|im_end|>"])


def questions_section(folder: Path, sizes: list[int], browser: bool, table: list[str]) -> None:
    from sft_eval.recipe import DEFAULT_RECIPE, load_recipe
    from sft_eval.records import TrainingRun
    from sft_eval.report import build_context, write_report

    recipe = load_recipe(DEFAULT_RECIPE)
    run = TrainingRun(
        log_history=[{"step": s, "loss": 3.0 / s} for s in range(1, 14)],
        global_step=13,
        max_steps=13,
        num_train_epochs=1.0,
        train_rows=100,
        train_runtime_s=60.0,
        sft_config={"per_device_train_batch_size": 1, "gradient_accumulation_steps": 8, "num_train_epochs": 1},
    )
    table += [
        "",
        "| questions | bootstrap (5 metrics x 2,000) | report render | HTML size | per 1,000 questions | "
        "`pytest suites/ --collect-only` |",
        "|---|---|---|---|---|---|",
    ]
    reports = {}
    for n in sizes:
        evaluation = synthetic_evaluation(n)
        start = time.perf_counter()
        evaluation.comparison()
        boot = time.perf_counter() - start
        start = time.perf_counter()
        context = build_context(recipe=recipe, run=run, evaluation=evaluation, findings=[])
        path = write_report(context, folder / f"report-{n}")
        render = time.perf_counter() - start
        size = path.stat().st_size / 2**20
        reports[n] = path
        collect = collect_only(folder, n)
        table.append(
            f"| {n:,} | {boot * 1000:.0f} ms | {render:.2f} s | {size:.2f} MiB | {size / n * 1000:.2f} MiB | "
            f"{collect:.1f} s |"
        )
        print(table[-1], flush=True)
    if browser:
        largest = max(sizes)
        opened = open_in_chromium(reports[largest], largest - 1)
        table.append("")
        table.append(f"Chromium opens the {largest:,}-question report and draws its first page of cards in {opened}.")
        print(table[-1], flush=True)


def collect_only(folder: Path, n: int) -> float:
    """`pytest suites/ --collect-only` with a recipe asking `n` questions (nothing trains at collection)."""
    questions = folder / f"questions-{n}.jsonl"
    questions.write_text("".join(json.dumps({"question": f"Question {i}?"}) + "\n" for i in range(n)))
    from sft_eval.recipe import DEFAULT_RECIPE

    text = DEFAULT_RECIPE.read_text(encoding="utf-8")
    for relative in ("../data/sft_train.jsonl",):
        text = text.replace(f'"{relative}"', f'"{(DEFAULT_RECIPE.parent / relative).resolve()}"')
    text = text.replace('"../data/eval_questions.jsonl"', f'"{questions}"')
    recipe = folder / f"recipe-{n}.toml"
    recipe.write_text(text, encoding="utf-8")
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/", "--collect-only", "-q", "--sft-recipe", str(recipe)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "SFT_EVAL_CACHE": str(folder / "collect-cache")},
    )
    if done.returncode:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    return time.perf_counter() - start


def open_in_chromium(path: Path, last: int) -> str:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "(playwright not installed)"
    if not Path("/usr/bin/chromium").exists():
        return "(Debian's chromium not installed)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        start = time.perf_counter()
        tab.goto(path.as_uri())
        tab.wait_for_selector(".card")
        wall = time.perf_counter() - start
        start = time.perf_counter()
        tab.fill("#card-search", f"question {last}:")
        while tab.inner_text("#card-range") != "1–1 of 1":  # the page's CSP forbids wait_for_function's eval
            time.sleep(0.005)
        search = time.perf_counter() - start
        browser.close()
    return f"{wall:.2f} s (a search over all of them: {search * 1000:.0f} ms)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--questions", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--no-answer-cache", action="store_true")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--keep", type=Path, help="a folder to keep the generated files in (default: a temporary one)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="sft-eval-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    table: list[str] = [f"machine: {os.cpu_count()} cores; files in {folder}"]
    rows_section(folder, args.rows, table)
    plan_section(folder, max(args.rows), table)
    questions_section(folder, args.questions, not args.no_browser, table)
    if not args.no_answer_cache:
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "answer_cache.py")], capture_output=True, text=True
        )
        table += ["", "answer cache (benchmarks/answer_cache.py):", *done.stdout.strip().splitlines()[-4:]]
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
