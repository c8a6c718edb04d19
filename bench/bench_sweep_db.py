"""A sweep's study bookkeeping per trial, on SQLite and on PostgreSQL, with and without the runner's lease.

    python bench/bench_sweep_db.py [--trials 200] [--repeats 3]

Starts a PostgreSQL server of its own (tests/pg_helpers.py: Debian's postgresql, a temporary folder, 127.0.0.1)
and, on each database, a fresh study of the digits-sweep space per measurement. Per trial it does what
:func:`core.lab.sweep.runner.run_sweep` does around training, without training:

- ``plain``: Optuna's ask, a value for every knob, tell (what a sweep did before front-ends shared studies);
- ``leased``: the same under a :class:`core.lab.sweep.lease.Lease`: the room left in the budget (orphans looked
  for, trials counted), the trial stamped, its place in the budget checked, then tell.

Prints milliseconds per trial (the median of ``--repeats``) side by side and the ratios leased / plain and
PostgreSQL / SQLite. A trial trains for seconds to minutes, so these are the database's share of a sweep.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import REPO  # noqa: E402  (repo on sys.path, datasets folder, offline)

sys.path.insert(0, str(REPO / "tests"))  # pg_helpers imports its sibling helpers as top-level modules

from optuna.trial import TrialState  # noqa: E402

from core.lab.sweep.lease import Lease  # noqa: E402
from core.lab.sweep.runner import _ask, _room  # noqa: E402
from core.lab.sweep.study import open_storage, open_study  # noqa: E402
from core.lessons.families import SWEEP_PRESETS  # noqa: E402
from pg_helpers import start_postgres  # noqa: E402

SWEEP = SWEEP_PRESETS["digits-sweep"].sweep.replace(sampler="random")


def plain(url: str, trials: int) -> float:
    sweep = SWEEP.replace(trials=trials)
    study = open_study(sweep, url)
    start = time.perf_counter()
    for _ in range(trials):
        trial = study.ask()
        for dist in sweep.space:
            dist.suggest(trial)
        study.tell(trial, 0.5)
    return (time.perf_counter() - start) / trials


def leased(url: str, trials: int) -> float:
    sweep = SWEEP.replace(trials=trials)
    storage = open_storage(url)
    study = open_study(sweep, storage)
    start = time.perf_counter()
    with Lease(study, storage) as lease:
        while (room := _room(sweep, study, storage, lease)) is not None:
            for _ in range(min(sweep.batch, room)):
                trial = _ask(study, sweep, lambda name, number: None, lease)
                if trial is not None:
                    study.tell(trial, 0.5, state=TrialState.COMPLETE)
    return (time.perf_counter() - start) / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    server = start_postgres()
    folder = Path(tempfile.mkdtemp(prefix="gl-bench-db-"))
    try:
        urls = {"SQLite": lambda: f"sqlite:///{folder / f'{time.monotonic_ns()}.db'}",
                "PostgreSQL": server.create_database}
        ms = {(db, way.__name__): statistics.median(way(new_url(), args.trials) for _ in range(args.repeats)) * 1e3
              for db, new_url in urls.items() for way in (plain, leased)}
    finally:
        server.stop()
    print(f"study bookkeeping per trial, {args.trials} trials, median of {args.repeats}")
    print(f"{'database':<12}{'plain ms':>10}{'leased ms':>11}{'leased/plain':>14}")
    for db in urls:
        print(f"{db:<12}{ms[db, 'plain']:>10.2f}{ms[db, 'leased']:>11.2f}{ms[db, 'leased'] / ms[db, 'plain']:>14.2f}")
    print(f"PostgreSQL / SQLite: plain {ms['PostgreSQL', 'plain'] / ms['SQLite', 'plain']:.2f}, "
          f"leased {ms['PostgreSQL', 'leased'] / ms['SQLite', 'leased']:.2f}")


if __name__ == "__main__":
    main()
