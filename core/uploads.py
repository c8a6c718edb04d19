"""Safe ingestion of user uploads: an image-folder zip or a Kaggle-style CSV -> a registered Dataset.

Every upload is treated as hostile until proven otherwise:

- Zips are read in memory with :mod:`zipfile`; nothing is ever extracted to disk and symlink
  members are refused. Paths that could escape a folder (``..``, absolute, drive letters,
  backslashes) reject the whole upload, naming the path. Size caps (upload, per file, total,
  compression ratio, file count) are checked from the zip directory before any member is
  read, and enforced again while reading (each read is bounded; sizes in the directory are
  not trusted).
- Images are decoded by Pillow, restricted to common formats, with a pixel cap checked from
  the header before decoding; unreadable, corrupt or oversized images are skipped and counted.
- The only thing written is the prepared dataset, ``<cache>/uploads/<digest>.npz`` (via
  :func:`core.data.save_npz`), where ``digest`` hashes the bytes and the options. The dataset
  is named ``upload:<digest>`` and reloads with :func:`core.data.load_dataset` after a restart;
  the same bytes uploaded again are loaded from that file instead of being decoded again.

Problems with the upload as a whole raise :class:`UploadError`, whose message is meant for
the user. Class names come from folder names or labels: control characters are removed and
they are capped at 64 characters, but they stay untrusted text for the UI to show escaped.

The ``fashion3`` built-in (the stand-in for LESSONS B's own image folder) is built here:
three Fashion-MNIST classes written as PNGs into an image-folder zip and read back through
:func:`prepare_zip`, exactly the way a user's upload is.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import re
import stat
import struct
import threading
import unicodedata
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from . import data, paths
from .config import UPLOAD_PREFIX

# --- caps --------------------------------------------------------------------------------------
MB = 1024 * 1024
MAX_UPLOAD_BYTES = 200 * MB  # the uploaded file itself (zip or CSV)
MAX_TOTAL_UNCOMPRESSED = 500 * MB  # sum of the zip members' sizes
MAX_FILE_BYTES = 20 * MB  # one zip member, uncompressed
MAX_FILES = 100_000  # zip members (folders included)
MAX_COMPRESSION_RATIO = 100  # uncompressed / compressed, per member and for the whole zip ...
RATIO_CHECK_MIN_BYTES = 1 * MB  # ... once the (member or total) uncompressed size passes this
MAX_CENTRAL_DIRECTORY_BYTES = 64 * MB  # checked before zipfile parses the directory
MAX_IMAGE_PIXELS = 4096 * 4096  # one decoded image (width x height), checked from its header
MAX_DATASET_BYTES = 1024 * MB  # the prepared uint8 tensor
MAX_CLASSES = 100
MIN_CLASSES = 2
MIN_EXAMPLES = 10  # enough for a train / validation / test split
MAX_CLASS_NAME_CHARS = 64
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


@dataclass
class UploadResult:
    """A prepared upload: its dataset name (``upload:<digest>``), the dataset and what happened."""

    name: str
    dataset: data.Dataset
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> how many files
    notes: list[str] = field(default_factory=list)
    from_cache: bool = False


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


def _as_bytes(payload: bytes, kind: str) -> bytes:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected the uploaded file's bytes, got {type(payload).__name__}")
    size = payload.nbytes if isinstance(payload, memoryview) else len(payload)
    if size > MAX_UPLOAD_BYTES:
        raise UploadError(f"The {kind} is {_size(size)}; the limit is {_size(MAX_UPLOAD_BYTES)}.")
    blob = bytes(payload)
    if len(blob) < 4096 and not blob.strip():
        raise UploadError(f"The {kind} is empty.")
    return blob


def _digest(blob: bytes, *options: object) -> str:
    h = hashlib.sha256(repr((FORMAT_VERSION,) + options).encode())
    h.update(b"\0")
    h.update(blob)
    return h.hexdigest()[:DIGEST_CHARS]


def _npz_path(digest: str) -> Path:
    return paths.cache_dir() / "uploads" / f"{digest}.npz"  # not created until something is saved


_digest_locks: dict[str, threading.Lock] = {}
_digest_locks_guard = threading.Lock()


def _lock_for(digest: str) -> threading.Lock:
    with _digest_locks_guard:
        return _digest_locks.setdefault(digest, threading.Lock())


def _from_cache(digest: str) -> UploadResult | None:
    """The upload prepared earlier (this process or an earlier one), when its npz exists."""
    if not _npz_path(digest).is_file():
        return None
    name = UPLOAD_PREFIX + digest
    try:
        ds = data.load_dataset(name)
    except data.DatasetUnavailable:  # damaged file: prepare it again
        return None
    return UploadResult(name, ds, {}, ["This file was uploaded before: reused its prepared copy."], from_cache=True)


def _finish(digest: str, title: str, classes: list[str], x: torch.Tensor, y: torch.Tensor,
            skipped: dict[str, int], notes: list[str]) -> UploadResult:
    """Split off the fixed test set, save the npz, register the dataset."""
    name = UPLOAD_PREFIX + digest
    ds = data._split_off_test(name, title, classes, x, y)
    data.save_npz(ds, paths.private_dir("uploads") / f"{digest}.npz")
    data.register_dataset(ds)
    return UploadResult(name, ds, dict(skipped), notes, from_cache=False)


def _check_class_count(n_classes: int, what: str) -> None:
    if n_classes < MIN_CLASSES:
        raise UploadError(f"The upload needs at least 2 classes; found {n_classes} ({what}).")
    if n_classes > MAX_CLASSES:
        raise UploadError(f"The upload has {n_classes} classes ({what}); the limit is {MAX_CLASSES}.")


def _check_example_count(n: int, what: str) -> None:
    if n < MIN_EXAMPLES:
        raise UploadError(f"The upload has only {n} usable {what}; at least {MIN_EXAMPLES} are needed "
                          f"for training, validation and test sets.")


# --- zip ---------------------------------------------------------------------------------------
def prepare_zip(payload: bytes, *, image_size: int = 28, color: str = "L") -> UploadResult:
    """Prepare an image-folder zip (``class/xxx.png``, optionally under one top folder).

    Images become ``image_size`` x ``image_size`` (stretched, aspect ratio not kept), grayscale
    (``color="L"``, 1 channel) or RGB (``"RGB"``, 3 channels); transparent pixels are laid over
    white. Class names are the sorted folder names. Raises :class:`UploadError`.
    """
    if color not in COLOR_MODES:
        raise UploadError(f"Colour must be 'L' (grayscale) or 'RGB', not {_display(color)}.")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not (
            MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE):
        raise UploadError(f"Image size must be a whole number from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, "
                          f"not {image_size!r}.")
    blob = _as_bytes(payload, "zip file")
    digest = _digest(blob, "zip", image_size, color)
    with _lock_for(digest):
        cached = _from_cache(digest)
        if cached is not None:
            return cached
        archive = _open_zip(blob)
        plan = _plan_zip(archive, len(blob))
        channels = COLOR_MODES[color]
        n_max = len(plan.members)
        if n_max * channels * image_size * image_size > MAX_DATASET_BYTES:
            raise UploadError(f"{n_max} images at {image_size}x{image_size} would take more than "
                              f"{_size(MAX_DATASET_BYTES)} of memory: choose a smaller image size.")
        x, y, skipped, notes = _decode_members(archive, plan, image_size, color)
        present = sorted(set(y.tolist()))
        if len(present) < len(plan.class_names):  # a class lost all its images: renumber
            lost = [plan.class_names[k] for k in range(len(plan.class_names)) if k not in present]
            notes.append(f"No readable images in {len(lost)} class folder(s): {', '.join(lost[:5])}.")
            remap = torch.full((len(plan.class_names),), -1, dtype=torch.int64)
            remap[present] = torch.arange(len(present))
            y = remap[y]
        classes = [plan.class_names[k] for k in present]
        _check_class_count(len(classes), "class folders with readable images")
        _check_example_count(len(y), "images")
        title = (f"Uploaded images: {len(classes)} classes, {len(y)} images, {image_size}x{image_size} "
                 f"{'grayscale' if color == 'L' else 'RGB'}")
        return _finish(digest, title, classes, x, y, skipped, plan.notes + notes)


def _open_zip(blob: bytes) -> zipfile.ZipFile:
    if not blob.startswith(b"PK"):
        hint = " (it looks like text, e.g. a CSV: use the CSV upload)" if _looks_like_text(blob) else ""
        raise UploadError(f"This is not a zip file{hint}.")
    _check_central_directory(blob)
    try:
        return zipfile.ZipFile(io.BytesIO(blob))
    except Exception:  # zipfile raises several types for damaged archives; none is the user's concern
        raise UploadError("This zip file is damaged or not a zip file; create it again.") from None


def _looks_like_text(blob: bytes) -> bool:
    head = blob[:4096]
    return b"\0" not in head and sum(32 <= c < 127 or c in (9, 10, 13) for c in head) > 0.95 * len(head)


def _check_central_directory(blob: bytes) -> None:
    """Refuse directories too big to parse, from the end-of-directory record (before zipfile reads it)."""
    tail_start = max(0, len(blob) - (22 + 65535))
    pos = blob.rfind(b"PK\x05\x06", tail_start)
    if pos < 0 or pos + 22 > len(blob):
        return  # let zipfile report the damage
    entries, cd_size = struct.unpack_from("<H", blob, pos + 10)[0], struct.unpack_from("<I", blob, pos + 12)[0]
    locator = pos - 20
    if (entries == 0xFFFF or cd_size == 0xFFFFFFFF) and locator >= 0 and blob[locator:locator + 4] == b"PK\x06\x07":
        offset = struct.unpack_from("<Q", blob, locator + 8)[0]
        if offset + 56 <= len(blob) and blob[offset:offset + 4] == b"PK\x06\x06":
            entries, cd_size = struct.unpack_from("<QQ", blob, offset + 32)
    if entries > MAX_FILES:
        raise UploadError(f"The zip lists {entries} files; the limit is {MAX_FILES}.")
    if cd_size > MAX_CENTRAL_DIRECTORY_BYTES:
        raise UploadError(f"The zip's file list alone is {_size(cd_size)}; the limit is "
                          f"{_size(MAX_CENTRAL_DIRECTORY_BYTES)}.")


_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")


def _unsafe_path_reason(name: str) -> str | None:
    if "\\" in name:
        return "uses backslashes (a Windows path)"
    if name.startswith("/"):
        return "is an absolute path"
    if _DRIVE_LETTER.match(name):
        return "starts with a drive letter"
    if ".." in name.split("/"):
        return "climbs out of its folder with '..'"
    return None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


@dataclass
class _ZipPlan:
    """What to decode: image members with their class index, and what was skipped before reading."""

    members: list[tuple[zipfile.ZipInfo, int]]
    class_names: list[str]
    skipped: dict[str, int]
    notes: list[str]


def _plan_zip(archive: zipfile.ZipFile, upload_bytes: int) -> _ZipPlan:
    """Check the whole zip directory (paths, links, sizes) and pick the images, reading nothing."""
    infos = archive.infolist()
    if len(infos) > MAX_FILES:
        raise UploadError(f"The zip holds {len(infos)} files; the limit is {MAX_FILES}.")
    total = 0
    for info in infos:
        shown = _display(info.filename)
        reason = _unsafe_path_reason(info.filename)
        if reason:
            raise UploadError(f"Rejected: the zip entry {shown} {reason}. Paths must stay inside the zip's "
                              f"folders; nothing was extracted.")
        if _is_symlink(info):
            raise UploadError(f"Rejected: the zip entry {shown} is a symbolic link. Zips with links are not "
                              f"accepted; nothing was extracted.")
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise UploadError(f"The zip entry {shown} is password-protected; upload an unencrypted zip.")
        if info.file_size > MAX_FILE_BYTES:
            raise UploadError(f"Rejected: the zip entry {shown} unpacks to {_size(info.file_size)}; the limit per "
                              f"file is {_size(MAX_FILE_BYTES)}.")
        if info.file_size > RATIO_CHECK_MIN_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(
                info.compress_size, 1):
            raise UploadError(f"Rejected as a possible zip bomb: the entry {shown} is compressed more than "
                              f"{MAX_COMPRESSION_RATIO}:1 ({_size(info.compress_size)} -> {_size(info.file_size)}).")
        total += info.file_size
    if total > MAX_TOTAL_UNCOMPRESSED:
        raise UploadError(f"Rejected: the zip unpacks to {_size(total)}; the limit is {_size(MAX_TOTAL_UNCOMPRESSED)}.")
    if total > RATIO_CHECK_MIN_BYTES and total > MAX_COMPRESSION_RATIO * upload_bytes:
        raise UploadError(f"Rejected as a possible zip bomb: {_size(upload_bytes)} unpacks to {_size(total)} "
                          f"(more than {MAX_COMPRESSION_RATIO}:1).")

    skipped: dict[str, int] = {}
    candidates: list[tuple[zipfile.ZipInfo, list[str]]] = []
    for info in infos:
        if info.is_dir():
            continue
        parts = [p for p in info.filename.split("/") if p not in ("", ".")]
        leaf = parts[-1] if parts else ""
        suffix = Path(leaf).suffix.lower()
        if any(p.startswith(".") or p in SYSTEM_FILE_NAMES for p in parts):
            _count(skipped, SKIP_SYSTEM_FILE)
        elif suffix in ARCHIVE_EXTENSIONS:
            _count(skipped, SKIP_NESTED_ARCHIVE)
        elif suffix not in IMAGE_EXTENSIONS:
            _count(skipped, SKIP_NOT_IMAGE)
        else:
            candidates.append((info, parts))

    notes: list[str] = []
    while candidates and all(len(p) >= 3 for _, p in candidates) and len({p[0] for _, p in candidates}) == 1:
        notes.append(f"Used the class folders inside the top folder {_display(candidates[0][1][0])}.")
        candidates = [(info, p[1:]) for info, p in candidates]
    outside = [info for info, p in candidates if len(p) < 2]
    if outside:
        skipped[SKIP_OUTSIDE_CLASS] = len(outside)
    candidates = [(info, p) for info, p in candidates if len(p) >= 2]
    if not candidates:
        found = ", ".join(f"{n} file(s): {reason}" for reason, n in skipped.items())
        if not infos or all(i.is_dir() for i in infos):
            raise UploadError("The zip is empty.")
        raise UploadError("No images in class folders were found in the zip"
                          + (f" ({found})" if found else "")
                          + ". Expected one folder per class holding PNG/JPEG/BMP/GIF/WEBP/TIFF images.")
    folders = sorted({p[0] for _, p in candidates})
    if set(folders) <= SPLIT_FOLDER_NAMES and all(len(p) >= 3 for _, p in candidates):
        raise UploadError(f"The zip's top folders are {', '.join(folders)}: they look like train/test splits, not "
                          f"classes. Zip one folder per class (e.g. only the train folder's contents).")
    _check_class_count(len(folders), "one per folder: " + ", ".join(_display(f, 30) for f in folders[:5]))
    index = {folder: k for k, folder in enumerate(folders)}
    members = sorted(((info, index[p[0]]) for info, p in candidates), key=lambda m: (m[1], m[0].filename))
    if skipped.get(SKIP_NESTED_ARCHIVE):
        notes.append(f"Skipped {skipped[SKIP_NESTED_ARCHIVE]} archive(s) inside the zip: nested archives are "
                     f"not opened.")
    return _ZipPlan(members, _unique_class_names(folders), skipped, notes)


def _count(counts: dict[str, int], reason: str) -> None:
    counts[reason] = counts.get(reason, 0) + 1


def _decode_members(archive: zipfile.ZipFile, plan: _ZipPlan, image_size: int,
                    color: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, int], list[str]]:
    """Read and decode the planned images (bounded reads); returns x, y, skipped counts and notes."""
    channels = COLOR_MODES[color]
    x = np.empty((len(plan.members), channels, image_size, image_size), dtype=np.uint8)
    y = np.empty(len(plan.members), dtype=np.int64)
    skipped = dict(plan.skipped)
    budget = MAX_TOTAL_UNCOMPRESSED
    n, resized, modes = 0, 0, set()
    for info, label in plan.members:
        limit = min(MAX_FILE_BYTES, budget)
        try:
            with archive.open(info) as fh:
                blob = fh.read(limit + 1)
        except Exception:  # bad CRC, unsupported compression, truncated data...
            _count(skipped, SKIP_UNREADABLE)
            continue
        if len(blob) > limit:
            raise UploadError(f"Rejected as a possible zip bomb: the entry {_display(info.filename)} unpacks to "
                              f"more than its directory says (or past the {_size(MAX_TOTAL_UNCOMPRESSED)} total "
                              f"limit).")
        budget -= len(blob)
        image, outcome = _decode_image(blob, image_size, color)
        if image is None:
            _count(skipped, outcome)
            continue
        mode, original_size = outcome
        modes.add(mode)
        resized += original_size != (image_size, image_size)
        x[n], y[n] = image, label
        n += 1
    notes = []
    if resized:
        notes.append(f"Resized {resized} image(s) to {image_size}x{image_size} (aspect ratio not kept).")
    target = "L" if color == "L" else "RGB"
    if modes - {target}:
        notes.append(f"Converted images from mode(s) {', '.join(sorted(modes - {target}))} to "
                     f"{'grayscale' if color == 'L' else 'RGB'}.")
    bad = {k: v for k, v in skipped.items() if k != SKIP_SYSTEM_FILE}
    if bad:
        notes.append("Skipped " + ", ".join(f"{v} file(s): {k}" for k, v in bad.items()) + ".")
    if n < len(y):
        x, y = x[:n].copy(), y[:n].copy()
    return torch.from_numpy(x), torch.from_numpy(y), skipped, notes


def _pil_formats() -> list[str]:
    Image.init()
    return [f for f in PIL_FORMATS if f in Image.OPEN]


def _decode_image(blob: bytes, image_size: int, color: str):
    """(array [C,H,W], (mode, size)) or (None, skip reason). Never raises for bad image data."""
    formats = _pil_formats()
    try:
        # Our pixel cap is far below Pillow's own bomb limits and is checked from the header, before
        # decoding. Pillow's global warning filters are left alone (changing them is not thread-safe).
        with Image.open(io.BytesIO(blob), formats=formats) as probe:
            width, height = probe.size
            if width * height > MAX_IMAGE_PIXELS:
                return None, SKIP_TOO_LARGE
            if width < 1 or height < 1:
                return None, SKIP_CORRUPT
            probe.verify()
        with Image.open(io.BytesIO(blob), formats=formats) as im:
            mode, size = im.mode, im.size
            if im.format == "JPEG":  # decode at a reduced scale: much faster for big photos
                im.draft(color, (image_size, image_size))
            im.load()
            try:
                array = _convert(im, image_size, color)
            except Exception:
                return None, SKIP_UNSUPPORTED
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, SKIP_TOO_LARGE
    except UnidentifiedImageError:
        return None, SKIP_NOT_IMAGE
    except Exception:  # Pillow raises many types (OSError, SyntaxError, ValueError, EOFError...) on bad data
        return None, SKIP_CORRUPT
    return array, (mode, size)


def _convert(im: Image.Image, image_size: int, color: str) -> np.ndarray:
    """Any Pillow image -> uint8 [C, size, size] in the target colour mode."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):  # 16/32-bit or float grayscale
        values = np.asarray(im, dtype=np.float64)
        peak = float(values.max()) if values.size else 0.0
        scale = 255.0 if peak <= 1.0 and im.mode == "F" else (255.0 / 65535.0 if peak > 255 else 1.0)
        im = Image.fromarray(np.clip(values * scale, 0, 255).round().astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    im = im.convert(color)
    if im.size != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    array = np.asarray(im, dtype=np.uint8)
    return array[None] if color == "L" else array.transpose(2, 0, 1)


# --- CSV ---------------------------------------------------------------------------------------
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
MAX_ABS_LABEL = 2**31 - 1


def _is_whole_label(value: float) -> bool:
    return math.isfinite(value) and value % 1 == 0 and abs(value) <= MAX_ABS_LABEL


def prepare_csv(payload: bytes, *, label_column: str | int | None = None) -> UploadResult:
    """Prepare a Kaggle-style CSV: a header row, a label column and pixel columns (0-255).

    ``label_column``: the label's column name, or its position (0 = first column); by default
    a column named label/labels/class/target/y. Labels are whole numbers or class names.
    When the pixel count is a perfect square the rows are square grayscale images, otherwise
    float32 features scaled by 1/255. A CSV without a header row (first row all numbers) is
    accepted only when ``label_column`` is a position, since nothing else says where the label
    is. Raises :class:`UploadError` naming the line and column of the first problem.
    """
    if isinstance(label_column, bool) or not (label_column is None or isinstance(label_column, (str, int))):
        raise UploadError(f"The label column must be a column name or position, not {label_column!r}.")
    blob = _as_bytes(payload, "CSV file")
    digest = _digest(blob, "csv", label_column)
    with _lock_for(digest):
        cached = _from_cache(digest)
        if cached is not None:
            return cached
        table = _CsvTable.parse(blob, label_column)
        return table.to_result(digest)


@dataclass
class _CsvTable:
    text: str
    has_header: bool
    columns: list[str]  # names shown in messages
    label_index: int

    @classmethod
    def parse(cls, blob: bytes, label_column: str | int | None) -> "_CsvTable":
        if blob.startswith(b"PK\x03\x04"):
            raise UploadError("This looks like a zip file, not a CSV: use the zip upload.")
        if b"\0" in blob[:65536]:
            raise UploadError("This is not a text CSV file (it contains binary data).")
        try:
            text = blob.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = blob.decode("latin-1")
        text = text.lstrip()
        first = next((row for row in csv.reader(io.StringIO(text[:1_000_000])) if row), None)
        if first is None:
            raise UploadError("The CSV is empty.")
        if len(first) < 2:
            raise UploadError("The CSV has a single column; it needs a label column and pixel columns, separated "
                              "by commas.")
        has_header = not all(_NUMBER.match(cell.strip()) for cell in first)
        if has_header:
            columns = [cell.strip() for cell in first]
        else:
            columns = [f"column {j + 1}" for j in range(len(first))]
        label_index = cls._find_label(columns, has_header, label_column)
        return cls(text, has_header, columns, label_index)

    @staticmethod
    def _find_label(columns: list[str], has_header: bool, label_column: str | int | None) -> int:
        if isinstance(label_column, int):
            if not 0 <= label_column < len(columns):
                raise UploadError(f"Label column position {label_column} does not exist: the CSV has "
                                  f"{len(columns)} columns (0 = the first).")
            return label_column
        if not has_header:
            raise UploadError("The first row of this CSV is all numbers, so it has no header row. Add a header "
                              "naming the columns, with the class in a column called 'label' (for example "
                              "label,pixel0,pixel1,...), or give the label column's position (0 = first column).")
        wanted = [label_column] if label_column is not None else list(LABEL_COLUMN_NAMES)
        for name in wanted:
            for j, column in enumerate(columns):
                if column == name:
                    return j
            for j, column in enumerate(columns):
                if column.lower() == name.lower():
                    return j
        shown = ", ".join(_display(c, 20) for c in columns[:6]) + (", ..." if len(columns) > 6 else "")
        if label_column is not None:
            raise UploadError(f"The CSV has no column {_display(label_column)}; its columns are {shown}.")
        raise UploadError(f"The CSV has no label column: name it 'label' (or choose the label column). "
                          f"Its columns are {shown}.")

    def to_result(self, digest: str) -> UploadResult:
        import pandas as pd

        n_cols = len(self.columns)
        dtypes = {j: np.float32 for j in range(n_cols)}
        dtypes[self.label_index] = str
        try:
            frame = pd.read_csv(io.StringIO(self.text), header=None, skiprows=1 if self.has_header else 0,
                                names=list(range(n_cols)), dtype=dtypes, keep_default_na=False, na_values=[""],
                                skip_blank_lines=True, engine="c")
        except (ValueError, OverflowError):  # ParserError and EmptyDataError are ValueErrors
            raise self._diagnose(numeric_labels=False) from None
        if not frame.index.equals(pd.RangeIndex(len(frame))):  # rows longer than the header became an index
            raise self._diagnose(numeric_labels=False)
        if len(frame) == 0:
            raise UploadError("The CSV has a header row but no data rows.")
        raw_labels = frame[self.label_index]
        features = frame.drop(columns=[self.label_index]).to_numpy(dtype=np.float32)
        if raw_labels.isna().any() or not np.isfinite(features).all():
            raise self._diagnose(numeric_labels=False)
        labels = [str(v).strip() for v in raw_labels.to_numpy(dtype=object)]
        numeric = pd.to_numeric(pd.Series(labels), errors="coerce")
        numeric_labels = bool(numeric.notna().all())
        if (numeric_labels and not all(_is_whole_label(v) for v in numeric.to_numpy())) or not all(labels):
            raise self._diagnose(numeric_labels=numeric_labels)
        if features.min() < 0 or features.max() > 255:
            raise self._diagnose(numeric_labels=numeric_labels)
        _check_example_count(len(labels), "rows")

        notes: list[str] = []
        if numeric_labels:
            values = numeric.to_numpy().astype(np.int64)
            classes_raw, y = np.unique(values, return_inverse=True)
            class_names = _unique_class_names([str(v) for v in classes_raw])
        else:
            classes_raw, y = np.unique(np.array(labels, dtype=object), return_inverse=True)
            class_names = _unique_class_names([str(v) for v in classes_raw])
        _check_class_count(len(class_names), f"distinct values in column {_display(self.columns[self.label_index])}")
        y = torch.from_numpy(np.asarray(y, dtype=np.int64).reshape(-1))

        if not np.all(np.mod(features, 1) == 0):
            if features.max() <= 1.0:
                features = features * 255.0
                notes.append("Pixel values were fractions from 0 to 1: scaled them to 0-255.")
            else:
                notes.append("Rounded non-integer pixel values to whole numbers.")
        n_features = features.shape[1]
        side = math.isqrt(n_features)
        if side >= 2 and side * side == n_features:
            x = torch.from_numpy(np.rint(features).astype(np.uint8).reshape(-1, 1, side, side))
            title = f"Uploaded CSV: {len(class_names)} classes, {len(y)} rows, {side}x{side} images"
        else:
            x = torch.from_numpy((features / 255.0).astype(np.float32))
            title = f"Uploaded CSV: {len(class_names)} classes, {len(y)} rows, {n_features} features"
            notes.append(f"{n_features} pixel columns is not a square image: using them as flat features "
                         f"(scaled by 1/255).")
        if not self.has_header:
            notes.append("The CSV has no header row: column positions were used.")
        return _finish(digest, title, class_names, x, y, {}, notes)

    def _diagnose(self, numeric_labels: bool) -> UploadError:
        """Walk the rows with the csv module and describe the first problem with its line and column."""
        reader = csv.reader(io.StringIO(self.text))
        header_seen = not self.has_header
        label_name = _display(self.columns[self.label_index], 30)
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if not header_seen:
                header_seen = True
                continue
            line = reader.line_num
            if len(row) != len(self.columns):
                first_what = "the header has" if self.has_header else "the first row has"
                return UploadError(f"Line {line} has {len(row)} values, but {first_what} {len(self.columns)} "
                                   f"columns: every row needs the same number of values.")
            label = row[self.label_index].strip()
            if not label:
                return UploadError(f"Line {line} has no label (column {label_name} is empty).")
            if numeric_labels:
                if not _NUMBER.match(label) or not _is_whole_label(float(label)):
                    return UploadError(f"Line {line}: the label {_display(label, 20)} in column {label_name} is "
                                       f"not a whole number. Labels must be whole numbers (0, 1, 2...) or class "
                                       f"names.")
            cells = row[:self.label_index] + row[self.label_index + 1:]
            try:  # one vectorised check per row; the cell-by-cell walk only for a row that fails it
                values = np.array(cells, dtype=np.float64)
                if ((values >= 0) & (values <= 255)).all():
                    continue
            except ValueError:
                pass
            for j, cell in enumerate(row):
                if j == self.label_index:
                    continue
                value = cell.strip()
                where = f"Line {line}, column {_display(self.columns[j], 30)}"
                if not value:
                    return UploadError(f"{where} is empty: every pixel needs a value from 0 to 255.")
                if not _NUMBER.match(value):
                    return UploadError(f"{where}: {_display(value, 20)} is not a number.")
                if not 0 <= float(value) <= 255:
                    return UploadError(f"{where}: {_display(value, 20)} is outside 0-255 (pixel values must be "
                                       f"from 0 to 255).")
        return UploadError("The CSV could not be read: check that it is comma-separated with one row per line "
                           "and no quoted values spanning lines.")


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
