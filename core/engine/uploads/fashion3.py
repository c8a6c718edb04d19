"""The ``fashion3`` built-in (LESSONS B's own image folder): Fashion-MNIST classes through the zip path."""
from __future__ import annotations

import io
import zipfile

import numpy as np
from PIL import Image

from core.engine import data
from core.engine.uploads.zipfolder import prepare_zip


# --- fashion3: the LESSONS B stand-in ----------------------------------------------------------
FASHION3_FOLDERS = {"tshirt": 0, "trouser": 1, "sneaker": 7}  # folder name -> Fashion-MNIST label
FASHION3_PER_CLASS = 300
FASHION3_TITLE = "Fashion3 (3 Fashion-MNIST classes as an image folder)"


def build_fashion3_zip(n_per_class: int = FASHION3_PER_CLASS, seed: int = 0) -> bytes:
    """An image-folder zip (``fashion3/<class>/<index>.png``) of 3 Fashion-MNIST training classes."""
    source = data.load_dataset("fashion-mnist")
    labels = source.y.numpy()
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for folder, label in FASHION3_FOLDERS.items():
            pool = np.flatnonzero(labels == label)
            chosen = np.sort(rng.choice(pool, size=min(n_per_class, len(pool)), replace=False))
            for i in chosen:
                png = io.BytesIO()
                Image.fromarray(source.x[i, 0].numpy(), "L").save(png, format="PNG")
                # fixed timestamp: the same images give the same bytes, so the prepared copy is reused
                archive.writestr(zipfile.ZipInfo(f"fashion3/{folder}/{i:05d}.png", date_time=(1980, 1, 1, 0, 0, 0)),
                                 png.getvalue())
    return buffer.getvalue()


def load_fashion3() -> data.Dataset:
    """The ``fashion3`` built-in: :func:`build_fashion3_zip` read through :func:`prepare_zip`."""
    try:
        prepared = prepare_zip(build_fashion3_zip()).dataset
    except data.DatasetUnavailable as exc:
        raise data.DatasetUnavailable(f"fashion3 is built from Fashion-MNIST, which is unavailable: {exc}") from None
    ds = data.Dataset("fashion3", FASHION3_TITLE, list(prepared.classes), prepared.x, prepared.y,
                      prepared.x_test, prepared.y_test,
                      notice="Stand-in for the lesson's own image folder: T-shirts, trousers and sneakers from "
                             "Fashion-MNIST, zipped one folder per class and loaded the ImageFolder way.")
    return data.register_dataset(ds)

