"""Real-browser test: every page's setup is a shareable link.

On each page: change one widget, wait for the address bar to follow, open that address in a fresh
browser context (a new visitor), and check the widget shows the changed value. The Run library
has no settings of its own: its "Open in Playground" must land on an address that reopens the run.
"""
from __future__ import annotations

import re
from urllib.parse import quote
import shutil

import pytest

from browser_helpers import CHROMIUM, SHOTS, free_port, launch, start_server, stop_server

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (apt-get install chromium)")]

# (page path, widget label, new value, what the address bar then holds)
PAGES = [("", "Epochs", "3", "epochs=3"),
         ("vanishing", "Width (units per hidden layer)", "14", "width=14"),
         ("regularization", "Epochs", "7", "epochs=7"),
         ("data", "Seed", "5", "seed=5"),
         ("optimizers", "Start x", "0.50", "x0=0.5"),  # the widget shows two decimals
         ("gradcheck", "Examples in the check batch", "12", "examples=12"),
         ("sweeps", "Epochs", "3", "epochs=3")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("links")
    port = free_port()
    proc = start_server(tmp / "cache", port, tmp / "streamlit.log", {"OMP_NUM_THREADS": "1"})
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


def number_input(page, label: str):
    return page.locator(f'input[aria-label="{label}"]').first


def set_number(page, label: str, value: str) -> None:
    box = number_input(page, label)
    box.wait_for(timeout=60_000)
    box.fill(value)
    box.press("Enter")


def wait_for_url(page, part: str, timeout_ms: int = 30_000) -> str:
    page.wait_for_url(re.compile(re.escape(part)), timeout=timeout_ms)
    return page.url


@pytest.mark.parametrize("path, label, value, part", PAGES, ids=[p[0] or "playground" for p in PAGES])
def test_changed_widget_survives_a_copied_link(server, tmp_path, path, label, value, part):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        first = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
        first.goto(f"{server}/{path}")
        set_number(first, label, value)
        link = wait_for_url(first, part)
        first.wait_for_timeout(500)
        fresh = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()  # a new visitor
        fresh.goto(link)
        box = number_input(fresh, label)
        box.wait_for(timeout=90_000)
        fresh.wait_for_timeout(1000)
        assert box.input_value() == value, f"{link} reopened with {label} = {box.input_value()}"
        assert part in fresh.url  # the fresh page keeps the shared setup in its own address bar
        shot = tmp_path / f"link_{path or 'playground'}.png"
        fresh.screenshot(path=str(shot), full_page=True)
        shutil.copy(shot, SHOTS / shot.name)
        browser.close()


def test_library_open_in_playground_lands_on_a_reopenable_link(server):
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
        page.goto(f"{server}/?dataset=moons&hidden=16&epochs=2&log_every=20&seed=9")
        page.get_by_role("button", name="Train", exact=True).click()
        page.locator('[data-testid="stMetric"]', has_text="Test accuracy").first.wait_for(timeout=180_000)
        page.goto(f"{server}/library")  # a direct link: this session never started on the Playground
        grid = page.locator('[data-testid="stDataFrame"]').first
        grid.wait_for(timeout=60_000)
        page.wait_for_timeout(1000)
        box = grid.bounding_box()
        page.mouse.click(box["x"] + 12, box["y"] + 35 + 18)  # the first row's selection cell
        page.get_by_role("button", name="Open in Playground").click()
        page.wait_for_url(re.compile(r"^http://[^/]+/\?.*seed=9"), timeout=30_000)  # the Playground: path "/"
        link = page.url
        assert "dataset=moons" in link and "hidden=16" in link
        fresh = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
        fresh.goto(link)
        fresh.get_by_text("From cache, trained").first.wait_for(timeout=60_000)
        fresh.screenshot(path=str(SHOTS / "link_library_open.png"), full_page=True)
        seed = number_input(fresh, "Seed")
        seed.wait_for(timeout=90_000)
        assert seed.input_value() == "9"
        browser.close()


def test_a_regularization_link_cut_at_300_characters_says_so_and_keeps_its_settings(server):
    """Issue 26.10: a link cut short gave JSON's own error, and one bad value threw the valid ones away."""
    variants = ('[["none",{}],["L2 0.001",{"l2":0.001}],["dropout 0.3 (inverted)",{"dropout":0.3,"dropout_impl":'
                '"inverted"}],["BatchNorm",{"norm":"batchnorm"}],["LayerNorm",{"norm":"layernorm"}]]')
    whole = f"{server}/regularization?epochs=7&seed=5&variants={quote(variants)}"
    cut = whole[:300]
    assert len(cut) < len(whole)
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
        page.goto(cut)
        page.get_by_text("looks cut off").first.wait_for(timeout=90_000)
        assert page.get_by_text("Unterminated").count() == 0
        epochs = number_input(page, "Epochs")
        epochs.wait_for(timeout=60_000)
        assert epochs.input_value() == "7" and number_input(page, "Seed").input_value() == "5"
        page.screenshot(path=str(SHOTS / "link_cut_regularization.png"), full_page=True)
        browser.close()
