"""Real-browser test: the lesson A link, trained once, replays whole in a fresh browser.

Opens the Vanishing page's lesson A link (no data folder: the lesson on the Digits fallback), trains
its three jobs (the grid, the fixes, the seeds), then opens the same link in a fresh browser context
(a new visitor) and checks that every chart of the three jobs is drawn there, from the store, with
the replay note. How long that takes is printed by bench/bench_replay.py, never asserted here.
"""
from __future__ import annotations

import shutil
from urllib.parse import urlencode

import pytest

from browser_helpers import CHROMIUM, SHOTS, free_port, launch, start_server, stop_server
from core.lessons.families import VANISHING_LESSON
from core.lessons.presets import A_FIXES_DEPTH

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (apt-get install chromium)")]

LINK = "vanishing?" + urlencode({**VANISHING_LESSON.to_query(), "fix_depth": A_FIXES_DEPTH, "lesson": "A"})
# The charts of the three trained jobs, by a word of their titles: the grid's four, then the fixes' and the
# seeds' gradient profile and accuracy overlay each.
TITLES = ["Accuracy per network", "Loss of every network", "Gradient norm per layer over time", "First layer",
          "Gradient norm per layer at the latest log point", "Gradient norm per layer at the latest log point"]
N_CHARTS = 8
CHART_TITLES_JS = """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"]')].map(b => {
  const g = b.classList.contains('js-plotly-plot') ? b : b.querySelector('.js-plotly-plot');
  if (!g || !g._fullLayout || !g.querySelector('.main-svg')) return null;
  return g.layout && g.layout.title ? String(g.layout.title.text || '') : '';
})"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    empty = tmp / "no-data"
    empty.mkdir()
    port = free_port()
    proc = start_server(tmp / "cache", port, tmp / "streamlit.log",
                        {"OMP_NUM_THREADS": "1", "GRADIENT_LAB_DATA_DIR": str(empty)})
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


def drawn_titles(page) -> list[str | None]:
    return page.evaluate(CHART_TITLES_JS)


def wait_all_drawn(page, timeout_ms: int) -> list[str]:
    page.wait_for_function(f"() => {{ const t = ({CHART_TITLES_JS})(); "
                           f"return t.length >= {N_CHARTS} && t.every(x => x !== null); }}",
                           timeout=timeout_ms, polling=200)
    return drawn_titles(page)


def train(page, label: str) -> None:
    button = page.get_by_role("button", name=label, exact=True)
    button.wait_for(timeout=120_000)
    button.click()
    page.get_by_role("button", name=f"{label} again", exact=True).wait_for(timeout=600_000)


def test_trained_lesson_link_replays_every_chart_in_a_fresh_browser(server, tmp_path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        first = browser.new_context(viewport={"width": 1280, "height": 1600}).new_page()
        first.goto(f"{server}/{LINK}")
        for label in ("Train the grid", "Train the fixes", "Train the seeds"):
            train(first, label)
        trained = wait_all_drawn(first, 120_000)
        assert len(trained) == N_CHARTS, trained

        fresh = browser.new_context(viewport={"width": 1280, "height": 1600}).new_page()  # a new visitor
        fresh.goto(f"{server}/{LINK}")
        titles = wait_all_drawn(fresh, 180_000)
        fresh.wait_for_timeout(500)
        titles = drawn_titles(fresh)
        assert len(titles) == N_CHARTS, titles
        for word in TITLES:
            assert sum(word in t for t in titles) >= TITLES.count(word), (word, titles)
        assert sum("accuracy" in t.lower() for t in titles) >= 3, titles  # the heatmap and two overlays
        stored = fresh.get_by_text("stored result is shown without training again")
        assert stored.count() == 3, "each of the three jobs says it replays from the store"
        for label in ("Train the grid again", "Train the fixes again", "Train the seeds again"):
            assert fresh.get_by_role("button", name=label, exact=True).count() == 1
        shot = tmp_path / "replay_lesson_a.png"
        fresh.screenshot(path=str(shot), full_page=True)
        shutil.copy(shot, SHOTS / shot.name)
        browser.close()
