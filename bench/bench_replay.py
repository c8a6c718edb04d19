"""A trained lesson replayed: the Vanishing page's lesson A link, already trained, opened in a fresh browser.

    python bench/bench_replay.py [--repeats 5] [--before REF] [--mnist]

Trains the lesson A link's three jobs (the grid, its fixes, the seeds) into a run store, and again with the
tree of ``--before`` (a git ref, by default main before this benchmark: 6a84b7c) into its own store (the stored
format changed since), starts a server on each, then opens the link in a fresh browser context on each server, alternating, and prints per server:
page load -> every chart drawn (the 8 charts of the three trained jobs), when the server's last websocket
message of that load arrived ("server done": the rest is the browser drawing), and the bytes those
messages carried; then a reload of the same page. In the same run it measures the floor under any such
page (bench/replay_floor.py): a fresh browser opening a bare Streamlit page, and one with a single trivial
Plotly chart, on a server of their own, and prints the lesson against that floor. Without ``--mnist`` the servers see no data folder, so
the link shows the lesson on the Digits fallback (20 epochs, about 2 minutes to train); ``--mnist`` uses
the real files (GRADIENT_LAB_DATA_DIR or ../shared/datasets), which take far longer to train on a CPU.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from playwright.sync_api import sync_playwright  # noqa: E402

from bench_dashboard import old_tree  # noqa: E402
from core.lessons.families import VANISHING_LESSON  # noqa: E402
from core.lessons.presets import A_LESSON_FIXES_DEPTH  # noqa: E402
from tests.browser_helpers import free_port, launch, start_server, stop_server  # noqa: E402

BEFORE_REF = "6a84b7c"  # main before this benchmark
N_CHARTS = 8  # grid: accuracy, losses, gradient band, first layer; fixes and seeds: profile, accuracy each
# Records every websocket message the page receives: arrival time (performance.now()) and size in bytes.
WS_HOOK = """(() => { window.__ws = []; const Native = window.WebSocket;
  window.WebSocket = function (...args) { const ws = new Native(...args);
    ws.addEventListener('message', (e) => window.__ws.push([performance.now(),
      e.data.byteLength || e.data.size || (e.data.length || 0)])); return ws; };
  window.WebSocket.prototype = Native.prototype; Object.assign(window.WebSocket, Native); })();"""
# Every chart box on the page holds a drawn Plotly plot, and there are at least ``n`` of them.
CHARTS_DRAWN_JS = """(n) => {
  const boxes = [...document.querySelectorAll('[data-testid="stPlotlyChart"]')];
  const plots = boxes.map(b => b.classList.contains('js-plotly-plot') ? b : b.querySelector('.js-plotly-plot'));
  return plots.length >= n && plots.every(g => g && g._fullLayout && g.querySelector('.main-svg'));
}"""
TRAIN_SCRIPT = """
import sys, time
from core.lessons.families import VANISHING_LESSON, fixes_grid, seeds_grid, vanishing_log_every
from core.lessons.presets import A_FALLBACK
from core.engine.data import available
from core.serve.jobs import get_manager

def main():
    grid = VANISHING_LESSON
    if not available(grid.base.dataset):  # what the page does: the lesson on Digits
        grid = grid.replace(base=grid.base.replace(dataset="digits", log_every=vanishing_log_every("digits"),
                                                   epochs=dict(A_FALLBACK.overrides)["epochs"]))
    fixes = fixes_grid(grid.base.replace(hidden=(grid.width,) * int(sys.argv[1]), activation="sigmoid"))
    manager = get_manager()
    keys = [manager.submit(c, session="bench", browser="bench") for c in (grid, fixes, seeds_grid(fixes.base))]
    while not all(manager.snapshot(k).done for k in keys):
        time.sleep(1)
    print([manager.snapshot(k).status for k in keys])

if __name__ == "__main__":
    main()
"""


def lesson_link() -> str:
    """The address the lesson A button writes (core.lessons.families.VANISHING_LESSON, fixes and seeds at the
    lesson's depth); both trees open the same one."""
    return "vanishing?" + urlencode({**VANISHING_LESSON.to_query(), "fix_depth": A_LESSON_FIXES_DEPTH, "lesson": "A"})


def train(cache: Path, env: dict, repo: Path = REPO) -> float:
    """The lesson's three jobs trained by ``repo``'s own engine into ``cache`` (each tree reads its own store
    format)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(A_LESSON_FIXES_DEPTH)], cwd=repo, check=True,
                         capture_output=True, text=True,
                         env={**os.environ, **env, "GRADIENT_LAB_CACHE_DIR": str(cache)})
    if "failed" in out.stdout:
        raise RuntimeError(f"training the lesson failed: {out.stdout}{out.stderr[-2000:]}")
    return time.perf_counter() - t0


def server_done(page) -> tuple[float, int]:
    """(seconds from navigation start to the last websocket message so far, bytes of every message so far)."""
    messages = page.evaluate("() => window.__ws")
    return (messages[-1][0] / 1000 if messages else 0.0), sum(n for _, n in messages)


def open_fresh(browser, url: str, n_charts: int) -> tuple[float, float, int, float]:
    """A new visitor opens ``url``: (load -> every chart drawn, server done, bytes, reload -> every chart drawn)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    context.add_init_script(WS_HOOK)
    page = context.new_page()
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_function(CHARTS_DRAWN_JS, arg=n_charts, timeout=180_000, polling=10)
    drawn = time.perf_counter() - t0
    done, size = server_done(page)
    t0 = time.perf_counter()
    page.reload()
    page.wait_for_function(CHARTS_DRAWN_JS, arg=n_charts, timeout=180_000, polling=10)
    reload = time.perf_counter() - t0
    context.close()
    return drawn, done, size, reload


def open_floor(browser, url: str, n_charts: int) -> float:
    """A new visitor opens the floor page ``url``: seconds until its title (and its ``n_charts`` charts) are drawn."""
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    t0 = time.perf_counter()
    page.goto(url)
    if n_charts:
        page.wait_for_function(CHARTS_DRAWN_JS, arg=n_charts, timeout=180_000, polling=10)
    else:
        page.get_by_role("heading", name="Floor").wait_for(timeout=180_000)
    seconds = time.perf_counter() - t0
    context.close()
    return seconds


def summary(label: str, values: list[float], unit: str = "s", digits: int = 2) -> str:
    return (f"{label}: median {statistics.median(values):.{digits}f} {unit}, max {max(values):.{digits}f} {unit} "
            f"({', '.join(f'{v:.{digits}f}' for v in values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", default=BEFORE_REF)
    parser.add_argument("--mnist", action="store_true", help="the real MNIST lesson (slow to train on a CPU)")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--store", type=Path, help="a run store that already holds the trained lesson (copied)")
    args = parser.parse_args()

    before_ref = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.before], check=True,
                                capture_output=True, text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="gl-replay-"))
    env = {"OMP_NUM_THREADS": str(args.torch_threads), "MKL_NUM_THREADS": str(args.torch_threads)}
    if args.mnist:
        shared = REPO.parent / "shared" / "datasets"
        env["GRADIENT_LAB_DATA_DIR"] = os.environ.get("GRADIENT_LAB_DATA_DIR") or str(shared)
    else:
        env["GRADIENT_LAB_DATA_DIR"] = ""  # no data folder: the lesson on the Digits fallback
    os.environ.update(env)
    print(f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs; "
          f"before = {before_ref[:10]}; {'MNIST' if args.mnist else 'Digits fallback'}")
    before_tree = old_tree(before_ref)
    if args.store:
        shutil.copytree(args.store, tmp / "cache")
    else:
        print(f"trained the lesson's three jobs in {train(tmp / 'cache', env):.0f} s")
    print(f"and with the tree before, in its own store format, in {train(tmp / 'old-cache', env, before_tree):.0f} s")
    link = lesson_link()
    port, old_port = free_port(), free_port()
    proc = start_server(tmp / "cache", port, tmp / "streamlit.log", env)
    old_proc = start_server(tmp / "old-cache", old_port, tmp / "old.log", env, repo=before_tree)
    floor_port = free_port()
    floor_proc = start_server(tmp / "floor-cache", floor_port, tmp / "floor.log", env,
                              command=("-m", "streamlit", "run", "bench/replay_floor.py"))
    servers = {"before": f"http://127.0.0.1:{old_port}/{link}", "after": f"http://127.0.0.1:{port}/{link}"}
    floors = {"a bare Streamlit page": (f"http://127.0.0.1:{floor_port}/", 0),
              "one trivial Plotly chart": (f"http://127.0.0.1:{floor_port}/?charts=1", 1)}
    try:
        with sync_playwright() as p:
            browser = launch(p)
            for url in servers.values():  # warm: imports, the store read once, the dataset loaded
                open_fresh(browser, url, N_CHARTS)
            for url, n in floors.values():
                open_floor(browser, url, n)
            results: dict[str, list[tuple[float, float, int, float]]] = {name: [] for name in servers}
            floor_results: dict[str, list[float]] = {name: [] for name in floors}
            for _ in range(args.repeats):  # alternating, so all see the same machine load
                for name, url in servers.items():
                    results[name].append(open_fresh(browser, url, N_CHARTS))
                for name, (url, n) in floors.items():
                    floor_results[name].append(open_floor(browser, url, n))
            browser.close()
        for name, rows in results.items():
            print(summary(f"{name}: fresh browser, load -> all {N_CHARTS} charts drawn", [r[0] for r in rows]))
            print(summary("   server done (its last websocket message)", [r[1] for r in rows]))
            print(summary("   websocket bytes received", [r[2] / 1024 for r in rows], "KiB", 0))
            print(summary("   reload -> all charts drawn", [r[3] for r in rows]))
        for name, values in floor_results.items():
            print(summary(f"floor: fresh browser, load -> {name} drawn", values))
        after = statistics.median(r[0] for r in results["after"])
        ratio = statistics.median(r[0] for r in results["before"]) / after
        print(f"before / after, load -> all charts drawn (medians): {ratio:.2f}x")
        floor = statistics.median(floor_results["one trivial Plotly chart"])
        print(f"after / floor (one trivial Plotly chart), medians: {after / floor:.2f}x; "
              f"the lesson's own share: {after - floor:.2f} s")
    finally:
        stop_server(proc)
        stop_server(old_proc)
        stop_server(floor_proc)
        print(f"load average at the end {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
