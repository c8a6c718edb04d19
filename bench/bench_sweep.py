"""A sweep of seed 003's space (epochs fixed at 1) vs the same trials one after another.

    python bench/bench_sweep.py [--trials 24] [--dataset fashion-mnist] [--device auto|cpu|cuda] [--threads N]

Draws ``--trials`` points of the D-sweep space (core/lessons/families.py) with epochs fixed at 1 by
Optuna's random sampler (seed 0), and times

- the sweep: :func:`core.lab.sweep.runner.run_sweep`, all trials asked at once, trials sharing a data
  stream (here: the batch size) trained as one batched lanes job, each told to the study;
- the same trial configs trained one after another by :func:`core.engine.train.train`.

Prints both wall times, the ratio, and that the two agree on each trial's validation accuracy.
A fresh SQLite study and no run store, so nothing is served from a cache. Reads Fashion-MNIST
from GRADIENT_LAB_DATA_DIR or ../shared/datasets; ``--dataset digits`` runs offline in seconds.
"""
from __future__ import annotations

import argparse
import sys
import tempfile

from benchlib import timed  # noqa: E402  (repo on sys.path, datasets folder, offline)

import torch  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from core.engine import data as datasets  # noqa: E402
from core.lessons.families import SWEEP_PRESETS  # noqa: E402
from core.lab.sweep.runner import plan_trials, run_sweep  # noqa: E402
from core.lab.sweep.space import trial_config  # noqa: E402
from core.lab.sweep.study import open_study  # noqa: E402
from core.engine.train import device_name, resolve_device, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not datasets.available(args.dataset):
        sys.exit(f"{args.dataset} raw files not found: set GRADIENT_LAB_DATA_DIR")
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
    seq_s, singles = timed(lambda: [train(c) for c in configs])
    diffs = [abs(t.value - s.val_acc) for t, s in zip(trials, singles)
             if t.state == TrialState.COMPLETE and s.kind == "finished" and s.val_acc is not None]
    print(f"sweep (batched, told to Optuna)      {sweep_s:8.1f} s")
    print(f"same trials one after another        {seq_s:8.1f} s")
    print(f"ratio                                {seq_s / sweep_s:8.2f}x")
    print(f"largest |val acc sweep - alone| over {len(diffs)} finished trials: {max(diffs, default=0):.4f}")


if __name__ == "__main__":
    main()
