"""Every real chat template and tokenizer we have audits through `sft-eval audit --json` without a traceback:
valid strict JSON and exit 0 or 1 for each of the 68 llama.cpp test templates, TRL's 72 shipped templates and the
real tokenizers under ../shared/realworld (one line and exit 2 for TinyLlama's, which does not load by design).

One subprocess runs the CLI's `main` once per input (147 process start-ups would cost 20 minutes); an exception
escaping `main` is recorded as that input's traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trl

pytestmark = pytest.mark.slow  # audits every real template and tokenizer, in a process of its own

DRIVER = """
import contextlib, io, json, sys, traceback
from sft_eval.cli import main

for line in sys.stdin:
    args = json.loads(line)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            traceback.print_exc()
            code = "traceback"
    print(json.dumps({"args": args, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}), flush=True)
"""


def _strict(text: str):
    def refuse(token: str):
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_every_real_template_and_tokenizer_audits_to_json_without_a_traceback(realworld_dir, tmp_path, cli):
    templates = sorted((realworld_dir / "llama.cpp-templates").glob("*.jinja"))
    templates += sorted((Path(trl.__file__).parent / "chat_templates").glob("*.jinja"))
    tokenizers = sorted(p for p in (realworld_dir / "tokenizers").iterdir() if p.is_dir())
    assert len(templates) >= 100 and tokenizers, (templates, tokenizers)
    inputs = [["audit", "--template", str(t), "--json"] for t in templates]
    inputs += [["audit", "--tokenizer", str(t), "--json"] for t in tokenizers]
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", DRIVER],
        input="".join(json.dumps(a) + "\n" for a in inputs),
        capture_output=True,
        text=True,
        env=cli.environ(SFT_EVAL_RENDER_TIMEOUT_S="10"),
        timeout=cli.hang_guard_s,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"args"')]
    assert len(results) == len(inputs), done.stderr[-3000:]
    problems, unloadable = [], []
    for result in results:
        name = Path(result["args"][2]).name
        lines = result["stderr"].strip().splitlines()
        if result["code"] == 2 and len(lines) == 1 and lines[0].startswith("sft-eval: error:"):
            unloadable.append(name)  # bad input, said in one line (TinyLlama's tokenizer.json does not load)
            continue
        if result["code"] not in (0, 1) or "Traceback" in result["stderr"]:
            problems.append(f"{name}: exit {result['code']}: {result['stderr'][-600:]}")
            continue
        try:
            findings = _strict(result["stdout"])["findings"]
        except ValueError as exc:
            problems.append(f"{name}: not JSON ({exc}): {result['stdout'][:200]!r}")
            continue
        if (result["code"] == 1) != any(f["severity"] == "error" for f in findings):
            problems.append(f"{name}: exit {result['code']} disagrees with its findings")
    assert not problems, "\n".join(problems)
    assert unloadable == ["TinyLlama-1.1B-Chat-v1.0"], unloadable


@pytest.fixture(autouse=True)
def _needs_realworld(realworld_dir):
    return realworld_dir
