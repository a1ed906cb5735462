"""The report in a real browser: headless Debian Chromium driven by Playwright, loading the file from disk."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from sft_eval.report import write_report

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
# The flags the machine's closed network needs: no background connections, no component updates.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
SECTIONS = ["verdict", "summary", "audit", "training", "answers", "data", "recipe"]


@pytest.fixture(scope="module")
def page(sft_pipeline, tmp_path_factory, request):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' installs playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    context = sft_pipeline.report_context({"passed": 1, "failed": 0, "skipped": 0, "failures": []})
    hostile = copy.deepcopy(context)
    hostile["cards"][0]["question"] = "<script>window.__injected = 'question'</script>"
    hostile["cards"][0]["tuned"]["text"] = "<img src=x onerror=\"window.__injected='answer'\">"
    out = tmp_path_factory.mktemp("report")
    path = write_report(hostile, out)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        requests: list[str] = []
        tab.on("request", lambda r: requests.append(r.url))
        tab.goto(path.as_uri())
        tab.wait_for_load_state("load")
        tab.requests = requests  # type: ignore[attr-defined]
        tab.cards_expected = len(context["cards"])  # type: ignore[attr-defined]
        yield tab
        shot = Path(request.config.getoption("sft_report_dir")) / "sft_report.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(shot), full_page=False)  # the CI artifact
        browser.close()


def test_every_section_is_there(page):
    for section in SECTIONS:
        assert page.locator(f"section#{section}").count() == 1, f"section #{section} missing"


def test_one_card_per_question(page):
    assert page.locator(".card").count() == page.cards_expected


def test_injected_markup_did_not_run_and_shows_as_text(page):
    assert page.evaluate("window.__injected") is None
    assert "<script>window.__injected" in page.locator(".card").first.inner_text()


def test_nothing_but_the_file_itself_is_requested(page):
    assert [u for u in page.requests if not u.startswith("file://")] == []


def test_base_and_tuned_sit_side_by_side_at_1280px(page):
    base = page.locator(".card").nth(3).locator(".side.base").bounding_box()
    tuned = page.locator(".card").nth(3).locator(".side.tuned").bounding_box()
    assert base and tuned and abs(base["y"] - tuned["y"]) < 2 and base["x"] + base["width"] <= tuned["x"]


def test_example_screenshot_is_committed_and_linked_from_the_readme():
    root = Path(__file__).parent.parent
    assert (root / "reports" / "examples" / "sft_report.png").is_file()
    assert "reports/examples/sft_report.png" in (root / "README.md").read_text(encoding="utf-8")
