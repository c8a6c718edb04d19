"""A light Streamlit session for load tests: one websocket speaking Streamlit's own protocol.

It opens a page (with a query string), keeps the page's polling fragments running the way the
browser does (``auto_rerun`` messages), presses buttons by label and reports the text on the
page, without drawing anything: many of these cost the server what many students cost it,
and the test machine almost nothing. Loopback only.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState


@dataclass
class PageState:
    buttons: dict[str, str] = field(default_factory=dict)  # label -> widget id
    texts: list[str] = field(default_factory=list)  # markdown / alert / text bodies of the last run
    charts: int = 0  # plotly charts drawn by the last full run and fragment runs since
    finished_runs: int = 0
    errors: list[str] = field(default_factory=list)  # tracebacks the page showed


class Session:
    """One simulated student; use as ``async with Session(port, "vanishing") as s: ...``."""

    def __init__(self, port: int, page: str = "", query: str = "", host: str = "127.0.0.1"):
        self.url = f"ws://{host}:{port}/_stcore/stream"
        self.origin = f"http://{host}:{port}"
        self.page, self.query = page, query
        self.state = PageState()
        self._fragments: dict[str, float] = {}  # fragment id -> interval (s)
        self._ws = None
        self._tasks: list[asyncio.Task] = []
        self._finished = asyncio.Event()
        self._page_hash = ""  # the page's script hash, as the server's navigation message names it

    async def __aenter__(self) -> "Session":
        self._ws = await websockets.connect(self.url, subprotocols=["streamlit"], origin=self.origin,
                                            max_size=None, open_timeout=60)
        self._tasks = [asyncio.create_task(self._receive()), asyncio.create_task(self._poll_fragments())]
        await self.rerun()
        return self

    async def __aexit__(self, *exc) -> None:
        for task in self._tasks:
            task.cancel()
        await self._ws.close()

    async def rerun(self, trigger: str | None = None, fragment_id: str = "") -> None:
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = self.query
        state.page_name = self.page
        state.page_script_hash = self._page_hash  # once known: a fragment's own st.rerun() stays on this page
        if fragment_id:
            state.fragment_id = fragment_id
            state.is_auto_rerun = True
        if trigger is not None:
            widget = WidgetState(id=trigger, trigger_value=True)
            state.widget_states.widgets.append(widget)
        if not fragment_id:  # a full run: the fragments it starts announce themselves again
            self.state.texts, self.state.buttons = [], {}
            self._fragments.clear()
            self._finished.clear()
        await self._ws.send(msg.SerializeToString())

    async def rerun_fragments_every(self, interval: float) -> None:
        """Rerun now the page's fragments that run every ``interval`` seconds (what a component's trigger inside
        such a fragment does in the browser)."""
        for fid in [fid for fid, every in self._fragments.items() if abs(every - interval) < 1e-6]:
            await self.rerun(fragment_id=fid)

    async def wait_finished(self, timeout: float = 120.0) -> None:
        await asyncio.wait_for(self._finished.wait(), timeout)

    async def click(self, label: str, timeout: float = 120.0) -> None:
        """Press the button whose label starts with ``label`` (after the page has drawn it)."""
        deadline = time.monotonic() + timeout
        while not any(name.startswith(label) for name in self.state.buttons):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no button {label!r} on the page; saw {sorted(self.state.buttons)}")
            await asyncio.sleep(0.05)
        widget = next(wid for name, wid in self.state.buttons.items() if name.startswith(label))
        await self.rerun(trigger=widget)

    async def wait_for_text(self, needle: str, timeout: float = 120.0) -> float:
        """Seconds until some text on the page contains ``needle``."""
        start = time.monotonic()
        while not any(needle in text for text in self.state.texts):
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{needle!r} did not appear")
            await asyncio.sleep(0.02)
        return time.monotonic() - start

    async def _receive(self) -> None:
        async for raw in self._ws:
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            kind = msg.WhichOneof("type")
            if kind == "navigation":  # the page st.navigation resolved: later reruns name it by its hash
                self._page_hash = msg.navigation.page_script_hash
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                self._element(msg.delta.new_element)
            elif kind == "auto_rerun":
                self._fragments[msg.auto_rerun.fragment_id] = msg.auto_rerun.interval
            elif kind == "stop_auto_rerun":
                for fid in msg.stop_auto_rerun.fragment_ids:
                    self._fragments.pop(fid, None)
            elif kind == "script_finished":
                self.state.finished_runs += 1
                self._finished.set()

    def _element(self, element) -> None:
        kind = element.WhichOneof("type")
        if kind == "button":
            self.state.buttons[element.button.label] = element.button.id
        elif kind in ("markdown", "alert", "text", "heading"):
            self.state.texts.append(getattr(element, kind).body)
        elif kind == "progress":
            self.state.texts.append(element.progress.text)
        elif kind == "exception":
            self.state.errors.append(f"{element.exception.type}: {element.exception.message}")
        elif kind == "plotly_chart":
            self.state.charts += 1

    async def _poll_fragments(self) -> None:
        due: dict[str, float] = {}
        while True:
            now = time.monotonic()
            for fid, interval in list(self._fragments.items()):
                if now >= due.setdefault(fid, now + interval):
                    due[fid] = now + interval
                    await self.rerun(fragment_id=fid)
            await asyncio.sleep(0.05)
