"""Inside a CNN: what watching and looking cost beside training, and where E #8's conv step spends its time on this CPU.

    python bench/bench_cnn.py [--dataset digits|mnist] [--threads 1] [--images 5] [--repeats 2]
    python bench/bench_cnn.py --profile [--subset 6000] [--steps 30]

Default: trains the lesson's preset (core.lessons.presets.CNN_LESSON; Digits settings with --dataset digits) four
ways, alternately, ``--repeats`` times each after one warm-up run (the fastest of each is printed): live filters off;
sent at every log point (core.engine.events.ConvFilters) but not drawn; drawn at every log point as the page draws
them (the filters and the smoothness history); drawn at most once a poll (app.views.jobs.POLL_SECONDS), as a
browser watching the run redraws them. Prints each training time beside the one without, and the drawing's own time
as a share of training (the issue's bound: 10%). Then times what the page does with the trained weights: both
networks built, the filter smoothness before and after, and for each of --images test images the feature maps, the
hand convolution and every figure.

--profile: seed 004's Network #8 (conv 32 3x3 -> conv 32 3x3 -> 128 -> 64, E #8 with MNIST's 28x28 images) on a
seeded subset of --subset training images, one epoch through the engine, scaled to the 60,000-image epoch; then
--steps training steps (batch 64) of the same network in a plain loop for each setting, --rounds times interleaved: memory format (contiguous,
channels_last), oneDNN (torch.backends.mkldnn on, off) and 1 or 2 threads, each as seconds per 60,000-image epoch and
as a ratio to the engine's default; and torch.profiler's top operators of the default step.
"""
from __future__ import annotations

import argparse
import itertools
import math
import time

import benchlib  # noqa: F401,E402  (repo on sys.path, datasets folder, offline)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from app.figures import cnn as figures  # noqa: E402
from app.records.cnn import live_filters  # noqa: E402
from app.views.jobs import POLL_SECONDS  # noqa: E402
from core.engine.data import batch_features  # noqa: E402
from core.engine.lanes import make_optimizer  # noqa: E402
from core.engine.models import build_model  # noqa: E402
from core.engine.train import train, training_examples  # noqa: E402
from core.lab import convnet  # noqa: E402
from core.lessons.presets import CNN_LESSON, get_preset  # noqa: E402

MNIST_EPOCH = 60_000


def look(cfg, weights, images: int) -> None:
    """What the page computes and draws for a finished run (its caches cold)."""
    ds = convnet.image_dataset(cfg)
    start, trained = convnet.cnn_model(cfg, ds), convnet.cnn_model(cfg, ds, weights)
    for model in (start, trained):
        w = convnet.first_conv(model).weight
        figures.filters_figure(w.detach().numpy(), convnet.filter_smoothness(w))
    for index in range(images):
        picture, label = convnet.test_image(ds, index)
        fm = convnet.feature_maps(trained, picture)
        figures.image_figure(picture.numpy(), "image")
        figures.probabilities_figure(fm.probabilities, ds.classes, label)
        for stage in fm.maps:
            figures.feature_maps_figure(stage.maps, "maps")
        figures.hand_convolution_figure(convnet.hand_convolution_at(fm, len(fm.convs), 0, 0, 0), len(fm.convs))


class Watcher:
    """A callback that keeps the events and, at a live-filters event, draws what the page redraws then: at every
    log point, or (``poll`` seconds) at most once a poll, as a browser polling the run does. Counts its own time."""

    def __init__(self, poll: float = 0.0):
        self.events: list = []
        self.poll, self.last, self.draws, self.seconds = poll, -math.inf, 0, 0.0

    def __call__(self, event) -> None:
        self.events.append(event)
        now = time.perf_counter()
        if event.kind != "filters" or now - self.last < self.poll:
            return
        self.last = now
        live = live_filters(self.events)
        figures.filters_figure(live.filters, live.smoothness, "live")
        figures.smoothness_history_figure(live.steps, live.means, live.initial,
                                          convnet.random_smoothness(live.filters.shape[-1]))
        self.draws += 1
        self.seconds += time.perf_counter() - now


WAYS = {"off": "live filters off",
        "sent": "sent, not drawn",
        "drawn": "drawn at every log point",
        "polled": f"drawn as a browser polls ({POLL_SECONDS:g} s)"}


def live_cost(args) -> None:
    preset = CNN_LESSON.on_fallback() if args.dataset == "digits" else CNN_LESSON
    cfg = preset.config
    train(cfg, live_filters=False)  # warm-up: the dataset loads, the allocator and oneDNN settle
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    drawing: dict[str, list[float]] = {"drawn": [], "polled": []}
    draws: dict[str, list[int]] = {"drawn": [], "polled": []}
    watcher = Watcher()
    end = None
    for _, way in itertools.product(range(args.repeats), WAYS):  # alternate: the machine's load hits every way
        watcher = Watcher(POLL_SECONDS if way == "polled" else 0.0)
        seconds, end = benchlib.timed(lambda: train(cfg, [watcher], live_filters=way != "off"))
        times[way].append(seconds)
        if way in drawing:
            drawing[way].append(watcher.seconds / seconds)
            draws[way].append(watcher.draws)
    weights = next(e for e in watcher.events if e.kind == "weights").weights
    look_s, _ = benchlib.timed(lambda: look(cfg, weights, args.images))
    off = min(times["off"])
    print(f"{cfg.dataset}: train_limit {cfg.train_limit}, {cfg.epochs} epochs, {args.threads} thread(s), "
          f"{len(live_filters(watcher.events).steps)} log points; run {end.status}, test accuracy {end.test_acc:.3f}; "
          f"fastest of {args.repeats} runs each way, run alternately")
    for way, words in WAYS.items():
        print(f"train, {words:<34} {min(times[way]):8.2f} s   x{min(times[way]) / off:.3f} of off   "
              f"(all: {', '.join(f'{t:.2f}' for t in times[way])})")
    for way in drawing:
        print(f"drawing time / training time, {WAYS[way]:<34} {min(drawing[way]):.4f}  "
              f"(all: {', '.join(f'{d:.4f}' for d in drawing[way])}; redraws per run: "
              f"{', '.join(map(str, draws[way]))})")
    print(f"look  {look_s:8.2f} s  (filters before/after + {args.images} images: maps, hand convolution, figures), "
          f"look / train = {look_s / off:.3f}")


def network_8(subset: int):
    """Seed 004's Network #8 (E #8 of the eight networks, on MNIST), on a seeded subset, one epoch."""
    runs = dict(get_preset("E-eight-networks").runs)
    return runs["#8 conv32-conv32-128-64"].replace(dataset="mnist", train_limit=subset, epochs=1)


def step_seconds(cfg, x, y, steps: int, channels_last: bool, mkldnn: bool, threads: int) -> float:
    """Seconds per training step (forward, backward, the engine's optimizer) of ``cfg``'s network on ``steps``
    batches, after two warm-up steps."""
    torch.set_num_threads(threads)
    model = build_model(cfg, tuple(x.shape[1:]), 10, torch.Generator().manual_seed(cfg.seed))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = make_optimizer(cfg, model.parameters())
    batch = cfg.batch_size

    def step(b: int) -> None:
        xb = x[b * batch:(b + 1) * batch].contiguous(memory_format=fmt)
        loss = F.cross_entropy(model(xb), y[b * batch:(b + 1) * batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with torch.backends.mkldnn.flags(enabled=mkldnn):
        for b in range(2):
            step(b)
        seconds, _ = benchlib.timed(lambda: [step(2 + b) for b in range(steps)])
    return seconds / steps


def conv_profile(args) -> None:
    cfg = network_8(args.subset)
    ds = convnet.image_dataset(cfg)
    torch.set_num_threads(args.threads)
    engine_s, end = benchlib.timed(lambda: train(cfg, live_filters=False))
    per_epoch = end.epoch_seconds[0] * MNIST_EPOCH / args.subset
    print(f"E #8 on MNIST (conv 32 3x3 -> conv 32 3x3 -> 128 -> 64, batch {cfg.batch_size}, {cfg.optimizer}), "
          f"{torch.get_num_threads()} thread(s): the engine's epoch on {args.subset:,} images took "
          f"{end.epoch_seconds[0]:.2f} s -> {per_epoch:.1f} s per {MNIST_EPOCH:,}-image epoch (scaled; "
          f"whole run {engine_s:.2f} s with setup and scoring)")
    x, y = training_examples(cfg, ds)
    x, y = batch_features(x), y
    steps_per_epoch = MNIST_EPOCH / cfg.batch_size
    settings = list(itertools.product((1, 2), (False, True), (True, False)))
    seconds: dict[tuple, list[float]] = {setting: [] for setting in settings}
    for _, setting in itertools.product(range(args.rounds), settings):  # rounds interleaved: load drift hits all
        threads, channels_last, mkldnn = setting
        seconds[setting].append(step_seconds(cfg, x, y, args.steps, channels_last, mkldnn, threads))
    base = min(seconds[(args.threads, False, True)])
    print(f"plain loop, {args.steps} steps of batch {cfg.batch_size} each, fastest of {args.rounds} interleaved rounds, "
          f"as seconds per {MNIST_EPOCH:,}-image epoch (ratio to contiguous, oneDNN on, {args.threads} thread(s)):")
    for (threads, channels_last, mkldnn), times in seconds.items():
        print(f"  threads {threads}  {'channels_last' if channels_last else 'contiguous   '}  oneDNN "
              f"{'on ' if mkldnn else 'off'}  {min(times) * steps_per_epoch:8.1f} s  x{min(times) / base:.2f}   "
              f"(rounds: {', '.join(f'{t * steps_per_epoch:.0f}' for t in times)})")
    torch.set_num_threads(args.threads)
    model = build_model(cfg, tuple(x.shape[1:]), 10, torch.Generator().manual_seed(cfg.seed))
    optimizer = make_optimizer(cfg, model.parameters())
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in range(min(args.steps, 10)):
            xb, yb = x[b * cfg.batch_size:(b + 1) * cfg.batch_size], y[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    print(f"torch.profiler, {min(args.steps, 10)} default steps, {args.threads} thread(s):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="E #8's conv step on this CPU instead")
    parser.add_argument("--subset", type=int, default=6000)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parsed = parser.parse_args()
    torch.set_num_threads(parsed.threads)
    (conv_profile if parsed.profile else live_cost)(parsed)
