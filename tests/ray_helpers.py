"""A local Ray head for tests and benchmarks: loopback only, token auth, small, stopped by its pid.

``ray start --head --block`` runs in a session of its own; stopping it signals that process group (found
from the pid we started, never by name) and kills what is left after a short grace (a head drains for
30 s on SIGTERM).
"""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from browser_helpers import free_port

REPO = Path(__file__).resolve().parents[1]
PER_BROWSER = 10  # the test cluster's GRADIENT_LAB_MAX_QUEUED_PER_SESSION (the queued tests queue 6 of one browser)
# The job manager's contract tests run on both backends: ``@pytest.mark.parametrize("manager", BACKENDS,
# indirect=True)``, the fixture building its manager with :func:`manager_on`.
BACKENDS = ["local", pytest.param("ray", marks=pytest.mark.slow)]


def head_env(temp: Path, cache: Path) -> dict[str, str]:
    """What a driver and the head need: token auth with one token, the repo importable, our own cache."""
    token_path = temp / "auth_token"
    if not token_path.exists():
        token_path.write_text(secrets.token_hex(16))
        token_path.chmod(0o600)
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path), "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": str(REPO), "GRADIENT_LAB_CACHE_DIR": str(cache), "GRADIENT_LAB_OFFLINE": "1",
            "GRADIENT_LAB_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"}


def start_head(temp: Path, cache: Path, port: int | None = None, num_cpus: int = 2,
               timeout: float = 120.0) -> tuple[subprocess.Popen, str, dict[str, str]]:
    """A head on 127.0.0.1 (``port``: free one); returns its process, its address and the driver's env."""
    env = head_env(temp, cache)
    port = port or free_port()
    log = open(temp / f"head-{port}.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}",
         "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", "--num-gpus=0",
         "--object-store-memory=100000000", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp / 'ray'}"],
        env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while not _listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_head(proc)
            raise RuntimeError(f"the Ray head did not start; see {temp / f'head-{port}.log'}")
        time.sleep(0.2)
    return proc, address, env


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def stop_head(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM the head's process group (by our pid), then SIGKILL it after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what the head started, once the head itself has gone
    except ProcessLookupError:
        pass


def _test_temp() -> Path:
    """The test session's Ray folder (short: Ray's socket paths must fit 107 bytes), removed at exit; the
    drivers' token settings point into it before Ray is first imported (Ray reads them once, when it loads)."""
    temp = Path(tempfile.mkdtemp(prefix="glray", dir="/tmp"))
    atexit.register(shutil.rmtree, temp, True)
    os.environ.update({k: v for k, v in head_env(temp, temp / "cache").items() if k.startswith("RAY_")})
    return temp


RAY_TEMP = _test_temp()


class Cluster:
    """A running head and this process's front-end (``front``); ``second`` is another front-end object.
    Skips (with the reason) where Ray cannot be imported."""

    def __init__(self, temp: Path = RAY_TEMP):
        self.ray = pytest.importorskip("ray", reason="Ray cannot be imported here (pip install -r requirements-cluster.txt)")
        self.backend = pytest.importorskip("core.serve.ray_backend")
        self.temp, self.cache = temp, temp / "cache"
        self.port, self.front, self.second = None, None, None
        self.start()

    def start(self) -> None:
        os.environ["GRADIENT_LAB_MAX_QUEUED_PER_SESSION"] = str(PER_BROWSER)  # the head's env, read by actors
        try:
            self.proc, self.address, self.env = start_head(self.temp, self.cache, port=self.port)
        finally:
            os.environ.pop("GRADIENT_LAB_MAX_QUEUED_PER_SESSION")
        self.port = int(self.address.rsplit(":", 1)[1])
        if self.front is None:
            try:
                self.front = self.backend.RayJobManager(self.address, workers={"cpu": 1})
                self.second = self.backend.RayJobManager(self.address)
            except BaseException:  # a head no test will use: stopped now, not left running
                stop_head(self.proc)
                raise

    def stop(self) -> None:
        self.ray.shutdown()
        stop_head(self.proc)

    def manager(self, runs: Path, cpus: int) -> Any:
        """This process's front-end on a fresh scheduler manager: store ``runs``, ``cpus`` CPU trainers."""
        self.front.reset(str(runs), {"cpu": cpus})
        self.front.start()
        return self.front


def manager_on(request: pytest.FixtureRequest, runs: Path, cpus: int, local: Callable[[], Any]) -> Any:
    """The manager a test asked for by its indirect parameter: ``local()``, or (``"ray"``) the session's test
    cluster's front-end with ``cpus`` trainers and store ``runs``."""
    if getattr(request, "param", "local") == "local":
        return local()
    return request.getfixturevalue("ray_cluster").manager(runs, cpus)
