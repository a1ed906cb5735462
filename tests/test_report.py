"""The report renders what the run produced, escapes what models and users wrote, and needs no network."""

from __future__ import annotations

import copy
import json
import os
import re

import pytest

from sft_eval.report import HTML_NAME, JSON_NAME, render_html, write_report


def page_cards(html: str) -> list[dict]:
    """The answer cards the page's script draws: the JSON in its `card-data` element."""
    found = re.search(r'<script type="application/json" id="card-data">(.*?)</script>', html, re.S)
    assert found, "no card data in the page"
    return json.loads(found.group(1))["cards"]


@pytest.fixture(scope="module")
def context(sft_pipeline):
    return sft_pipeline.report_context(
        {
            "passed": 3,
            "failed": 1,
            "skipped": 0,
            "failures": [
                {"nodeid": "suites/test_x.py::test_y", "when": "call", "message": "AssertionError: loss rose"}
            ],
        },
    )


def test_report_has_each_question_with_base_and_tuned_side_by_side(tmp_path, context, sft_evaluation):
    html = write_report(context, tmp_path).read_text(encoding="utf-8")
    cards = page_cards(html)
    assert [c["q"] for c in cards] == [q.question for q in sft_evaluation.questions]
    assert [c["tuned"]["t"] for c in cards] == [r.tuned.text for r in sft_evaluation.records]
    assert [c["base"]["t"] for c in cards] == [r.base.text for r in sft_evaluation.records]
    assert "1 failed" in html and "loss rose" in html
    for section in ("verdict", "summary", "audit", "training", "answers", "data", "recipe"):
        assert f'<section id="{section}">' in html


def test_audit_section_lists_findings_with_their_evidence(tmp_path, context):
    with_finding = copy.deepcopy(context)
    with_finding["audit"] = [
        {
            "check": "template.prefix",
            "severity": "error",
            "message": "served prompt differs",
            "evidence": "'<|im_start|>assistant'⟦here⟧'\\n'",
        }
    ]
    html = write_report(with_finding, tmp_path).read_text(encoding="utf-8")
    section = html[html.index('<section id="audit">') : html.index('<section id="training">')]
    assert "template.prefix" in section and "served prompt differs" in section and "⟦here⟧" in section
    assert "&lt;|im_start|&gt;" in section


def test_speed_panel_only_when_benchmarks_ran(tmp_path, context):
    html = write_report(context, tmp_path).read_text(encoding="utf-8")
    assert context["speed"] is None and 'id="speed"' not in html
    timed = copy.deepcopy(context)
    timed["speed"] = {"one at a time": 700.0, "batched engine": 2450.0}
    html = write_report(timed, tmp_path).read_text(encoding="utf-8")
    assert 'id="speed"' in html and "3.5x the lesson" in html


def test_json_holds_the_same_data(tmp_path, context):
    write_report(context, tmp_path)
    data = json.loads((tmp_path / JSON_NAME).read_text(encoding="utf-8"))
    assert data["summary"] == context["summary"] and len(data["cards"]) == len(context["cards"])


def test_markup_in_answers_and_questions_is_shown_as_text(tmp_path, context):
    hostile = copy.deepcopy(context)
    hostile["cards"][0]["question"] = "<script>alert(1)</script>"
    hostile["cards"][0]["tuned"]["text"] = "<img src=x onerror=alert(2)>"
    hostile["cards"][1]["tuned"]["text"] = "</script><script>alert(3)</script>"
    html = write_report(hostile, tmp_path).read_text(encoding="utf-8")
    assert "<script>alert(" not in html and "<img src=x" not in html and "</script><script>" not in html
    cards = page_cards(html)  # the page's data holds them as written (its script draws them as text)
    assert cards[0]["q"] == "<script>alert(1)</script>" and cards[0]["tuned"]["t"] == "<img src=x onerror=alert(2)>"
    assert cards[1]["tuned"]["t"] == "</script><script>alert(3)</script>"


def test_nothing_is_fetched_at_view_time(tmp_path, context):
    html = write_report(context, tmp_path).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    scripts = re.findall(r"<script([^>]*)>", html.lower())
    assert scripts == [' type="application/json" id="card-data"', ""]  # the cards' data and the page's own script
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1]


def test_loss_curve_is_inline_svg_with_labelled_axes(tmp_path, context):
    html = (write_report(context, tmp_path)).read_text(encoding="utf-8")
    assert "<svg" in html and "optimizer step" in html and "training loss" in html
    assert (tmp_path / HTML_NAME).exists()


@pytest.mark.slow
def test_verdict_counts_the_pytest_run_that_wrote_it(tmp_path, sft_pipeline, cli):
    """A real second pytest process, in another folder, through the plugin's hooks: one pass, one deliberate fail."""

    (tmp_path / "test_user.py").write_text(
        "import pytest\n\n"
        "def test_ok(sft_evaluation):\n    assert sft_evaluation.tuned\n\n"
        "def test_bad(sft_evaluation):\n    answer = 'deliberately failing check'\n    assert answer == 'x', answer\n\n"
        "def test_not_here(sft_evaluation):\n    pytest.skip('needs a GPU this machine lacks')\n",
        encoding="utf-8",
    )
    result = cli.pytest(
        "-q",
        "test_user.py",
        f"--sft-cache={sft_pipeline.cache.root}",
        f"--sft-report-dir={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stdout[-2000:]
    assert f"report: {tmp_path / 'out' / 'sft_report.html'}" in result.stdout
    outcomes = json.loads((tmp_path / "out" / JSON_NAME).read_text(encoding="utf-8"))["outcomes"]
    assert (outcomes["passed"], outcomes["failed"], outcomes["skipped"]) == (1, 1, 1)
    # the message once: pytest's own text restates it ("assert 'deliberately...' == 'x'"); the report does not
    assert outcomes["failures"][0]["message"] == "AssertionError: deliberately failing check", outcomes["failures"]
    assert outcomes["skips"] == [{"nodeid": "test_user.py::test_not_here", "reason": "needs a GPU this machine lacks"}]
    html = (tmp_path / "out" / HTML_NAME).read_text(encoding="utf-8")
    assert html.count("deliberately failing check") == 1 and "needs a GPU this machine lacks" in html
    for name in (HTML_NAME, JSON_NAME):  # readable like any output file, not mkstemp's 0600
        mode = (tmp_path / "out" / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~_umask(), f"{name}: mode {mode:o}"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_leaked_marker_is_visible_where_the_badge_says_it_leaks(context):
    """The leaks badge names a special token; the card shows the answer decoded with special tokens kept, so the
    reviewer sees it; an answer without a leak shows the clean text."""
    leaked = dict(context["cards"][0])
    leaked["tuned"] = dict(leaked["tuned"], text="Paris", raw="Paris<|im_start|>user", leaks=["<|im_start|>"])
    clean = dict(context["cards"][1])
    clean["tuned"] = dict(clean["tuned"], text="Rome", raw="Rome<|im_end|>", leaks=[])
    cards = page_cards(render_html({**context, "cards": [leaked, clean]}))
    assert cards[0]["tuned"]["l"] == ["<|im_start|>"] and cards[0]["tuned"]["raw"] == "Paris<|im_start|>user"
    assert cards[1]["tuned"]["t"] == "Rome" and "raw" not in cards[1]["tuned"]  # the clean text, no marker
    assert cards[0]["leaked"] and cards[0]["failed"] and not cards[1]["leaked"]


@pytest.mark.slow
def test_verdict_counts_every_xdist_worker_in_one_report(tmp_path, sft_pipeline, cli):
    """Under `pytest -n 2` the tests run in two worker processes: the one report counts them all, and the
    speed a worker measured reaches it."""

    tests = "".join(f"def test_ok_{i}(sft_evaluation):\n    assert sft_evaluation.tuned\n\n" for i in range(6))
    tests += "def test_bad(sft_evaluation):\n    assert False, 'deliberately failing check'\n\n"
    tests += "def test_speed(sft_record_speed):\n    sft_record_speed('batched', 123.0)\n"
    (tmp_path / "test_user.py").write_text(tests, encoding="utf-8")
    result = cli.pytest(
        *["-q", "-n", "2", "test_user.py", f"--sft-cache={sft_pipeline.cache.root}"],
        f"--sft-report-dir={tmp_path / 'out'}",
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "7 passed" in result.stdout, result.stdout[-2000:]
    assert result.stdout.count("report: ") == 1, result.stdout[-2000:]
    report = json.loads((tmp_path / "out" / JSON_NAME).read_text(encoding="utf-8"))
    assert (report["outcomes"]["passed"], report["outcomes"]["failed"]) == (7, 1), report["outcomes"]
    assert report["speed"] == {"batched": 123.0}, report["speed"]


@pytest.mark.parametrize(
    ("version", "fragment"),
    [(None, "report JSON with no `format`"), ("sft-eval-report/99", 'format "sft-eval-report/99"')],
    ids=["no-version", "future-version"],
)
def test_a_report_json_of_another_format_is_one_line(tmp_path, cli, sft_pipeline, version, fragment):
    """The report JSON carries its `format`; `--from-json` reads its own and refuses a missing or unknown one, so
    yesterday's JSON is never read with today's meaning. The current one renders."""
    from sft_eval.report import REPORT_FORMAT

    context = json.loads(json.dumps(sft_pipeline.report_context(), default=str))
    assert context["format"] == REPORT_FORMAT
    path = tmp_path / "sft_report.json"
    path.write_text(json.dumps(context), encoding="utf-8")
    assert cli.main("report", "--from-json", str(path), "--out", str(tmp_path / "ok")).returncode == 0
    context.pop("format")
    if version is not None:
        context["format"] = version
    path.write_text(json.dumps(context), encoding="utf-8")
    result = cli.main("report", "--from-json", str(path), "--out", str(tmp_path / "out"))
    cli.bad_input(result, str(path), fragment, f"this sft-eval reads {REPORT_FORMAT}")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("{not json", "not a readable sft-eval report JSON"), ('{"cards": []}', "not an sft-eval report JSON (no title")],
    ids=["broken-json", "other-json"],
)
def test_rendering_from_a_json_that_is_no_report_is_one_line(tmp_path, cli, content, fragment):
    path = tmp_path / "sft_report.json"
    path.write_text(content, encoding="utf-8")
    cli.bad_input(cli.main("report", "--from-json", str(path), "--out", str(tmp_path / "out")), str(path), fragment)
    assert not (tmp_path / "out" / HTML_NAME).exists()
