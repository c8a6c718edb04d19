"""Helpers shared by the real-browser tests and the browser benchmarks (bench/): Debian's Chromium,
the app's launcher (``python -m app.launch``, as README and Dockerfile start it) started and stopped on a
free port, the loss chart's point count."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
SHOTS = Path("/tmp/gl_shots")
LAUNCH = ("-m", "app.launch")  # README's start: the trainers warm up as the server starts
STREAMLIT_RUN = ("-m", "streamlit", "run", "app/main.py")  # the trainers start with the first page view

# Points of the "train" trace of the loss chart (the largest, since a replaced chart may linger a moment).
LOSS_POINTS_JS = """() => {
  let best = -1;
  for (const g of document.querySelectorAll('.js-plotly-plot')) {
    const title = g.layout && g.layout.title ? String(g.layout.title.text || '') : '';
    if (!title.includes('Loss (train vs validation)') || !g._fullData) continue;
    const t = g._fullData.find(d => d.name === 'train');
    best = Math.max(best, t && t.x ? t.x.length : 0);
  }
  return best;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cache_dir: Path, port: int, log_path: Path, extra_env: dict | None = None,
                 flags: tuple[str, ...] = (), repo: Path = REPO, command: tuple[str, ...] | None = None) -> subprocess.Popen:
    """The app of ``repo`` started by ``command`` (default: its launcher, or ``streamlit run`` in an older tree
    without one) on ``port``, isolated cache, no downloads; waits for health.
    ``flags`` are more ``streamlit run`` options (e.g. ``--runner.postScriptGC true``)."""
    if command is None:
        command = LAUNCH if (repo / "app" / "launch.py").is_file() else STREAMLIT_RUN
    # The server trains in worker processes, as deployed (the in-process tests use threads).
    env = {**os.environ, "GRADIENT_LAB_CACHE_DIR": str(cache_dir), "GRADIENT_LAB_OFFLINE": "1",
           "GRADIENT_LAB_WORKER_PROCESSES": "1", **(extra_env or {})}
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, *command, "--server.port", str(port),
                             "--server.headless", "true", "--server.address", "127.0.0.1", *flags],
                            cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"streamlit did not become healthy:\n{log_path.read_text()}")


def offline_app(root: Path) -> Iterator[str]:
    """The app on a free port with an empty data folder and downloads off (the Digits fallback everywhere), its
    cache and log under ``root``: yields its address, then stops it (a pytest fixture's body)."""
    empty = root / "no-data"
    empty.mkdir()
    port = free_port()
    proc = start_server(root / "cache", port, root / "streamlit.log",
                        {"GRADIENT_LAB_DATA_DIR": str(empty), "OMP_NUM_THREADS": "1"})
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def record_websockets(page) -> list[str]:
    """A growing log of ``page``'s websocket opens and closes (Streamlit disables every widget while its
    socket is down), to read when a test fails."""
    start, log = time.monotonic(), []

    def opened(ws) -> None:
        log.append(f"{time.monotonic() - start:.1f}s open {ws.url}")
        ws.on("close", lambda closed: log.append(f"{time.monotonic() - start:.1f}s close {closed.url}"))

    page.on("websocket", opened)
    return log


def click_when_enabled(page, locator, timeout_s: float, name: str, websockets: list[str] = ()) -> None:
    """Click ``locator``; if it stays disabled, fail with what the page showed: its address, Streamlit's status
    widget, its messages, its websocket log and a screenshot ``SHOTS/<name>.png``."""
    try:
        locator.click(timeout=timeout_s * 1000)
    except Exception as exc:
        if "Timeout" not in type(exc).__name__:
            raise
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        status = page.locator('[data-testid="stStatusWidget"]')
        alerts = page.locator('[data-testid="stAlert"]').all_inner_texts()
        raise AssertionError(
            f"{name}: not clickable within {timeout_s:.0f} s at {page.url}; status widget: "
            f"{status.inner_text() if status.count() else 'none'!r}; messages: {alerts!r}; "
            f"websockets: {list(websockets)!r}; screenshot: {SHOTS / name}.png") from exc


def launch(p):
    """Debian's Chromium for Playwright ``p``, headless, no sandbox, GPU or background traffic."""
    return p.chromium.launch(executable_path=str(CHROMIUM),
                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
