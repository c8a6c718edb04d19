"""Image-folder zips (``class/xxx.png``): checked from the zip directory, read in memory, decoded by Pillow."""
from __future__ import annotations

import io
import re
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from core.engine.uploads import limits
from core.engine.uploads.limits import (ARCHIVE_EXTENSIONS, COLOR_MODES, IMAGE_EXTENSIONS, PIL_FORMATS, SKIP_CORRUPT, SKIP_NESTED_ARCHIVE,
                     SKIP_NOT_IMAGE, SKIP_OUTSIDE_CLASS, SKIP_SYSTEM_FILE, SKIP_TOO_LARGE, SKIP_UNREADABLE,
                     SKIP_UNSUPPORTED, SPLIT_FOLDER_NAMES, SYSTEM_FILE_NAMES, UploadError, _check_class_count,
                     _check_example_count, _count, _display, _size, _unique_class_names)
from core.engine.uploads.prepared import UploadResult, _as_bytes, _digest, _finish, _from_cache, _lock_for


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
            limits.MIN_IMAGE_SIZE <= image_size <= limits.MAX_IMAGE_SIZE):
        raise UploadError(f"Image size must be a whole number from {limits.MIN_IMAGE_SIZE} to {limits.MAX_IMAGE_SIZE}, "
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
        if n_max * channels * image_size * image_size > limits.MAX_DATASET_BYTES:
            raise UploadError(f"{n_max} images at {image_size}x{image_size} would take more than "
                              f"{_size(limits.MAX_DATASET_BYTES)} of memory: choose a smaller image size.")
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
    if entries > limits.MAX_FILES:
        raise UploadError(f"The zip lists {entries} files; the limit is {limits.MAX_FILES}.")
    if cd_size > limits.MAX_CENTRAL_DIRECTORY_BYTES:
        raise UploadError(f"The zip's file list alone is {_size(cd_size)}; the limit is "
                          f"{_size(limits.MAX_CENTRAL_DIRECTORY_BYTES)}.")


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
    if len(infos) > limits.MAX_FILES:
        raise UploadError(f"The zip holds {len(infos)} files; the limit is {limits.MAX_FILES}.")
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
        if info.file_size > limits.MAX_FILE_BYTES:
            raise UploadError(f"Rejected: the zip entry {shown} unpacks to {_size(info.file_size)}; the limit per "
                              f"file is {_size(limits.MAX_FILE_BYTES)}.")
        if info.file_size > limits.RATIO_CHECK_MIN_BYTES and info.file_size > limits.MAX_COMPRESSION_RATIO * max(
                info.compress_size, 1):
            raise UploadError(f"Rejected as a possible zip bomb: the entry {shown} is compressed more than "
                              f"{limits.MAX_COMPRESSION_RATIO}:1 ({_size(info.compress_size)} -> {_size(info.file_size)}).")
        total += info.file_size
    if total > limits.MAX_TOTAL_UNCOMPRESSED:
        raise UploadError(f"Rejected: the zip unpacks to {_size(total)}; the limit is {_size(limits.MAX_TOTAL_UNCOMPRESSED)}.")
    if total > limits.RATIO_CHECK_MIN_BYTES and total > limits.MAX_COMPRESSION_RATIO * upload_bytes:
        raise UploadError(f"Rejected as a possible zip bomb: {_size(upload_bytes)} unpacks to {_size(total)} "
                          f"(more than {limits.MAX_COMPRESSION_RATIO}:1).")

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


def _decode_members(archive: zipfile.ZipFile, plan: _ZipPlan, image_size: int,
                    color: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, int], list[str]]:
    """Read and decode the planned images (bounded reads); returns x, y, skipped counts and notes."""
    channels = COLOR_MODES[color]
    x = np.empty((len(plan.members), channels, image_size, image_size), dtype=np.uint8)
    y = np.empty(len(plan.members), dtype=np.int64)
    skipped = dict(plan.skipped)
    budget = limits.MAX_TOTAL_UNCOMPRESSED
    pixels_left = limits.MAX_TOTAL_PIXELS
    n, resized, modes = 0, 0, set()
    for info, label in plan.members:
        limit = min(limits.MAX_FILE_BYTES, budget)
        try:
            with archive.open(info) as fh:
                blob = fh.read(limit + 1)
        except Exception:  # bad CRC, unsupported compression, truncated data...
            _count(skipped, SKIP_UNREADABLE)
            continue
        if len(blob) > limit:
            raise UploadError(f"Rejected as a possible zip bomb: the entry {_display(info.filename)} unpacks to "
                              f"more than its directory says (or past the {_size(limits.MAX_TOTAL_UNCOMPRESSED)} total "
                              f"limit).")
        budget -= len(blob)
        image, outcome = _decode_image(blob, image_size, color, pixels_left)
        if outcome == OVER_TOTAL_PIXELS:
            raise UploadError(f"The images hold more than {limits.MAX_TOTAL_PIXELS:,} pixels in all, the cap on "
                              f"one upload (MAX_TOTAL_PIXELS): use fewer or smaller images (for example resized "
                              f"to 256 px).")
        if image is None:
            _count(skipped, outcome)
            continue
        mode, original_size, decoded = outcome
        pixels_left -= decoded
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


OVER_TOTAL_PIXELS = "over the upload's total pixel cap"


def _decode_image(blob: bytes, image_size: int, color: str, pixels_left: int | None = None):
    """(array [C,H,W], (mode, size, decoded pixels)) or (None, skip reason). Never raises for bad image data.

    Sizes come from the header: an image over MAX_IMAGE_PIXELS, or over ``pixels_left`` (then the
    reason is :data:`OVER_TOTAL_PIXELS`), is never decoded."""
    pixels_left = limits.MAX_TOTAL_PIXELS if pixels_left is None else pixels_left
    formats = _pil_formats()
    try:
        # Our pixel cap is far below Pillow's own bomb limits and is checked from the header, before
        # decoding. Pillow's global warning filters are left alone (changing them is not thread-safe).
        with Image.open(io.BytesIO(blob), formats=formats) as probe:
            width, height = probe.size
            if width * height > limits.MAX_IMAGE_PIXELS:
                return None, SKIP_TOO_LARGE
            if width < 1 or height < 1:
                return None, SKIP_CORRUPT
            probe.verify()
        with Image.open(io.BytesIO(blob), formats=formats) as im:
            mode, size = im.mode, im.size
            if im.format == "JPEG":  # decode at a reduced scale: much faster for big photos
                im.draft(color, (image_size, image_size))
            decoded = im.size[0] * im.size[1]
            if decoded > pixels_left:
                return None, OVER_TOTAL_PIXELS
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
    return array, (mode, size, decoded)


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

