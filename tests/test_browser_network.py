"""Real-browser test of the network diagram (issue 24.2) and the library's weight histograms overlaid (24.6).

Trains a small spiral net in the Playground: the diagram is redrawn at later steps while it trains; once done, a
click on a neuron of the drawn diagram shows its map large. A network too wide gets the reason naming the limit.
In the Run library two runs selected draw one histogram line each. Screenshots go to /tmp/h2-shots/.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from browser_helpers import CHROMIUM, launch

SHOTS = Path("/tmp/h2-shots")
RUN_QUERY = "dataset=spiral&hidden=8,8,6&activation=tanh&lr=0.01&epochs=100&batch_size=16&log_every=10"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (apt-get install chromium)")]

# The diagram's step and the page position of neuron (column, unit): {step, x, y}, or null when not drawn.
DIAGRAM_JS = """([column, unit]) => {
  for (const g of document.querySelectorAll('.js-plotly-plot')) {
    const title = g.layout && g.layout.title ? String(g.layout.title.text || '') : '';
    const m = title.match(/The network at step ([\\d,]+)/);
    if (!m || !g._fullData) continue;
    const nodes = g._fullData.find(d => d.name === 'neurons');
    const k = nodes.customdata.findIndex(c => c[0] === column && c[1] === unit);
    const L = g._fullLayout, box = g.getBoundingClientRect();
    return {step: parseInt(m[1].replace(/,/g, '')),
            x: box.left + L._size.l + L.xaxis.l2p(nodes.x[k]), y: box.top + L._size.t + L.yaxis.l2p(nodes.y[k])};
  }
  return null;
}"""


# Lines of the library's histogram overlay (-1 when not drawn).
OVERLAY_LINES_JS = """() => {
  for (const g of document.querySelectorAll('.js-plotly-plot')) {
    if (g.textContent.includes('Weights of fc1') && g.data) return g.data.length;
  }
  return -1;
}"""


def _diagram(page, column: int = 1, unit: int = 0):
    return page.evaluate(DIAGRAM_JS, [column, unit])


def _train(page) -> None:
    train = page.get_by_role("button", name="Train", exact=True)
    train.wait_for(timeout=120_000)  # a machine shared with others can take a while to draw the page
    train.click()


def test_the_diagram_is_redrawn_while_training_and_a_clicked_neuron_is_shown_large(server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1500, "height": 2600})
        page.goto(f"{server}/?{RUN_QUERY}")
        _train(page)
        steps: list[int] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if page.locator('[data-testid="stMetric"]', has_text="Test accuracy").count():
                break
            drawn = _diagram(page)
            if drawn and (not steps or drawn["step"] != steps[-1]):
                steps.append(drawn["step"])
                if len(steps) == 2:  # mid-training: redrawn once already
                    page.screenshot(path=str(SHOTS / "playground_diagram_live.png"), full_page=True)
            time.sleep(0.2)
        assert len(steps) >= 2 and steps == sorted(steps), f"diagram not redrawn while training: {steps}"
        page.locator('[data-testid="stMetric"]', has_text="Test accuracy").first.wait_for(timeout=240_000)
        page.wait_for_timeout(2000)
        at = _diagram(page, 2, 1)
        page.mouse.click(at["x"], at["y"])
        page.get_by_text("Close the large map").wait_for(timeout=30_000)
        large = page.locator(".js-plotly-plot", has_text="layer 2, unit 2 at step")
        large.first.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(SHOTS / "playground_neuron_large.png"), full_page=True)

        page.goto(f"{server}/?dataset=moons&hidden=32&epochs=1")
        _train(page)
        page.get_by_text("at most 8 hidden layers of at most 16 units").first.wait_for(timeout=120_000)
        page.locator('[data-testid="stMetric"]', has_text="Test accuracy").first.wait_for(timeout=240_000)
        assert _diagram(page) is None
        page.wait_for_timeout(1000)
        page.screenshot(path=str(SHOTS / "playground_too_large.png"), full_page=True)

        page.goto(f"{server}/library")  # the two runs stored above, compared: fc1 (the first layer) by default
        grid = page.locator('[data-testid="stDataFrame"]').first
        grid.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)
        box = grid.bounding_box()
        for row in (1, 2):
            page.mouse.click(box["x"] + 12, box["y"] + 35 * row + 18)  # the row's selection cell
            page.wait_for_timeout(1500)
        page.locator(".js-plotly-plot", has_text="Weights of fc1").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)
        assert page.evaluate(OVERLAY_LINES_JS) == 2
        page.screenshot(path=str(SHOTS / "library_histograms_overlaid.png"), full_page=True)
        browser.close()
