"""Real-browser test of the Regularization page: upload your own images, see them, train on them.

Uses the server of tests/conftest.py and tests/browser_helpers.py. A 3-class zip of generated PNGs
goes through the page's file chooser; the preview must name every class as plain text; then
the variants train on the upload and the comparison fills in. Screenshots go to the test's
tmp dir and /tmp/gl_shots/.
"""
from __future__ import annotations

import io
import shutil
import time
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageDraw

from browser_helpers import CHROMIUM, SHOTS, launch

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (apt-get install chromium)")]

CLASSES = ("circles", "squares", "<b>stripes")  # the last one must show literally, never as bold HTML
ANNOTATIONS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot .annotation-text'))
    .map(e => e.textContent)"""
BOLD_IN_PLOTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot .annotation-text b'))
    .map(e => e.textContent)"""


def drawing(kind: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.new("L", (32, 32), 0)
    pen = ImageDraw.Draw(image)
    offset, size = int(rng.integers(0, 6)), 20 + int(rng.integers(-3, 4))
    if kind == "circles":
        pen.ellipse([offset + 2, offset + 2, offset + size, offset + size], fill=255)
    elif kind == "squares":
        pen.rectangle([offset + 3, offset + 3, offset + size, offset + size], fill=255)
    else:
        for y in range(offset % 3, 32, 6):
            pen.rectangle([0, y, 31, y + 2], fill=255)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def shapes_zip(path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for kind in CLASSES:
            for i in range(12):
                archive.writestr(f"shapes/{kind}/{i:02d}.png", drawing(kind, i))


def test_upload_preview_then_compare_on_it(server, tmp_path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    upload = tmp_path / "shapes.zip"
    shapes_zip(upload)
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1500, "height": 6000})
        page.goto(f"{server}/regularization")
        page.get_by_role("heading", name="Regularization").first.wait_for(timeout=60_000)
        page.get_by_text("Upload your own data").first.click()
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(upload))

        page.get_by_text("Your upload “shapes.zip”: 3 classes, 36 examples").first.wait_for(timeout=60_000)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not set(CLASSES) <= set(page.evaluate(ANNOTATIONS_JS)):
            time.sleep(0.2)
        shown = page.evaluate(ANNOTATIONS_JS)
        assert set(CLASSES) <= set(shown), f"every class name appears under its example: {shown}"
        assert "stripes" not in " ".join(page.evaluate(BOLD_IN_PLOTS_JS)), "a class name was rendered as HTML"
        page.mouse.move(0, 0)
        page.wait_for_timeout(800)
        shot = tmp_path / "regularization_upload.png"
        page.screenshot(path=str(shot), full_page=True)
        shutil.copy(shot, SHOTS / "regularization_upload.png")

        # Train every variant of the page's default family on the upload and watch the comparison fill in.
        page.get_by_role("button", name="Train the variants on this dataset").click()
        page.get_by_text("networks on Your upload “shapes.zip”").first.wait_for(timeout=30_000)
        train = page.get_by_role("button", name="Train 8 variants")
        train.click()
        page.get_by_role("button", name="Cancel all").or_(page.get_by_text("Inside the weights")).first.wait_for(
            timeout=60_000)
        page.get_by_text("Inside the weights").first.wait_for(timeout=240_000)
        page.get_by_role("button", name="Cancel all").wait_for(state="detached", timeout=240_000)
        page.mouse.move(0, 0)  # no tooltip over the page
        page.wait_for_timeout(2000)  # let the last charts draw
        titles = page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot'))
            .map(g => g.layout && g.layout.title ? String(g.layout.title.text || '') : '')""")
        assert any("Generalization gap" in t for t in titles), titles
        assert any("Weights of every layer" in t for t in titles), titles
        shot = tmp_path / "regularization.png"
        page.screenshot(path=str(shot), full_page=True)
        shutil.copy(shot, SHOTS / "regularization.png")
        browser.close()
