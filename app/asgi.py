"""Gradient Lab as an ASGI app: ``app/main.py``'s pages and the students' follow stream (:mod:`app.stream`).

:mod:`app.launch` serves this (``streamlit run app/asgi.py``). ``streamlit run app/main.py`` serves the pages
without the stream: following students then move with the page's slow poll.
"""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st
from starlette.routing import Route

from app.stream import STREAMS, follow_root
from core.serve.classroom import CLASSROOM

MAIN = Path(__file__).resolve().parent / "main.py"


@asynccontextmanager
async def _wake_streams_on_moves(_app):
    """Moves happen in a page's script thread: hand each to the event loop, which wakes that lecture's streams."""
    loop = asyncio.get_running_loop()
    remove = CLASSROOM.on_move(lambda lecture: loop.call_soon_threadsafe(STREAMS.wake, lecture))
    try:
        yield
    finally:
        remove()


app = st.App(str(MAIN), routes=[Route(follow_root(st.get_option("server.baseUrlPath") or "") + "/{lecture}",
                                       STREAMS.respond)],
             lifespan=_wake_streams_on_moves)
