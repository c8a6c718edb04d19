"""What the live decision boundary and the network diagram cost (issue 24.1, 24.2): a spiral net trained with them
on and off, side by side.

    python bench/bench_boundary.py [--epochs 40] [--repeats 5] [--lanes 4] [--device cpu]

Trains the Playground's network (its defaults: 64-64 ReLU, Adam, batch 64, log every 100 steps, and a
validation point at each epoch end) on the spiral set, with the class regions evaluated every 100 steps and at
the end (``live_boundary``) and without, alternating, ``--repeats`` times each; then the same for ``--lanes`` runs
trained together as one batched model (one grid pass for all lanes). The default network is too wide for the
network diagram (core.engine.neurons: at most 8 hidden layers of 16 units), so the same is then done for
networks the diagram draws (16-16, and 8 layers of 16: the largest), each three ways: nothing live, the class
regions only (the diagram's limit set to 0 units), the regions and the diagram. Prints the best and the median
training seconds (the loop's own clock, log points included: CPU seconds on the CPU, which other users of a
shared machine inflate less than wall seconds; wall seconds on a GPU) of each, side by side, and their ratios
(target: at most 1.10 for the regions and the diagram together).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the spiral set is made here: no data files needed

from core.engine import neurons  # noqa: E402
from core.engine.batched import StackedLanes  # noqa: E402
from core.engine.config import RunConfig  # noqa: E402
from core.engine.train import resolve_device, train, train_lanes  # noqa: E402


def clock_for(device: str):
    """CPU seconds of this process on the CPU (steady on a machine shared with others), else wall seconds."""
    return time.process_time if resolve_device(device).type == "cpu" else time.perf_counter


def single(cfg: RunConfig, live: bool) -> float:
    end = train(cfg, clock=clock_for(cfg.device), live_boundary=live)
    assert end.status == "finished", end
    return sum(end.epoch_seconds)


def together(configs: list[RunConfig], live: bool) -> float:
    ends = train_lanes(configs, StackedLanes, [lambda event: None] * len(configs), clock=clock_for(configs[0].device),
                       live_boundary=live)
    assert all(e.status == "finished" for e in ends), ends
    return sum(ends[0].epoch_seconds)


def side_by_side(name: str, run: Callable[[bool], float], repeats: int) -> None:
    run(False)  # warm-up: dataset, kernels
    times = {True: [], False: []}
    for r in range(repeats):
        for live in ((False, True) if r % 2 == 0 else (True, False)):  # neither always goes first
            times[live].append(run(live))
    best_off, best_on = min(times[False]), min(times[True])
    med_off, med_on = statistics.median(times[False]), statistics.median(times[True])
    print(f"{name:<20} {best_off:>9.3f} {best_on:>9.3f} {best_on / best_off:>7.3f}x   "
          f"{med_off:>9.3f} {med_on:>9.3f} {med_on / med_off:>7.3f}x")


def regions_only(run: Callable[[bool], float]) -> float:
    """``run(True)`` with the diagram's unit limit at 0: the class regions are drawn, no network diagram."""
    limit = neurons.DIAGRAM_MAX_UNITS
    neurons.DIAGRAM_MAX_UNITS = 0
    try:
        return run(True)
    finally:
        neurons.DIAGRAM_MAX_UNITS = limit


def three_ways(name: str, run: Callable[[bool], float], repeats: int) -> None:
    """Nothing live, regions only, regions + diagram: alternated, each ``repeats`` times."""
    ways = {"off": lambda: run(False), "regions": lambda: regions_only(run), "both": lambda: run(True)}
    ways["off"]()  # warm-up
    times: dict[str, list[float]] = {w: [] for w in ways}
    for r in range(repeats):
        order = list(ways) if r % 2 == 0 else list(reversed(ways))
        for way in order:
            times[way].append(ways[way]())
    for pick, label in ((min, "best"), (statistics.median, "median")):
        off, regions, both = (pick(times[w]) for w in ways)
        print(f"{name:<20} {label:<6} {off:>9.3f} {regions:>9.3f} {both:>9.3f}   "
              f"{regions / off:>7.3f}x {both / off:>7.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    args = parser.parse_args()
    cfg = RunConfig(dataset="spiral", epochs=args.epochs, device=args.device)
    print(f"spiral, hidden {cfg.hidden}, {cfg.optimizer}, batch {cfg.batch_size}, log every {cfg.log_every} steps, "
          f"{args.epochs} epochs, device {args.device}; "
          f"({'CPU' if clock_for(args.device) is time.process_time else 'wall'} seconds of training)")
    print(f"{'':<20} {'best of ' + str(args.repeats):^28}   {'median':^28}")
    print(f"{'':<20} " + f"{'off (s)':>9} {'on (s)':>9} {'on/off':>8}   " * 2)
    side_by_side("one run", lambda live: single(cfg, live), args.repeats)
    lanes = [cfg.replace(lr=cfg.lr * (1 + i)) for i in range(args.lanes)]
    side_by_side(f"{args.lanes} lanes together", lambda live: together(lanes, live), args.repeats)
    print(f"\nnetworks the diagram draws (same data and settings otherwise; {neurons.NEURON_GRID_SIZE}x"
          f"{neurons.NEURON_GRID_SIZE} points per neuron map):")
    print(f"{'':<27} {'off (s)':>9} {'regions':>9} {'+diagram':>9}   {'reg/off':>8} {'+dia/off':>8}")
    for hidden in ((16, 16), (16,) * 8):
        drawn = cfg.replace(hidden=hidden)
        assert not neurons.diagram_problem(drawn), neurons.diagram_problem(drawn)
        name = "-".join(map(str, hidden)) if len(hidden) < 4 else f"{len(hidden)} x {hidden[0]}"
        three_ways(f"one run, {name}", lambda live, c=drawn: single(c, live), args.repeats)
    drawn_lanes = [lane.replace(hidden=(16, 16)) for lane in lanes]
    three_ways(f"{args.lanes} lanes, 16-16", lambda live: together(drawn_lanes, live), args.repeats)


if __name__ == "__main__":
    main()
