"""A fresh server's first student: Train pressed on the first page opened, to the first loss point.

    python bench/bench_cold_start.py [--settle 20] [--query "dataset=digits"] [--repeats 1]

For each way of starting the server, side by side in one run: a fresh server (its own cache, worker
processes as deployed) is started and its health check answered; ``--settle`` seconds later (an
instructor who started it before class) the first browser page opens the Playground, and Train is
pressed as soon as it shows. Prints the seconds from the health check's answer to the page, from the
click to the first point of the loss chart, and os.getloadavg() beside each (a loaded machine stretches
every figure; compare the two rows, not absolutes).

  before: ``python -m streamlit run app/main.py`` (main's start: the trainers start with the first page view)
  after:  ``python -m app.launch`` (README's start: the trainers start and warm up with the server)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.browser_helpers import LAUNCH, LOSS_POINTS_JS, STREAMLIT_RUN, free_port, launch, start_server, stop_server  # noqa: E402

STARTS = (("before: streamlit run app/main.py", STREAMLIT_RUN), ("after:  python -m app.launch", LAUNCH))


def load() -> str:
    return "load " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def first_point(command: tuple[str, ...], settle: float, query: str, timeout: float = 120.0) -> dict:
    """Seconds from Train to the first loss point on a fresh server started by ``command``."""
    with tempfile.TemporaryDirectory(prefix="gl-cold-") as tmp:
        port = free_port()
        server = start_server(Path(tmp) / "cache", port, Path(tmp) / "server.log", command=command)
        try:
            time.sleep(settle)
            with sync_playwright() as p:
                browser = launch(p)
                page = browser.new_page(viewport={"width": 1280, "height": 1600})
                t0 = time.monotonic()
                page.goto(f"http://127.0.0.1:{port}/?{query}")
                train = page.get_by_role("button", name="Train", exact=True)
                train.wait_for(timeout=timeout * 1000)
                shown = time.monotonic() - t0
                t1 = time.monotonic()
                train.click()
                deadline = t1 + timeout
                while page.evaluate(LOSS_POINTS_JS) < 1:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no loss point {timeout:.0f} s after Train")
                    time.sleep(0.02)
                point = time.monotonic() - t1
                browser.close()
        finally:
            stop_server(server)
    return {"page": shown, "point": point, "load": load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=20.0, help="seconds between the health check and the page")
    parser.add_argument("--query", default="dataset=digits", help="the Playground's URL query (its config)")
    parser.add_argument("--repeats", type=int, default=1, help="fresh servers per way of starting")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}; page opened {args.settle:g} s after the health check; config ?{args.query}")
    rows: dict[str, list[dict]] = {label: [] for label, _ in STARTS}
    for _ in range(args.repeats):
        for label, command in STARTS:  # interleaved: both see the same load
            r = first_point(command, args.settle, args.query)
            rows[label].append(r)
            print(f"{label}  page shown {r['page']:5.2f} s   Train -> first loss point {r['point']:5.2f} s"
                  f"   ({r['load']})", flush=True)
    before, after = (min(r["point"] for r in rows[label]) for label, _ in STARTS)
    print(f"best of {args.repeats}: before {before:.2f} s, after {after:.2f} s "
          f"(ratio {before / after:.1f}x; target: after <= 1 s)")


if __name__ == "__main__":
    main()
