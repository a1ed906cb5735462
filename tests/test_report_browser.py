"""The report in a real browser: headless Debian Chromium driven by Playwright, loading the file from disk."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from sft_eval import report
from sft_eval.report import Section, register_section, write_report

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
def browser():
    """One headless Chromium for the module (Playwright's sync API runs one instance per thread)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' installs playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser, sft_pipeline, tmp_path_factory, request):
    context = sft_pipeline.report_context({"passed": 1, "failed": 0, "skipped": 0, "failures": []})
    hostile = copy.deepcopy(context)
    hostile["cards"][0]["question"] = "<script>window.__injected = 'question'</script>"
    hostile["cards"][0]["tuned"]["text"] = "<img src=x onerror=\"window.__injected='answer'\">"
    out = tmp_path_factory.mktemp("report")
    path = write_report(hostile, out)
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
    tab.close()


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


def _many_cards(context: dict, n: int) -> dict:
    """`n` cards from the run's own: every 4th tuned answer leaks `<|im_start|>`, every 3rd question carries a
    word only it has (`needle-<i>`), so filters and search have known answers."""
    cards = []
    for i in range(n):
        card = copy.deepcopy(context["cards"][i % len(context["cards"])])
        card["question"] = f"{card['question']} #{i}" + (f" needle-{i}" if i % 3 == 0 else "")
        if i % 4 == 0:
            card["tuned"].update(raw=card["tuned"]["raw"] + "<|im_start|>user", leaks=["<|im_start|>"])
        cards.append(card)
    return {**context, "cards": cards}


@pytest.fixture(scope="module")
def big_page(browser, sft_pipeline, tmp_path_factory):
    """A report of 240 questions, for the answers' filters, search and pages."""
    context = _many_cards(sft_pipeline.report_context(None), 240)
    # a section whose template writes an inline script: the page's Content-Security-Policy must keep it from running
    register_section(Section("rogue", "Rogue", "<script>window.__rogue = 1</script><p id='rogue-text'>here</p>"))
    try:
        path = write_report(context, tmp_path_factory.mktemp("big"))
    finally:
        report.SECTIONS.unregister("rogue")
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    tab.goto(path.as_uri())
    tab.wait_for_load_state("load")
    tab.context_data = context  # type: ignore[attr-defined]
    yield tab
    tab.close()


def _press(page, name: str) -> None:
    page.locator(f'.filters [data-filter="{name}"]').click()


def test_answers_come_a_page_at_a_time_and_the_pager_walks_them(big_page):
    assert big_page.locator(".card").count() == 50 and big_page.inner_text("#card-range") == "1–50 of 240"
    assert big_page.locator("#card-prev").is_disabled()
    big_page.click("#card-next")
    assert big_page.inner_text("#card-range") == "51–100 of 240"
    assert big_page.locator(".card strong").first.inner_text().endswith("#50")
    for _ in range(3):
        big_page.click("#card-next")
    assert big_page.inner_text("#card-range") == "201–240 of 240" and big_page.locator(".card").count() == 40
    assert big_page.locator("#card-next").is_disabled()
    big_page.click("#card-prev")
    assert big_page.inner_text("#card-range") == "151–200 of 240"


def test_the_leaked_filter_shows_exactly_the_leaking_answers_with_their_marker(big_page):
    leaking = [c for c in big_page.context_data["cards"] if c["tuned"]["leaks"] or c["base"]["leaks"]]
    assert big_page.inner_text('.filters [data-filter="leaked"]') == f"leaked ({len(leaking)})"
    _press(big_page, "leaked")
    assert big_page.inner_text("#card-range") == f"1–50 of {len(leaking)}"
    first = big_page.locator(".card").first
    assert first.locator(".side.tuned .badge.bad", has_text="leaks <|im_start|>").count() == 1
    assert "<|im_start|>user" in first.locator(".side.tuned pre.raw").inner_text()  # the marker is shown
    _press(big_page, "all")
    assert big_page.inner_text("#card-range") == "1–50 of 240"


def test_failed_and_changed_count_what_the_page_data_flags(big_page):
    for name in ("failed", "changed"):
        flagged = big_page.evaluate(
            f"JSON.parse(document.getElementById('card-data').textContent).cards.filter(c => c.{name}).length"
        )
        _press(big_page, name)
        shown = big_page.inner_text("#card-range")
        assert shown == (f"1–{min(50, flagged)} of {flagged}" if flagged else "no question matches")
    _press(big_page, "all")


def test_search_finds_questions_and_answers(big_page):
    big_page.fill("#card-search", "NEEDLE-123")  # case does not matter
    assert big_page.locator(".card").count() == 1 and big_page.inner_text("#card-range") == "1–1 of 1"
    assert "#123 needle-123" in big_page.locator(".card strong").inner_text()
    big_page.fill("#card-search", "no such text anywhere")
    assert big_page.locator(".card").count() == 0 and big_page.inner_text("#card-range") == "no question matches"
    big_page.fill("#card-search", "")
    assert big_page.locator(".card").count() == 50


def test_the_word_diff_rebuilds_each_answers_words(big_page):
    """The diff is drawn from (op, word count) runs: its kept + deleted words are the base answer's, its kept +
    inserted words the tuned answer's, for every card on the page."""
    for i in range(big_page.locator(".card").count()):
        card = big_page.context_data["cards"][i]
        diff = big_page.locator(".card").nth(i).locator("details.diff")
        text = diff.evaluate("d => Array.from(d.childNodes).slice(1).map(n => [n.nodeName, n.textContent])")
        base = " ".join(t.strip() for name, t in text if name in ("#text", "DEL") and t.strip())
        tuned = " ".join(t.strip() for name, t in text if name in ("#text", "INS") and t.strip())
        assert base.split() == card["base"]["text"].split() and tuned.split() == card["tuned"]["text"].split()


def test_only_the_pages_own_script_runs(big_page):
    """The cards are drawn (the page's script ran), the rogue section's text is there and its script was not run:
    the Content-Security-Policy allows the one script by its hash."""
    assert big_page.locator(".card").count() == 50 and big_page.inner_text("#rogue-text") == "here"
    assert big_page.evaluate("window.__rogue") is None


def test_printing_holds_every_selected_card_then_the_page_again(big_page):
    big_page.evaluate("window.dispatchEvent(new Event('beforeprint'))")
    assert big_page.locator(".card").count() == 240
    big_page.evaluate("window.dispatchEvent(new Event('afterprint'))")
    assert big_page.locator(".card").count() == 50


def test_a_third_model_is_a_third_column_of_every_card(browser, sft_pipeline, tmp_path):
    """A report of three models (a baseline beside the base and the tuned one, as `[model] baseline` writes it):
    each card shows the three answers side by side, in one row, the summary a column per model, and the search
    finds an answer only the third model gave. The two-model page keeps its two columns (the tests above)."""
    context = copy.deepcopy(sft_pipeline.report_context())
    context["models"] = ["base", "tuned", "baseline"]
    for card in context["cards"]:
        card["others"] = {"baseline": {**card["base"], "text": "only the baseline says zebra-crossing"}}
    context["summary"]["others"] = {"baseline": context["summary"]["base"]}
    report.read_report_json(write_report(context, tmp_path).with_suffix(".json"))  # what was written reads back
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    tab.goto((tmp_path / "sft_report.html").as_uri())
    first = tab.locator(".card").first
    sides = first.locator(".side")
    assert sides.count() == 3 and sides.nth(2).locator("h4").inner_text().startswith("baseline")
    boxes = [sides.nth(i).bounding_box() for i in range(3)]
    assert len({round(b["y"]) for b in boxes}) == 1, boxes  # one row
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"], boxes
    assert tab.locator("section#summary th", has_text="baseline").count() == 1
    tab.fill("#card-search", "zebra-crossing")
    assert tab.locator(".card").count() == min(len(context["cards"]), 50)
    tab.close()


def test_each_card_shows_the_judges_verdict_and_the_judge_section_its_rewards(browser, sft_pipeline, tmp_path):
    """A report with a reward judge's record (written here: every tuned answer wins but the first, a tie): each
    card draws the verdict with both rewards; the Judge section shows the tie margin and no flip rate."""
    context = copy.deepcopy(sft_pipeline.report_context())
    verdicts = [
        {
            "question": card["question"],
            "verdict": "tie" if i == 0 else "win",
            "first": "tie" if i == 0 else "win",
            "second": "tie" if i == 0 else "win",
            "replies": ["reward 1.000", "reward 0.900" if i == 0 else "reward -2.000"],
            "rewards": [1.0, 0.9 if i == 0 else -2.0],
        }
        for i, card in enumerate(context["cards"])
    ]
    n = len(verdicts)
    context["judge"] = {
        "kind": "reward",
        "judge": "the embedded tiny reward model",
        "against": "base",
        "pairs": n,
        "win_rate": (n - 0.5) / n,
        "low": 0.9,
        "high": 1.0,
        "p_value": 1e-6,
        "wins": n - 1,
        "ties": 1,
        "losses": 0,
        "missing": 0,
        "length_controlled_win_rate": None,
        "length_note": "not identifiable: every candidate answer is shorter than the other",
        "flip_rate": None,
        "first_position_rate": None,
        "trusted": True,
        "calibration": {"pairs": 30, "accuracy": 0.9, "flip_rate": None, "by_kind": {"fact": 1.0}},
        "agreement_kappa": None,
        "warnings": [],
        "tie_margin": 0.5,
        "categories": [],
        "verdicts": verdicts,
        "cached": 0,
    }
    report.read_report_json(write_report(context, tmp_path).with_suffix(".json"))  # what was written reads back
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    tab.goto((tmp_path / "sft_report.html").as_uri())
    assert tab.locator(".card").first.locator("details.judged summary").inner_text() == "judge: tuned ties against base"
    assert (
        tab.locator(".card").nth(1).locator("details.judged summary").inner_text() == "judge: tuned wins against base"
    )
    assert "reward -2.000" in tab.locator(".card").nth(1).locator("details.judged").text_content()
    section = tab.locator("section#judge").inner_text()
    assert "tie margin" in section and "flip rate" not in section
    tab.close()
