"""Real-browser walk of the Inside-a-CNN page on a server without MNIST (the Digits fallback): a link's setup,
Train both (the CNN and an MLP of at least its parameters), then their outcome sentence, the filters, the feature maps and the convolution by hand drawn. Screenshots go to /tmp/hb-shots/."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from browser_helpers import CHROMIUM, launch, offline_app

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (apt-get install chromium)")]

SHOTS = Path("/tmp/hb-shots")
CHARTS_JS = "() => document.querySelectorAll('.js-plotly-plot').length"
TITLES_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
  .map(g => g.layout && g.layout.title ? String(g.layout.title.text || '').replace(/<[^>]*>/g, '') : '')"""


@pytest.fixture(scope="module")
def offline_server(tmp_path_factory):
    yield from offline_app(tmp_path_factory.mktemp("cnn"))


def _wait_text(page, pattern: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        try:
            text = page.locator('[data-testid="stMain"]').inner_text(timeout=30_000)
        except sync_api.TimeoutError:
            text = ""
        if re.search(pattern, text):
            return text
        time.sleep(0.5)
    raise AssertionError(f"{pattern!r} did not appear; the page says:\n{text[-2000:]}")


def test_walk_the_cnn_page(offline_server):
    SHOTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 4200})
        page.goto(f"{offline_server}/cnn?dataset=mnist&image=3&layer=1&channel=2&row=3&col=2")
        _wait_text(page, "Inside a CNN", 120)
        _wait_text(page, "MNIST is not available on this server", 60)
        page.screenshot(path=str(SHOTS / "cnn-1-setup.png"), full_page=True)
        page.get_by_role("button", name="Train both", exact=True).click()
        text = _wait_text(page, r"One convolution by hand", 300)
        assert re.search(r"(The CNN won|The MLP won|Neither won): validation accuracy", text)
        assert "The CNN against an MLP of at least as many parameters" in text
        _wait_text(page, r"The layer's own output at \(3, 2\) reads", 60)
        assert "after training" in text and "Test image 3 is a" in text
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 8", timeout=60_000)
        time.sleep(2)
        page.screenshot(path=str(SHOTS / "cnn-2-trained.png"), full_page=True)
        titles = page.evaluate(TITLES_JS)
        print(titles)
        assert any(t.startswith("At initialization") for t in titles)
        assert any(t.startswith("Conv layer 2, after the activation") for t in titles)
        assert any("= " in t and t.startswith("Conv layer 1, channel 2") for t in titles)
        assert "image=3" in page.url and "dataset=mnist" in page.url
        browser.close()
