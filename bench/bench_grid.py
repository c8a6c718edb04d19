"""A vanishing-gradients grid as one batched job vs one of its models trained alone.

    python bench/bench_grid.py [--device auto|cpu|cuda] [--threads N] [--repeat 3] [--sequential]

The grid of issue 4: activations sigmoid, tanh, relu, leaky_relu, gelu x depths 1, 2, 4, 6, 8,
12 (30 cells) of width 10 on MNIST, SGD lr 0.2, batch 32, 1 epoch, layer stats at the default
log interval, through the real runner (events for every cell). Prints the wall time of the
grid, of ONE of its models trained alone by the single-run loop (the depth-12 sigmoid), and the
ratio, also against the mean of the five depth-12 models trained alone (GELU's kernels make its
model the slowest); 30 models one after another cost about 30x (``--sequential`` measures it).
With ``--repeat`` each is timed that many times and the fastest is kept (the machine may be
shared). Reads MNIST from GRADIENT_LAB_DATA_DIR or ../shared/datasets.
"""
from __future__ import annotations

import argparse
import sys

from benchlib import timed  # noqa: E402  (repo on sys.path, datasets folder, offline)

import torch  # noqa: E402

from core.engine import data as datasets  # noqa: E402
from core.lab.grid import GridConfig, run_grid  # noqa: E402
from core.lessons.presets import A_BASE  # noqa: E402
from core.engine.train import device_name, resolve_device, train  # noqa: E402

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "gelu")
DEPTHS = (1, 2, 4, 6, 8, 12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeat", type=int, default=1, help="time each this many times, keep the fastest")
    parser.add_argument("--sequential", action="store_true", help="also train all 30 cells one by one")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not datasets.available("mnist"):
        sys.exit("MNIST raw files not found: set GRADIENT_LAB_DATA_DIR")

    base = A_BASE.replace(epochs=1, log_every=100, device=args.device)  # 100 = RunConfig's default interval
    grid = GridConfig(base=base, activations=ACTIVATIONS, depths=DEPTHS, width=10)
    alone_cfg = base.replace(activation="sigmoid", hidden=(10,) * 12)
    device = resolve_device(args.device)
    print(f"device: {device_name(device)}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"grid: {grid.n_cells} cells ({', '.join(ACTIVATIONS)} x depths {DEPTHS}), width 10, MNIST, "
          f"batch 32, 1 epoch, stats every {base.log_every} steps")

    # warm up: the dataset and its float copy on the device, and the lazy imports of the first optimizer
    datasets.load_dataset("mnist").on(device).features()
    train(base.replace(dataset="digits", hidden=(4,), epochs=1))

    grid_times, grid_end = [], None  # fastest of --repeat
    for _ in range(args.repeat):
        events: list = []
        seconds, grid_end = timed(lambda: run_grid(grid, events.append))
        grid_times.append(seconds)
    alone: dict[str, float] = {}  # the depth-12 model of each activation, trained alone (fastest of --repeat)
    for activation in ACTIVATIONS:
        cfg = alone_cfg.replace(activation=activation)
        alone[activation] = min(timed(lambda: train(cfg))[0] for _ in range(args.repeat))
    t_grid, t_alone = min(grid_times), alone["sigmoid"]
    t_mean = sum(alone.values()) / len(alone)
    print(f"grid of {grid.n_cells} (one batched job):   {t_grid:7.2f} s   ({grid_end.reason})")
    print(f"one model alone, sigmoid x12:         {t_alone:7.2f} s   "
          f"(each x12 alone: {', '.join(f'{a} {t:.2f}' for a, t in alone.items())})")
    print(f"ratio grid / sigmoid x12:             {t_grid / t_alone:7.2f} x   (target <= 3x; "
          f"{grid.n_cells} one after another ~ {grid.n_cells}x)")
    print(f"ratio grid / mean of the five x12:    {t_grid / t_mean:7.2f} x")
    if args.sequential:
        seconds, _ = timed(lambda: [train(cfg) for _, cfg in grid.cells()])
        print(f"{grid.n_cells} models one after another:       {seconds:7.2f} s   ({seconds / t_grid:.1f}x the grid)")


if __name__ == "__main__":
    main()
