"""Upload worst cases stay bounded (issue 14.3, 14.9): row width checked before pandas, the header read
whole, caps on features, pixels and disk quota, clear label messages, temporary files never left behind.

Peak memory is measured in a fresh subprocess (``resource.getrusage``) as a ratio to the upload's size."""
from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from core.engine import uploads
from core.engine.uploads import UploadError, limits, prepare_csv, prepare_zip
from helpers import train_events

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIENT_LAB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def csv_bytes(n_rows: int, n_pixels: int, seed: int = 0, header: list[str] | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    names = header or [f"pixel{j}" for j in range(n_pixels)]
    lines = ["label," + ",".join(names)]
    values = rng.integers(0, 256, (n_rows, n_pixels))
    lines += [f"{i % 3}," + ",".join(map(str, row)) for i, row in enumerate(values)]
    return ("\n".join(lines) + "\n").encode()


def png(size: int, mode: str = "L", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size, size) if mode == "L" else (size, size, 3)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(out, format="PNG")
    return out.getvalue()


def flat_png(size: int, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (size, size), 0).save(out, format="PNG", optimize=True)
    return out.getvalue()


def image_zip(n_per_class: int = 6, size: int = 12, seed: int = 0, extra=()) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for k, folder in enumerate(("cat", "dog")):
            for i in range(n_per_class):
                archive.writestr(f"{folder}/{i}.png", png(size, seed=seed * 1000 + k * 100 + i))
        for name, payload in extra:
            archive.writestr(name, payload)
    return out.getvalue()


_PEAK = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, sys.argv[1])
    from core.engine.uploads import UploadError, prepare_csv, prepare_zip
    blob = open(sys.argv[2], "rb").read()
    prepare = prepare_zip if sys.argv[3] == "zip" else prepare_csv
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        result = prepare(blob)
        outcome = "ok " + result.name
    except UploadError as exc:
        outcome = "refused " + str(exc)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024, len(blob))
    print(outcome)
""")


def peak_increase(tmp_path: Path, blob: bytes, kind: str) -> tuple[float, str]:
    """(peak RSS increase / upload size, outcome line) of preparing ``blob`` in a fresh process."""
    path = tmp_path / f"upload.{kind}"
    path.write_bytes(blob)
    env = {**os.environ, "GRADIENT_LAB_CACHE_DIR": str(tmp_path / "peak-cache"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _PEAK, str(REPO), str(path), kind], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    sizes, outcome = out.stdout.strip().split("\n", 1)
    increase, size = map(int, sizes.split())
    return increase / size, outcome


@pytest.mark.slow
def test_rows_longer_than_the_header_fail_fast_with_bounded_memory(tmp_path):
    header = csv_bytes(3, 784)
    long_row = ("1," + ",".join(["255"] * 3000) + "\n").encode()
    blob = header + long_row * (12 * 2**20 // len(long_row))  # 12 MB of over-long rows
    ratio, outcome = peak_increase(tmp_path, blob, "csv")
    assert outcome.startswith("refused Line 5 has 3001 values, but the header has 785 columns")
    assert ratio < 3


@pytest.mark.slow
def test_one_huge_line_is_refused_unread(tmp_path):
    blob = csv_bytes(3, 784) + ("1," + "9" * (20 * 2**20) + "\n").encode()
    ratio, outcome = peak_increase(tmp_path, blob, "csv")
    assert outcome.startswith("refused Line 5 is longer than") and ratio < 3


@pytest.mark.slow
def test_a_good_csv_costs_a_bounded_multiple_of_its_size(tmp_path):
    blob = csv_bytes(3000, 784)
    ratio, outcome = peak_increase(tmp_path, blob, "csv")
    assert outcome.startswith("ok upload:")
    assert ratio < 8


@pytest.mark.slow
def test_huge_png_bombs_are_refused_from_their_header_with_bounded_memory(tmp_path):
    bomb = flat_png(4096)
    assert len(bomb) < 200_000  # small file, 50 MB once decoded
    blob = image_zip(extra=[(f"cat/bomb{i}.png", bomb) for i in range(8)])
    ratio, outcome = peak_increase(tmp_path, blob, "zip")
    assert outcome.startswith("ok upload:")
    assert ratio < 20  # one decoded 4096x4096 RGB image alone would be over 100x the zip


def test_huge_png_is_skipped_without_being_decoded(cache, monkeypatch):
    loaded = []
    real_load = ImageFile.ImageFile.load

    def spy(self):
        loaded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    result = prepare_zip(image_zip(extra=[("cat/bomb.png", flat_png(4096))]))
    assert result.skipped == {uploads.SKIP_TOO_LARGE: 1}
    assert (4096, 4096) not in loaded and loaded  # the others were decoded


def test_total_decoded_pixels_are_capped(cache, monkeypatch):
    monkeypatch.setattr(limits, "MAX_TOTAL_PIXELS", 10 * 12 * 12)
    with pytest.raises(UploadError, match="MAX_TOTAL_PIXELS"):
        prepare_zip(image_zip())


def test_a_header_longer_than_a_million_characters_is_read_whole(cache):
    n = 16_000
    names = [f"a_rather_long_column_name_for_pixel_number_{j:08d}_of_this_wide_table" for j in range(n)]
    assert len(",".join(names)) > 1_000_000
    result = prepare_csv(csv_bytes(12, n, header=names))
    assert result.dataset.input_shape == (n,)


def test_too_many_columns_are_refused_naming_the_cap(cache):
    blob = b"label," + b",".join(b"p%d" % j for j in range(499_000)) + b"\n" + b"1," + b"0," * 498_999 + b"0\n"
    with pytest.raises(UploadError, match=r"499,000 pixel columns; the cap is 16,384"):
        prepare_csv(blob)


def test_a_huge_numeric_label_gets_its_own_message(cache):
    rows = "label,a,b,c,d\n" + "".join(f"{i % 2},1,2,3,4\n" for i in range(12)) + "1000000000000000,1,2,3,4\n"
    with pytest.raises(UploadError, match="too large for a class number") as info:
        prepare_csv(rows.encode())
    assert "not a whole number" not in str(info.value)


def test_a_quoted_multiline_label_is_refused_not_merged(cache):
    rows = "label,a,b,c,d\n" + "".join(f"{i % 2},1,2,3,4\n" for i in range(12)) + '"1\n2",1,2,3,4\n'
    with pytest.raises(UploadError, match="spans more than one line"):
        prepare_csv(rows.encode())


def _npz_files(cache: Path) -> set[str]:
    return {p.name for p in (cache / "uploads").glob("*")}


def test_prepared_uploads_have_a_quota_with_least_recently_used_eviction(cache, monkeypatch):
    blobs = [image_zip(seed=s, size=28) for s in range(3)]
    first = prepare_zip(blobs[0])
    one_file = (cache / "uploads" / f"{first.name.split(':')[1]}.npz").stat().st_size
    monkeypatch.setenv("GRADIENT_LAB_UPLOADS_QUOTA_MB", str(2.5 * one_file / 2**20))
    second = prepare_zip(blobs[1])
    os.utime(cache / "uploads" / f"{second.name.split(':')[1]}.npz", (1, 1))  # long unused...
    assert prepare_zip(blobs[0]).from_cache  # ...while the first is used again
    third = prepare_zip(blobs[2])
    names = _npz_files(cache)
    assert f"{third.name.split(':')[1]}.npz" in names and f"{first.name.split(':')[1]}.npz" in names
    assert f"{second.name.split(':')[1]}.npz" not in names
    assert sum((cache / "uploads" / n).stat().st_size for n in names) <= 2.5 * one_file
    monkeypatch.setenv("GRADIENT_LAB_UPLOADS_QUOTA_MB", str(one_file / 2 / 2**20))
    with pytest.raises(UploadError, match="GRADIENT_LAB_UPLOADS_QUOTA_MB"):
        prepare_zip(image_zip(seed=7, size=28))
    assert _npz_files(cache) == names


def test_a_full_disk_blames_the_server_and_leaves_no_temporary_file(cache, monkeypatch):
    def full(fh, **arrays):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(UploadError, match="disk is full.*not a problem with your file"):
        prepare_zip(image_zip())
    assert _npz_files(cache) == set()


def test_a_kaggle_csv_is_split_train_validation_like_the_seed_with_an_optional_test_set(cache):
    from core.engine.data import split_indices
    from core.lessons.presets import C_BASE
    from core.engine.train import steps_per_epoch

    # the seed: 60,000 rows, 80/20 train/validation, batch 128 -> 375 iterations per epoch
    n_train = len(split_indices(60_000, C_BASE.val_fraction, 0)[0])
    assert C_BASE.val_fraction == 0.2 and steps_per_epoch(C_BASE, n_train) == 375

    blob = csv_bytes(640, 16)
    plain = prepare_csv(blob)
    assert len(plain.dataset.y) == 640 and len(plain.dataset.y_test) == 0
    assert any("No test set" in note for note in plain.notes)
    cfg = C_BASE.replace(dataset=plain.name, hidden=(8,), epochs=1, norm="none", dropout=0.0)
    end, events = train_events(cfg)
    started = next(e for e in events if e.kind == "started")
    assert started.total_steps == steps_per_epoch(cfg, 512) == 4  # 640 rows x 0.8 / 128
    assert end.status == "finished" and end.test_acc is None and end.val_acc is not None

    held = prepare_csv(blob, test_fraction=0.25)
    assert held.name != plain.name and (len(held.dataset.y), len(held.dataset.y_test)) == (480, 160)
    with pytest.raises(UploadError, match="test fraction"):
        prepare_csv(blob, test_fraction=0.9)
