"""Inside a CNN: the lesson's CNN trained, then everything the page computes and draws from it, side by side.

    python bench/bench_cnn.py [--dataset digits|mnist] [--threads 1] [--images 5]

Trains the lesson's preset (core.lessons.presets.CNN_LESSON; Digits settings with --dataset digits) once, then
times what the page does with the trained weights: both networks built, the filter smoothness before and after,
and for each of --images test images the feature maps, the hand convolution and every figure. Prints each wall
time and the look's cost as a share of the training time (the issue's bound: 10%).
"""
from __future__ import annotations

import argparse

import benchlib  # noqa: F401,E402  (repo on sys.path, datasets folder, offline)

import torch  # noqa: E402

from app.figures import cnn as figures  # noqa: E402
from core.engine.train import train  # noqa: E402
from core.lab import convnet  # noqa: E402
from core.lessons.presets import CNN_LESSON  # noqa: E402


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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = CNN_LESSON.on_fallback() if args.dataset == "digits" else CNN_LESSON
    cfg = preset.config
    events: list = []
    train_s, end = benchlib.timed(lambda: train(cfg, [events.append]))
    weights = next(e for e in events if e.kind == "weights").weights
    look_s, _ = benchlib.timed(lambda: look(cfg, weights, args.images))
    print(f"{cfg.dataset}: train_limit {cfg.train_limit}, {cfg.epochs} epochs, {args.threads} thread(s); "
          f"run {end.status}, test accuracy {end.test_acc:.3f}")
    print(f"train {train_s:8.2f} s")
    print(f"look  {look_s:8.2f} s  (filters before/after + {args.images} images: maps, hand convolution, figures)")
    print(f"look / train = {look_s / train_s:.3f}")
