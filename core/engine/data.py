"""Dataset registry: every dataset is loaded once per process into tensors.

Images are uint8 ``[N, C, H, W]``; 2-D toy sets are float32 ``[N, 2]``. Batches are index
slices of these tensors (see :func:`batch_features`), never a per-sample DataLoader.
Source data folders are only read; downloads go to ``<cache>/datasets``.
"""
from __future__ import annotations

import gzip
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.engine import paths
from core.engine.config import BUILTIN_DATASETS, TOY_DATASETS, UPLOAD_PREFIX

logger = logging.getLogger(__name__)

FASHION_CLASSES = ["T-shirt/Top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle Boot"]
DIGIT_CLASSES = [str(i) for i in range(10)]
TEST_SPLIT_SEED = 1234  # fixed, so every run of a dataset without an official test set shares one test set


class DatasetUnavailable(RuntimeError):
    """The dataset cannot be loaded here (files missing and no download possible, bad upload...)."""


@dataclass
class Dataset:
    """A dataset held in memory: train pool (train+validation) and a fixed test set."""

    name: str
    title: str
    classes: list[str]
    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    notice: str | None = None
    _on_device: dict = field(default_factory=dict, repr=False)

    @property
    def is_image(self) -> bool:
        return self.x.dtype == torch.uint8

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.y, minlength=self.n_classes).tolist()

    def features(self) -> torch.Tensor:
        """The train pool as float features (images scaled to [0, 1]), computed once and kept."""
        if "features" not in self._on_device:
            self._on_device["features"] = batch_features(self.x)
        return self._on_device["features"]

    def fits_on(self, device: torch.device) -> bool:
        """Whether the uint8 data plus its float copy take at most half of the device's free memory."""
        if device.type == "cpu":
            return True
        if str(device) in self._on_device:
            return True
        free, _ = torch.cuda.mem_get_info(device)
        n_bytes = (self.x.numel() + self.x_test.numel()) * (1 + 4) + (len(self.y) + len(self.y_test)) * 8
        return n_bytes <= free // 2

    def on(self, device: torch.device) -> "Dataset":
        """This dataset with tensors on ``device`` (cached; the CPU copy stays)."""
        if device.type == "cpu":
            return self
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = Dataset(self.name, self.title, self.classes, self.x.to(device), self.y.to(device),
                                           self.x_test.to(device), self.y_test.to(device), self.notice)
        return self._on_device[key]


def batch_features(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1] (like torchvision's ToTensor); toy features pass through."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic train/validation split of ``range(n)`` by seed."""
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    return perm[n_val:].sort().values, perm[:n_val].sort().values


# --- loaders ---------------------------------------------------------------------------------
def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetUnavailable(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = math.prod(dims)
    if len(data) - offset != expected:
        raise DatasetUnavailable(f"{path} is truncated or corrupt ({len(data) - offset} bytes, expected {expected})")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


_IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
              "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def _find_raw(folder: str) -> dict[str, Path] | None:
    for root in paths.data_search_dirs():
        raw = root / folder / "raw"
        found = {}
        for key, stem in _IDX_FILES.items():
            for candidate in (raw / stem, raw / (stem + ".gz")):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(_IDX_FILES):
            return found
    return None


def _torchvision_download(folder: str) -> None:
    import torchvision

    cls = {"MNIST": torchvision.datasets.MNIST, "FashionMNIST": torchvision.datasets.FashionMNIST}[folder]
    cls(root=str(paths.download_dir()), train=True, download=True)
    cls(root=str(paths.download_dir()), train=False, download=True)


def _log_where_to_put(title: str, folder: str, why: str) -> None:
    """Where the server's operator can put the files (the log, not the viewer: no server paths on screen)."""
    logger.warning("%s is not in %s and %s. Put the official raw files under one of these folders as %s/raw/*.gz, "
                   "or set GRADIENT_LAB_DATA_DIR.", title, ", ".join(str(d) for d in paths.data_search_dirs()), why,
                   folder)


def _load_idx_dataset(name: str, folder: str, title: str, classes: list[str]) -> Dataset:
    files = _find_raw(folder)
    if files is None and paths.downloads_allowed():
        try:
            _torchvision_download(folder)
        except Exception as exc:  # network down, disk full...: report, do not crash
            _log_where_to_put(title, folder, f"downloading it failed ({type(exc).__name__}: {exc})")
            raise DatasetUnavailable(f"{title} is not on this server and downloading it failed "
                                     f"({type(exc).__name__}).") from None
        files = _find_raw(folder)
    if files is None:
        why = "the download left no files there" if paths.downloads_allowed() else "downloads are off"
        _log_where_to_put(title, folder, why)
        raise DatasetUnavailable(f"{title} is not on this server (its files are not in the data folder and {why}).")
    arrays = {k: _read_idx(p) for k, p in files.items()}
    as_x = lambda a: torch.from_numpy(a.copy()).unsqueeze(1)  # noqa: E731  [N, 1, 28, 28] uint8
    as_y = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    return Dataset(name, title, classes, as_x(arrays["train_x"]), as_y(arrays["train_y"]),
                   as_x(arrays["test_x"]), as_y(arrays["test_y"]))


def split_off_test(name: str, title: str, classes: list[str], x: torch.Tensor, y: torch.Tensor,
                   test_fraction: float = 0.2, notice: str | None = None) -> Dataset:
    """A dataset whose fixed test set is ``test_fraction`` of the rows (same rows for every run)."""
    pool, test = split_indices(len(y), test_fraction, TEST_SPLIT_SEED)
    return Dataset(name, title, classes, x[pool], y[pool], x[test], y[test], notice)


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 8x8 images with values 0..16 -> uint8 0..255, like the other image sets.
    x = torch.from_numpy(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return split_off_test("digits", "Digits 8x8 (scikit-learn)", DIGIT_CLASSES, x, y)


def toy_points(kind: str, n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """2-D toy sets (float32 points, int labels, class names)."""
    rng = np.random.default_rng(seed)
    if kind == "moons":
        from sklearn.datasets import make_moons
        x, y = make_moons(n, noise=noise, random_state=seed)
        names = ["upper moon", "lower moon"]
    elif kind == "circles":
        from sklearn.datasets import make_circles
        x, y = make_circles(n, noise=noise, factor=0.5, random_state=seed)
        names = ["outer ring", "inner ring"]
    elif kind == "blobs":
        from sklearn.datasets import make_blobs
        x, y = make_blobs(n, centers=4, cluster_std=0.5 + 3 * noise, random_state=seed)
        x = (x - x.mean(0)) / x.std(0)
        names = [f"blob {i}" for i in range(4)]
    elif kind == "xor":
        x = rng.uniform(-1, 1, size=(n, 2))
        y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
        x = x + rng.normal(0, noise, size=x.shape)
        names = ["same sign", "opposite sign"]
    elif kind == "spiral":
        arms = 3
        per = n // arms
        xs, ys = [], []
        for arm in range(arms):
            r = np.linspace(0.05, 1.0, per)
            theta = np.linspace(arm * 2 * np.pi / arms, arm * 2 * np.pi / arms + 1.75 * np.pi, per)
            pts = np.stack([r * np.sin(theta), r * np.cos(theta)], 1) + rng.normal(0, noise * 0.5, size=(per, 2))
            xs.append(pts)
            ys.append(np.full(per, arm))
        x, y = np.concatenate(xs), np.concatenate(ys)
        names = [f"arm {i}" for i in range(arms)]
    else:
        raise DatasetUnavailable(f"Unknown toy set {kind!r}")
    return x.astype(np.float32), np.asarray(y, dtype=np.int64), names


def _load_toy(kind: str, noise: float) -> Dataset:
    x, y, names = toy_points(kind, 1200, noise, seed=TEST_SPLIT_SEED)
    return split_off_test(kind, f"{kind.capitalize()} (2-D toy set, noise {noise:g})", names,
                           torch.from_numpy(x), torch.from_numpy(y), test_fraction=0.25)


def _load_upload(name: str) -> Dataset:
    digest = name[len(UPLOAD_PREFIX):]
    path = paths.cache_dir() / "uploads" / f"{digest}.npz"
    if not path.is_file():
        raise DatasetUnavailable(f"Uploaded dataset {digest[:12]} is not on this server any more: upload it again.")
    return dataset_from_npz(name, path)


def dataset_from_npz(name: str, path: Path) -> Dataset:
    """Load a prepared dataset saved by :func:`save_npz` (never unpickles)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("x", "y", "x_test", "y_test", "classes", "title")}
    except Exception as exc:
        raise DatasetUnavailable(f"Prepared dataset {path.name} is damaged ({exc}); upload it again.") from None
    return Dataset(name, str(arrays["title"]), [str(c) for c in arrays["classes"]],
                   torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"].astype(np.int64)),
                   torch.from_numpy(arrays["x_test"]), torch.from_numpy(arrays["y_test"].astype(np.int64)))


def save_npz(ds: Dataset, path: Path) -> None:
    """Save a dataset as plain arrays, owner-only (atomic write; the temporary file never outlives a failure)."""
    tmp = path.with_name(f"{path.stem}.{os.getpid()}-{threading.get_ident()}.tmp.npz")
    try:
        with open(tmp, "xb") as fh:
            os.chmod(tmp, 0o600)
            np.savez(fh, x=ds.x.numpy(), y=ds.y.numpy(), x_test=ds.x_test.numpy(), y_test=ds.y_test.numpy(),
                     classes=np.array(ds.classes, dtype=str), title=np.array(ds.title))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


LOADERS: dict[str, Callable[[], Dataset]] = {
    "digits": _load_digits,
    "mnist": lambda: _load_idx_dataset("mnist", "MNIST", "MNIST", DIGIT_CLASSES),
    "fashion-mnist": lambda: _load_idx_dataset("fashion-mnist", "FashionMNIST", "Fashion-MNIST", FASHION_CLASSES),
    # "fashion3" is built through the zip upload path: core.engine.catalog loads it
}

_cache: dict[tuple[str, float], Dataset] = {}
_lock = threading.Lock()


def release_device_copies() -> int:
    """Drop every loaded dataset's copies on an accelerator (after the GPU ran out of memory, so the
    memory goes back; the next run that fits makes its copy again). Returns how many were dropped."""
    with _lock:
        loaded = list(_cache.values())
    dropped = 0
    for ds in loaded:
        for key in [k for k in ds._on_device if k != "features"]:  # "features": the CPU float copy
            ds._on_device.pop(key, None)
            dropped += 1
    return dropped


def load_dataset(name: str, noise: float = 0.1) -> Dataset:
    """The named dataset, loaded once per process (toy sets once per noise level)."""
    key = (name, round(float(noise), 6) if name in TOY_DATASETS else 0.0)
    with _lock:
        if key in _cache:
            return _cache[key]
    if name in TOY_DATASETS:
        ds = _load_toy(name, noise)
    elif name.startswith(UPLOAD_PREFIX):
        ds = _load_upload(name)
    elif name in LOADERS:
        ds = LOADERS[name]()
    elif name in BUILTIN_DATASETS:
        raise DatasetUnavailable(f"The built-in dataset {name!r} is built through the upload path: load it with "
                                 f"core.engine.catalog.load_dataset.")
    else:
        raise DatasetUnavailable(f"Unknown dataset {name!r}")
    with _lock:
        return _cache.setdefault(key, ds)


def is_loaded(name: str) -> bool:
    """Whether a dataset of that name is already loaded in this process."""
    with _lock:
        return any(loaded == name for loaded, _ in _cache)


def register_dataset(ds: Dataset) -> Dataset:
    """Make an in-memory dataset (e.g. an upload) loadable by name in this process."""
    with _lock:
        _cache[(ds.name, 0.0)] = ds
    return ds


def available(name: str) -> bool:
    """True when the dataset loads here without a download."""
    if name == "fashion3":  # built from Fashion-MNIST (core/engine/uploads/fashion3.py)
        name = "fashion-mnist"
    if name in ("mnist", "fashion-mnist"):
        return _find_raw({"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]) is not None
    return True
