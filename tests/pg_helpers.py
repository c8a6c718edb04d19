"""A PostgreSQL server of the tests' own: Debian's ``postgresql`` binaries (pg_ctl on PATH or under
/usr/lib/postgresql/*/bin, installed by README's test command where missing), a fresh data folder in a
temporary directory, listening on 127.0.0.1 on a free port and on a unix socket in that folder, stopped by
its data folder (``pg_ctl stop -D``), never by name. initdb and postgres refuse to run as root: as root they
run as Debian's ``postgres`` user, in a folder it owns."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from browser_helpers import free_port

SUPERUSER = "postgres"
RUN_AS = "postgres"  # the unprivileged user Debian's package creates, for a root test run


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed here (or, as root, there is no user to run it as)."""


def pg_bin() -> Path:
    """The folder holding pg_ctl, initdb and postgres: pg_ctl's on PATH, else the newest Debian version's."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    installed = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if not installed:
        raise PostgresUnavailable("PostgreSQL is not installed (no pg_ctl on PATH or under /usr/lib/postgresql/*/bin); "
                                  "README's test command installs Debian's postgresql package")
    return Path(installed[-1]).parent


def _as_user() -> list[str]:
    """The command prefix that runs PostgreSQL's programs as an unprivileged user when this is root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        raise PostgresUnavailable(f"running as root and there is no '{RUN_AS}' user to run PostgreSQL as "
                                  f"(Debian's postgresql package creates it)") from None
    return ["runuser", "-u", RUN_AS, "--"]


@dataclass
class Postgres:
    folder: Path
    port: int
    bin: Path
    as_user: list[str]

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        """A plain PostgreSQL URL, as a user would write GRADIENT_LAB_SWEEP_DB (no driver named)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database: its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def pg_ctl(self, *args: str) -> None:
        _run(self.as_user + [str(self.bin / "pg_ctl"), "-D", str(self.data), *args], self.folder)

    def stop(self) -> None:
        """Stop the server by its data folder and remove the folder."""
        try:
            self.pg_ctl("-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def start_postgres() -> Postgres:
    """A new server in a new temporary folder (fsync off: a test server keeps nothing); PostgresUnavailable
    when it cannot be installed here, RuntimeError when it is installed and fails to start."""
    bin_dir, as_user = pg_bin(), _as_user()
    folder = Path(tempfile.mkdtemp(prefix="gl-pg-"))
    if as_user:
        shutil.chown(folder, user=RUN_AS)
    server = Postgres(folder, free_port(), bin_dir, as_user)
    try:
        _run(as_user + [str(bin_dir / "initdb"), "-D", str(server.data), "-U", SUPERUSER, "-A", "trust",
                        "-E", "UTF8", "--no-sync"], folder)
        options = (f"-h 127.0.0.1 -p {server.port} -k {folder} -c fsync=off -c synchronous_commit=off "
                   f"-c full_page_writes=off -c max_connections=60")
        server.pg_ctl("-l", str(folder / "server.log"), "-o", options, "-w", "-t", "60", "start")
    except BaseException:
        if (server.data / "postmaster.pid").is_file():
            subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "stop"],
                           cwd=folder, capture_output=True, timeout=60)
        log = folder / "server.log"
        detail = log.read_text()[-2000:] if log.is_file() else ""
        shutil.rmtree(folder, ignore_errors=True)
        if detail:
            raise RuntimeError(f"PostgreSQL did not start; its log ends:\n{detail}")
        raise
    return server
