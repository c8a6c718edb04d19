"""A sweep of seed 003's space (epochs fixed at 1) vs the same trials one after another.

    python bench/bench_sweep.py [--trials 24] [--dataset fashion-mnist] [--device auto|cpu|cuda] [--threads N]
    python bench/bench_sweep.py --to-accuracy 0.8844 [--trials 60] [--limit-minutes 30]

Draws ``--trials`` points of the D-sweep space (core/lessons/families.py) with epochs fixed at 1 by
Optuna's random sampler (seed 0), and times

- the sweep: :func:`core.lab.sweep.runner.run_sweep`, all trials asked at once, trials sharing a data
  stream (here: the batch size) trained as one batched lanes job, each told to the study;
- the same trial configs trained one after another by :func:`core.engine.train.train`.

Prints both wall times, the ratio, and that the two agree on each trial's validation accuracy.
A fresh SQLite study and no run store, so nothing is served from a cache. Reads Fashion-MNIST
from GRADIENT_LAB_DATA_DIR or ../shared/datasets; ``--dataset digits`` runs offline in seconds.

``--to-accuracy A``: the whole D-sweep preset (seed 003's space, epochs {5, 10}, 10% validation) with
successive-halving pruning, until a trial reaches validation accuracy A (seed 003 reported 0.8844),
batched (mixed stacks per data stream) and then the same sampler with batching off (every trial alone),
side by side: wall time and trials told until then, the load average of the machine, and the top three
configs the Sweeps page would move to MNIST.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time

from benchlib import timed  # noqa: E402  (repo on sys.path, datasets folder, offline)

import torch  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from core.engine import data as datasets  # noqa: E402
from core.lessons.families import SWEEP_PRESETS  # noqa: E402
import core.lab.sweep.runner  # noqa: E402
from core.engine.family import FamilyPlan  # noqa: E402
from core.lab.sweep.runner import plan_trials, run_sweep  # noqa: E402
from core.lab.sweep.space import SweepConfig, trial_config  # noqa: E402
from core.lab.sweep.study import open_study, top_configs  # noqa: E402
from core.engine.train import device_name, resolve_device, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=None, help="default 24 (--to-accuracy: the preset's 60)")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--to-accuracy", type=float, default=None,
                        help="run the D-sweep preset with pruning until a trial reaches this validation accuracy")
    parser.add_argument("--limit-minutes", type=float, default=30.0, help="--to-accuracy: give up after this long")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not datasets.available(args.dataset):
        sys.exit(f"{args.dataset} raw files not found: set GRADIENT_LAB_DATA_DIR")
    if args.to_accuracy is not None:
        to_accuracy(args)
        return
    args.trials = args.trials or 24
    preset = SWEEP_PRESETS["D-sweep"].sweep
    sweep = preset.replace(base=preset.base.replace(epochs=1, dataset=args.dataset, device=args.device),
                           space=tuple(d for d in preset.space if d.name != "epochs"), trials=args.trials,
                           parallel=min(args.trials, 32))
    datasets.load_dataset(args.dataset)  # loading and torch's lazy imports are not what is timed
    train(sweep.base.replace(epochs=1, hidden=(8,)))
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        sweep_s, end = timed(lambda: run_sweep(sweep, lambda e: None, storage=url))
        study = open_study(sweep, url)
        trials = study.get_trials()
    configs = [trial_config(sweep.base, t.params) for t in trials]
    plan = plan_trials([(str(i), c) for i, c in enumerate(configs)])
    print(f"{args.trials} trials of the D space, 1 epoch, {args.dataset}, on {device_name(device)} "
          f"({torch.get_num_threads()} threads)")
    print(f"sweep: {end.reason}")
    print(f"  batched lanes jobs (trials sharing a stack): {[len(g) for g in plan.batched]}, alone: {len(plan.alone)}")
    data = datasets.load_dataset(args.dataset)
    padded, useful = stack_arithmetic(configs, plan.batched, math.prod(data.input_shape), data.n_classes)
    if useful:
        print(f"  the stacks' arithmetic per sample: {padded:,} multiply-adds padded against {useful:,} their trials "
              f"need alone ({padded / useful:.2f}x)")
    seq_s, singles = timed(lambda: [train(c) for c in configs])
    diffs = [abs(t.value - s.val_acc) for t, s in zip(trials, singles)
             if t.state == TrialState.COMPLETE and s.kind == "finished" and s.val_acc is not None]
    print(f"sweep (batched, told to Optuna)      {sweep_s:8.1f} s")
    print(f"same trials one after another        {seq_s:8.1f} s")
    print(f"ratio                                {seq_s / sweep_s:8.2f}x")
    print(f"largest |val acc sweep - alone| over {len(diffs)} finished trials: {max(diffs, default=0):.4f}")


def multiply_adds(hidden: tuple[int, ...], n_in: int, n_classes: int) -> int:
    """Multiply-adds of one sample's forward pass through an MLP (its weight matrices)."""
    widths = [n_in, *hidden, n_classes]
    return sum(a * b for a, b in zip(widths, widths[1:]))


def stack_arithmetic(configs: list, groups: list[list[int]], n_in: int, n_classes: int) -> tuple[int, int]:
    """(multiply-adds the batched stacks do per sample, multiply-adds their trials need alone): a stack pads every
    lane to its widest layer and its deepest net (core/engine/batched.py), so on a CPU, where time follows the
    arithmetic, batching gains only when the padding costs less than the per-step overhead it saves."""
    padded = useful = 0
    for group in groups:
        hidden = [configs[i].hidden for i in group]
        width, depth = max(max(h, default=0) for h in hidden), max(len(h) for h in hidden)
        padded += len(group) * multiply_adds((width,) * depth, n_in, n_classes)
        useful += sum(multiply_adds(h, n_in, n_classes) for h in hidden)
    return padded, useful


def _every_trial_alone(cells) -> FamilyPlan:
    return FamilyPlan([], list(range(len(cells))), [])


def _until(sweep: SweepConfig, target: float, limit_s: float) -> tuple[float | None, int, float | None, list, float]:
    """Run ``sweep`` until a trial's validation accuracy reaches ``target`` (or ``limit_s`` passes, or the
    sweep's trials run out): (seconds to reach it or None, trials told by then, best value, the top three
    configs, seconds the sweep ran)."""
    stop, seen = threading.Event(), {"told": 0, "best": None, "at": None}
    t0 = time.perf_counter()

    def emit(event) -> None:
        if event.kind != "trial_done":
            return
        seen["told"] += 1
        if event.value is not None and (seen["best"] is None or event.value > seen["best"]):
            seen["best"] = event.value
        if event.value is not None and event.value >= target and seen["at"] is None:
            seen["at"] = time.perf_counter() - t0
            stop.set()

    timer = threading.Timer(limit_s, stop.set)
    timer.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            run_sweep(sweep, emit, stop, storage=url)
            ran = time.perf_counter() - t0
            top = top_configs(sweep, open_study(sweep, url))
    finally:
        timer.cancel()
    return seen["at"], seen["told"], seen["best"], top, ran


def to_accuracy(args) -> None:
    preset = SWEEP_PRESETS["D-sweep"].sweep
    sweep = preset.replace(base=preset.base.replace(dataset=args.dataset, device=args.device), pruner="halving",
                           trials=args.trials or preset.trials)
    datasets.load_dataset(args.dataset)
    train(sweep.base.replace(epochs=1, hidden=(8,)))
    print(f"D-sweep preset on {args.dataset} (validation {sweep.base.val_fraction:.0%}), random search, successive "
          f"halving, up to {sweep.n_trials} trials asked {sweep.batch} at a time, until validation accuracy >= "
          f"{args.to_accuracy} ({torch.get_num_threads()} threads, load average before "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())})")
    planner = core.lab.sweep.runner.plan_trials
    rows = []
    for label, plan in (("batched (mixed stacks)", planner), ("batching off (alone)", _every_trial_alone)):
        core.lab.sweep.runner.plan_trials = plan
        try:
            at, told, best, top, ran = _until(sweep, args.to_accuracy, args.limit_minutes * 60)
        finally:
            core.lab.sweep.runner.plan_trials = planner
        rows.append((label, at, told, best))
        if at is not None:
            when = f"{at:8.1f} s"
        elif ran < args.limit_minutes * 60:  # every trial told before the time limit: the preset's cap
            when = f"not in {told} trials, {ran:.0f} s"
        else:
            when = f"not within {args.limit_minutes:g} min"
        print(f"{label:26s} {when:>22s}   trials told {told:3d}   best {best if best is not None else float('nan'):.4f}"
              f"   load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
        if label.startswith("batched"):
            print("  top three to move to MNIST: " + "; ".join(
                f"trial {t.number} {t.value:.4f} -> {cfg.replace(dataset='mnist').key()}" for t, cfg in top))
    (_, at_b, _, _), (_, at_a, _, _) = rows
    if at_b and at_a:
        print(f"ratio (alone / batched)    {at_a / at_b:8.2f}x")


if __name__ == "__main__":
    main()
