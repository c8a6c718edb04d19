"""Gradient Lab's pages: started by ``python3 -m app.launch`` (trainers warm before the first visitor) or
``streamlit run app/main.py`` (they start with the first page view) from the repository root.

Pages are listed once in :data:`PAGES`; a page whose file is missing is left out, so lessons
added later only need one line here. Icons are emoji: nothing is fetched from a font host.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # Streamlit only puts app/ on sys.path; core/ and app/ live in the root
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.forms.lecture import lecture_mode, record_tries  # noqa: E402
from app.views.jobs import unreachable_notice  # noqa: E402
from app.views.shell import sidebar_status  # noqa: E402
from core.serve.budget import Unreachable  # noqa: E402


class PageSpec(NamedTuple):
    file: str  # under pages/
    title: str
    icon: str
    default: bool = False


PAGES = [
    PageSpec("playground.py", "Playground", "🧪", default=True),
    PageSpec("vanishing.py", "Vanishing gradients", "📉"),
    PageSpec("regularization.py", "Regularization", "🎛️"),
    PageSpec("optimizers.py", "Optimizers", "🏁"),
    PageSpec("cnn.py", "Inside a CNN", "🧩"),
    PageSpec("gradcheck.py", "Gradient check", "🔬"),
    PageSpec("sweeps.py", "Sweeps", "🔎"),
    PageSpec("data.py", "Data", "🗂️"),
    PageSpec("library.py", "Run library", "📚"),
    PageSpec("lecture.py", "Lectures", "🎤"),
]


def available_pages() -> list[st.Page]:
    return [st.Page(ROOT / "pages" / p.file, title=p.title, icon=p.icon, default=p.default)
            for p in PAGES if (ROOT / "pages" / p.file).is_file()]


# Streamlit runs this script as __main__; a spawned training process (core.serve.workers) re-imports the entry
# script as __mp_main__ and must not draw a page or start workers of its own.
if __name__ == "__main__":
    presenting = st.query_params.get("present") == "1"  # the presenter view starts with the sidebar closed
    st.set_page_config(page_title="Gradient Lab", page_icon="🧠", layout="wide",
                       initial_sidebar_state="collapsed" if presenting else "auto")
    page = st.navigation(available_pages())
    # A cluster's scheduler gone: each part that needed it says so, the page's words and form still show, and a
    # later run reconnects.
    try:
        lecture_mode(page.url_path)
        sidebar_status()
    except Unreachable as exc:
        with st.sidebar:
            unreachable_notice(exc)
    try:
        page.run()
        record_tries()
    except Unreachable as exc:
        unreachable_notice(exc)
