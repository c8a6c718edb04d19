"""What the CNN's blocks cost: training steps of the lesson's CNN without and with 2x2 pooling after each block, and
of seed 004's Network #8, timed side by side in one run (interleaved, so a loaded machine slows them alike) and
printed as seconds per step, their ratio and the implied seconds per epoch. ``--train`` also trains the lesson's run
both ways with the one training loop (its evaluations and probes included) on its own dataset, wall seconds side by
side.

    python3 bench/bench_cnn_blocks.py [--steps 20] [--rounds 3] [--train]
"""
from __future__ import annotations

import argparse

import benchlib  # noqa: F401  (repository importable, datasets found)
import torch

from core.engine.config import RunConfig
from core.engine.models import build_model, count_parameters
from core.engine.train import train
from core.lessons.presets import CNN_LESSON, CNN_SLOW

SHAPE, CLASSES = (1, 28, 28), 10  # MNIST / Fashion-MNIST


def step_seconds(cfg: RunConfig, steps: int) -> float:
    """Seconds per training step (forward, backward, Adam) of ``cfg``'s network on random 28x28 images."""
    model = build_model(cfg, SHAPE, CLASSES, torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x, y = torch.rand(cfg.batch_size, *SHAPE), torch.randint(0, CLASSES, (cfg.batch_size,))

    def run() -> None:
        for _ in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()

    run()  # warm-up
    seconds, _ = benchlib.timed(run)
    return seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train", action="store_true", help="also train the lesson's run both ways (slow)")
    args = parser.parse_args()
    lesson = CNN_LESSON.config
    nets = {"lesson CNN (no pooling)": lesson, "lesson CNN, max pool": lesson.replace(conv_pool="max"),
            "E #8 (seed 004)": CNN_SLOW}
    best = {name: float("inf") for name in nets}
    for _ in range(args.rounds):
        for name, cfg in nets.items():
            best[name] = min(best[name], step_seconds(cfg, args.steps))
    base = best["lesson CNN (no pooling)"]
    print(f"torch threads {torch.get_num_threads()}, {args.steps} steps x best of {args.rounds} rounds, 28x28 images")
    for name, cfg in nets.items():
        steps_per_epoch = -(-round((cfg.train_limit or 54_000)) // cfg.batch_size)
        print(f"{name:26s} params {count_parameters(cfg, SHAPE, CLASSES):>9,}  batch {cfg.batch_size:3d}  "
              f"{best[name] * 1e3:8.1f} ms/step  x{best[name] / base:5.2f} of the lesson CNN  "
              f"~{best[name] * steps_per_epoch:7.1f} s/epoch ({steps_per_epoch} steps)")
    if args.train:
        walls = {}
        for name, cfg in list(nets.items())[:2]:
            walls[name], end = benchlib.timed(lambda: train(cfg, []))
            print(f"train() {name:26s} on {cfg.dataset}, {cfg.train_limit:,} images x {cfg.epochs} epochs: "
                  f"{walls[name]:6.1f} s wall, validation accuracy {end.val_acc:.3f}")
        first, second = walls.values()
        print(f"train() wall ratio, max pool / no pooling: {second / first:.2f}")


if __name__ == "__main__":
    main()
