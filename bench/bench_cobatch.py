"""Thirty students press Train on thirty slightly different networks: co-batched vs one after another.

    python bench/bench_cobatch.py [--students 30] [--spread 0] [--processes 1] [--profile]

The configs are LESSONS A's kind on Digits (its offline settings: SGD lr 0.2, batch 32, 20 epochs,
metrics every 20 steps): sigmoid / tanh / relu nets of 1, 2, 3, 4 or 6 hidden layers, either 10 units
at lr 0.2 or 16 units at lr 0.1, all distinct. Each is submitted by its own session to ONE job
manager (worker processes by default, one CPU worker as a server has), within ``--spread`` seconds.
Prints the time from the first submit until the last run has finished, against one such run alone
(a sigmoid net of 4 hidden layers, submitted the same way), with co-batching on (GRADIENT_LAB_MAX_COBATCH's default) and off (= 1).
``--profile`` then trains the one run and the co-batched group again in this process under cProfile, and
prints where each one's time goes (the engine's functions by cumulative time, everything by own time).
"""
from __future__ import annotations

import argparse
import cProfile
import itertools
import os
import pstats
import tempfile
import time
from pathlib import Path

from benchlib import timed  # noqa: E402  (repo on sys.path, datasets folder, offline)

import torch  # noqa: E402

from core.serve.cobatch import CoBatch, run_cobatch  # noqa: E402
from core.serve.jobs import JobManager  # noqa: E402
from core.lessons.presets import get_preset  # noqa: E402
from core.serve.store import RunStore  # noqa: E402

ACTIVATIONS = ("sigmoid", "tanh", "relu")
DEPTHS = (1, 2, 3, 4, 6)
WIDTH_LR = ((10, 0.2), (16, 0.1))


def student_configs(n: int) -> list:
    base = get_preset("A-sigmoid-depth").on_fallback().config
    combos = itertools.product(WIDTH_LR, ACTIVATIONS, DEPTHS)
    return [base.replace(activation=a, hidden=(w,) * d, lr=lr) for (w, lr), a, d in itertools.islice(combos, n)]


def press_train(manager: JobManager, configs: list, spread: float) -> float:
    """Seconds from the first submit until every run has finished (each by its own session)."""
    def run() -> None:
        keys = []
        for i, cfg in enumerate(configs):
            keys.append(manager.submit(cfg, force=True, session=f"student-{i}"))
            time.sleep(spread / len(configs))
        for key in keys:
            assert manager.wait(key, timeout=900).status == "finished", key
    return timed(run)[0]


def profile(configs: list) -> None:
    """Where the time of ``configs`` trained as one co-batch goes, in this process (cProfile)."""
    run_cobatch(CoBatch(tuple(configs)), lambda event: None)  # warm: kernels, the dataset
    prof = cProfile.Profile()
    prof.enable()
    seconds = timed(lambda: run_cobatch(CoBatch(tuple(configs)), lambda event: None))[0]
    prof.disable()
    stats = pstats.Stats(prof).strip_dirs()
    print(f"--- {len(configs)} run(s) as one co-batch in this process: {seconds:.2f} s under cProfile")
    stats.sort_stats("cumulative").print_stats(r"(train|batched|lanes|probes|optimizers|family|cobatch)\.py", 14)
    stats.sort_stats("tottime").print_stats(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--spread", type=float, default=0.0, help="seconds over which the submits are spread")
    parser.add_argument("--processes", type=int, default=1, help="0 = train in threads of this process")
    parser.add_argument("--profile", action="store_true", help="also profile one run and the group (cProfile)")
    args = parser.parse_args()
    os.environ["GRADIENT_LAB_MAX_QUEUED_PER_SESSION"] = "4"
    configs = student_configs(args.students)
    with tempfile.TemporaryDirectory() as tmp:
        manager = JobManager(RunStore(Path(tmp) / "runs"), workers={"cpu": 1}, processes=bool(args.processes))
        manager.start()
        while any(w["state"] != "ready" for w in manager.warmup_status()):
            time.sleep(0.1)
        cold = press_train(manager, configs[:1], 0.0)  # the first run in a fresh worker pays one-off costs
        print(f"{len(configs)} students, Digits, {'worker process' if args.processes else 'thread'}, "
              f"{os.cpu_count()} CPUs, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
        alone = press_train(manager, [next(c for c in configs if c.depth == 4)], 0.0)  # a sigmoid x4
        together = press_train(manager, configs, args.spread)
        os.environ["GRADIENT_LAB_MAX_COBATCH"] = "1"
        apart = press_train(manager, configs, args.spread)
        manager.shutdown()
    print(f"first run in a fresh worker (one-off): {cold:6.2f} s  (not the reference)")
    print(f"one run alone:                         {alone:6.2f} s")
    print(f"{len(configs)} runs, co-batched:            {together:6.2f} s  ({together / alone:.2f}x one run)")
    print(f"{len(configs)} runs, co-batching off (=1):  {apart:6.2f} s  ({apart / alone:.2f}x one run)")
    print(f"co-batching gains {apart / together:.1f}x; load average now {os.getloadavg()[0]:.1f}")
    if args.profile:
        profile([next(c for c in configs if c.depth == 4)])
        profile(configs)


if __name__ == "__main__":
    main()
