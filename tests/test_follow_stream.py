"""The students' follow stream (app/stream.py, served by app/asgi.py; issue 22.3): the class's step is pushed to
a following page when the instructor moves, and nothing is sent while the class stays (but a heartbeat)."""
from __future__ import annotations

import asyncio
import urllib.request

import pytest

from app import stream
from app.stream import FollowStreams, follow_root
from browser_helpers import free_port, start_server, stop_server
from core.serve.classroom import TOKEN_ENV, Classroom

TOKEN = "lectern-42"


async def _next_message(messages, timeout: float = 5.0) -> str:
    while True:
        message = await asyncio.wait_for(anext(messages), timeout)
        if message.startswith("data: "):
            return message.removeprefix("data: ").strip()


def test_a_move_is_pushed_to_every_stream_of_its_lecture_only(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    classroom, streams = Classroom(), FollowStreams()
    monkeypatch.setattr(stream, "CLASSROOM", classroom)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        remove = classroom.on_move(lambda lecture: loop.call_soon_threadsafe(streams.wake, lecture))
        ours = [streams.stream("vanishing") for _ in range(3)]
        other = streams.stream("optimizers")
        assert [await _next_message(s) for s in ours + [other]] == ["1"] * 4  # the class starts on step 1
        assert streams.open == 4
        # the instructor moves in a page's script thread, not on the event loop
        assert await asyncio.to_thread(classroom.move, "vanishing", 3, TOKEN)
        assert [await _next_message(s) for s in ours] == ["3"] * 3
        with pytest.raises(TimeoutError):  # the other lecture's class did not move: nothing for it
            await _next_message(other, timeout=0.3)
        assert not await asyncio.to_thread(classroom.move, "vanishing", 4, "a guess")  # no token: nothing moves
        with pytest.raises(TimeoutError):
            await _next_message(ours[0], timeout=0.3)
        remove()
        for s in ours + [other]:
            await s.aclose()
        assert streams.open == 0

    asyncio.run(scenario())


def test_a_stream_repeats_the_step_at_each_heartbeat(monkeypatch):
    monkeypatch.setattr(stream, "HEARTBEAT_SECONDS", 0.05)
    streams = FollowStreams()

    async def scenario() -> list[str]:
        s = streams.stream("vanishing")
        got = [await _next_message(s, timeout=1.0) for _ in range(3)]
        await s.aclose()
        return got

    assert asyncio.run(scenario()) == ["1", "1", "1"]


class _Request:
    def __init__(self, lecture: str):
        self.path_params = {"lecture": lecture}


def test_the_route_refuses_a_long_name_and_too_many_streams_plainly():
    streams = FollowStreams()
    refused = asyncio.run(streams.respond(_Request("x" * (stream.MAX_LECTURE_NAME + 1))))
    assert refused.status_code == 404 and b"No such lecture" in refused.body
    streams.open = stream.MAX_STREAMS
    full = asyncio.run(streams.respond(_Request("vanishing")))
    assert full.status_code == 503 and b"polls instead" in full.body
    streams.open = 0
    assert asyncio.run(streams.respond(_Request("vanishing"))).media_type == "text/event-stream"


def test_the_stream_path_sits_under_the_base_path():
    assert follow_root("") == f"/{stream.FOLLOW_PATH}"
    assert follow_root("/course/") == f"/course/{stream.FOLLOW_PATH}"


def test_the_launched_server_serves_the_stream(tmp_path):
    """README's start (app.launch) serves app/asgi.py: the route answers with the class's step."""
    port = free_port()
    proc = start_server(tmp_path / "cache", port, tmp_path / "streamlit.log")
    try:
        url = f"http://127.0.0.1:{port}{follow_root('')}/vanishing"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            lines = [response.readline().decode().strip() for _ in range(4)]
        assert "data: 1" in lines, lines
    finally:
        stop_server(proc)
