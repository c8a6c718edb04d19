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
  :func:`core.engine.data.save_npz`), where ``digest`` hashes the bytes and the options. The dataset
  is named ``upload:<digest>`` and reloads with :func:`core.engine.data.load_dataset` after a restart;
  the same bytes uploaded again are loaded from that file instead of being decoded again.

Problems with the upload as a whole raise :class:`UploadError`, whose message is meant for
the user. Class names come from folder names or labels: control characters are removed and
they are capped at 64 characters, but they stay untrusted text for the UI to show escaped.

Modules: :mod:`.limits` (every cap, the error, message helpers), :mod:`.prepared` (the
content-addressed npz cache and its byte quota), :mod:`.zipfolder`, :mod:`.csvtable`, and
:mod:`.fashion3`, the ``fashion3`` built-in (three Fashion-MNIST classes written as PNGs into
an image-folder zip and read back through :func:`prepare_zip`), loaded by name through
:mod:`core.engine.catalog` (core.engine.data never imports this package).
"""
from __future__ import annotations

from core.engine.uploads import csvtable, fashion3, limits, prepared, zipfolder
from core.engine.uploads.csvtable import prepare_csv
from core.engine.uploads.fashion3 import FASHION3_FOLDERS, FASHION3_PER_CLASS, FASHION3_TITLE, build_fashion3_zip, load_fashion3
from core.engine.uploads.limits import (MAX_UPLOAD_BYTES, MB, SKIP_CORRUPT, SKIP_NESTED_ARCHIVE, SKIP_NOT_IMAGE, SKIP_OUTSIDE_CLASS,
                     SKIP_SYSTEM_FILE, SKIP_TOO_LARGE, SKIP_UNREADABLE, SKIP_UNSUPPORTED, UploadError,
                     clean_class_name)
from core.engine.uploads.prepared import UploadResult
from core.engine.uploads.zipfolder import prepare_zip

__all__ = ["prepare_zip", "prepare_csv", "UploadError", "UploadResult", "clean_class_name", "build_fashion3_zip",
           "load_fashion3", "limits", "prepared", "zipfolder", "csvtable", "fashion3", "MAX_UPLOAD_BYTES", "MB",
           "FASHION3_FOLDERS", "FASHION3_PER_CLASS", "FASHION3_TITLE", "SKIP_CORRUPT", "SKIP_NESTED_ARCHIVE",
           "SKIP_NOT_IMAGE", "SKIP_OUTSIDE_CLASS", "SKIP_SYSTEM_FILE", "SKIP_TOO_LARGE", "SKIP_UNREADABLE",
           "SKIP_UNSUPPORTED"]
