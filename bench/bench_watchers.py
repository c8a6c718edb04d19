"""New-page load time and training speed against the number of sessions watching a live run.

    python bench/bench_watchers.py [--sessions 0 2 5 10] [--gc false] [--seconds 15]

For each count N: a fresh long run is started (one page clicks Train, then leaves), N headless
Chromium pages open the run and watch it live, and then two new pages are opened ``--seconds``
apart. Each new page's load time is from navigation to the live "step n of m" line; the two
step numbers give the server's training steps/s while N sessions poll. ``--gc`` sets
Streamlit's ``runner.postScriptGC`` (the app's config says false; ``true`` is Streamlit's
default, the "before" of issue 14). The server is bound to 127.0.0.1, with one torch thread.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from tests.test_browser import free_port, launch, stop_server  # noqa: E402

RUN = "epochs=200&batch_size=8&log_every=20&hidden=64,64"  # digits: ~32,000 steps, longer than a measurement
STEP_RE = re.compile(r"step ([\d,]+) of ([\d,]+)")


def start_server(cache: Path, port: int, log_path: Path, post_script_gc: str) -> subprocess.Popen:
    env = {**os.environ, "GRADIENT_LAB_CACHE_DIR": str(cache), "GRADIENT_LAB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "GRADIENT_LAB_TORCH_THREADS": "1", "GRADIENT_LAB_MAX_QUEUED_PER_SESSION": "100"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.port", str(port),
                             "--server.headless", "true", "--server.address", "127.0.0.1",
                             "--runner.postScriptGC", post_script_gc],
                            cwd=REPO, env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"server did not start:\n{log_path.read_text()[-2000:]}")


def read_step(page, timeout_s: float) -> int | None:
    """The live step number once the page shows it (None after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            text = page.inner_text("body", timeout=max(1.0, deadline - time.monotonic()) * 1000)
        except PlaywrightTimeout:
            return None
        match = STEP_RE.search(text)
        if match:
            return int(match.group(1).replace(",", ""))
        time.sleep(0.2)
    return None


def new_page_step(browser, url: str, timeout_s: float) -> tuple[float | None, int | None, float]:
    """(load seconds or None, step shown, monotonic time it was read) for a fresh session."""
    page = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
    t0 = time.monotonic()
    try:
        page.goto(url, timeout=timeout_s * 1000)
    except PlaywrightTimeout:
        page.context.close()
        return None, None, time.monotonic()
    step = read_step(page, timeout_s - (time.monotonic() - t0))
    t1 = time.monotonic()
    page.context.close()
    return (t1 - t0 if step is not None else None), step, t1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, nargs="+", default=[0, 2, 5, 10])
    parser.add_argument("--gc", choices=["true", "false"], default="false", help="runner.postScriptGC")
    parser.add_argument("--seconds", type=float, default=15.0, help="between the two new pages")
    parser.add_argument("--timeout", type=float, default=120.0, help="longest wait for one new page")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gl-watchers-"))
    port = free_port()
    proc = start_server(tmp / "cache", port, tmp / "streamlit.log", args.gc)
    print(f"runner.postScriptGC={args.gc}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'watchers':>8} {'new page load (s)':>18} {'training steps/s':>17}")
    try:
        with sync_playwright() as p:
            browser = launch(p)
            for seed, n in enumerate(args.sessions):
                url = f"http://127.0.0.1:{port}/?{RUN}&seed={seed + 100}"
                starter = browser.new_context().new_page()
                starter.goto(url)
                starter.get_by_role("button", name="Train", exact=True).click()
                if read_step(starter, args.timeout) is None:
                    raise RuntimeError("the run did not start")
                starter.goto(f"http://127.0.0.1:{port}/library")  # leaves the run: not a watcher
                watchers = []
                for _ in range(n):
                    page = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
                    page.goto(url)
                    watchers.append(page)
                for page in watchers:
                    read_step(page, args.timeout)
                time.sleep(3)
                load_a, step_a, t_a = new_page_step(browser, url, args.timeout)
                time.sleep(args.seconds)
                load_b, step_b, t_b = new_page_step(browser, url, args.timeout)
                loads = [x for x in (load_a, load_b) if x is not None]
                load = f"{max(loads):.1f}" if len(loads) == 2 else f"> {args.timeout:.0f}"
                rate = f"{(step_b - step_a) / (t_b - t_a):.1f}" if step_a is not None and step_b is not None else "n/a"
                print(f"{n:>8} {load:>18} {rate:>17}", flush=True)
                for page in watchers[1:]:
                    page.context.close()
                stopper = watchers[0] if watchers else starter
                if not watchers:
                    stopper.goto(url)
                try:  # free the worker for the next level's run
                    stopper.get_by_role("button", name="Cancel").first.click(timeout=args.timeout * 1000)
                    stopper.wait_for_timeout(2000)
                except PlaywrightTimeout:
                    print("  (could not cancel the run; the next level may wait for it)", flush=True)
                stopper.context.close()
                if watchers:
                    starter.context.close()
            browser.close()
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
