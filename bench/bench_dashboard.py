"""Dashboard latency and idle cost, measured in Debian's Chromium against a real server.

    python bench/bench_dashboard.py [--repeats 5] [--sessions 10] [--seconds 20]

Prints:
  1. click Train -> first point on the loss chart (server warm, dataset loaded), timed in the page;
  2. a cached run: page load -> final metrics and charts drawn, and the same after changing a
     widget in an open page (the in-session case);
  3. server CPU (% of one core, from /proc/<pid>/stat) with N idle sessions open on a finished run.

For 1 and 2 it also prints when the server's last websocket message of that request arrived
("server done"): the rest is the browser drawing. The browser runs on the same machine as the
server, so the server's torch is limited to one thread (``--torch-threads``) to leave the
browser a core; otherwise a CPU run starves Chromium on a 2-core box and the numbers measure
that instead of the app.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.test_browser import LOSS_POINTS_JS, free_port, launch, start_server, stop_server  # noqa: E402

BASE = "epochs=3&log_every=10"  # digits, 64-64 MLP: the first log point comes 10 steps in
CLICK_TO_FIRST_POINT_JS = """async () => {
  const lossPoints = %s;
  const button = [...document.querySelectorAll('button')].find(b => b.innerText.trim().split('\\n').pop().trim() === 'Train');
  if (!button) return -2;
  const t0 = performance.now();
  button.click();
  while (performance.now() - t0 < 30000) {
    if (lossPoints() >= 1) return performance.now() - t0;
    await new Promise(r => setTimeout(r, 5));
  }
  return -1;
}""" % LOSS_POINTS_JS
# Records the arrival time (performance.now()) of every websocket message the page receives.
WS_HOOK = """(() => { window.__ws = []; const Native = window.WebSocket;
  window.WebSocket = function (...args) { const ws = new Native(...args);
    ws.addEventListener('message', () => window.__ws.push(performance.now())); return ws; };
  window.WebSocket.prototype = Native.prototype; Object.assign(window.WebSocket, Native); })();"""
RESULTS_DRAWN_JS = """() => {
  const metric = [...document.querySelectorAll('[data-testid="stMetric"]')].some(m => m.innerText.includes('Test accuracy'));
  const titles = [...document.querySelectorAll('.js-plotly-plot')].map(g => g.layout && g.layout.title ? String(g.layout.title.text || '') : '');
  return metric && titles.some(t => t.includes('Confusion')) && titles.some(t => t.includes('Loss (train'));
}"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_percent(pid: int, seconds: float) -> float:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def wait_results(page, timeout: float = 120) -> None:
    page.wait_for_function(RESULTS_DRAWN_JS, timeout=timeout * 1000, polling=10)


def server_done_ms(page, since_ms: float, gap_ms: float = 300) -> float:
    """ms from ``since_ms`` (page clock) to the last message of the first burst after it."""
    times = [t for t in page.evaluate("() => window.__ws") if t >= since_ms]
    last = times[0] if times else since_ms
    for t in times[1:]:
        if t - last > gap_ms:
            break
        last = t
    return last - since_ms


def summary(label: str, values: list[float]) -> str:
    return (f"{label}: median {statistics.median(values):.3f} s, max {max(values):.3f} s "
            f"({', '.join(f'{v:.3f}' for v in values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gl-bench-"))
    port = free_port()
    proc = start_server(tmp / "cache", port, tmp / "streamlit.log",
                        {"OMP_NUM_THREADS": str(args.torch_threads), "MKL_NUM_THREADS": str(args.torch_threads)})
    print(f"server pid {proc.pid}, torch threads {args.torch_threads}, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    url = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as p:
            browser = launch(p)
            context = browser.new_context(viewport={"width": 1500, "height": 1200})
            context.add_init_script(WS_HOOK)
            page = context.new_page()

            # Warm up: load the page (the data preview loads digits), train once, render a result.
            page.goto(f"{url}/?{BASE}&seed=1000")
            page.get_by_role("button", name="Train", exact=True).click()
            wait_results(page)

            latencies, latency_server = [], []
            for seed in range(args.repeats):
                page.goto(f"{url}/?{BASE}&seed={seed}")
                page.get_by_role("button", name="Train", exact=True).wait_for()
                page.wait_for_timeout(1000)
                t0 = page.evaluate("() => performance.now()")
                ms = page.evaluate(CLICK_TO_FIRST_POINT_JS)
                if ms < 0:
                    raise RuntimeError(f"no loss point after clicking Train (code {ms})")
                latencies.append(ms / 1000)
                latency_server.append(server_done_ms(page, t0) / 1000)
                wait_results(page)
            print(summary("click Train -> first loss point drawn", latencies))
            print(summary("   server done with that rerun (first point included)", latency_server))

            loads, loads_server = [], []
            for seed in range(args.repeats):
                t0 = time.perf_counter()
                page.goto(f"{url}/?{BASE}&seed={seed}")
                wait_results(page)
                loads.append(time.perf_counter() - t0)
                loads_server.append(server_done_ms(page, 0) / 1000)
            print(summary("cached run, page load -> results drawn", loads))
            print(summary("   server done (from navigation start)", loads_server))

            empty = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                page.goto(f"{url}/library")
                page.get_by_text("No stored runs").or_(page.locator('[data-testid="stDataFrame"]')).first.wait_for()
                empty.append(time.perf_counter() - t0)
            print(summary("baseline: page load of the Run library (no charts)", empty))

            switches, switches_server = [], []
            for seed in range(args.repeats):
                page.goto(f"{url}/?{BASE}&seed=999")  # not trained: the page shows the data preview
                box = page.get_by_role("spinbutton", name="Seed")
                box.wait_for()
                page.wait_for_timeout(1000)
                box.fill(str(seed))
                t0 = time.perf_counter()
                t0_page = page.evaluate("() => performance.now()")
                box.press("Enter")
                wait_results(page)
                switches.append(time.perf_counter() - t0)
                switches_server.append(server_done_ms(page, t0_page) / 1000)
            print(summary("cached run, change a widget in an open page -> results drawn", switches))
            print(summary("   server done", switches_server))

            page.close()
            idle_before = cpu_percent(proc.pid, 5)
            pages = []
            for _ in range(args.sessions):
                session = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
                session.goto(f"{url}/?{BASE}&seed=0")
                wait_results(session)
                pages.append(session)
            time.sleep(3)
            idle = cpu_percent(proc.pid, args.seconds)
            print(f"server CPU, no sessions: {idle_before:.2f}% of a core; with {args.sessions} idle sessions "
                  f"on a finished run: {idle:.2f}% of a core (over {args.seconds:.0f} s)")
            browser.close()
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
