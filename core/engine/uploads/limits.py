"""Caps on uploads, skip reasons, the user-facing error, and text helpers for messages and class names.

Modules read the caps as ``limits.NAME`` at call time, so a test (or a server) may change them.
"""
from __future__ import annotations

import unicodedata

# --- caps --------------------------------------------------------------------------------------
MB = 1024 * 1024
MAX_UPLOAD_BYTES = 200 * MB  # the uploaded file itself (zip or CSV)
MAX_TOTAL_UNCOMPRESSED = 500 * MB  # sum of the zip members' sizes
MAX_FILE_BYTES = 20 * MB  # one zip member, uncompressed
MAX_FILES = 100_000  # zip members (folders included)
MAX_COMPRESSION_RATIO = 100  # uncompressed / compressed, per member and for the whole zip ...
RATIO_CHECK_MIN_BYTES = 1 * MB  # ... once the (member or total) uncompressed size passes this
MAX_CENTRAL_DIRECTORY_BYTES = 64 * MB  # checked before zipfile parses the directory
MAX_IMAGE_PIXELS = 2048 * 2048  # one decoded image (width x height), checked from its header before decoding
MAX_TOTAL_PIXELS = 400_000_000  # decoded pixels of all of a zip's images together (CPU time of an upload)
MAX_DATASET_BYTES = 512 * MB  # the prepared tensor (uint8 images or float32 features)
MAX_FEATURES = 128 * 128  # values per example of a CSV (a 128x128 image); zips are capped by MAX_IMAGE_SIZE
MAX_CELL_CHARS = 32  # average characters per CSV value: a longer line is refused before it is parsed
MAX_HEADER_CELL_CHARS = 1024  # one header name
MAX_CLASSES = 100
MIN_CLASSES = 2
MIN_EXAMPLES = 10  # enough for a train / validation / test split
MAX_CLASS_NAME_CHARS = 64
CSV_TEST_FRACTION = 0.0  # a Kaggle-style CSV has its own test file: train/validation only, as the seed did
ZIP_TEST_FRACTION = 0.2  # an image folder has none: a fixed test set is held out
MIN_TEST_FRACTION, MAX_TEST_FRACTION = 0.05, 0.5  # or exactly 0 (no test set)
DEFAULT_QUOTA_MB = 4096  # prepared uploads on disk (GRADIENT_LAB_UPLOADS_QUOTA_MB), least recently used evicted
MAX_ABS_LABEL = 2**31 - 1  # numeric class labels
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 4, 128
COLOR_MODES = {"L": 1, "RGB": 3}
DIGEST_CHARS = 24  # hex chars of the sha256 kept in the dataset name (config accepts 8-64)
FORMAT_VERSION = "gradient-lab-upload-v1"  # part of the digest: bump when preparation changes

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                              ".pgm", ".ppm", ".pbm", ".pnm"})
PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
ARCHIVE_EXTENSIONS = frozenset({".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst", ".lz",
                                ".lzma", ".jar", ".whl"})
SYSTEM_FILE_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
SPLIT_FOLDER_NAMES = frozenset({"train", "training", "test", "testing", "val", "valid", "validation"})
LABEL_COLUMN_NAMES = ("label", "labels", "class", "target", "y")

# Reasons used as keys of UploadResult.skipped.
SKIP_NOT_IMAGE = "not an image"
SKIP_CORRUPT = "corrupt image"
SKIP_TOO_LARGE = "image too large (possible decompression bomb)"
SKIP_UNSUPPORTED = "unsupported image type"
SKIP_NESTED_ARCHIVE = "archive inside the zip (not opened)"
SKIP_SYSTEM_FILE = "hidden or system file"
SKIP_OUTSIDE_CLASS = "image outside a class folder"
SKIP_UNREADABLE = "damaged zip entry"


class UploadError(ValueError):
    """The upload cannot be used; the message says why, in words meant for the user."""


# --- shared helpers ----------------------------------------------------------------------------
def clean_class_name(raw: str) -> str:
    """Plain-text class name: control/format characters removed, spaces collapsed, <= 64 chars."""
    text = "".join(ch for ch in unicodedata.normalize("NFC", str(raw)) if unicodedata.category(ch)[0] != "C")
    text = " ".join(text.split())[:MAX_CLASS_NAME_CHARS].strip()
    return text or "unnamed"


def _unique_class_names(raw_names: list[str]) -> list[str]:
    """Cleaned names, made distinct again where cleaning merged two of them."""
    out: list[str] = []
    for raw in raw_names:
        name, k = clean_class_name(raw), 2
        base = name
        while name in out:
            suffix = f" ({k})"
            name, k = base[:MAX_CLASS_NAME_CHARS - len(suffix)] + suffix, k + 1
        out.append(name)
    return out


def _display(text: str, limit: int = 80) -> str:
    """A path or value from the upload, made safe to quote in a message."""
    cleaned = "".join(ch if unicodedata.category(ch)[0] != "C" else "?" for ch in str(text))
    return "'" + (cleaned if len(cleaned) <= limit else cleaned[:limit] + "...") + "'"


def _size(n: float) -> str:
    return f"{n / MB:.1f} MB" if n >= MB / 10 else f"{int(n)} bytes"



def _check_class_count(n_classes: int, what: str) -> None:
    if n_classes < MIN_CLASSES:
        raise UploadError(f"The upload needs at least 2 classes; found {n_classes} ({what}).")
    if n_classes > MAX_CLASSES:
        raise UploadError(f"The upload has {n_classes} classes ({what}); the limit is {MAX_CLASSES}.")


def _check_example_count(n: int, what: str) -> None:
    if n < MIN_EXAMPLES:
        raise UploadError(f"The upload has only {n} usable {what}; at least {MIN_EXAMPLES} are needed "
                          f"for training, validation and test sets.")



def check_test_fraction(value: float) -> float:
    """0 (no test set) or a share in [0.05, 0.5] of the rows held out as the fixed test set."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            value == 0 or MIN_TEST_FRACTION <= value <= MAX_TEST_FRACTION):
        raise UploadError(f"The test fraction must be 0 (no test set) or from {MIN_TEST_FRACTION} to "
                          f"{MAX_TEST_FRACTION}, not {value!r}.")
    return float(value)


def _count(counts: dict[str, int], reason: str) -> None:
    counts[reason] = counts.get(reason, 0) + 1
