"""A class follows a lecture: N light sessions (bench/st_client.py) follow the built-in vanishing lecture while
a real browser presents it with the instructor token (loopback only, offline: the Digits fallback).

    python bench/bench_follow.py [--sessions 30] [--moves 3] [--idle 20]

Each light session does what a following page's component does in the browser: it listens to the lecture's
follow stream (app/stream.py) and reruns the page's follow fragment when the stream names a new step.

Prints p50 / p95 seconds from the instructor's Next to each student showing the new step (and to the last
student of each move), then the server's CPU seconds per second and RSS (with its worker processes) with the
N sessions following, against the same N sessions idle on the same page without following, measured side by
side on one server. Targets (the issue's): p95 <= 2 s; following CPU <= 1.2x idle.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_lecture import percentile, tree_rss_mb  # noqa: E402
from playwright.async_api import async_playwright  # noqa: E402
from st_client import Session  # noqa: E402

from app.stream import follow_root  # noqa: E402
from app.views.lecture import FOLLOW_POLL_SECONDS  # noqa: E402
from core.lessons.lectures import BUILTIN  # noqa: E402
from tests.browser_helpers import CHROMIUM, free_port, start_server, stop_server  # noqa: E402

TOKEN = "bench-token"
LECTURE = BUILTIN["vanishing"]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (live ones, and children it waited for)."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tick
        except (OSError, IndexError):
            pass
    return total


def step_query(number: int, mode: str | None) -> str:
    step = LECTURE.step(number)
    extra = {"lecture": LECTURE.name, "step": str(number), mode: "1"} if mode else {}
    return urllib.parse.urlencode({**step.query, **extra}, safe=",-")


async def follow_stream(port: int, s: Session, shown: list[int]) -> None:
    """What a following page's component does in the browser (app/views/lecture.py): listen to the lecture's
    stream and, when it names another step than the one shown, rerun the follow fragment."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {follow_root('')}/{LECTURE.name} HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    await writer.drain()
    try:
        while line := await reader.readline():
            text = line.decode().strip()
            if text.startswith("data: ") and int(text.removeprefix("data: ")) != shown[0]:
                await s.rerun_fragments_every(FOLLOW_POLL_SECONDS)
    finally:
        writer.close()


async def student(port: int, arrivals: dict, ready: asyncio.Event, stop: asyncio.Event) -> None:
    async with Session(port, "lecture", f"lecture={LECTURE.name}") as s:
        await s.wait_for_text(f"step 1 of {len(LECTURE.steps)}", timeout=300)
        shown = [1]
        listening = asyncio.create_task(follow_stream(port, s, shown))
        ready.set()
        while not stop.is_set():
            for number in range(shown[0] + 1, len(LECTURE.steps) + 1):
                if any(f"step {number} of" in text for text in s.state.texts):
                    arrivals.setdefault(number, []).append(time.monotonic())
                    shown[0] = number
            await asyncio.sleep(0.02)
        listening.cancel()


async def idle_student(port: int, ready: asyncio.Event, stop: asyncio.Event) -> None:
    step = LECTURE.step(1)
    async with Session(port, step.page, step_query(1, None)) as s:
        await s.wait_finished(timeout=300)
        ready.set()
        await stop.wait()


async def cpu_over(pid: int, seconds: float) -> tuple[float, float]:
    """(CPU seconds per second, RSS MB) of the server over ``seconds``."""
    start_cpu, start = tree_cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (tree_cpu_seconds(pid) - start_cpu) / (time.monotonic() - start), tree_rss_mb(pid)


async def measure(port: int, pid: int, n: int, moves: int, idle_s: float) -> dict:
    out: dict = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM),
                                          args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        teacher = await (await browser.new_context(viewport={"width": 1280, "height": 720})).new_page()
        await teacher.goto(f"http://127.0.0.1:{port}/{LECTURE.step(1).page}?{step_query(1, 'present')}")
        await teacher.get_by_text("step 1 of").first.wait_for(timeout=300_000)
        await teacher.get_by_role("button", name="Class and token").click()
        field = teacher.locator('input[aria-label="Instructor token"]')
        await field.fill(TOKEN)
        await field.press("Enter")
        await teacher.get_by_text("The class is on step 1").wait_for(timeout=60_000)
        await teacher.keyboard.press("Escape")

        # 1. N sessions idle on the page, then the same N following it: CPU and RSS side by side.
        stop, readies = asyncio.Event(), [asyncio.Event() for _ in range(n)]
        tasks = [asyncio.create_task(idle_student(port, r, stop)) for r in readies]
        await asyncio.gather(*(r.wait() for r in readies))
        out["idle"] = await cpu_over(pid, idle_s)
        stop.set()
        await asyncio.gather(*tasks)
        arrivals: dict[int, list[float]] = {}
        stop, readies = asyncio.Event(), [asyncio.Event() for _ in range(n)]
        tasks = [asyncio.create_task(student(port, arrivals, r, stop)) for r in readies]
        await asyncio.gather(*(r.wait() for r in readies))
        out["following"] = await cpu_over(pid, idle_s)

        # 2. The instructor's Next, and when each student shows the new step.
        lags, last = [], []
        for number in range(2, min(moves + 1, len(LECTURE.steps)) + 1):
            clicked = time.monotonic()
            await teacher.get_by_role("button", name="Next").click()
            deadline = clicked + 120
            while len(arrivals.get(number, [])) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            times = [t - clicked for t in arrivals.get(number, [])]
            lags += times
            last.append(max(times) if len(times) == n else float("inf"))
            await teacher.get_by_text(f"step {number} of").first.wait_for(timeout=120_000)
            await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*tasks)
        out["lags"], out["last"] = lags, last
        await browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--moves", type=int, default=3)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of each CPU measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "no-datasets"
        empty.mkdir()
        port = free_port()
        proc = start_server(Path(tmp) / "cache", port, Path(tmp) / "streamlit.log",
                            {"OMP_NUM_THREADS": "1", "GRADIENT_LAB_INSTRUCTOR_TOKEN": TOKEN,
                             "GRADIENT_LAB_DATA_DIR": str(empty)})
        try:
            out = asyncio.run(measure(port, proc.pid, args.sessions, args.moves, args.idle))
        finally:
            stop_server(proc)
    lags = out["lags"]
    print(f"{args.sessions} students following, {len(out['last'])} moves")
    print(f"  Next -> a student shows the new step: p50 {statistics.median(lags):.2f} s, "
          f"p95 {percentile(lags, 0.95):.2f} s ({len(lags)} arrivals; target p95 <= 2 s)")
    print(f"  Next -> the last student: {', '.join(f'{t:.2f} s' for t in out['last'])}")
    (idle_cpu, idle_rss), (follow_cpu, follow_rss) = out["idle"], out["following"]
    print(f"  server CPU: idle on the page {idle_cpu:.3f} s/s, following {follow_cpu:.3f} s/s "
          f"({follow_cpu / max(idle_cpu, 1e-9):.2f}x; target <= 1.2x)")
    print(f"  server RSS: idle {idle_rss:.0f} MB, following {follow_rss:.0f} MB")


if __name__ == "__main__":
    main()
