"""New-page load time and training speed against the number of sessions watching a live run.

    python bench/bench_watchers.py [--sessions 0 30 60] [--gc false] [--preset E2] [--seconds 15]

For each ``runner.postScriptGC`` setting and each count N (default 0, 30 and 60 sessions, side by side), a fresh server starts (its own cache,
bound to 127.0.0.1, one torch thread) and a light client (bench/st_client.py) presses Train on a
long run, then leaves. N light clients open the run and watch it live: they keep its polling
fragment running as a browser does, so the server does each watcher's work while the machine
draws nothing. Then two new headless Chromium pages open the run ``--seconds`` apart. A new
page's load time is from navigation to the live "step n of m" line; the two step numbers give
the server's training steps/s while N sessions poll, and its ratio to the unwatched rate of
the same setting is the slowdown (time per epoch, watched / unwatched). Each row also says how many
of the N sessions saw the live run, and the machine's 1-minute load average when it was measured
(a loaded machine trains slower whoever watches). ``--gc true false`` compares Streamlit's default
(the "before" of issue 14) with the app's own config, ``false`` (the default here); both run in one
go, so their rows share the machine's load.

``--preset E2`` watches LESSONS E #2 on Fashion-MNIST (needs the course's datasets) instead of
the default Digits run.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import benchlib  # noqa: E402,F401  (the repository importable, the course's datasets found)
from playwright.async_api import TimeoutError as PlaywrightTimeout  # noqa: E402
from playwright.async_api import async_playwright  # noqa: E402
from st_client import Session  # noqa: E402

from core.engine.config import RunConfig  # noqa: E402
from core.lessons.presets import get_preset  # noqa: E402
from tests.browser_helpers import CHROMIUM, free_port, start_server, stop_server  # noqa: E402

DIGITS_RUN = RunConfig(dataset="digits", hidden=(64, 64), batch_size=8, epochs=200, log_every=20)  # ~32,000 steps
STEP_RE = re.compile(r"step ([\d,]+) of ([\d,]+)")


def watched_run(preset: str | None) -> RunConfig:
    if not preset:
        return DIGITS_RUN
    return get_preset(preset).runs[0][1]


def query(cfg: RunConfig) -> str:
    return "&".join(f"{k}={v}" for k, v in cfg.to_query().items())


async def page_step(page, timeout_s: float) -> int | None:
    """The live step number once the page shows it (None after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            text = await page.inner_text("body", timeout=max(1.0, deadline - time.monotonic()) * 1000)
        except PlaywrightTimeout:
            return None
        match = STEP_RE.search(text)
        if match:
            return int(match.group(1).replace(",", ""))
        await asyncio.sleep(0.2)
    return None


async def new_page(browser, url: str, timeout_s: float) -> tuple[float | None, int | None, float]:
    """(load seconds or None, step shown, monotonic time it was read) for a fresh browser session."""
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await context.new_page()
    t0 = time.monotonic()
    try:
        await page.goto(url, timeout=timeout_s * 1000)
        step = await page_step(page, timeout_s - (time.monotonic() - t0))
    except PlaywrightTimeout:
        step = None
    t1 = time.monotonic()
    await context.close()
    return (t1 - t0 if step is not None else None), step, t1


async def session_step(session: Session, timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for text in reversed(session.state.texts):
            match = STEP_RE.search(text)
            if match:
                return int(match.group(1).replace(",", ""))
        await asyncio.sleep(0.1)
    return None


async def level(browser, gc: str, watchers: int, cfg: RunConfig, args) -> tuple[str, float | None, int]:
    """One fresh server, one live run, ``watchers`` polling sessions: (load text, steps/s, sessions that saw it)."""
    tmp = Path(tempfile.mkdtemp(prefix="gl-watchers-"))
    port = free_port()
    env = {"OMP_NUM_THREADS": "1", "GRADIENT_LAB_TORCH_THREADS": "1", "GRADIENT_LAB_MAX_QUEUED_PER_SESSION": "100"}
    proc = await asyncio.to_thread(start_server, tmp / "cache", port, tmp / "streamlit.log", env,
                                   ("--runner.postScriptGC", gc))
    sessions: list[Session] = []
    try:
        async with Session(port, "", query(cfg)) as starter:  # presses Train, then leaves: not a watcher
            await starter.wait_finished(args.timeout)
            await starter.click("Train", args.timeout)
            if await session_step(starter, args.timeout) is None:
                raise RuntimeError(f"the run did not start:\n{(tmp / 'streamlit.log').read_text()[-2000:]}")
        for _ in range(watchers):
            session = Session(port, "", query(cfg))
            sessions.append(await session.__aenter__())
        seen = await asyncio.gather(*(session_step(s, args.timeout) for s in sessions))
        saw = sum(step is not None for step in seen)
        await asyncio.sleep(3)
        url = f"http://127.0.0.1:{port}/?{query(cfg)}"
        load_a, step_a, t_a = await new_page(browser, url, args.timeout)
        await asyncio.sleep(args.seconds)
        load_b, step_b, t_b = await new_page(browser, url, args.timeout)
        loads = [x for x in (load_a, load_b) if x is not None]
        load = f"{max(loads):.1f}" if len(loads) == 2 else f"> {args.timeout:.0f}"
        rate = (step_b - step_a) / (t_b - t_a) if step_a is not None and step_b is not None else None
        return load, rate, saw
    finally:
        for session in sessions:
            await session.__aexit__(None, None, None)
        await asyncio.to_thread(stop_server, proc)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, nargs="+", default=[0, 30, 60])
    parser.add_argument("--gc", nargs="+", choices=["true", "false"], default=["false"],
                        help="runner.postScriptGC settings to compare")
    parser.add_argument("--preset", default=None, help="watch this preset's first run (e.g. E2)")
    parser.add_argument("--seconds", type=float, default=15.0, help="between the two new pages")
    parser.add_argument("--timeout", type=float, default=90.0, help="longest wait for one page or client")
    args = parser.parse_args()
    cfg = watched_run(args.preset)
    print(f"watching {cfg.dataset} {cfg.hidden}, batch {cfg.batch_size}; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'postScriptGC':>12} {'watchers':>8} {'saw the run':>11} {'new page load (s)':>18} "
          f"{'training steps/s':>17} {'time per epoch vs unwatched':>28} {'load average':>12}")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM),
                                          args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        for gc in args.gc:
            unwatched = None
            for n in args.sessions:
                try:
                    load, rate, saw = await level(browser, gc, n, cfg, args)
                except (RuntimeError, TimeoutError, asyncio.TimeoutError) as exc:
                    print(f"{gc:>12} {n:>8}  failed: {str(exc)[:200]}", flush=True)
                    continue
                if n == 0:
                    unwatched = rate
                slowdown = f"{unwatched / rate:.2f}x" if rate and unwatched else "n/a"
                shown = f"{rate:.1f}" if rate is not None else "n/a"
                print(f"{gc:>12} {n:>8} {saw:>11} {load:>18} {shown:>17} {slowdown:>28} "
                      f"{os.getloadavg()[0]:>12.1f}", flush=True)
        await browser.close()
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
