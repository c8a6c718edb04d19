"""Engine speed vs the seed-style loop, side by side in one process (LESSONS E #2 network).

    python bench/bench_engine.py [--epochs 2] [--device auto] [--gpu-epochs 20] [--profile]

Prints seconds per epoch for (1) the seed-style loop: torchvision FashionMNIST + ToTensor +
DataLoader, batch 64, Adam lr 1e-3, 784-128-64-10 ReLU, loss.item() every step; (2) a plain
in-memory loop over index slices; (3) the engine on the same config with layer stats at the
default log interval; and the ratios. ``--profile`` adds where one engine epoch's time goes: cProfile's
table of the engine's own functions (cumulative) and of everything (own time). Reads Fashion-MNIST from GRADIENT_LAB_DATA_DIR or
../shared/datasets; copies the raw files to a temp dir for torchvision (never writes there).
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "datasets"
if SHARED.is_dir() and "GRADIENT_LAB_DATA_DIR" not in os.environ:
    os.environ["GRADIENT_LAB_DATA_DIR"] = str(SHARED)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from core.engine import data as datasets  # noqa: E402
from core.lessons.presets import get_preset  # noqa: E402
from core.engine.train import resolve_device, train  # noqa: E402


def e2_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def raw_folder() -> Path:
    for root in datasets.paths.data_search_dirs():
        raw = root / "FashionMNIST" / "raw"
        if (raw / "train-images-idx3-ubyte.gz").is_file() or (raw / "train-images-idx3-ubyte").is_file():
            return raw
    sys.exit("Fashion-MNIST raw files not found: set GRADIENT_LAB_DATA_DIR")


def seed_style_epoch(device: torch.device, tmp: Path) -> float:
    """The coursework loop: a per-sample DataLoader with ToTensor, .item() every step."""
    import torchvision
    from torchvision import transforms

    target = tmp / "FashionMNIST" / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for f in raw_folder().iterdir():
        shutil.copy(f, target / f.name)
    # the .gz files are present with the right checksums, so this only extracts them (no network)
    ds = torchvision.datasets.FashionMNIST(str(tmp), train=True, download=True, transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True)
    torch.manual_seed(0)
    model = e2_model().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    total, correct, loss_sum = 0, 0, 0.0
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum += loss.item()
        correct += (out.argmax(1) == yb).sum().item()
        total += len(yb)
    return time.perf_counter() - start


def plain_epoch(device: torch.device) -> float:
    """In-memory tensors and index slices, no metrics, no stats."""
    ds = datasets.load_dataset("fashion-mnist").on(device)
    x, y = ds.features(), ds.y
    torch.manual_seed(0)
    model = e2_model().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    perm = torch.randperm(len(y), device=device)[:54000]
    start = time.perf_counter()
    for b in range(0, len(perm), 64):
        idx = perm[b:b + 64]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def engine_epoch(cfg) -> tuple[float, object]:
    result = train(cfg)
    if result.kind != "finished" or result.status != "finished":
        sys.exit(f"engine run did not finish: {result}")
    return sum(result.epoch_seconds) / len(result.epoch_seconds), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2, help="engine epochs (seconds per epoch are averaged)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--gpu-epochs", type=int, default=20, help="on a GPU, also time this many epochs end to end")
    parser.add_argument("--profile", action="store_true", help="also profile one engine epoch (cProfile)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cfg = get_preset("E2").config.replace(epochs=args.epochs, device=device.type)
    print(f"device: {device.type} ({torch.cuda.get_device_name() if device.type == 'cuda' else os.cpu_count()} "
          f"{'' if device.type == 'cuda' else 'cores'}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    datasets.load_dataset("fashion-mnist").on(device).features()  # load once, outside every timing
    train(cfg.replace(epochs=1, dataset="digits"))  # warm up kernels

    # The engine is timed before and after the two baselines (what ran before affects a timing on this
    # kind of machine); the slower of the two is reported.
    before = engine_epoch(cfg)
    plain = plain_epoch(device)
    with tempfile.TemporaryDirectory() as tmp:
        seed = seed_style_epoch(device, Path(tmp))
    after = engine_epoch(cfg)
    engine, result = max(before, after, key=lambda pair: pair[0])
    print(f"seed-style loop : {seed:6.2f} s/epoch")
    print(f"plain in-memory : {plain:6.2f} s/epoch")
    print(f"engine (+stats) : {engine:6.2f} s/epoch  (before/after the baselines: {before[0]:.2f}/{after[0]:.2f}; "
          f"log every {cfg.log_every} steps, "
          f"test acc {result.test_acc:.4f} after {args.epochs} epochs)")
    print(f"ratio seed-style / engine : {seed / engine:5.1f}x   (target >= 12x)")
    print(f"ratio plain / engine      : {plain / engine:5.2f}x")
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        engine_epoch(cfg.replace(epochs=1))
        profile.disable()
        stats = pstats.Stats(profile).strip_dirs()
        print("one engine epoch, the engine's functions by cumulative time:")
        stats.sort_stats("cumulative").print_stats(r"(train|batched|lanes|probes|optimizers|events|data)\.py", 16)
        print("one engine epoch, every function by its own time:")
        stats.sort_stats("tottime").print_stats(14)
    if device.type == "cuda" and args.gpu_epochs:
        start = time.perf_counter()
        long = train(cfg.replace(epochs=args.gpu_epochs))
        print(f"GPU: {args.gpu_epochs} epochs incl. evaluation: {time.perf_counter() - start:.2f} s "
              f"(target <= 3 s), test acc {long.test_acc:.4f}")


if __name__ == "__main__":
    main()
