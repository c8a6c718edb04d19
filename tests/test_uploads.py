"""Uploads: hostile zips and CSVs are refused cleanly and write nothing; good ones train.

Every hostile input is built here, in memory. The ``sandbox`` fixture points the cache at a
temp folder, moves the working directory into it, plants a canary folder beside it, and
checks after each case that nothing changed outside ``<cache>/uploads/*.npz``.
"""
from __future__ import annotations

import io
import math
import os
import stat
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from core.engine import catalog
from core.engine import data
from core.engine import uploads
from core.engine.config import RunConfig
from core.engine.train import train
from core.engine.uploads import UploadError, prepare_csv, prepare_zip

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


# --- builders ----------------------------------------------------------------------------------
def image_bytes(size=(28, 28), mode="L", fmt="PNG", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    width, height = size
    if mode in ("I;16",):
        im = Image.fromarray(rng.integers(0, 65535, (height, width), dtype=np.uint16))
    elif mode == "1":
        im = Image.fromarray(rng.integers(0, 2, (height, width), dtype=np.uint8) * 255).convert("1")
    elif mode == "P":
        im = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).convert("P")
    else:
        channels = {"L": 1, "RGB": 3, "RGBA": 4, "LA": 2, "CMYK": 4}[mode]
        pixels = rng.integers(0, 255, (height, width, channels), dtype=np.uint8)
        im = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
    out = io.BytesIO()
    im.save(out, format=fmt)
    return out.getvalue()


def make_zip(entries, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """entries: (name or ZipInfo, bytes) pairs, written as given (no path clean-up)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, payload in entries:
            info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            archive.writestr(info, payload)
    return out.getvalue()


def class_entries(classes=("cat", "dog"), per_class=6, prefix="") -> list[tuple[str, bytes]]:
    return [(f"{prefix}{c}/{i}.png", image_bytes(seed=10 * k + i)) for k, c in enumerate(classes)
            for i in range(per_class)]


def png_claiming_size(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height (a decompression-bomb header)."""
    blob = bytearray(image_bytes(size=(1, 1)))
    ihdr = blob.index(b"IHDR")
    blob[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    blob[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(blob[ihdr:ihdr + 17])))
    return bytes(blob)


def forge_uncompressed_size(blob: bytes, member: str, fake_size: int) -> bytes:
    """Make the zip's local header and directory lie about one member's uncompressed size."""
    out = bytearray(blob)
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        offset = archive.getinfo(member).header_offset
    struct.pack_into("<I", out, offset + 22, fake_size)
    pos = out.find(b"PK\x01\x02")
    while pos >= 0:
        name_len = struct.unpack_from("<H", out, pos + 28)[0]
        if out[pos + 46:pos + 46 + name_len] == member.encode():
            struct.pack_into("<I", out, pos + 24, fake_size)
        pos = out.find(b"PK\x01\x02", pos + 4)
    return bytes(out)


def csv_bytes(rows, header=None) -> bytes:
    lines = ([",".join(header)] if header else []) + [",".join(str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def pixel_header(n: int, label="label") -> list[str]:
    return [label] + [f"pixel{j}" for j in range(n)]


def good_rows(n_rows=20, n_pixels=16, classes=(0, 1), seed=0) -> list[list]:
    rng = np.random.default_rng(seed)
    return [[classes[i % len(classes)]] + rng.integers(0, 256, n_pixels).tolist() for i in range(n_rows)]


# --- sandbox -----------------------------------------------------------------------------------
def _tree(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for path in root.rglob("*"):
        if path == skip or skip in path.parents:
            continue
        info = path.lstat()
        out[str(path)] = (info.st_size, info.st_mtime_ns) if path.is_file() else (-1, 0)
    return out


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GRADIENT_LAB_CACHE_DIR", str(cache))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary.txt").write_text("canary")
    root = tmp_path.parent  # '../../x' from the cwd or the uploads folder lands in here
    before = _tree(root, cache)

    def assert_untouched(cache_may_hold_npz: bool = False) -> None:
        assert _tree(root, cache) == before, "something was written outside the cache"
        assert (outside / "canary.txt").read_text() == "canary"
        escaped = list(root.rglob("escape*")) + [p for p in (REPO / "escape.png", REPO.parent / "escape.png",
                                                           Path("/escape.png"), Path("/etc/escape.png"))
                                                 if p.exists()]
        assert not escaped, f"escaped files: {escaped}"
        files = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
        if cache_may_hold_npz:
            assert all(p.parent == cache / "uploads" and p.suffix == ".npz" and ".tmp" not in p.name
                       for p in files), files
        else:
            assert files == [], files

    return SimpleNamespace(cache=cache, assert_untouched=assert_untouched)


def rejects(sandbox, call, *fragments: str, earlier_npz: bool = False) -> str:
    """The call raises UploadError mentioning every fragment, and writes nothing (beyond earlier npz files)."""
    files_before = sorted(sandbox.cache.rglob("*")) if sandbox.cache.exists() else []
    with pytest.raises(UploadError) as caught:
        call()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message
    assert "Traceback" not in message and "File \"" not in message
    sandbox.assert_untouched(cache_may_hold_npz=earlier_npz)
    assert (sorted(sandbox.cache.rglob("*")) if sandbox.cache.exists() else []) == files_before
    return message


# --- zip: hostile paths and links ---------------------------------------------------------------
@pytest.mark.parametrize("bad_name, words", [
    ("../../escape.png", ["../../escape.png", ".."]),
    ("cat/../../escape.png", ["cat/../../escape.png", ".."]),
    ("/etc/escape.png", ["/etc/escape.png", "absolute"]),
    ("C:/escape.png", ["C:/escape.png", "drive letter"]),
    ("C:escape.png", ["C:escape.png", "drive letter"]),
    ("cat\\..\\..\\escape.png", ["escape.png", "backslash"]),
])
def test_paths_escaping_the_folder_reject_the_upload(sandbox, bad_name, words):
    blob = make_zip(class_entries() + [(bad_name, image_bytes())])
    rejects(sandbox, lambda: prepare_zip(blob), "rejected", *words)


def test_symlink_member_is_rejected(sandbox):
    link = zipfile.ZipInfo("cat/link.png", (2024, 1, 1, 0, 0, 0))
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    blob = make_zip(class_entries() + [(link, b"../../../../etc/passwd")])
    rejects(sandbox, lambda: prepare_zip(blob), "cat/link.png", "symbolic link")


def test_password_protected_member_is_rejected(sandbox):
    blob = bytearray(make_zip(class_entries(), compression=zipfile.ZIP_STORED))
    pos = blob.find(b"PK\x01\x02")  # set the 'encrypted' flag on the first directory entry
    struct.pack_into("<H", blob, pos + 8, struct.unpack_from("<H", blob, pos + 8)[0] | 0x1)
    rejects(sandbox, lambda: prepare_zip(bytes(blob)), "password")


# --- zip: bombs and caps ------------------------------------------------------------------------
def test_member_over_the_per_file_cap_is_rejected_from_the_directory(sandbox, monkeypatch):
    blob = make_zip(class_entries() + [("cat/huge.bmp", bytes(uploads.limits.MAX_FILE_BYTES + 1))])
    read = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: read.append(a) or pytest.fail("read a member"))
    rejects(sandbox, lambda: prepare_zip(blob), "cat/huge.bmp", "limit per file")
    assert not read


def test_highly_compressed_member_is_rejected_as_a_zip_bomb(sandbox):
    blob = make_zip(class_entries() + [("cat/zeros.bmp", bytes(2 * uploads.MB))])
    rejects(sandbox, lambda: prepare_zip(blob), "zip bomb", "cat/zeros.bmp")


def test_total_uncompressed_size_cap(sandbox, monkeypatch):
    monkeypatch.setattr(uploads.limits, "MAX_TOTAL_UNCOMPRESSED", 50_000)
    noise = [(f"cat/n{i}.bin", np.random.default_rng(i).bytes(20_000)) for i in range(3)]
    blob = make_zip(class_entries() + noise)
    rejects(sandbox, lambda: prepare_zip(blob), "unpacks to", "limit")


def test_too_many_files(sandbox, monkeypatch):
    monkeypatch.setattr(uploads.limits, "MAX_FILES", 5)
    blob = make_zip(class_entries())
    rejects(sandbox, lambda: prepare_zip(blob), "12 files", "limit is 5")
    monkeypatch.setattr(uploads.limits, "MAX_FILES", 100)
    monkeypatch.setattr(uploads.limits, "MAX_CENTRAL_DIRECTORY_BYTES", 100)
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: pytest.fail("parsed the directory"))
    rejects(sandbox, lambda: prepare_zip(blob), "file list", "limit")


def test_upload_over_the_byte_cap(sandbox, monkeypatch):
    blob = make_zip(class_entries())
    monkeypatch.setattr(uploads.limits, "MAX_UPLOAD_BYTES", len(blob) - 1)
    rejects(sandbox, lambda: prepare_zip(blob), "limit")
    rejects(sandbox, lambda: prepare_csv(b"label,p\n" * (len(blob) // 8 + 1)), "limit")


def test_member_expanding_past_its_declared_size_is_cut_off_while_reading(sandbox, monkeypatch):
    """Sizes in the directory are not trusted: each read is bounded by the caps themselves."""
    real_plan = uploads.zipfolder._plan_zip

    def plan_then_shrink_cap(*args):
        plan = real_plan(*args)  # passes with the real caps...
        monkeypatch.setattr(uploads.limits, "MAX_FILE_BYTES", 1000)  # ...then the member 'turns out' bigger
        return plan

    monkeypatch.setattr(uploads.zipfolder, "_plan_zip", plan_then_shrink_cap)
    blob = make_zip(class_entries() + [("cat/big.png", image_bytes(size=(200, 200)))])
    rejects(sandbox, lambda: prepare_zip(blob), "zip bomb", "more than")


def test_member_with_forged_sizes_is_skipped_not_trusted(sandbox):
    bomb = "cat/bomb.png"
    blob = forge_uncompressed_size(make_zip(class_entries() + [(bomb, bytes(5 * uploads.MB))]), bomb, 100)
    result = prepare_zip(blob)
    assert result.skipped == {uploads.SKIP_UNREADABLE: 1}
    assert len(result.dataset.y) + len(result.dataset.y_test) == 12
    sandbox.assert_untouched(cache_may_hold_npz=True)


# --- zip: not usable ----------------------------------------------------------------------------
@pytest.mark.parametrize("payload, words", [
    (b"", ["empty"]),
    (b"hello, this is not a zip", ["not a zip", "csv"]),
    (np.random.default_rng(0).bytes(5000), ["not a zip"]),
    (make_zip(class_entries())[:-30], ["damaged"]),
    (make_zip([]), ["empty"]),
    (make_zip([("cat/", b""), ("dog/", b"")]), ["empty"]),
    (make_zip([("a/readme.txt", b"hi"), ("b/data.csv", b"1,2")]), ["no images", "2 file(s): not an image"]),
    (make_zip(class_entries(classes=("cat",), per_class=12)), ["at least 2 classes"]),
    (make_zip(class_entries(classes=tuple(f"c{k:03d}" for k in range(101)), per_class=1)), ["101 classes", "100"]),
    (make_zip(class_entries(per_class=3)), ["only 6 usable images", "at least 10"]),
    (make_zip(class_entries(prefix="data/train/") + class_entries(prefix="data/test/")), ["train/test"]),
])
def test_unusable_zips_get_a_clear_error(sandbox, payload, words):
    rejects(sandbox, lambda: prepare_zip(payload), *words)


def test_bad_options_are_refused(sandbox):
    blob = make_zip(class_entries())
    rejects(sandbox, lambda: prepare_zip(blob, color="CMYK"), "grayscale")
    rejects(sandbox, lambda: prepare_zip(blob, image_size=10_000), "image size")


# --- zip: messy but usable ----------------------------------------------------------------------
def test_messy_zip_skips_and_counts_bad_files_and_converts_the_rest(sandbox):
    good = [
        ("cat/l.png", image_bytes(mode="L")),
        ("cat/rgb_wide.png", image_bytes(size=(40, 30), mode="RGB")),
        ("cat/rgba_small.png", image_bytes(size=(16, 16), mode="RGBA")),
        ("cat/palette.gif", image_bytes(mode="P", fmt="GIF")),
        ("cat/deep.png", image_bytes(mode="I;16")),
        ("cat/bits.bmp", image_bytes(mode="1", fmt="BMP")),
        ("dog/photo.jpg", image_bytes(size=(64, 48), mode="RGB", fmt="JPEG")),
        ("dog/cmyk.jpg", image_bytes(mode="CMYK", fmt="JPEG")),
        ("dog/scan.tiff", image_bytes(size=(30, 30), mode="L", fmt="TIFF")),
        ("dog/la.png", image_bytes(mode="LA")),
        ("dog/nested/deeper.png", image_bytes(seed=3)),
        ("dog/gray.ppm", image_bytes(mode="RGB", fmt="PPM")),
    ]
    bad = [
        ("cat/readme.txt", b"not an image"),
        ("dog/fake.png", b"this is text pretending to be a png"),
        ("cat/broken.png", image_bytes(size=(50, 50), seed=9)[:200]),
        ("cat/bomb.png", png_claiming_size(100_000, 100_000)),
        ("cat/inner.zip", make_zip(class_entries())),
        ("dog/more.tar.gz", b"\x1f\x8b" + bytes(100)),
        ("__MACOSX/cat/._l.png", b"\0\5\26\7"),
        ("cat/.DS_Store", b"\0\0\0\1Bud1"),
        ("stray.png", image_bytes()),
    ]
    result = prepare_zip(make_zip(good + bad))
    ds = result.dataset
    assert ds.classes == ["cat", "dog"]
    assert ds.x.dtype == torch.uint8 and ds.x.shape[1:] == (1, 28, 28)
    assert len(ds.y) + len(ds.y_test) == len(good)
    assert sorted((ds.class_counts()[k] + int((ds.y_test == k).sum())) for k in (0, 1)) == [6, 6]
    assert result.skipped == {
        uploads.SKIP_NOT_IMAGE: 2, uploads.SKIP_CORRUPT: 1, uploads.SKIP_TOO_LARGE: 1,
        uploads.SKIP_NESTED_ARCHIVE: 2, uploads.SKIP_SYSTEM_FILE: 2, uploads.SKIP_OUTSIDE_CLASS: 1}
    notes = " ".join(result.notes)
    assert "archive" in notes and "not opened" in notes
    assert "Resized" in notes and "Converted" in notes
    assert not result.from_cache
    sandbox.assert_untouched(cache_may_hold_npz=True)


def test_a_class_with_only_broken_images_is_dropped(sandbox):
    broken = [(f"ghost/{i}.png", image_bytes(size=(40, 40), seed=i)[:100]) for i in range(3)]
    result = prepare_zip(make_zip(class_entries(classes=("cat", "dog", "eel")) + broken))
    ds = result.dataset
    assert ds.classes == ["cat", "dog", "eel"]
    assert sorted(torch.cat([ds.y, ds.y_test]).tolist()) == [0] * 6 + [1] * 6 + [2] * 6
    assert result.skipped == {uploads.SKIP_CORRUPT: 3}
    assert any("ghost" in note for note in result.notes)
    only_one_left = make_zip(class_entries(classes=("cat",), per_class=12) + broken)
    rejects(sandbox, lambda: prepare_zip(only_one_left), "at least 2 classes", earlier_npz=True)


def test_rgb_option_keeps_three_channels(sandbox):
    entries = [(f"{c}/{i}.png", image_bytes(size=(20 + i, 30), mode=m, seed=i))
               for c in ("red", "blue") for i, m in enumerate(["RGB", "L", "RGBA", "P", "RGB", "L"])]
    ds = prepare_zip(make_zip(entries), image_size=16, color="RGB").dataset
    assert ds.x.shape[1:] == (3, 16, 16) and ds.x.dtype == torch.uint8
    assert ds.x.shape[0] + ds.x_test.shape[0] == 12


def test_pixel_cap_skips_big_images(sandbox, monkeypatch):
    monkeypatch.setattr(uploads.limits, "MAX_IMAGE_PIXELS", 30 * 30)
    entries = class_entries() + [("cat/big.png", image_bytes(size=(31, 31)))]
    result = prepare_zip(make_zip(entries))
    assert result.skipped == {uploads.SKIP_TOO_LARGE: 1}


def test_class_names_are_plain_short_text_and_top_folder_is_dropped(sandbox):
    long_name = "x" * 200
    entries = class_entries(classes=("ca\x07t\x1b[31m", "\u202eevil", long_name), per_class=4, prefix="my data/")
    result = prepare_zip(make_zip(entries))
    classes = result.dataset.classes
    assert len(classes) == 3 and len(set(classes)) == 3
    for name in classes:
        assert len(name) <= uploads.limits.MAX_CLASS_NAME_CHARS
        assert all(ch.isprintable() for ch in name), repr(name)
    assert "cat[31m" in classes and "evil" in classes and "x" * 64 in classes
    assert any("my data" in note for note in result.notes)


# --- caching and reloading ----------------------------------------------------------------------
def test_same_bytes_reuse_the_prepared_copy_and_reload_after_restart(sandbox, monkeypatch):
    blob = make_zip(class_entries())
    first = prepare_zip(blob)
    digest = first.name.removeprefix("upload:")
    assert first.name.startswith("upload:") and len(digest) == 24 and int(digest, 16) >= 0
    assert (sandbox.cache / "uploads" / f"{digest}.npz").is_file()
    RunConfig(dataset=first.name)  # the config schema accepts the name

    monkeypatch.setattr(uploads.zipfolder, "_decode_members", lambda *a: pytest.fail("decoded again"))
    again = prepare_zip(blob)
    assert again.from_cache and again.name == first.name
    assert torch.equal(again.dataset.x, first.dataset.x)

    data._cache.pop((first.name, 0.0))  # as after a restart
    reloaded = data.load_dataset(first.name)
    assert reloaded is not first.dataset
    assert torch.equal(reloaded.x, first.dataset.x) and torch.equal(reloaded.y_test, first.dataset.y_test)
    assert reloaded.classes == first.dataset.classes
    sandbox.assert_untouched(cache_may_hold_npz=True)


def test_options_are_part_of_the_name(sandbox):
    blob = make_zip(class_entries())
    names = {prepare_zip(blob).name, prepare_zip(blob, image_size=16).name, prepare_zip(blob, color="RGB").name}
    assert len(names) == 3
    sandbox.assert_untouched(cache_may_hold_npz=True)


def test_a_new_process_loads_the_upload_by_name(sandbox):
    result = prepare_csv(csv_bytes(good_rows(), pixel_header(16)))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    code = ("import sys; from core.engine import data; ds = data.load_dataset(sys.argv[1]); "
            "print(tuple(ds.x.shape), len(ds.y_test), ds.classes)")
    out = subprocess.run([sys.executable, "-c", code, result.name], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{tuple(result.dataset.x.shape)} {len(result.dataset.y_test)} ['0', '1']"
    sandbox.assert_untouched(cache_may_hold_npz=True)


# --- CSV ----------------------------------------------------------------------------------------
def test_csv_with_square_pixel_count_becomes_images(sandbox):
    rows = good_rows(n_rows=30, n_pixels=16, classes=(3, 7, 9))
    result = prepare_csv(csv_bytes(rows, pixel_header(16)))
    ds = result.dataset
    assert ds.x.dtype == torch.uint8 and ds.x.shape[1:] == (1, 4, 4)
    assert ds.classes == ["3", "7", "9"]
    assert len(ds.y) + len(ds.y_test) == 30
    full = torch.cat([ds.x, ds.x_test]).flatten(1).sort(dim=0).values
    expected = torch.tensor([r[1:] for r in rows], dtype=torch.uint8).sort(dim=0).values
    assert torch.equal(full, expected)
    sandbox.assert_untouched(cache_may_hold_npz=True)


def test_csv_with_bom_crlf_quotes_and_fractions(sandbox):
    rows = good_rows()
    text = "\ufeff" + "\r\n".join([",".join(f'"{h}"' for h in pixel_header(16))]
                                   + [",".join([str(r[0])] + [f"{v / 255:.6f}" for v in r[1:]]) for r in rows])
    result = prepare_csv(text.encode())
    assert result.dataset.x.shape[1:] == (1, 4, 4)
    full = torch.cat([result.dataset.x, result.dataset.x_test]).flatten(1).sort(dim=0).values
    assert torch.equal(full, torch.tensor([r[1:] for r in rows], dtype=torch.uint8).sort(dim=0).values)
    assert any("scaled" in note for note in result.notes)


def test_csv_with_other_pixel_counts_becomes_scaled_features(sandbox):
    ds = prepare_csv(csv_bytes(good_rows(n_pixels=10), pixel_header(10))).dataset
    assert ds.x.dtype == torch.float32 and ds.x.shape[1:] == (10,)
    assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) <= 1.0


def test_csv_text_labels_and_named_label_column(sandbox):
    rows = [[v for v in r[1:3]] + [["cat", "dog"][i % 2]] + r[3:] for i, r in enumerate(good_rows())]
    header = ["pixel0", "pixel1", "animal"] + [f"pixel{j}" for j in range(2, 16)]
    ds = prepare_csv(csv_bytes(rows, header), label_column="animal").dataset
    assert ds.classes == ["cat", "dog"] and ds.x.shape[1:] == (1, 4, 4)


def test_headerless_csv_needs_the_label_position(sandbox):
    blob = csv_bytes(good_rows())
    rejects(sandbox, lambda: prepare_csv(blob), "no header", "label")
    rejects(sandbox, lambda: prepare_csv(blob, label_column="label"), "no header")
    result = prepare_csv(blob, label_column=0)
    assert result.dataset.x.shape[1:] == (1, 4, 4)
    assert any("no header" in note for note in result.notes)


def _with_row(row_index: int, row: list, n_pixels: int = 16) -> bytes:
    rows = good_rows(n_pixels=n_pixels)
    rows[row_index] = row
    return csv_bytes(rows, pixel_header(n_pixels))


@pytest.mark.parametrize("payload, words", [
    (b"", ["empty"]),
    (b"  \n\n  ", ["empty"]),
    (csv_bytes([], pixel_header(16)), ["no data rows"]),
    (_with_row(4, [1] + [0] * 17), ["line 6", "18 values", "17 columns"]),
    (_with_row(4, [1] + [0] * 10), ["line 6", "11 values"]),
    (csv_bytes([r + [0] for r in good_rows()], pixel_header(16)), ["line 2", "18 values"]),
    (_with_row(2, [1, 5, "abc"] + [0] * 14), ["line 4", "pixel1", "'abc'", "not a number"]),
    (_with_row(2, [1, 5, ""] + [0] * 14), ["line 4", "pixel1", "empty"]),
    (_with_row(7, [1, 256] + [0] * 15), ["line 9", "pixel0", "outside 0-255"]),
    (_with_row(7, [1] + [0] * 15 + [-1]), ["line 9", "pixel15", "outside 0-255"]),
    (_with_row(3, [""] + [0] * 16), ["line 5", "no label"]),
    (_with_row(3, [1.5] + [0] * 16), ["line 5", "1.5", "not a whole number"]),
    (csv_bytes(good_rows(classes=(4,)), pixel_header(16)), ["at least 2 classes"]),
    (csv_bytes(good_rows(n_rows=202, classes=tuple(range(101))), pixel_header(16)), ["101 classes"]),
    (csv_bytes(good_rows(), pixel_header(16, label="digit")), ["no label column", "'digit'"]),
    (csv_bytes(good_rows(n_rows=5), pixel_header(16)), ["only 5 usable rows"]),
    (b"label\n1\n2\n", ["single column"]),
    (make_zip(class_entries()), ["zip file", "zip upload"]),
    (b"\x89PNG\r\n\x1a\n\0\0\0", ["not a text csv"]),
])
def test_bad_csvs_get_errors_naming_the_place(sandbox, payload, words):
    rejects(sandbox, lambda: prepare_csv(payload), *words)


def test_csv_label_column_that_does_not_exist(sandbox):
    blob = csv_bytes(good_rows(), pixel_header(16))
    rejects(sandbox, lambda: prepare_csv(blob, label_column="digit"), "no column 'digit'")
    rejects(sandbox, lambda: prepare_csv(blob, label_column=17), "position 17")


# --- real data: Fashion-MNIST round trips that train --------------------------------------------
@pytest.fixture
def fashion(shared_fashion, monkeypatch):
    monkeypatch.setenv("GRADIENT_LAB_DATA_DIR", str(SHARED_DATASETS))
    monkeypatch.setenv("GRADIENT_LAB_OFFLINE", "1")


def _train_three_classes(name: str):
    cfg = RunConfig(dataset=name, hidden=(64,), epochs=2, batch_size=32, lr=2e-3, device="cpu", log_every=1000)
    finished = train(cfg)
    assert finished.status == "finished", finished
    assert finished.test_acc > 0.7, finished.test_acc
    assert finished.test_loss < math.log(3), finished.test_loss
    return finished


def test_fashion_subset_zip_round_trip_trains(sandbox, fashion):
    blob = uploads.build_fashion3_zip(n_per_class=200, seed=1)
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        names = archive.namelist()
    assert len(names) == 600 and {n.split("/")[1] for n in names} == {"tshirt", "trouser", "sneaker"}
    result = prepare_zip(blob)
    ds = result.dataset
    assert ds.classes == ["sneaker", "trouser", "tshirt"] and ds.x.shape[1:] == (1, 28, 28)
    assert len(ds.y) + len(ds.y_test) == 600 and result.skipped == {}
    _train_three_classes(result.name)
    sandbox.assert_untouched(cache_may_hold_npz=True)


def test_fashion_subset_csv_round_trip_trains(sandbox, fashion):
    source = data.load_dataset("fashion-mnist")
    chosen = torch.cat([(source.y == k).nonzero().flatten()[:200] for k in (0, 1, 7)])
    pixels = source.x[chosen].flatten(1).numpy()
    rows = [[int(source.y[i])] + row.tolist() for i, row in zip(chosen.tolist(), pixels)]
    result = prepare_csv(csv_bytes(rows, pixel_header(784)), test_fraction=0.2)  # a test set to score
    assert result.dataset.x.shape[1:] == (1, 28, 28) and result.dataset.classes == ["0", "1", "7"]
    _train_three_classes(result.name)
    sandbox.assert_untouched(cache_may_hold_npz=True)


def test_fashion3_builtin_loads_by_name(sandbox, fashion, monkeypatch):
    monkeypatch.delitem(data._cache, ("fashion3", 0.0), raising=False)
    assert data.available("fashion3")
    with pytest.raises(data.DatasetUnavailable, match="catalog"):  # the bottom registry does not build it
        data.load_dataset("fashion3")
    ds = catalog.load_dataset("fashion3")
    assert ds.name == "fashion3" and ds.classes == ["sneaker", "trouser", "tshirt"]
    assert len(ds.y) + len(ds.y_test) == 3 * uploads.FASHION3_PER_CLASS
    assert ds.notice and "Fashion-MNIST" in ds.notice
    assert uploads.build_fashion3_zip(n_per_class=5) == uploads.build_fashion3_zip(n_per_class=5)  # deterministic
    sandbox.assert_untouched(cache_may_hold_npz=True)
