"""Helpers shared by the AppTest page tests: start the app, open a page (or a shared link), read texts."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

MAIN = Path(__file__).resolve().parents[1] / "app" / "main.py"


def new_app(query: dict | None = None) -> AppTest:
    """The app (its default page) after a first run, with ``query`` in the URL."""
    at = AppTest.from_file(str(MAIN), default_timeout=60)
    at.query_params.update(query or {})
    return at.run()


def open_page(page: str) -> AppTest:
    """The app switched to ``page`` (e.g. "../pages/vanishing.py"), with no exception."""
    at = new_app()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def open_with_query(page: str, query: dict) -> AppTest:
    """A fresh session whose first page is ``page`` with ``query`` in the address bar (a shared link)."""
    at = AppTest.from_file(str(MAIN), default_timeout=60)
    if page != "playground":
        at.switch_page(f"../pages/{page}.py")
    at.query_params.update(query)
    at.run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)
