"""The students' follow stream: a lecture's class step as server-sent events, pushed when the instructor moves.

A following page (app/views/lecture.py) listens to ``<base path>/{FOLLOW_PATH}/<lecture>`` and reruns only when
the step it shows is no longer the class's, so a class that stays on a step costs the server nothing per student. The route
is served by :mod:`app.asgi`; where it is missing (``streamlit run app/main.py``) the page's slow poll still moves.
Streams are bounded in number (:data:`MAX_STREAMS`) and in their lecture name; each sends the step again every
:data:`HEARTBEAT_SECONDS` so that proxies keep it open.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from core.serve.classroom import CLASSROOM

FOLLOW_PATH = "_gradient_lab/follow"  # under the server's base path; {lecture} follows
MAX_STREAMS = 2000  # open follow streams per server process: past it a page keeps its slow poll
MAX_LECTURE_NAME = 100  # characters (lecture names are short words)
HEARTBEAT_SECONDS = 15.0
RETRY_MS = 3000  # a browser reconnects after this long when a stream drops


def follow_root(base_url_path: str) -> str:
    """The streams' path on a server whose ``server.baseUrlPath`` is ``base_url_path``; a lecture's name follows."""
    return "/" + "/".join(part for part in (base_url_path.strip("/"), FOLLOW_PATH) if part)


class FollowStreams:
    """The open streams of this server process, woken per lecture (on the event loop's thread)."""

    def __init__(self) -> None:
        self.open = 0
        self._moved: dict[str, asyncio.Event] = {}

    def wake(self, lecture: str) -> None:
        """The class of ``lecture`` moved: its streams send the new step."""
        moved = self._moved.pop(lecture, None)
        if moved is not None:
            moved.set()

    async def stream(self, lecture: str) -> AsyncIterator[str]:
        self.open += 1
        try:
            yield f"retry: {RETRY_MS}\n\n"
            while True:
                moved = self._moved.setdefault(lecture, asyncio.Event())
                yield f"data: {CLASSROOM.position(lecture).step}\n\n"
                try:
                    await asyncio.wait_for(moved.wait(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    pass
        finally:
            self.open -= 1
            if not self.open:
                self._moved.clear()

    async def respond(self, request: Request) -> Response:
        """The route's handler: the stream, or a plain refusal (the page then keeps its slow poll)."""
        lecture = request.path_params.get("lecture", "")
        if not lecture or len(lecture) > MAX_LECTURE_NAME:
            return PlainTextResponse("No such lecture.", status_code=404)
        if self.open >= MAX_STREAMS:
            return PlainTextResponse("Too many followers on this server; the page polls instead.", status_code=503)
        return StreamingResponse(self.stream(lecture), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


STREAMS = FollowStreams()
