"""Real-browser walk of a server with no MNIST / Fashion-MNIST files and no downloads (what a new student
and an instructor meet): the Optimizers page's real race trains on the Digits fallback with one notice and
draws its charts; every page shows its stored results at once on a link opened in a fresh browser.

Screenshots go to /tmp/gl_shots/.
"""
from __future__ import annotations

import re
import time
from urllib.parse import urlencode

import pytest

from browser_helpers import CHROMIUM, SHOTS, launch, offline_app
from core.lessons.families import SWEEP_PRESETS

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (apt-get install chromium)")]

VIEWPORT = {"width": 1280, "height": 4000}
NOTICE = "is not available on this server"
# Variants (trace names) with points in the chart whose title holds ``title`` (a waiting chart has none).
DRAWN_TRACES_JS = """(title) => {
  let best = 0;
  for (const g of document.querySelectorAll('.js-plotly-plot')) {
    const t = g.layout && g.layout.title ? String(g.layout.title.text || '') : '';
    if (!t.includes(title) || !g._fullData) continue;
    best = Math.max(best, new Set(g._fullData.filter(d => d.x && d.x.length > 0).map(d => d.name)).size);
  }
  return best;
}"""
CHARTS_JS = "() => document.querySelectorAll('.js-plotly-plot').length"


@pytest.fixture(scope="module")
def offline_server(tmp_path_factory):
    """``streamlit run`` with an empty data folder and downloads off: the Digits fallback everywhere."""
    yield from offline_app(tmp_path_factory.mktemp("offline"))


def _text(page) -> str:
    """The main area's text ('' while a rerun has it detached on this loaded machine)."""
    try:
        return page.locator('[data-testid="stMain"]').inner_text(timeout=120_000)
    except sync_api.TimeoutError:
        return ""


def _wait_text(page, pattern: str, timeout_s: float) -> str:
    """Wait until the page's text matches ``pattern`` (a regex); returns the text."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = _text(page)
        if re.search(pattern, text):
            return text
        page.wait_for_timeout(500)
    raise AssertionError(f"{pattern!r} did not appear within {timeout_s}s; the page reads:\n{_text(page)[-3000:]}")


def _settled_charts(page, timeout_s: float = 120) -> int:
    """How many Plotly charts the page draws, once the count has held for three seconds."""
    counts: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts.append(page.evaluate(CHARTS_JS))
        if len(counts) >= 4 and len(set(counts[-4:])) == 1 and counts[-1] > 0:
            break
        page.wait_for_timeout(1000)
    return counts[-1]


def _shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def test_offline_optimizers_race_trains_on_digits_with_one_notice_and_draws(offline_server):
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{offline_server}/optimizers")
        train = page.get_by_role("button", name="Train the six optimizers", exact=True)
        train.wait_for(timeout=240_000)
        train.click()
        # The race sentence is written once every optimizer has its final accuracy.
        text = _wait_text(page, r" won: | ended level", 600)
        page.wait_for_timeout(2000)  # the final charts draw
        text = _text(page)
        _shot(page, "walk_offline_optimizers.png")
        assert text.count(NOTICE) == 1, text  # one notice for the page, not one per optimizer
        assert "Digits" in text and "Fashion-MNIST" in text  # what replaced what
        assert "Failed" not in text and "GRADIENT_LAB" not in text and "/tmp" not in text and "/raw" not in text
        assert page.evaluate(DRAWN_TRACES_JS, "Accuracy: validation") == 6  # every optimizer's curve is drawn
        assert "L1 drives" not in text and "Overfitting shows" not in text  # the Regularization page's words
        browser.close()


_offline = SWEEP_PRESETS["digits-sweep"].sweep  # the Sweeps page's offline lesson, three short trials
SMALL_SWEEP = _offline.replace(trials=3, base=_offline.base.replace(epochs=2))

# page path, its train button, text that only its results show (with the wait for training)
WALK = [
    ("/?dataset=moons&hidden=16&epochs=5&log_every=10", "Train", r"Test accuracy", 300),
    ("/vanishing?dataset=digits&epochs=2&depths=1-2&activations=sigmoid,relu&log_every=10", "Train the grid",
     r"Inside one network", 900),
    ("/regularization", None, r"3 · Compare", 900),
    # (the six were trained by the test above on this server: here the second family)
    ("/optimizers", "Train cross-entropy vs MSE", r"Cross-entropy vs MSE", 600),
    ("/gradcheck", "Check the gradients", r"Relative difference, all checked entries", 300),
    ("/sweeps?" + urlencode(SMALL_SWEEP.to_query()), "Run sweep", r"2 · The study", 900),
]


@pytest.mark.parametrize("path,button,results,timeout_s", WALK, ids=[w[0].split("?")[0] or "/" for w in WALK])
def test_stored_results_show_at_once_on_a_fresh_link(offline_server, path, button, results, timeout_s):
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        first = browser.new_context(viewport=VIEWPORT).new_page()
        first.goto(f"{offline_server}{path}")
        name = button or re.compile(r"^Train \d+ variants( again)?$")  # "again" once every variant is stored
        train = first.get_by_role("button", name=name, exact=button is not None)
        train.wait_for(timeout=240_000)
        assert not re.search(results, _text(first))  # nothing trained yet: no results
        train.click()
        _wait_text(first, results, timeout_s)
        # Wait for the job to end: its button offers to train again (or to train, for a family).
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and first.get_by_role("button", name=re.compile("Training…")).count():
            first.wait_for_timeout(500)
        link = first.url
        charts = _settled_charts(first)

        fresh = browser.new_context(viewport=VIEWPORT).new_page()  # another browser: no session, no cookie
        fresh.goto(link)
        fresh.get_by_role("button", name=name, exact=False).first.wait_for(timeout=240_000)
        _wait_text(fresh, results, 240)  # at once: nobody pressed a button in this browser
        # the charts of the browser that trained; a new visitor on the Playground also sees the data first (the
        # moons' scatter), since the stored result is not one they trained
        preview = 1 if path.startswith("/?") else 0
        assert _settled_charts(fresh) == charts + preview and charts > 0
        _shot(fresh, f"walk_fresh_link{path.split('?')[0].replace('/', '_') or '_playground'}.png")
        browser.close()


def test_the_library_lists_what_was_stored_on_a_fresh_link(offline_server):
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_context(viewport=VIEWPORT).new_page()
        page.goto(f"{offline_server}/?dataset=circles&hidden=8&epochs=3&log_every=10")
        train = page.get_by_role("button", name="Train", exact=True)
        train.wait_for(timeout=240_000)
        train.click()
        _wait_text(page, r"Test accuracy", 300)
        fresh = browser.new_context(viewport=VIEWPORT).new_page()
        fresh.goto(f"{offline_server}/library")
        text = _wait_text(fresh, r"\d+ runs? of \d+ stored", 240)
        assert "No stored runs yet" not in text
        browser.close()
