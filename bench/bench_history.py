"""A run's history stays bounded however often it logs (issue 14.2).

    python bench/bench_history.py [--epochs 1 2 4] [--hidden 64,64]

Trains digits with batch_size=1 and log_every=1 (the URL that once grew ~38 KB per step) for each
epoch count and prints, side by side: steps, log points kept, log points with heatmaps, per-step
values kept, and the encoded record's bytes (JSON + npz, what the run store keeps), with the ratio
of bytes to the shortest run's. Without the caps, bytes grow with the steps; with them the ratio
stays near 1 while the steps multiply.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.engine.config import RunConfig, parse_hidden  # noqa: E402
from core.engine.events import encode_events  # noqa: E402
from core.engine.train import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--hidden", default="64,64")
    args = parser.parse_args()
    first = None
    print(f"{'epochs':>6} {'steps':>7} {'logs':>5} {'maps':>5} {'values':>7} {'bytes':>10} {'x first':>8}")
    for epochs in args.epochs:
        events = []
        train(RunConfig(dataset="digits", hidden=parse_hidden(args.hidden), batch_size=1, log_every=1,
                        epochs=epochs, lr=1e-4), [events.append])
        text, blob = encode_events(events)
        size = len(text.encode()) + len(blob)
        first = first or size
        layers = [e for e in events if e.kind == "layers"]
        values = sum(len(e.losses) for e in events if e.kind == "steps")
        steps = events[0].total_steps
        print(f"{epochs:>6} {steps:>7} {len(layers):>5} {sum(1 for e in layers if e.heatmaps):>5} {values:>7} "
              f"{size:>10} {size / first:>8.2f}")


if __name__ == "__main__":
    main()
