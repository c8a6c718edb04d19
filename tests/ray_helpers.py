"""A local Ray head for tests and benchmarks: loopback only, token auth, small, stopped by its pid.

``ray start --head --block`` runs in a session of its own; stopping it signals that process group (found
from the pid we started, never by name) and kills what is left after a short grace (a head drains for
30 s on SIGTERM).
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from browser_helpers import free_port

REPO = Path(__file__).resolve().parents[1]


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
