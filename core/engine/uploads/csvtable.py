"""Kaggle-style CSVs (a header, a label column, pixel columns 0-255), checked row by row before pandas."""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.engine.uploads import limits
from core.engine.uploads.limits import LABEL_COLUMN_NAMES, UploadError, _check_class_count, _check_example_count, _display, \
    _unique_class_names
from core.engine.uploads.prepared import UploadResult, _as_bytes, _digest, _finish, _from_cache, _lock_for


# --- CSV ---------------------------------------------------------------------------------------
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")



def _is_whole_label(value: float) -> bool:
    return math.isfinite(value) and value % 1 == 0 and abs(value) <= limits.MAX_ABS_LABEL


def prepare_csv(payload: bytes, *, label_column: str | int | None = None,
                test_fraction: float = limits.CSV_TEST_FRACTION) -> UploadResult:
    """Prepare a Kaggle-style CSV: a header row, a label column and pixel columns (0-255).

    ``label_column``: the label's column name, or its position (0 = first column); by default
    a column named label/labels/class/target/y. Labels are whole numbers or class names.
    When the pixel count is a perfect square the rows are square grayscale images, otherwise
    float32 features scaled by 1/255. A CSV without a header row (first row all numbers) is
    accepted only when ``label_column`` is a position, since nothing else says where the label
    is. ``test_fraction``: share of rows held out as a fixed test set; by default none (a Kaggle
    CSV comes with its own test file), so a run splits the rows into training and validation
    only, as the course's seed did. Raises :class:`UploadError` naming the line and column of
    the first problem.
    """
    test_fraction = limits.check_test_fraction(test_fraction)
    if isinstance(label_column, bool) or not (label_column is None or isinstance(label_column, (str, int))):
        raise UploadError(f"The label column must be a column name or position, not {label_column!r}.")
    blob = _as_bytes(payload, "CSV file")
    digest = _digest(blob, "csv", label_column, *((test_fraction,) if test_fraction else ()))
    with _lock_for(digest):
        cached = _from_cache(digest)
        if cached is not None:
            return cached
        table = _CsvTable.parse(blob, label_column)
        return table.to_result(digest, test_fraction)


class _LineTooLong(Exception):
    def __init__(self, line_no: int):
        super().__init__(line_no)
        self.line_no = line_no


class _bounded_lines:
    """Physical lines of a text, refusing one longer than ``max_chars`` after reading only that much.

    Iterating yields lines (what :func:`csv.reader` wants); ``line_no`` is the last line's number."""

    def __init__(self, stream: io.StringIO, max_chars: int, first_max_chars: int | None = None):
        self.stream, self.max_chars, self.line_no = stream, max_chars, 0
        self.first_max_chars = first_max_chars or max_chars  # the header line may hold long names

    def __iter__(self):
        return self

    def __next__(self) -> str:
        limit = self.first_max_chars if self.line_no == 0 else self.max_chars
        line = self.stream.readline(limit + 1)
        if not line:
            raise StopIteration
        self.line_no += 1
        if len(line) > limit and not line.endswith("\n"):
            raise _LineTooLong(self.line_no)
        return line


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
        first = cls._first_record(text)
        if first is None:
            raise UploadError("The CSV is empty.")
        if len(first) < 2:
            raise UploadError("The CSV has a single column; it needs a label column and pixel columns, separated "
                              "by commas.")
        if len(first) - 1 > limits.MAX_FEATURES:
            raise UploadError(f"The CSV has {len(first) - 1:,} pixel columns; the cap is {limits.MAX_FEATURES:,} "
                              f"(a 128x128 image), so that the network built from it fits the server.")
        has_header = not all(_NUMBER.match(cell.strip()) for cell in first)
        if has_header:
            columns = [cell.strip() for cell in first]
        else:
            columns = [f"column {j + 1}" for j in range(len(first))]
        label_index = cls._find_label(columns, has_header, label_column)
        return cls(text, has_header, columns, label_index)

    @staticmethod
    def _first_record(text: str) -> list[str] | None:
        """The first non-empty record, read whole however long (its cells are bounded, not the line)."""
        csv.field_size_limit(max(limits.MAX_HEADER_CELL_CHARS, limits.MAX_CELL_CHARS))
        try:
            return next((row for row in csv.reader(io.StringIO(text)) if row), None)
        except csv.Error:
            raise UploadError(f"The CSV's first row has a value longer than {limits.MAX_HEADER_CELL_CHARS} "
                              f"characters (or an unclosed quote); it must name the columns.") from None

    def check_rows(self) -> int:
        """Count the data rows, refusing any row of the wrong width before pandas sees it; bounded memory.

        Lines are measured first (a line longer than ``MAX_CELL_CHARS`` per column is refused unread);
        unquoted files are then checked by counting commas, quoted ones with the csv module."""
        n_cols = len(self.columns)
        max_line = n_cols * limits.MAX_CELL_CHARS + 1024
        first_what = "the header has" if self.has_header else "the first row has"
        lines = _bounded_lines(io.StringIO(self.text), max_line,
                               n_cols * (limits.MAX_HEADER_CELL_CHARS + 3) if self.has_header else None)
        if '"' in self.text:
            csv.field_size_limit(max_line)
            reader = csv.reader(lines)
            widths = ((reader.line_num, len(row)) for row in reader if row and (len(row) > 1 or row[0].strip()))
        else:
            widths = ((lines.line_no, line.count(",") + 1) for line in lines if line.strip())
        rows = 0
        try:
            for i, (line_no, width) in enumerate(widths):
                if i == 0 and self.has_header:
                    continue
                if width != n_cols:
                    raise UploadError(f"Line {line_no} has {width} values, but {first_what} {n_cols} columns: "
                                      f"every row needs the same number of values.")
                rows += 1
        except csv.Error as exc:
            raise UploadError(f"The CSV could not be read: {exc}.") from None
        except _LineTooLong as exc:
            raise UploadError(f"Line {exc.line_no} is longer than {max_line:,} characters: too long for {n_cols} "
                              f"columns (at most {limits.MAX_CELL_CHARS} characters per value on average). Every "
                              f"row needs the same number of values as the header.") from None
        return rows

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

    def to_result(self, digest: str, test_fraction: float = limits.CSV_TEST_FRACTION) -> UploadResult:
        n_rows = self.check_rows()
        if n_rows * (len(self.columns) - 1) * 4 > limits.MAX_DATASET_BYTES:
            raise UploadError(f"{n_rows:,} rows of {len(self.columns) - 1:,} values would take more than "
                              f"{limits.MAX_DATASET_BYTES // limits.MB} MB of memory, the cap on one upload: use "
                              f"fewer rows.")

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
        broken = next((i for i, label in enumerate(labels) if "\n" in label or "\r" in label), None)
        if broken is not None:
            raise UploadError(f"Data row {broken + 1}: the label {_display(labels[broken], 20)} in column "
                              f"{_display(self.columns[self.label_index], 30)} spans more than one line (a quoted "
                              f"value with a line break). Each label must be on one line.")
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
        return _finish(digest, title, class_names, x, y, {}, notes, test_fraction)

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
                if _NUMBER.match(label) and float(label) % 1 == 0 and not _is_whole_label(float(label)):
                    return UploadError(f"Line {line}: the label {_display(label, 20)} in column {label_name} is too "
                                       f"large for a class number (at most {limits.MAX_ABS_LABEL:,}). Use small "
                                       f"whole numbers (0, 1, 2...) or class names.")
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

