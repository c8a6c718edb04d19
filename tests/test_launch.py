"""The launcher (``python -m app.launch``, README's start): the trainers start and warm up with the server,
before any page is opened, and the pages use those same trainers (no second set on the first page view)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from browser_helpers import CHROMIUM, LAUNCH, REPO, free_port, launch, start_server, stop_server


def children(pid: int) -> set[int]:
    """Pids of the direct child processes of ``pid`` (Linux /proc)."""
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0")) == pid:
            found.add(int(fields["Pid"]))
    return found


def trainer_children(pid: int, timeout: float = 60.0) -> set[int]:
    """The server's child processes, waiting up to ``timeout`` s for the first to appear."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children(pid)
        if found:
            return found
        time.sleep(0.2)
    return set()


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (apt-get install chromium)")
def test_trainers_start_with_the_server_and_the_first_page_uses_them(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")
    port = free_port()
    proc = start_server(tmp_path / "cache", port, tmp_path / "server.log", {"OMP_NUM_THREADS": "1"}, command=LAUNCH)
    try:
        before = trainer_children(proc.pid)  # no page has been opened yet
        assert before, "the launcher started no trainer process before the first page view"
        with sync_api.sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 1200})
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_role("button", name="Train", exact=True).wait_for(timeout=120_000)
            page.get_by_text("Training on").first.wait_for(timeout=60_000)  # the sidebar asked the job manager
            browser.close()
        assert children(proc.pid) == before, "the first page view started trainers of its own"
    finally:
        stop_server(proc)


def test_starting_the_manager_loads_the_default_data_in_the_server_process(tmp_path):
    """A fresh process (no dataset loaded): after ``start()``, the default run's dataset is loaded without any
    submit, so the first student's estimate does not wait for it."""
    script = (
        "import time\n"
        "from core.engine import data\n"
        "from core.engine.config import RunConfig\n"
        "from core.serve.jobs import JobManager\n"
        "name = RunConfig().dataset\n"
        "assert not data.is_loaded(name)\n"
        "JobManager(processes=False).start()\n"
        "deadline = time.monotonic() + 240\n"
        "while not data.is_loaded(name) and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "print('loaded' if data.is_loaded(name) else 'not loaded')\n")
    env = {"GRADIENT_LAB_CACHE_DIR": str(tmp_path), "GRADIENT_LAB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "loaded"
