"""What the pause wait point costs a run that is never paused (issue 24.3): training with a Hold and without, side
by side.

    python bench/bench_pause.py [--epochs 20] [--repeats 7]

Trains a small spiral net (16-16 ReLU, small batches: the cheapest steps, where a per-step check weighs most) with
the loop waiting on a :class:`core.serve.pause.Hold` before every step ("on") and without one ("off"), alternating,
``--repeats`` times each. Prints the best and median training seconds of each (the loop's own clock: CPU seconds
on the CPU) and their ratio (target: at most 1.02), then the wait point's own cost (one call timed alone, times
the run's steps) against the run's training time, which a shared machine's noise does not blur.
"""
from __future__ import annotations

import argparse
import threading
import timeit

from bench_boundary import clock_for, side_by_side  # also makes the repository importable
from core.engine.config import RunConfig
from core.engine.train import train
from core.serve.pause import Hold


HOLD, CANCEL = Hold(), threading.Event()  # one per worker slot, reused by its jobs


def one_run(cfg: RunConfig, with_hold: bool) -> float:
    wait = (lambda step: HOLD.wait(step, CANCEL)) if with_hold else None
    end = train(cfg, clock=clock_for(cfg.device), live_boundary=False, hold=wait)
    assert end.status == "finished", end
    return sum(end.epoch_seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cfg = RunConfig(dataset="spiral", hidden=(16, 16), batch_size=8, epochs=args.epochs, log_every=100, device="cpu")
    print(f"spiral, hidden {cfg.hidden}, batch {cfg.batch_size}, {args.epochs} epochs, CPU seconds; "
          "off = no hold, on = the loop waits on a Hold (never paused) before each step")
    print(f"{'':<20} {'best of ' + str(args.repeats):^28}   {'median':^28}")
    print(f"{'':<20} " + f"{'off (s)':>9} {'on (s)':>9} {'on/off':>8}   " * 2)
    side_by_side("one run", lambda with_hold: one_run(cfg, with_hold), args.repeats)
    calls = 200_000
    per_call = timeit.timeit(lambda: HOLD.wait(1, CANCEL), number=calls) / calls
    seconds = one_run(cfg, False)
    total = train(cfg, live_boundary=False).step
    print(f"the wait point alone: {per_call * 1e6:.2f} us a call x {total:,} steps = {per_call * total:.4f} s of "
          f"{seconds:.3f} s training: {1 + per_call * total / seconds:.4f}x")


if __name__ == "__main__":
    main()
