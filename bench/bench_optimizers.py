"""The Optimizers lesson's two speed targets, measured side by side.

    python bench/bench_optimizers.py [--device auto|cpu|cuda] [--threads N] [--repeat 3] [--epochs 1]

1. 2-D race: six optimizers x 500 steps on each race function, computed by the from-scratch
   rules (core.lab.race.race) AND drawn server-side (both Plotly figures built and serialized to
   JSON, what Streamlit sends). Target: at most 0.2 s.
2. Loss surface of LESSONS E #2 (784-128-64-10 on Fashion-MNIST), 41 x 41 points on 2048
   training examples: the vmapped functional_call evaluation of core.lab.surface against the
   same points evaluated one model at a time (weights loaded into the module, one forward
   each). Target: at most 15 s; prints the ratio. The network is trained first (``--epochs``,
   1 by default: the evaluation's cost does not depend on how long it trained).

With ``--repeat`` each timing is taken that many times and the fastest kept (shared machine).
Reads Fashion-MNIST from GRADIENT_LAB_DATA_DIR or ../shared/datasets.
"""
from __future__ import annotations

import argparse
import time

from benchlib import timed  # noqa: E402  (repo on sys.path, datasets folder, offline)

import torch  # noqa: E402
from torch.nn.utils import vector_to_parameters  # noqa: E402

from app.figures.optimizers import race_contour_figure, race_loss_figure  # noqa: E402
from core.lab import race  # noqa: E402
from core.lessons.presets import get_preset  # noqa: E402
from core.lab.surface import (SurfaceConfig, flat_parameters, grid_axes, plane_evaluator, points_per_batch,  # noqa: E402
                          project, random_directions, train_recording, training_subset)
from core.engine.lanes import data_loss  # noqa: E402
from core.engine.train import device_name, resolve_device  # noqa: E402

SIX = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "nadam")


def best_of(repeat: int, fn) -> tuple[float, object]:
    """The fastest of ``repeat`` timed calls, and the last result."""
    runs = [timed(fn) for _ in range(repeat)]
    return min(seconds for seconds, _ in runs), runs[-1][1]


def bench_race(repeat: int) -> None:
    print("2-D race: 6 optimizers x 500 steps (target <= 0.2 s computed + drawn)")
    for name in race.FUNCTIONS:
        fn = race.surface(name, kappa=50.0)
        racers = {o: {"optimizer": o, "lr": 0.01 if o in ("rmsprop", "adam", "nadam") else 1e-3} for o in SIX}
        grid = race.loss_grid(fn)
        compute, results = best_of(repeat, lambda: race.race(fn, fn.start, racers, 500))

        def draw():
            return len(race_contour_figure(fn, grid, results).to_json()) + len(race_loss_figure(results).to_json())
        drawn, _ = best_of(repeat, draw)
        total, _ = best_of(repeat, lambda: (race_contour_figure(fn, race.loss_grid(fn),
                                                                race.race(fn, fn.start, racers, 500)).to_json()))
        print(f"  {name:11s} compute {compute:6.3f} s  draw {drawn:6.3f} s  compute+draw {compute + drawn:6.3f} s"
              f"  (one pass: grid + race + contour: {total:.3f} s)")


def bench_surface(device: torch.device, repeat: int, epochs: int) -> None:
    cfg = get_preset("E2").config.replace(epochs=epochs, device=device.type, log_every=200)
    scfg = SurfaceConfig(run=cfg, directions="random", resolution=41, n_examples=2048)
    t0 = time.perf_counter()
    recorded = train_recording(cfg)
    print(f"\nLoss surface of E #2 ({cfg.hidden}, {epochs} epoch(s) trained in {time.perf_counter() - t0:.1f} s, "
          f"val acc {recorded.end.val_acc:.3f}): 41 x 41 points on 2048 examples (target <= 15 s)")
    model = recorded.model
    directions = random_directions(model, 0)
    coords, _, _ = project(recorded.snapshots, directions)
    xs, ys = grid_axes(scfg, coords)
    x, y = training_subset(cfg, 2048, device)
    points = torch.tensor([[a, b] for b in ys for a in xs])
    evaluate_points = plane_evaluator(cfg, model, directions, x, y)
    per_batch = points_per_batch(model, len(y), 41)

    def batched():
        return torch.cat([evaluate_points(chunk)[0].cpu() for chunk in points.split(per_batch)])

    center = flat_parameters(model)
    d = directions.to(center.device)

    @torch.no_grad()
    def one_by_one():
        out = torch.empty(len(points))
        model.eval()
        for i, (a, b) in enumerate(points.tolist()):
            vector_to_parameters(center + a * d[0] + b * d[1], model.parameters())
            out[i] = data_loss(cfg, model(x), y)
        vector_to_parameters(center, model.parameters())
        return out

    t_batched, fast = best_of(repeat, batched)
    t_single, slow = best_of(max(1, repeat - 1), one_by_one)
    agree = float((fast - slow).abs().max())
    print(f"  vmapped functional_call ({per_batch} points per batch): {t_batched:.2f} s")
    print(f"  one model at a time:                               {t_single:.2f} s")
    print(f"  ratio one-at-a-time / batched: {t_single / t_batched:.2f}x   (max |difference| {agree:.2e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--skip-surface", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device {device_name(device)}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_race(args.repeat)
    if not args.skip_surface:
        bench_surface(device, args.repeat, args.epochs)


if __name__ == "__main__":
    main()
