"""Real-browser test: Debian's Chromium (Playwright) against ``streamlit run app/main.py``.

Opens the Playground on a toy-set config, presses Train, watches the loss chart grow and the decision
regions redrawn at later steps while the run is in progress, waits for the final test accuracy, then reloads the same URL and expects
the cached result. Screenshots go to the test's tmp dir and /tmp/gl_shots/.
"""
from __future__ import annotations

import shutil
import time

import pytest

from browser_helpers import CHROMIUM, LOSS_POINTS_JS, SHOTS, launch

# Long enough (~4,000 steps, a log point every 10 or so) that the charts update several times while it runs.
RUN_QUERY = "dataset=spiral&hidden=32,32&lr=0.01&epochs=80&batch_size=16&log_every=10"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (apt-get install chromium)")]


# The step in the decision regions' title ("Decision regions at step 1,234"), -1 when not shown.
REGIONS_STEP_JS = """() => {
  for (const g of document.querySelectorAll('.js-plotly-plot')) {
    const title = g.layout && g.layout.title ? String(g.layout.title.text || '') : '';
    const m = title.match(/Decision regions at step ([\\d,]+)/);
    if (m && g._fullData && g._fullData[0].type === 'heatmap') return parseInt(m[1].replace(/,/g, ''));
  }
  return -1;
}"""


def metric_value(page, label: str) -> float:
    box = page.locator('[data-testid="stMetric"]', has_text=label).first
    return float(box.locator('[data-testid="stMetricValue"]').inner_text().strip())


def test_train_watch_live_then_cached_replay(server, tmp_path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1500, "height": 4200})
        page.goto(f"{server}/?{RUN_QUERY}")
        train = page.get_by_role("button", name="Train", exact=True)
        train.wait_for(timeout=60_000)
        assert "dataset=spiral" in page.url
        train.click()

        # The loss chart must grow at least twice while the run is still in progress, and the decision
        # regions be redrawn at later steps.
        seen: list[int] = []
        regions: list[int] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            n = page.evaluate(LOSS_POINTS_JS)
            done = page.locator('[data-testid="stMetric"]', has_text="Test accuracy").count() > 0
            if done:
                break
            if n > 0 and (not seen or n != seen[-1]):
                seen.append(n)
            step = page.evaluate(REGIONS_STEP_JS)
            if step > 0 and (not regions or step != regions[-1]):
                regions.append(step)
            time.sleep(0.1)
        assert len(seen) >= 2 and seen == sorted(seen), f"loss chart did not update while running: {seen}"
        assert len(regions) >= 2 and regions == sorted(regions), f"regions not redrawn while running: {regions} (loss points {seen})"

        page.locator('[data-testid="stMetric"]', has_text="Test accuracy").first.wait_for(timeout=180_000)
        page.wait_for_timeout(1500)  # let the final charts draw
        test_acc = metric_value(page, "Test accuracy")
        assert page.get_by_text("Decision regions after training").count() >= 1
        assert test_acc > 0.6, f"spiral has 3 classes (chance ~0.34); the MLP should beat it, got {test_acc}"
        shot = tmp_path / "playground_finished.png"
        page.screenshot(path=str(shot), full_page=True)
        shutil.copy(shot, SHOTS / "playground_finished.png")

        # Same URL again: the stored run renders at once, labelled as cached, with "Train again".
        url = page.url
        page.goto(url)
        page.get_by_text("From cache, trained").first.wait_for(timeout=30_000)
        assert abs(metric_value(page, "Test accuracy") - test_acc) < 1e-9
        assert page.get_by_role("button", name="Train again").count() == 1
        page.wait_for_timeout(1000)
        shot = tmp_path / "playground_cached.png"
        page.screenshot(path=str(shot), full_page=True)
        shutil.copy(shot, SHOTS / "playground_cached.png")
        browser.close()
