"""Real browser, three contexts: an instructor presents the built-in vanishing-gradients lecture and two
students follow it, offline with the Digits fallback.

The instructor's Next moves both students; a student without the token cannot move the class; a student's
"Try it yourself" run appears on the instructor's board under their nickname (shown as typed, not as HTML);
the presenter view at 1280x720 has no text under 20 px, on the page or in any Plotly figure (read in the
browser with getComputedStyle and from the figures' full layout); its QR code decodes to the step's link.
"""
from __future__ import annotations

import io
import re
import time
import urllib.parse

import pytest
from PIL import Image

from browser_helpers import (CHROMIUM, SHOTS, click_when_enabled, free_port, launch, record_websockets, start_server,
                             stop_server)
from core.lessons.lectures import BUILTIN

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")
zxingcpp = pytest.importorskip("zxingcpp", reason="zxing-cpp (requirements-dev.txt) is not installed")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (apt-get install chromium)")]

TOKEN = "chalk-and-talk-7f3a"
LECTURE = BUILTIN["vanishing"]
FOLLOW_POLL_S = 10.0  # app/views/lecture.FOLLOW_POLL_SECONDS: the slow poll behind the stream
# A page switch on a machine shared with other test runs (the bench measures the real time).
MOVE_BOUND_S = FOLLOW_POLL_S + 25
# Every message a page's follow stream (app/stream.py) receives, kept in the page (it survives page switches).
RECORD_STREAM_JS = """
const NativeEventSource = window.EventSource;
window.followed = [];
window.EventSource = function (url, options) {
  const source = new NativeEventSource(url, options);
  source.addEventListener('message', (event) => window.followed.push([String(url), event.data]));
  return source;
};
"""
NICKNAME = "<b>Ada</b> & co"
MIN_PX = 20

# Every visible text node's computed size, and every font size in each Plotly figure's full layout and traces.
SMALLEST_TEXT_JS = """() => {
  const small = []; let minPage = 1e9;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.textContent.trim()) continue;
    const el = node.parentElement;
    if (!el || el.closest('.js-plotly-plot')) continue;
    const r = el.getBoundingClientRect(), cs = getComputedStyle(el);
    if (r.width === 0 || r.height === 0 || cs.visibility === 'hidden' || cs.display === 'none') continue;
    const size = parseFloat(cs.fontSize);
    minPage = Math.min(minPage, size);
    if (size < 20) small.push([size, node.textContent.trim().slice(0, 40)]);
  }
  let minFig = 1e9; const figSmall = []; const seen = new Set();
  function walk(o, path, depth) {
    if (!o || typeof o !== 'object' || depth > 8 || seen.has(o)) return;
    seen.add(o);
    for (const k of Object.keys(o)) {
      if (k.startsWith('_') || k === 'template') continue;  // the template is defaults, not what is drawn
      const v = o[k];
      if (k.endsWith('font') && v && typeof v === 'object' && v.size !== undefined) {
        for (const s of (Array.isArray(v.size) ? v.size : [v.size])) {
          if (typeof s === 'number') { minFig = Math.min(minFig, s); if (s < 20) figSmall.push([path + '.' + k, s]); }
        }
      }
      walk(v, path + '.' + k, depth + 1);
    }
  }
  const figures = document.querySelectorAll('.js-plotly-plot');
  figures.forEach((g, i) => { walk(g._fullLayout, 'figure' + i + '.layout', 0);
                              (g._fullData || []).forEach((t, j) => walk(t, 'figure' + i + '.data' + j, 0)); });
  return {minPage, small: small.slice(0, 10), minFig, figSmall: figSmall.slice(0, 10), figures: figures.length};
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lecture")
    empty = tmp / "no-datasets"
    empty.mkdir()
    port = free_port()
    proc = start_server(tmp / "cache", port, tmp / "streamlit.log",
                        {"OMP_NUM_THREADS": "1", "GRADIENT_LAB_INSTRUCTOR_TOKEN": TOKEN,
                         "GRADIENT_LAB_DATA_DIR": str(empty)})
    yield f"http://127.0.0.1:{port}", tmp / "streamlit.log"
    stop_server(proc)


def step_url(base: str, number: int, mode: str) -> str:
    step = LECTURE.step(number)
    path = "" if step.page == "playground" else step.page
    query = {**step.query, "lecture": LECTURE.name, "step": str(number), mode: "1"}
    return f"{base}/{path}?{urllib.parse.urlencode(query, safe=',-')}"


def shows_step(page, number: int, timeout_s: float) -> float:
    """Seconds until ``page`` shows step ``number`` of the lecture (its title and "step k of n")."""
    start = time.monotonic()
    page.get_by_text(f"step {number} of {len(LECTURE.steps)}").first.wait_for(timeout=timeout_s * 1000)
    page.get_by_text(LECTURE.step(number).title).first.wait_for(timeout=timeout_s * 1000)
    assert f"step={number}" in page.url
    return time.monotonic() - start


def enter_token(page, token: str) -> None:
    field = page.locator('input[aria-label="Instructor token"]')
    if not field.is_visible():
        page.get_by_role("button", name="Class and token").click()
    field.fill(token)
    field.press("Enter")


def test_instructor_leads_two_students_and_sees_their_runs(server):
    base, log = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        teacher = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
        students = [browser.new_context(viewport={"width": 1280, "height": 1000}) for _ in range(2)]
        for context in students:
            context.add_init_script(RECORD_STREAM_JS)
        ada, bob = (context.new_page() for context in students)
        ada_sockets = record_websockets(ada)

        teacher.goto(step_url(base, 1, "present"))
        shows_step(teacher, 1, 90)
        enter_token(teacher, "not-the-token")
        teacher.get_by_text("That is not the instructor token").wait_for(timeout=30_000)
        enter_token(teacher, TOKEN)
        teacher.get_by_text("The class is on step 1").wait_for(timeout=30_000)
        assert TOKEN not in teacher.url
        teacher.keyboard.press("Escape")

        for student in (ada, bob):  # the lecture's link opens the class's step, following it
            student.goto(f"{base}/lecture?lecture={LECTURE.name}")
            shows_step(student, 1, 90)
            student.get_by_text("You follow the class").wait_for(timeout=30_000)

        # A student presenting to themselves moves only their own view.
        ada.goto(step_url(base, 1, "present"))
        shows_step(ada, 1, 60)
        ada.get_by_role("button", name="Next").click()
        shows_step(ada, 2, 60)
        time.sleep(4)
        assert "step=1" in bob.url and bob.get_by_text(f"step 1 of {len(LECTURE.steps)}").first.is_visible()
        ada.goto(f"{base}/lecture?lecture={LECTURE.name}")
        shows_step(ada, 1, 60)

        # The instructor's Next moves both students.
        last = len(LECTURE.steps)
        for number in range(2, last + 1):
            teacher.get_by_role("button", name="Next").click()
            shows_step(teacher, number, 60)
            for student in (ada, bob):
                shows_step(student, number, MOVE_BOUND_S)
                # moved by the stream's push (the slow poll behind it sends nothing to the page)
                pushed = [step for url, step in student.evaluate("window.followed")
                          if url.endswith(f"/_gradient_lab/follow/{LECTURE.name}")]
                assert str(number) in pushed, pushed
        assert LECTURE.step(last).page == "playground"

        # Ada tries the last step herself under a hostile-looking nickname; her run reaches the board.
        nickname = ada.locator('input[aria-label="Your nickname (shown on the class board)"]')
        nickname.fill(NICKNAME)
        nickname.press("Enter")
        time.sleep(2)
        ada.get_by_role("button", name="Try it yourself").click()
        ada.get_by_text("Your own copy of step").wait_for(timeout=60_000)
        assert "lecture=" not in ada.url and "init=he" in ada.url  # her own copy: the step's setup, not following
        click_when_enabled(ada, ada.get_by_role("button", name=re.compile(r"^(▶️\s*)?Train$")), 60,
                           "lecture_try_train", ada_sockets)
        ada.get_by_role("button", name=re.compile("Train again")).wait_for(timeout=300_000)  # trained

        teacher.get_by_text(re.compile(r"1 run by the class")).wait_for(timeout=60_000)
        board = teacher.locator('[data-testid="stTable"]').first
        board.wait_for(timeout=30_000)
        assert NICKNAME in board.inner_text()  # shown as typed: escaped, not rendered as HTML

        # The presenter view at 1280x720: nothing under 20 px, on the page or in any figure.
        teacher.locator('[data-testid="stMain"]').evaluate("m => m.scrollTo(0, m.scrollHeight)")
        time.sleep(3)
        sizes = teacher.evaluate(SMALLEST_TEXT_JS)
        teacher.screenshot(path=str(SHOTS / "lecture_presenter_board.png"))
        assert sizes["figures"] >= 1, sizes
        assert sizes["minPage"] >= MIN_PX, sizes["small"]
        assert sizes["minFig"] >= MIN_PX, sizes["figSmall"]

        # The QR code on the presenter view decodes to the step's link (students follow from it).
        teacher.locator('[data-testid="stMain"]').evaluate("m => m.scrollTo(0, 0)")
        qr = teacher.locator('[data-testid="stImage"] img').first
        decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(qr.screenshot())))
        assert [d.text for d in decoded] == [step_url(base, last, "follow")]
        teacher.set_viewport_size({"width": 1280, "height": 1800})  # the whole presenter view, to look at
        time.sleep(2)
        teacher.screenshot(path=str(SHOTS / "lecture_presenter_tall.png"))
        browser.close()
    assert TOKEN not in log.read_text()  # never in the server's log

