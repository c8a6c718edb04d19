"""The run store survives hostile rows, kills mid-overwrite, a full disk and a damaged database (issue 14)."""
from __future__ import annotations

import errno
import os
import pickle
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import diskcache
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import core.serve.jobs
from core.engine.config import RunConfig
from core.engine.events import LayerStats, StepLosses
from core.serve.jobs import JobManager
from core.lab.sweep.study import open_storage
from core.serve.store import NotSaved, RunStore, integrity_problem

REPO = Path(__file__).resolve().parents[1]


class _Plant:
    """Unpickling this creates the marker file (what a hostile row would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _heavy_events(seed: int, megabytes: float = 1.0) -> list:
    rng = np.random.default_rng(seed)
    heat = rng.random(int(megabytes * 2**20 / 4) // 64 * 64, dtype=np.float32).reshape(-1, 64)
    return [StepLosses(1, [float(seed)]), LayerStats(1, 0.5, ["fc1"], [0.1], [0.01], [0.001], [None], [heat])]


def _raw_row(directory: Path, key, value: bytes, key_is_pickle: bool, value_is_pickle: bool) -> None:
    """Plant a row with sqlite directly (diskcache's own writer would pickle honestly)."""
    db = sqlite3.connect(directory / "cache.db")
    db.execute("INSERT INTO Cache (key, raw, store_time, expire_time, access_time, access_count, tag, size, mode, "
               "filename, value) VALUES (?, ?, 0, NULL, 0, 0, NULL, 0, ?, NULL, ?)",
               (key, 0 if key_is_pickle else 1, 4 if value_is_pickle else 1, value))
    db.commit()
    db.close()


def test_planted_pickle_value_and_key_rows_never_run_code(tmp_path):
    store = RunStore(tmp_path / "runs")
    store.put("run-good", {}, [StepLosses(1, [1.0])])
    marker_value, marker_key = tmp_path / "value-ran", tmp_path / "key-ran"
    _raw_row(store.directory, "meta:run-evil", pickle.dumps(_Plant(marker_value)), False, True)
    _raw_row(store.directory, pickle.dumps(_Plant(marker_key)), b"x", True, False)

    reopened = RunStore(tmp_path / "runs")
    assert reopened.meta("run-evil") is None and reopened.get("run-evil") is None
    assert [m["key"] for m in reopened.list_runs()] == ["run-good"]
    assert not marker_value.exists() and not marker_key.exists()
    assert any("run-evil" in p and "pickle" in p for p in reopened.problems)
    assert any("pickled key" in p for p in reopened.problems)


def test_store_root_and_files_are_owner_only(tmp_path):
    store = RunStore(tmp_path / "runs")
    store.put("run-big", {}, _heavy_events(0, 0.5))  # big enough to be a file beside cache.db
    files = [p for p in store.directory.rglob("*") if p.is_file()]
    folders = [p for p in store.directory.rglob("*") if p.is_dir()] + [store.directory]
    assert any(p.suffix == ".val" for p in files)
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(0o600)}
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {oct(0o700)}


_OVERWRITER = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, sys.argv[2])
    from core.serve.store import RunStore
    from core.engine.events import LayerStats, StepLosses
    store = RunStore(sys.argv[1])
    rng = np.random.default_rng(1)
    heat = rng.random(2**20, dtype=np.float32).reshape(-1, 64)  # 4 MB: an overwrite takes a while
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        store.put("run-x", {"n": n}, [StepLosses(1, [float(n)]), LayerStats(1, 0.5, ["fc1"], [0.1], [0.01],
                                      [0.001], [None], [heat])])
""")


def test_kill_during_train_again_never_loses_the_previous_run(tmp_path):
    directory = tmp_path / "runs"
    RunStore(directory).put("run-x", {"n": 0}, _heavy_events(0, 4.0))
    script = tmp_path / "overwrite.py"
    script.write_text(_OVERWRITER)
    rng = random.Random(14)
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(directory), str(REPO)], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.02, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        back = RunStore(directory).get("run-x")
        assert back is not None, "the previous good run became unreadable"
        assert back.events[0].losses == [float(back.meta["config"]["n"])]  # parts of one version, not mixed
    leftovers = [p for p in directory.rglob("*.val")]
    assert len(leftovers) <= 2 * 2 + 2  # the live version, at most one killed half-write, nothing piling up


def test_size_cap_is_true_and_evicts_whole_runs_keeping_the_newest(tmp_path):
    limit = 5 * 2**20
    store = RunStore(tmp_path / "runs", size_limit=limit)
    for i in range(8):
        store.put(f"run-{i}", {"i": i}, _heavy_events(i, 1.0))
        time.sleep(0.002)
        assert store.stored_bytes() <= limit
    on_disk = sum(p.stat().st_size for p in store.directory.rglob("*.val"))
    assert on_disk <= limit
    listed = [m["key"] for m in store.list_runs()]
    assert listed[0] == "run-7" and "run-0" not in listed
    for key in listed:  # nothing half-evicted: every listed run reads back whole
        assert store.get(key) is not None
    with pytest.raises(NotSaved, match="limit"):
        store.put("run-huge", {}, _heavy_events(9, 6.0))
    assert store.get("run-7") is not None


def _full_disk(monkeypatch):
    def refuse(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    import diskcache
    monkeypatch.setattr(diskcache.Disk, "_write", refuse)
    real_set = diskcache.Cache.set

    def set_or_full(self, key, value, *args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(diskcache.Cache, "set", set_or_full)
    return real_set


def test_full_disk_degrades_to_memory_and_says_not_saved(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    store.put("run-old", {}, [StepLosses(1, [1.0])])
    assert store.health() is None
    _full_disk(monkeypatch)
    with pytest.raises(NotSaved, match="disk is full"):
        store.put("run-new", {}, _heavy_events(1, 0.2))
    assert "memory" in store.health() and "not saved" in store.health()
    assert store.get("run-new") is not None and store.get("run-old") is not None
    assert {m["key"] for m in store.list_runs()} == {"run-new", "run-old"}
    assert not [p for p in store.directory.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


def test_job_on_a_full_disk_is_shown_as_not_saved(tmp_path, monkeypatch):
    manager = JobManager(RunStore(tmp_path / "runs"))
    _full_disk(monkeypatch)
    key = manager.submit(RunConfig(dataset="digits", hidden=(16,), epochs=1))
    snap = manager.wait(key, timeout=120)
    assert snap.status == "finished" and snap.saved_at is None and "not saved" in snap.error
    assert manager.store.health() is not None


def test_cli_on_a_full_disk_does_not_claim_success(tmp_path):
    code = textwrap.dedent(f"""
        import errno, sqlite3, sys, diskcache
        sys.path.insert(0, {str(REPO)!r})
        def full(*a, **k):
            raise sqlite3.OperationalError("database or disk is full")
        diskcache.Cache.set = full
        from core.__main__ import main
        sys.exit(main(["run", "--preset", "A-sigmoid-depth", "--set", "epochs=1", "--set", "dataset=digits",
                       "--quiet"]))
    """)
    env = {**os.environ, "GRADIENT_LAB_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode != 0, out.stdout
    assert "not saved" in out.stdout + out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_damaged_database_is_moved_aside_and_a_fresh_one_started(tmp_path, damage):
    directory = tmp_path / "runs"
    store = RunStore(directory)
    for i in range(30):
        store.put(f"run-{i}", {"i": i}, [StepLosses(1, [float(i)])])
    del store
    db = directory / "cache.db"
    for extra in ("cache.db-wal", "cache.db-shm"):
        (directory / extra).unlink(missing_ok=True)
    if damage == "random":
        db.write_bytes(np.random.default_rng(0).bytes(64 * 1024))
    else:
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    fresh = RunStore(directory)
    assert any("moved aside" in p for p in fresh.problems)
    assert list(directory.glob("cache.db.damaged-*"))
    assert fresh.health() is None
    fresh.put("run-after", {}, [StepLosses(1, [2.0])])
    assert fresh.get("run-after") is not None


def test_cli_with_a_damaged_database_has_no_traceback(tmp_path):
    runs = tmp_path / "cache" / "runs"
    runs.mkdir(parents=True)
    (runs / "cache.db").write_bytes(b"this is not a database" * 500)
    env = {**os.environ, "GRADIENT_LAB_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "core", "run", "--preset", "A-sigmoid-depth", "--set", "epochs=1",
                          "--set", "dataset=digits", "--quiet"], capture_output=True, text=True, env=env,
                         timeout=300, cwd=REPO)
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert "moved aside" in out.stderr


def test_parts_of_a_killed_save_are_cleaned_up_once_old(tmp_path):
    store = RunStore(tmp_path / "runs")
    store.put("run-x", {}, _heavy_events(0, 0.2))
    old_version = f"{time.time_ns() - 3600 * 10**9:x}deadbeef"
    fresh_version = f"{time.time_ns():x}cafef00d"
    for version in (old_version, fresh_version):  # what a kill between writing parts and the switch leaves
        store._cache.set(f"events:run-x:{version}", "[]")
        store._cache.set(f"arrays:run-x:{version}", b"x" * 100_000)
    reopened = RunStore(tmp_path / "runs")
    names = set(reopened._cache.iterkeys())
    assert f"arrays:run-x:{old_version}" not in names and f"events:run-x:{old_version}" not in names
    assert f"arrays:run-x:{fresh_version}" in names  # may still be another process's save in progress
    assert reopened.get("run-x") is not None


def test_the_sidebar_says_when_the_store_cannot_save(isolated_cache, monkeypatch):
    """A store that degraded to memory-only shows its banner on every page (AppTest)."""
    manager = core.serve.jobs.get_manager()
    manager.store._degrade(OSError(28, "No space left on device"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "main.py"), default_timeout=60).run()
    assert not at.exception
    assert any("cannot write to disk" in w.value for w in at.sidebar.warning)


# --- a full disk at start, an empty database, the banner and notices (issue 20) -----------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs to fill up; skipped with the reason where mounting is not allowed (the injected-error
    tests below cover the same path there)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("mount(8) is not installed: cannot make a small disk to fill")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"mounting a small tmpfs is not allowed here: {out.stderr.strip() or out.returncode}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def _stored_runs(directory: Path, n: int) -> set[str]:
    store = RunStore(directory)
    for i in range(n):
        store.put(f"run-{i}", {"i": i}, [StepLosses(1, [float(i)])])
    keys = {m["key"] for m in store.list_runs()}
    store._cache.close()
    return keys


def test_a_full_disk_at_start_keeps_the_database_and_the_banner_clears_once_space_returns(small_disk):
    directory = small_disk / "runs"
    before = _stored_runs(directory, 5)
    filler = _fill(small_disk)

    started = RunStore(directory)
    assert "disk is full" in started.health() and "memory" in started.health()
    assert (directory / "cache.db").exists() and not list(directory.glob("*damaged*")) and not started.problems
    with pytest.raises(NotSaved):
        started.put("run-new", {}, [StepLosses(1, [9.0])])
    started.retry_s = 0.0
    assert started.health() is not None  # still full: the banner stays
    assert started.get("run-new") is not None  # readable from memory meanwhile

    filler.unlink()
    assert started.health() is None  # re-checked: the disk takes writes again
    assert {m["key"] for m in started.list_runs()} == before | {"run-new"}
    started.put("run-after", {}, [StepLosses(1, [3.0])])
    assert RunStore(directory).get("run-after") is not None


@pytest.mark.parametrize("message", ["disk I/O error", "database or disk is full"])
def test_an_io_error_at_start_leaves_the_database_in_place(tmp_path, monkeypatch, message):
    """The same start without a small disk: the sqlite error a full disk gives, injected while opening."""
    directory = tmp_path / "runs"
    before = _stored_runs(directory, 3)
    real_init = diskcache.Cache.__init__

    def failing_init(self, *args, **kwargs):
        raise sqlite3.OperationalError(message)

    monkeypatch.setattr(diskcache.Cache, "__init__", failing_init)
    started = RunStore(directory)
    assert "cannot write to disk" in started.health() and not started.problems
    assert (directory / "cache.db").exists() and not list(directory.glob("*damaged*"))
    started.retry_s = 0.0
    assert started.health() is not None
    monkeypatch.setattr(diskcache.Cache, "__init__", real_init)
    assert started.health() is None
    assert {m["key"] for m in started.list_runs()} == before


def test_the_banner_clears_once_writes_succeed_again(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    real_set = _full_disk(monkeypatch)
    with pytest.raises(NotSaved):
        store.put("run-a", {}, [StepLosses(1, [1.0])])
    assert store.health() is not None
    store.retry_s = 3600.0
    monkeypatch.setattr(diskcache.Cache, "set", real_set)
    assert store.health() is not None  # not re-checked before retry_s has passed
    store.retry_s = 0.0
    assert store.health() is None
    store.put("run-b", {}, [StepLosses(1, [2.0])])
    assert RunStore(tmp_path / "runs").get("run-b") is not None


def test_only_what_the_integrity_check_calls_damaged_is_damaged(tmp_path):
    directory = tmp_path / "runs"
    _stored_runs(directory, 3)
    db = directory / "cache.db"
    assert integrity_problem(db) is None and integrity_problem(directory / "absent.db") is None
    db.write_bytes(b"this is not a database" * 500)
    assert integrity_problem(db)


def test_an_empty_database_file_is_named_in_a_notice(tmp_path):
    directory = tmp_path / "runs"
    directory.mkdir()
    (directory / "cache.db").write_bytes(b"")
    store = RunStore(directory)
    assert any("empty file" in p for p in store.problems) and store.health() is None
    store.put("run-a", {}, [StepLosses(1, [1.0])])
    assert not any("empty file" in p for p in RunStore(directory).problems)  # said once, for that start


def test_a_store_notice_shows_once_per_session(isolated_cache):
    manager = core.serve.jobs.get_manager()
    manager.store._note("The run store's database was damaged (test); it was moved aside to cache.db.damaged-x.")

    def notices(at: AppTest) -> list[str]:
        return [w.value for w in at.sidebar.warning if "moved aside" in w.value]

    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=60).run()
    assert not at.exception and len(notices(at)) == 1
    at.run()
    assert notices(at) == []  # the same session is not told again
    other = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=60).run()
    assert len(notices(other)) == 1  # another visitor is


def test_a_fresh_cache_root_and_the_sweeps_database_are_owner_only(tmp_path, monkeypatch):
    root = tmp_path / "fresh" / "cache"
    monkeypatch.setenv("GRADIENT_LAB_CACHE_DIR", str(root))
    monkeypatch.delenv("GRADIENT_LAB_SWEEP_DB", raising=False)
    umask = os.umask(0o022)  # the usual umask: what it would leave is 0755 / 0644
    try:
        RunStore()
        open_storage()
    finally:
        os.umask(umask)
    folders = [root, root / "runs", root / "sweeps"]
    assert {p: oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {p: oct(0o700) for p in folders}
    databases = [p for p in (root / "sweeps").iterdir() if p.name.startswith("studies.db")]
    assert root / "sweeps" / "studies.db" in databases
    assert {p: oct(stat.S_IMODE(p.stat().st_mode)) for p in databases} == {p: oct(0o600) for p in databases}
