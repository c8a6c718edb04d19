"""A lecture on one server: N students follow the instructor's script at once (loopback only).

    python bench/bench_lecture.py [--sessions 10 30] [--browsers 2] [--timeout 600]

For each N, a fresh server starts (its own cache) and is opened once, as an instructor would
before the lecture, until its trainers have warmed up. Then N sessions open together: ``--browsers`` of
them are real headless Chromium pages, the rest light websocket clients (bench/st_client.py)
that speak Streamlit's protocol and keep polling fragments running as a browser does. Each
session follows the script:

  1. open the Vanishing-gradients page on the lesson's grid and press Train (all the same
     config: the server should train it once and let everyone watch);
  2. open the Playground on its own variant of the lesson (a deep sigmoid network with a
     learning rate of its own) and press Train.

Prints p50 / p95 seconds from Train to the first progress point for both steps, health-check
latency during the burst, jobs trained against jobs asked for, the server's RSS (with its
worker processes) before, at peak and after the sessions closed, and the errors seen.

    python bench/bench_lecture.py --backend ray [--jobs 12]

The job manager on a Ray cluster (docs/cluster.md) against the local one, side by side in one run, at the
job-manager level (no Streamlit): a loopback Ray head with token auth is started; the students' variants are
pressed one after another, alternately through two front-end objects, and on the local manager (worker
processes); each backend prints Train -> first point p50 / p95 and the per-job overhead (submit to done,
less the training's own time). Then 30 presses of one new config are split between this process and a
second front-end process: the history must show one training.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))  # tests/ray_helpers finds its browser_helpers

from playwright.async_api import async_playwright  # noqa: E402
from st_client import Session  # noqa: E402

from core.engine.config import RunConfig  # noqa: E402
from core.lab.grid import GridConfig  # noqa: E402
from core.serve.store import RunStore  # noqa: E402
from core.serve.jobs import JobManager, get_manager  # noqa: E402
from tests.browser_helpers import CHROMIUM, free_port, start_server, stop_server  # noqa: E402
from tests.ray_helpers import head_env, start_head, stop_head  # noqa: E402

# Small enough that 30 students' worth trains within the bench's time on a 2-core CPU.
LESSON = GridConfig(base=RunConfig(dataset="digits", epochs=2, batch_size=32, optimizer="sgd", lr=0.2,
                                   log_every=20), activations=("sigmoid", "relu"), depths=(1, 2, 3, 4), width=10)
# The Playground's status line says "step 12 of 340"; the Vanishing grid's "epoch 0.2 of 2".
TRAIN_BUTTON = re.compile(r"^(play_arrow)?\s*(Train( the grid)?( again)?|Training…)$")
FIRST_POINT = re.compile(r"step [1-9][\d,]* of|epoch (?!0 )[\d.]+ of", re.IGNORECASE)


def variant(i: int) -> RunConfig:
    """Student i's own network: a deep sigmoid net with a learning rate of its own."""
    return LESSON.base.replace(activation="sigmoid", hidden=(10,) * 4, lr=round(0.05 + 0.01 * i, 4))


def query(config) -> str:
    return "&".join(f"{k}={v}" for k, v in config.to_query().items())


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (the server and its trainers)."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        children.setdefault(int(fields["PPid"]), []).append(int(fields["Pid"]))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


async def press_train(port: int, page: str, config, step: str, out: dict) -> None:
    """Open ``page`` on ``config``, press Train, and record the seconds to the first progress point."""
    async with Session(port, page, query(config)) as s:
        await s.wait_finished()
        t0 = time.monotonic()
        await s.click("Train")
        while not any(FIRST_POINT.search(t) for t in s.state.texts):
            await asyncio.sleep(0.02)
        out[step].append(time.monotonic() - t0)
        out["errors"].extend(s.state.errors)


async def instructor_opens(port: int, timeout: float = 180.0) -> None:
    """Open the dashboard once and wait until its sidebar no longer says the trainer is warming up."""
    async with Session(port) as s:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await s.wait_finished(timeout)
            if not any("Warming up the trainer" in t for t in s.state.texts):
                return
            await asyncio.sleep(1)
            await s.rerun()
    raise TimeoutError(f"the trainer was still warming up after {timeout:.0f} s")


async def light_student(port: int, i: int, out: dict) -> None:
    await press_train(port, "vanishing", LESSON, "lesson", out)
    await press_train(port, "", variant(i), "variant", out)


async def browser_student(browser, port: int, i: int, out: dict) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    try:
        for step, (path, cfg) in enumerate((("vanishing", LESSON), ("", variant(i)))):
            await page.goto(f"http://127.0.0.1:{port}/{path}?{query(cfg)}")
            # "Train", "Train the grid", "... again" once stored, or "Training…" (disabled) while it trains:
            # a student who finds it training already watches it, with nothing to press.
            button = page.get_by_role("button", name=TRAIN_BUTTON).first
            await button.wait_for(timeout=120_000)
            t0 = time.monotonic()
            if "Training" not in await button.inner_text():
                await button.click()
            await page.get_by_text(FIRST_POINT).first.wait_for(timeout=300_000)
            out["lesson" if step == 0 else "variant"].append(time.monotonic() - t0)
    finally:
        await context.close()


async def health_pinger(port: int, latencies: list[float], stop: asyncio.Event) -> None:
    url = f"http://127.0.0.1:{port}/_stcore/health"
    while not stop.is_set():
        t0 = time.monotonic()
        await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=30).read())
        latencies.append(time.monotonic() - t0)
        await asyncio.sleep(0.25)


async def rss_sampler(pid: int, samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(tree_rss_mb(pid))
        await asyncio.sleep(0.5)


async def lecture(n: int, n_browsers: int, timeout: float) -> dict:
    cache = Path(tempfile.mkdtemp(prefix="gl-lecture-"))
    port = free_port()
    server = start_server(cache, port, cache / "server.log", {"GRADIENT_LAB_WORKER_PROCESSES": "1"})
    out: dict = {"lesson": [], "variant": [], "errors": [], "health": [], "rss": []}
    try:
        await instructor_opens(port)  # as before a lecture: the trainers have warmed up
        rss_before = tree_rss_mb(server.pid)
        stop = asyncio.Event()
        side = [asyncio.create_task(health_pinger(port, out["health"], stop)),
                asyncio.create_task(rss_sampler(server.pid, out["rss"], stop))]
        async with async_playwright() as p:
            browser = None
            if n_browsers:
                browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=[
                    "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            students = [browser_student(browser, port, i, out) if i < n_browsers else light_student(port, i, out)
                        for i in range(n)]
            t0 = time.monotonic()
            try:
                results = await asyncio.wait_for(asyncio.gather(*students, return_exceptions=True), timeout)
                out["errors"].extend(f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException))
            except asyncio.TimeoutError:  # what was measured so far is kept and printed
                out["errors"].append(f"timed out after {timeout:.0f} s: the counts below say how many got through")
            out["wall"] = time.monotonic() - t0
            if browser is not None:
                await browser.close()
        await asyncio.sleep(5)  # sessions closed: let the server let go of them
        stop.set()
        await asyncio.gather(*side, return_exceptions=True)
        out["rss_before"], out["rss_peak"], out["rss_after"] = rss_before, max(out["rss"]), tree_rss_mb(server.pid)
    finally:
        stop_server(server)
    runs = RunStore(cache / "runs").list_runs()
    out["asked"] = 2 * n
    out["distinct"] = 1 + len({variant(i).key() for i in range(n)})
    out["stored"] = sum(1 for r in runs if r.get("kind") == "grid") + len(
        {variant(i).key() for i in range(n)} & {r["key"] for r in runs})
    return out


# --- the Ray backend against the local one ----------------------------------------------------------------
DEDUP_PRESSES = 30


def first_point_and_overhead(manager, config, poll: float = 0.005) -> tuple[float, float]:
    """Seconds from submit to the first progress point, and submit-to-done less the run's own training time."""
    t0 = time.monotonic()
    key = manager.submit(config)
    first = None
    while True:
        snap = manager.snapshot(key)
        if first is None and any(e.kind == "steps" for e in snap.events):
            first = time.monotonic() - t0
        if snap.done:
            break
        time.sleep(poll)
    total = time.monotonic() - t0
    snap = manager.snapshot(key)
    if snap.status != "finished":
        raise RuntimeError(f"{config.key()[:8]} ended {snap.status}: {snap.error}")
    return first if first is not None else total, total - snap.events[-1].elapsed


def ready(manager, timeout: float = 300.0) -> None:
    """Start the trainers and wait until every one has warmed up (as an instructor's first visit does)."""
    manager.start()
    deadline = time.monotonic() + timeout
    while not all(w["state"] == "ready" for w in manager.warmup_status() or [{"state": ""}]):
        if time.monotonic() > deadline:
            raise TimeoutError("trainers still warming up")
        time.sleep(0.5)


def presses(manager, config, n: int, who: str) -> list[str]:
    return [manager.submit(config, session=f"{who}-{i}", browser=f"{who}-{i}") for i in range(n)]


def front_end(config_json: str, n: int) -> None:
    """A second front-end process (GRADIENT_LAB_RAY_ADDRESS set): ``n`` students press Train on one config."""
    config = RunConfig.from_dict(json.loads(config_json))
    print(json.dumps(sorted(set(presses(get_manager(), config, n, "second")))))


def ray_against_local(n_jobs: int) -> None:
    temp = Path(tempfile.mkdtemp(prefix="glbench", dir="/tmp"))
    env = head_env(temp, temp / "cache")
    os.environ.update({k: v for k, v in env.items() if k.startswith("RAY_")})  # before Ray loads
    head, address, env = start_head(temp, temp / "cache")
    configs = [variant(i) for i in range(n_jobs)]
    results: dict[str, tuple[list[float], list[float]]] = {}
    try:
        local = JobManager(RunStore(temp / "local-runs"), workers={"cpu": 1}, processes=True)
        ready(local)
        measured = [first_point_and_overhead(local, c) for c in configs]
        results["local"] = ([m[0] for m in measured], [m[1] for m in measured])
        local.shutdown()
        ray_backend = importlib.import_module("core.serve.ray_backend")  # a plugin, as get_manager loads it
        fronts = [ray_backend.RayJobManager(address, workers={"cpu": 1}), ray_backend.RayJobManager(address)]
        ready(fronts[0])
        measured = [first_point_and_overhead(fronts[i % 2], c) for i, c in enumerate(configs)]
        results["ray"] = ([m[0] for m in measured], [m[1] for m in measured])
        print(f"{n_jobs} students' variants pressed one after another, trainers warm; cores: {os.cpu_count()}")
        print(f"{'backend':8s} {'first point p50':>16s} {'p95':>8s} {'overhead p50':>13s} {'p95':>8s}")
        for name, (first, overhead) in results.items():
            print(f"{name:8s} {percentile(first, .5):14.3f} s {percentile(first, .95):6.3f} s "
                  f"{percentile(overhead, .5):11.3f} s {percentile(overhead, .95):6.3f} s")
        ratio = percentile(results["ray"][0], .5) / percentile(results["local"][0], .5)
        print(f"ray / local, first point p50: {ratio:.2f}x (target <= 1.5x)")

        # long enough (several seconds) that the second process's presses find it training, not stored
        shared = LESSON.base.replace(hidden=(128, 128), batch_size=8, epochs=40, seed=2026)
        second = subprocess.Popen([sys.executable, __file__, "--front-end", json.dumps(shared.to_dict()),
                                   "--jobs", str(DEDUP_PRESSES // 2)], env={**os.environ, **env,
                                  "GRADIENT_LAB_RAY_ADDRESS": address}, cwd=REPO, stdout=subprocess.PIPE, text=True)
        out, _ = second.communicate(timeout=300)  # its presses start the job; this front-end's join it
        keys = set(json.loads(out.strip().splitlines()[-1]))
        keys |= set(presses(fronts[0], shared, DEDUP_PRESSES - DEDUP_PRESSES // 2, "first"))
        done = fronts[0].wait(shared.key(), timeout=300)
        trainings = [e.kind for e in done.events].count("started")
        print(f"dedup across front-ends: {DEDUP_PRESSES} presses ({DEDUP_PRESSES - DEDUP_PRESSES // 2} here, "
              f"{DEDUP_PRESSES // 2} in a second front-end process) -> {len(keys)} job, {trainings} training, "
              f"{done.status}; {done.watchers} browsers watched it live")
    finally:
        stop_head(head)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--browsers", type=int, default=2, help="real Chromium pages among the sessions")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per lecture at most")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="ray: the Ray backend against the local one, at the job-manager level")
    parser.add_argument("--jobs", type=int, default=12, help="--backend ray: jobs timed per backend")
    parser.add_argument("--front-end", help=argparse.SUPPRESS)  # a second front-end process (a config's JSON)
    args = parser.parse_args()
    if args.front_end:
        return front_end(args.front_end, args.jobs)
    if args.backend == "ray":
        return ray_against_local(args.jobs)
    print(f"lesson grid: {LESSON.n_cells} cells on digits; cores: {os.cpu_count()}")
    for n in args.sessions:
        r = asyncio.run(lecture(n, min(args.browsers, n), args.timeout))
        print(f"\n{n} sessions ({min(args.browsers, n)} in Chromium), all done in {r.get('wall', float('nan')):.1f} s")
        for step in ("lesson", "variant"):
            v = r[step]
            print(f"  Train -> first point, {step:7s}: p50 {percentile(v, .5):6.2f} s  p95 {percentile(v, .95):6.2f} s"
                  f"  ({len(v)} of {n} sessions)")
        h = r["health"]
        print(f"  health check during the burst: p50 {percentile(h, .5) * 1000:.0f} ms  p95 "
              f"{percentile(h, .95) * 1000:.0f} ms  max {max(h, default=float('nan')) * 1000:.0f} ms")
        print(f"  jobs: {r['asked']} asked for, {r['distinct']} distinct, {r['stored']} trained and stored "
              f"(dedup ratio {r['asked'] / max(r['stored'], 1):.1f}x)")
        print(f"  server RSS (with trainers): before {r['rss_before']:.0f} MB, peak {r['rss_peak']:.0f} MB, "
              f"after {r['rss_after']:.0f} MB")
        print(f"  errors: {len(r['errors'])}" + "".join(f"\n    {e[:200]}" for e in r["errors"][:5]))
        if statistics.median(r["lesson"] or [0]) > 0:
            print(f"  ratio p95/p50 (lesson): {percentile(r['lesson'], .95) / percentile(r['lesson'], .5):.2f}")


if __name__ == "__main__":
    main()
