"""The bottom floor: plain text for Markdown and Plotly, dataset names, number and time formats.

Everything a page writes about a number, a dataset or a duration comes from here, so the
wording (plurals, "n/a" for missing values) is the same everywhere.
"""
from __future__ import annotations

import datetime as dt
import html
import math
import re
import time
from typing import Callable, Iterable, Mapping

from core.engine import data as datasets
from core.engine.config import UPLOAD_PREFIX

FALLBACK_DATASET = "digits"
DATASET_TITLES = {
    "digits": "Digits 8×8 (offline)",  # short: the sidebar box is narrow
    "mnist": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "fashion3": "Fashion-MNIST 3-class folder",
    "spiral": "Spiral (2-D toy set)",
    "moons": "Moons (2-D toy set)",
    "circles": "Circles (2-D toy set)",
    "xor": "XOR (2-D toy set)",
    "blobs": "Blobs (2-D toy set)",
}
_viewer_uploads: Callable[[], Mapping[str, str]] = dict  # the viewer's own uploads {name: title}: use_viewer_uploads


# --- escaping ------------------------------------------------------------------------------------
def plain(text: object) -> str:
    """Text safe to pass to Markdown-rendering elements (st.error, st.caption...): every ASCII
    punctuation character is backslash-escaped, so user text shows literally."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", " ".join(str(text).split()))


def plain_label(text: object, limit: int = 40) -> str:
    """User text as a literal Plotly label (HTML-escaped, one line, truncated)."""
    s = " ".join(str(text).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return html.escape(s, quote=False)


# --- datasets ------------------------------------------------------------------------------------
def use_viewer_uploads(uploads: Callable[[], Mapping[str, str]]) -> None:
    """Where the functions below find the uploads of whoever is looking, {name: title} (set once by
    app.views.jobs): an upload is private to the browser that uploaded it."""
    global _viewer_uploads
    _viewer_uploads = uploads


def upload_is_mine(name: str) -> bool:
    """False for an upload another browser owns (True for every built-in dataset)."""
    return not name.startswith(UPLOAD_PREFIX) or name in _viewer_uploads()


def dataset_available(name: str) -> bool:
    """Whether the viewer can train on the dataset here (an upload only when it is theirs)."""
    if not upload_is_mine(name):
        return False
    try:
        return datasets.available(name)
    except Exception:  # a damaged upload registry or data folder: treat as unavailable
        return False


def dataset_title(name: str) -> str:
    """A dataset's title: built-in title, the viewer's own upload's title, or the name itself."""
    if name in DATASET_TITLES:
        return DATASET_TITLES[name]
    if name.startswith(UPLOAD_PREFIX):
        return _viewer_uploads().get(name) or f"Uploaded dataset {name[len(UPLOAD_PREFIX):][:10]}"
    return name


def dataset_label(name: str) -> str:
    """The one label of a dataset in pickers and captions (says when it is not on this server, or not yours)."""
    title = dataset_title(name)
    if not upload_is_mine(name):
        return f"{title} (not yours)"
    return title if dataset_available(name) else f"{title} (not on this server)"


def picker_labels(names: Iterable[str], label: Callable[[str], str] | None = None) -> Callable[[str], str]:
    """A dataset picker's format_func: ``label`` (default :func:`dataset_label`) of each name, worked out now
    for whoever is looking (a widget may format its options again outside the page's run)."""
    label = label or dataset_label
    labels = {name: label(name) for name in names}
    return lambda name: labels[name] if name in labels else label(name)


# --- numbers and time ------------------------------------------------------------------------------
def plural(n: int | float, word: str, many: str | None = None) -> str:
    """'1 run', '3 runs', '1,200 steps' (``many`` for irregular plurals)."""
    count = f"{n:,}" if isinstance(n, int) else f"{n:g}"
    return f"{count} {word if n == 1 else many or word + 's'}"


def number(value: float | int | None, fmt: str = "{:.3f}") -> str:
    """A metric for a cell or caption; missing or non-finite values read 'n/a', never 'None'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return fmt.format(value)


def epoch_text(epoch: float, total: int) -> str:
    """'Epoch 3.4 of 10' while inside an epoch, 'Epoch 10 of 10' on a boundary."""
    epoch = min(epoch, total)
    shown = f"{epoch:.0f}" if abs(epoch - round(epoch)) < 0.05 else f"{epoch:.1f}"
    return f"Epoch {shown} of {total}"


def clock(seconds: float | None) -> str:
    """m:ss or h:mm:ss; '?' when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


TRAINING_CLOCK = "queue and data loading not counted"


def training_clock(seconds: float | None) -> str:
    """'0:38 of training (queue and data loading not counted)': what the runs' clock measures, said with it."""
    return f"{clock(seconds)} of training ({TRAINING_CLOCK})"


def ago(seconds: float) -> str:
    """'1 minute ago', '5 minutes ago', '3 hours ago'... with correct plurals."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{plural(int(seconds), 'second')} ago"
    if seconds < 5400:
        return f"{plural(int(seconds // 60), 'minute')} ago"
    if seconds < 2 * 86400:
        return f"{plural(int(round(seconds / 3600)), 'hour')} ago"
    return f"{plural(int(round(seconds / 86400)), 'day')} ago"


def utc_time(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M") if ts else ""


def cache_label(saved_at: float | None, now: float | None = None) -> str:
    if not saved_at:
        return "From cache"
    return f"From cache, trained {ago((now or time.time()) - saved_at)} ({utc_time(saved_at)} UTC)"


def describe_run(cfg) -> str:
    """One line summary of a RunConfig, e.g. 'Digits 8×8 · MLP 64-64 relu · adam lr 0.001 · batch 64 · 10 epochs'."""
    arch = "CNN + MLP" if cfg.arch == "cnn" else "MLP"
    layers = "-".join(str(w) for w in cfg.hidden) or "no hidden layer"
    extras = [x for x in (cfg.norm if cfg.norm != "none" else "", f"dropout {cfg.dropout:g}" if cfg.dropout else "",
                          f"L1 {cfg.l1:g}" if cfg.l1 else "", f"L2 {cfg.l2:g}" if cfg.l2 else "",
                          "residual" if cfg.residual else "") if x]
    return " · ".join([dataset_label(cfg.dataset), f"{arch} {layers} {cfg.activation}", *extras,
                       f"{cfg.optimizer} lr {cfg.lr:g}", f"batch {cfg.batch_size}", plural(cfg.epochs, "epoch"),
                       f"seed {cfg.seed}"])


_FORMULAS = {"lambda*sum|w|": r"$\lambda \sum_i |w_i|$", "lambda*sum w^2": r"$\lambda \sum_i w_i^2$",
             "lambda * sum|w|": r"$\lambda \sum_i |w_i|$", "lambda * sum w^2": r"$\lambda \sum_i w_i^2$"}
_FORMULA_RE = re.compile("|".join(re.escape(f) for f in sorted(_FORMULAS, key=len, reverse=True)))


def with_math(text: str) -> str:
    """Plain text for Markdown whose L1/L2 penalties (lambda*sum|w|, lambda*sum w^2) render as math."""
    out, last = [], 0
    for m in _FORMULA_RE.finditer(text):
        out += [plain(text[last:m.start()]), " " if m.start() and text[m.start() - 1] == " " else "",
                _FORMULAS[m.group()], " " if m.end() < len(text) and text[m.end()] == " " else ""]
        last = m.end()
    out.append(plain(text[last:]))
    return "".join(out)
