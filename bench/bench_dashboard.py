"""Dashboard latency and idle cost, measured in Debian's Chromium against a real server.

    python bench/bench_dashboard.py [--repeats 5] [--sessions 10] [--seconds 20] [--before REF]

Prints:
  0. a fresh server: process start -> healthy -> Train shown -> first loss point of a Train pressed
     at once (so it includes the trainer warm-up);
  1. click Train -> first point on the loss chart (server warm, dataset loaded), timed in the page;
  2. a cached run: page load -> final metrics and the charts drawn, on this tree and on ``--before``
     (a git ref, by default where this branch left main: every chart drawn at once), loads
     alternating between the two servers, with the ratio; then opening "Inside the network";
  3. the same after changing a widget in an open page (the in-session case);
  4. server CPU (% of one core, from /proc/<pid>/stat) with N idle sessions open on a finished run.

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.browser_helpers import LOSS_POINTS_JS, free_port, launch, start_server, stop_server  # noqa: E402

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
# The final metrics are shown, every chart on the page is drawn, and charts with these titles are among them.
RESULTS_DRAWN_JS = """(needed) => {
  if (![...document.querySelectorAll('[data-testid="stMetric"]')].some(m => m.innerText.includes('Test accuracy'))) return false;
  const boxes = [...document.querySelectorAll('[data-testid="stPlotlyChart"]')];
  const plots = boxes.map(b => b.classList.contains('js-plotly-plot') ? b : b.querySelector('.js-plotly-plot'));
  if (plots.some(g => !g || !g._fullLayout || !g.querySelector('.main-svg'))) return false;
  const titles = plots.map(g => g.layout && g.layout.title ? String(g.layout.title.text || '') : '');
  return needed.every(n => titles.some(t => t.includes(n)));
}"""
AFTER = ["Loss (train", "Accuracy (train"]  # this tree: the rest waits in closed expanders
EAGER_REF = "4383571"  # main before the run view drew its charts on demand (issue 10.5)
BEFORE = ["Loss (train", "Confusion", "Misclassified"]  # every chart at once; the images are drawn last
INSIDE = "Inside the network"
INSIDE_DRAWN = ["Loss (train", "Gradient norm per layer (log scale)", "How far each weight moved"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_percent(pid: int, seconds: float) -> float:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def wait_results(page, needed: list[str] = AFTER, timeout: float = 120) -> None:
    page.wait_for_function(RESULTS_DRAWN_JS, arg=needed, timeout=timeout * 1000, polling=10)


def old_tree(ref: str) -> Path:
    """The app as it was at ``ref``, unpacked into a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="gl-before-"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def cold_start(browser, cache: Path, log: Path, env: dict) -> list[float]:
    """Seconds from starting a server process to: healthy, Train shown, first loss point of a Train pressed then."""
    t0 = time.perf_counter()
    port = free_port()
    proc = start_server(cache, port, log, env)
    try:
        healthy = time.perf_counter() - t0
        page = browser.new_context(viewport={"width": 1500, "height": 1200}).new_page()
        page.goto(f"http://127.0.0.1:{port}/?{BASE}&seed=2000")
        page.get_by_role("button", name="Train", exact=True).wait_for(timeout=120_000)
        shown = time.perf_counter() - t0
        if page.evaluate(CLICK_TO_FIRST_POINT_JS.replace("30000", "120000")) < 0:
            raise RuntimeError("no loss point after the first Train of a fresh server")
        first = time.perf_counter() - t0
        page.context.close()
        return [healthy, shown, first]
    finally:
        stop_server(proc)


def server_done_ms(page, since_ms: float, gap_ms: float = 300) -> float:
    """ms from ``since_ms`` (page clock) to the last message of the first burst after it."""
    times = [t for t in page.evaluate("() => window.__ws") if t >= since_ms]
    last = times[0] if times else since_ms
    for t in times[1:]:
        if t - last > gap_ms:
            break
        last = t
    return last - since_ms


def cached_loads(page, url: str, needed: list[str], seed: int) -> tuple[float, float]:
    """One load of a cached run: (page load -> results drawn, server done), seconds."""
    t0 = time.perf_counter()
    page.goto(f"{url}/?{BASE}&seed={seed}")
    wait_results(page, needed)
    return time.perf_counter() - t0, server_done_ms(page, 0) / 1000


def summary(label: str, values: list[float]) -> str:
    return (f"{label}: median {statistics.median(values):.3f} s, max {max(values):.3f} s "
            f"({', '.join(f'{v:.3f}' for v in values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--loads-only", action="store_true", help="only the cached-run loads, before vs after")
    parser.add_argument("--before", default=EAGER_REF, help="git ref drawn as 'before' (default: the last commit "
                        "that drew every chart of a run at once)")
    args = parser.parse_args()

    before_ref = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.before], check=True,
                                capture_output=True, text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="gl-bench-"))
    env = {"OMP_NUM_THREADS": str(args.torch_threads), "MKL_NUM_THREADS": str(args.torch_threads)}
    print(f"torch threads {args.torch_threads}, load average {', '.join(f'{v:.2f}' for v in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs; before = {before_ref[:10]}")
    if not args.loads_only:
        with sync_playwright() as p:
            browser = launch(p)
            healthy, shown, first = cold_start(browser, tmp / "cold-cache", tmp / "cold.log", env)
            print(f"fresh server: start -> healthy {healthy:.2f} s, -> Train shown {shown:.2f} s, -> first loss "
                  f"point of a Train pressed then {first:.2f} s (trainer warm-up included)")
            browser.close()

    port, old_port = free_port(), free_port()
    proc = start_server(tmp / "cache", port, tmp / "streamlit.log", env)
    old_proc = start_server(tmp / "old-cache", old_port, tmp / "old.log", env, repo=old_tree(before_ref))
    print(f"server pid {proc.pid} (this tree), {old_proc.pid} (before)")
    url, old_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{old_port}"
    try:
        with sync_playwright() as p:
            browser = launch(p)
            context = browser.new_context(viewport={"width": 1500, "height": 1200})
            context.add_init_script(WS_HOOK)
            page = context.new_page()

            # Warm up both: load the page (the data preview loads digits), train once, render a result.
            for base, needed in ((url, AFTER), (old_url, BEFORE)):
                page.goto(f"{base}/?{BASE}&seed=1000")
                page.get_by_role("button", name="Train", exact=True).click()
                wait_results(page, needed)

            latencies, latency_server = [], []
            for seed in range(0 if args.loads_only else args.repeats):
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
            if latencies:
                print(summary("click Train -> first loss point drawn", latencies))
                print(summary("   server done with that rerun (first point included)", latency_server))

            servers = ((old_url, BEFORE),) + (((url, AFTER),) if args.loads_only else ())
            for seed in range(args.repeats):  # the same runs, cached on the old server too
                for base, needed in servers:
                    page.goto(f"{base}/?{BASE}&seed={seed}")
                    page.get_by_role("button", name="Train", exact=True).click()
                    wait_results(page, needed)
            print(f"load average now {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
            timings: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
            for seed in range(args.repeats):  # alternating, so both see the same machine load
                timings["before"].append(cached_loads(page, old_url, BEFORE, seed))
                timings["after"].append(cached_loads(page, url, AFTER, seed))
            for name, label in (("before", "every chart at once"), ("after", "summary + loss/accuracy")):
                print(summary(f"cached run, page load -> results drawn, {name} ({label})", [t for t, _ in timings[name]]))
                print(summary("   server done (from navigation start)", [s for _, s in timings[name]]))
            ratio = statistics.median(t for t, _ in timings["before"]) / statistics.median(t for t, _ in timings["after"])
            print(f"   before / after (medians): {ratio:.2f}x")
            opens = []
            for seed in range(args.repeats):
                page.goto(f"{url}/?{BASE}&seed={seed}")
                wait_results(page, AFTER)
                t0 = time.perf_counter()
                page.get_by_text(INSIDE).first.click()
                wait_results(page, INSIDE_DRAWN)
                opens.append(time.perf_counter() - t0)
            print(summary(f"   then open '{INSIDE}' -> its charts drawn", opens))
            if args.loads_only:
                return

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
        stop_server(old_proc)
        print(f"load average at the end {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
