"""Real-browser walk through lesson A as a new student takes it (issue 26.1): open the Vanishing page, load the
LESSONS A preset, train the fixes, and read the page's sentence: the plain sigmoid network is stuck and at least
one fix learned. On a server without MNIST (the preset's Digits fallback), so it needs no dataset download.
Screenshots go to the test's tmp dir and /tmp/gl_shots/."""
from __future__ import annotations

import re
import shutil

import pytest

from browser_helpers import CHROMIUM, SHOTS, free_port, launch, start_server, stop_server

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (apt-get install chromium)")]

FIXES_SENTENCE = re.compile(r"After \d+ epochs? the plain network \(sigmoid\)")


@pytest.fixture
def digits_server(tmp_path):
    """A server whose data folder is empty: lesson A trains on its Digits fallback."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    port = free_port()
    proc = start_server(tmp_path / "cache", port, tmp_path / "streamlit.log",
                        {"OMP_NUM_THREADS": "1", "GRADIENT_LAB_DATA_DIR": str(empty)})
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


def shot(page, tmp_path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / name)


def test_lesson_a_preset_fixes_rescue_a_stuck_sigmoid_network(digits_server, tmp_path):
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 2400})
        page.goto(f"{digits_server}/vanishing")
        preset = page.get_by_role("button", name=re.compile("LESSONS A preset"))
        preset.wait_for(timeout=180_000)  # a loaded machine starts the page slowly
        preset.click()
        page.get_by_text("Lesson A: activations and vanishing gradients").wait_for(timeout=60_000)
        train = page.get_by_role("button", name="Train the fixes")
        train.wait_for(timeout=120_000)
        train.click()

        sentence = page.get_by_text(FIXES_SENTENCE).first
        sentence.wait_for(timeout=1_500_000)  # the fixes train on a loaded machine's one thread
        page.locator('[data-testid="stDataFrame"]').last.wait_for(timeout=120_000)
        page.wait_for_timeout(2000)  # let the final charts draw
        text = sentence.inner_text()
        shot(page, tmp_path, "lesson_a_fixes.png")
        browser.close()
    assert "the plain network (sigmoid) is stuck." in text, text
    assert " learned." in text, text  # "<the fixes that learned> learned."
